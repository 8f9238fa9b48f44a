//! An export far larger than memory should allow is written to S3 as it is produced: the
//! worker's peak allocation stays near one upload part whatever the row count. Its own test
//! binary, so the counting allocator sees this test alone. Needs `local/up --services-only`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use peakmem_alloc::{INSTRUMENTED_SYSTEM, PeakMemAlloc, PeakMemAllocTrait};
use shared::adapters::s3_upload::PART_BYTES;
use shared::services::crm::jobs::{JobKind, JobMessage};
use std::alloc::System;
use testkit::{TestApp, post};

#[global_allocator]
static GLOBAL: &PeakMemAlloc<System> = &INSTRUMENTED_SYSTEM;

#[tokio::test]
async fn a_large_export_streams_to_s3_in_parts_with_flat_memory() {
    let app = TestApp::new().await;
    let owner = app.user("owner").await;
    let tenant = app.tenant(&owner).await;
    let files = testkit::crm_files(&testkit::moto().await, "exportmem").await;
    // 8,000 contacts with 6,000-character notes: a CSV of ~50 MB.
    sqlx::query(
        "insert into crm_contacts (id, tenant_id, first_name, last_name, email, notes) \
         select gen_random_uuid(), $1, 'First' || g, 'Last' || g, 'c' || g || '@example.com', \
                substr(repeat(md5(g::text) || md5((g * 7)::text), 100), 1, 6000) \
         from generate_series(1, 8000) g",
    )
    .bind(tenant)
    .execute(&app.db.owner)
    .await
    .unwrap();
    let api = crm_contacts::router(app.core.clone(), files.clone());
    let r = post("/crm/exports")
        .bearer(&owner.token)
        .tenant(tenant)
        .json(serde_json::json!({"entity": "contacts", "filters": {}}))
        .send(&api)
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let id: uuid::Uuid = r.json["id"].as_str().unwrap().parse().unwrap();
    let worker = crm_import::Worker {
        db: app.core.db.clone(),
        files: files.clone(),
        connectors: testkit::connectors(&app.core.db, []),
        options: Default::default(),
        retry: Default::default(),
    };
    let message = JobMessage {
        kind: JobKind::Export,
        tenant_id: tenant,
        id,
    };

    GLOBAL.reset_peak_memory();
    worker.run(&message, None).await.unwrap();
    let peak = GLOBAL.get_peak_memory();

    let (status, rows, size, key): (String, i64, i64, String) =
        sqlx::query_as("select status, rows, bytes, object_key from crm_exports where id = $1")
            .bind(id)
            .fetch_one(&app.db.owner)
            .await
            .unwrap();
    assert_eq!((status.as_str(), rows), ("completed", 8000));
    let head = files
        .s3
        .head_object()
        .bucket(&files.bucket)
        .key(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(head.content_length(), Some(size));
    assert!(size > 45_000_000, "{size}");
    let parts = head
        .e_tag()
        .unwrap()
        .trim_matches('"')
        .rsplit('-')
        .next()
        .unwrap()
        .parse::<u32>()
        .unwrap();
    assert!(parts >= 5, "uploaded in parts: {parts}");
    println!(
        "export of {size} bytes in {parts} parts: peak allocation {} MiB",
        peak / (1024 * 1024)
    );
    assert!(
        peak < 3 * PART_BYTES,
        "peak {peak} bytes while writing {size}: memory must stay near one part"
    );
}
