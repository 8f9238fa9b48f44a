//! crm-contacts against a real Postgres: CRUD with validation, merge patches and ETags, tenant
//! isolation, custom fields, lists (filters, sorts, keyset pages), search quality, merging.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use serde_json::{Value, json};
use shared::domain::Role;
use testkit::{delete, get, patch, post};
use uuid::Uuid;

/// The CRM world with crm-contacts under test.
type World = testkit::crm::World;

async fn world() -> World {
    World::new("contacts", crm_contacts::router).await
}

/// Contacts' own helpers.
trait Contacts {
    async fn contact(&self, body: Value) -> Value;
    async fn company(&self, body: Value) -> Value;
    async fn names(&self, query: &str) -> Vec<String>;
}

impl Contacts for World {
    async fn contact(&self, body: Value) -> Value {
        let r = self.post("/crm/contacts", body).await;
        assert_eq!(r.status, 201, "{}", r.text);
        r.json
    }

    async fn company(&self, body: Value) -> Value {
        let r = self.post("/crm/companies", body).await;
        assert_eq!(r.status, 201, "{}", r.text);
        r.json
    }

    async fn names(&self, query: &str) -> Vec<String> {
        let r = self.get("/crm/contacts", query).await;
        assert_eq!(r.status, 200, "{}", r.text);
        r.json["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                format!(
                    "{} {}",
                    c["first_name"].as_str().unwrap(),
                    c["last_name"].as_str().unwrap()
                )
            })
            .collect()
    }
}

fn id(v: &Value) -> &str {
    v["id"].as_str().unwrap()
}

#[tokio::test]
async fn contacts_are_created_validated_patched_and_deleted() {
    let w = world().await;
    let acme = w
        .company(json!({"name": "Acme GmbH", "domain": "https://www.Acme.de/"}))
        .await;
    assert_eq!(acme["domain"], "acme.de");
    let c = w
        .contact(json!({"first_name": " Ada ", "last_name": "Lovelace", "email": "Ada@Example.COM",
            "phone": "+44 20 7946 0958", "company_id": id(&acme), "owner_id": w.owner.id, "tags": ["VIP", "vip", "Math"],
            "address": {"city": "London", "country": "gb"}, "lifecycle_stage": "customer"}))
        .await;
    assert_eq!(c["first_name"], "Ada");
    assert_eq!(
        c["email"], "Ada@example.com",
        "the domain is lower-cased, the local part kept"
    );
    assert_eq!(c["tags"], json!(["vip", "math"]));
    assert_eq!(c["address"], json!({"city": "London", "country": "GB"}));
    assert_eq!(c["company_name"], "Acme GmbH");
    assert_eq!(c["version"], 1);

    // Email is unique per tenant, whatever its case.
    let r = w.post("/crm/contacts", json!({"email": "ada@EXAMPLE.com"})).await;
    assert_eq!(r.problem(409)["type"], "/problems/email-exists");

    // Every bad field at once; nothing stored.
    let before = w.app.count("crm_contacts").await;
    let r = w
        .post(
            "/crm/contacts",
            json!({"email": "not-an-email", "phone": "call me", "tags": [""], "address": {"country": "Germany"},
                "owner_id": Uuid::new_v4(), "company_id": Uuid::new_v4(), "source": "Web Form"}),
        )
        .await;
    let mut fields = r.error_fields();
    fields.sort();
    assert_eq!(
        fields,
        [
            "address.country",
            "company_id",
            "email",
            "owner_id",
            "phone",
            "source",
            "tags"
        ]
    );
    let r = w
        .post("/crm/contacts", json!({"first_name": "X", "nickname": "x"}))
        .await;
    assert_eq!(r.error_fields(), ["nickname"]);
    let r = w.post("/crm/contacts", json!({"notes": "nobody"})).await;
    assert_eq!(r.error_fields(), ["first_name"]);
    assert_eq!(w.app.count("crm_contacts").await, before);

    // Detail: the company and the timeline.
    let path = format!("/crm/contacts/{}", id(&c));
    let d = w.get(&path, "").await;
    assert_eq!(d.headers["etag"], "\"1\"");
    assert_eq!(d.json["company"]["name"], "Acme GmbH");
    assert_eq!(d.json["activity"][0]["kind"], "created");

    // A merge patch: null clears, objects merge, the rest stays; the timeline names the fields.
    let r = w
        .patch(
            &path,
            json!({"phone": null, "address": {"city": "Cambridge"}, "title": "Analyst"}),
            Some("\"1\""),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["phone"], Value::Null);
    assert_eq!(r.json["address"], json!({"city": "Cambridge", "country": "GB"}));
    assert_eq!(r.json["email"], "Ada@example.com");
    assert_eq!(r.headers["etag"], "\"2\"");
    let d = w.get(&path, "").await;
    assert_eq!(
        d.json["activity"][0]["data"]["fields"],
        json!(["address", "phone", "title"])
    );
    // A stale ETag: 412, nothing changed; an invalid change: 422, nothing changed.
    w.patch(&path, json!({"title": "CTO"}), Some("\"1\""))
        .await
        .problem(412);
    let r = w
        .patch(&path, json!({"email": "nope", "lifecycle_stage": "king"}), None)
        .await;
    r.problem(422);
    let d = w.get(&path, "").await;
    assert_eq!(
        (d.json["title"].as_str(), d.json["version"].as_i64()),
        (Some("Analyst"), Some(2))
    );
    // Unchanged values change nothing (no new version).
    let r = w.patch(&path, json!({"title": "Analyst"}), None).await;
    assert_eq!(r.json["version"], 2);

    // Deleting the company unlinks the contact; deleting the contact answers 404 after.
    let r = delete(&format!("/crm/companies/{}", id(&acme)))
        .bearer(&w.owner.token)
        .tenant(w.tenant)
        .send(&w.api)
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(w.get(&path, "").await.json["company_id"], Value::Null);
    let r = delete(&path).bearer(&w.owner.token).tenant(w.tenant).send(&w.api).await;
    assert_eq!(r.status, 204);
    w.get(&path, "").await.problem(404);
}

#[tokio::test]
async fn another_tenants_contacts_and_companies_answer_404() {
    let w = world().await;
    let acme = w.company(json!({"name": "Acme"})).await;
    let c = w.contact(json!({"first_name": "Grace", "company_id": id(&acme)})).await;
    let dup = w.contact(json!({"first_name": "Grace H"})).await;

    let other = w.app.user("other").await;
    let other_tenant = w.app.tenant(&other).await;
    let as_other = |r: testkit::Req| r.bearer(&other.token).tenant(other_tenant);
    for path in [
        format!("/crm/contacts/{}", id(&c)),
        format!("/crm/companies/{}", id(&acme)),
    ] {
        as_other(get(&path)).send(&w.api).await.problem(404);
        as_other(patch(&path))
            .json(json!({"notes": "mine"}))
            .send(&w.api)
            .await
            .problem(404);
        as_other(delete(&path)).send(&w.api).await.problem(404);
    }
    as_other(post(&format!("/crm/contacts/{}/merge", id(&c))))
        .json(json!({"duplicate_id": id(&dup)}))
        .send(&w.api)
        .await
        .problem(404);
    // Their own contact cannot link our company nor swallow our contact.
    let theirs = as_other(post("/crm/contacts"))
        .json(json!({"first_name": "Mallory"}))
        .send(&w.api)
        .await;
    let r = as_other(post("/crm/contacts"))
        .json(json!({"first_name": "Eve", "company_id": id(&acme)}))
        .send(&w.api)
        .await;
    assert_eq!(r.error_fields(), ["company_id"]);
    let r = as_other(post(&format!("/crm/contacts/{}/merge", id(&theirs.json))))
        .json(json!({"duplicate_id": id(&c)}))
        .send(&w.api)
        .await;
    assert_eq!(r.error_fields(), ["duplicate_id"]);
    for path in ["/crm/contacts", "/crm/companies"] {
        let r = as_other(get(path)).send(&w.api).await;
        let names: Vec<&Value> = r.json["items"].as_array().unwrap().iter().collect();
        assert!(
            names.iter().all(|c| c["first_name"] != "Grace" && c["name"] != "Acme"),
            "{}",
            r.text
        );
    }
    // Ours are untouched.
    assert_eq!(w.get(&format!("/crm/contacts/{}", id(&c)), "").await.json["version"], 1);
    assert_eq!(w.app.count("crm_contacts").await, 3);
}

#[tokio::test]
async fn custom_fields_are_typed_validated_filterable_and_removable() {
    let w = world().await;
    for field in [
        json!({"entity": "contact", "key": "plan", "label": "Plan", "type": "select", "options": ["free", "pro"]}),
        json!({"entity": "contact", "key": "seats", "label": "Seats", "type": "number"}),
        json!({"entity": "contact", "key": "renews", "label": "Renews", "type": "date"}),
    ] {
        let r = w.post("/crm/custom-fields", field).await;
        assert_eq!(r.status, 201, "{}", r.text);
    }
    let r = w
        .post(
            "/crm/custom-fields",
            json!({"entity": "contact", "key": "plan", "label": "Plan", "type": "text"}),
        )
        .await;
    assert_eq!(r.problem(409)["type"], "/problems/field-exists");
    let r = w
        .post(
            "/crm/custom-fields",
            json!({"entity": "contact", "key": "Bad Key", "label": "", "type": "select"}),
        )
        .await;
    let mut fields = r.error_fields();
    fields.sort();
    assert_eq!(fields, ["key", "label", "options"]);

    w.contact(json!({"first_name": "A", "custom": {"plan": "pro", "seats": 12, "renews": "2027-03-01"}}))
        .await;
    w.contact(json!({"first_name": "B", "custom": {"plan": "free", "seats": 3}}))
        .await;
    w.contact(json!({"first_name": "C", "custom": {"plan": "pro", "seats": 5}}))
        .await;
    let r = w
        .post(
            "/crm/contacts",
            json!({"first_name": "D", "custom": {"plan": "gold", "seats": "many", "x": 1}}),
        )
        .await;
    let mut fields = r.error_fields();
    fields.sort();
    assert_eq!(fields, ["custom.plan", "custom.seats", "custom.x"]);

    let q = |filter: &str| format!("sort=name&custom={}", urlencode(filter));
    assert_eq!(w.names(&q(r#"{"plan": "pro"}"#)).await, ["A ", "C "]);
    assert_eq!(w.names(&q(r#"{"seats": {"gte": 4, "lte": 12}}"#)).await, ["A ", "C "]);
    assert_eq!(w.names(&q(r#"{"plan": "pro", "seats": {"lte": 5}}"#)).await, ["C "]);
    assert_eq!(w.names(&q(r#"{"renews": {"gte": "2027-01-01"}}"#)).await, ["A "]);
    let r = w.get("/crm/contacts", &q(r#"{"nope": 1}"#)).await;
    assert_eq!(r.error_fields(), ["custom.nope"]);
    // Dates are stored normalised and only in years Postgres takes.
    let e = w
        .contact(json!({"first_name": "E", "custom": {"renews": "2027-3-2"}}))
        .await;
    assert_eq!(e["custom"]["renews"], "2027-03-02");
    assert_eq!(w.names(&q(r#"{"renews": "2027-03-02"}"#)).await, ["E "]);
    let r = w
        .post(
            "/crm/contacts",
            json!({"first_name": "F", "custom": {"renews": "0000-01-01"}}),
        )
        .await;
    assert_eq!(r.error_fields(), ["custom.renews"]);
    let r = w.get("/crm/contacts", &q(r#"{"renews": {"gte": "0000-01-01"}}"#)).await;
    assert_eq!(r.error_fields(), ["custom.renews"]);
    assert_eq!(w.get("/crm/contacts", "tag=%00").await.error_fields(), ["tag"]);

    // Deleting the definition removes its values.
    let defs = w.get("/crm/custom-fields", "entity=contact").await;
    let plan = defs
        .json
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["key"] == "plan")
        .unwrap()
        .clone();
    let r = delete(&format!("/crm/custom-fields/{}", id(&plan)))
        .bearer(&w.owner.token)
        .tenant(w.tenant)
        .send(&w.api)
        .await;
    assert_eq!(r.status, 204);
    let r = w.get("/crm/contacts", "sort=name").await;
    assert!(
        r.json["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["custom"].get("plan").is_none())
    );
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn lists_filter_sort_and_page_without_gaps_or_repeats() {
    let w = world().await;
    let member = w.app.user("seller").await;
    w.app.add_member(w.tenant, &member, Role::Member).await;
    let acme = w.company(json!({"name": "Acme"})).await;
    let people = [
        ("Zoe", "Adams", "lead", vec!["vip"]),
        ("Yann", "Baker", "customer", vec![]),
        ("Xia", "Chen", "customer", vec!["vip"]),
        ("Will", "Diaz", "lead", vec![]),
        ("Vera", "Evans", "opportunity", vec!["vip", "eu"]),
        ("Umar", "Fox", "lead", vec!["eu"]),
        ("Tess", "Gray", "customer", vec![]),
    ];
    for (i, (first, last, stage, tags)) in people.iter().enumerate() {
        let owner = if i % 2 == 0 { w.owner.id } else { member.id };
        let company = (i < 3).then(|| id(&acme).to_owned());
        w.contact(
            json!({"first_name": first, "last_name": last, "lifecycle_stage": stage, "tags": tags,
            "owner_id": owner, "company_id": company, "email": format!("{}@example.com", first.to_lowercase())}),
        )
        .await;
    }
    assert_eq!(
        w.names("sort=name").await,
        [
            "Zoe Adams",
            "Yann Baker",
            "Xia Chen",
            "Will Diaz",
            "Vera Evans",
            "Umar Fox",
            "Tess Gray"
        ]
    );
    assert_eq!(w.names("sort=-name&limit=2").await, ["Tess Gray", "Umar Fox"]);
    assert_eq!(
        w.names("tag=VIP&sort=name").await,
        ["Zoe Adams", "Xia Chen", "Vera Evans"]
    );
    assert_eq!(
        w.names("lifecycle_stage=customer&sort=email").await,
        ["Tess Gray", "Xia Chen", "Yann Baker"]
    );
    assert_eq!(
        w.names(&format!("owner_id={}&sort=name", member.id)).await,
        ["Yann Baker", "Will Diaz", "Umar Fox"]
    );
    assert_eq!(
        w.names(&format!("company_id={}&sort=name", id(&acme))).await,
        ["Zoe Adams", "Yann Baker", "Xia Chen"]
    );
    let future = "2999-01-01T00:00:00Z";
    assert!(w.names(&format!("created_after={future}")).await.is_empty());
    assert_eq!(w.names(&format!("created_before={future}")).await.len(), 7);

    // Pages of 3 under each sort: every contact once, in order.
    for sort in [
        "name",
        "-name",
        "created_at",
        "-created_at",
        "updated_at",
        "email",
        "-email",
    ] {
        let all = w.names(&format!("sort={sort}&limit=100")).await;
        let mut paged = Vec::new();
        let mut cursor = String::new();
        loop {
            let r = w
                .get("/crm/contacts", &format!("sort={sort}&limit=3&cursor={cursor}"))
                .await;
            assert_eq!(r.status, 200, "{}", r.text);
            for c in r.json["items"].as_array().unwrap() {
                paged.push(format!(
                    "{} {}",
                    c["first_name"].as_str().unwrap(),
                    c["last_name"].as_str().unwrap()
                ));
            }
            match r.json["next_cursor"].as_str() {
                Some(next) => cursor = next.to_owned(),
                None => break,
            }
        }
        assert_eq!(paged, all, "{sort}");
    }
    // A cursor of another sort, an unknown sort or a bad filter: 422.
    let r = w.get("/crm/contacts", "sort=name&limit=2").await;
    let cursor = r.json["next_cursor"].as_str().unwrap().to_owned();
    let r = w.get("/crm/contacts", &format!("sort=email&cursor={cursor}")).await;
    assert_eq!(r.error_fields(), ["cursor"]);
    assert_eq!(w.get("/crm/contacts", "sort=age").await.error_fields(), ["sort"]);
    assert_eq!(w.get("/crm/contacts", "sort=relevance").await.error_fields(), ["sort"]);
    w.get("/crm/contacts", "lifecycle_stage=king").await.problem(422);
    w.get("/crm/contacts", "limit=0").await.problem(422);
}

#[tokio::test]
async fn search_finds_prefixes_typos_emails_and_companies_best_first() {
    let w = world().await;
    let initech = w.company(json!({"name": "Initech", "domain": "initech.com"})).await;
    let globex = w.company(json!({"name": "Globex Corporation"})).await;
    for (first, last, email, company) in [
        ("Johnathan", "Smith", "jsmith@initech.com", Some(&initech)),
        ("John", "Smithers", "john.smithers@example.com", None),
        ("Jane", "Doe", "jane@globex.com", Some(&globex)),
        ("Joan", "Miller", "joan@example.org", None),
        ("Peter", "Gibbons", "peter@initech.com", Some(&initech)),
        ("Michael", "Bolton", "mbolton@example.net", None),
        ("Samir", "Nagheenanajar", "samir@example.net", None),
        ("Milton", "Waddams", "milton@basement.example", None),
    ] {
        w.contact(json!({"first_name": first, "last_name": last, "email": email,
            "company_id": company.map(|c| id(c).to_owned())}))
            .await;
    }
    let top = |q: &str| {
        let q = format!("q={}", urlencode(q));
        let w = &w;
        async move { w.names(&q).await }
    };
    // Word prefixes.
    let smi = top("smi").await;
    assert_eq!(smi.len(), 2, "{smi:?}");
    assert!(smi.contains(&"Johnathan Smith".to_owned()) && smi.contains(&"John Smithers".to_owned()));
    assert_eq!(top("john").await[..2], ["John Smithers", "Johnathan Smith"]);
    // Typos.
    assert_eq!(top("nagheenanajr").await, ["Samir Nagheenanajar"]);
    assert_eq!(top("waddms").await, ["Milton Waddams"]);
    // Emails and company names.
    assert_eq!(top("mbolton@").await, ["Michael Bolton"]);
    let initech_people = top("initech").await;
    assert_eq!(initech_people.len(), 2, "{initech_people:?}");
    assert_eq!(top("globex").await, ["Jane Doe"]);
    // Nothing like it: nothing.
    assert!(top("zzzqqq").await.is_empty());
    // Relevance pages: every match once.
    let all = w.names("q=jo&limit=100").await;
    let first = w.get("/crm/contacts", "q=jo&limit=2").await;
    let cursor = first.json["next_cursor"].as_str().unwrap();
    let rest = w.names(&format!("q=jo&limit=100&cursor={cursor}")).await;
    assert_eq!(all.len(), 2 + rest.len(), "{all:?} vs {rest:?}");
    // Companies search too.
    let r = w.get("/crm/companies", "q=globx").await;
    assert_eq!(r.json["items"][0]["name"], "Globex Corporation");
}

#[tokio::test]
async fn merging_keeps_every_link_and_fills_the_gaps() {
    let w = world().await;
    let acme = w.company(json!({"name": "Acme"})).await;
    let kept = w
        .contact(
            json!({"first_name": "Ada", "last_name": "Lovelace", "email": "ada@example.com", "tags": ["vip"],
            "notes": "met at the fair"}),
        )
        .await;
    let dup = w
        .contact(
            json!({"first_name": "A.", "email": "ada.l@work.example", "phone": "+44 20 1234 5678",
            "company_id": id(&acme), "tags": ["math", "vip"], "notes": "called twice"}),
        )
        .await;
    w.patch(
        &format!("/crm/contacts/{}", id(&dup)),
        json!({"title": "Countess"}),
        None,
    )
    .await;
    let r = w
        .post(
            &format!("/crm/contacts/{}/merge", id(&kept)),
            json!({"duplicate_id": id(&dup)}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let m = &r.json;
    assert_eq!(m["first_name"], "Ada", "the kept contact's values win");
    assert_eq!(m["email"], "ada@example.com");
    assert_eq!(m["other_emails"], json!(["ada.l@work.example"]));
    assert_eq!(m["phone"], "+44 20 1234 5678", "gaps are filled from the duplicate");
    assert_eq!(m["title"], "Countess");
    assert_eq!(m["company_id"], id(&acme));
    assert_eq!(m["tags"], json!(["vip", "math"]));
    assert_eq!(m["notes"], "met at the fair\n\ncalled twice");
    w.get(&format!("/crm/contacts/{}", id(&dup)), "").await.problem(404);
    // The duplicate's timeline moved here, with the merge on top.
    let d = w.get(&format!("/crm/contacts/{}", id(&kept)), "").await;
    let kinds: Vec<&str> = d.json["activity"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["merged", "updated", "created", "created"]);
    // The merged contact stays editable (its notes hold a line break).
    let r = w
        .patch(
            &format!("/crm/contacts/{}", id(&kept)),
            json!({"title": "Countess"}),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    // A kept contact without email takes the duplicate's, and lists it once.
    let bare = w.contact(json!({"first_name": "Bare"})).await;
    let mailed = w
        .contact(json!({"first_name": "Mailed", "email": "bare@example.com"}))
        .await;
    let r = w
        .post(
            &format!("/crm/contacts/{}/merge", id(&bare)),
            json!({"duplicate_id": id(&mailed)}),
        )
        .await;
    assert_eq!(
        (r.json["email"].as_str(), &r.json["other_emails"]),
        (Some("bare@example.com"), &json!([]))
    );
    // The duplicate's email is free again.
    w.contact(json!({"email": "ada.l@work.example"})).await;
    let r = w
        .post(
            &format!("/crm/contacts/{}/merge", id(&kept)),
            json!({"duplicate_id": id(&kept)}),
        )
        .await;
    assert_eq!(r.error_fields(), ["duplicate_id"]);

    // Every table that points at contacts is moved by a merge.
    let referencing: Vec<(String, String)> = sqlx::query_as(
        "select c.conrelid::regclass::text, a.attname::text from pg_constraint c \
         join pg_attribute a on a.attrelid = c.conrelid and a.attnum = c.conkey[array_length(c.conkey, 1)] \
         where c.contype = 'f' and c.confrelid = 'crm_contacts'::regclass order by 1",
    )
    .fetch_all(&w.app.db.owner)
    .await
    .unwrap();
    let links: Vec<(String, String)> = shared::services::crm::contacts::LINKS
        .iter()
        .map(|(t, c)| ((*t).to_owned(), (*c).to_owned()))
        .collect();
    assert_eq!(
        referencing, links,
        "a table references crm_contacts that merge does not move"
    );
}

#[tokio::test]
async fn contacts_count_against_the_plan() {
    let w = world().await;
    // The free plan allows 500: fill it directly.
    sqlx::query(
        "insert into crm_contacts (id, tenant_id, first_name) select gen_random_uuid(), $1, 'P' || g \
         from generate_series(1, 500) g",
    )
    .bind(w.tenant)
    .execute(&w.app.db.owner)
    .await
    .unwrap();
    let r = w.post("/crm/contacts", json!({"first_name": "One more"})).await;
    assert_eq!(r.problem(402)["limit"]["name"], "contacts");
    w.app.subscribe(w.tenant, "starter").await;
    w.contact(json!({"first_name": "One more"})).await;
}

#[tokio::test]
async fn creation_is_idempotent_per_key() {
    let w = world().await;
    let send = |key: &'static str, body: Value| {
        let w = &w;
        async move {
            post("/crm/contacts")
                .bearer(&w.owner.token)
                .tenant(w.tenant)
                .header("idempotency-key", key)
                .json(body)
                .send(&w.api)
                .await
        }
    };
    let first = send("k-1", json!({"first_name": "Once"})).await;
    assert_eq!(first.status, 201);
    let again = send("k-1", json!({"first_name": "Once"})).await;
    assert_eq!(again.json["id"], first.json["id"]);
    assert_eq!(again.headers["idempotent-replayed"], "true");
    send("k-1", json!({"first_name": "Twice"})).await.problem(422);
    assert_eq!(w.app.count("crm_contacts").await, 1);
}
