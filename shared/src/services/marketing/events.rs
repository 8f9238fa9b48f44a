//! The email providers' event webhooks (`POST /webhooks/email/{provider}/{tenant_key}`, the
//! `email-events` function): SendGrid's Signed Event Webhook and Mailgun's webhooks, verified,
//! folded into per-recipient status and campaign stats, and turned into suppressions.
//!
//! **Finding the tenant.** `{tenant_key}` is the webhook key of the tenant's `sendgrid` or
//! `mailgun` connector (the connector view shows the whole path). Its verification key is an
//! optional connector field (SendGrid `webhook_public_key`, Mailgun `webhook_signing_key`):
//! without it every delivery is refused (401).
//!
//! **What is refused** (401, nothing recorded, nothing changed):
//! - SendGrid: a missing signature or timestamp header, a timestamp more than [`TOLERANCE`]
//!   away from now (either way), or an ECDSA P-256 signature that does not verify over the
//!   timestamp followed by the exact raw body;
//! - Mailgun: a body without a readable `signature` block, a stale timestamp (same
//!   tolerance), or an HMAC-SHA256 of timestamp + token that does not match;
//! - a replay: a delivery whose replay key was seen before — SendGrid's is what its signature
//!   covers (timestamp + raw body: a malleated or re-encoded signature of the same delivery is
//!   still a replay), Mailgun's its random token (its signature does not cover the event at
//!   all, so the token is what stops a captured delivery from being posted again). Keys are
//!   kept (hashed) for twice the tolerance, which covers every moment at which a replay could
//!   still pass the timestamp check; older ones are pruned as new ones are written.
//!
//! Unknown provider or key → 404; a body over [`MAX_BODY_BYTES`] → 413.
//!
//! **What is kept.** Each event is about one of our messages: its `message_id` (from the
//! custom args / `v:` variables the sender put on it) must be a recipient of *this* tenant's
//! campaigns. An event without one, or naming a message of another tenant, is ignored and
//! counted (`ignored`), as are event types the portal does not track: never an error, or the
//! provider would retry the delivery forever. So is an event that cannot be read
//! (`malformed`), and so is a verified body that is not the JSON expected.
//!
//! **Once, in any order.** Events are stored once each, deduplicated by the provider's event
//! id: SendGrid's `sg_event_id`; Mailgun's `event-data.id`, which Mailgun only guarantees
//! unique within a day (as django-anymail notes), so its dedup id is `<id>@<the event's UTC
//! day>` (a retry carries the same event, timestamp included, so it gets the same id). Stats
//! are counts over the stored events and the recipient's first time of each kind, so the same
//! events in any order and any number of times give the same stats.
//!
//! **Suppression, at once**, in the same transaction: a hard bounce suppresses the address
//! (`hard_bounce`), a spam complaint (`complaint`), an unsubscribe at the provider
//! (`unsubscribed`). Soft bounces suppress (`soft_bounce`) when [`SOFT_BOUNCE_THRESHOLD`]
//! different messages to the address (any of the tenant's campaigns) soft-bounced within
//! [`SOFT_BOUNCE_WINDOW_DAYS`] days. An address already on the list keeps its entry unless the
//! new reason is stronger — `manual` < `soft_bounce` < `hard_bounce` < the opt-outs
//! (`unsubscribed`, `complaint`) — and an opt-out is never replaced (consent: see
//! [`super::suppressions`]). Only events stored now suppress: a repeat changes nothing (an entry
//! the tenant removed stays removed). Drops are not suppressions: the provider did not try.
//!
//! **Fast.** A delivery is one transaction with a fixed number of statements whatever its
//! size (a SendGrid batch holds up to ~1,000 events): the replay key, the recipients (locked in
//! id order, so two deliveries about the same messages queue instead of deadlocking), one
//! set-based insert of the events folded into their recipients ([`record_events`], the
//! set-based twin of [`report::record_event`]), and the suppressions.
//!
//! One file (over 800 lines, a sixth of them tests): verification, recording and suppression
//! are the steps of one delivery's transaction, read together.
//!
//! Length (over 800 lines): about 700 lines of code — verification of both providers' schemes, the
//! replay guard, the set-based recording and the suppressions, which belong to one transaction —
//! and its unit tests.
use chrono::{DateTime, Utc};
use http::HeaderMap;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;
use utoipa::ToSchema;
use uuid::Uuid;

use super::campaigns::EmailProvider;
use super::campaigns::report::{self, EventKind};
use crate::adapters::pg::{self, Tx};
use crate::domain::secret::sha256_bytes;
use crate::domain::{DomainError, Scope};
use crate::services::connectors::Connectors;
use crate::services::connectors::catalog::{Kind, WebhookScheme};
use crate::services::connectors::webhooks::connector_for_key;
use crate::services::providers::email::{self, EventKind as Neutral};
use crate::services::providers::{mailgun, sendgrid};

/// How far a delivery's timestamp may be from now, either way. Neither provider's signature
/// expires by itself; SendGrid posts within seconds of signing (a retry is signed anew), and
/// ten minutes absorbs clock skew and a slow queue on either side.
pub const TOLERANCE: Duration = Duration::from_secs(10 * 60);
/// The largest delivery taken. SendGrid batches are up to ~1 MiB (1,000 events or 30 seconds'
/// worth); Lambda's 6 MB request limit is above.
pub const MAX_BODY_BYTES: usize = 5 * 1024 * 1024;
/// Soft bounces of different messages to one address that suppress it ...
pub const SOFT_BOUNCE_THRESHOLD: i64 = 3;
/// ... within this many days (of the events' own times, counted back from now).
pub const SOFT_BOUNCE_WINDOW_DAYS: i64 = 30;
/// The longest provider event id kept (the table's limit).
const MAX_EVENT_ID: usize = 200;
/// The most of a provider's reason kept in a suppression's detail.
const MAX_DETAIL_CHARS: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    /// Unknown provider, malformed key, or no connector with this key.
    #[error("no such webhook")]
    NotFound,
    /// Not verifiably the provider's (the reason is for the log, not the answer).
    #[error("unauthorized: {0}")]
    Unauthorized(&'static str),
    #[error("the delivery is larger than {MAX_BODY_BYTES} bytes")]
    TooLarge,
    #[error(transparent)]
    Domain(#[from] DomainError),
}

impl From<sqlx::Error> for EventsError {
    fn from(e: sqlx::Error) -> Self {
        EventsError::Domain(e.into())
    }
}

/// What became of a verified delivery's events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, ToSchema)]
#[schema(as = EmailEventsReceived)]
pub struct Received {
    /// Recorded now.
    pub stored: usize,
    /// Recorded before (the provider's retry, or the same event twice in the delivery).
    pub duplicates: usize,
    /// Not about one of this tenant's messages (no message id, another tenant's), or of a type
    /// the portal does not track.
    pub ignored: usize,
    /// Could not be read.
    pub malformed: usize,
}

/// Verifies one delivery and records its events, as of `now` (see the module's docs).
#[tracing::instrument(skip_all, fields(provider = %provider))]
pub async fn receive(
    connectors: &Connectors,
    provider: &str,
    key: &str,
    headers: &HeaderMap,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<Received, EventsError> {
    let kind = Kind::parse(provider).ok_or(EventsError::NotFound)?;
    let provider = match kind {
        Kind::Sendgrid => EmailProvider::Sendgrid,
        Kind::Mailgun => EmailProvider::Mailgun,
        _ => return Err(EventsError::NotFound),
    };
    let scheme = kind.spec().webhook.ok_or(EventsError::NotFound)?;
    let (tenant_id, creds) = connector_for_key(connectors, kind, key)
        .await?
        .ok_or(EventsError::NotFound)?;
    if body.len() > MAX_BODY_BYTES {
        return Err(EventsError::TooLarge);
    }
    let verification_key = creds
        .value(scheme.secret_field())
        .filter(|k| !k.trim().is_empty())
        .ok_or(EventsError::Unauthorized("no event webhook key is configured"))?;
    let delivery = match scheme {
        WebhookScheme::SendgridEcdsa {
            signature_header,
            timestamp_header,
            ..
        } => sendgrid_delivery(
            &verification_key,
            header(headers, signature_header),
            header(headers, timestamp_header),
            body,
            now,
        )?,
        WebhookScheme::MailgunHmac { .. } => mailgun_delivery(&verification_key, body, now)?,
        WebhookScheme::HmacSha256Base64 { .. } | WebhookScheme::SharedSecret { .. } => {
            return Err(EventsError::NotFound);
        }
    };
    let scope = Scope::worker(tenant_id, "", format!("email-events:{}", provider.as_str()));
    let mut tx = pg::begin(&connectors.db, &scope).await?;
    if !remember(&mut tx, tenant_id, provider, &delivery.replay_key, now).await? {
        // Dropped uncommitted: the transaction rolls back, nothing changed.
        return Err(EventsError::Unauthorized("replayed delivery"));
    }
    let received = apply(&mut tx, tenant_id, provider, delivery, now).await?;
    tx.commit().await?;
    tracing::info!(
        tenant_id = %tenant_id,
        stored = received.stored,
        duplicates = received.duplicates,
        ignored = received.ignored,
        malformed = received.malformed,
        "email events received"
    );
    Ok(received)
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

/// A verified delivery: what stops it being accepted twice, and what it says.
#[derive(Debug)]
struct Delivery {
    replay_key: Vec<u8>,
    events: Vec<email::EmailEvent>,
    /// Types not tracked.
    skipped: usize,
    /// Unreadable events (or a whole unreadable body: 1).
    malformed: usize,
}

fn sendgrid_delivery(
    public_key: &str,
    signature: Option<&str>,
    timestamp: Option<&str>,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<Delivery, EventsError> {
    let signature = signature
        .filter(|s| !s.is_empty())
        .ok_or(EventsError::Unauthorized("signature missing"))?;
    let timestamp = timestamp.ok_or(EventsError::Unauthorized("timestamp missing"))?;
    if !email::fresh(timestamp, now, TOLERANCE) {
        return Err(EventsError::Unauthorized("stale or unreadable timestamp"));
    }
    if !sendgrid::verify(public_key, signature, timestamp, body) {
        return Err(EventsError::Unauthorized("signature does not match"));
    }
    let mut signed = Vec::with_capacity(timestamp.len() + body.len());
    signed.extend_from_slice(timestamp.as_bytes());
    signed.extend_from_slice(body);
    let replay_key = sha256_bytes(&signed);
    Ok(match sendgrid::parse_events(body) {
        Ok(batch) => {
            for why in &batch.malformed {
                tracing::warn!(why = %why, "malformed SendGrid event");
            }
            Delivery {
                replay_key,
                events: batch.events,
                skipped: batch.skipped,
                malformed: batch.malformed.len(),
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "a signed SendGrid delivery that is not an array of events");
            Delivery {
                replay_key,
                events: Vec::new(),
                skipped: 0,
                malformed: 1,
            }
        }
    })
}

fn mailgun_delivery(signing_key: &str, body: &[u8], now: DateTime<Utc>) -> Result<Delivery, EventsError> {
    let webhook = mailgun::parse_event(body).map_err(|_| EventsError::Unauthorized("no readable signature block"))?;
    let sig = &webhook.signature;
    if sig.token.is_empty() {
        return Err(EventsError::Unauthorized("no token"));
    }
    if !email::fresh(&sig.timestamp, now, TOLERANCE) {
        return Err(EventsError::Unauthorized("stale or unreadable timestamp"));
    }
    if !mailgun::verify(signing_key, &sig.timestamp, &sig.token, &sig.signature) {
        return Err(EventsError::Unauthorized("signature does not match"));
    }
    let replay_key = sha256_bytes(sig.token.as_bytes());
    let (events, skipped, malformed) = match webhook.event {
        Ok(Some(event)) => (vec![event], 0, 0),
        Ok(None) => (Vec::new(), 1, 0),
        Err(e) => {
            tracing::warn!(error = %e, "malformed Mailgun event");
            (Vec::new(), 0, 1)
        }
    };
    Ok(Delivery {
        replay_key,
        events,
        skipped,
        malformed,
    })
}

/// Records the replay key; `false`: seen before (a replay). Prunes this tenant and provider's
/// keys older than twice the tolerance in the same statement.
async fn remember(
    tx: &mut Tx,
    tenant_id: Uuid,
    provider: EmailProvider,
    replay_key: &[u8],
    now: DateTime<Utc>,
) -> Result<bool, DomainError> {
    let keep = chrono::Duration::from_std(TOLERANCE * 2).unwrap_or(chrono::Duration::minutes(20));
    let inserted = sqlx::query(
        "with pruned as (delete from marketing_webhook_replays where tenant_id = $1 and provider = $2 and seen_at < $5) \
         insert into marketing_webhook_replays (tenant_id, provider, key_sha256, seen_at) values ($1, $2, $3, $4) \
         on conflict do nothing",
    )
    .bind(tenant_id)
    .bind(provider)
    .bind(replay_key)
    .bind(now)
    .bind(now - keep)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

/// A provider's event as the campaign report records it: `None` when it names none of our
/// messages. Mailgun's event id is made unique beyond its day (see the module's docs).
pub fn to_report(provider: EmailProvider, event: &email::EmailEvent) -> Option<report::EmailEvent> {
    let recipient_id = event.message_id?;
    let (kind, hard_bounce, url) = match &event.kind {
        Neutral::Accepted => (EventKind::Processed, None, None),
        Neutral::Delivered => (EventKind::Delivered, None, None),
        Neutral::Deferred => (EventKind::Deferred, None, None),
        Neutral::Bounced { hard } => (EventKind::Bounce, Some(*hard), None),
        Neutral::Dropped => (EventKind::Dropped, None, None),
        Neutral::Opened => (EventKind::Open, None, None),
        Neutral::Clicked { url } => (EventKind::Click, None, Some(url.replace('\0', ""))),
        Neutral::Complained => (EventKind::Complaint, None, None),
        Neutral::Unsubscribed => (EventKind::Unsubscribe, None, None),
    };
    let provider_event_id = match provider {
        EmailProvider::Sendgrid => event.provider_event_id.clone(),
        EmailProvider::Mailgun => format!("{}@{}", event.provider_event_id, event.occurred_at.format("%Y-%m-%d")),
    };
    Some(report::EmailEvent {
        provider,
        provider_event_id,
        recipient_id,
        kind,
        hard_bounce,
        url,
        occurred_at: event.occurred_at,
    })
}

/// Whether a provider event id can be stored (1 to 200 characters, no NUL).
fn usable_id(id: &str) -> bool {
    !id.is_empty() && id.chars().count() <= MAX_EVENT_ID && !id.contains('\0')
}

/// The name [`EventKind`] has in the database (its `sqlx` name).
fn kind_name(kind: EventKind) -> &'static str {
    match kind {
        EventKind::Processed => "processed",
        EventKind::Delivered => "delivered",
        EventKind::Deferred => "deferred",
        EventKind::Open => "open",
        EventKind::Click => "click",
        EventKind::Bounce => "bounce",
        EventKind::Dropped => "dropped",
        EventKind::Complaint => "complaint",
        EventKind::Unsubscribe => "unsubscribe",
    }
}

/// One event [`record_events`] stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// Its index in the slice given.
    pub index: usize,
    pub recipient_id: Uuid,
    pub campaign_id: Uuid,
    /// The recipient's address (lower case, as the campaign froze it).
    pub email: String,
}

/// What [`record_events`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recorded {
    pub stored: Vec<StoredEvent>,
    /// Stored before, or earlier in the slice.
    pub duplicates: usize,
    /// About a recipient this tenant does not have.
    pub unknown: usize,
}

/// [`report::record_event`] for many events at once, with the same outcome as calling it for
/// each in order — an event is stored when its recipient is the tenant's and its provider event
/// id is new (to the table and to the events before it); a stored event folds into its
/// recipient (the earliest time of each kind; a hard bounce outranks soft ones) — in a fixed
/// number of statements: the recipients (locked in id order), then one insert of the new events
/// that folds them into their recipients.
pub async fn record_events(tx: &mut Tx, events: &[report::EmailEvent]) -> Result<Recorded, DomainError> {
    if events.is_empty() {
        return Ok(Recorded::default());
    }
    let mut ids: Vec<Uuid> = events.iter().map(|e| e.recipient_id).collect();
    ids.sort_unstable();
    ids.dedup();
    let rows: Vec<(Uuid, Uuid, String)> = sqlx::query_as(
        "select id, campaign_id, email from marketing_campaign_recipients where id = any($1) \
         order by id for no key update",
    )
    .bind(&ids)
    .fetch_all(&mut **tx)
    .await?;
    let recipients: HashMap<Uuid, (Uuid, String)> = rows.into_iter().map(|(id, c, e)| (id, (c, e))).collect();

    let mut recorded = Recorded::default();
    let mut seen: HashSet<(&str, &str)> = HashSet::with_capacity(events.len());
    let mut candidates: Vec<usize> = Vec::with_capacity(events.len());
    for (i, e) in events.iter().enumerate() {
        if !recipients.contains_key(&e.recipient_id) {
            recorded.unknown += 1;
        } else if !seen.insert((e.provider.as_str(), e.provider_event_id.as_str())) {
            recorded.duplicates += 1;
        } else {
            candidates.push(i);
        }
    }
    if candidates.is_empty() {
        return Ok(recorded);
    }
    let mut row_ids = Vec::with_capacity(candidates.len());
    let mut recipient_ids = Vec::with_capacity(candidates.len());
    let mut providers = Vec::with_capacity(candidates.len());
    let mut event_ids = Vec::with_capacity(candidates.len());
    let mut kinds = Vec::with_capacity(candidates.len());
    let mut bounce_kinds: Vec<Option<&str>> = Vec::with_capacity(candidates.len());
    let mut urls: Vec<Option<&str>> = Vec::with_capacity(candidates.len());
    let mut times = Vec::with_capacity(candidates.len());
    for e in candidates.iter().filter_map(|&i| events.get(i)) {
        row_ids.push(Uuid::now_v7());
        recipient_ids.push(e.recipient_id);
        providers.push(e.provider.as_str());
        event_ids.push(e.provider_event_id.as_str());
        kinds.push(kind_name(e.kind));
        bounce_kinds.push(match (e.kind, e.hard_bounce) {
            (EventKind::Bounce, Some(true)) => Some("hard"),
            (EventKind::Bounce, _) => Some("soft"),
            _ => None,
        });
        urls.push(if e.kind == EventKind::Click {
            e.url.as_deref()
        } else {
            None
        });
        times.push(e.occurred_at);
    }
    // One statement: the new events in, and folded into their recipients (only kinds that
    // mark a recipient; `least` keeps the first time whatever the order).
    let inserted: Vec<(String, String)> = sqlx::query_as(
        "with input as ( \
           select * from unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], \
                                $8::timestamptz[]) \
             as e(id, recipient_id, provider, provider_event_id, kind, bounce_kind, url, occurred_at)), \
         stored as ( \
           insert into marketing_email_events (id, tenant_id, campaign_id, recipient_id, provider, provider_event_id, \
             kind, bounce_kind, url, occurred_at) \
           select e.id, r.tenant_id, r.campaign_id, r.id, e.provider, e.provider_event_id, e.kind, e.bounce_kind, \
             left(e.url, 2048), e.occurred_at \
           from input e join marketing_campaign_recipients r on r.id = e.recipient_id \
           on conflict (tenant_id, provider, provider_event_id) do nothing \
           returning recipient_id, provider, provider_event_id, kind, bounce_kind, occurred_at), \
         firsts as ( \
           select recipient_id, \
             min(occurred_at) filter (where kind = 'delivered') as delivered_at, \
             min(occurred_at) filter (where kind = 'open') as opened_at, \
             min(occurred_at) filter (where kind = 'click') as clicked_at, \
             min(occurred_at) filter (where kind = 'complaint') as complained_at, \
             min(occurred_at) filter (where kind = 'unsubscribe') as unsubscribed_at, \
             min(occurred_at) filter (where kind = 'bounce') as bounced_at, \
             coalesce(bool_or(bounce_kind = 'hard'), false) as hard \
           from stored where kind in ('delivered', 'open', 'click', 'complaint', 'unsubscribe', 'bounce') \
           group by recipient_id), \
         folded as ( \
           update marketing_campaign_recipients r set \
             delivered_at = least(r.delivered_at, f.delivered_at), \
             opened_at = least(r.opened_at, f.opened_at), \
             clicked_at = least(r.clicked_at, f.clicked_at), \
             complained_at = least(r.complained_at, f.complained_at), \
             unsubscribed_at = least(r.unsubscribed_at, f.unsubscribed_at), \
             bounced_at = least(r.bounced_at, f.bounced_at), \
             bounce_kind = case when f.bounced_at is null then r.bounce_kind \
                                when f.hard or r.bounce_kind = 'hard' then 'hard' else 'soft' end \
           from firsts f where r.id = f.recipient_id \
           returning r.id) \
         select provider, provider_event_id from stored",
    )
    .bind(&row_ids)
    .bind(&recipient_ids)
    .bind(&providers)
    .bind(&event_ids)
    .bind(&kinds)
    .bind(&bounce_kinds)
    .bind(&urls)
    .bind(&times)
    .fetch_all(&mut **tx)
    .await?;
    let index: HashMap<(&str, &str), usize> = candidates
        .iter()
        .filter_map(|&i| {
            events
                .get(i)
                .map(|e| ((e.provider.as_str(), e.provider_event_id.as_str()), i))
        })
        .collect();
    for (provider, event_id) in &inserted {
        let Some(&i) = index.get(&(provider.as_str(), event_id.as_str())) else {
            continue;
        };
        let Some(e) = events.get(i) else { continue };
        let Some((campaign_id, email)) = recipients.get(&e.recipient_id) else {
            continue;
        };
        recorded.stored.push(StoredEvent {
            index: i,
            recipient_id: e.recipient_id,
            campaign_id: *campaign_id,
            email: email.clone(),
        });
    }
    recorded.stored.sort_by_key(|s| s.index);
    recorded.duplicates += candidates.len().saturating_sub(recorded.stored.len());
    Ok(recorded)
}

/// Why an address is suppressed, by strength (the list keeps the strongest; see the module's
/// docs). `Opt-outs` are equal: the first one stays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Reason {
    SoftBounce,
    HardBounce,
    Unsubscribed,
    Complaint,
}

impl Reason {
    fn as_str(self) -> &'static str {
        match self {
            Reason::SoftBounce => "soft_bounce",
            Reason::HardBounce => "hard_bounce",
            Reason::Unsubscribed => "unsubscribed",
            Reason::Complaint => "complaint",
        }
    }

    /// The reason a stored event suppresses its address at once (soft bounces: at the
    /// threshold only).
    fn at_once(kind: EventKind, hard_bounce: Option<bool>) -> Option<Reason> {
        match (kind, hard_bounce) {
            (EventKind::Bounce, Some(true)) => Some(Reason::HardBounce),
            (EventKind::Complaint, _) => Some(Reason::Complaint),
            (EventKind::Unsubscribe, _) => Some(Reason::Unsubscribed),
            _ => None,
        }
    }
}

/// The suppression-list strength of a stored reason, in SQL (opt-outs are never replaced).
const STRENGTH_SQL: &str =
    "case {r} when 'manual' then 0 when 'soft_bounce' then 1 when 'hard_bounce' then 2 else 3 end";

fn strength(column: &str) -> String {
    STRENGTH_SQL.replace("{r}", column)
}

/// Records a verified delivery's events and suppresses what they say, in the tenant's
/// transaction.
async fn apply(
    tx: &mut Tx,
    tenant_id: Uuid,
    provider: EmailProvider,
    delivery: Delivery,
    now: DateTime<Utc>,
) -> Result<Received, DomainError> {
    let mut received = Received {
        ignored: delivery.skipped,
        malformed: delivery.malformed,
        ..Received::default()
    };
    let mut events = Vec::with_capacity(delivery.events.len());
    let mut reasons = Vec::with_capacity(delivery.events.len());
    for e in &delivery.events {
        if e.tenant_id.is_some_and(|t| t != tenant_id) {
            received.ignored += 1;
            continue;
        }
        match to_report(provider, e) {
            None => received.ignored += 1,
            Some(r) if !usable_id(&r.provider_event_id) => {
                tracing::warn!("an event id that cannot be stored (empty, too long or with NUL)");
                received.malformed += 1;
            }
            Some(r) => {
                events.push(r);
                reasons.push(e.reason.as_deref());
            }
        }
    }
    let recorded = record_events(tx, &events).await?;
    received.stored = recorded.stored.len();
    received.duplicates = recorded.duplicates;
    received.ignored += recorded.unknown;
    suppress(tx, tenant_id, provider, &events, &reasons, &recorded.stored, now).await?;
    Ok(received)
}

/// Adds (or strengthens) the suppressions the stored events call for.
async fn suppress(
    tx: &mut Tx,
    tenant_id: Uuid,
    provider: EmailProvider,
    events: &[report::EmailEvent],
    reasons: &[Option<&str>],
    stored: &[StoredEvent],
    now: DateTime<Utc>,
) -> Result<(), DomainError> {
    let name = provider.kind().spec().name;
    // The strongest reason per address, with its detail.
    let mut wanted: BTreeMap<&str, (Reason, String)> = BTreeMap::new();
    let mut soft: BTreeMap<&str, String> = BTreeMap::new();
    for s in stored {
        let Some(e) = events.get(s.index) else { continue };
        let said = reasons.get(s.index).copied().flatten();
        let describe = |what: &str| detail(name, what, s.campaign_id, said);
        if let Some(reason) = Reason::at_once(e.kind, e.hard_bounce) {
            let better = wanted.get(s.email.as_str()).is_none_or(|(r, _)| reason > *r);
            if better {
                let what = match reason {
                    Reason::HardBounce => "a hard bounce",
                    Reason::Complaint => "a spam complaint",
                    _ => "an unsubscribe",
                };
                wanted.insert(&s.email, (reason, describe(what)));
            }
        } else if e.kind == EventKind::Bounce {
            soft.insert(&s.email, describe("a soft bounce"));
        }
    }
    soft.retain(|email, _| !wanted.contains_key(email));
    if !soft.is_empty() {
        let addresses: Vec<&str> = soft.keys().copied().collect();
        let over: Vec<String> = sqlx::query_scalar(
            "select r.email from marketing_campaign_recipients r \
             join marketing_email_events e on e.tenant_id = r.tenant_id and e.recipient_id = r.id \
             where r.email = any($1) and e.kind = 'bounce' and e.bounce_kind = 'soft' and e.occurred_at >= $2 \
             group by r.email having count(distinct r.id) >= $3",
        )
        .bind(&addresses)
        .bind(now - chrono::Duration::days(SOFT_BOUNCE_WINDOW_DAYS))
        .bind(SOFT_BOUNCE_THRESHOLD)
        .fetch_all(&mut **tx)
        .await?;
        for email in over {
            if let Some((&address, last)) = soft.get_key_value(email.as_str()) {
                let detail = format!(
                    "{SOFT_BOUNCE_THRESHOLD} or more messages soft-bounced within {SOFT_BOUNCE_WINDOW_DAYS} days; \
                     the last: {last}"
                );
                wanted.insert(address, (Reason::SoftBounce, truncate(&detail)));
            }
        }
    }
    if wanted.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = wanted.keys().map(|_| Uuid::now_v7()).collect();
    let emails: Vec<&str> = wanted.keys().copied().collect();
    let why: Vec<&str> = wanted.values().map(|(r, _)| r.as_str()).collect();
    let details: Vec<&str> = wanted.values().map(|(_, d)| d.as_str()).collect();
    let suppressed = sqlx::query(&format!(
        "insert into marketing_suppressions (id, tenant_id, email, reason, detail) \
         select s.id, $1, s.email, s.reason, s.detail from unnest($2::uuid[], $3::text[], $4::text[], $5::text[]) \
           as s(id, email, reason, detail) \
         on conflict (tenant_id, email) do update set reason = excluded.reason, detail = excluded.detail \
         where {} < {}",
        strength("marketing_suppressions.reason"),
        strength("excluded.reason"),
    ))
    .bind(tenant_id)
    .bind(&ids)
    .bind(&emails)
    .bind(&why)
    .bind(&details)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    tracing::info!(suppressed, "suppressions from email events");
    Ok(())
}

/// A suppression's detail: who said what about which campaign, with the provider's words.
fn detail(provider: &str, what: &str, campaign_id: Uuid, said: Option<&str>) -> String {
    let base = format!("{provider} reported {what} (campaign {campaign_id})");
    match said.map(str::trim).filter(|s| !s.is_empty()) {
        Some(said) => truncate(&format!("{base}: {said}")),
        None => base,
    }
}

/// At most [`MAX_DETAIL_CHARS`], without control characters.
fn truncate(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_DETAIL_CHARS)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn neutral(kind: Neutral) -> email::EmailEvent {
        email::EmailEvent {
            provider_event_id: "ev-1".into(),
            kind,
            email: "Ann@Example.com".into(),
            occurred_at: DateTime::from_timestamp(1_764_000_000, 0).unwrap_or_default(),
            message_id: Some(Uuid::from_u128(7)),
            campaign_id: None,
            tenant_id: None,
            provider_message_id: None,
            reason: None,
        }
    }

    #[test]
    fn every_provider_kind_maps_onto_the_reports_kind() {
        // Given each neutral kind, when mapped, then the report's kind, bounce flag and url
        let cases = [
            (Neutral::Accepted, EventKind::Processed, None, None),
            (Neutral::Delivered, EventKind::Delivered, None, None),
            (Neutral::Deferred, EventKind::Deferred, None, None),
            (Neutral::Bounced { hard: true }, EventKind::Bounce, Some(true), None),
            (Neutral::Bounced { hard: false }, EventKind::Bounce, Some(false), None),
            (Neutral::Dropped, EventKind::Dropped, None, None),
            (Neutral::Opened, EventKind::Open, None, None),
            (
                Neutral::Clicked {
                    url: "https://x.example/\0a".into(),
                },
                EventKind::Click,
                None,
                Some("https://x.example/a".to_owned()),
            ),
            (Neutral::Complained, EventKind::Complaint, None, None),
            (Neutral::Unsubscribed, EventKind::Unsubscribe, None, None),
        ];
        for (n, kind, hard, url) in cases {
            let r = to_report(EmailProvider::Sendgrid, &neutral(n.clone())).unwrap();
            assert_eq!((r.kind, r.hard_bounce, r.url), (kind, hard, url), "{n:?}");
            assert_eq!(r.recipient_id, Uuid::from_u128(7));
            assert_eq!(r.provider_event_id, "ev-1");
        }
    }

    #[test]
    fn an_event_without_our_id_is_not_ours_and_mailgun_ids_carry_their_day() {
        let mut e = neutral(Neutral::Opened);
        e.message_id = None;
        assert!(to_report(EmailProvider::Sendgrid, &e).is_none());
        // Mailgun's id is unique within a day only: the event's UTC day goes with it.
        let r = to_report(EmailProvider::Mailgun, &neutral(Neutral::Opened)).unwrap();
        assert_eq!(r.provider_event_id, "ev-1@2025-11-24");
        let mut next_day = neutral(Neutral::Opened);
        next_day.occurred_at += chrono::Duration::days(1);
        assert_ne!(
            to_report(EmailProvider::Mailgun, &next_day).unwrap().provider_event_id,
            r.provider_event_id
        );
    }

    #[test]
    fn kind_names_are_the_reports_own() {
        for kind in [
            EventKind::Processed,
            EventKind::Delivered,
            EventKind::Deferred,
            EventKind::Open,
            EventKind::Click,
            EventKind::Bounce,
            EventKind::Dropped,
            EventKind::Complaint,
            EventKind::Unsubscribe,
        ] {
            assert_eq!(serde_json::to_value(kind).unwrap(), kind_name(kind), "{kind:?}");
        }
    }

    #[test]
    fn the_catalogs_headers_are_sendgrids() {
        let Some(WebhookScheme::SendgridEcdsa {
            signature_header,
            timestamp_header,
            ..
        }) = Kind::Sendgrid.spec().webhook
        else {
            panic!("SendGrid's scheme");
        };
        assert_eq!(signature_header, sendgrid::SIGNATURE_HEADER);
        assert_eq!(timestamp_header, sendgrid::TIMESTAMP_HEADER);
    }

    #[test]
    fn reasons_rank_and_only_hard_bounces_complaints_and_unsubscribes_suppress_at_once() {
        assert!(Reason::SoftBounce < Reason::HardBounce && Reason::HardBounce < Reason::Unsubscribed);
        assert_eq!(Reason::at_once(EventKind::Bounce, Some(true)), Some(Reason::HardBounce));
        assert_eq!(Reason::at_once(EventKind::Bounce, Some(false)), None);
        assert_eq!(Reason::at_once(EventKind::Complaint, None), Some(Reason::Complaint));
        assert_eq!(
            Reason::at_once(EventKind::Unsubscribe, None),
            Some(Reason::Unsubscribed)
        );
        for kind in [
            EventKind::Dropped,
            EventKind::Open,
            EventKind::Delivered,
            EventKind::Deferred,
        ] {
            assert_eq!(Reason::at_once(kind, None), None, "{kind:?}");
        }
        assert_eq!(
            strength("x"),
            "case x when 'manual' then 0 when 'soft_bounce' then 1 when 'hard_bounce' then 2 else 3 end"
        );
    }

    #[test]
    fn event_ids_and_details_are_kept_within_the_tables_limits() {
        assert!(usable_id("sg-1"));
        assert!(!usable_id(""));
        assert!(!usable_id(&"x".repeat(201)));
        assert!(!usable_id("a\0b"));
        let long = "y".repeat(5000);
        let d = detail("SendGrid", "a hard bounce", Uuid::nil(), Some(&long));
        assert_eq!(d.chars().count(), MAX_DETAIL_CHARS);
        assert_eq!(
            detail("Mailgun", "an unsubscribe", Uuid::nil(), Some(" \n")),
            format!("Mailgun reported an unsubscribe (campaign {})", Uuid::nil())
        );
        assert_eq!(truncate("a\r\nb"), "a  b");
    }
}
