//! Tenant isolation: another tenant's templates, segments, suppressions and contacts answer 404
//! on every route, and row-level security holds on the three tables even for a query that
//! forgets its tenant.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

mod common;

use common::{id, world};
use serde_json::json;
use shared::domain::{Actor, Role, Scope};
use uuid::Uuid;

#[tokio::test]
async fn another_tenants_ids_answer_404_and_change_nothing() {
    let w = world().await;
    let template = w
        .created(
            "/marketing/templates",
            json!({"name": "Mine", "subject": "Hi", "body": "<p>Hi</p>"}),
        )
        .await;
    let segment = w.created("/marketing/segments", json!({"name": "Mine"})).await;
    let suppression = w
        .created("/marketing/suppressions", json!({"email": "mine@example.com"}))
        .await;
    let contact = w
        .contact(w.tenant, json!({"first_name": "Mine", "email": "c@example.com"}))
        .await;

    let (intruder, theirs) = w.other_tenant().await;
    let as_them = |r: testkit::Req| r.bearer(&intruder.token).tenant(theirs);
    let t = format!("/marketing/templates/{}", id(&template));
    let s = format!("/marketing/segments/{}", id(&segment));
    let u = format!("/marketing/suppressions/{}", id(&suppression));
    for r in [
        as_them(testkit::get(&t)),
        as_them(testkit::patch(&t)).json(json!({"name": "Theirs"})),
        as_them(testkit::delete(&t)),
        as_them(testkit::post(&format!("{t}/preview"))).json(json!({})),
        as_them(testkit::get(&s)),
        as_them(testkit::patch(&s)).json(json!({"name": "Theirs"})),
        as_them(testkit::delete(&s)),
        as_them(testkit::get(&format!("{s}/count"))),
        as_them(testkit::delete(&u)),
    ] {
        r.send(&w.api).await.problem(404);
    }
    // Their own template previewed for this tenant's contact: 404 too.
    let own = as_them(testkit::post("/marketing/templates"))
        .json(json!({"name": "Theirs", "subject": "Hi", "body": "<p>Hi</p>"}))
        .send(&w.api)
        .await;
    assert_eq!(own.status, 201, "{}", own.text);
    as_them(testkit::post(&format!(
        "/marketing/templates/{}/preview",
        id(&own.json)
    )))
    .json(json!({"contact_id": contact}))
    .send(&w.api)
    .await
    .problem(404);
    // Naming this tenant without belonging to it: 404 as well.
    testkit::get(&t)
        .bearer(&intruder.token)
        .tenant(w.tenant)
        .send(&w.api)
        .await
        .problem(404);
    // Their lists show nothing of this tenant's.
    for list in ["/marketing/templates", "/marketing/segments", "/marketing/suppressions"] {
        let r = as_them(testkit::get(list)).send(&w.api).await;
        assert_eq!(r.status, 200, "{}", r.text);
        for mine in [id(&template), id(&segment), id(&suppression)] {
            assert!(!r.text.contains(mine), "{list} shows {mine}");
        }
    }
    // Nothing of this tenant's changed.
    assert_eq!(w.get(&t, "").await.json["name"], "Mine");
    assert_eq!(w.get(&s, "").await.json["name"], "Mine");
    assert_eq!(w.app.count("marketing_suppressions").await, 1);
    // And the same address may be suppressed by each tenant on its own.
    let r = as_them(testkit::post("/marketing/suppressions"))
        .json(json!({"email": "MINE@example.com"}))
        .send(&w.api)
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
}

#[tokio::test]
async fn row_level_security_holds_on_the_marketing_tables() {
    let w = world().await;
    let (other_owner, other) = w.other_tenant().await;
    for (tenant, n) in [(w.tenant, 2), (other, 1)] {
        for i in 0..n {
            let unique = Uuid::now_v7();
            sqlx::query(
                "insert into marketing_templates (id, tenant_id, name, subject, format, body) \
                 values ($1, $2, 'T', 'S', 'html', '<p>x</p>')",
            )
            .bind(unique)
            .bind(tenant)
            .execute(&w.app.db.owner)
            .await
            .unwrap();
            sqlx::query("insert into marketing_segments (id, tenant_id, name) values ($1, $2, $3)")
                .bind(unique)
                .bind(tenant)
                .bind(format!("S{i}"))
                .execute(&w.app.db.owner)
                .await
                .unwrap();
            w.suppression(tenant, &format!("{i}@example.com"), "manual").await;
        }
    }
    let scope = Scope {
        actor: Actor::User {
            user_id: other_owner.id,
            email: other_owner.email.clone(),
        },
        tenant: Some((other, Role::Owner)),
        request_id: "rls".into(),
    };
    for table in ["marketing_templates", "marketing_segments", "marketing_suppressions"] {
        let mut tx = shared::adapters::pg::begin(&w.app.db.app, &scope).await.unwrap();
        let visible: Vec<Uuid> = sqlx::query_scalar(&format!("select tenant_id from {table}"))
            .fetch_all(&mut *tx)
            .await
            .unwrap();
        assert_eq!(
            visible,
            [other],
            "{table}: only the other tenant's row, with no WHERE clause"
        );
        let touched = sqlx::query(&format!("delete from {table}"))
            .execute(&mut *tx)
            .await
            .unwrap()
            .rows_affected();
        assert_eq!(touched, 1, "{table}");
        tx.rollback().await.unwrap();
        // Writing a row of another tenant is refused by the policy.
        let mut tx = shared::adapters::pg::begin(&w.app.db.app, &scope).await.unwrap();
        let forged = match table {
            "marketing_templates" => sqlx::query(
                "insert into marketing_templates (id, tenant_id, name, subject, format, body) \
                 values ($1, $2, 'T', 'S', 'html', 'x')",
            ),
            "marketing_segments" => {
                sqlx::query("insert into marketing_segments (id, tenant_id, name) values ($1, $2, 'Forged')")
            }
            _ => sqlx::query(
                "insert into marketing_suppressions (id, tenant_id, email, reason) values ($1, $2, 'f@example.com', 'manual')",
            ),
        }
        .bind(Uuid::now_v7())
        .bind(w.tenant)
        .execute(&mut *tx)
        .await;
        assert!(forged.is_err(), "{table}: a row of another tenant is refused");
        tx.rollback().await.unwrap();
        // No tenant set: nothing visible.
        let n: i64 = sqlx::query_scalar(&format!("select count(*) from {table}"))
            .fetch_one(&w.app.db.app)
            .await
            .unwrap();
        assert_eq!(n, 0, "{table}");
    }
    assert_eq!(w.app.count("marketing_suppressions").await, 3, "nothing deleted");
}
