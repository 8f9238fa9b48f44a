//! What a campaign did: progress by recipient status (one grouped query over its recipients),
//! and stats from the provider's events. Events are stored once each (deduplicated by the
//! provider's event id) and every number is a count over them — totals, and uniques by
//! recipient — so stats come out the same whatever order events arrive in and however often.
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{EmailProvider, fetch};
use crate::adapters::pg::{self, Tx};
use crate::domain::{DomainError, Scope};

/// Recipients by status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct Progress {
    /// Every address frozen at start (suppressed ones included).
    pub total: i64,
    /// Waiting for their batch (held A/B recipients included).
    pub queued: i64,
    /// Of the queued, those held for the A/B winner.
    pub held: i64,
    /// With the provider right now.
    pub sending: i64,
    /// Accepted by the provider.
    pub sent: i64,
    /// Refused by the provider for good.
    pub failed: i64,
    /// Handed over when the sender stopped before recording the answer: settled from the
    /// provider's events, never sent twice.
    pub unknown: i64,
    /// On the suppression list (at the freeze or since).
    pub suppressed: i64,
    /// Not sent: the campaign was cancelled, or the contact deleted.
    pub cancelled: i64,
}

/// One grouped query over the campaign's recipients.
pub async fn progress(tx: &mut Tx, campaign_id: Uuid) -> Result<Progress, DomainError> {
    let rows: Vec<(String, i64, i64)> = sqlx::query_as(
        "select status, count(*), count(*) filter (where batch_id is null) from marketing_campaign_recipients \
         where campaign_id = $1 group by status",
    )
    .bind(campaign_id)
    .fetch_all(&mut **tx)
    .await?;
    let mut p = Progress::default();
    for (status, n, unbatched) in rows {
        p.total += n;
        match status.as_str() {
            "queued" => {
                p.queued = n;
                p.held = unbatched;
            }
            "sending" => p.sending = n,
            "sent" => p.sent = n,
            "failed" => p.failed = n,
            "unknown" => p.unknown = n,
            "suppressed" => p.suppressed = n,
            _ => p.cancelled += n,
        }
    }
    Ok(p)
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, ToSchema, sqlx::FromRow)]
pub struct Count {
    /// Every event.
    pub total: i64,
    /// Recipients with at least one.
    pub unique: i64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct Bounces {
    /// Recipients with a permanent bounce.
    pub hard: i64,
    /// Recipients with only temporary bounces.
    pub soft: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema, sqlx::FromRow)]
pub struct LinkClicks {
    pub url: String,
    pub total: i64,
    pub unique: i64,
}

/// One variant of an A/B test.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema, sqlx::FromRow)]
pub struct VariantStats {
    /// `a`, `b`, ... or `winner`.
    pub variant: String,
    pub sent: i64,
    /// Recipients who opened.
    pub opened: i64,
    /// Recipients who clicked.
    pub clicked: i64,
}

/// A campaign's results, from the provider's events.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct CampaignStats {
    /// Accepted by the provider (recipients).
    pub sent: i64,
    /// Recipients whose mailbox took the message.
    pub delivered: i64,
    pub opened: Count,
    pub clicked: Count,
    pub bounced: Bounces,
    /// Recipients who marked it as spam.
    pub complained: i64,
    /// Recipients who unsubscribed from it.
    pub unsubscribed: i64,
    /// Clicks per link, most clicked first (at most 100 links).
    pub links: Vec<LinkClicks>,
    /// Per A/B variant (empty without a test).
    pub variants: Vec<VariantStats>,
}

#[derive(sqlx::FromRow)]
struct Totals {
    delivered: i64,
    opens: i64,
    unique_opens: i64,
    clicks: i64,
    unique_clicks: i64,
    hard: i64,
    soft: i64,
    complained: i64,
    unsubscribed: i64,
}

/// The campaign's stats (any status: a draft's are zero).
pub async fn stats(pool: &PgPool, scope: &Scope, id: Uuid) -> Result<CampaignStats, DomainError> {
    let mut tx = pg::begin(pool, scope).await?;
    fetch(&mut tx, id, false).await?;
    let t: Totals = sqlx::query_as(
        "select count(distinct recipient_id) filter (where kind = 'delivered') as delivered, \
           count(*) filter (where kind = 'open') as opens, \
           count(distinct recipient_id) filter (where kind = 'open') as unique_opens, \
           count(*) filter (where kind = 'click') as clicks, \
           count(distinct recipient_id) filter (where kind = 'click') as unique_clicks, \
           count(distinct recipient_id) filter (where kind = 'bounce' and bounce_kind = 'hard') as hard, \
           count(distinct recipient_id) filter (where kind = 'bounce' and bounce_kind = 'soft' and not exists ( \
             select 1 from marketing_email_events h where h.tenant_id = e.tenant_id \
             and h.recipient_id = e.recipient_id and h.kind = 'bounce' and h.bounce_kind = 'hard')) as soft, \
           count(distinct recipient_id) filter (where kind = 'complaint') as complained, \
           count(distinct recipient_id) filter (where kind = 'unsubscribe') as unsubscribed \
         from marketing_email_events e where campaign_id = $1",
    )
    .bind(id)
    .fetch_one(&mut *tx)
    .await?;
    let links: Vec<LinkClicks> = sqlx::query_as(
        "select url, count(*) as total, count(distinct recipient_id) as unique from marketing_email_events \
         where campaign_id = $1 and kind = 'click' and url is not null group by url order by 2 desc, 1 limit 100",
    )
    .bind(id)
    .fetch_all(&mut *tx)
    .await?;
    let sent: i64 = sqlx::query_scalar(
        "select count(*) from marketing_campaign_recipients where campaign_id = $1 and status = 'sent'",
    )
    .bind(id)
    .fetch_one(&mut *tx)
    .await?;
    let variants: Vec<VariantStats> = sqlx::query_as(
        "select variant, count(*) filter (where status = 'sent') as sent, \
           count(*) filter (where opened_at is not null) as opened, \
           count(*) filter (where clicked_at is not null) as clicked \
         from marketing_campaign_recipients where campaign_id = $1 and variant is not null \
         group by variant order by variant = 'winner', variant",
    )
    .bind(id)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(CampaignStats {
        sent,
        delivered: t.delivered,
        opened: Count {
            total: t.opens,
            unique: t.unique_opens,
        },
        clicked: Count {
            total: t.clicks,
            unique: t.unique_clicks,
        },
        bounced: Bounces {
            hard: t.hard,
            soft: t.soft,
        },
        complained: t.complained,
        unsubscribed: t.unsubscribed,
        links,
        variants,
    })
}

/// What a provider event says happened to one of our messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum EventKind {
    Processed,
    Delivered,
    Deferred,
    Open,
    Click,
    Bounce,
    Dropped,
    Complaint,
    Unsubscribe,
}

/// A verified provider event about one recipient (the email-events function's input).
#[derive(Debug, Clone)]
pub struct EmailEvent {
    pub provider: EmailProvider,
    /// The provider's id of the event (SendGrid `sg_event_id`, Mailgun's event id).
    pub provider_event_id: String,
    /// Our message id (from `custom_args` / `v:` variables).
    pub recipient_id: Uuid,
    pub kind: EventKind,
    /// `Some(true)`: a hard (permanent) bounce; only for bounces.
    pub hard_bounce: Option<bool>,
    /// The clicked link; only for clicks.
    pub url: Option<String>,
    pub occurred_at: DateTime<Utc>,
}

/// Records an event once and folds it into its recipient (the first time of each kind; a hard
/// bounce outranks soft ones), in the caller's tenant transaction. `false`: a repeat (same
/// provider event id) or a recipient this tenant does not have; nothing changed.
pub async fn record_event(tx: &mut Tx, event: &EmailEvent) -> Result<bool, DomainError> {
    let bounce_kind = match (event.kind, event.hard_bounce) {
        (EventKind::Bounce, Some(true)) => Some("hard"),
        (EventKind::Bounce, _) => Some("soft"),
        _ => None,
    };
    let url = if event.kind == EventKind::Click {
        event.url.as_deref()
    } else {
        None
    };
    let stored = sqlx::query(
        "insert into marketing_email_events (id, tenant_id, campaign_id, recipient_id, provider, provider_event_id, \
           kind, bounce_kind, url, occurred_at) \
         select $1, r.tenant_id, r.campaign_id, r.id, $3, $4, $5, $6, left($7, 2048), $8 \
         from marketing_campaign_recipients r where r.id = $2 \
         on conflict (tenant_id, provider, provider_event_id) do nothing",
    )
    .bind(Uuid::now_v7())
    .bind(event.recipient_id)
    .bind(event.provider)
    .bind(&event.provider_event_id)
    .bind(event.kind)
    .bind(bounce_kind)
    .bind(url)
    .bind(event.occurred_at)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if stored == 0 {
        return Ok(false);
    }
    let column = match event.kind {
        EventKind::Delivered => "delivered_at",
        EventKind::Open => "opened_at",
        EventKind::Click => "clicked_at",
        EventKind::Complaint => "complained_at",
        EventKind::Unsubscribe => "unsubscribed_at",
        EventKind::Bounce => {
            sqlx::query(
                "update marketing_campaign_recipients set bounced_at = least(bounced_at, $2), \
                 bounce_kind = case when $3 = 'hard' or bounce_kind = 'hard' then 'hard' else 'soft' end \
                 where id = $1",
            )
            .bind(event.recipient_id)
            .bind(event.occurred_at)
            .bind(bounce_kind)
            .execute(&mut **tx)
            .await?;
            return Ok(true);
        }
        EventKind::Processed | EventKind::Deferred | EventKind::Dropped => return Ok(true),
    };
    sqlx::query(&format!(
        "update marketing_campaign_recipients set {column} = least({column}, $2) where id = $1"
    ))
    .bind(event.recipient_id)
    .bind(event.occurred_at)
    .execute(&mut **tx)
    .await?;
    Ok(true)
}
