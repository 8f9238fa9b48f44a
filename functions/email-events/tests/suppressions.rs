//! Suppressions from email events against real Postgres: hard bounces, complaints and
//! unsubscribes at once; soft bounces at the threshold (different messages, within the window);
//! existing entries only strengthened, opt-outs never replaced, removed entries not re-added by
//! a repeat. Needs `local/up --services-only`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

mod common;

use chrono::Utc;
use common::*;
use serde_json::json;

#[tokio::test]
async fn hard_bounces_complaints_and_unsubscribes_suppress_at_once_and_soft_bounces_at_the_threshold() {
    let w = world().await;
    w.suppress("manual@example.com", "manual").await;
    w.suppress("optout@example.com", "unsubscribed").await;
    w.suppress("spam@example.com", "complaint").await;
    let emails = [
        "hard@example.com",
        "manual@example.com",
        "optout@example.com",
        "spam@example.com",
        "reporter@example.com",
        "leaver@example.com",
        "dropped@example.com",
        "soft@example.com",
        "old-soft@example.com",
    ];
    let (_, r1) = campaign(&w.app, w.tenant, &emails).await;
    let (_, r2) = campaign(&w.app, w.tenant, &["soft@example.com", "old-soft@example.com"]).await;
    let (_, r3) = campaign(&w.app, w.tenant, &["soft@example.com", "old-soft@example.com"]).await;
    let now = Utc::now().timestamp();
    let hard = json!({"type": "bounce", "status": "5.1.1", "reason": "550 5.1.1 no such user"});
    let blocked = json!({"type": "blocked", "status": "4.7.1", "reason": "421 try again later"});
    let r = w
        .sendgrid(&[
            sg("bounce", "h", r1[0], now, hard.clone()),
            sg("bounce", "m", r1[1], now, hard.clone()),
            sg("spamreport", "o", r1[2], now, json!({})),
            sg("bounce", "s", r1[3], now, hard.clone()),
            sg("spamreport", "rep", r1[4], now, json!({})),
            sg("unsubscribe", "lv", r1[5], now, json!({})),
            sg("dropped", "dr", r1[6], now, json!({"reason": "Bounced Address"})),
            sg("bounce", "soft-1", r1[7], now, blocked.clone()),
            sg("bounce", "old-soft-1", r1[8], now - 40 * 86_400, blocked.clone()),
        ])
        .await;
    assert_eq!(received(&r), (9, 0, 0, 0));
    // At once: hard bounce, complaint, unsubscribe; a manual entry is strengthened, an opt-out
    // stays as it is, a drop is not a suppression.
    assert_eq!(w.suppression("hard@example.com").await.as_deref(), Some("hard_bounce"));
    assert_eq!(
        w.suppression("manual@example.com").await.as_deref(),
        Some("hard_bounce")
    );
    assert_eq!(
        w.suppression("optout@example.com").await.as_deref(),
        Some("unsubscribed")
    );
    assert_eq!(w.suppression("spam@example.com").await.as_deref(), Some("complaint"));
    assert_eq!(
        w.suppression("reporter@example.com").await.as_deref(),
        Some("complaint")
    );
    assert_eq!(
        w.suppression("leaver@example.com").await.as_deref(),
        Some("unsubscribed")
    );
    assert_eq!(w.suppression("dropped@example.com").await, None);
    let detail: String =
        sqlx::query_scalar("select detail from marketing_suppressions where email = 'hard@example.com'")
            .fetch_one(&w.app.db.owner)
            .await
            .unwrap();
    assert!(
        detail.starts_with("SendGrid reported a hard bounce") && detail.ends_with("550 5.1.1 no such user"),
        "{detail}"
    );

    // Soft bounces: one, then a second through Mailgun (a permanent failure after retrying a
    // 4xx), and its repeat: below the threshold, nothing.
    assert_eq!(w.suppression("soft@example.com").await, None);
    let soft = mg(
        "failed",
        "mg-soft-2",
        r2[0],
        now as f64,
        json!({"severity": "permanent", "reason": "old", "delivery-status": {"code": 452, "message": "mailbox full"}}),
    );
    assert_eq!(received(&w.mailgun(soft.clone()).await), (1, 0, 0, 0));
    assert_eq!(received(&w.mailgun(soft).await), (0, 1, 0, 0));
    assert_eq!(
        w.suppression("soft@example.com").await,
        None,
        "two messages, one repeated"
    );
    // A recent soft bounce for old-soft makes two in the window (its first is 40 days old).
    let r = w
        .sendgrid(&[sg("bounce", "old-soft-2", r2[1], now, blocked.clone())])
        .await;
    assert_eq!(received(&r).0, 1);
    // The third message to soft-bounce: suppressed.
    let r = w
        .sendgrid(&[
            sg("bounce", "soft-3", r3[0], now, blocked.clone()),
            sg("bounce", "old-soft-3", r3[1], now, blocked.clone()),
        ])
        .await;
    assert_eq!(received(&r).0, 2);
    assert_eq!(w.suppression("soft@example.com").await.as_deref(), Some("soft_bounce"));
    assert_eq!(
        w.suppression("old-soft@example.com").await,
        None,
        "one of its three soft bounces is older than the window"
    );
    // A later hard bounce strengthens the soft one; a later soft bounce never weakens a hard.
    let r = w
        .sendgrid(&[
            sg("bounce", "soft-hard", r3[0], now, hard.clone()),
            sg("bounce", "hard-soft", r1[0], now, blocked.clone()),
        ])
        .await;
    assert_eq!(received(&r).0, 2);
    assert_eq!(w.suppression("soft@example.com").await.as_deref(), Some("hard_bounce"));
    assert_eq!(w.suppression("hard@example.com").await.as_deref(), Some("hard_bounce"));
    // A repeat of a stored hard bounce after the tenant removed the entry does not bring it back.
    sqlx::query("delete from marketing_suppressions where email = 'hard@example.com'")
        .execute(&w.app.db.owner)
        .await
        .unwrap();
    let r = w.sendgrid(&[sg("bounce", "h", r1[0], now, hard)]).await;
    assert_eq!(received(&r), (0, 1, 0, 0));
    assert_eq!(w.suppression("hard@example.com").await, None);
}
