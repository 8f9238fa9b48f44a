//! The traffic API over the rollups: series by hour or day (in any time zone) with the same
//! figures for the previous period of equal length, top pages and referrers. Unique visitors of
//! a bucket or a range come from merging the hourly sketches.
use chrono::{Duration, NaiveDate, NaiveDateTime};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::adapters::pg::{self, Tx};
use crate::domain::hll::Hll;
use crate::domain::{DomainError, Scope, Validator};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Interval {
    Hour,
    Day,
}

/// The range of a query: whole days, inclusive, in `tz` (default: the site's time zone).
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RangeParams {
    /// The site's id.
    pub site: Uuid,
    /// First day (YYYY-MM-DD).
    pub from: NaiveDate,
    /// Last day (YYYY-MM-DD), inclusive.
    pub to: NaiveDate,
    /// IANA time zone of the days (default: the site's).
    #[serde(default)]
    pub tz: Option<String>,
}

const MAX_DAYS: i64 = 400;
const MAX_HOURLY_DAYS: i64 = 31;

#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
pub struct Figures {
    pub pageviews: i64,
    pub visitors: u64,
    pub visits: i64,
    /// Share of visits with a single pageview, 0..1.
    pub bounce_rate: f64,
    /// Mean visit duration in seconds.
    pub avg_visit_duration_secs: f64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Bucket {
    /// The bucket's start, local time in the query's time zone.
    #[schema(value_type = String, example = "2026-11-24T00:00:00")]
    pub bucket: NaiveDateTime,
    #[serde(flatten)]
    pub figures: Figures,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Period {
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub totals: Figures,
    pub series: Vec<Bucket>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Traffic {
    pub site: Uuid,
    pub interval: Interval,
    pub timezone: String,
    #[serde(flatten)]
    pub current: Period,
    /// The period of equal length just before.
    pub previous: Period,
}

#[derive(Debug, Clone, Default)]
struct Acc {
    pageviews: i64,
    visits: i64,
    bounces: i64,
    duration: i64,
    visitors: Hll,
}

impl Acc {
    fn add(&mut self, other: &Acc) {
        self.pageviews += other.pageviews;
        self.visits += other.visits;
        self.bounces += other.bounces;
        self.duration += other.duration;
        self.visitors.merge(&other.visitors);
    }

    fn figures(&self) -> Figures {
        let ratio = |n: i64| {
            if self.visits > 0 {
                (n as f64 / self.visits as f64 * 1000.0).round() / 1000.0
            } else {
                0.0
            }
        };
        Figures {
            pageviews: self.pageviews,
            visitors: self.visitors.estimate(),
            visits: self.visits,
            bounce_rate: ratio(self.bounces),
            avg_visit_duration_secs: ratio(self.duration),
        }
    }
}

fn sketches(blobs: Vec<Vec<u8>>) -> Result<Hll, DomainError> {
    let mut merged = Hll::new();
    for blob in blobs {
        merged.merge(&Hll::from_bytes(&blob).map_err(anyhow::Error::from)?);
    }
    Ok(merged)
}

/// Checks the range and resolves the time zone, inside the tenant's transaction (the site must
/// be the tenant's: another tenant's site answers 404).
async fn prepare(tx: &mut Tx, params: &RangeParams, max_days: i64) -> Result<String, DomainError> {
    let site_zone: Option<String> = sqlx::query_scalar("select timezone from analytics_sites where id = $1")
        .bind(params.site)
        .fetch_optional(&mut **tx)
        .await?;
    let site_zone = site_zone.ok_or(DomainError::NotFound)?;
    let mut v = Validator::new();
    let days = (params.to - params.from).num_days() + 1;
    if days < 1 {
        v.error("to", "before_from", "must not be before from");
    } else if days > max_days {
        v.error(
            "to",
            "range_too_long",
            format!("the range may span at most {max_days} days"),
        );
    }
    let tz = params.tz.clone().unwrap_or(site_zone);
    let known: bool = sqlx::query_scalar("select exists (select 1 from pg_timezone_names where name = $1)")
        .bind(&tz)
        .fetch_one(&mut **tx)
        .await?;
    if !known {
        v.error(
            "tz",
            "unknown_timezone",
            "must be an IANA time zone such as Europe/Berlin",
        );
    }
    v.finish()?;
    Ok(tz)
}

type SeriesRow = (NaiveDateTime, i64, i64, i64, i64, Vec<Vec<u8>>);

async fn period(
    tx: &mut Tx,
    site: Uuid,
    from: NaiveDate,
    to: NaiveDate,
    interval: Interval,
    tz: &str,
) -> Result<Period, DomainError> {
    let (step, unit) = match interval {
        Interval::Hour => ("1 hour", "hour"),
        Interval::Day => ("1 day", "day"),
    };
    let rows: Vec<SeriesRow> = sqlx::query_as(
        "with buckets as ( \
             select b from generate_series($2::date::timestamp, ($3::date + 1)::timestamp - $4::interval, $4::interval) b \
         ), r as ( \
             select date_trunc($5, hour at time zone $6) as b, pageviews, visits, bounces, duration_secs, visitors \
             from analytics_rollups \
             where site_id = $1 and dimension = '' and value = '' \
               and hour >= ($2::date::timestamp at time zone $6) and hour < (($3::date + 1)::timestamp at time zone $6) \
         ) \
         select buckets.b, coalesce(sum(r.pageviews), 0)::bigint, coalesce(sum(r.visits), 0)::bigint, \
                coalesce(sum(r.bounces), 0)::bigint, coalesce(sum(r.duration_secs), 0)::bigint, \
                coalesce(array_agg(r.visitors) filter (where r.visitors is not null), '{}') \
         from buckets left join r on r.b = buckets.b group by buckets.b order by buckets.b",
    )
    .bind(site)
    .bind(from)
    .bind(to)
    .bind(step)
    .bind(unit)
    .bind(tz)
    .fetch_all(&mut **tx)
    .await?;
    let mut total = Acc::default();
    let mut series = Vec::with_capacity(rows.len());
    for (bucket, pageviews, visits, bounces, duration, blobs) in rows {
        let acc = Acc {
            pageviews,
            visits,
            bounces,
            duration,
            visitors: sketches(blobs)?,
        };
        total.add(&acc);
        series.push(Bucket {
            bucket,
            figures: acc.figures(),
        });
    }
    Ok(Period {
        from,
        to,
        totals: total.figures(),
        series,
    })
}

pub async fn traffic(
    pool: &PgPool,
    scope: &Scope,
    params: &RangeParams,
    interval: Interval,
) -> Result<Traffic, DomainError> {
    let max = if interval == Interval::Hour {
        MAX_HOURLY_DAYS
    } else {
        MAX_DAYS
    };
    let mut tx = pg::begin(pool, scope).await?;
    let tz = prepare(&mut tx, params, max).await?;
    let days = (params.to - params.from).num_days() + 1;
    let current = period(&mut tx, params.site, params.from, params.to, interval, &tz).await?;
    let previous_to = params.from - Duration::days(1);
    let previous = period(
        &mut tx,
        params.site,
        previous_to - Duration::days(days - 1),
        previous_to,
        interval,
        &tz,
    )
    .await?;
    tx.commit().await?;
    Ok(Traffic {
        site: params.site,
        interval,
        timezone: tz,
        current,
        previous,
    })
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Ranked {
    /// The page path, the referring host (`Direct / None` for direct traffic) or the UTM value.
    pub value: String,
    pub pageviews: i64,
    /// Visits attributed to the value (referrers, UTM); absent for pages, which a visit passes
    /// through rather than comes from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub visits: Option<i64>,
    pub visitors: u64,
}

type RankedRow = (String, i64, i64, Vec<Vec<u8>>);

/// The values of one dimension over a range, most pageviews first.
async fn ranked(
    pool: &PgPool,
    scope: &Scope,
    params: &RangeParams,
    dimension: &str,
    filter: Option<&str>,
    limit: i64,
) -> Result<Vec<Ranked>, DomainError> {
    let mut tx = pg::begin(pool, scope).await?;
    let tz = prepare(&mut tx, params, MAX_DAYS).await?;
    let rows: Vec<RankedRow> = sqlx::query_as(
        "select value, sum(pageviews)::bigint, sum(visits)::bigint, array_agg(visitors) from analytics_rollups \
         where site_id = $1 and dimension = $2 \
           and hour >= ($3::date::timestamp at time zone $5) and hour < (($4::date + 1)::timestamp at time zone $5) \
           and ($6::text is null or value = $6) \
         group by value order by 2 desc, 3 desc, value limit $7",
    )
    .bind(params.site)
    .bind(dimension)
    .bind(params.from)
    .bind(params.to)
    .bind(&tz)
    .bind(filter)
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    rows.into_iter()
        .map(|(value, pageviews, visits, blobs)| {
            Ok(Ranked {
                value: if value.is_empty() && dimension == "source" {
                    "Direct / None".to_owned()
                } else {
                    value
                },
                pageviews,
                visits: (dimension != "page").then_some(visits),
                visitors: sketches(blobs)?.estimate(),
            })
        })
        .collect()
}

#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// At most this many rows (1..=100, default 10).
    #[serde(default)]
    pub limit: Option<i64>,
    /// Only this page path (top pages) or this source (referrers; `Direct / None` for direct).
    #[serde(default)]
    pub filter: Option<String>,
    /// Referrers only: group by `source` (default), `utm_source`, `utm_medium` or `utm_campaign`.
    #[serde(default)]
    pub by: Option<String>,
}

fn limit(params: &ListParams) -> Result<i64, DomainError> {
    match params.limit {
        None => Ok(10),
        Some(l) if (1..=100).contains(&l) => Ok(l),
        Some(_) => Err(DomainError::invalid(
            "limit",
            "out_of_range",
            "must be between 1 and 100",
        )),
    }
}

pub async fn top_pages(
    pool: &PgPool,
    scope: &Scope,
    range: &RangeParams,
    list: &ListParams,
) -> Result<Vec<Ranked>, DomainError> {
    ranked(pool, scope, range, "page", list.filter.as_deref(), limit(list)?).await
}

pub async fn referrers(
    pool: &PgPool,
    scope: &Scope,
    range: &RangeParams,
    list: &ListParams,
) -> Result<Vec<Ranked>, DomainError> {
    let dimension = match list.by.as_deref() {
        None | Some("source") => "source",
        Some("utm_source") => "utm_source",
        Some("utm_medium") => "utm_medium",
        Some("utm_campaign") => "utm_campaign",
        Some(_) => {
            return Err(DomainError::invalid(
                "by",
                "unknown_dimension",
                "one of source, utm_source, utm_medium, utm_campaign",
            ));
        }
    };
    let filter = list
        .filter
        .as_deref()
        .map(|f| if f == "Direct / None" { "" } else { f });
    ranked(pool, scope, range, dimension, filter, limit(list)?).await
}
