//! The gates over the real API: every function registers here with its router, its ROUTES
//! table and a factory for each path with an id. A new function or route that is not covered
//! fails these tests with a message saying what to add.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use gates::{Factory, Function, Params, World, isolation_sweep, join_tables, record_figures, role_sweep};
use serde_json::{Value, json};
use shared::domain::Role;
use std::future::Future;
use std::pin::Pin;
use testkit::{TestApp, post};

fn one(name: &str, value: &Value) -> Option<Params> {
    Some(Params::from([(name.to_owned(), value.as_str()?.to_owned())]))
}

/// An invitation of tenant A, as its owner makes it.
async fn invite(w: &World, unique: &str) -> Value {
    let body = json!({"email": format!("{unique}@example.com"), "role": "viewer"});
    w.api("settings", w.as_a(post("/settings/team/invitations")).json(body))
        .await
        .json
}

fn settings_factory<'a>(w: &'a World, path: &'a str) -> Pin<Box<dyn Future<Output = Option<Params>> + 'a>> {
    Box::pin(async move {
        let unique = uuid::Uuid::new_v4().simple().to_string();
        match path {
            "/settings/api-keys/{id}" => {
                let r = w
                    .api(
                        "settings",
                        w.as_a(post("/settings/api-keys"))
                            .json(json!({"name": "victim", "scopes": ["read"]})),
                    )
                    .await;
                one("id", &r.json["id"])
            }
            "/settings/team/invitations/{id}" => one("id", &invite(w, &unique).await["id"]),
            "/settings/team/members/{user_id}" => {
                let user = w.app.user("victim").await;
                w.app.add_member(w.a.id, &user, Role::Member).await;
                Some(Params::from([("user_id".to_owned(), user.id.to_string())]))
            }
            "/invitations/{token}/accept" => {
                let invitation = invite(w, &unique).await;
                let url = invitation["accept_url"].as_str()?;
                Some(Params::from([("token".to_owned(), url.split('/').nth(4)?.to_owned())]))
            }
            _ => None,
        }
    })
}

/// A record of tenant A for each crm-contacts path with an id.
fn crm_factory<'a>(w: &'a World, path: &'a str) -> Pin<Box<dyn Future<Output = Option<Params>> + 'a>> {
    Box::pin(async move {
        let unique = uuid::Uuid::new_v4().simple().to_string();
        let (create, body) = match path {
            "/crm/contacts/{id}" | "/crm/contacts/{id}/merge" => (
                "/crm/contacts",
                json!({"first_name": "Victim", "email": format!("{unique}@example.com")}),
            ),
            "/crm/companies/{id}" => ("/crm/companies", json!({"name": format!("Victim {unique}")})),
            "/crm/custom-fields/{id}" => (
                "/crm/custom-fields",
                json!({"entity": "contact", "key": format!("k{}", &unique[..12]), "label": "Victim", "type": "text"}),
            ),
            "/crm/exports/{id}" => ("/crm/exports", json!({"entity": "contacts", "filters": {"tag": "vip"}})),
            "/crm/imports/{id}" => {
                // An import needs an uploaded file; its row is what the routes read.
                let id = uuid::Uuid::now_v7();
                sqlx::query(
                    "insert into crm_imports (id, tenant_id, entity, source, object_key, header, mapping, dedupe, \
                     created_by) values ($1, $2, 'contacts', 'csv', $3, '{Email}', '[\"email\"]', 'skip', 'test')",
                )
                .bind(id)
                .bind(w.a.id)
                .bind(format!("imports/{}/{id}.csv", w.a.id))
                .execute(&w.app.db.owner)
                .await
                .unwrap();
                return Some(Params::from([("id".to_owned(), id.to_string())]));
            }
            _ => return None,
        };
        let r = w.api("crm-contacts", w.as_a(post(create)).json(body)).await;
        one("id", &r.json["id"])
    })
}

/// Records of tenant A for each crm-deals path with an id: a pipeline (and its second stage), a
/// deal in its first stage.
fn deals_factory<'a>(w: &'a World, path: &'a str) -> Pin<Box<dyn Future<Output = Option<Params>> + 'a>> {
    Box::pin(async move {
        if !path.starts_with("/crm/pipelines/{id}") && !path.starts_with("/crm/deals/{id}") {
            return None;
        }
        let unique = uuid::Uuid::new_v4().simple().to_string();
        let body = json!({"name": format!("Victim {unique}"), "stages": [{"name": "A", "probability": 10},
            {"name": "B", "probability": 20}]});
        let pipeline = w.api("crm-deals", w.as_a(post("/crm/pipelines")).json(body)).await.json;
        let stage = pipeline["stages"][1]["id"].as_str()?.to_owned();
        if path.starts_with("/crm/pipelines/{id}") {
            let mut params = one("id", &pipeline["id"])?;
            params.insert("stage_id".to_owned(), stage);
            return Some(params);
        }
        let body = json!({"stage_id": pipeline["stages"][0]["id"], "title": "Victim", "currency": "EUR"});
        let deal = w.api("crm-deals", w.as_a(post("/crm/deals")).json(body)).await.json;
        one("id", &deal["id"])
    })
}

/// A template, a segment or a manual suppression of tenant A (the suppression is one A's admin
/// may remove: a `manual` entry).
fn marketing_factory<'a>(w: &'a World, path: &'a str) -> Pin<Box<dyn Future<Output = Option<Params>> + 'a>> {
    Box::pin(async move {
        let unique = uuid::Uuid::new_v4().simple().to_string();
        let (create, body) = match path {
            "/marketing/templates/{id}" | "/marketing/templates/{id}/preview" => (
                "/marketing/templates",
                json!({"name": format!("Victim {unique}"), "subject": "Hi {{ contact.first_name }}", "body": "<p>Hi</p>"}),
            ),
            "/marketing/segments/{id}" | "/marketing/segments/{id}/count" => (
                "/marketing/segments",
                json!({"name": format!("Victim {unique}"), "filter": {"tags": ["vip"]}}),
            ),
            "/marketing/suppressions/{id}" => (
                "/marketing/suppressions",
                json!({"email": format!("{unique}@example.com")}),
            ),
            "/marketing/campaigns/{id}"
            | "/marketing/campaigns/{id}/test"
            | "/marketing/campaigns/{id}/schedule"
            | "/marketing/campaigns/{id}/pause"
            | "/marketing/campaigns/{id}/resume"
            | "/marketing/campaigns/{id}/cancel"
            | "/marketing/campaigns/{id}/stats" => (
                "/marketing/campaigns",
                json!({"name": format!("Victim {unique}"), "from_name": "Victim", "from_email": "victim@example.com"}),
            ),
            _ => return None,
        };
        let r = w.api("marketing-campaigns", w.as_a(post(create)).json(body)).await;
        one("id", &r.json["id"])
    })
}

fn no_ids<'a>(_: &'a World, _: &'a str) -> Pin<Box<dyn Future<Output = Option<Params>> + 'a>> {
    Box::pin(async { None })
}

/// stripe-webhook's router with clients that are never called: the sweeps only read its ROUTES
/// (signed routes are not tenant routes); its behaviour is tested against moto in its own crate.
fn stripe_webhook_router(_: &TestApp) -> axum::Router {
    let region = aws_sdk_dynamodb::config::Region::new("us-east-1");
    let dynamo = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::Config::builder()
            .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
            .region(region.clone())
            .build(),
    );
    let sqs = aws_sdk_sqs::Client::from_conf(
        aws_sdk_sqs::Config::builder()
            .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
            .region(aws_sdk_sqs::config::Region::new("us-east-1"))
            .build(),
    );
    let config = shared::services::billing::inbox::InboxConfig {
        secrets: vec!["whsec_gates".to_owned()],
        tolerance_secs: 300,
        table: "unused".to_owned(),
        queue_url: "unused".to_owned(),
    };
    let inbox = shared::services::billing::inbox::StripeInbox::new(config, dynamo, sqs);
    stripe_webhook::router(stripe_webhook::WebhookState {
        inbox: std::sync::Arc::new(inbox),
    })
}

/// An SQS client of the moto server (`TEST_AWS_ENDPOINT`) with its test credentials.
fn moto_sqs(moto: &str) -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::from_conf(
        aws_sdk_sqs::Config::builder()
            .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
            .region(aws_sdk_sqs::config::Region::new("us-east-1"))
            .endpoint_url(moto)
            .credentials_provider(aws_sdk_sqs::config::Credentials::new(
                "test", "test", None, None, "gates",
            ))
            .build(),
    )
}

/// An S3 client of the moto server (path-style) with its test credentials.
fn moto_s3(moto: &str) -> aws_sdk_s3::Client {
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .endpoint_url(moto)
            .force_path_style(true)
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                "test", "test", None, None, "gates",
            ))
            .build(),
    )
}

/// `crm-contacts` with clients of the moto server and a bucket and queue that do not exist:
/// presigning needs no network; queueing fails and is logged (the worker's sweep would queue
/// the job); the sweeps check auth, roles and isolation, tests/jobs.rs the files.
fn crm_contacts_router(app: &TestApp) -> axum::Router {
    let moto = std::env::var("TEST_AWS_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:5000".to_owned());
    let s3 = moto_s3(&moto);
    let sqs = moto_sqs(&moto);
    crm_contacts::router(
        app.core.clone(),
        shared::adapters::crm_files::CrmFiles {
            s3,
            bucket: "gates-crm-files-absent".to_owned(),
            jobs: shared::adapters::queue::Queue::new(&sqs, format!("{moto}/000000000000/gates-crm-jobs-absent")),
        },
    )
}

/// `connectors` with the local stack's settings: a test key, private addresses allowed (the
/// factory's store is on 127.0.0.1), no provider overrides.
/// The sweeps' connector-sync queue in moto (made by `make_sync_queue` before a sweep).
static SYNC_QUEUE: std::sync::OnceLock<String> = std::sync::OnceLock::new();

async fn make_sync_queue() {
    let moto = std::env::var("TEST_AWS_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:5000".to_owned());
    let created = moto_sqs(&moto)
        .create_queue()
        .queue_name("gates-connector-sync")
        .send()
        .await
        .expect("the moto server answers: run local/up --services-only first");
    if let Some(url) = created.queue_url() {
        let _ = SYNC_QUEUE.set(url.to_owned());
    }
}

fn connectors_router(app: &TestApp) -> axum::Router {
    let moto = std::env::var("TEST_AWS_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:5000".to_owned());
    let sqs = moto_sqs(&moto);
    // A queue that takes the runs: a manual sync answers 201 only when its run is queued.
    let url = SYNC_QUEUE
        .get()
        .cloned()
        .unwrap_or_else(|| format!("{moto}/000000000000/gates-connector-sync-absent"));
    let sync = shared::services::ecommerce::sync::SyncQueue::new(&sqs, url);
    connectors::router(app.core.clone(), test_connectors(app), sync)
}

/// `connector-webhook` with the test key and an SQS client of moto (a queue that does not
/// exist: the sweeps never get past the signature).
fn connector_webhook_router(app: &TestApp) -> axum::Router {
    let moto = std::env::var("TEST_AWS_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:5000".to_owned());
    let sqs = moto_sqs(&moto);
    connector_webhook::router(connector_webhook::WebhookState {
        connectors: test_connectors(app),
        queue: shared::services::ecommerce::sync::SyncQueue::new(
            &sqs,
            format!("{moto}/000000000000/gates-connector-sync-absent"),
        ),
    })
}

fn test_connectors(app: &TestApp) -> shared::services::connectors::Connectors {
    testkit::connectors(&app.db.app, [])
}

/// Tenant A's Shopify connector; `_marker` is in its settings, for the check that B's own
/// view of the kind shows nothing of A's.
fn connectors_factory<'a>(w: &'a World, path: &'a str) -> Pin<Box<dyn Future<Output = Option<Params>> + 'a>> {
    Box::pin(async move {
        if !path.starts_with("/connectors/{kind}") {
            return None;
        }
        let marker = format!("m{}", &uuid::Uuid::new_v4().simple().to_string()[..16]);
        let body = json!({"store_url": format!("http://127.0.0.1:9/{marker}"), "access_token": "shpat_victim00000000"});
        let r = w
            .api(
                "connectors",
                w.as_a(testkit::req(http::Method::PUT, "/connectors/shopify"))
                    .json(body),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        Some(Params::from([
            ("kind".to_owned(), "shopify".to_owned()),
            ("_marker".to_owned(), marker),
        ]))
    })
}

/// Tenant A's mirrored product (with a variant) or order (with a line), written as
/// connector-sync writes them: the read API has no way to create one.
fn ecommerce_factory<'a>(w: &'a World, path: &'a str) -> Pin<Box<dyn Future<Output = Option<Params>> + 'a>> {
    Box::pin(async move {
        let id = uuid::Uuid::now_v7();
        let external = (u64::from(id.as_u128() as u32) + 9_007_199_254_740_993).to_string();
        let sql = match path {
            "/ecommerce/products/{id}" => {
                "with p as (insert into ecom_products (id, tenant_id, channel, external_id, title, status, raw_status, \
                 source_updated_at) values ($1, $2, 'shopify', $3, 'Victim tee', 'active', 'active', now()) returning id) \
                 insert into ecom_variants (id, tenant_id, product_id, external_id, title, price_minor, currency) \
                 select gen_random_uuid(), $2, p.id, $3, 'M', 1999, 'EUR' from p"
            }
            "/ecommerce/orders/{id}" => {
                "with o as (insert into ecom_orders (id, tenant_id, channel, external_id, number, status, raw_status, \
                 currency, total_minor, subtotal_minor, tax_minor, shipping_minor, discount_minor, placed_at, \
                 source_updated_at) values ($1, $2, 'woocommerce', $3, '#1', 'paid', 'processing', 'EUR', 1999, \
                 1999, 0, 0, 0, now(), now()) returning id) \
                 insert into ecom_order_lines (tenant_id, order_id, external_id, title, quantity, unit_price_minor, \
                 total_minor) select $2, o.id, '1', 'Victim tee', 1, 1999, 1999 from o"
            }
            _ => return None,
        };
        sqlx::query(sql)
            .bind(id)
            .bind(w.a.id)
            .bind(external)
            .execute(&w.app.db.owner)
            .await
            .unwrap();
        Some(Params::from([("id".to_owned(), id.to_string())]))
    })
}

/// A page or post of tenant A (on a site of A's), with its first revision.
fn cms_factory<'a>(w: &'a World, path: &'a str) -> Pin<Box<dyn Future<Output = Option<Params>> + 'a>> {
    Box::pin(async move {
        let (function, create) = if path.starts_with("/cms/pages/{id}") {
            ("cms-pages", "/cms/pages")
        } else if path.starts_with("/cms/posts/{id}") {
            ("cms-posts", "/cms/posts")
        } else {
            return None;
        };
        let unique = uuid::Uuid::new_v4().simple().to_string();
        let (site, _) = w.app.site(w.a.id, &format!("{unique}.example.com")).await;
        let body = json!({"site_id": site, "title": format!("Victim {unique}")});
        let r = w.api(function, w.as_a(post(create)).json(body)).await;
        let mut params = one("id", &r.json["id"])?;
        params.insert("number".to_owned(), "1".to_owned());
        Some(params)
    })
}

/// The media bucket of the gates in moto (made once; later runs find it).
const GATES_MEDIA_BUCKET: &str = "gates-media-library";

fn media_store() -> shared::adapters::media_store::MediaStore {
    let moto = std::env::var("TEST_AWS_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:5000".to_owned());
    let s3 = moto_s3(&moto);
    shared::adapters::media_store::MediaStore {
        s3,
        bucket: GATES_MEDIA_BUCKET.to_owned(),
        public_base_url: format!("{moto}/{GATES_MEDIA_BUCKET}"),
    }
}

/// A media library item of tenant A (an upload granted; deleting it removes its key).
fn media_factory<'a>(w: &'a World, path: &'a str) -> Pin<Box<dyn Future<Output = Option<Params>> + 'a>> {
    Box::pin(async move {
        if path != "/cms/media/{id}" {
            return None;
        }
        let store = media_store();
        let _ = store.s3.create_bucket().bucket(&store.bucket).send().await;
        let body = json!({"name": "victim.png", "content_type": "image/png", "size": 100});
        let r = w.api("cms-media", w.as_a(post("/cms/media/uploads")).json(body)).await;
        one("id", &r.json["media"]["id"])
    })
}

/// `billing` against a stub Stripe that answers every call with a session-like object: the
/// sweeps check auth, roles and isolation, not Stripe (tests/billing.rs fakes its contract).
fn billing_router(app: &TestApp) -> axum::Router {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let stub = axum::Router::new().fallback(|| async {
        axum::Json(json!({"id": "cus_stub", "object": "stub", "url": "https://stripe.test/stub"}))
    });
    tokio::spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        axum::serve(listener, stub).await.unwrap();
    });
    let stripe = shared::adapters::stripe_api::StripeApi::new(&base, "sk_test_gates").unwrap();
    billing::router(billing::BillingState::new(app.core.clone(), stripe))
}

/// Every HTTP function, once.
fn functions() -> Vec<Function> {
    vec![
        Function {
            name: "settings",
            routes: settings::ROUTES,
            router: |app: &TestApp| settings::router(app.core.clone()),
            factory: settings_factory as Factory,
            events_dir: "settings",
            keys: &[],
        },
        Function {
            name: "api-docs",
            routes: api_docs::ROUTES,
            router: |app: &TestApp| api_docs::router(api_docs::DocsState { db: app.db.app.clone() }),
            factory: no_ids as Factory,
            events_dir: "api-docs",
            keys: &[],
        },
        Function {
            name: "billing",
            routes: billing::ROUTES,
            router: billing_router,
            factory: no_ids as Factory,
            events_dir: "billing",
            keys: &[],
        },
        Function {
            name: "analytics-collect",
            routes: analytics_collect::ROUTES,
            router: |app: &TestApp| {
                let collector =
                    shared::services::analytics::collect::Collector::new(&testkit::redis_url(), app.db.app.clone());
                analytics_collect::router(collector)
            },
            factory: no_ids as Factory,
            events_dir: "analytics-collect",
            keys: &[],
        },
        Function {
            name: "ecommerce",
            routes: ecommerce::ROUTES,
            router: |app: &TestApp| ecommerce::router(app.core.clone()),
            factory: ecommerce_factory as Factory,
            events_dir: "ecommerce",
            keys: &[],
        },
        Function {
            name: "analytics-query",
            routes: analytics_query::ROUTES,
            router: |app: &TestApp| analytics_query::router(app.core.clone()),
            factory: no_ids as Factory,
            events_dir: "analytics-query",
            keys: &[],
        },
        Function {
            name: "crm-contacts",
            routes: crm_contacts::ROUTES,
            router: crm_contacts_router,
            factory: crm_factory as Factory,
            events_dir: "crm-contacts",
            keys: &[],
        },
        Function {
            name: "connectors",
            routes: connectors::ROUTES,
            router: connectors_router,
            factory: connectors_factory as Factory,
            events_dir: "connectors",
            keys: &["kind"],
        },
        Function {
            name: "connector-webhook",
            routes: connector_webhook::ROUTES,
            router: connector_webhook_router,
            factory: no_ids as Factory,
            events_dir: "connector-webhook",
            keys: &[],
        },
        Function {
            name: "email-events",
            routes: email_events::ROUTES,
            router: |app: &TestApp| {
                email_events::router(email_events::EventsState {
                    connectors: test_connectors(app),
                })
            },
            factory: no_ids as Factory,
            events_dir: "email-events",
            keys: &[],
        },
        Function {
            name: "crm-deals",
            routes: crm_deals::ROUTES,
            router: |app: &TestApp| crm_deals::router(app.core.clone()),
            factory: deals_factory as Factory,
            events_dir: "crm-deals",
            keys: &[],
        },
        Function {
            name: "marketing-campaigns",
            routes: marketing_campaigns::ROUTES,
            router: |app: &TestApp| marketing_campaigns::router(app.core.clone(), testkit::link_keys()),
            factory: marketing_factory as Factory,
            events_dir: "marketing-campaigns",
            keys: &[],
        },
        Function {
            name: "cms-pages",
            routes: cms_content::pages::ROUTES,
            router: |app: &TestApp| cms_content::pages::router(app.core.clone(), None),
            factory: cms_factory as Factory,
            events_dir: "cms-pages",
            keys: &[],
        },
        Function {
            name: "cms-posts",
            routes: cms_content::posts::ROUTES,
            router: |app: &TestApp| {
                let wordpress = shared::services::providers::wordpress::Wordpress {
                    connectors: test_connectors(app),
                    media_base: "https://media.example.com".to_owned(),
                };
                cms_content::posts::router(app.core.clone(), Some(wordpress))
            },
            factory: cms_factory as Factory,
            events_dir: "cms-posts",
            keys: &[],
        },
        Function {
            name: "cms-public",
            routes: cms_public::ROUTES,
            router: |app: &TestApp| cms_public::router(app.core.clone(), "https://media.example.com".to_owned()),
            factory: no_ids as Factory,
            events_dir: "cms-public",
            keys: &[],
        },
        Function {
            name: "cms-media",
            routes: cms_media::ROUTES,
            router: |app: &TestApp| cms_media::router(app.core.clone(), media_store()),
            factory: media_factory as Factory,
            events_dir: "cms-media",
            keys: &[],
        },
        Function {
            name: "stripe-webhook",
            routes: stripe_webhook::ROUTES,
            router: stripe_webhook_router,
            factory: no_ids as Factory,
            events_dir: "stripe-webhook",
            keys: &[],
        },
    ]
}

fn document() -> Value {
    serde_json::from_str(api_docs::OPENAPI_JSON).unwrap()
}

#[test]
fn every_documented_operation_is_in_exactly_one_route_table() {
    if let Err(problems) = join_tables(&document(), &functions()) {
        panic!("route tables and openapi.json disagree:\n- {}", problems.join("\n- "));
    }
}

#[tokio::test]
async fn tenant_isolation_sweep() {
    make_sync_queue().await;
    let functions = functions();
    let ops = join_tables(&document(), &functions).unwrap();
    let world = World::new(&functions).await;
    let report = isolation_sweep(&world, &functions, &ops).await;
    record_figures(
        "isolation",
        json!({ "operations": ops.len(), "cross_tenant_calls": report.calls }),
    );
    report.assert_clean("tenant isolation sweep");
    assert!(report.calls > 10, "the sweep made only {} calls", report.calls);
}

#[tokio::test]
async fn role_sweep_matches_the_route_tables() {
    make_sync_queue().await;
    let functions = functions();
    let ops = join_tables(&document(), &functions).unwrap();
    let world = World::new(&functions).await;
    let report = role_sweep(&world, &functions, &ops).await;
    record_figures("roles", json!({ "role_checks": report.calls }));
    report.assert_clean("role sweep");
    assert!(report.calls > 20, "the sweep made only {} role checks", report.calls);
}
