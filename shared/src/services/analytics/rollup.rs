//! Folding stream events into hourly rollups (no I/O): pageviews, visits, bounces, visit
//! duration, custom events and visitor sketches per site, hour, dimension and value.
//!
//! A visit is a visitor's run of pageviews with less than 30 minutes between them. It counts in
//! the hour it started, attributed to its entry page, source, UTM, device, browser and OS. A
//! visit starts as a bounce; its second pageview takes the bounce back and every later pageview
//! adds the time since the previous one to its duration.
use chrono::{DateTime, TimeZone, Utc};
use hashbrown::{Equivalent, HashMap};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::event::StreamEvent;
use crate::domain::hll::Hll;

/// A visit ends after this long without a pageview.
pub const VISIT_TIMEOUT_MS: i64 = 30 * 60 * 1000;

/// Dimensions of the rollups ('' is the site total).
pub const TOTAL: &str = "";

/// Pair dimensions: pageviews and visitors of a page by the source (or UTM value) of the visit,
/// valued `attribution \u{1f} path` (events carry no control characters, see `StreamEvent::check`).
pub const SOURCE_PAGE: &str = "source_page";
pub const UTM_SOURCE_PAGE: &str = "utm_source_page";
pub const UTM_MEDIUM_PAGE: &str = "utm_medium_page";
pub const UTM_CAMPAIGN_PAGE: &str = "utm_campaign_page";
pub const PAIR_SEPARATOR: char = '\u{1f}';

/// The value of a pair dimension's row.
pub fn pair(attribution: &str, path: &str) -> String {
    let mut value = String::with_capacity(attribution.len() + 1 + path.len());
    push_pair(&mut value, attribution, path);
    value
}

fn push_pair(out: &mut String, attribution: &str, path: &str) {
    out.push_str(attribution);
    out.push(PAIR_SEPARATOR);
    out.push_str(path);
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RollupKey {
    pub site: Uuid,
    pub hour: DateTime<Utc>,
    pub dimension: &'static str,
    pub value: String,
}

/// A rollup key borrowed: finds a row without allocating (hashes as `RollupKey` does).
#[derive(Hash)]
struct KeyRef<'a> {
    site: Uuid,
    hour: DateTime<Utc>,
    dimension: &'static str,
    value: &'a str,
}

impl Equivalent<RollupKey> for KeyRef<'_> {
    fn equivalent(&self, key: &RollupKey) -> bool {
        self.site == key.site && self.hour == key.hour && self.dimension == key.dimension && self.value == key.value
    }
}

impl From<&KeyRef<'_>> for RollupKey {
    fn from(k: &KeyRef<'_>) -> Self {
        RollupKey {
            site: k.site,
            hour: k.hour,
            dimension: k.dimension,
            value: k.value.to_owned(),
        }
    }
}

/// A visit's key borrowed (hashes as `(Uuid, String)` does).
#[derive(Hash)]
struct VisitorRef<'a>(Uuid, &'a str);

impl Equivalent<(Uuid, String)> for VisitorRef<'_> {
    fn equivalent(&self, key: &(Uuid, String)) -> bool {
        self.0 == key.0 && self.1 == key.1
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    pub pageviews: i64,
    pub visits: i64,
    pub bounces: i64,
    pub duration_secs: i64,
    pub events: i64,
    pub visitors: Hll,
}

/// What a visit is attributed to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VisitDims {
    pub entry: String,
    pub source: String,
    pub utm_source: String,
    pub utm_medium: String,
    pub utm_campaign: String,
    pub device: String,
    pub browser: String,
    pub os: String,
}

impl VisitDims {
    fn of(e: &StreamEvent) -> Self {
        Self {
            entry: e.path.clone(),
            source: e.source.clone(),
            utm_source: e.utm_source.clone(),
            utm_medium: e.utm_medium.clone(),
            utm_campaign: e.utm_campaign.clone(),
            device: e.device.clone(),
            browser: e.browser.clone(),
            os: e.os.clone(),
        }
    }

    /// The (dimension, value) rows a visit counts in (empty UTM values are left out).
    fn rows(&self, with_entry: bool) -> impl Iterator<Item = (&'static str, &str)> {
        [
            (TOTAL, ""),
            ("source", self.source.as_str()),
            ("device", &self.device),
            ("browser", &self.browser),
            ("os", &self.os),
            ("entry", &self.entry),
            ("utm_source", &self.utm_source),
            ("utm_medium", &self.utm_medium),
            ("utm_campaign", &self.utm_campaign),
        ]
        .into_iter()
        .filter(move |(dim, value)| match *dim {
            "entry" => with_entry,
            "utm_source" | "utm_medium" | "utm_campaign" => !value.is_empty(),
            _ => true,
        })
    }
}

/// The sketch hash of a visitor id (hex of a salted SHA-256): its first 8 bytes, as
/// `Hll::insert_id` takes them from the decoded bytes.
pub fn visitor_hash(visitor: &str) -> u64 {
    match visitor.get(..16).map(|head| u64::from_str_radix(head, 16)) {
        Some(Ok(hash)) => hash,
        _ => {
            let bytes = hex::decode(visitor).unwrap_or_else(|_| visitor.as_bytes().to_vec());
            let mut first = [0u8; 8];
            for (slot, byte) in first.iter_mut().zip(bytes.iter()) {
                *slot = *byte;
            }
            u64::from_be_bytes(first)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Visit {
    pub tenant: Uuid,
    pub start_hour: DateTime<Utc>,
    /// Unix milliseconds.
    pub last_seen: i64,
    pub pageviews: i32,
    pub dims: VisitDims,
}

/// The start of the UTC hour of a Unix-millisecond timestamp.
pub fn hour_of(ts_ms: i64) -> DateTime<Utc> {
    let secs = ts_ms.div_euclid(1000);
    Utc.timestamp_opt(secs - secs.rem_euclid(3600), 0)
        .single()
        .unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
}

/// A batch being folded: the rollup increments, and the visits it touched (loaded first).
#[derive(Debug, Default)]
pub struct Fold {
    pub rollups: HashMap<RollupKey, Counts>,
    pub tenants: HashMap<Uuid, Uuid>,
    pub visits: HashMap<(Uuid, String), Visit>,
    pub folded: u64,
    scratch: String,
}

impl Fold {
    /// Starts from the visits in progress of the batch's visitors.
    pub fn with_visits(visits: HashMap<(Uuid, String), Visit>) -> Self {
        Self {
            visits,
            ..Self::default()
        }
    }

    fn at(&mut self, site: Uuid, hour: DateTime<Utc>, dimension: &'static str, value: &str) -> &mut Counts {
        let key = KeyRef {
            site,
            hour,
            dimension,
            value,
        };
        self.rollups.entry_ref(&key).or_default()
    }

    pub fn add(&mut self, e: &StreamEvent) {
        self.folded += 1;
        self.tenants.insert(e.site, e.tenant);
        let hour = hour_of(e.ts);
        let visitor = visitor_hash(&e.visitor);
        if !e.is_pageview() {
            for (dim, value) in [(TOTAL, ""), ("event", e.name.as_str())] {
                let c = self.at(e.site, hour, dim, value);
                c.events += 1;
                c.visitors.insert_hash(visitor);
            }
            return;
        }
        let stored = self.visits.get(&VisitorRef(e.site, &e.visitor));
        // A pageview from well before the stored visit (a queued, late event) counts as a visit
        // of its own and leaves the stored one alone.
        let late = stored.is_some_and(|v| e.ts < v.last_seen - VISIT_TIMEOUT_MS);
        let ongoing = stored
            .filter(|v| e.ts - v.last_seen <= VISIT_TIMEOUT_MS && e.ts >= v.last_seen - VISIT_TIMEOUT_MS)
            .cloned();
        let visit = match ongoing {
            None => {
                let visit = Visit {
                    tenant: e.tenant,
                    start_hour: hour,
                    last_seen: e.ts,
                    pageviews: 1,
                    dims: VisitDims::of(e),
                };
                for (dim, value) in visit.dims.rows(true) {
                    let c = self.at(e.site, hour, dim, value);
                    c.visits += 1;
                    c.bounces += 1;
                }
                visit
            }
            Some(mut visit) => {
                let first_more = visit.pageviews == 1;
                let duration = (e.ts - visit.last_seen).max(0) / 1000;
                for (dim, value) in visit.dims.rows(true) {
                    let c = self.at(e.site, visit.start_hour, dim, value);
                    if first_more {
                        c.bounces -= 1;
                    }
                    c.duration_secs += duration;
                }
                visit.pageviews = visit.pageviews.saturating_add(1);
                visit.last_seen = visit.last_seen.max(e.ts);
                visit
            }
        };
        for (dim, value) in visit.dims.rows(false).chain([("page", e.path.as_str())]) {
            let c = self.at(e.site, hour, dim, value);
            c.pageviews += 1;
            c.visitors.insert_hash(visitor);
        }
        // The page by what its visit came from: referrers of one page, pages of one source.
        let mut scratch = std::mem::take(&mut self.scratch);
        for (dim, value) in [
            (SOURCE_PAGE, &visit.dims.source),
            (UTM_SOURCE_PAGE, &visit.dims.utm_source),
            (UTM_MEDIUM_PAGE, &visit.dims.utm_medium),
            (UTM_CAMPAIGN_PAGE, &visit.dims.utm_campaign),
        ] {
            if dim == SOURCE_PAGE || !value.is_empty() {
                scratch.clear();
                push_pair(&mut scratch, value, &e.path);
                let c = self.at(e.site, hour, dim, &scratch);
                c.pageviews += 1;
                c.visitors.insert_hash(visitor);
            }
        }
        self.scratch = scratch;
        // The entry row's visitors: those who started a visit there.
        if visit.pageviews == 1 {
            self.at(e.site, hour, "entry", &e.path).visitors.insert_hash(visitor);
        }
        if !late {
            match self.visits.get_mut(&VisitorRef(e.site, &e.visitor)) {
                Some(stored) => *stored = visit,
                None => {
                    self.visits.insert((e.site, e.visitor.clone()), visit);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pv(visitor: &str, ts_min: i64, path: &str) -> StreamEvent {
        StreamEvent {
            site: Uuid::nil(),
            tenant: Uuid::max(),
            ts: 1_800_000_000_000 + ts_min * 60_000,
            name: "pageview".into(),
            path: path.into(),
            source: "google.com".into(),
            utm_source: String::new(),
            utm_medium: String::new(),
            utm_campaign: String::new(),
            device: "desktop".into(),
            browser: "Chrome".into(),
            os: "Linux".into(),
            visitor: hex::encode(visitor.as_bytes()),
            props: Default::default(),
        }
    }

    fn total(f: &Fold) -> Counts {
        f.rollups
            .iter()
            .filter(|(k, _)| k.dimension == TOTAL)
            .fold(Counts::default(), |mut acc, (_, c)| {
                acc.pageviews += c.pageviews;
                acc.visits += c.visits;
                acc.bounces += c.bounces;
                acc.duration_secs += c.duration_secs;
                acc.visitors.merge(&c.visitors);
                acc
            })
    }

    #[test]
    fn visits_bounces_and_durations() {
        let mut f = Fold::default();
        // a: three pageviews 5 and 10 minutes apart (one visit, no bounce, 15 min)
        // b: one pageview (a bounce); later, after 40 minutes, another (a second bounce visit)
        for e in [
            pv("a", 0, "/"),
            pv("b", 1, "/blog"),
            pv("a", 5, "/pricing"),
            pv("a", 15, "/signup"),
            pv("b", 41, "/"),
        ] {
            f.add(&e);
        }
        let t = total(&f);
        assert_eq!((t.pageviews, t.visits, t.bounces, t.duration_secs), (5, 3, 2, 900));
        assert_eq!(t.visitors.estimate(), 2);
        let entry_home = f
            .rollups
            .iter()
            .filter(|(k, _)| k.dimension == "entry" && k.value == "/")
            .map(|(_, c)| c.visits)
            .sum::<i64>();
        assert_eq!(entry_home, 2, "a entered at / and b's second visit too");
    }

    #[test]
    fn a_visit_continues_across_batches_through_its_stored_state() {
        let mut first = Fold::default();
        first.add(&pv("a", 0, "/"));
        let mut second = Fold::with_visits(first.visits.clone());
        second.add(&pv("a", 10, "/next"));
        let t = total(&second);
        assert_eq!((t.visits, t.bounces, t.duration_secs, t.pageviews), (0, -1, 600, 1));
    }

    #[test]
    fn a_late_pageview_is_a_visit_of_its_own_and_keeps_the_current_one() {
        let mut f = Fold::default();
        f.add(&pv("a", 100, "/"));
        f.add(&pv("a", 10, "/old")); // queued offline, delivered late
        f.add(&pv("a", 105, "/next"));
        let t = total(&f);
        assert_eq!(
            (t.pageviews, t.visits, t.bounces),
            (3, 2, 1),
            "the current visit continued"
        );
    }

    #[test]
    fn pages_are_counted_by_the_source_of_their_visit() {
        let mut f = Fold::default();
        let mut from_news = pv("n", 0, "/");
        from_news.source = "newsletter".into();
        from_news.utm_campaign = "bf".into();
        f.add(&from_news);
        // The visit's second page keeps the visit's source, whatever its own referrer.
        let mut next = pv("n", 2, "/pricing");
        next.source = String::new();
        f.add(&next);
        f.add(&pv("g", 1, "/pricing"));
        let pageviews = |dim: &str, value: &str| {
            f.rollups
                .iter()
                .filter(|(k, _)| k.dimension == dim && k.value == value)
                .map(|(_, c)| c.pageviews)
                .sum::<i64>()
        };
        assert_eq!(pageviews(SOURCE_PAGE, &pair("newsletter", "/pricing")), 1);
        assert_eq!(pageviews(SOURCE_PAGE, &pair("google.com", "/pricing")), 1);
        assert_eq!(pageviews(UTM_CAMPAIGN_PAGE, &pair("bf", "/pricing")), 1);
        assert_eq!(
            pageviews(UTM_SOURCE_PAGE, &pair("", "/pricing")),
            0,
            "empty UTM values are left out"
        );
    }

    #[test]
    fn hours_are_utc_hour_starts() {
        assert_eq!(hour_of(3_600_000 * 5 + 1234).timestamp(), 3600 * 5);
        assert_eq!(hour_of(-1).timestamp(), -3600);
    }
}
