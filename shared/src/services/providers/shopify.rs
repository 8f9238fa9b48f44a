//! Shopify Admin API JSON (REST resources and webhook bodies, the same shapes) → the model.
//! Ids come from `admin_graphql_api_id` when present (`gid://shopify/Order/820982911946154508`):
//! a copy of the payload that went through a JavaScript number has its numeric `id` rounded,
//! the GID never is. Money is the shop's (`currency`), as decimal strings.
use serde_json::Value;

use crate::services::ecommerce::{
    Channel, CustomerFields, CustomerRecord, LineRecord, MapError, OrderRecord, OrderStatus, ProductRecord,
    ProductStatus, VariantRecord, count, currency_of, id_of, items, map_error, money, text, time, updated_at,
};

fn gid_or_id(value: &Value, field: &str) -> Result<String, MapError> {
    value
        .get("admin_graphql_api_id")
        .and_then(Value::as_str)
        .and_then(|gid| gid.rsplit('/').next())
        .and_then(|tail| id_of(&Value::String(tail.to_owned())))
        .or_else(|| value.get("id").and_then(id_of))
        .ok_or_else(|| map_error(field, "no id"))
}

/// `financial_status` and `fulfillment_status` (and `cancelled_at`) → one status.
pub fn order_status(financial: Option<&str>, fulfillment: Option<&str>, cancelled: bool) -> OrderStatus {
    if cancelled {
        return OrderStatus::Cancelled;
    }
    match financial {
        Some("refunded") => OrderStatus::Refunded,
        Some("partially_refunded") => OrderStatus::PartiallyRefunded,
        Some("voided") => OrderStatus::Cancelled,
        Some("paid") if fulfillment == Some("fulfilled") => OrderStatus::Fulfilled,
        Some("paid") => OrderStatus::Paid,
        _ => OrderStatus::Pending,
    }
}

pub fn order(v: &Value) -> Result<OrderRecord, MapError> {
    let currency = currency_of(v, "currency")?;
    let external_id = gid_or_id(v, "id")?;
    let financial = text(v, "financial_status");
    let fulfillment = text(v, "fulfillment_status");
    let cancelled_at = time(v, "cancelled_at");
    let created = time(v, "created_at").ok_or_else(|| map_error("created_at", "missing or not a time"))?;
    let shipping = v
        .pointer("/total_shipping_price_set/shop_money/amount")
        .map(|a| crate::domain::money::value_to_minor(a, &currency))
        .transpose()
        .map_err(|e| map_error("total_shipping_price_set", e.to_string()))?
        .unwrap_or(0);
    let mut refunded = 0;
    for (i, refund) in items(v, "refunds").enumerate() {
        for t in items(refund, "transactions") {
            if text(t, "kind").as_deref() == Some("refund") && text(t, "status").as_deref() == Some("success") {
                let amount =
                    money(t, "amount", &currency).map_err(|e| map_error(&format!("refunds[{i}]"), e.reason))?;
                refunded = crate::domain::money::add(refunded, amount)
                    .map_err(|e| map_error(&format!("refunds[{i}]"), e.to_string()))?;
            }
        }
    }
    let mut lines = Vec::new();
    for (i, line) in items(v, "line_items").enumerate() {
        let field = |f: &str| format!("line_items[{i}].{f}");
        let quantity = count(line, "quantity").ok_or_else(|| map_error(&field("quantity"), "not a count"))?;
        let unit = money(line, "price", &currency).map_err(|e| map_error(&field("price"), e.reason))?;
        let discount =
            money(line, "total_discount", &currency).map_err(|e| map_error(&field("total_discount"), e.reason))?;
        let total_minor = crate::domain::money::line_total(unit, quantity, discount)
            .map_err(|e| map_error(&field("price"), format!("the line's total {e}")))?;
        lines.push(LineRecord {
            external_id: gid_or_id(line, &field("id"))?,
            product_external_id: line.get("product_id").and_then(id_of),
            variant_external_id: line.get("variant_id").and_then(id_of),
            sku: text(line, "sku"),
            title: text(line, "name").or_else(|| text(line, "title")).unwrap_or_default(),
            quantity,
            unit_price_minor: unit,
            total_minor,
        });
    }
    Ok(OrderRecord {
        channel: Channel::Shopify,
        number: text(v, "name").unwrap_or_else(|| external_id.clone()),
        external_id,
        status: order_status(financial.as_deref(), fulfillment.as_deref(), cancelled_at.is_some()),
        raw_status: financial.clone().unwrap_or_else(|| "pending".to_owned()),
        financial_status: financial,
        fulfillment_status: fulfillment,
        total_minor: money(v, "total_price", &currency)?,
        subtotal_minor: money(v, "subtotal_price", &currency)?,
        tax_minor: money(v, "total_tax", &currency)?,
        shipping_minor: shipping,
        discount_minor: money(v, "total_discounts", &currency)?,
        refunded_minor: refunded,
        customer_external_id: v.get("customer").and_then(|c| gid_or_id(c, "customer.id").ok()),
        email: text(v, "email").or_else(|| text(v, "contact_email")),
        placed_at: time(v, "processed_at").unwrap_or(created),
        cancelled_at,
        updated_at: time(v, "updated_at").unwrap_or(created),
        test: v.get("test").and_then(Value::as_bool).unwrap_or(false),
        currency,
        lines,
    })
}

/// A product; its variants' prices are in the shop's currency (`shop_currency`, from
/// the shop resource: products do not carry it).
pub fn product(v: &Value, shop_currency: &str) -> Result<ProductRecord, MapError> {
    let raw_status = text(v, "status").unwrap_or_else(|| "active".to_owned());
    let status = match raw_status.as_str() {
        "draft" => ProductStatus::Draft,
        "archived" => ProductStatus::Archived,
        _ => ProductStatus::Active,
    };
    let mut variants = Vec::new();
    for (i, variant) in items(v, "variants").enumerate() {
        let field = |f: &str| format!("variants[{i}].{f}");
        variants.push(VariantRecord {
            external_id: gid_or_id(variant, &field("id"))?,
            title: text(variant, "title").unwrap_or_default(),
            sku: text(variant, "sku"),
            price_minor: money(variant, "price", shop_currency).map_err(|e| map_error(&field("price"), e.reason))?,
            currency: shop_currency.to_owned(),
            inventory_quantity: count(variant, "inventory_quantity"),
        });
    }
    let created = time(v, "created_at");
    Ok(ProductRecord {
        channel: Channel::Shopify,
        external_id: gid_or_id(v, "id")?,
        title: text(v, "title").ok_or_else(|| map_error("title", "missing"))?,
        status,
        raw_status,
        vendor: text(v, "vendor"),
        product_type: text(v, "product_type"),
        handle: text(v, "handle"),
        tags: text(v, "tags")
            .map(|t| {
                t.split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default(),
        updated_at: updated_at(v, "updated_at", created)?,
        created_at: created,
        variants,
    })
}

const CUSTOMER: CustomerFields = CustomerFields {
    channel: Channel::Shopify,
    address: "default_address",
    phone_in_address: false,
    country: "country_code",
    created: "created_at",
    updated: "updated_at",
};

pub fn customer(v: &Value) -> Result<CustomerRecord, MapError> {
    CUSTOMER.customer(v, gid_or_id(v, "id")?)
}

// --- Admin REST API paging -------------------------------------------------------------------

/// The shop resource: its `currency` at [`SHOP_CURRENCY`] (products do not carry one).
pub const SHOP_PATH: &str = "/admin/api/2025-01/shop.json";
pub const SHOP_CURRENCY: &str = "/shop/currency";

/// The first page of `resource` (`orders`, `products`, `customers`) changed since `since`
/// (RFC 3339), oldest change first; at most 250 records a page (Shopify's maximum).
pub fn first_page(resource: &str, since: Option<&str>, page_size: u32) -> String {
    let status = if resource == "orders" { "&status=any" } else { "" };
    let since = since.map(|s| format!("&updated_at_min={s}")).unwrap_or_default();
    format!(
        "/admin/api/2025-01/{resource}.json?limit={}{status}{since}&order=updated_at%20asc",
        page_size.min(250)
    )
}

/// `rel="next"` of a Link header, as a path and query under the same host (a link to another
/// host is not followed).
pub fn next_page(link: &str, base_host: &str) -> Option<String> {
    link.split(',').find_map(|part| {
        let (url, params) = part.split_once(';')?;
        if !params.contains("rel=\"next\"") {
            return None;
        }
        let url = url::Url::parse(url.trim().trim_start_matches('<').trim_end_matches('>')).ok()?;
        if url.host_str()? != base_host {
            return None;
        }
        Some(match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        })
    })
}

/// A page's records: the one array of the answer's object (`{"orders": [...]}`).
pub fn records(body: &Value) -> Vec<Value> {
    body.as_object()
        .and_then(|o| o.values().find_map(Value::as_array))
        .cloned()
        .unwrap_or_default()
}

/// Shopify's leaky bucket (`X-Shopify-Shop-Api-Call-Limit: 38/40`) is nearly full: time to
/// slow down before it answers 429.
pub fn bucket_nearly_full(headers: &reqwest::header::HeaderMap) -> bool {
    headers
        .get("x-shopify-shop-api-call-limit")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once('/'))
        .and_then(|(u, s)| Some((u.trim().parse::<u32>().ok()?, s.trim().parse::<u32>().ok()?)))
        .is_some_and(|(used, size)| used + 2 >= size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_line_total_beyond_i64_is_a_mapping_error_not_a_wrapped_amount() {
        let v = json!({"id": 1, "currency": "USD", "created_at": "2022-01-01T10:00:00Z",
            "total_price": "1.00", "subtotal_price": "1.00", "total_tax": "0.00", "total_discounts": "0.00",
            "line_items": [{"id": 7, "quantity": 2_000_000_000, "price": "9999999999999.99", "total_discount": "0.00"}]});
        let err = order(&v).unwrap_err();
        assert_eq!(err.field, "line_items[0].price");
        assert!(err.reason.contains("out of range"), "{}", err.reason);
    }

    #[test]
    fn an_order_maps_with_exact_money_ids_and_status() {
        let v = json!({
            "id": 820982911946154500_u64, "admin_graphql_api_id": "gid://shopify/Order/820982911946154508",
            "name": "#1001", "currency": "EUR", "financial_status": "paid", "fulfillment_status": "fulfilled",
            "total_price": "404.95", "subtotal_price": "394.95", "total_tax": "0.00", "total_discounts": "20.00",
            "total_shipping_price_set": {"shop_money": {"amount": "10.00", "currency_code": "EUR"}},
            "created_at": "2021-12-31T19:00:00-05:00", "updated_at": "2022-01-01T10:00:00-05:00",
            "customer": {"id": 1, "admin_graphql_api_id": "gid://shopify/Customer/115310627314723954"},
            "line_items": [{"id": 1, "admin_graphql_api_id": "gid://shopify/LineItem/866550311766439020",
                            "product_id": 632910392, "variant_id": null, "sku": "S", "name": "Shirt",
                            "quantity": 2, "price": "199.99", "total_discount": "5.00"}],
            "refunds": [{"transactions": [{"kind": "refund", "status": "success", "amount": "75.00"},
                                          {"kind": "refund", "status": "failure", "amount": "9.00"}]}]
        });
        let o = order(&v).unwrap();
        assert_eq!(o.external_id, "820982911946154508");
        assert_eq!(o.customer_external_id.as_deref(), Some("115310627314723954"));
        assert_eq!(
            (o.total_minor, o.shipping_minor, o.discount_minor, o.refunded_minor),
            (40495, 1000, 2000, 7500)
        );
        assert_eq!(o.status, OrderStatus::Fulfilled);
        assert_eq!(o.placed_at.to_rfc3339(), "2022-01-01T00:00:00+00:00");
        let line = &o.lines[0];
        assert_eq!(line.external_id, "866550311766439020");
        assert_eq!(
            (
                line.unit_price_minor,
                line.total_minor,
                line.variant_external_id.clone()
            ),
            (19999, 39498, None)
        );
        assert_eq!(order_status(Some("paid"), None, true), OrderStatus::Cancelled);
        assert_eq!(order_status(Some("voided"), None, false), OrderStatus::Cancelled);
        assert_eq!(order_status(Some("authorized"), None, false), OrderStatus::Pending);
        assert!(order(&json!({"id": 1, "currency": "EUR", "created_at": "x"})).is_err());
        assert!(
            order(&json!({"id": 1, "currency": "EUR", "created_at": "2021-12-31T19:00:00Z", "total_price": "1.005"}))
                .is_err()
        );
    }

    #[test]
    fn a_customer_takes_its_own_phone_and_the_default_address_place() {
        // Given a customer with a phone of its own and a default address.
        let v = json!({"id": 207119551, "admin_graphql_api_id": "gid://shopify/Customer/207119551",
            "email": "bob.norman@mail.example.com", "first_name": "Bob", "last_name": "Norman", "phone": "+16136120707",
            "created_at": "2024-01-01T10:00:00-05:00", "updated_at": "2024-01-02T10:00:00-05:00",
            "default_address": {"city": "Ottawa", "country_code": "CA", "phone": "555-625-1199"}});
        // When it is mapped.
        let c = customer(&v).unwrap();
        // Then the phone is its own, the place the address's, the last change its update.
        assert_eq!((c.external_id.as_str(), c.channel), ("207119551", Channel::Shopify));
        assert_eq!(
            (c.phone.as_deref(), c.city.as_deref(), c.country.as_deref()),
            (Some("+16136120707"), Some("Ottawa"), Some("CA"))
        );
        assert_eq!(c.updated_at.to_rfc3339(), "2024-01-02T15:00:00+00:00");
        assert_eq!(customer(&json!({"id": 1})).unwrap_err().field, "updated_at");
    }
}
