//! Local-stack and deploy helper: `migrate` (apply migrations as the owner role), `seed` (the
//! demo tenant, its owner and member, and a known demo API key; idempotent), `token` (mint a dev
//! JWT with the local signing key). Reads OWNER_DATABASE_URL for migrate and seed.
#![allow(clippy::print_stdout)]
use anyhow::{Context, bail};
use shared::domain::secret;
use sqlx::postgres::PgPoolOptions;

const DEMO_TENANT: &str = "00000000-0000-4000-8000-000000000001";
const DEMO_OWNER: &str = "00000000-0000-4000-8000-0000000000a1";
const DEMO_MEMBER: &str = "00000000-0000-4000-8000-0000000000a2";
/// Local-only demo key, seeded into the local database so events/ files work without expiry.
const DEMO_API_KEY: &str = "pk_demo0001_localdevsecretlocaldevsecret00";

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("migrate") => migrate().await,
        Some("seed") => seed().await,
        Some("token") => token(&args[1..]),
        _ => bail!("usage: portal-dev migrate | seed | token --key PEM --kid KID --iss ISS --aud AUD --sub SUB [--email E] [--name N] [--ttl-hours H]"),
    }
}

async fn owner_pool() -> anyhow::Result<sqlx::PgPool> {
    let url = std::env::var("OWNER_DATABASE_URL").context("OWNER_DATABASE_URL is not set")?;
    PgPoolOptions::new().max_connections(1).connect(&url).await.context("connecting as the owner role")
}

async fn migrate() -> anyhow::Result<()> {
    let pool = owner_pool().await?;
    testkit::MIGRATOR.run(&pool).await.context("applying migrations")?;
    println!("migrations applied");
    Ok(())
}

async fn seed() -> anyhow::Result<()> {
    let pool = owner_pool().await?;
    let mut tx = pool.begin().await?;
    sqlx::query("insert into tenants (id, name) values ($1::uuid, 'Demo Co') on conflict (id) do nothing")
        .bind(DEMO_TENANT)
        .execute(&mut *tx)
        .await?;
    for (id, subject, email, name, role) in [
        (DEMO_OWNER, "dev-owner", "owner@demo.local", "Demo Owner", "owner"),
        (DEMO_MEMBER, "dev-member", "member@demo.local", "Demo Member", "member"),
    ] {
        sqlx::query("insert into users (id, subject, email, name) values ($1::uuid, $2, $3, $4) on conflict (subject) do nothing")
            .bind(id)
            .bind(subject)
            .bind(email)
            .bind(name)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "insert into memberships (tenant_id, user_id, role) select $1::uuid, id, $3 from users where subject = $2 \
             on conflict (tenant_id, user_id) do nothing",
        )
        .bind(DEMO_TENANT)
        .bind(subject)
        .bind(role)
        .execute(&mut *tx)
        .await?;
    }
    sqlx::query(
        "insert into api_keys (id, tenant_id, name, prefix, secret_hash, role, scopes, created_by) \
         values ('00000000-0000-4000-8000-0000000000b1', $1::uuid, 'Local demo key', 'demo0001', $2, 'admin', array['admin'], $3::uuid) \
         on conflict (id) do update set revoked_at = null",
    )
    .bind(DEMO_TENANT)
    .bind(secret::sha256(DEMO_API_KEY))
    .bind(DEMO_OWNER)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    println!("seeded tenant {DEMO_TENANT} (Demo Co), owner owner@demo.local, member member@demo.local, API key {DEMO_API_KEY}");
    Ok(())
}

fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).map(String::as_str)
}

fn token(args: &[String]) -> anyhow::Result<()> {
    let need = |name: &str| flag(args, name).with_context(|| format!("{name} is required"));
    let pem = std::fs::read(need("--key")?).context("reading the signing key")?;
    let ttl: i64 = flag(args, "--ttl-hours").unwrap_or("12").parse().context("--ttl-hours")?;
    let now = chrono::Utc::now().timestamp();
    let claims = serde_json::json!({
        "sub": need("--sub")?,
        "email": flag(args, "--email").unwrap_or_default(),
        "name": flag(args, "--name").unwrap_or_default(),
        "iss": need("--iss")?,
        "aud": need("--aud")?,
        "iat": now,
        "exp": now + ttl * 3600,
    });
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some(need("--kid")?.to_owned());
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(&pem).context("the key is not an RSA PEM")?;
    println!("{}", jsonwebtoken::encode(&header, &claims, &key)?);
    Ok(())
}
