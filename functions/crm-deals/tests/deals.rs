//! crm-deals against a real Postgres: pipelines and stages, deals and the board (order, counts,
//! sums per currency, weighted sums), moves between neighbours (also 50 at once), outcomes,
//! history, forecast, and tenant isolation.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use axum::Router;
use serde_json::{Value, json};
use shared::domain::Role;
use std::collections::HashSet;
use testkit::{Resp, delete, get, patch, post};
use uuid::Uuid;

/// The CRM world with crm-deals under test (and crm-contacts beside it), and deals' own
/// helpers; cloned into concurrent tasks.
#[derive(Clone)]
struct World {
    crm: std::sync::Arc<testkit::crm::World>,
    contacts: Router,
}

impl std::ops::Deref for World {
    type Target = testkit::crm::World;

    fn deref(&self) -> &Self::Target {
        &self.crm
    }
}

async fn world() -> World {
    let crm = testkit::crm::World::new("deals", |core, _| crm_deals::router(core)).await;
    let contacts = crm_contacts::router(crm.app.core.clone(), crm.files.clone());
    World {
        crm: std::sync::Arc::new(crm),
        contacts,
    }
}

impl World {
    async fn pipeline(&self, name: &str) -> Value {
        let r = self
            .send(post("/crm/pipelines").json(json!({"name": name, "stages": [
                {"name": "Lead", "probability": 10}, {"name": "Proposal", "probability": 50},
                {"name": "Negotiation", "probability": 75}]})))
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        r.json
    }

    async fn deal(&self, stage: &str, title: &str, amount: i64, currency: &str) -> Value {
        let r = self
            .send(
                post("/crm/deals").json(json!({"stage_id": stage, "title": title, "amount_minor": amount,
                "currency": currency})),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        r.json
    }

    async fn board(&self, pipeline: &str) -> Value {
        let r = self.send(get(&format!("/crm/pipelines/{pipeline}/board"))).await;
        assert_eq!(r.status, 200, "{}", r.text);
        r.json
    }

    async fn column(&self, pipeline: &str, stage: usize) -> Vec<String> {
        self.board(pipeline).await["stages"][stage]["deals"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["title"].as_str().unwrap().to_owned())
            .collect()
    }

    async fn move_to(&self, deal: &Value, stage: &str, after: Option<&Value>, before: Option<&Value>) -> Resp {
        self.send(
            post(&format!("/crm/deals/{}/move", id(deal))).json(json!({"stage_id": stage,
            "after_id": after.map(id), "before_id": before.map(id)})),
        )
        .await
    }
}

fn id(v: &Value) -> &str {
    v["id"].as_str().unwrap()
}

fn stage(p: &Value, i: usize) -> String {
    p["stages"][i]["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn the_board_orders_deals_and_sums_them_per_currency_to_the_cent() {
    let w = world().await;
    let p = w.pipeline("Sales").await;
    let (lead, proposal) = (stage(&p, 0), stage(&p, 1));
    let a = w.deal(&proposal, "A", 10_001, "EUR").await;
    let b = w.deal(&proposal, "B", 20_000, "EUR").await;
    let c = w.deal(&proposal, "C", 999, "USD").await;
    w.deal(&lead, "L", 5, "EUR").await;
    let board = w.board(id(&p)).await;
    let col = &board["stages"][1];
    assert_eq!(col["count"], 3);
    // 50% of 30001 cents is 15000.5: rounded half up to 15001; 50% of 999 is 499.5 -> 500.
    assert_eq!(
        col["totals"],
        json!([{"currency": "EUR", "count": 2, "amount_minor": 30001, "weighted_minor": 15001},
               {"currency": "USD", "count": 1, "amount_minor": 999, "weighted_minor": 500}])
    );
    assert_eq!(w.column(id(&p), 1).await, ["A", "B", "C"]);
    // 10% of 5 is 0.5 -> 1.
    assert_eq!(w.board(id(&p)).await["stages"][0]["totals"][0]["weighted_minor"], 1);

    // Between two neighbours, to the top, to the bottom, into another stage.
    assert_eq!(w.move_to(&c, &proposal, Some(&a), Some(&b)).await.status, 200);
    assert_eq!(w.column(id(&p), 1).await, ["A", "C", "B"]);
    w.move_to(&b, &proposal, None, Some(&a)).await;
    assert_eq!(w.column(id(&p), 1).await, ["B", "A", "C"]);
    w.move_to(&b, &proposal, None, None).await;
    assert_eq!(w.column(id(&p), 1).await, ["A", "C", "B"]);
    w.move_to(&a, &proposal, Some(&b), None).await;
    assert_eq!(w.column(id(&p), 1).await, ["C", "B", "A"]);
    let r = w.move_to(&a, &lead, None, None).await;
    assert_eq!(r.json["stage_name"], "Lead");
    assert_eq!(w.column(id(&p), 0).await, ["L", "A"]);
    // History: created in Proposal, then moved to Lead.
    let history: Vec<(Option<Uuid>, Option<Uuid>)> =
        sqlx::query_as("select from_stage, to_stage from crm_deal_history where deal_id = $1::uuid order by at, id")
            .bind(id(&a))
            .fetch_all(&w.app.db.owner)
            .await
            .unwrap();
    let (lead_id, proposal_id) = (Uuid::parse_str(&lead).unwrap(), Uuid::parse_str(&proposal).unwrap());
    assert_eq!(history, [(None, Some(proposal_id)), (Some(proposal_id), Some(lead_id))]);

    // Bad moves change nothing: a neighbour of another stage, the moved deal as its own
    // neighbour, neighbours the wrong way round (the deal "after" is below the deal "before").
    let l = w.board(id(&p)).await["stages"][0]["deals"][0].clone();
    let r = w.move_to(&c, &proposal, Some(&l), None).await;
    assert_eq!(r.error_fields(), ["after_id"]);
    let r = w.move_to(&c, &proposal, Some(&b), Some(&c)).await;
    assert_eq!(r.error_fields(), ["before_id"]);
    assert_eq!(r.json["errors"][0]["code"], "not_in_stage");
    assert_eq!(w.column(id(&p), 1).await, ["C", "B"]);
    let r = w.move_to(&l, &proposal, Some(&b), Some(&c)).await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(r.error_fields(), ["before_id"]);
    assert_eq!(r.json["errors"][0]["code"], "not_below_after");
    assert_eq!(w.column(id(&p), 1).await, ["C", "B"]);
    assert_eq!(w.column(id(&p), 0).await, ["L", "A"]);
    let r = w
        .send(post(&format!("/crm/deals/{}/move", id(&c))).json(json!({"stage_id": Uuid::new_v4()})))
        .await;
    r.problem(404);
}

#[tokio::test]
async fn fifty_concurrent_moves_never_corrupt_the_order() {
    let w = world().await;
    let p = w.pipeline("Busy").await;
    let (from, to) = (stage(&p, 0), stage(&p, 1));
    let mut deals = Vec::new();
    for i in 0..50 {
        deals.push(w.deal(&from, &format!("D{i:02}"), 100, "EUR").await);
    }
    // 50 moves at once: the even deals go to the bottom of the other stage, each odd one goes
    // just below the even deal before it (which may still be moving).
    let mut tasks = tokio::task::JoinSet::new();
    for (i, deal) in deals.iter().enumerate() {
        let (w, deal, to) = (w.clone(), deal.clone(), to.clone());
        let after = (i % 2 == 1).then(|| deals[i - 1].clone());
        tasks.spawn(async move {
            // The neighbour may not be in the stage yet (422): try again, as a client would, a
            // bounded number of times, so a move that never succeeds fails the test.
            for attempt in 0.. {
                let r = w.move_to(&deal, &to, after.as_ref(), None).await;
                if r.status == 422 && attempt < 500 {
                    tokio::task::yield_now().await;
                    continue;
                }
                assert_eq!(r.status, 200, "{}", r.text);
                break;
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    let board = w.board(id(&p)).await;
    assert_eq!(board["stages"][0]["count"], 0);
    assert_eq!(board["stages"][1]["count"], 50);
    let column: Vec<String> = board["stages"][1]["deals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["title"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(column.iter().collect::<HashSet<_>>().len(), 50, "every deal once");
    // Each odd deal sits right below its even partner.
    for pair in 0..25 {
        let even = column.iter().position(|t| *t == format!("D{:02}", 2 * pair)).unwrap();
        assert_eq!(column[even + 1], format!("D{:02}", 2 * pair + 1), "{column:?}");
    }
    // The ranks are distinct, valid keys, and the board's order is theirs.
    let ranks: Vec<String> =
        sqlx::query_scalar("select rank from crm_deals where stage_id = $1::uuid order by rank, id")
            .bind(&to)
            .fetch_all(&w.app.db.owner)
            .await
            .unwrap();
    assert_eq!(ranks.iter().collect::<HashSet<_>>().len(), 50);
    assert!(ranks.iter().all(|r| shared::domain::rank::is_valid(r)));
    let history: i64 = sqlx::query_scalar("select count(*) from crm_deal_history where to_stage = $1::uuid")
        .bind(&to)
        .fetch_one(&w.app.db.owner)
        .await
        .unwrap();
    assert_eq!(history, 50, "one history entry per move into the stage");
}

#[tokio::test]
async fn stages_are_edited_and_deleting_one_with_deals_needs_a_target() {
    let w = world().await;
    let p = w.pipeline("Flow").await;
    let (lead, proposal, nego) = (stage(&p, 0), stage(&p, 1), stage(&p, 2));
    w.deal(&lead, "X", 1, "EUR").await;
    w.deal(&proposal, "P1", 1, "EUR").await;
    w.deal(&proposal, "P2", 1, "EUR").await;
    w.deal(&nego, "N1", 1, "EUR").await;
    let base = format!("/crm/pipelines/{}/stages", id(&p));
    // Add one at position 1, rename and move another.
    let r = w
        .send(post(&base).json(json!({"name": "Demo", "probability": 30, "position": 1})))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let names = |p: &Value| -> Vec<String> {
        p["stages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(names(&r.json), ["Lead", "Demo", "Proposal", "Negotiation"]);
    let r = w
        .send(patch(&format!("{base}/{nego}")).json(json!({"name": "Closing", "probability": 90, "position": 0})))
        .await;
    assert_eq!(names(&r.json), ["Closing", "Lead", "Demo", "Proposal"]);
    let r = w
        .send(patch(&format!("{base}/{nego}")).json(json!({"probability": 101})))
        .await;
    assert_eq!(r.error_fields(), ["probability"]);

    // Proposal holds deals: a target is needed, of the same pipeline.
    let r = w.send(delete(&format!("{base}/{proposal}"))).await;
    assert_eq!(r.problem(409)["type"], "/problems/stage-has-deals");
    let other = w.pipeline("Other").await;
    let r = w
        .send(delete(&format!("{base}/{proposal}")).query(&format!("move_deals_to={}", stage(&other, 0))))
        .await;
    assert_eq!(r.error_fields(), ["move_deals_to"]);
    let r = w
        .send(delete(&format!("{base}/{proposal}")).query(&format!("move_deals_to={nego}")))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(names(&r.json), ["Closing", "Lead", "Demo"]);
    // They went to the bottom of the target, in their order.
    let closing = w.column(id(&p), 0).await;
    assert_eq!(closing, ["N1", "P1", "P2"]);
    // The pipeline holds deals: it stays.
    let r = w.send(delete(&format!("/crm/pipelines/{}", id(&p)))).await;
    assert_eq!(r.problem(409)["type"], "/problems/pipeline-has-deals");
    // An empty pipeline goes; its last stage cannot.
    let lone = w
        .send(post("/crm/pipelines").json(json!({"name": "Lone", "stages": [{"name": "Only", "probability": 5}]})))
        .await
        .json;
    let r = w
        .send(delete(&format!(
            "/crm/pipelines/{}/stages/{}",
            id(&lone),
            stage(&lone, 0)
        )))
        .await;
    assert_eq!(r.problem(409)["type"], "/problems/last-stage");
    assert_eq!(
        w.send(delete(&format!("/crm/pipelines/{}", id(&lone)))).await.status,
        204
    );
    // Names are unique; stages are needed.
    let r = w
        .send(post("/crm/pipelines").json(json!({"name": "Flow", "stages": [{"name": "a", "probability": 1}]})))
        .await;
    assert_eq!(r.problem(409)["type"], "/problems/pipeline-exists");
    let r = w
        .send(post("/crm/pipelines").json(json!({"name": "", "stages": []})))
        .await;
    let mut fields = r.error_fields();
    fields.sort();
    assert_eq!(fields, ["name", "stages"]);
}

#[tokio::test]
async fn outcomes_are_stamped_validated_and_shown_on_the_contact() {
    let w = world().await;
    let p = w.pipeline("Sales").await;
    let contact = post("/crm/contacts")
        .bearer(&w.owner.token)
        .tenant(w.tenant)
        .json(json!({"first_name": "Ada"}))
        .send(&w.contacts)
        .await
        .json;
    let r = w
        .send(post("/crm/deals").json(
            json!({"stage_id": stage(&p, 1), "title": "Big one", "amount_minor": 1_000_000,
            "currency": "eur", "contact_id": id(&contact), "expected_close": "2030-01-15"}),
        ))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let deal = r.json;
    assert_eq!(deal["currency"], "EUR");
    let path = format!("/crm/deals/{}", id(&deal));

    // Bad input: every field at once, nothing stored.
    let r = w
        .send(
            post("/crm/deals").json(json!({"stage_id": Uuid::new_v4(), "title": "", "amount_minor": -1,
            "currency": "euro", "contact_id": Uuid::new_v4(), "status": "lost"})),
        )
        .await;
    let mut fields = r.error_fields();
    fields.sort();
    assert_eq!(
        fields,
        ["amount_minor", "contact_id", "currency", "lost_reason", "title"]
    );
    let r = w.send(patch(&path).json(json!({"stage_id": stage(&p, 0)}))).await;
    r.problem(422);
    let r = w
        .send(patch(&path).json(json!({"amount_minor": 10_000_000_000_001_i64, "expected_close": "0000-01-01"})))
        .await;
    let mut fields = r.error_fields();
    fields.sort();
    assert_eq!(fields, ["amount_minor", "expected_close"]);

    // Lost needs a reason; won stamps the time; reopening clears it.
    let r = w.send(patch(&path).json(json!({"status": "lost"}))).await;
    assert_eq!(r.error_fields(), ["lost_reason"]);
    let r = w
        .send(patch(&path).json(json!({"status": "won"})).header("if-match", "\"1\""))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.json["won_at"].is_string());
    let won_at = r.json["won_at"].clone();
    let r = w.send(patch(&path).json(json!({"title": "Big one!"}))).await;
    assert_eq!(r.json["won_at"], won_at, "kept while the outcome stays");
    w.send(patch(&path).json(json!({"title": "x"})).header("if-match", "\"1\""))
        .await
        .problem(412);
    let r = w.send(patch(&path).json(json!({"status": "open"}))).await;
    assert_eq!(r.json["won_at"], Value::Null);
    // A won deal leaves the board.
    w.send(patch(&path).json(json!({"status": "won"}))).await;
    assert_eq!(w.board(id(&p)).await["stages"][1]["count"], 0);

    // The contact shows the deal and its outcomes on the timeline.
    let d = get(&format!("/crm/contacts/{}", id(&contact)))
        .bearer(&w.owner.token)
        .tenant(w.tenant)
        .send(&w.contacts)
        .await;
    assert_eq!(d.json["deals"][0]["title"], "Big one!");
    assert_eq!(d.json["deals"][0]["status"], "won");
    let kinds: Vec<&str> = d.json["activity"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["deal_won", "deal_reopened", "deal_won", "deal_created", "created"]
    );
}

#[tokio::test]
async fn the_forecast_weights_open_deals_and_counts_wins() {
    let w = world().await;
    let p = w.pipeline("Sales").await;
    let today = chrono::Utc::now().date_naive();
    let next_month = today.checked_add_months(chrono::Months::new(1)).unwrap();
    for (title, stage_index, amount, close) in [
        ("now-50", 1, 10_000, today),
        ("now-75", 2, 10_000, today),
        ("next-10", 0, 3_333, next_month),
    ] {
        w.send(
            post("/crm/deals").json(json!({"stage_id": stage(&p, stage_index), "title": title,
            "amount_minor": amount, "currency": "EUR", "expected_close": close})),
        )
        .await;
    }
    let won = w.deal(&stage(&p, 2), "won", 7_000, "EUR").await;
    w.send(patch(&format!("/crm/deals/{}", id(&won))).json(json!({"status": "won"})))
        .await;
    let lost = w.deal(&stage(&p, 2), "lost", 1, "EUR").await;
    w.send(patch(&format!("/crm/deals/{}", id(&lost))).json(json!({"status": "lost", "lost_reason": "price"})))
        .await;
    let r = w.send(get(&format!("/crm/pipelines/{}/forecast", id(&p)))).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let f = r.json;
    assert_eq!(f["win_rate"], 0.5);
    let month = |m: chrono::NaiveDate| m.format("%Y-%m").to_string();
    let this = f["months"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["month"] == month(today))
        .unwrap();
    assert_eq!(this["expected_weighted_minor"], 12_500, "5000 + 7500");
    assert_eq!(this["expected_minor"], 20_000);
    assert_eq!(this["won_minor"], 7_000);
    let next = f["months"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["month"] == month(next_month))
        .unwrap();
    assert_eq!(next["expected_weighted_minor"], 333, "10% of 3333 = 333.3");
}

#[tokio::test]
async fn another_tenants_pipelines_stages_and_deals_answer_404() {
    let w = world().await;
    let p = w.pipeline("Mine").await;
    let deal = w.deal(&stage(&p, 0), "Secret", 100, "EUR").await;
    let other = w.app.user("other").await;
    let other_tenant = w.app.tenant(&other).await;
    let as_other = |r: testkit::Req| r.bearer(&other.token).tenant(other_tenant);
    for path in [
        format!("/crm/pipelines/{}", id(&p)),
        format!("/crm/pipelines/{}/board", id(&p)),
        format!("/crm/pipelines/{}/forecast", id(&p)),
        format!("/crm/deals/{}", id(&deal)),
    ] {
        as_other(get(&path)).send(&w.api).await.problem(404);
    }
    as_other(post(&format!("/crm/deals/{}/move", id(&deal))))
        .json(json!({"stage_id": stage(&p, 1)}))
        .send(&w.api)
        .await
        .problem(404);
    as_other(delete(&format!("/crm/pipelines/{}/stages/{}", id(&p), stage(&p, 1))))
        .send(&w.api)
        .await
        .problem(404);
    // Their deal cannot move into our stage, nor start in it.
    let theirs = as_other(post("/crm/pipelines"))
        .json(json!({"name": "Theirs", "stages": [{"name": "S", "probability": 1}]}))
        .send(&w.api)
        .await
        .json;
    let their_deal = as_other(post("/crm/deals"))
        .json(json!({"stage_id": stage(&theirs, 0), "title": "T", "currency": "EUR"}))
        .send(&w.api)
        .await
        .json;
    as_other(post(&format!("/crm/deals/{}/move", id(&their_deal))))
        .json(json!({"stage_id": stage(&p, 1)}))
        .send(&w.api)
        .await
        .problem(404);
    let r = as_other(post("/crm/deals"))
        .json(json!({"stage_id": stage(&p, 0), "title": "T", "currency": "EUR"}))
        .send(&w.api)
        .await;
    assert_eq!(r.error_fields(), ["stage_id"]);
    let listed = as_other(get("/crm/deals")).send(&w.api).await;
    assert_eq!(listed.json["items"].as_array().unwrap().len(), 1);
    assert_eq!(w.column(id(&p), 0).await, ["Secret"]);
    // A viewer reads the board but cannot move.
    let viewer = w.app.user("viewer").await;
    w.app.add_member(w.tenant, &viewer, Role::Viewer).await;
    let r = post(&format!("/crm/deals/{}/move", id(&deal)))
        .bearer(&viewer.token)
        .tenant(w.tenant)
        .json(json!({"stage_id": stage(&p, 1)}))
        .send(&w.api)
        .await;
    r.problem(403);
}
