//! Redis: one multiplexed, auto-reconnecting connection per sandbox, built in `main`.
pub type Redis = redis::aio::ConnectionManager;

#[tracing::instrument(skip_all)]
pub async fn connect(url: &str) -> anyhow::Result<Redis> {
    let client = redis::Client::open(url).map_err(|e| anyhow::anyhow!("REDIS_URL is invalid: {e}"))?;
    Ok(redis::aio::ConnectionManager::new(client).await?)
}
