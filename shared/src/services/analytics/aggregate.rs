//! The scheduled aggregator: reads the stream with a consumer group, folds a batch into the
//! hourly rollups, and commits the rollups, the visits and the stream position in ONE Postgres
//! transaction, then XACKs.
//!
//! Exactly once, whatever crashes: one aggregator works at a time (a transaction-scoped
//! advisory lock); entries at or below the committed position were folded already and are only
//! acknowledged; entries above it are folded. A crash between read and commit leaves the entries
//! pending — the next run reclaims them with XAUTOCLAIM and folds them; a crash between commit
//! and XACK leaves them pending too — the next run finds them at or below the position and only
//! acknowledges them.
//!
//! Unpoisonable: an entry that is not an event, or an event Postgres refuses (a text no index
//! can hold, a value out of range), is set aside in `analytics_dead_events` with its reason, in
//! the same transaction, and acknowledged; the batch goes on. A refused batch is split in halves,
//! each written under a savepoint, until the refused events are alone (in stream order, so the
//! visits fold as they would have). Errors that are not the data's (a lost connection) still fail
//! the run, which the next one retries.
//!
//! Pipelined: a run reads (and parses) the next batch while it writes the current one, always
//! before its commit releases the lock (a read after it could take entries that another run's
//! position then passes over), and acknowledges a batch while it works on the next. Its first
//! batch is an eighth of the others: the one read nothing overlaps.
//!
//! One file (over 800 lines) on purpose: the exactly-once argument above spans the lock, the
//! position, the read-ahead, the fold, the set-aside path, the commit and the acknowledgement;
//! kept together, each crash case can be checked against the code that handles it.
//!
//! Length (over 800 lines): the fold, the read-ahead and the set-aside path share one batch's
//! state and one transaction; its tests run it against Redis and Postgres
//! (`functions/analytics-aggregate/tests/`).
use chrono::{DateTime, Utc};
use hashbrown::{HashMap, HashSet};
use redis::AsyncCommands;
use redis::streams::{StreamAutoClaimOptions, StreamAutoClaimReply, StreamId, StreamReadOptions, StreamReadReply};
use sqlx::PgPool;
use std::time::Instant;
use uuid::Uuid;

use super::collect::STREAM_CAP;
use super::event::{STREAM, StreamEvent};
use super::rollup::{Fold, Visit, VisitDims};
use crate::adapters::pg;
use crate::adapters::redis::Redis;
use crate::domain::hll::Hll;

pub const GROUP: &str = "aggregator";
/// Unread entries past this raise an alert: the stream is capped (`STREAM_CAP`), and what
/// lags beyond the cap is trimmed unread.
pub const LAG_ALERT: u64 = STREAM_CAP as u64 / 2;

/// Where a test stops a step, to prove what a crash there does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopAfter {
    Nothing,
    /// Read (the entries are pending), never committed.
    Read,
    /// Committed, never acknowledged.
    Commit,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct StepReport {
    pub read: usize,
    pub folded: u64,
    /// Already folded by an earlier run that did not get to acknowledge them.
    pub skipped: usize,
    /// Entries that are not storable events (set aside with their reason and acknowledged).
    pub malformed: usize,
    /// Events Postgres refused to fold (set aside with its error and acknowledged).
    pub refused: usize,
    /// Events of a site deleted since (acknowledged, not folded).
    pub orphaned: usize,
    pub reclaimed: bool,
    /// After a run: entries left unread in the stream (see `Aggregator::lag`).
    pub lag: Option<u64>,
    /// After a run: entries of this stream ever set aside (`analytics_dead_events`).
    pub set_aside: Option<u64>,
    /// Where the time went, in microseconds (logged; the benchmark prints it).
    pub micros: Micros,
}

/// Time spent per phase of a step, in microseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Micros {
    /// Reading entries this step waited for (not the read-ahead overlapped with the write).
    pub read: u64,
    /// Parsing the entries it waited for into events.
    pub parse: u64,
    /// Loading the sites and the visits in progress.
    pub load: u64,
    pub fold: u64,
    /// Writing rollups, visits and the position, and committing.
    pub write: u64,
    /// Waiting for the read-ahead after the write was done.
    pub wait: u64,
    pub ack: u64,
}

impl Micros {
    fn add(&mut self, o: &Micros) {
        self.read += o.read;
        self.parse += o.parse;
        self.load += o.load;
        self.fold += o.fold;
        self.write += o.write;
        self.wait += o.wait;
        self.ack += o.ack;
    }
}

fn micros(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX)
}

#[derive(Clone)]
pub struct Aggregator {
    pub db: PgPool,
    pub redis: Redis,
    pub stream: String,
    pub consumer: String,
    pub batch: usize,
}

/// A batch of entries read from the stream and parsed (`None`: not an event), pending under this
/// consumer until acknowledged.
pub struct ReadAhead {
    entries: Vec<Entry>,
    reclaimed: bool,
    /// Reading and parsing, in microseconds.
    micros: (u64, u64),
}

struct Entry {
    id: String,
    order: (u64, u64),
    event: Result<StreamEvent, SetAside>,
}

/// An entry that is not folded: why, and what it held (at most `SET_ASIDE_BYTES` of it).
#[derive(Debug)]
struct SetAside {
    reason: String,
    tenant: Option<Uuid>,
    site: Option<Uuid>,
    entry: Vec<u8>,
}

/// What is kept of a set-aside entry's bytes (collect's entries are far smaller).
const SET_ASIDE_BYTES: usize = 64 * 1024;

impl SetAside {
    fn of_event(reason: String, e: &StreamEvent) -> Self {
        let mut entry = serde_json::to_vec(e).unwrap_or_default();
        entry.truncate(SET_ASIDE_BYTES);
        Self {
            reason,
            tenant: Some(e.tenant),
            site: Some(e.site),
            entry,
        }
    }
}

/// The entry's event, or why it is none.
fn parse_entry(entry: &StreamId) -> Result<StreamEvent, SetAside> {
    let refuse = |reason: &str, bytes: &[u8]| SetAside {
        reason: reason.to_owned(),
        tenant: None,
        site: None,
        entry: bytes.get(..SET_ASIDE_BYTES).unwrap_or(bytes).to_vec(),
    };
    let Some(redis::Value::BulkString(json)) = entry.map.get("e") else {
        let fields = entry.map.keys().cloned().collect::<Vec<_>>().join(",");
        return Err(refuse("no_event_field", format!("fields: {fields}").as_bytes()));
    };
    let event = serde_json::from_slice::<StreamEvent>(json).map_err(|_| refuse("not_an_event", json))?;
    event
        .check()
        .map_err(|reason| SetAside::of_event(reason.to_owned(), &event))?;
    Ok(event)
}

impl ReadAhead {
    fn parse(entries: Vec<StreamId>, reclaimed: bool, read: u64) -> Self {
        let clock = Instant::now();
        let entries = entries
            .into_iter()
            .map(|entry| {
                let event = parse_entry(&entry);
                Entry {
                    order: parse_id(&entry.id),
                    id: entry.id,
                    event,
                }
            })
            .collect();
        ReadAhead {
            entries,
            reclaimed,
            micros: (read, micros(clock)),
        }
    }
}

/// A stream id as (milliseconds, sequence), for ordering.
fn parse_id(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
}

impl Aggregator {
    pub fn new(db: PgPool, redis: Redis) -> Self {
        Self {
            db,
            redis,
            stream: STREAM.to_owned(),
            consumer: format!("aggregator-{}", Uuid::new_v4().simple()),
            batch: 20_000,
        }
    }

    async fn ensure_group(&self) -> anyhow::Result<()> {
        let mut redis = self.redis.clone();
        let created: redis::RedisResult<()> = redis.xgroup_create_mkstream(&self.stream, GROUP, "0").await;
        match created {
            Ok(()) => Ok(()),
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Steps until the stream is drained (at most `max_steps`); returns the total folded. Each
    /// step reads the next batch while it writes the current one (still under its lock).
    pub async fn run(&self, max_steps: usize) -> anyhow::Result<StepReport> {
        let mut total = StepReport::default();
        let mut ahead = None;
        // The previous batch's XACK, sent while this one is worked on (committed entries left
        // unacknowledged by a crash are only acknowledged by the next run).
        let mut acking: Option<tokio::task::JoinHandle<anyhow::Result<()>>> = None;
        for _ in 0..max_steps {
            // The first batch is small: its read is the only one nothing overlaps.
            let first = if total.read == 0 {
                (self.batch / 8).max(1)
            } else {
                self.batch
            };
            let (step, next, ids) = self
                .step_inner(StopAfter::Nothing, ahead.take(), first, true, false)
                .await?;
            if let Some(ack) = acking.take() {
                ack.await??;
            }
            if !ids.is_empty() {
                let me = self.clone();
                acking = Some(tokio::spawn(async move { me.ack(&ids).await }));
            }
            total.read += step.read;
            total.folded += step.folded;
            total.skipped += step.skipped;
            total.malformed += step.malformed;
            total.refused += step.refused;
            total.orphaned += step.orphaned;
            total.reclaimed |= step.reclaimed;
            total.micros.add(&step.micros);
            if step.read == 0 {
                break;
            }
            ahead = next;
        }
        if let Some(ack) = acking {
            ack.await??;
        }
        total.lag = self.lag().await?;
        total.set_aside = Some(self.set_aside().await?);
        if total.lag.is_some_and(|lag| lag > LAG_ALERT) {
            tracing::error!(
                alert = "analytics_aggregation_lagging",
                lag = total.lag,
                cap = STREAM_CAP,
                "the stream holds more unread events than the aggregator keeps up with; at the cap the oldest are trimmed unread"
            );
        }
        Ok(total)
    }

    /// Entries not yet delivered to the group (Redis 7 `XINFO GROUPS` lag; `None` when Redis
    /// cannot tell, e.g. after entries were deleted).
    pub async fn lag(&self) -> anyhow::Result<Option<u64>> {
        let mut redis = self.redis.clone();
        let groups: Vec<std::collections::HashMap<String, redis::Value>> = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(&self.stream)
            .query_async(&mut redis)
            .await?;
        let lag = groups
            .iter()
            .find(|g| {
                g.get("name")
                    .is_some_and(|name| redis::from_redis_value::<String>(name).is_ok_and(|n| n == GROUP))
            })
            .and_then(|g| match g.get("lag") {
                Some(redis::Value::Int(lag)) => u64::try_from(*lag).ok(),
                _ => None,
            });
        Ok(lag)
    }

    /// Entries of this stream ever set aside (the operator reads them in `analytics_dead_events`).
    pub async fn set_aside(&self) -> anyhow::Result<u64> {
        let n: i64 = sqlx::query_scalar("select count(*) from analytics_dead_events where stream = $1")
            .bind(&self.stream)
            .fetch_one(&self.db)
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn ack(&self, ids: &[String]) -> anyhow::Result<()> {
        let mut redis = self.redis.clone();
        let _: i64 = redis.xack(&self.stream, GROUP, ids).await?;
        Ok(())
    }

    /// One batch: reclaim pending entries first, else read new ones; fold; commit; ack.
    pub async fn step(&self, stop: StopAfter) -> anyhow::Result<StepReport> {
        Ok(self.step_ahead(stop, None, false).await?.0)
    }

    /// The next batch under the lock: pending entries from `after` on (those of a consumer that
    /// died), else new ones.
    async fn read(&self, after: &str, count: usize) -> anyhow::Result<ReadAhead> {
        let clock = Instant::now();
        let mut redis = self.redis.clone();
        // Pending entries of any consumer (we hold the lock: their owner is gone or done).
        let claimed: StreamAutoClaimReply = redis
            .xautoclaim_options(
                &self.stream,
                GROUP,
                &self.consumer,
                0,
                after,
                StreamAutoClaimOptions::default().count(count),
            )
            .await?;
        if !claimed.claimed.is_empty() {
            return Ok(ReadAhead::parse(claimed.claimed, true, micros(clock)));
        }
        let reply: StreamReadReply = redis
            .xread_options(
                &[&self.stream],
                &[">"],
                &StreamReadOptions::default().group(GROUP, &self.consumer).count(count),
            )
            .await?;
        let entries = reply.keys.into_iter().flat_map(|k| k.ids).collect();
        Ok(ReadAhead::parse(entries, false, micros(clock)))
    }

    /// One batch, from `ahead` (read by the previous step) if given; with `read_ahead`, the
    /// next batch is read while this one is written, before the commit releases the lock. A
    /// crash leaves the read-ahead entries pending for the next run to reclaim; if another run
    /// took them over and folded them meanwhile, they are at or below its committed position
    /// and only acknowledged here.
    pub async fn step_ahead(
        &self,
        stop: StopAfter,
        ahead: Option<ReadAhead>,
        read_ahead: bool,
    ) -> anyhow::Result<(StepReport, Option<ReadAhead>)> {
        let (report, next, _) = self.step_inner(stop, ahead, self.batch, read_ahead, true).await?;
        Ok((report, next))
    }

    /// A step; without `ack_now`, the committed entries' ids are returned for the caller to
    /// acknowledge.
    async fn step_inner(
        &self,
        stop: StopAfter,
        ahead: Option<ReadAhead>,
        count: usize,
        read_ahead: bool,
        ack_now: bool,
    ) -> anyhow::Result<(StepReport, Option<ReadAhead>, Vec<String>)> {
        self.ensure_group().await?;
        let mut report = StepReport::default();
        let mut tx = self.db.begin().await?;
        let lock_key = format!("analytics-aggregate:{}", self.stream);
        // Another run holds it (an overlapping invocation): leave the stream to it.
        let locked: bool = sqlx::query_scalar("select pg_try_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(&lock_key)
            .fetch_one(&mut *tx)
            .await?;
        if !locked {
            tx.rollback().await?;
            return Ok((report, None, Vec::new()));
        }
        let position: Option<String> = sqlx::query_scalar(
            "select last_id from analytics_stream_positions where stream = $1 and consumer_group = $2",
        )
        .bind(&self.stream)
        .bind(GROUP)
        .fetch_optional(&mut *tx)
        .await?;
        let position = position.as_deref().map(parse_id);

        let batch = match ahead.filter(|a| !a.entries.is_empty()) {
            Some(ahead) => ahead,
            None => {
                let batch = self.read("0-0", count).await?;
                (report.micros.read, report.micros.parse) = batch.micros;
                batch
            }
        };
        report.reclaimed = batch.reclaimed;
        let entries = batch.entries;
        report.read = entries.len();
        if entries.is_empty() {
            tx.rollback().await?;
            return Ok((report, None, Vec::new()));
        }
        if stop == StopAfter::Read {
            return Ok((report, None, Vec::new()));
        }

        let mut events = Vec::new();
        let mut event_ids = Vec::new();
        let mut set_aside = Vec::new();
        let mut newest = position;
        let mut ids = Vec::with_capacity(entries.len());
        for entry in entries {
            if position.is_some_and(|p| entry.order <= p) {
                report.skipped += 1;
                ids.push(entry.id);
                continue;
            }
            newest = newest.max(Some(entry.order));
            match entry.event {
                Ok(e) => {
                    events.push(e);
                    event_ids.push(entry.id.clone());
                }
                Err(aside) => {
                    report.malformed += 1;
                    set_aside.push((entry.id.clone(), aside));
                }
            }
            ids.push(entry.id);
        }
        // Pending entries after this batch (of a run that died between our steps), else new ones.
        let after = ids
            .last()
            .map(|id| {
                let (ms, seq) = parse_id(id);
                format!("{ms}-{}", seq.saturating_add(1))
            })
            .unwrap_or_else(|| "0-0".to_owned());
        // On a task of its own: parsing the next batch runs beside this one's fold.
        let reader = self.clone();
        let next = async move {
            if read_ahead {
                tokio::spawn(async move { reader.read(&after, reader.batch).await })
                    .await?
                    .map(Some)
            } else {
                Ok(None)
            }
        };
        let write_done = std::cell::Cell::new(None);
        let write = async {
            if let Some((ms, seq)) = newest
                && newest != position
            {
                let clock = Instant::now();
                let known = existing_sites(&mut tx, &events).await?;
                let before = events.len();
                let (events, event_ids): (Vec<_>, Vec<_>) = events
                    .into_iter()
                    .zip(event_ids)
                    .filter(|(e, _)| known.contains(&(e.tenant, e.site)))
                    .unzip();
                report.orphaned = before - events.len();
                if report.orphaned > 0 {
                    tracing::warn!(
                        events = report.orphaned,
                        "events of deleted sites acknowledged without folding"
                    );
                }
                report.micros.load = micros(clock);
                let (folded, refused) = fold_isolating(&mut tx, &events, &mut report.micros).await?;
                report.folded = folded;
                report.refused = refused.len();
                for (index, reason) in refused {
                    if let (Some(e), Some(id)) = (events.get(index), event_ids.get(index)) {
                        set_aside.push((id.clone(), SetAside::of_event(reason, e)));
                    }
                }
                let clock = Instant::now();
                write_set_aside(&mut tx, &self.stream, &set_aside).await?;
                sqlx::query(
                    "insert into analytics_stream_positions (stream, consumer_group, last_id, events_folded) \
                     values ($1, $2, $3, $4) on conflict (stream, consumer_group) do update \
                     set last_id = excluded.last_id, events_folded = analytics_stream_positions.events_folded + $4, \
                         updated_at = now()",
                )
                .bind(&self.stream)
                .bind(GROUP)
                .bind(format!("{ms}-{seq}"))
                .bind(i64::try_from(folded).unwrap_or(i64::MAX))
                .execute(&mut *tx)
                .await?;
                report.micros.write += micros(clock);
            }
            write_done.set(Some(Instant::now()));
            anyhow::Ok(())
        };
        // The read-ahead completes before the commit: read after the lock is released, it could
        // take entries that another run's position would then pass over.
        let (written, next) = tokio::join!(write, next);
        written?;
        let next = next?;
        report.micros.wait = write_done.get().map_or(0, micros);
        let clock = Instant::now();
        tx.commit().await?;
        report.micros.write += micros(clock);
        if stop == StopAfter::Commit {
            return Ok((report, next, Vec::new()));
        }
        tracing::info!(
            read = report.read,
            folded = report.folded,
            skipped = report.skipped,
            micros = ?report.micros,
            "analytics batch folded"
        );
        if !ack_now {
            return Ok((report, next, ids));
        }
        let clock = Instant::now();
        self.ack(&ids).await?;
        report.micros.ack = micros(clock);
        Ok((report, next, Vec::new()))
    }
}

/// The (tenant, site) pairs of the batch that still exist (a site deleted while its events were
/// in the stream: its events are acknowledged, not folded).
async fn existing_sites(tx: &mut pg::Tx, events: &[StreamEvent]) -> anyhow::Result<HashSet<(Uuid, Uuid)>> {
    let mut by_tenant: HashMap<Uuid, HashSet<Uuid>> = HashMap::new();
    for e in events {
        by_tenant.entry(e.tenant).or_default().insert(e.site);
    }
    let mut known: HashSet<(Uuid, Uuid)> = HashSet::new();
    for (tenant, sites) in by_tenant {
        pg::set_tenant(tx, tenant).await?;
        let sites: Vec<Uuid> = sites.into_iter().collect();
        let found: Vec<Uuid> = sqlx::query_scalar("select id from analytics_sites where id = any($1)")
            .bind(&sites)
            .fetch_all(&mut **tx)
            .await?;
        known.extend(found.into_iter().map(|s| (tenant, s)));
    }
    Ok(known)
}

/// Folds `events` and writes the fold; an event Postgres refuses is found by halving the part
/// that failed (each part under a savepoint) and returned with the error, by its index; the
/// others are written, in stream order. Errors that are not about the data end the step.
async fn fold_isolating(
    tx: &mut pg::Tx,
    events: &[StreamEvent],
    micros: &mut Micros,
) -> anyhow::Result<(u64, Vec<(usize, String)>)> {
    let mut folded = 0;
    let mut refused = Vec::new();
    // Parts still to write, the next on top: a first half is written before its second half.
    let mut todo: Vec<std::ops::Range<usize>> = Vec::new();
    todo.push(0..events.len());
    while let Some(range) = todo.pop() {
        let part = match events.get(range.clone()) {
            Some(part) if !part.is_empty() => part,
            _ => continue,
        };
        sqlx::query("savepoint fold").execute(&mut **tx).await?;
        match fold_and_write(tx, part, micros).await {
            Ok(n) => folded += n,
            Err(e) => {
                let Some(reason) = refused_by_postgres(&e) else {
                    return Err(e);
                };
                sqlx::query("rollback to savepoint fold").execute(&mut **tx).await?;
                if part.len() == 1 {
                    tracing::error!(alert = "analytics_event_set_aside", %reason, "an event Postgres refuses is set aside");
                    refused.push((range.start, reason));
                } else {
                    let middle = range.start + part.len() / 2;
                    todo.push(middle..range.end);
                    todo.push(range.start..middle);
                }
            }
        }
        sqlx::query("release savepoint fold").execute(&mut **tx).await?;
    }
    Ok((folded, refused))
}

/// The visits in progress, the fold, and its write.
async fn fold_and_write(tx: &mut pg::Tx, events: &[StreamEvent], micros: &mut Micros) -> anyhow::Result<u64> {
    let clock = Instant::now();
    let visits = load_visits(tx, events).await?;
    micros.load += self::micros(clock);
    let clock = Instant::now();
    let mut fold = Fold::with_visits(visits);
    for e in events {
        fold.add(e);
    }
    micros.fold += self::micros(clock);
    let clock = Instant::now();
    write_fold(tx, &fold).await?;
    micros.write += self::micros(clock);
    Ok(fold.folded)
}

/// The error, when Postgres refused the data itself: a data exception (22), an integrity
/// violation (23) or a limit such as an index row too large (54).
fn refused_by_postgres(e: &anyhow::Error) -> Option<String> {
    e.chain().find_map(|cause| match cause.downcast_ref::<sqlx::Error>() {
        Some(sqlx::Error::Database(db)) => {
            let code = db.code()?;
            matches!(code.get(..2), Some("22" | "23" | "54"))
                .then(|| format!("postgres {code}: {}", db.message()).chars().take(500).collect())
        }
        _ => None,
    })
}

/// Records the set-aside entries (once: a retried step finds them there).
async fn write_set_aside(tx: &mut pg::Tx, stream: &str, entries: &[(String, SetAside)]) -> anyhow::Result<()> {
    if entries.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = entries.iter().map(|(id, _)| id.as_str()).collect();
    let tenants: Vec<Option<Uuid>> = entries.iter().map(|(_, a)| a.tenant).collect();
    let sites: Vec<Option<Uuid>> = entries.iter().map(|(_, a)| a.site).collect();
    let reasons: Vec<&str> = entries.iter().map(|(_, a)| a.reason.as_str()).collect();
    let bodies: Vec<&[u8]> = entries.iter().map(|(_, a)| a.entry.as_slice()).collect();
    sqlx::query(
        "insert into analytics_dead_events (stream, entry_id, tenant_id, site_id, reason, entry) \
         select $1, k.id, k.tenant, k.site, k.reason, k.entry \
         from unnest($2::text[], $3::uuid[], $4::uuid[], $5::text[], $6::bytea[]) as k(id, tenant, site, reason, entry) \
         on conflict (stream, entry_id) do nothing",
    )
    .bind(stream)
    .bind(&ids)
    .bind(&tenants)
    .bind(&sites)
    .bind(&reasons)
    .bind(&bodies)
    .execute(&mut **tx)
    .await?;
    tracing::error!(
        alert = "analytics_entries_set_aside",
        entries = entries.len(),
        "stream entries that cannot be folded were set aside with their reason (analytics_dead_events)"
    );
    Ok(())
}

type VisitRow = (
    Uuid,
    Vec<u8>,
    Uuid,
    DateTime<Utc>,
    DateTime<Utc>,
    i32,
    serde_json::Value,
);

/// The visits in progress of the batch's visitors.
async fn load_visits(tx: &mut pg::Tx, events: &[StreamEvent]) -> anyhow::Result<HashMap<(Uuid, String), Visit>> {
    let keys: HashSet<(Uuid, String)> = events
        .iter()
        .filter(|e| e.is_pageview())
        .map(|e| (e.site, e.visitor.clone()))
        .collect();
    let mut by_tenant: HashMap<Uuid, (Vec<Uuid>, Vec<Vec<u8>>)> = HashMap::new();
    let tenants: HashMap<Uuid, Uuid> = events.iter().map(|e| (e.site, e.tenant)).collect();
    for (site, visitor) in &keys {
        if let Some(tenant) = tenants.get(site) {
            let entry = by_tenant.entry(*tenant).or_default();
            entry.0.push(*site);
            entry.1.push(hex::decode(visitor).unwrap_or_default());
        }
    }
    let mut visits = HashMap::new();
    for (tenant, (sites, visitors)) in by_tenant {
        pg::set_tenant(tx, tenant).await?;
        let rows: Vec<VisitRow> = sqlx::query_as(
            "select v.site_id, v.visitor, v.tenant_id, v.start_hour, v.last_seen, v.pageviews, v.dims \
             from analytics_visits v join unnest($1::uuid[], $2::bytea[]) as k(site_id, visitor) \
               on v.site_id = k.site_id and v.visitor = k.visitor",
        )
        .bind(&sites)
        .bind(&visitors)
        .fetch_all(&mut **tx)
        .await?;
        for (site, visitor, tenant, start_hour, last_seen, pageviews, dims) in rows {
            if let Ok(dims) = serde_json::from_value::<VisitDims>(dims) {
                visits.insert(
                    (site, hex::encode(visitor)),
                    Visit {
                        tenant,
                        start_hour,
                        last_seen: last_seen.timestamp_millis(),
                        pageviews,
                        dims,
                    },
                );
            }
        }
    }
    Ok(visits)
}

/// A rollup's key and its stored visitor sketch.
type StoredSketch = (Uuid, String, DateTime<Utc>, String, Vec<u8>);
/// A visit of the fold with its (site, visitor) key.
type VisitEntry<'a> = (&'a (Uuid, String), &'a Visit);

/// Adds a fold's increments to the rollups (sketches merged) and stores its visits: a few
/// set-based statements per tenant, whatever the batch size.
async fn write_fold(tx: &mut pg::Tx, fold: &Fold) -> anyhow::Result<()> {
    let mut by_tenant: HashMap<Uuid, Vec<(&super::rollup::RollupKey, &super::rollup::Counts)>> = HashMap::new();
    for (key, counts) in &fold.rollups {
        if let Some(tenant) = fold.tenants.get(&key.site) {
            by_tenant.entry(*tenant).or_default().push((key, counts));
        }
    }
    for (tenant, mut rows) in by_tenant {
        // A stable order: concurrent writers (there are none, but still) lock in the same order.
        rows.sort_by(|a, b| a.0.cmp(b.0));
        pg::set_tenant(tx, tenant).await?;
        let sites: Vec<Uuid> = rows.iter().map(|(k, _)| k.site).collect();
        let dims: Vec<&str> = rows.iter().map(|(k, _)| k.dimension).collect();
        let hours: Vec<DateTime<Utc>> = rows.iter().map(|(k, _)| k.hour).collect();
        let values: Vec<&str> = rows.iter().map(|(k, _)| k.value.as_str()).collect();
        let existing: Vec<StoredSketch> = sqlx::query_as(
            "select r.site_id, r.dimension, r.hour, r.value, r.visitors from analytics_rollups r \
             join unnest($1::uuid[], $2::text[], $3::timestamptz[], $4::text[]) as k(site_id, dimension, hour, value) \
               on r.site_id = k.site_id and r.dimension = k.dimension and r.hour = k.hour and r.value = k.value \
             order by r.site_id, r.dimension, r.hour, r.value for update of r",
        )
        .bind(&sites)
        .bind(&dims)
        .bind(&hours)
        .bind(&values)
        .fetch_all(&mut **tx)
        .await?;
        let mut stored: HashMap<(Uuid, String, DateTime<Utc>, String), Vec<u8>> = existing
            .into_iter()
            .map(|(site, dim, hour, value, visitors)| ((site, dim, hour, value), visitors))
            .collect();
        let mut sketches = Vec::with_capacity(rows.len());
        for (key, counts) in &rows {
            let mut visitors = match stored.remove(&(key.site, key.dimension.to_owned(), key.hour, key.value.clone())) {
                Some(bytes) => Hll::from_bytes(&bytes)?,
                None => Hll::new(),
            };
            visitors.merge(&counts.visitors);
            sketches.push(visitors.to_bytes());
        }
        let column = |f: fn(&super::rollup::Counts) -> i64| -> Vec<i64> { rows.iter().map(|(_, c)| f(c)).collect() };
        sqlx::query(
            "insert into analytics_rollups as r (site_id, hour, dimension, value, tenant_id, pageviews, visits, bounces, \
                 duration_secs, events, visitors) \
             select k.site_id, k.hour, k.dimension, k.value, $5, k.pageviews, k.visits, k.bounces, k.duration_secs, \
                 k.events, k.visitors \
             from unnest($1::uuid[], $2::timestamptz[], $3::text[], $4::text[], $6::bigint[], $7::bigint[], $8::bigint[], \
                         $9::bigint[], $10::bigint[], $11::bytea[]) \
                  as k(site_id, hour, dimension, value, pageviews, visits, bounces, duration_secs, events, visitors) \
             on conflict (site_id, dimension, hour, value) do update set pageviews = r.pageviews + excluded.pageviews, \
                 visits = r.visits + excluded.visits, bounces = r.bounces + excluded.bounces, \
                 duration_secs = r.duration_secs + excluded.duration_secs, events = r.events + excluded.events, \
                 visitors = excluded.visitors",
        )
        .bind(&sites)
        .bind(&hours)
        .bind(&dims)
        .bind(&values)
        .bind(tenant)
        .bind(column(|c| c.pageviews))
        .bind(column(|c| c.visits))
        .bind(column(|c| c.bounces))
        .bind(column(|c| c.duration_secs))
        .bind(column(|c| c.events))
        .bind(&sketches)
        .execute(&mut **tx)
        .await?;
    }

    let mut visits_by_tenant: HashMap<Uuid, Vec<VisitEntry<'_>>> = HashMap::new();
    for (key, visit) in &fold.visits {
        visits_by_tenant.entry(visit.tenant).or_default().push((key, visit));
    }
    for (tenant, visits) in visits_by_tenant {
        pg::set_tenant(tx, tenant).await?;
        let sites: Vec<Uuid> = visits.iter().map(|((site, _), _)| *site).collect();
        let visitors: Vec<Vec<u8>> = visits
            .iter()
            .map(|((_, visitor), _)| hex::decode(visitor).unwrap_or_default())
            .collect();
        let starts: Vec<DateTime<Utc>> = visits.iter().map(|(_, v)| v.start_hour).collect();
        let last_seen: Vec<DateTime<Utc>> = visits
            .iter()
            .map(|(_, v)| DateTime::<Utc>::from_timestamp_millis(v.last_seen).unwrap_or_default())
            .collect();
        let pageviews: Vec<i32> = visits.iter().map(|(_, v)| v.pageviews).collect();
        let dims: Vec<serde_json::Value> = visits
            .iter()
            .map(|(_, v)| serde_json::to_value(&v.dims))
            .collect::<Result<_, _>>()?;
        sqlx::query(
            "insert into analytics_visits (site_id, visitor, tenant_id, start_hour, last_seen, pageviews, dims) \
             select k.site_id, k.visitor, $3, k.start_hour, k.last_seen, k.pageviews, k.dims \
             from unnest($1::uuid[], $2::bytea[], $4::timestamptz[], $5::timestamptz[], $6::int[], $7::jsonb[]) \
                  as k(site_id, visitor, start_hour, last_seen, pageviews, dims) \
             on conflict (site_id, visitor) do update set start_hour = excluded.start_hour, \
                 last_seen = excluded.last_seen, pageviews = excluded.pageviews, dims = excluded.dims",
        )
        .bind(&sites)
        .bind(&visitors)
        .bind(tenant)
        .bind(&starts)
        .bind(&last_seen)
        .bind(&pageviews)
        .bind(&dims)
        .execute(&mut **tx)
        .await?;
    }
    // Visits idle for a day can never continue (the visitor id has rotated): drop them.
    let mut by_tenant: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
    for (site, tenant) in &fold.tenants {
        by_tenant.entry(*tenant).or_default().push(*site);
    }
    for (tenant, sites) in by_tenant {
        pg::set_tenant(tx, tenant).await?;
        sqlx::query("delete from analytics_visits where site_id = any($1) and last_seen < now() - interval '1 day'")
            .bind(&sites)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}
