//! Test sends: the campaign's message, rendered as a recipient would get it (for the sample
//! contact, addressed to the member), to up to five of the tenant's members. Each is stored as
//! a `queued` row of `marketing_test_sends` holding the complete message, for the sender to send
//! as it is (never a recipient of the campaign: a test neither blocks nor counts as the real
//! send, nor against the plan).
//!
//! The sender's schedule sends them ([`take`], then [`record`]): each is taken (queued ->
//! sending) in a statement of its own before its one provider request, so it never goes out
//! twice; a 429 queues it again after the provider's wait; one whose outcome was never recorded
//! fails after 15 minutes with that reason ([`fail_stale`]).
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use utoipa::ToSchema;
use uuid::Uuid;

use super::lifecycle::{connected_provider, template_source, tenant_name};
use super::{Campaign, EmailProvider, fetch};
use crate::adapters::pg::{self, Tx};
use crate::domain::{DomainError, Email, FieldError, Scope, Validator};
use crate::services::idempotency::{self, Created, IdempotencyKey};
use crate::services::marketing::render::{self, BodyFormat, TemplateSource};

/// At most this many addresses in one test.
pub const MAX_TEST_ADDRESSES: usize = 5;
/// The most test sends of one tenant not yet sent (queued or sending): the schedule takes 20 a
/// minute across every tenant, so one tenant may not fill that queue for the others.
pub const MAX_UNSENT_TESTS: i64 = 20;
/// What a test's subject starts with.
pub const TEST_PREFIX: &str = "[Test] ";

/// The body of `POST /marketing/campaigns/{id}/test`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TestSendRequest {
    /// Addresses of the tenant's members, 1 to 5.
    #[schema(min_items = 1, max_items = 5)]
    pub addresses: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum TestSendStatus {
    Queued,
    Sending,
    Sent,
    Failed,
}

/// One test message, as it will be sent.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct TestSend {
    pub id: Uuid,
    /// Lower case.
    pub email: String,
    pub provider: EmailProvider,
    pub from_name: String,
    pub from_email: String,
    pub reply_to: Option<String>,
    /// Starts with `[Test] `.
    pub subject: String,
    pub preheader: Option<String>,
    pub html: String,
    #[sqlx(rename = "text_body")]
    pub text: String,
    pub status: TestSendStatus,
    /// Why it failed (the provider's words when it gave them).
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    /// When the provider took it.
    pub sent_at: Option<DateTime<Utc>>,
}

const TEST_SEND_COLUMNS: &str = "id, email, provider, from_name, from_email, reply_to, subject, preheader, html, \
    text_body, status, error, created_at, sent_at";

/// Takes the next test send due (queued -> sending), across tenants: its tenant and id.
pub async fn take(pool: &PgPool, now: DateTime<Utc>) -> Result<Option<(Uuid, Uuid)>, DomainError> {
    Ok(sqlx::query_as("select * from app_marketing_take_test_send($1)")
        .bind(now)
        .fetch_optional(pool)
        .await?)
}

/// Fails the test sends whose outcome was never recorded 15 minutes after they were taken: how
/// many.
pub async fn fail_stale(pool: &PgPool, now: DateTime<Utc>) -> Result<i32, DomainError> {
    Ok(sqlx::query_scalar("select app_marketing_fail_stale_test_sends($1)")
        .bind(now)
        .fetch_one(pool)
        .await?)
}

/// A test send being sent (taken by [`take`]), with its campaign.
pub async fn taken(pool: &PgPool, scope: &Scope, id: Uuid) -> Result<Option<(Uuid, TestSend)>, DomainError> {
    let mut tx = pg::begin(pool, scope).await?;
    let row: Option<(Uuid,)> =
        sqlx::query_as("select campaign_id from marketing_test_sends where id = $1 and status = 'sending'")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
    let Some((campaign_id,)) = row else {
        tx.commit().await?;
        return Ok(None);
    };
    let send: TestSend = sqlx::query_as(&format!(
        "select {TEST_SEND_COLUMNS} from marketing_test_sends where id = $1"
    ))
    .bind(id)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Some((campaign_id, send)))
}

/// What became of a test send's one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TestOutcome {
    Sent {
        provider_message_id: Option<String>,
    },
    /// Queued again, not before this time (the provider asked to wait, or it was not reached).
    Later(DateTime<Utc>),
    Failed(String),
}

/// Records a taken test send's outcome (a send no longer `sending` is left as it is).
pub async fn record(pool: &PgPool, scope: &Scope, id: Uuid, outcome: &TestOutcome) -> Result<(), DomainError> {
    let mut tx = pg::begin(pool, scope).await?;
    let q = match outcome {
        TestOutcome::Sent { provider_message_id } => sqlx::query(
            "update marketing_test_sends set status = 'sent', sent_at = now(), provider_message_id = left($2, 200), \
             error = null where id = $1 and status = 'sending'",
        )
        .bind(id)
        .bind(provider_message_id.clone()),
        TestOutcome::Later(at) => sqlx::query(
            "update marketing_test_sends set status = 'queued', not_before = $2, claimed_at = null \
             where id = $1 and status = 'sending'",
        )
        .bind(id)
        .bind(*at),
        TestOutcome::Failed(reason) => sqlx::query(
            "update marketing_test_sends set status = 'failed', error = left($2, 1000) where id = $1 and status = 'sending'",
        )
        .bind(id)
        .bind(reason.clone()),
    };
    q.execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(())
}

/// The answer of `POST /marketing/campaigns/{id}/test`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TestSends {
    /// One per address, in the order asked.
    pub messages: Vec<TestSend>,
}

/// The addresses, parsed (lower case, repeats dropped), 1 to 5; each bad one named.
pub fn check_addresses(raw: &[String]) -> Result<Vec<String>, DomainError> {
    let mut v = Validator::new();
    if raw.is_empty() || raw.len() > MAX_TEST_ADDRESSES {
        v.error(
            "addresses",
            "out_of_range",
            format!("must have 1 to {MAX_TEST_ADDRESSES} addresses"),
        );
    }
    let mut out: Vec<String> = Vec::new();
    for (i, address) in raw.iter().enumerate() {
        if let Some(email) = v.field(&format!("addresses[{i}]"), Email::parse(address)) {
            let email = email.as_str().to_lowercase();
            if !out.contains(&email) {
                out.push(email);
            }
        }
    }
    v.finish()?;
    Ok(out)
}

/// The template a test shows: what the campaign sends (its frozen copy once started), or its
/// template as it is now.
async fn source(tx: &mut Tx, c: &Campaign) -> Result<TemplateSource, DomainError> {
    if c.started_at.is_none() {
        return template_source(tx, c).await;
    }
    let frozen: (String, Option<String>, String, String, Option<String>) = sqlx::query_as(
        "select snapshot_subject, snapshot_preheader, snapshot_format, snapshot_body, snapshot_text_body \
         from marketing_campaigns where id = $1",
    )
    .bind(c.id)
    .fetch_one(&mut **tx)
    .await?;
    Ok(TemplateSource {
        subject: frozen.0,
        preheader: frozen.1,
        format: if frozen.2 == "mjml" {
            BodyFormat::Mjml
        } else {
            BodyFormat::Html
        },
        body: frozen.3,
        text: frozen.4,
    })
}

/// Queues a test of the campaign (any status) for each address: every address must be a
/// member's (422 naming it), the campaign needs a template (409 `campaign-incomplete`) that
/// renders (409 `template-render-failed`) and an email connector (409 `no-email-connector`).
/// Honours `Idempotency-Key`.
pub async fn send_test(
    pool: &PgPool,
    scope: &Scope,
    id: Uuid,
    request: TestSendRequest,
    idem: Option<&IdempotencyKey>,
) -> Result<Created<TestSends>, DomainError> {
    let tenant_id = scope.tenant_id().ok_or(DomainError::NotFound)?;
    let addresses = check_addresses(&request.addresses)?;
    let mut tx = match idempotency::begin(pool, scope, idem).await? {
        Ok(tx) => tx,
        Err(replay) => return Ok(Created::Replayed(replay)),
    };
    let c = fetch(&mut tx, id, false).await?;
    let members: Vec<String> = sqlx::query_scalar(
        "select lower(u.email) from memberships m join users u on u.id = m.user_id \
         where m.tenant_id = app_current_tenant() and lower(u.email) = any($1)",
    )
    .bind(&addresses)
    .fetch_all(&mut *tx)
    .await?;
    let strangers: Vec<FieldError> = request
        .addresses
        .iter()
        .enumerate()
        .filter(|(_, raw)| !members.contains(&raw.trim().to_lowercase()))
        .map(|(i, _)| {
            FieldError::new(
                &format!("addresses[{i}]"),
                "not_a_member",
                "must be the address of a member of the tenant",
            )
        })
        .collect();
    if !strangers.is_empty() {
        return Err(DomainError::Invalid(strangers));
    }
    let unsent: i64 = sqlx::query_scalar(
        "select count(*) from marketing_test_sends where tenant_id = app_current_tenant() \
         and status in ('queued', 'sending')",
    )
    .fetch_one(&mut *tx)
    .await?;
    if unsent + addresses.len() as i64 > MAX_UNSENT_TESTS {
        return Err(DomainError::conflict(
            "tests-pending",
            format!(
                "{unsent} test emails are still waiting to be sent (at most {MAX_UNSENT_TESTS}): try again in a minute"
            ),
        ));
    }
    let source = source(&mut tx, &c).await?;
    let provider = connected_provider(&mut tx, c.provider).await?;
    let sample = render::sample_context(&tenant_name(&mut tx).await?);
    let mut messages = Vec::with_capacity(addresses.len());
    for email in addresses {
        let mut ctx = sample.clone();
        ctx.contact.email.clone_from(&email);
        let rendered = render::render(&source, &ctx).map_err(|issues| {
            let said: Vec<String> = issues.into_iter().map(|i| FieldError::from(i).message).collect();
            DomainError::conflict(
                "template-render-failed",
                format!("the template cannot be rendered: {}", said.join("; ")),
            )
        })?;
        let preheader = (!rendered.preheader.is_empty()).then_some(rendered.preheader);
        let row: TestSend = sqlx::query_as(&format!(
            "insert into marketing_test_sends (id, tenant_id, campaign_id, email, provider, from_name, from_email, \
             reply_to, subject, preheader, html, text_body, requested_by) \
             values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
             returning {TEST_SEND_COLUMNS}"
        ))
        .bind(Uuid::now_v7())
        .bind(tenant_id)
        .bind(id)
        .bind(&email)
        .bind(provider)
        .bind(&c.from_name)
        .bind(&c.from_email)
        .bind(&c.reply_to)
        .bind(format!("{TEST_PREFIX}{}", rendered.subject))
        .bind(preheader)
        .bind(&rendered.html)
        .bind(&rendered.text)
        .bind(scope.actor.person())
        .fetch_one(&mut *tx)
        .await?;
        messages.push(row);
    }
    let answer = TestSends { messages };
    idempotency::store(&mut tx, scope, idem, 201, &answer).await?;
    tx.commit().await?;
    Ok(Created::Fresh(answer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_parsed_deduplicated_and_counted() {
        let ok = check_addresses(&[
            "Ann@Example.com".into(),
            "ann@example.com".into(),
            "bo@example.com".into(),
        ]);
        assert_eq!(ok.unwrap(), ["ann@example.com", "bo@example.com"]);
        let fields = |r: Result<Vec<String>, DomainError>| match r {
            Err(DomainError::Invalid(e)) => e.into_iter().map(|e| e.field).collect::<Vec<_>>(),
            other => panic!("{other:?}"),
        };
        assert_eq!(fields(check_addresses(&[])), ["addresses"]);
        assert_eq!(
            fields(check_addresses(&["a@example.com".into(), "nope".into()])),
            ["addresses[1]"]
        );
        let six: Vec<String> = (0..6).map(|i| format!("m{i}@example.com")).collect();
        assert_eq!(fields(check_addresses(&six)), ["addresses"]);
    }
}
