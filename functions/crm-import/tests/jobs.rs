//! CRM imports and exports end to end against real Postgres and the moto server: a presigned
//! upload to S3, `POST /crm/imports` (crm-contacts), the job message taken from the SQS queue,
//! the worker's run, the errors file and the export downloaded from their presigned links.
//! Needs `local/up --services-only` (Postgres and moto).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use crm_import::Worker;
use serde_json::{Value, json};
use shared::services::connectors::catalog::Kind;
use shared::services::connectors::{Connectors, Retry};
use shared::services::crm::imports::RunOptions;
use shared::services::crm::jobs::JobMessage;
use testkit::{TestApp, get};
use uuid::Uuid;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// The CRM world with crm-contacts under test (the import and export routes), and the
/// worker's own helpers.
struct World(testkit::crm::World);

impl std::ops::Deref for World {
    type Target = testkit::crm::World;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

async fn world() -> World {
    World(testkit::crm::World::new("jobs", crm_contacts::router).await)
}

/// The connectors the API and the worker share; Zoho's API at `zoho` (a fake) when given.
fn connectors(app: &TestApp, zoho: Option<&str>) -> Connectors {
    testkit::connectors(&app.core.db, zoho.map(|uri| (Kind::Zoho, uri.to_owned())))
}

impl World {
    fn worker(&self, chunk_rows: usize) -> Worker {
        Worker {
            db: self.app.core.db.clone(),
            files: self.files.clone(),
            connectors: connectors(&self.app, None),
            options: RunOptions {
                chunk_rows,
                ..RunOptions::default()
            },
            retry: Retry {
                tries: 2,
                max_wait: std::time::Duration::from_millis(20),
                deadline: None,
            },
        }
    }

    /// The next message the API queued (and removes it, as Lambda's poller does).
    async fn next_job(&self) -> JobMessage {
        let out = self
            .files
            .jobs
            .client()
            .receive_message()
            .queue_url(self.files.jobs.url())
            .wait_time_seconds(2)
            .max_number_of_messages(1)
            .send()
            .await
            .unwrap();
        let message = out.messages().first().expect("a job was queued").clone();
        self.files
            .jobs
            .client()
            .delete_message()
            .queue_url(self.files.jobs.url())
            .receipt_handle(message.receipt_handle().unwrap())
            .send()
            .await
            .unwrap();
        serde_json::from_str(message.body().unwrap()).unwrap()
    }

    async fn import(&self, key: &str, entity: &str, dedupe: &str, mapping: Value) -> Value {
        let r = self
            .post(
                "/crm/imports",
                json!({"entity": entity, "upload_key": key, "dedupe": dedupe, "mapping": mapping, "file_name": "t.csv"}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        assert_eq!(r.json["status"], "queued");
        r.json
    }
}

async fn download(url: &str) -> String {
    let resp = reqwest::get(url).await.unwrap();
    assert!(resp.status().is_success());
    resp.text().await.unwrap()
}

fn csv_rows(text: &str) -> Vec<Vec<String>> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(text.as_bytes());
    reader
        .records()
        .map(|r| r.unwrap().iter().map(str::to_owned).collect())
        .collect()
}

#[tokio::test]
async fn a_messy_csv_imports_with_exact_row_accounting_and_a_downloadable_errors_file() {
    let w = world().await;
    let r = w
        .post(
            "/crm/custom-fields",
            json!({"entity": "contact", "key": "plan", "label": "Plan", "type": "select", "options": ["basic", "pro"]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = w
        .post(
            "/crm/contacts",
            json!({"first_name": "Existing", "email": "existing@example.com", "notes": "old", "tags": ["old"]}),
        )
        .await;
    assert_eq!(r.status, 201);
    let existing = r.json["id"].as_str().unwrap().to_owned();

    let mut file: Vec<u8> =
        b"\xEF\xBB\xBFFirst Name,Last Name,E-Mail,Company,Notes,Tags,Stage,Plan,Owner,Ignored\r\n".to_vec();
    let rows: Vec<Vec<u8>> = vec![
        // 1 (line 2): created, company created, owner by email
        format!("Ada,Lovelace,ada@example.com,Analytical Engines,Met at the fair,vip;speaker,customer,pro,{},x\r\n", w.owner.email).into_bytes(),
        // 2 (lines 3-4): a quoted line break and comma
        b"Grace,Hopper,grace@example.com,Navy,\"Line one\nLine two, with comma\",vip,Marketing Qualified Lead,basic,,x\r\n".to_vec(),
        // 3 (line 5): missing columns
        b"Missing,Columns,missing@example.com\r\n".to_vec(),
        // 4 (line 6): an extra column
        b"Extra,Cols,extra@example.com,C,N,T,lead,basic,,x,surplus\r\n".to_vec(),
        // 5 (line 7): Latin-1, not UTF-8
        b"Ren\xe9,Descartes,rene@example.com,,,,,,,x\r\n".to_vec(),
        // 6 (line 8): a 10 MB row
        [b"Big,Row,big@example.com,,\"".to_vec(), vec![b'x'; 10 * 1024 * 1024], b"\",,,,,x\r\n".to_vec()].concat(),
        // 7 (line 9): a bad email, and a formula in the row (guarded in the errors file)
        b"=1+1,Email,not-an-email,,,,,,,x\r\n".to_vec(),
        // 8 (line 10): formulas are data on import
        b"\"=HYPERLINK(\"\"http://evil\"\")\",Formula,formula@example.com,,@SUM(1+1),,,,,x\r\n".to_vec(),
        // 9 (line 11): row 1's email again (another case): updates Ada
        b"Ada,Again,ADA@example.com,,,newtag,,,,x\r\n".to_vec(),
        // 10 (line 12): an existing contact: updated
        b"Existing,Person,existing@example.com,,Updated note,,,,,x\r\n".to_vec(),
        // 11 (line 13): an owner who is not a member
        b"Unknown,Owner,uo@example.com,,,,,,nobody@example.com,x\r\n".to_vec(),
        // 12 (line 14): an unknown lifecycle stage
        b"Bad,Stage,bs@example.com,,,,vip-stage,,,x\r\n".to_vec(),
        // 13 (line 15): a select value that is not an option; then a blank line (16)
        b"Bad,Plan,bp@example.com,,,,,gold,,x\r\n\r\n".to_vec(),
        // 14 (line 17): a cell an export guarded
        b"'=1+2,Guarded,guarded@example.com,,,,,,,x\r\n".to_vec(),
        // 15 (line 18): nothing that names a contact
        b",,,,,,,,,x\r\n".to_vec(),
        // 16 (line 19): no final line break; links to row 1's company
        b"Last,Row,last@example.com,Analytical Engines,,,,,,x".to_vec(),
    ];
    for row in rows {
        file.extend(row);
    }
    let key = w.upload(file).await;
    let import = w.import(&key, "contacts", "update", json!({"Ignored": null})).await;
    let id = import["id"].as_str().unwrap().to_owned();
    let columns: Vec<(String, Value)> = import["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["header"].as_str().unwrap().to_owned(), c["field"].clone()))
        .collect();
    assert_eq!(columns[0], ("First Name".to_owned(), json!("first_name")));
    assert_eq!(columns[2], ("E-Mail".to_owned(), json!("email")));
    assert_eq!(columns[7], ("Plan".to_owned(), json!("custom.plan")));
    assert_eq!(columns[9], ("Ignored".to_owned(), Value::Null));

    let job = w.next_job().await;
    assert_eq!(job.id.to_string(), id);
    w.worker(4).run(&job, None).await.unwrap();

    let r = w.get(&format!("/crm/imports/{id}"), "").await;
    assert_eq!(r.status, 200, "{}", r.text);
    let i = &r.json;
    assert_eq!(i["status"], "completed", "{i}");
    assert_eq!(
        (
            &i["rows_total"],
            &i["rows_done"],
            &i["created"],
            &i["updated"],
            &i["skipped"],
            &i["failed"]
        ),
        (&json!(16), &json!(16), &json!(5), &json!(2), &json!(0), &json!(9)),
        "{i}"
    );
    assert_eq!(i["companies_created"], 2);
    let failed: Vec<(i64, i64)> = i["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["row"].as_i64().unwrap(), e["line"].as_i64().unwrap()))
        .collect();
    assert_eq!(
        failed,
        [
            (3, 5),
            (4, 6),
            (5, 7),
            (6, 8),
            (7, 9),
            (11, 13),
            (12, 14),
            (13, 15),
            (15, 18)
        ]
    );
    let message = |row: i64| {
        i["errors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["row"] == row)
            .unwrap()["message"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert!(message(3).contains("3 columns; the header has 10"), "{}", message(3));
    assert!(message(4).contains("11 columns"), "{}", message(4));
    assert!(message(5).contains("\"First Name\" is not UTF-8"), "{}", message(5));
    assert!(message(6).contains("1 MiB"), "{}", message(6));
    assert!(message(7).starts_with("email:"), "{}", message(7));
    assert!(message(11).contains("nobody@example.com"), "{}", message(11));
    assert!(message(12).starts_with("lifecycle_stage:"), "{}", message(12));
    assert!(message(13).starts_with("custom.plan:"), "{}", message(13));
    assert!(message(15).starts_with("first_name:"), "{}", message(15));

    // The errors file: every failed row with its data, formulas guarded, the 10 MB row shortened.
    let errors = csv_rows(&download(i["errors_url"].as_str().unwrap()).await);
    assert_eq!(errors[0], ["row", "line", "fields", "error", "data"]);
    assert_eq!(errors.len(), 10);
    let bad_email = errors.iter().find(|e| e[0] == "7").unwrap();
    assert!(bad_email[4].starts_with("'=1+1,Email,not-an-email"), "{bad_email:?}");
    let big = errors.iter().find(|e| e[0] == "6").unwrap();
    assert!(big[4].chars().count() <= 2000);

    // What landed.
    let list = w.get("/crm/contacts", "limit=100&sort=email").await;
    assert_eq!(list.status, 200);
    let items = list.json["items"].as_array().unwrap();
    let by_email = |e: &str| {
        items
            .iter()
            .find(|c| c["email"] == e)
            .unwrap_or_else(|| panic!("{e} missing"))
    };
    assert_eq!(items.len(), 6, "{items:?}");
    let ada = by_email("ada@example.com");
    assert_eq!(ada["last_name"], "Again");
    assert_eq!(ada["tags"], json!(["vip", "speaker", "newtag"]));
    assert_eq!(ada["owner_id"], json!(w.owner.id));
    assert_eq!(ada["lifecycle_stage"], "customer");
    assert_eq!(ada["custom"], json!({"plan": "pro"}));
    assert_eq!(ada["source"], "import");
    let grace = by_email("grace@example.com");
    assert_eq!(grace["notes"], "Line one\nLine two, with comma");
    assert_eq!(grace["lifecycle_stage"], "marketing_qualified");
    assert_eq!(grace["company_name"], "Navy");
    let updated = by_email("existing@example.com");
    assert_eq!(updated["id"].as_str().unwrap(), existing);
    assert_eq!(updated["notes"], "Updated note");
    assert_eq!(updated["last_name"], "Person");
    assert_eq!(updated["tags"], json!(["old"]));
    assert_eq!(updated["version"], 2);
    assert_eq!(
        by_email("formula@example.com")["first_name"],
        "=HYPERLINK(\"http://evil\")"
    );
    assert_eq!(by_email("formula@example.com")["notes"], "@SUM(1+1)");
    assert_eq!(by_email("guarded@example.com")["first_name"], "=1+2");
    assert_eq!(by_email("last@example.com")["company_id"], ada["company_id"]);
    assert_eq!(
        w.count("select count(*) from crm_companies where tenant_id = $1").await,
        2
    );
    let detail = w
        .get(&format!("/crm/contacts/{}", ada["id"].as_str().unwrap()), "")
        .await;
    let kinds: Vec<&str> = detail.json["activity"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["imported", "imported"]);

    // Another delivery of the same message changes nothing.
    w.worker(4).run(&job, None).await.unwrap();
    assert_eq!(
        w.count("select count(*) from crm_contacts where tenant_id = $1").await,
        6
    );
    let again = w.get(&format!("/crm/imports/{id}"), "").await;
    assert_eq!(again.json["created"], 5);
    let list = w.get("/crm/imports", "").await;
    assert_eq!(list.json.as_array().unwrap().len(), 1);
}

fn people(from: usize, to: usize) -> Vec<u8> {
    let mut file = b"first_name,last_name,email,company\n".to_vec();
    for i in from..to {
        file.extend(format!("First{i},Last{i},p{i}@example.com,Company {}\n", i % 7).into_bytes());
    }
    file
}

#[tokio::test]
async fn a_crash_mid_import_resumes_at_the_last_commit_and_duplicates_nothing() {
    let w = world().await;
    // Room for every contact of this test (the free plan allows 500).
    w.app.subscribe(w.tenant, "scale").await;
    let key = w.upload(people(0, 250)).await;
    let id = w.import(&key, "contacts", "create", Value::Null).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let job = w.next_job().await;

    // Dies in the third chunk of 50, after writing it, before its commit.
    let mut crashing = w.worker(50);
    crashing.options.crash_in_chunk = Some(2);
    assert!(crashing.run(&job, None).await.is_err());
    let r = w.get(&format!("/crm/imports/{id}"), "").await;
    assert_eq!(r.json["status"], "running");
    assert_eq!(r.json["rows_done"], 100);
    assert_eq!(r.json["rows_total"], 250);
    assert_eq!(
        w.count("select count(*) from crm_contacts where tenant_id = $1").await,
        100
    );

    // The redelivery resumes at row 101.
    w.worker(50).run(&job, None).await.unwrap();
    let r = w.get(&format!("/crm/imports/{id}"), "").await;
    assert_eq!(r.json["status"], "completed", "{}", r.json);
    assert_eq!((&r.json["created"], &r.json["failed"]), (&json!(250), &json!(0)));
    assert_eq!(r.json["errors_url"], Value::Null);
    assert_eq!(
        w.count("select count(*) from crm_contacts where tenant_id = $1").await,
        250
    );
    assert_eq!(
        w.count("select count(distinct lower(email)) from crm_contacts where tenant_id = $1")
            .await,
        250
    );
    assert_eq!(
        w.count("select count(*) from crm_companies where tenant_id = $1").await,
        7
    );
    assert_eq!(
        w.count("select count(*) from crm_activities where tenant_id = $1 and contact_id is not null")
            .await,
        250
    );

    // Two runs of one job at once (a duplicate delivery): one applies each chunk, the other stops.
    let key = w.upload(people(1000, 1300)).await;
    w.import(&key, "contacts", "create", Value::Null).await;
    let job = w.next_job().await;
    let (a, b) = (w.worker(25), w.worker(25));
    let (ra, rb) = tokio::join!(a.run(&job, None), b.run(&job, None));
    ra.unwrap();
    rb.unwrap();
    assert_eq!(
        w.count("select count(*) from crm_contacts where tenant_id = $1").await,
        550
    );
    let r = w.get(&format!("/crm/imports/{}", job.id), "").await;
    assert_eq!(
        (&r.json["status"], &r.json["created"]),
        (&json!("completed"), &json!(300))
    );

    // A run that reaches its deadline stops between chunks and queues the job again.
    let key = w.upload(people(2000, 2100)).await;
    w.import(&key, "contacts", "skip", Value::Null).await;
    let job = w.next_job().await;
    let past = std::time::Instant::now();
    w.worker(25).run(&job, Some(past)).await.unwrap();
    let again = w.next_job().await;
    assert_eq!(again, job);
    w.worker(25).run(&again, None).await.unwrap();
    assert_eq!(
        w.count("select count(*) from crm_contacts where tenant_id = $1").await,
        650
    );
}

#[tokio::test]
async fn the_plan_limit_fails_the_rows_past_it() {
    let w = world().await;
    // The free plan allows 500 contacts.
    let key = w.upload(people(0, 520)).await;
    let id = w.import(&key, "contacts", "skip", Value::Null).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let job = w.next_job().await;
    w.worker(200).run(&job, None).await.unwrap();
    let r = w.get(&format!("/crm/imports/{id}"), "").await;
    assert_eq!(
        (&r.json["created"], &r.json["failed"]),
        (&json!(500), &json!(20)),
        "{}",
        r.json
    );
    assert!(
        r.json["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("allows 500 contacts")
    );
    assert_eq!(
        w.count("select count(*) from crm_contacts where tenant_id = $1").await,
        500
    );
}

#[tokio::test]
async fn companies_dedupe_by_domain_then_by_name() {
    let w = world().await;
    let r = w
        .post(
            "/crm/companies",
            json!({"name": "Acme", "domain": "acme.test", "tags": ["a"]}),
        )
        .await;
    assert_eq!(r.status, 201);
    let file = b"Company Name,Website,Industry,Tags\n\
        Acme Corp,https://www.acme.test/,Rockets,b\n\
        Globex,,Energy,\n\
        globex,,Utilities,c\n\
        Initech,initech.test,Software,\n\
        Bad,not a domain,,\n"
        .to_vec();
    let key = w.upload(file).await;
    let id = w.import(&key, "companies", "update", Value::Null).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let job = w.next_job().await;
    w.worker(100).run(&job, None).await.unwrap();
    let r = w.get(&format!("/crm/imports/{id}"), "").await;
    assert_eq!(
        (&r.json["created"], &r.json["updated"], &r.json["failed"]),
        (&json!(2), &json!(2), &json!(1)),
        "{}",
        r.json
    );
    let list = w.get("/crm/companies", "limit=100&sort=name").await;
    let names: Vec<(&str, &str)> = list.json["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap(), c["industry"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(
        names,
        [
            ("Acme Corp", "Rockets"),
            ("globex", "Utilities"),
            ("Initech", "Software")
        ]
    );
    let acme = &list.json["items"][0];
    assert_eq!(acme["domain"], "acme.test");
    assert_eq!(acme["tags"], json!(["a", "b"]));
}

#[tokio::test]
async fn exports_guard_formulas_follow_the_list_filters_and_import_back() {
    let w = world().await;
    w.post(
        "/crm/custom-fields",
        json!({"entity": "contact", "key": "seats", "label": "Seats", "type": "number"}),
    )
    .await;
    let tricky = [
        json!({"first_name": "=cmd|' /C calc'!A0", "last_name": "Eve", "email": "eve@example.com",
               "phone": "+49 30 1234567", "title": "-Director", "notes": "@SUM(A1)\nsecond line",
               "tags": ["vip"], "custom": {"seats": -3}}),
        json!({"first_name": "Ada", "last_name": "Lovelace", "email": "ada@example.com", "tags": ["vip", "x"],
               "address": {"city": "London", "country": "GB"}, "custom": {"seats": 12.5}}),
        json!({"first_name": "Plain", "email": "plain@example.com", "tags": ["other"]}),
    ];
    for body in &tricky {
        let r = w.post("/crm/contacts", body.clone()).await;
        assert_eq!(r.status, 201, "{}", r.text);
    }
    for (filters, field) in [
        (json!({"sort": "shoe_size"}), "filters.sort"),
        (json!({"limit": 5}), "filters.limit"),
        (json!({"nope": 1}), "filters"),
        (json!({"custom": "{\"unknown\": 1}"}), "filters.custom.unknown"),
    ] {
        let r = w
            .post("/crm/exports", json!({"entity": "contacts", "filters": filters}))
            .await;
        assert_eq!(r.status, 422, "{filters}: {}", r.text);
        assert!(r.error_fields().iter().any(|f| f == field), "{filters}: {}", r.text);
    }
    assert_eq!(
        w.count("select count(*) from crm_exports where tenant_id = $1").await,
        0
    );

    let r = w
        .post(
            "/crm/exports",
            json!({"entity": "contacts", "filters": {"tag": "vip", "sort": "email"}}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json["status"], "queued");
    let id = r.json["id"].as_str().unwrap().to_owned();
    assert_eq!(
        w.get(&format!("/crm/exports/{id}"), "").await.json["download_url"],
        Value::Null
    );
    let job = w.next_job().await;
    w.worker(100).run(&job, None).await.unwrap();
    let r = w.get(&format!("/crm/exports/{id}"), "").await;
    assert_eq!(
        (&r.json["status"], &r.json["rows"]),
        (&json!("completed"), &json!(2)),
        "{}",
        r.json
    );
    let text = download(r.json["download_url"].as_str().unwrap()).await;
    let rows = csv_rows(&text);
    let header = &rows[0];
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    assert!(header.contains(&"custom.seats".to_owned()));
    assert_eq!(rows.len(), 3);
    let ada = &rows[1];
    let eve = &rows[2];
    assert_eq!(ada[col("email")], "ada@example.com");
    assert_eq!(ada[col("tags")], "vip; x");
    assert_eq!(ada[col("address.city")], "London");
    assert_eq!(ada[col("custom.seats")], "12.5");
    assert_eq!(eve[col("first_name")], "'=cmd|' /C calc'!A0");
    assert_eq!(eve[col("phone")], "'+49 30 1234567");
    assert_eq!(eve[col("title")], "'-Director");
    assert_eq!(eve[col("notes")], "'@SUM(A1)\nsecond line");
    assert_eq!(eve[col("custom.seats")], "-3", "a plain number is not a formula");

    // The file imports back as it is (into another tenant).
    let other = w.app.user("other").await;
    let other_tenant = w.app.tenant(&other).await;
    let r = w
        .post_as(
            &other,
            other_tenant,
            "/crm/custom-fields",
            json!({"entity": "contact", "key": "seats", "label": "Seats", "type": "number"}),
        )
        .await;
    assert_eq!(r.status, 201);
    let key = w.upload_as(&other, other_tenant, text.into_bytes()).await;
    let r = w
        .post_as(
            &other,
            other_tenant,
            "/crm/imports",
            json!({"entity": "contacts", "upload_key": key}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let job = w.next_job().await;
    w.worker(100).run(&job, None).await.unwrap();
    let list = get("/crm/contacts")
        .bearer(&other.token)
        .tenant(other_tenant)
        .query("sort=email")
        .send(&w.api)
        .await;
    let items = list.json["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{}", list.text);
    for (item, original) in items.iter().zip([&tricky[1], &tricky[0]]) {
        for field in ["first_name", "email", "tags", "custom"] {
            assert_eq!(item[field], original[field], "{field}");
        }
    }
    assert_eq!(items[1]["notes"], "@SUM(A1)\nsecond line");
    assert_eq!(items[1]["phone"], "+49 30 1234567");
    assert_eq!(items[0]["address"]["city"], "London");

    // Isolation: the other tenant's ids answer 404, its upload keys are not this tenant's.
    let theirs = get(&format!("/crm/exports/{id}"))
        .bearer(&other.token)
        .tenant(other_tenant)
        .send(&w.api)
        .await;
    assert_eq!(theirs.status, 404);
    let their_import = get(&format!("/crm/imports/{}", job.id))
        .bearer(&w.owner.token)
        .tenant(w.tenant)
        .send(&w.api)
        .await;
    assert_eq!(their_import.status, 404);
    let r = w
        .post("/crm/imports", json!({"entity": "contacts", "upload_key": key}))
        .await;
    assert_eq!(r.status, 422);
    assert_eq!(r.error_fields(), ["upload_key"]);
}

#[tokio::test]
async fn the_sweep_queues_jobs_whose_message_was_lost() {
    let w = world().await;
    let key = w.upload(people(0, 10)).await;
    let id = w.import(&key, "contacts", "skip", Value::Null).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let _lost = w.next_job().await;
    let worker = w.worker(100);
    assert_eq!(worker.sweep().await.unwrap(), 0, "a fresh job is not stalled");
    sqlx::query("update crm_imports set updated_at = now() - interval '11 minutes' where id = $1::uuid")
        .bind(&id)
        .execute(&w.app.db.owner)
        .await
        .unwrap();
    assert!(worker.sweep().await.unwrap() >= 1);
    let job = w.next_job().await;
    assert_eq!(job.id.to_string(), id);
    worker.run(&job, None).await.unwrap();
    let r = w.get(&format!("/crm/imports/{id}"), "").await;
    assert_eq!(
        (&r.json["status"], &r.json["created"]),
        (&json!("completed"), &json!(10))
    );
}

#[tokio::test]
async fn a_nul_byte_fails_its_row_not_the_import_and_a_second_put_changes_nothing() {
    let w = world().await;
    let file = b"first_name,last_name,email\nAda,Love\0lace,ada@example.com\nGrace,Hopper,grace@example.com\n".to_vec();
    let key = w.upload(file).await;
    let id = w.import(&key, "contacts", "skip", Value::Null).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // The upload's URL is still valid: a second PUT to its key must not change what is imported.
    w.files
        .s3
        .put_object()
        .bucket(&w.files.bucket)
        .key(&key)
        .body(
            b"first_name,last_name,email\nMallory,Evil,mallory@example.com\n"
                .to_vec()
                .into(),
        )
        .send()
        .await
        .unwrap();
    let job = w.next_job().await;
    w.worker(10).run(&job, None).await.unwrap();
    let r = w.get(&format!("/crm/imports/{id}"), "").await;
    assert_eq!(
        (&r.json["status"], &r.json["created"], &r.json["failed"]),
        (&json!("completed"), &json!(1), &json!(1)),
        "{}",
        r.json
    );
    assert_eq!(r.json["errors"][0]["fields"], "last_name");
    let errors = csv_rows(&download(r.json["errors_url"].as_str().unwrap()).await);
    assert!(errors[1][4].contains("Love\u{FFFD}lace"), "{errors:?}");
    let list = w.get("/crm/contacts", "").await;
    assert_eq!(list.json["items"][0]["email"], "grace@example.com");

    // A header with NUL bytes (UTF-16 without its byte order mark) is refused up front.
    let utf16 = w.upload(b"E\0m\0a\0i\0l\0\n\0".to_vec()).await;
    let r = w
        .post("/crm/imports", json!({"entity": "contacts", "upload_key": utf16}))
        .await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(r.json["errors"][0]["code"], "wrong_encoding");
}

#[tokio::test]
async fn an_import_that_never_progresses_is_given_up_after_five_runs() {
    let w = world().await;
    let key = w.upload(people(0, 30)).await;
    let id = w.import(&key, "contacts", "skip", Value::Null).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let job = w.next_job().await;
    // The first chunk commits; then every run dies in the next one.
    let mut first = w.worker(10);
    first.options.crash_in_chunk = Some(1);
    assert!(first.run(&job, None).await.is_err());
    let mut dying = w.worker(10);
    dying.options.crash_in_chunk = Some(0);
    for _ in 0..4 {
        assert!(dying.run(&job, None).await.is_err());
    }
    // Four runs without progress after a chunk: not given up yet (progress reset the count).
    assert_eq!(w.get(&format!("/crm/imports/{id}"), "").await.json["status"], "running");
    assert!(dying.run(&job, None).await.is_err());
    dying.run(&job, None).await.unwrap();
    let r = w.get(&format!("/crm/imports/{id}"), "").await;
    assert_eq!(r.json["status"], "failed", "{}", r.json);
    assert!(r.json["error"].as_str().unwrap().contains("row 11"), "{}", r.json);
    assert_eq!(r.json["created"], 10);
    // Given up is final: the sweep leaves it, another delivery does nothing.
    w.worker(10).run(&job, None).await.unwrap();
    assert_eq!(
        w.count("select count(*) from crm_contacts where tenant_id = $1").await,
        10
    );
}

// ------------------------------------------------------------------------------- Zoho CRM

/// Zoho CRM's `GET /crm/v2/{module}` over `records`: pages by `page` and `per_page` (at most
/// 200), `info.more_records`, and 204 with no body past the end, as the API answers.
/// `deleted_after_page_1`: a record someone deletes in Zoho once page 1 has been read.
struct ZohoModule {
    records: std::sync::Mutex<Vec<Value>>,
    deleted_after_page_1: std::sync::Mutex<Option<usize>>,
}

impl ZohoModule {
    fn new(records: Vec<Value>) -> Self {
        Self {
            records: std::sync::Mutex::new(records),
            deleted_after_page_1: std::sync::Mutex::new(None),
        }
    }
}

impl wiremock::Respond for ZohoModule {
    fn respond(&self, request: &wiremock::Request) -> ResponseTemplate {
        let q: std::collections::HashMap<String, String> = request.url.query_pairs().into_owned().collect();
        let page: usize = q["page"].parse().unwrap();
        let per_page: usize = q["per_page"].parse().unwrap();
        assert!((1..=200).contains(&per_page));
        assert_eq!((q["sort_by"].as_str(), q["sort_order"].as_str()), ("id", "asc"));
        let mut records = self.records.lock().unwrap();
        let start = (page - 1) * per_page;
        let data: Vec<Value> = records.iter().skip(start).take(per_page).cloned().collect();
        let total = records.len();
        if page == 1
            && per_page == 200
            && let Some(i) = self.deleted_after_page_1.lock().unwrap().take()
        {
            records.remove(i);
        }
        if data.is_empty() {
            return ResponseTemplate::new(204);
        }
        ResponseTemplate::new(200).set_body_json(json!({
            "data": data,
            "info": {"per_page": per_page, "count": data.len(), "page": page,
                     "more_records": start + per_page < total}
        }))
    }
}

/// A Contacts record shaped as Zoho sends it (lookups and users as objects, ids as strings).
fn zoho_contact(i: usize) -> Value {
    let email = match i {
        3 => "P2@Zylker.com".to_owned(),
        _ if i.is_multiple_of(100) => "not-an-email".to_owned(),
        _ => format!("p{i}@zylker.com"),
    };
    let mut record = json!({
        "id": format!("{}", 3_477_061_000_000_419_000u64 + i as u64),
        "Owner": {"name": "Patricia Boyle", "id": "3477061000000173021", "email": "p.boyle@zylker.com"},
        "First_Name": format!("Person{i}"),
        "Last_Name": "Zoho",
        "Email": email,
        "Phone": null,
        "Mobile": "+91 98765 43210",
        "Title": "Buyer",
        "Account_Name": null,
        "Tag": [],
        "Description": null,
        "Mailing_Street": null,
        "Mailing_City": null,
        "Mailing_State": null,
        "Mailing_Zip": null,
        "Mailing_Country": null,
        "$approved": true,
    });
    if i == 5 {
        record["Tag"] = json!([{"name": "vip", "id": "1"}, {"name": "q4", "id": "2"}]);
        record["Mailing_City"] = json!("Chennai");
    }
    if i == 7 || i == 8 {
        record["Account_Name"] = json!({"name": "Zylker", "id": "3477061000000419555"});
    }
    record
}

const ZOHO_TOKEN: &str = "1000.8cb99dxxxxxxxxxxxxx9be93.9b8xxxxxxxxxxxxxxxf";

impl World {
    async fn connect_zoho(&self, tenant: Uuid) {
        let scope = shared::domain::Scope::worker(tenant, "", "test".into());
        let settings = json!({"data_center": "eu", "access_token": ZOHO_TOKEN});
        connectors(&self.app, None)
            .put(&scope, Kind::Zoho, settings.as_object().unwrap().clone(), None)
            .await
            .unwrap();
    }

    fn zoho_worker(&self, zoho: &MockServer) -> Worker {
        Worker {
            connectors: connectors(&self.app, Some(&zoho.uri())),
            ..self.worker(1000)
        }
    }
}

#[tokio::test]
async fn a_zoho_import_pages_the_module_resumes_after_a_crash_and_accounts_for_every_record() {
    let w = world().await;
    w.connect_zoho(w.tenant).await;
    let zoho = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/crm/v2/Contacts"))
        .and(header(
            "authorization",
            format!("Zoho-oauthtoken {ZOHO_TOKEN}").as_str(),
        ))
        .respond_with(ZohoModule::new((1..=450).map(zoho_contact).collect()))
        .mount(&zoho)
        .await;
    let r = w
        .post(
            "/crm/imports",
            json!({"entity": "contacts", "source": "zoho", "dedupe": "skip"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(
        (&r.json["source"], &r.json["file_name"]),
        (&json!("zoho"), &json!("Zoho CRM Contacts"))
    );
    let columns: Vec<(String, Value)> = r.json["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["header"].as_str().unwrap().to_owned(), c["field"].clone()))
        .collect();
    for (header, field) in [
        ("id", Value::Null),
        ("Owner", Value::Null),
        ("First_Name", json!("first_name")),
        ("Email", json!("email")),
        ("Account_Name", json!("company")),
        ("Tag", json!("tags")),
        ("Mailing_City", json!("address.city")),
    ] {
        assert!(
            columns.contains(&(header.to_owned(), field.clone())),
            "{header}: {columns:?}"
        );
    }
    let id = r.json["id"].as_str().unwrap().to_owned();
    let job = w.next_job().await;

    // The first page commits, the run dies in the second; the redelivery starts at page 2.
    let mut crashing = w.zoho_worker(&zoho);
    crashing.options.chunk_rows = 1000;
    crashing.options.crash_in_chunk = Some(1);
    assert!(crashing.run(&job, None).await.is_err());
    let r = w.get(&format!("/crm/imports/{id}"), "").await;
    assert_eq!(
        (&r.json["status"], &r.json["rows_done"]),
        (&json!("running"), &json!(200))
    );
    w.zoho_worker(&zoho).run(&job, None).await.unwrap();
    let pages: Vec<(String, String)> = zoho
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| {
            let q: std::collections::HashMap<String, String> = r.url.query_pairs().into_owned().collect();
            if q["per_page"] == "200" {
                assert!(
                    q["fields"].starts_with("id,First_Name,Last_Name,Email"),
                    "{}",
                    q["fields"]
                );
            } else {
                // The look at the last place of the pages read (one id).
                assert_eq!((q["per_page"].as_str(), q["fields"].as_str()), ("1", "id"));
            }
            (q["page"].clone(), q["per_page"].clone())
        })
        .collect();
    let fetched: Vec<(&str, &str)> = pages.iter().map(|(p, n)| (p.as_str(), n.as_str())).collect();
    assert_eq!(
        fetched,
        [
            ("1", "200"),
            ("200", "1"),
            ("2", "200"),
            ("200", "1"),
            ("2", "200"),
            ("400", "1"),
            ("3", "200")
        ],
        "page 1 is not read again"
    );

    let r = w.get(&format!("/crm/imports/{id}"), "").await;
    assert_eq!(r.json["status"], "completed", "{}", r.json);
    let counts: Vec<i64> = [
        "rows_total",
        "rows_done",
        "created",
        "updated",
        "skipped",
        "failed",
        "companies_created",
    ]
    .iter()
    .map(|k| r.json[*k].as_i64().unwrap())
    .collect();
    assert_eq!(counts, [450, 450, 445, 0, 1, 4, 1], "{}", r.json);
    let failed: Vec<(i64, &str)> = r.json["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["row"].as_i64().unwrap(), e["fields"].as_str().unwrap()))
        .collect();
    assert_eq!(failed, [(100, "email"), (200, "email"), (300, "email"), (400, "email")]);
    let errors = csv_rows(&download(r.json["errors_url"].as_str().unwrap()).await);
    assert!(errors[1][4].starts_with("3477061000000419100,"), "{errors:?}");
    assert_eq!(
        w.count("select count(*) from crm_contacts where tenant_id = $1").await,
        445
    );
    let (tags, city, company): (Vec<String>, Option<String>, Option<String>) = sqlx::query_as(
        "select c.tags, c.address->>'city', co.name from crm_contacts c left join crm_companies co \
         on co.id = c.company_id where c.tenant_id = $1 and c.email = 'p5@zylker.com'",
    )
    .bind(w.tenant)
    .fetch_one(&w.app.db.owner)
    .await
    .unwrap();
    assert_eq!(
        (tags, city, company),
        (
            vec!["vip".to_owned(), "q4".to_owned()],
            Some("Chennai".to_owned()),
            None
        )
    );
    assert_eq!(
        w.count(
            "select count(*) from crm_contacts c join crm_companies co on co.id = c.company_id \
             where c.tenant_id = $1 and co.name = 'Zylker'"
        )
        .await,
        2
    );
    // Another delivery of the same message changes nothing.
    w.zoho_worker(&zoho).run(&job, None).await.unwrap();
    assert_eq!(zoho.received_requests().await.unwrap().len(), 7);
}

#[tokio::test]
async fn zoho_imports_need_the_connector_and_fail_in_words_when_zoho_refuses() {
    let w = world().await;
    // Not connected yet: 422, nothing recorded.
    let r = w
        .post("/crm/imports", json!({"entity": "contacts", "source": "zoho"}))
        .await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(
        (&r.json["errors"][0]["field"], &r.json["errors"][0]["code"]),
        (&json!("source"), &json!("not_connected"))
    );
    let key = w.upload(people(0, 2)).await;
    let r = w
        .post(
            "/crm/imports",
            json!({"entity": "contacts", "source": "zoho", "upload_key": key}),
        )
        .await;
    assert_eq!(
        (r.status.as_u16(), &r.json["errors"][0]["field"]),
        (422, &json!("upload_key")),
        "{}",
        r.text
    );
    let r = w
        .post(
            "/crm/imports",
            json!({"entity": "companies", "source": "zoho", "mapping": {"Lead Source": "notes"}}),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(
        w.count("select count(*) from crm_imports where tenant_id = $1").await,
        0
    );

    w.connect_zoho(w.tenant).await;
    let zoho = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/crm/v2/Contacts"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({
            "code": "INVALID_TOKEN", "details": {}, "message": "invalid oauth token", "status": "error"})))
        .mount(&zoho)
        .await;
    Mock::given(method("GET"))
        .and(path("/crm/v2/Accounts"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&zoho)
        .await;

    // A token Zoho no longer accepts: the import fails, saying what to do.
    let contacts = w
        .post("/crm/imports", json!({"entity": "contacts", "source": "zoho"}))
        .await;
    assert_eq!(contacts.status, 201, "{}", contacts.text);
    w.zoho_worker(&zoho).run(&w.next_job().await, None).await.unwrap();
    let r = w
        .get(&format!("/crm/imports/{}", contacts.json["id"].as_str().unwrap()), "")
        .await;
    assert_eq!(r.json["status"], "failed", "{}", r.json);
    let error = r.json["error"].as_str().unwrap();
    assert!(
        error.contains("Zoho CRM did not accept the oauth access token (HTTP 401)")
            && error.contains("Zoho CRM said: invalid oauth token"),
        "{error}"
    );

    // An empty module (204) completes with nothing; a mapping can read the tenant's own fields.
    let accounts = w
        .post(
            "/crm/imports",
            json!({"entity": "companies", "source": "zoho", "mapping": {"Lead_Source": null, "Rating": "notes"}}),
        )
        .await;
    assert_eq!(accounts.status, 201, "{}", accounts.text);
    w.zoho_worker(&zoho).run(&w.next_job().await, None).await.unwrap();
    let id = accounts.json["id"].as_str().unwrap();
    let r = w.get(&format!("/crm/imports/{id}"), "").await;
    assert_eq!(
        (&r.json["status"], &r.json["rows_total"]),
        (&json!("completed"), &json!(0)),
        "{}",
        r.json
    );
    let last = zoho.received_requests().await.unwrap().pop().unwrap();
    let fields = last
        .url
        .query_pairs()
        .find(|(k, _)| k == "fields")
        .unwrap()
        .1
        .into_owned();
    assert!(
        fields.ends_with(",Lead_Source,Rating") && fields.contains("Billing_Code"),
        "{fields}"
    );

    // Zoho down: the run errs for the queue to retry, the job waits, nothing counted.
    let down = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&down)
        .await;
    let again = w
        .post("/crm/imports", json!({"entity": "contacts", "source": "zoho"}))
        .await;
    let job = w.next_job().await;
    assert!(w.zoho_worker(&down).run(&job, None).await.is_err());
    let id = again.json["id"].as_str().unwrap();
    let r = w.get(&format!("/crm/imports/{id}"), "").await;
    assert_eq!(
        (&r.json["status"], &r.json["rows_done"]),
        (&json!("running"), &json!(0))
    );
    let trouble = r.json["error"].as_str().unwrap();
    assert!(
        trouble.contains("Zoho CRM page 1") && trouble.contains("HTTP 503"),
        "{trouble}"
    );
    // With too little time left for a call before the Lambda's deadline, the run makes none:
    // it pauses and queues the job again.
    let mut hurried = w.zoho_worker(&down);
    hurried.options.deadline = Some(std::time::Instant::now() + std::time::Duration::from_secs(5));
    let calls = down.received_requests().await.unwrap().len();
    hurried.run(&job, None).await.unwrap();
    assert_eq!(down.received_requests().await.unwrap().len(), calls);
    assert_eq!(w.next_job().await.id, job.id);

    // Another tenant sees none of it.
    let other = w.app.user("other").await;
    let other_tenant = w.app.tenant(&other).await;
    let r = get(&format!("/crm/imports/{id}"))
        .bearer(&other.token)
        .tenant(other_tenant)
        .send(&w.api)
        .await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn a_record_deleted_in_zoho_mid_import_skips_none_of_the_others() {
    let w = world().await;
    w.connect_zoho(w.tenant).await;
    let zoho = MockServer::start().await;
    let module = ZohoModule::new((1..=450).map(zoho_contact).collect());
    // Record 5 (on page 1, already imported) is deleted once page 1 has been read: every
    // unread record moves back a place, and record 201 moves onto page 1.
    *module.deleted_after_page_1.lock().unwrap() = Some(4);
    Mock::given(method("GET"))
        .and(path("/crm/v2/Contacts"))
        .respond_with(module)
        .mount(&zoho)
        .await;
    let r = w
        .post("/crm/imports", json!({"entity": "contacts", "source": "zoho"}))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let id = r.json["id"].as_str().unwrap().to_owned();
    w.zoho_worker(&zoho).run(&w.next_job().await, None).await.unwrap();
    let r = w.get(&format!("/crm/imports/{id}"), "").await;
    assert_eq!(r.json["status"], "completed", "{}", r.json);
    let counts: Vec<i64> = ["rows_done", "created", "skipped", "failed"]
        .iter()
        .map(|k| r.json[*k].as_i64().unwrap())
        .collect();
    assert_eq!(counts, [450, 445, 1, 4], "{}", r.json);
    assert_eq!(
        w.count(
            "select count(*) from crm_contacts where tenant_id = $1 and email in ('p201@zylker.com', 'p401@zylker.com')"
        )
        .await,
        2
    );
}
