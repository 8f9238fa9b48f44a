//! CRM benchmark, one run, against the local Postgres: a tenant with N contacts (default
//! 100,000) and 5,000 companies; `GET /crm/contacts` through the handler in process vs the raw
//! SQL the handler runs (same text, same tenant-scoped transaction), p50/p99 of each, for the
//! first page, a deep keyset page, a sorted page, a filter, and searches (prefix, typo, company).
//! Goal: handler <= 2x the raw SQL.
//!
//! Usage: cargo run --release -p bench-crm [-- CONTACTS]   (default 100000)
//!        cargo run --release -p bench-crm -- import [ROWS]   (import rows/s; see import.rs)
#![allow(
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use serde_json::Value;
use shared::adapters::pg;
use shared::domain::{Actor, Role, Scope};
use std::time::Instant;
use testkit::{TestApp, get};

const FIRST: &[&str] = &[
    "John",
    "Jane",
    "Ada",
    "Grace",
    "Alan",
    "Linus",
    "Ken",
    "Barbara",
    "Donald",
    "Edsger",
    "Margaret",
    "Tim",
    "Guido",
    "Bjarne",
    "James",
    "Dennis",
    "Frances",
    "Radia",
    "Sophie",
    "Katherine",
    "Mary",
    "Hedy",
    "Annie",
    "Joan",
    "Peter",
    "Michael",
    "Samir",
    "Milton",
    "Bill",
    "Steve",
    "Carol",
    "Susan",
    "Lynn",
    "Anita",
    "Shafi",
    "Leslie",
    "Judea",
    "Yann",
    "Geoffrey",
    "Fei-Fei",
];
const LAST: &[&str] = &[
    "Smith",
    "Smithers",
    "Lovelace",
    "Hopper",
    "Turing",
    "Torvalds",
    "Thompson",
    "Liskov",
    "Knuth",
    "Dijkstra",
    "Hamilton",
    "Berners-Lee",
    "Rossum",
    "Stroustrup",
    "Gosling",
    "Ritchie",
    "Allen",
    "Perlman",
    "Wilson",
    "Johnson",
    "Keller",
    "Lamarr",
    "Easley",
    "Clarke",
    "Gibbons",
    "Bolton",
    "Nagheenanajar",
    "Waddams",
    "Joy",
    "Wozniak",
    "Shaw",
    "Kare",
    "Conway",
    "Borg",
    "Goldwasser",
    "Lamport",
    "Pearl",
    "LeCun",
    "Hinton",
    "Li",
    "Miller",
    "Doe",
    "Brown",
    "Taylor",
    "Anderson",
    "Thomas",
    "Jackson",
    "White",
    "Harris",
    "Martin",
];

const COLUMNS: &str = "c.id, c.first_name, c.last_name, c.email, c.other_emails, c.phone, c.mobile, c.title, \
    c.company_id, (select co.name from crm_companies co where co.id = c.company_id) as company_name, c.owner_id, \
    c.lifecycle_stage, c.tags, c.address, c.notes, c.source, c.custom, c.created_at, c.updated_at, c.version";

use testkit::percentile_ms as percentile;

mod import;

#[tokio::main]
async fn main() {
    if std::env::args().nth(1).as_deref() == Some("import") {
        let rows = std::env::args().nth(2).and_then(|n| n.parse().ok()).unwrap_or(100_000);
        import::run(rows).await;
        return;
    }
    let contacts: i64 = std::env::args().nth(1).and_then(|n| n.parse().ok()).unwrap_or(100_000);
    println!(
        "CRM benchmark, {contacts} contacts, 5000 companies, {}",
        testkit::machine()
    );
    let app = TestApp::new().await;
    let owner = app.user("bench").await;
    let tenant = app.tenant(&owner).await;
    app.subscribe(tenant, "scale").await;
    let start = Instant::now();
    sqlx::query(
        "insert into crm_companies (id, tenant_id, name, domain) \
         select gen_random_uuid(), $1, 'Company ' || g || case when g % 10 = 0 then ' Acme' else '' end, \
                'company' || g || '.example' from generate_series(1, 5000) g",
    )
    .bind(tenant)
    .execute(&app.db.owner)
    .await
    .unwrap();
    sqlx::query(
        "insert into crm_contacts (id, tenant_id, first_name, last_name, email, company_id, lifecycle_stage, tags, \
                                   created_at) \
         select gen_random_uuid(), $1, ($2::text[])[1 + g % array_length($2, 1)], \
                ($3::text[])[1 + (g / 7) % array_length($3, 1)], 'person' || g || '@mail' || (g % 97) || '.example', \
                co.ids[1 + g % 5000], (array['lead', 'customer', 'opportunity', 'subscriber'])[1 + g % 4], \
                case when g % 5 = 0 then array['vip'] else '{}' end, now() - make_interval(secs => g) \
         from generate_series(1, $4) g, \
              (select array_agg(id order by id) as ids from crm_companies where tenant_id = $1) co",
    )
    .bind(tenant)
    .bind(FIRST)
    .bind(LAST)
    .bind(contacts)
    .execute(&app.db.owner)
    .await
    .unwrap();
    // Statistics, as autovacuum would gather them after such a load.
    for table in ["crm_contacts", "crm_companies"] {
        sqlx::query(&format!("analyze {table}"))
            .execute(&app.db.owner)
            .await
            .unwrap();
    }
    println!("  seeded in {:.1} s", start.elapsed().as_secs_f64());

    let files = testkit::crm_files(&testkit::moto().await, "bench").await;
    let api = crm_contacts::router(app.core.clone(), files);
    let scope = Scope {
        actor: Actor::User {
            user_id: owner.id,
            email: owner.email.clone(),
        },
        tenant: Some((tenant, Role::Owner)),
        request_id: "bench".into(),
    };
    // A cursor 40 pages deep, for the deep-page case.
    let mut cursor = String::new();
    let mut last: Option<(Value, Value)> = None;
    for _ in 0..40 {
        let r = get("/crm/contacts")
            .bearer(&owner.token)
            .tenant(tenant)
            .query(&format!("limit=25&cursor={cursor}"))
            .send(&api)
            .await;
        let items = r.json["items"].as_array().unwrap();
        let tail = items.last().unwrap();
        last = Some((tail["created_at"].clone(), tail["id"].clone()));
        cursor = r.json["next_cursor"].as_str().unwrap().to_owned();
    }
    let (deep_at, deep_id) = last.unwrap();
    let deep_at: chrono::DateTime<chrono::Utc> = deep_at.as_str().unwrap().parse().unwrap();
    let deep_id: uuid::Uuid = deep_id.as_str().unwrap().parse().unwrap();

    struct Case {
        name: &'static str,
        query: String,
        sql: String,
        binds: Vec<Bind>,
        search: bool,
    }
    #[derive(Clone)]
    enum Bind {
        Text(String),
        Int(i64),
        At(chrono::DateTime<chrono::Utc>),
        Id(uuid::Uuid),
    }
    let score = "(greatest(1::real * (word_similarity($1, coalesce(c.search_text, '')) + case when c.search_text like $2 \
        or c.search_text like $3 then 1 else 0 end), 0.9::real * (word_similarity($1, coalesce(co.search_text, '')) + \
        case when co.search_text like $2 or co.search_text like $3 then 1 else 0 end)))::real";
    let search_sql = format!(
        "select {COLUMNS}, null::timestamptz as sort_time, null::text as sort_text, {score} as score \
         from crm_contacts c left join crm_companies co on co.id = c.company_id where true \
         and c.id in (select app_crm_search('contact', $1, $4)) \
         order by score desc, c.id desc limit $5"
    );
    let search = |name: &'static str, q: &str| Case {
        name,
        query: format!("q={q}&limit=25"),
        sql: search_sql.clone(),
        binds: vec![
            Bind::Text(q.to_owned()),
            Bind::Text(format!("{q}%")),
            Bind::Text(format!("% {q}%")),
            Bind::Text(format!("%{q}%")),
            Bind::Int(26),
        ],
        search: true,
    };
    let cases = vec![
        Case {
            name: "first page (newest)",
            query: "limit=25".into(),
            sql: format!(
                "select {COLUMNS}, c.created_at as sort_time, null::text as sort_text, null::real as score \
                 from crm_contacts c left join crm_companies co on co.id = c.company_id where true \
                 order by c.created_at desc, c.id desc limit $1"
            ),
            binds: vec![Bind::Int(26)],
            search: false,
        },
        Case {
            name: "page 41 (keyset)",
            query: format!("limit=25&cursor={cursor}"),
            sql: format!(
                "select {COLUMNS}, c.created_at as sort_time, null::text as sort_text, null::real as score \
                 from crm_contacts c left join crm_companies co on co.id = c.company_id where true \
                 and (c.created_at, c.id) < ($1, $2) order by c.created_at desc, c.id desc limit $3"
            ),
            binds: vec![Bind::At(deep_at), Bind::Id(deep_id), Bind::Int(26)],
            search: false,
        },
        Case {
            name: "sorted by name",
            query: "sort=name&limit=25".into(),
            sql: format!(
                "select {COLUMNS}, null::timestamptz as sort_time, lower(c.last_name || ' ' || c.first_name) as sort_text, \
                 null::real as score from crm_contacts c left join crm_companies co on co.id = c.company_id where true \
                 order by lower(c.last_name || ' ' || c.first_name) asc, c.id asc limit $1"
            ),
            binds: vec![Bind::Int(26)],
            search: false,
        },
        Case {
            name: "filter tag=vip, stage=customer",
            query: "tag=vip&lifecycle_stage=customer&limit=25".into(),
            sql: format!(
                "select {COLUMNS}, c.created_at as sort_time, null::text as sort_text, null::real as score \
                 from crm_contacts c left join crm_companies co on co.id = c.company_id where true \
                 and c.tags @> array[$1] and c.lifecycle_stage = $2 order by c.created_at desc, c.id desc limit $3"
            ),
            binds: vec![Bind::Text("vip".into()), Bind::Text("customer".into()), Bind::Int(26)],
            search: false,
        },
        search("search prefix 'lovel'", "lovel"),
        search("search typo 'nagheenanajr'", "nagheenanajr"),
        search("search email 'person4242@'", "person4242@"),
        search("search company 'acme'", "acme"),
    ];
    const RUNS: usize = 40;
    println!(
        "  {:<34} {:>10} {:>10} {:>10} {:>10} {:>7}",
        "case", "handler p50", "p99", "raw p50", "p99", "ratio"
    );
    for case in &cases {
        let (mut handler, mut raw) = (Vec::new(), Vec::new());
        for _ in 0..RUNS {
            // Interleaved: the handler, then the raw SQL.
            let t = Instant::now();
            let r = get("/crm/contacts")
                .bearer(&owner.token)
                .tenant(tenant)
                .query(&case.query)
                .send(&api)
                .await;
            handler.push(t.elapsed());
            assert_eq!(r.status, 200, "{}", r.text);
            let t = Instant::now();
            let mut tx = pg::begin(&app.db.app, &scope).await.unwrap();
            if case.search {
                sqlx::query("select set_config('pg_trgm.word_similarity_threshold', '0.5', true)")
                    .execute(&mut *tx)
                    .await
                    .unwrap();
            }
            let mut q = sqlx::query(&case.sql);
            for b in &case.binds {
                q = match b.clone() {
                    Bind::Text(s) => q.bind(s),
                    Bind::Int(i) => q.bind(i),
                    Bind::At(at) => q.bind(at),
                    Bind::Id(id) => q.bind(id),
                };
            }
            let rows = q.fetch_all(&mut *tx).await.unwrap();
            tx.commit().await.unwrap();
            raw.push(t.elapsed());
            assert_eq!(
                rows.len().min(25),
                r.json["items"].as_array().unwrap().len(),
                "{}: the raw SQL answers what the handler does",
                case.name
            );
        }
        let (h50, h99) = (percentile(&mut handler, 0.5), percentile(&mut handler, 0.99));
        let (r50, r99) = (percentile(&mut raw, 0.5), percentile(&mut raw, 0.99));
        println!(
            "  {:<34} {:>8.2}ms {:>8.2}ms {:>8.2}ms {:>8.2}ms {:>6.2}x",
            case.name,
            h50,
            h99,
            r50,
            r99,
            h50 / r50
        );
    }
    println!("  (ratio: handler p50 / raw p50; goal <= 2x. {RUNS} runs each, interleaved.)");
}
