//! Our own typed views of the Stripe objects we mirror, read leniently from the raw JSON (the
//! raw object is always kept beside them). Both pre-basil shapes (API versions up to
//! 2025-02-24: `invoice.subscription`, `subscription.current_period_*`) and basil shapes
//! (2025-03-31 and later: `invoice.parent.subscription_details.subscription`, period fields on
//! subscription items) are read. Money stays in integer minor units with its ISO currency;
//! statuses stay text (Stripe adds states). The API version these views model: 2025-04-30.basil,
//! reading back to 2020-03-02.
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ViewError {
    #[error("expected a Stripe {expected} object, found {found:?}")]
    WrongObject {
        expected: &'static str,
        found: Option<String>,
    },
}

/// An id field that may be a string or an expanded object with an `id`.
pub fn id_of(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Object(o) => o.get("id").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    }
}

fn text(obj: &Value, key: &str) -> Option<String> {
    obj.get(key).and_then(Value::as_str).map(str::to_owned)
}

fn int(obj: &Value, key: &str) -> Option<i64> {
    obj.get(key).and_then(Value::as_i64)
}

fn flag(obj: &Value, key: &str) -> bool {
    obj.get(key).and_then(Value::as_bool).unwrap_or(false)
}

fn expect(obj: &Value, kind: &'static str) -> Result<(), ViewError> {
    match obj.get("object").and_then(Value::as_str) {
        Some(found) if found == kind => Ok(()),
        found => Err(ViewError::WrongObject {
            expected: kind,
            found: found.map(str::to_owned),
        }),
    }
}

/// A list field (`{"object":"list","data":[...],"has_more":..}`): its items and whether Stripe
/// truncated it (then the mirror must fetch the rest).
fn list<'a>(obj: &'a Value, key: &str) -> (Vec<&'a Value>, bool) {
    let field = obj.get(key);
    let items = field
        .and_then(|l| l.get("data"))
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    (items, field.map(|l| flag(l, "has_more")).unwrap_or(false))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerView {
    pub id: String,
    pub email: Option<String>,
    pub name: Option<String>,
    pub deleted: bool,
    /// `metadata.tenant_id`: the portal tenant this customer bills (set when we create it).
    pub tenant_id: Option<String>,
    pub created: Option<i64>,
}

impl CustomerView {
    pub fn read(obj: &Value) -> Result<Self, ViewError> {
        expect(obj, "customer")?;
        Ok(Self {
            id: text(obj, "id").unwrap_or_default(),
            email: text(obj, "email"),
            name: text(obj, "name"),
            deleted: flag(obj, "deleted"),
            tenant_id: obj
                .pointer("/metadata/tenant_id")
                .and_then(Value::as_str)
                .map(str::to_owned),
            created: int(obj, "created"),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionItemView {
    pub id: String,
    /// The price (or, before prices, the plan) subscribed to.
    pub price_id: Option<String>,
    pub quantity: i64,
    pub current_period_start: Option<i64>,
    pub current_period_end: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionView {
    pub id: String,
    pub customer: Option<String>,
    pub status: Option<String>,
    pub cancel_at_period_end: bool,
    pub canceled_at: Option<i64>,
    pub trial_start: Option<i64>,
    pub trial_end: Option<i64>,
    /// Top-level before basil; from the items (earliest start, latest end) in basil.
    pub current_period_start: Option<i64>,
    pub current_period_end: Option<i64>,
    pub items: Vec<SubscriptionItemView>,
    /// Stripe sent only the first items: fetch the rest before mirroring them.
    pub items_truncated: bool,
    pub created: Option<i64>,
}

impl SubscriptionView {
    pub fn read(obj: &Value) -> Result<Self, ViewError> {
        expect(obj, "subscription")?;
        let (raw_items, items_truncated) = list(obj, "items");
        let items: Vec<SubscriptionItemView> = raw_items
            .into_iter()
            .map(|i| SubscriptionItemView {
                id: text(i, "id").unwrap_or_default(),
                price_id: id_of(i.get("price")).or_else(|| id_of(i.get("plan"))),
                quantity: int(i, "quantity").unwrap_or(1),
                current_period_start: int(i, "current_period_start"),
                current_period_end: int(i, "current_period_end"),
            })
            .collect();
        let current_period_start =
            int(obj, "current_period_start").or_else(|| items.iter().filter_map(|i| i.current_period_start).min());
        let current_period_end =
            int(obj, "current_period_end").or_else(|| items.iter().filter_map(|i| i.current_period_end).max());
        Ok(Self {
            id: text(obj, "id").unwrap_or_default(),
            customer: id_of(obj.get("customer")),
            status: text(obj, "status"),
            cancel_at_period_end: flag(obj, "cancel_at_period_end"),
            canceled_at: int(obj, "canceled_at"),
            trial_start: int(obj, "trial_start"),
            trial_end: int(obj, "trial_end"),
            current_period_start,
            current_period_end,
            items,
            items_truncated,
            created: int(obj, "created"),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvoiceLineView {
    pub id: String,
    pub amount: i64,
    pub currency: Option<String>,
    pub description: Option<String>,
    pub period_start: Option<i64>,
    pub period_end: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvoiceView {
    /// `None` for an upcoming invoice (a preview, not an invoice row).
    pub id: Option<String>,
    pub customer: Option<String>,
    /// `invoice.subscription` before basil, `invoice.parent.subscription_details.subscription` in basil.
    pub subscription: Option<String>,
    pub number: Option<String>,
    pub status: Option<String>,
    pub currency: Option<String>,
    pub amount_due: i64,
    pub amount_paid: i64,
    pub amount_remaining: i64,
    pub total: Option<i64>,
    pub period_start: Option<i64>,
    pub period_end: Option<i64>,
    pub hosted_invoice_url: Option<String>,
    pub invoice_pdf: Option<String>,
    pub lines: Vec<InvoiceLineView>,
    pub lines_truncated: bool,
    pub created: Option<i64>,
}

impl InvoiceView {
    pub fn read(obj: &Value) -> Result<Self, ViewError> {
        expect(obj, "invoice")?;
        let (raw_lines, lines_truncated) = list(obj, "lines");
        let lines = raw_lines
            .into_iter()
            .map(|l| InvoiceLineView {
                id: text(l, "id").unwrap_or_default(),
                amount: int(l, "amount").unwrap_or(0),
                currency: text(l, "currency"),
                description: text(l, "description"),
                period_start: l.pointer("/period/start").and_then(Value::as_i64),
                period_end: l.pointer("/period/end").and_then(Value::as_i64),
            })
            .collect();
        Ok(Self {
            id: text(obj, "id"),
            customer: id_of(obj.get("customer")),
            subscription: id_of(obj.get("subscription"))
                .or_else(|| id_of(obj.pointer("/parent/subscription_details/subscription"))),
            number: text(obj, "number"),
            status: text(obj, "status"),
            currency: text(obj, "currency"),
            amount_due: int(obj, "amount_due").unwrap_or(0),
            amount_paid: int(obj, "amount_paid").unwrap_or(0),
            amount_remaining: int(obj, "amount_remaining").unwrap_or(0),
            total: int(obj, "total"),
            period_start: int(obj, "period_start"),
            period_end: int(obj, "period_end"),
            hosted_invoice_url: text(obj, "hosted_invoice_url"),
            invoice_pdf: text(obj, "invoice_pdf"),
            lines,
            lines_truncated,
            created: int(obj, "created"),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentIntentView {
    pub id: String,
    pub customer: Option<String>,
    pub status: Option<String>,
    pub amount: i64,
    pub amount_received: i64,
    pub currency: Option<String>,
    /// Pre-basil only; in basil the link goes through invoice payments.
    pub invoice: Option<String>,
    pub created: Option<i64>,
}

impl PaymentIntentView {
    pub fn read(obj: &Value) -> Result<Self, ViewError> {
        expect(obj, "payment_intent")?;
        Ok(Self {
            id: text(obj, "id").unwrap_or_default(),
            customer: id_of(obj.get("customer")),
            status: text(obj, "status"),
            amount: int(obj, "amount").unwrap_or(0),
            amount_received: int(obj, "amount_received").unwrap_or(0),
            currency: text(obj, "currency"),
            invoice: id_of(obj.get("invoice")),
            created: int(obj, "created"),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundView {
    pub id: String,
    pub charge: Option<String>,
    pub payment_intent: Option<String>,
    pub amount: i64,
    pub currency: Option<String>,
    pub status: Option<String>,
    pub created: Option<i64>,
}

impl RefundView {
    pub fn read(obj: &Value) -> Result<Self, ViewError> {
        expect(obj, "refund")?;
        Ok(Self {
            id: text(obj, "id").unwrap_or_default(),
            charge: id_of(obj.get("charge")),
            payment_intent: id_of(obj.get("payment_intent")),
            amount: int(obj, "amount").unwrap_or(0),
            currency: text(obj, "currency"),
            status: text(obj, "status"),
            created: int(obj, "created"),
        })
    }

    /// The refunds a `charge` object carries (`charge.refunded` events), and whether Stripe
    /// truncated that list.
    pub fn from_charge(charge: &Value) -> Result<(Vec<Self>, bool), ViewError> {
        expect(charge, "charge")?;
        let (items, truncated) = list(charge, "refunds");
        Ok((items.into_iter().map(Self::read).collect::<Result<_, _>>()?, truncated))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_invoice_names_its_subscription_in_either_shape() {
        let pre =
            json!({"object": "invoice", "id": "in_1", "subscription": "sub_1", "amount_paid": 4900, "currency": "usd"});
        let basil = json!({"object": "invoice", "id": "in_2",
            "parent": {"type": "subscription_details", "subscription_details": {"subscription": "sub_2"}}});
        let expanded =
            json!({"object": "invoice", "id": "in_3", "subscription": {"id": "sub_3", "object": "subscription"}});
        assert_eq!(InvoiceView::read(&pre).unwrap().subscription.as_deref(), Some("sub_1"));
        assert_eq!(InvoiceView::read(&pre).unwrap().amount_paid, 4900);
        assert_eq!(
            InvoiceView::read(&basil).unwrap().subscription.as_deref(),
            Some("sub_2")
        );
        assert_eq!(
            InvoiceView::read(&expanded).unwrap().subscription.as_deref(),
            Some("sub_3")
        );
        let upcoming = json!({"object": "invoice", "subscription": "sub_1"});
        assert_eq!(
            InvoiceView::read(&upcoming).unwrap().id,
            None,
            "an upcoming invoice has no id"
        );
    }

    #[test]
    fn a_subscription_period_comes_from_the_top_or_from_its_items() {
        let pre = json!({"object": "subscription", "id": "sub_1", "current_period_start": 10, "current_period_end": 20,
            "items": {"object": "list", "data": [{"id": "si_1", "price": {"id": "price_1"}, "quantity": 2}], "has_more": false}});
        let basil = json!({"object": "subscription", "id": "sub_2",
            "items": {"object": "list", "has_more": true, "data": [
                {"id": "si_1", "price": "price_1", "current_period_start": 30, "current_period_end": 60},
                {"id": "si_2", "plan": {"id": "plan_2"}, "current_period_start": 25, "current_period_end": 55}]}});
        let pre = SubscriptionView::read(&pre).unwrap();
        assert_eq!((pre.current_period_start, pre.current_period_end), (Some(10), Some(20)));
        assert_eq!(pre.items[0].quantity, 2);
        let basil = SubscriptionView::read(&basil).unwrap();
        assert_eq!(
            (basil.current_period_start, basil.current_period_end),
            (Some(25), Some(60))
        );
        assert_eq!(basil.items[1].price_id.as_deref(), Some("plan_2"));
        assert!(basil.items_truncated, "a truncated list says so");
    }

    #[test]
    fn a_view_refuses_another_kind_of_object() {
        let customer = json!({"object": "customer", "id": "cus_1"});
        assert!(matches!(
            InvoiceView::read(&customer),
            Err(ViewError::WrongObject {
                expected: "invoice",
                ..
            })
        ));
        assert!(CustomerView::read(&json!({"id": "cus_1"})).is_err());
    }
}
