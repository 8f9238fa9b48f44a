//! `billing-replay-dlq`: moves the messages of the billing DLQ back to the billing queue, so
//! billing-sync applies them again (after the cause of their failure is fixed). Safe to run
//! twice: billing-sync is idempotent on the event id. Each message is sent before it is deleted.
//!
//!   billing-replay-dlq [--dry-run] [--max N]
//!
//! Reads `BILLING_EVENTS_DLQ_URL` and `BILLING_EVENTS_QUEUE_URL` (and the usual AWS settings);
//! prints one line per message and a summary.
use shared::adapters::queue_replay::{ReplayOptions, replay};
use shared::config::Env;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut options = ReplayOptions::default();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--dry-run" => options.dry_run = true,
            "--max" => {
                options.max = it
                    .next()
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(|| anyhow::anyhow!("--max needs a number"))?;
            }
            "-h" | "--help" => {
                println!(
                    "billing-replay-dlq [--dry-run] [--max N]: moves the billing DLQ's messages back to the billing queue"
                );
                return Ok(());
            }
            other => anyhow::bail!("unknown argument {other} (try --help)"),
        }
    }
    let env = Env::from_process();
    let from = env.required("BILLING_EVENTS_DLQ_URL")?;
    let to = env.required("BILLING_EVENTS_QUEUE_URL")?;
    let aws = shared::adapters::aws::sdk_config().await;
    let sqs = shared::adapters::aws::sqs(&aws);
    let report = replay(&sqs, &from, &to, &options, |id, body| println!("{id}\t{body}")).await?;
    println!(
        "{} message(s) {} from {from} to {to}",
        report.moved,
        if options.dry_run { "would move" } else { "moved" }
    );
    Ok(())
}
