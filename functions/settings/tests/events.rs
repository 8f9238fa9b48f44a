//! The events/ files (what `cargo lambda invoke --data-file` sends) drive the router with the
//! seeded demo data, and each answers what the route promises for the demo API key.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use testkit::{TestApp, event_request, send};

/// Every events/settings file, in the order they run, with the status it must answer.
const EXPECTED: &[(&str, u16)] = &[
    ("get-me.json", 403),       // an API key is not a user
    ("patch-me.json", 403),     // likewise
    ("get-tenants.json", 200),  // the key's own tenant
    ("post-tenants.json", 403), // tenants are created by users
    ("get-settings-team.json", 200),
    ("get-settings-team-invitations.json", 200),
    ("post-settings-team-invitations.json", 201),
    ("delete-settings-team-invitations-id.json", 404), // no such invitation in the seed
    ("patch-settings-team-members-user-id.json", 200), // the demo member becomes a viewer
    ("delete-settings-team-members-user-id.json", 204), // then leaves
    ("post-invitations-token-accept.json", 403),       // accepting needs a user
    ("get-settings-api-keys.json", 200),
    ("post-settings-api-keys.json", 403), // keys are minted by users only
    ("delete-settings-api-keys-id.json", 404),
    ("get-settings-audit-log.json", 200),
];

#[tokio::test]
async fn every_settings_event_answers_as_documented() {
    let app = TestApp::new().await;
    testkit::seed_demo(&app.db.owner).await.unwrap();
    let router = settings::router(app.core.clone());

    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../events/settings");
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
        "every events/settings file needs an expected status here"
    );

    for (file, status) in EXPECTED {
        let r = send(&router, event_request(&format!("settings/{file}"))).await;
        assert_eq!(r.status.as_u16(), *status, "{file}: {}", r.text);
    }
    let audit: i64 = sqlx::query_scalar("select count(*) from audit_log")
        .fetch_one(&app.db.owner)
        .await
        .unwrap();
    assert_eq!(audit, 3, "invitation created, role changed, member removed");
}
