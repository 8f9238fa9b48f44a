//! Local-stack and deploy helper: `migrate` (apply migrations as the owner role), `seed` (the
//! demo tenant, its owner and member, and a known demo API key; idempotent), `token` (mint a dev
//! JWT with the local signing key). Reads OWNER_DATABASE_URL for migrate and seed.
#![allow(clippy::print_stdout)]
use anyhow::{Context, bail};
use sqlx::postgres::PgPoolOptions;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("migrate") => migrate().await,
        Some("seed") => seed().await,
        Some("token") => token(&args[1..]),
        _ => bail!(
            "usage: portal-dev migrate | seed | token --key PEM --kid KID --iss ISS --aud AUD --sub SUB [--email E] [--name N] [--ttl-hours H]"
        ),
    }
}

async fn owner_pool() -> anyhow::Result<sqlx::PgPool> {
    let url = std::env::var("OWNER_DATABASE_URL").context("OWNER_DATABASE_URL is not set")?;
    PgPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .context("connecting as the owner role")
}

async fn migrate() -> anyhow::Result<()> {
    let pool = owner_pool().await?;
    testkit::MIGRATOR.run(&pool).await.context("applying migrations")?;
    println!("migrations applied");
    Ok(())
}

async fn seed() -> anyhow::Result<()> {
    let pool = owner_pool().await?;
    testkit::seed_demo(&pool).await?;
    seed_billing(&pool).await?;
    println!(
        "seeded tenant {} (Demo Co), owner owner@demo.local, member member@demo.local, API key {}",
        testkit::DEMO_TENANT,
        testkit::DEMO_API_KEY
    );
    Ok(())
}

/// The paid plans' monthly prices, at the local Stripe (`STRIPE_API_BASE`, localstripe) and in
/// the catalogue: `price_demo_<plan>_monthly`, metadata `portal_plan` (what reconciliation syncs).
async fn seed_billing(pool: &sqlx::PgPool) -> anyhow::Result<()> {
    let base = std::env::var("STRIPE_API_BASE").unwrap_or_else(|_| "http://127.0.0.1:8420".to_owned());
    let key = std::env::var("STRIPE_SECRET_KEY").unwrap_or_else(|_| "sk_test_local".to_owned());
    if !base.starts_with("http://127.0.0.1") && !base.starts_with("http://localhost") {
        bail!("seed creates demo prices only at a local Stripe (STRIPE_API_BASE is {base})");
    }
    let stripe = shared::adapters::stripe_api::StripeApi::new(&base, &key)?;
    for (plan, name, amount) in [
        ("starter", "Starter", 2900),
        ("growth", "Growth", 9900),
        ("scale", "Scale", 29900),
    ] {
        let id = format!("price_demo_{plan}_monthly");
        match stripe.get(&format!("plans/{id}"), &[]).await {
            Ok(_) => {}
            Err(e) if e.is_not_found() => {
                let fields = shared::adapters::stripe_api::form([
                    ("id", Some(id.clone())),
                    ("amount", Some(amount.to_string())),
                    ("currency", Some("usd".to_owned())),
                    ("interval", Some("month".to_owned())),
                    ("product[name]", Some(name.to_owned())),
                    ("metadata[portal_plan]", Some(plan.to_owned())),
                ]);
                stripe
                    .post("plans", &fields, None)
                    .await
                    .with_context(|| format!("creating {id}"))?;
            }
            Err(e) => return Err(e).with_context(|| format!("reading {id} at {base}")),
        }
        sqlx::query(
            "insert into billing_prices (id, plan_code, currency, unit_amount, interval) values ($1, $2, 'usd', $3, 'month') \
             on conflict (id) do nothing",
        )
        .bind(&id)
        .bind(plan)
        .bind(amount)
        .execute(pool)
        .await?;
    }
    // The local Stripe may have started from scratch (a new clone, a removed state file) while
    // the machine's database kept its links: drop links to customers it does not know.
    let links: Vec<(uuid::Uuid, String)> = sqlx::query_as("select tenant_id, stripe_customer_id from billing_accounts")
        .fetch_all(pool)
        .await?;
    for (tenant, customer) in links {
        if let Err(e) = stripe.get(&format!("customers/{customer}"), &[]).await
            && e.is_not_found()
        {
            sqlx::query("delete from billing_accounts where tenant_id = $1")
                .bind(tenant)
                .execute(pool)
                .await?;
            println!("unlinked tenant {tenant} from {customer}, which the local Stripe does not know");
        }
    }
    println!("seeded prices price_demo_{{starter,growth,scale}}_monthly at {base}");
    Ok(())
}

fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

fn token(args: &[String]) -> anyhow::Result<()> {
    let need = |name: &str| flag(args, name).with_context(|| format!("{name} is required"));
    let pem = std::fs::read(need("--key")?).context("reading the signing key")?;
    let ttl: i64 = flag(args, "--ttl-hours")
        .unwrap_or("12")
        .parse()
        .context("--ttl-hours")?;
    let now = chrono::Utc::now().timestamp();
    let claims = serde_json::json!({
        "sub": need("--sub")?,
        "email": flag(args, "--email").unwrap_or_default(),
        "email_verified": true,
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
