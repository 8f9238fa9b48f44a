//! AWS SDK configuration, built once in `main`. The endpoint comes from configuration: the
//! standard `AWS_ENDPOINT_URL` (or a service-specific `AWS_ENDPOINT_URL_<SERVICE>`) points the
//! same binary at the moto server locally and at AWS in the cloud.
pub async fn sdk_config() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest()).load().await
}

/// Whether an endpoint override is configured (local S3-compatible stores need path-style).
pub fn endpoint_overridden(config: &aws_config::SdkConfig) -> bool {
    config.endpoint_url().is_some()
}

#[cfg(feature = "s3")]
pub fn s3(config: &aws_config::SdkConfig) -> aws_sdk_s3::Client {
    let s3 = aws_sdk_s3::config::Builder::from(config)
        .force_path_style(endpoint_overridden(config))
        .build();
    aws_sdk_s3::Client::from_conf(s3)
}

#[cfg(feature = "dynamodb")]
pub fn dynamodb(config: &aws_config::SdkConfig) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(config)
}

#[cfg(feature = "sqs")]
pub fn sqs(config: &aws_config::SdkConfig) -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::new(config)
}

#[cfg(feature = "eventbridge")]
pub fn eventbridge(config: &aws_config::SdkConfig) -> aws_sdk_eventbridge::Client {
    aws_sdk_eventbridge::Client::new(config)
}

/// How long a presigned upload or download link works.
#[cfg(feature = "s3")]
pub const LINK_TTL: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// A presigned request: the method, URL and headers to send, until `expires_at`.
#[cfg(feature = "s3")]
pub struct Presigned {
    pub url: String,
    pub headers: std::collections::BTreeMap<String, String>,
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

/// A presigned PUT of exactly `size` bytes of `content_type` to `key`.
#[cfg(feature = "s3")]
#[tracing::instrument(skip_all, fields(bucket = %bucket, key = %key))]
pub async fn presign_put(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    content_type: &str,
    size: u64,
) -> anyhow::Result<Presigned> {
    let request = s3
        .put_object()
        .bucket(bucket)
        .key(key)
        .content_type(content_type)
        .content_length(i64::try_from(size)?)
        .presigned(aws_sdk_s3::presigning::PresigningConfig::expires_in(LINK_TTL)?)
        .await?;
    // What the client must send besides the body: the signed headers, less those a browser
    // sets itself (Host, Content-Length: it matches when the file has the declared size).
    let mut headers: std::collections::BTreeMap<String, String> = request
        .headers()
        .filter(|(k, _)| !k.eq_ignore_ascii_case("host") && !k.eq_ignore_ascii_case("content-length"))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_owned()))
        .collect();
    headers.insert("content-type".to_owned(), content_type.to_owned());
    Ok(Presigned {
        url: request.uri().to_owned(),
        headers,
        expires_at: chrono::Utc::now() + chrono::Duration::seconds(i64::try_from(LINK_TTL.as_secs()).unwrap_or(900)),
    })
}
