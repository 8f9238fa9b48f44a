//! The events/ files (what `cargo lambda invoke --data-file` sends) drive the router with the
//! seeded demo data — plus the template, segment, suppression and campaign their placeholder ids
//! name, a SendGrid connector and a VIP contact — and each answers what its route promises for
//! the demo API key (an admin's).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use testkit::{DEMO_TENANT, TestApp, event_request, send};

/// Every events/marketing-campaigns file, in the order they run, with the status it answers.
const EXPECTED: &[(&str, u16)] = &[
    ("get-marketing-templates.json", 200),
    ("post-marketing-templates.json", 201),
    ("get-marketing-templates-id.json", 200),
    ("patch-marketing-templates-id.json", 200),
    ("post-marketing-templates-id-preview.json", 200),
    ("delete-marketing-templates-id.json", 204),
    ("get-marketing-segments.json", 200),
    ("post-marketing-segments.json", 201),
    ("get-marketing-segments-id.json", 200),
    ("patch-marketing-segments-id.json", 200),
    ("get-marketing-segments-id-count.json", 200),
    ("delete-marketing-segments-id.json", 204),
    ("get-marketing-suppressions.json", 200),
    ("post-marketing-suppressions.json", 201),
    ("delete-marketing-suppressions-id.json", 204),
    ("get-marketing-campaigns.json", 200),
    ("post-marketing-campaigns.json", 201),
    ("get-marketing-campaigns-id.json", 200),
    ("patch-marketing-campaigns-id.json", 200),
    ("post-marketing-campaigns-id-test.json", 201),
    ("post-marketing-campaigns-id-schedule.json", 200),
    ("post-marketing-campaigns-id-pause.json", 200),
    ("post-marketing-campaigns-id-resume.json", 200),
    ("get-marketing-campaigns-id-stats.json", 200),
    ("post-marketing-campaigns-id-cancel.json", 200),
    ("delete-marketing-campaigns-id.json", 204),
    // A token of the local stack's key for a recipient no test seeds: the not-found page.
    ("get-public-unsubscribe-token.json", 404),
    ("post-public-unsubscribe-token.json", 404),
    ("get-public-view-token.json", 404),
];

#[tokio::test]
async fn every_marketing_event_answers_as_documented() {
    let app = TestApp::new().await;
    testkit::seed_demo(&app.db.owner).await.unwrap();
    for sql in [
        "insert into marketing_templates (id, tenant_id, name, subject, format, body) values \
         ('00000000-0000-4000-8000-0000000000e5', $1::uuid, 'Placeholder', 'Hello', 'html', \
          '<p>Hello {{ contact.first_name }}</p>')",
        "insert into marketing_segments (id, tenant_id, name, filter) values \
         ('00000000-0000-4000-8000-0000000000e6', $1::uuid, 'Placeholder', '{\"tags\": [\"vip\"]}')",
        "insert into marketing_suppressions (id, tenant_id, email, reason) values \
         ('00000000-0000-4000-8000-0000000000e7', $1::uuid, 'placeholder@example.com', 'manual')",
        "insert into marketing_templates (id, tenant_id, name, subject, format, body) values \
         ('00000000-0000-4000-8000-0000000000e9', $1::uuid, 'Campaign placeholder', 'Spring', 'html', '<p>Hi</p>')",
        "insert into marketing_campaigns (id, tenant_id, name, template_id, from_name, from_email, audience) values \
         ('00000000-0000-4000-8000-0000000000e8', $1::uuid, 'Placeholder', '00000000-0000-4000-8000-0000000000e9', \
          'Demo Co', 'news@demo.local', '{\"segment_ids\": [], \"tags\": [\"vip\"]}')",
        "insert into connectors (tenant_id, kind, secret, webhook_key) values ($1::uuid, 'sendgrid', '\\x00', \
         md5('demo sendgrid'))",
        "insert into crm_contacts (id, tenant_id, first_name, email, tags) values \
         ('00000000-0000-4000-8000-0000000000ea', $1::uuid, 'Vic', 'vic@example.com', '{vip}')",
    ] {
        sqlx::query(sql).bind(DEMO_TENANT).execute(&app.db.owner).await.unwrap();
    }
    let router = marketing_campaigns::router(app.core.clone(), testkit::link_keys());

    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../events/marketing-campaigns");
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".json"))
        .collect();
    files.sort();
    let mut listed: Vec<String> = EXPECTED.iter().map(|(f, _)| (*f).to_owned()).collect();
    listed.sort();
    assert_eq!(
        files, listed,
        "every events/marketing-campaigns file needs an expected status here"
    );

    for (file, status) in EXPECTED {
        let r = send(&router, event_request(&format!("marketing-campaigns/{file}"))).await;
        assert_eq!(r.status.as_u16(), *status, "{file}: {}", r.text);
    }
    let stored: String = sqlx::query_scalar("select email from marketing_suppressions")
        .fetch_one(&app.db.owner)
        .await
        .unwrap();
    assert_eq!(stored, "no.more.mail@example.com");
}
