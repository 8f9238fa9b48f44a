//! `bench-crm import [ROWS]`: a CSV of ROWS contacts (default 100,000) imported end to end —
//! the file in the bucket (moto), `POST /crm/imports`, the job taken from the queue, the
//! worker's run (S3 read, parse, validate, dedupe, company links, chunked commits with the
//! timeline and progress) — vs the baseline of the same rows bulk-inserted with the statement
//! the worker uses (1,000 per transaction, nothing else). Then the same file again with
//! `dedupe: update` (every row matches). Prints rows/s and the ratio.
use serde_json::{Value, json};
use shared::adapters::pg;
use shared::domain::{Actor, Role, Scope};
use sqlx::types::Json;
use std::time::Instant;
use testkit::{TestApp, post};

fn csv(rows: usize) -> Vec<u8> {
    let mut out = b"First Name,Last Name,Email,Phone,Company,Tags,City,Country,Notes\n".to_vec();
    for i in 0..rows {
        out.extend(
            format!(
                "First{i},\"Last, {i}\",person{i}@mail{}.example,+49 30 {:07},Company {},{},Berlin,DE,\"Met at fair {}\nfollow up\"\n",
                i % 97,
                i,
                i % 1000,
                if i % 5 == 0 { "vip;fair" } else { "fair" },
                i % 12
            )
            .into_bytes(),
        );
    }
    out
}

fn json_rows(rows: usize) -> Vec<Value> {
    (0..rows)
        .map(|i| {
            json!({"id": uuid::Uuid::now_v7(), "first_name": format!("First{i}"), "last_name": format!("Last, {i}"),
                   "email": format!("person{i}@mail{}.example", i % 97), "phone": format!("+49 30 {i:07}"),
                   "mobile": null, "title": null, "company_id": null, "owner_id": null, "lifecycle_stage": "lead",
                   "tags": if i % 5 == 0 { vec!["vip", "fair"] } else { vec!["fair"] },
                   "address": {"city": "Berlin", "country": "DE"}, "notes": format!("Met at fair {}\nfollow up", i % 12),
                   "source": "import", "custom": {}})
        })
        .collect()
}

pub async fn run(rows: usize) {
    println!("CRM import benchmark, {rows} rows, {}", testkit::machine());
    let app = TestApp::new().await;
    let owner = app.user("bench").await;
    let tenant = app.tenant(&owner).await;
    app.subscribe(tenant, "scale").await;
    let files = testkit::crm_files(&testkit::moto().await, "bench").await;
    let api = crm_contacts::router(app.core.clone(), files.clone());
    let worker = crm_import::Worker {
        db: app.core.db.clone(),
        files: files.clone(),
        connectors: testkit::connectors(&app.core.db, []),
        options: Default::default(),
        retry: Default::default(),
    };
    let file = csv(rows);
    println!("  file: {:.1} MiB", file.len() as f64 / 1048576.0);
    let key = format!("imports/{tenant}/{}.csv", uuid::Uuid::now_v7());
    files
        .s3
        .put_object()
        .bucket(&files.bucket)
        .key(&key)
        .body(file.into())
        .send()
        .await
        .unwrap();

    let mut timed = Vec::new();
    for (label, dedupe) in [("import (new rows)", "skip"), ("import again (update)", "update")] {
        let r = post("/crm/imports")
            .bearer(&owner.token)
            .tenant(tenant)
            .json(json!({"entity": "contacts", "upload_key": key, "dedupe": dedupe}))
            .send(&api)
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        let out = files
            .jobs
            .client()
            .receive_message()
            .queue_url(files.jobs.url())
            .wait_time_seconds(2)
            .send()
            .await
            .unwrap();
        let message = &out.messages()[0];
        files
            .jobs
            .client()
            .delete_message()
            .queue_url(files.jobs.url())
            .receipt_handle(message.receipt_handle().unwrap())
            .send()
            .await
            .unwrap();
        let job = serde_json::from_str(message.body().unwrap()).unwrap();
        let start = Instant::now();
        worker.run(&job, None).await.unwrap();
        let secs = start.elapsed().as_secs_f64();
        let check = testkit::get(&format!("/crm/imports/{}", r.json["id"].as_str().unwrap()))
            .bearer(&owner.token)
            .tenant(tenant)
            .send(&api)
            .await;
        let done = &check.json;
        assert_eq!(done["status"], "completed");
        println!(
            "  {label:<24} {:>8.0} rows/s  ({secs:.1} s; created {}, updated {}, failed {})",
            rows as f64 / secs,
            done["created"],
            done["updated"],
            done["failed"]
        );
        timed.push(rows as f64 / secs);
    }

    // Baseline: the same rows, bulk-inserted in the worker's statement, 1,000 per transaction.
    let base_tenant = app.tenant(&owner).await;
    app.subscribe(base_tenant, "scale").await;
    let scope = Scope {
        actor: Actor::User {
            user_id: owner.id,
            email: owner.email.clone(),
        },
        tenant: Some((base_tenant, Role::Owner)),
        request_id: "bench".into(),
    };
    let data = json_rows(rows);
    let start = Instant::now();
    for chunk in data.chunks(1000) {
        let mut tx = pg::begin(&app.core.db, &scope).await.unwrap();
        sqlx::query(
            "insert into crm_contacts (id, tenant_id, first_name, last_name, email, phone, mobile, title, company_id, \
             owner_id, lifecycle_stage, tags, address, notes, source, custom) \
             select r.id, $1, r.first_name, r.last_name, r.email, r.phone, r.mobile, r.title, r.company_id, \
             r.owner_id, r.lifecycle_stage, r.tags, r.address, r.notes, r.source, r.custom \
             from jsonb_to_recordset($2) as r(id uuid, first_name text, last_name text, email text, phone text, \
             mobile text, title text, company_id uuid, owner_id uuid, lifecycle_stage text, tags text[], \
             address jsonb, notes text, source text, custom jsonb)",
        )
        .bind(base_tenant)
        .bind(Json(chunk))
        .execute(&mut *tx)
        .await
        .unwrap();
        tx.commit().await.unwrap();
    }
    let base = rows as f64 / start.elapsed().as_secs_f64();
    println!("  {:<24} {base:>8.0} rows/s  (bulk INSERT only)", "baseline");
    println!(
        "  import / baseline: {:.2}x (new rows), {:.2}x (updates)",
        timed[0] / base,
        timed[1] / base
    );
}
