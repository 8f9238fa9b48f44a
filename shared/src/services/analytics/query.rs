//! The traffic API over the rollups: series by hour or day (in any time zone) with the same
//! figures for the previous period of equal length, top pages and referrers. Unique visitors of
//! a bucket or a range come from merging the hourly sketches.
use chrono::{Datelike, Duration, NaiveDate, NaiveDateTime};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::rollup::{SOURCE_PAGE, UTM_CAMPAIGN_PAGE, UTM_MEDIUM_PAGE, UTM_SOURCE_PAGE};
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
    /// First day (YYYY-MM-DD), in the years 2000 to 2100.
    #[param(pattern = r"^(20[0-9]{2}|2100)-")]
    pub from: NaiveDate,
    /// Last day (YYYY-MM-DD), inclusive: not before `from`, at most 400 days after it (31 by
    /// the hour).
    #[param(pattern = r"^(20[0-9]{2}|2100)-")]
    pub to: NaiveDate,
    /// IANA time zone of the days, one Postgres knows (default: the site's).
    #[serde(default)]
    #[param(min_length = 1)]
    pub tz: Option<String>,
}

const MAX_DAYS: i64 = 400;
const MAX_HOURLY_DAYS: i64 = 31;
/// Days outside these years are refused (no traffic there, and far years overflow time zones).
const FIRST_YEAR: i32 = 2000;
const LAST_YEAR: i32 = 2100;

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
    for (field, day) in [("from", params.from), ("to", params.to)] {
        if !(FIRST_YEAR..=LAST_YEAR).contains(&day.year()) {
            v.error(
                field,
                "out_of_range",
                format!("must be a day between {FIRST_YEAR} and {LAST_YEAR}"),
            );
        }
    }
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
    let known = pg::known_timezone(&mut **tx, &tz).await?;
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
    /// through rather than comes from, and for the referrers of one page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub visits: Option<i64>,
    pub visitors: u64,
}

type RankedRow = (String, i64, i64, Vec<Vec<u8>>);

/// What a ranking reads: the rows of one dimension, or of a pair dimension (values
/// `attribution \u{1f} path`) grouped by one part with the other part fixed.
struct Breakdown<'a> {
    dimension: &'a str,
    /// 0: the whole value; 1: the attribution part; 2: the path part.
    group_part: i32,
    /// (part, value): only rows whose other part is this.
    fixed: Option<(i32, &'a str)>,
    /// Only this value of the grouped part.
    filter: Option<&'a str>,
    with_visits: bool,
}

/// The values of one dimension over a range, most pageviews first.
async fn ranked(
    pool: &PgPool,
    scope: &Scope,
    params: &RangeParams,
    b: Breakdown<'_>,
    limit: i64,
) -> Result<Vec<Ranked>, DomainError> {
    let mut tx = pg::begin(pool, scope).await?;
    let tz = prepare(&mut tx, params, MAX_DAYS).await?;
    let (fixed_part, fixed) = b.fixed.map_or((1, None), |(part, value)| (part, Some(value)));
    let rows: Vec<RankedRow> = sqlx::query_as(
        "with r as ( \
             select case when $8 = 0 then value else split_part(value, E'\\x1f', $8) end as v, \
                    pageviews, visits, visitors \
             from analytics_rollups \
             where site_id = $1 and dimension = $2 \
               and hour >= ($3::date::timestamp at time zone $5) and hour < (($4::date + 1)::timestamp at time zone $5) \
               and ($10::text is null or split_part(value, E'\\x1f', $9) = $10) \
         ) \
         select v, sum(pageviews)::bigint, sum(visits)::bigint, array_agg(visitors) from r \
         where ($6::text is null or v = $6) \
         group by v order by 2 desc, 3 desc, v limit $7",
    )
    .bind(params.site)
    .bind(b.dimension)
    .bind(params.from)
    .bind(params.to)
    .bind(&tz)
    .bind(b.filter)
    .bind(limit)
    .bind(b.group_part)
    .bind(fixed_part)
    .bind(fixed)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let direct = b.dimension == "source" || (b.dimension == SOURCE_PAGE && b.group_part == 1);
    rows.into_iter()
        .map(|(value, pageviews, visits, blobs)| {
            Ok(Ranked {
                value: if value.is_empty() && direct {
                    DIRECT.to_owned()
                } else {
                    value
                },
                pageviews,
                visits: b.with_visits.then_some(visits),
                visitors: sketches(blobs)?.estimate(),
            })
        })
        .collect()
}

/// How direct traffic (no referrer, no UTM source) is named.
pub const DIRECT: &str = "Direct / None";

fn source_value(s: &str) -> &str {
    if s == DIRECT { "" } else { s }
}

#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TopPagesParams {
    /// At most this many rows (1..=100, default 10).
    #[serde(default)]
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// Only this page path.
    #[serde(default)]
    pub filter: Option<String>,
    /// Only pageviews of visits from this source (`Direct / None` for direct traffic).
    #[serde(default)]
    pub source: Option<String>,
    /// Only pageviews of visits with this `utm_source`.
    #[serde(default)]
    pub utm_source: Option<String>,
    /// Only pageviews of visits with this `utm_medium`.
    #[serde(default)]
    pub utm_medium: Option<String>,
    /// Only pageviews of visits with this `utm_campaign`.
    #[serde(default)]
    pub utm_campaign: Option<String>,
}

/// What `GET /analytics/referrers` groups by (its `by`; read as text, so the refusal names it).
#[derive(Debug, Clone, Copy, ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum Dimension {
    Source,
    UtmSource,
    UtmMedium,
    UtmCampaign,
}

#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReferrersParams {
    /// At most this many rows (1..=100, default 10).
    #[serde(default)]
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// Only this value (`Direct / None` for direct traffic).
    #[serde(default)]
    pub filter: Option<String>,
    /// Group by `source` (default), `utm_source`, `utm_medium` or `utm_campaign`.
    #[serde(default)]
    #[param(value_type = Option<Dimension>, inline)]
    pub by: Option<String>,
    /// Only pageviews of this page path: each value's pageviews and visitors there (no visits:
    /// a visit counts where it enters).
    #[serde(default)]
    pub page: Option<String>,
}

fn limit(limit: Option<i64>) -> Result<i64, DomainError> {
    match limit {
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
    list: &TopPagesParams,
) -> Result<Vec<Ranked>, DomainError> {
    let limit = limit(list.limit)?;
    let attributions: Vec<(&str, &str)> = [
        (SOURCE_PAGE, list.source.as_deref().map(source_value)),
        (UTM_SOURCE_PAGE, list.utm_source.as_deref()),
        (UTM_MEDIUM_PAGE, list.utm_medium.as_deref()),
        (UTM_CAMPAIGN_PAGE, list.utm_campaign.as_deref()),
    ]
    .into_iter()
    .filter_map(|(dim, value)| value.map(|v| (dim, v)))
    .collect();
    let breakdown = match attributions.as_slice() {
        [] => Breakdown {
            dimension: "page",
            group_part: 0,
            fixed: None,
            filter: list.filter.as_deref(),
            with_visits: false,
        },
        [(dimension, value)] => Breakdown {
            dimension,
            group_part: 2,
            fixed: Some((1, value)),
            filter: list.filter.as_deref(),
            with_visits: false,
        },
        _ => {
            return Err(DomainError::invalid(
                "source",
                "one_attribution",
                "filter by one of source, utm_source, utm_medium, utm_campaign at a time",
            ));
        }
    };
    ranked(pool, scope, range, breakdown, limit).await
}

pub async fn referrers(
    pool: &PgPool,
    scope: &Scope,
    range: &RangeParams,
    list: &ReferrersParams,
) -> Result<Vec<Ranked>, DomainError> {
    let limit = limit(list.limit)?;
    let (dimension, pair_dimension) = match list.by.as_deref() {
        None | Some("source") => ("source", SOURCE_PAGE),
        Some("utm_source") => ("utm_source", UTM_SOURCE_PAGE),
        Some("utm_medium") => ("utm_medium", UTM_MEDIUM_PAGE),
        Some("utm_campaign") => ("utm_campaign", UTM_CAMPAIGN_PAGE),
        Some(_) => {
            return Err(DomainError::invalid(
                "by",
                "unknown_dimension",
                "one of source, utm_source, utm_medium, utm_campaign",
            ));
        }
    };
    let filter = list.filter.as_deref().map(source_value);
    let breakdown = match list.page.as_deref() {
        None => Breakdown {
            dimension,
            group_part: 0,
            fixed: None,
            filter,
            with_visits: true,
        },
        Some(page) => Breakdown {
            dimension: pair_dimension,
            group_part: 1,
            fixed: Some((2, page)),
            filter,
            with_visits: false,
        },
    };
    ranked(pool, scope, range, breakdown, limit).await
}
