//! Email templates against a real Postgres: variables checked against the tenant's
//! vocabulary when saved, MJML previewed for a real contact, merge patches with ETags, roles.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

mod common;

use common::{fields, id, world};
use serde_json::json;

/// A newsletter in MJML: a class styled in `<mj-style>`, the contact's values, a custom field.
const NEWSLETTER: &str = r#"<mjml>
  <mj-head>
    <mj-style>.lead { color: #ff0000; }</mj-style>
  </mj-head>
  <mj-body>
    <mj-section><mj-column>
      <mj-text>Hello {{ contact.first_name or "there" }} from {{ company.name }},</mj-text>
      <mj-text css-class="lead">Your plan: {{ contact.custom.plan }}</mj-text>
      <mj-button href="https://example.com/offer">See the offer</mj-button>
    </mj-column></mj-section>
  </mj-body>
</mjml>"#;

#[tokio::test]
async fn an_unknown_variable_is_refused_naming_it_and_its_line() {
    let w = world().await;
    let body = "<p>Hi {{ contact.first_name }},</p>\n<p>Thanks for being a customer.</p>\n<p>Plan: {{ contact.custom.plan }}</p>";
    let r = w
        .post(
            "/marketing/templates",
            json!({"name": "Welcome", "subject": "Welcome, {{ contact.frist_name }}", "body": body}),
        )
        .await;
    assert_eq!(fields(&r), ["body", "subject"]);
    let errors = r.json["errors"].as_array().unwrap();
    let of = |field: &str| errors.iter().find(|e| e["field"] == field).unwrap().clone();
    let (b, s) = (of("body"), of("subject"));
    assert_eq!(b["code"], "unknown_variable");
    let message = b["message"].as_str().unwrap();
    assert!(message.starts_with("line 3: "), "{message}");
    assert!(message.contains("contact.custom.plan"), "{message}");
    let message = s["message"].as_str().unwrap();
    assert!(
        message.contains("contact.frist_name") && message.contains("contact.first_name"),
        "a hint: {message}"
    );
    assert_eq!(w.app.count("marketing_templates").await, 0);

    // Once the tenant defines the field (and the typo is fixed) the same body saves.
    w.field(w.tenant, "plan", "select", &["free", "pro"]).await;
    let t = w
        .created(
            "/marketing/templates",
            json!({"name": "Welcome", "subject": "Welcome, {{ contact.first_name }}", "body": body}),
        )
        .await;
    assert_eq!(t["format"], "html");
    assert_eq!(t["version"], 1);
    assert_eq!(t["created_by"], json!(w.owner.id));

    // Another tenant's field is not this tenant's vocabulary.
    let (other_owner, other) = w.other_tenant().await;
    let r = testkit::post("/marketing/templates")
        .bearer(&other_owner.token)
        .tenant(other)
        .json(json!({"name": "Welcome", "subject": "Hi", "body": body}))
        .send(&w.api)
        .await;
    assert_eq!(fields(&r), ["body"]);

    // Broken MJML and broken syntax are refused too, as is every bad field at once.
    let r = w
        .post(
            "/marketing/templates",
            json!({"name": "", "subject": "Hi", "format": "mjml", "body": "<mjml><mj-body>\n<mj-text>Hi</mj-body></mjml>"}),
        )
        .await;
    assert_eq!(fields(&r), ["body", "name"]);
    let r = w
        .post(
            "/marketing/templates",
            json!({"name": "X", "subject": "Hi {{ contact.first_name", "body": "<p>x</p>", "format": "pdf"}),
        )
        .await;
    assert_eq!(fields(&r), ["format"]);
}

#[tokio::test]
async fn an_mjml_template_is_previewed_for_a_real_contact() {
    let w = world().await;
    w.field(w.tenant, "plan", "select", &["free", "pro"]).await;
    let company = w.company(w.tenant, "Smith & Sons").await;
    let contact = w
        .contact(
            w.tenant,
            json!({"first_name": "<b>Ann</b>", "last_name": "Lee", "email": "ann@example.com",
                "company_id": company.to_string(), "custom": {"plan": "pro"}}),
        )
        .await;
    let t = w
        .created(
            "/marketing/templates",
            json!({"name": "Newsletter", "subject": "News for {{ contact.first_name }}",
                "preheader": "What's new at {{ company.name }}", "format": "mjml", "body": NEWSLETTER}),
        )
        .await;
    let preview = format!("/marketing/templates/{}/preview", id(&t));
    let r = w.post(&preview, json!({"contact_id": contact})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    // The subject and preheader are text: filled in, one line, not escaped.
    assert_eq!(r.json["subject"], "News for <b>Ann</b>");
    assert_eq!(r.json["preheader"], "What's new at Smith & Sons");
    let html = r.json["html"].as_str().unwrap();
    // Values are escaped in the HTML, never markup.
    assert!(
        html.contains("Hello &lt;b&gt;Ann&lt;/b&gt; from Smith &amp; Sons"),
        "{html}"
    );
    assert!(!html.contains("<b>Ann</b>"));
    assert!(html.contains("Your plan: pro"));
    // MJML compiled to HTML, the class's rule inlined onto its element.
    assert!(!html.contains("<mj-") && html.contains("<table"), "compiled");
    assert!(
        html.contains("color: #ff0000") || html.contains("color:#ff0000"),
        "inlined: {html}"
    );
    // The preheader leads the body as hidden preview text.
    assert!(html.contains("display:none"));
    // The text part is derived from the HTML: the words and the link, no tags.
    let text = r.json["text"].as_str().unwrap();
    assert!(text.contains("Hello <b>Ann</b> from Smith & Sons"), "{text}");
    assert!(text.contains("Your plan: pro"), "{text}");
    assert!(text.contains("https://example.com/offer"), "{text}");
    assert!(!text.contains("<table") && !text.contains("<div"), "{text}");

    // Without a contact: the sample contact; its custom fields render empty.
    let r = w.post(&preview, json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["subject"], "News for Jane");
    assert!(r.json["html"].as_str().unwrap().contains("Your plan: <"));

    // A text part of its own is used as it is, filled in.
    let patched = w
        .patch(
            &format!("/marketing/templates/{}", id(&t)),
            json!({"text": "Hi {{ contact.first_name }}, see https://example.com/offer"}),
            None,
        )
        .await;
    assert_eq!(patched.status, 200, "{}", patched.text);
    let r = w.post(&preview, json!({"contact_id": contact})).await;
    assert_eq!(r.json["text"], "Hi <b>Ann</b>, see https://example.com/offer");

    // Another tenant's contact is not found here; nor is an unknown template.
    let (_, other) = w.other_tenant().await;
    let theirs = w
        .contact(other, json!({"first_name": "Zed", "email": "zed@example.com"}))
        .await;
    w.post(&preview, json!({"contact_id": theirs})).await.problem(404);
    w.post(
        "/marketing/templates/00000000-0000-4000-8000-000000000999/preview",
        json!({}),
    )
    .await
    .problem(404);
}

#[tokio::test]
async fn templates_are_listed_patched_with_etags_and_deleted() {
    let w = world().await;
    let t = w
        .created(
            "/marketing/templates",
            json!({"name": "Receipt", "subject": "Your receipt", "body": "<p>Thanks</p>", "text": "Thanks"}),
        )
        .await;
    let path = format!("/marketing/templates/{}", id(&t));
    let r = w.get(&path, "").await;
    assert_eq!(r.headers["etag"], "\"1\"");
    assert_eq!(r.json["text"], "Thanks");

    let r = w
        .patch(
            &path,
            json!({"subject": "Your receipt, {{ contact.first_name }}", "text": null}),
            Some("\"1\""),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.headers["etag"], "\"2\"");
    assert!(r.json["text"].is_null(), "cleared: derived from the HTML again");
    // A stale ETag is refused with 412 and changes nothing.
    let r = w.patch(&path, json!({"name": "Stale"}), Some("\"1\"")).await;
    r.problem(412);
    assert_eq!(w.get(&path, "").await.json["name"], "Receipt");
    // A patch that brings an unknown variable is refused like a creation.
    let r = w
        .patch(&path, json!({"body": "<p>{{ contact.nickname }}</p>"}), Some("\"2\""))
        .await;
    assert_eq!(fields(&r), ["body"]);
    // A patch that changes nothing keeps the version.
    let r = w.patch(&path, json!({"name": "Receipt"}), None).await;
    assert_eq!(r.json["version"], 2);

    // Lists: summaries (no bodies), newest change first, `q` and `format` filters.
    w.created(
        "/marketing/templates",
        json!({"name": "Promo", "subject": "Sale", "format": "mjml",
            "body": "<mjml><mj-body><mj-section><mj-column><mj-text>Sale</mj-text></mj-column></mj-section></mj-body></mjml>"}),
    )
    .await;
    let r = w.get("/marketing/templates", "").await;
    assert_eq!(r.status, 200, "{}", r.text);
    let items = r.json["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["name"], "Promo");
    assert!(items[0].get("body").is_none(), "lists leave bodies out");
    let r = w.get("/marketing/templates", "format=mjml").await;
    assert_eq!(r.json["items"].as_array().unwrap().len(), 1);
    let r = w.get("/marketing/templates", "q=RECEIPT").await;
    assert_eq!(r.json["items"][0]["name"], "Receipt");
    let r = w.get("/marketing/templates", "limit=1").await;
    let cursor = r.json["next_cursor"].as_str().unwrap();
    let r = w.get("/marketing/templates", &format!("limit=1&cursor={cursor}")).await;
    assert_eq!(r.json["items"][0]["name"], "Receipt");
    w.get("/marketing/templates", "format=pdf").await.problem(422);

    assert_eq!(w.delete(&path).await.status, 204);
    w.get(&path, "").await.problem(404);
}

#[tokio::test]
async fn viewers_read_and_preview_but_do_not_write() {
    let w = world().await;
    let t = w
        .created(
            "/marketing/templates",
            json!({"name": "Hi", "subject": "Hi", "body": "<p>Hi {{ contact.first_name }}</p>"}),
        )
        .await;
    let path = format!("/marketing/templates/{}", id(&t));
    assert_eq!(w.get_as(&w.viewer, &path, "").await.status, 200);
    assert_eq!(
        w.post_as(&w.viewer, &format!("{path}/preview"), json!({})).await.status,
        200
    );
    w.post_as(
        &w.viewer,
        "/marketing/templates",
        json!({"name": "Mine", "subject": "Hi", "body": "<p>x</p>"}),
    )
    .await
    .problem(403);
    let r = testkit::patch(&path)
        .bearer(&w.viewer.token)
        .tenant(w.tenant)
        .json(json!({"name": "Mine"}))
        .send(&w.api)
        .await;
    r.problem(403);
    w.delete_as(&w.viewer, &path).await.problem(403);
    let r = w
        .post_as(
            &w.member,
            "/marketing/templates",
            json!({"name": "Members may", "subject": "Hi", "body": "<p>x</p>"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
}
