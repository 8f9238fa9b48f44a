//! WooCommerce REST API v3 JSON (resources and webhook bodies) → the model. Times are the
//! `*_gmt` fields (the others are the site's local time, without an offset); totals are
//! strings, line prices numbers; `customer_id` 0 is a guest; drafts are not orders yet.
use serde_json::Value;

use crate::services::ecommerce::{
    Channel, CustomerFields, CustomerRecord, LineRecord, MapError, OrderRecord, OrderStatus, ProductRecord,
    ProductStatus, VariantRecord, count, currency_of, id_of, items, map_error, money, text, time, updated_at,
};

/// The resource's `id` (`field` names it in the error).
fn id(value: &Value, field: &str) -> Result<String, MapError> {
    value.get("id").and_then(id_of).ok_or_else(|| map_error(field, "no id"))
}

/// `None`: not an order yet (`checkout-draft`, `draft`, `auto-draft`).
pub fn order_status(status: &str) -> Option<OrderStatus> {
    Some(match status {
        "processing" => OrderStatus::Paid,
        "completed" => OrderStatus::Fulfilled,
        "refunded" => OrderStatus::Refunded,
        "cancelled" | "trash" => OrderStatus::Cancelled,
        "failed" => OrderStatus::Failed,
        "checkout-draft" | "draft" | "auto-draft" => return None,
        // pending, on-hold, and statuses of plugins.
        _ => OrderStatus::Pending,
    })
}

/// `Ok(None)` for a draft.
pub fn order(v: &Value) -> Result<Option<OrderRecord>, MapError> {
    let raw_status = text(v, "status").ok_or_else(|| map_error("status", "missing"))?;
    let Some(mut status) = order_status(&raw_status) else {
        return Ok(None);
    };
    let currency = currency_of(v, "currency")?;
    let external_id = id(v, "id")?;
    let created = time(v, "date_created_gmt").ok_or_else(|| map_error("date_created_gmt", "missing or not a time"))?;
    let mut lines = Vec::new();
    let mut subtotal = 0;
    for (i, line) in items(v, "line_items").enumerate() {
        let field = |f: &str| format!("line_items[{i}].{f}");
        let quantity = count(line, "quantity").ok_or_else(|| map_error(&field("quantity"), "not a count"))?;
        let line_subtotal = money(line, "subtotal", &currency).map_err(|e| map_error(&field("subtotal"), e.reason))?;
        subtotal = crate::domain::money::add(subtotal, line_subtotal)
            .map_err(|e| map_error(&field("subtotal"), e.to_string()))?;
        lines.push(LineRecord {
            external_id: id(line, &field("id"))?,
            product_external_id: line.get("product_id").and_then(id_of),
            variant_external_id: line.get("variation_id").and_then(id_of),
            sku: text(line, "sku"),
            title: text(line, "name").unwrap_or_default(),
            quantity,
            unit_price_minor: money(line, "price", &currency).map_err(|e| map_error(&field("price"), e.reason))?,
            total_minor: money(line, "total", &currency).map_err(|e| map_error(&field("total"), e.reason))?,
        });
    }
    // Refunds are listed with negative totals.
    let mut refunded = 0;
    for (i, refund) in items(v, "refunds").enumerate() {
        refunded -=
            money(refund, "total", &currency).map_err(|e| map_error(&format!("refunds[{i}].total"), e.reason))?;
    }
    let total = money(v, "total", &currency)?;
    if refunded > 0 && refunded < total && status != OrderStatus::Refunded {
        status = OrderStatus::PartiallyRefunded;
    }
    let billing = v.get("billing").unwrap_or(&Value::Null);
    Ok(Some(OrderRecord {
        channel: Channel::Woocommerce,
        number: text(v, "number").unwrap_or_else(|| external_id.clone()),
        external_id,
        status,
        raw_status,
        financial_status: None,
        fulfillment_status: None,
        total_minor: total,
        subtotal_minor: subtotal,
        tax_minor: money(v, "total_tax", &currency)?,
        shipping_minor: money(v, "shipping_total", &currency)?,
        discount_minor: money(v, "discount_total", &currency)?,
        refunded_minor: refunded,
        customer_external_id: v.get("customer_id").and_then(id_of),
        email: text(billing, "email"),
        placed_at: created,
        cancelled_at: None,
        updated_at: time(v, "date_modified_gmt").unwrap_or(created),
        test: false,
        currency,
        lines,
    }))
}

/// A product (a simple product is its own only variant); prices in the store's currency.
pub fn product(v: &Value, store_currency: &str) -> Result<ProductRecord, MapError> {
    let raw_status = text(v, "status").unwrap_or_else(|| "publish".to_owned());
    let status = match raw_status.as_str() {
        "publish" => ProductStatus::Active,
        "trash" => ProductStatus::Archived,
        _ => ProductStatus::Draft,
    };
    let external_id = id(v, "id")?;
    let variants = if text(v, "type").as_deref() == Some("variable") {
        Vec::new()
    } else {
        vec![VariantRecord {
            external_id: external_id.clone(),
            title: text(v, "name").unwrap_or_default(),
            sku: text(v, "sku"),
            price_minor: money(v, "price", store_currency)?,
            currency: store_currency.to_owned(),
            inventory_quantity: count(v, "stock_quantity"),
        }]
    };
    let created = time(v, "date_created_gmt");
    Ok(ProductRecord {
        channel: Channel::Woocommerce,
        external_id,
        title: text(v, "name").ok_or_else(|| map_error("name", "missing"))?,
        status,
        raw_status,
        vendor: None,
        product_type: text(v, "type"),
        handle: text(v, "slug"),
        tags: items(v, "tags").filter_map(|t| text(t, "name")).collect(),
        updated_at: updated_at(v, "date_modified_gmt", created)?,
        created_at: created,
        variants,
    })
}

/// A variation of a variable product, as `GET /products/{id}/variations` lists them.
pub fn variation(v: &Value, store_currency: &str) -> Result<VariantRecord, MapError> {
    let title = items(v, "attributes")
        .filter_map(|a| text(a, "option"))
        .collect::<Vec<_>>()
        .join(" / ");
    Ok(VariantRecord {
        external_id: id(v, "id")?,
        title,
        sku: text(v, "sku"),
        price_minor: money(v, "price", store_currency)?,
        currency: store_currency.to_owned(),
        inventory_quantity: count(v, "stock_quantity"),
    })
}

const CUSTOMER: CustomerFields = CustomerFields {
    channel: Channel::Woocommerce,
    address: "billing",
    phone_in_address: true,
    country: "country",
    created: "date_created_gmt",
    updated: "date_modified_gmt",
};

pub fn customer(v: &Value) -> Result<CustomerRecord, MapError> {
    CUSTOMER.customer(v, id(v, "id")?)
}

// --- REST API v3 paging -----------------------------------------------------------------------

/// The general setting that holds the store's currency (in its `value`).
pub const CURRENCY_PATH: &str = "/wp-json/wc/v3/settings/general/woocommerce_currency";

/// The first page of `resource` changed since `since` (RFC 3339, GMT), oldest change first; at
/// most 100 records a page (WooCommerce's maximum). Customers have no `modified_after`: every
/// pass reads them all (the mirror's newest-wins keeps that cheap).
pub fn first_page(resource: &str, since: Option<&str>, page_size: u32) -> String {
    let since = match (since, resource) {
        (Some(s), "orders" | "products") => format!("&modified_after={s}&dates_are_gmt=true"),
        _ => String::new(),
    };
    let order = if resource == "customers" {
        "orderby=id"
    } else {
        "orderby=modified"
    };
    format!(
        "/wp-json/wc/v3/{resource}?per_page={}&page=1&{order}&order=asc{since}",
        page_size.min(100)
    )
}

/// The first page of a variable product's variations.
pub fn variations_path(product_id: &str) -> String {
    format!("/wp-json/wc/v3/products/{product_id}/variations?per_page=100&page=1")
}

/// The page after `current` (its `page` parameter plus one), unless `X-WP-TotalPages` says
/// `current` was the last.
pub fn next_page(current: &str, total_pages: Option<u64>) -> Option<String> {
    let url = url::Url::parse(&format!("http://x{current}")).ok()?;
    let page: u64 = url.query_pairs().find(|(k, _)| k == "page")?.1.parse().ok()?;
    if total_pages.is_some_and(|t| page >= t) {
        return None;
    }
    // The `page` parameter itself: `per_page=100` holds the text `page=1` too.
    let query: String = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(url.query_pairs().map(|(k, v)| {
            let v = if k == "page" {
                (page + 1).to_string()
            } else {
                v.into_owned()
            };
            (k.into_owned(), v)
        }))
        .finish();
    Some(format!("{}?{query}", url.path()))
}

/// A page's records: the answer is the array.
pub fn records(body: &Value) -> Vec<Value> {
    body.as_array().cloned().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn orders_map_with_gmt_times_number_prices_and_refunds() {
        let v = json!({
            "id": 727, "number": "727", "status": "processing", "currency": "USD", "customer_id": 0,
            "total": "29.35", "total_tax": "1.35", "shipping_total": "10.00", "discount_total": "0.00",
            "date_created": "2017-03-22T16:28:02", "date_created_gmt": "2017-03-22T19:28:02",
            "date_modified_gmt": "2017-03-22T19:30:35",
            "billing": {"email": "john.doe@example.com"},
            "line_items": [{"id": 315, "name": "Woo Single #1", "product_id": 93, "variation_id": 0, "quantity": 2,
                            "subtotal": "6.00", "total": "6.00", "price": 3, "sku": ""},
                           {"id": 316, "name": "Ship Your Idea", "product_id": 22, "variation_id": 23, "quantity": 1,
                            "subtotal": "12.00", "total": "12.00", "price": 12, "sku": "Bar3"}],
            "refunds": [{"id": 726, "total": "-10.00"}]
        });
        let o = order(&v).unwrap().unwrap();
        assert_eq!(o.placed_at.to_rfc3339(), "2017-03-22T19:28:02+00:00");
        assert_eq!((o.total_minor, o.subtotal_minor, o.refunded_minor), (2935, 1800, 1000));
        assert_eq!(o.status, OrderStatus::PartiallyRefunded);
        assert_eq!(o.raw_status, "processing");
        assert_eq!(o.customer_external_id, None);
        assert_eq!(o.lines[0].variant_external_id, None);
        assert_eq!(o.lines[1].variant_external_id.as_deref(), Some("23"));
        assert_eq!((o.lines[0].unit_price_minor, o.lines[0].sku.clone()), (300, None));
        assert_eq!(order(&json!({"status": "checkout-draft"})).unwrap(), None);
        assert_eq!(order_status("on-hold"), Some(OrderStatus::Pending));
    }

    #[test]
    fn a_customer_takes_phone_and_place_from_billing_and_falls_back_to_its_creation_time() {
        // Given a customer never modified, with a billing address.
        let v = json!({"id": 25, "email": "john.doe@example.com", "first_name": "John", "last_name": "Doe",
            "date_created_gmt": "2017-03-21T19:09:28", "billing": {"phone": "(555) 555-5555", "city": "San Francisco",
            "country": "US"}});
        // When it is mapped.
        let c = customer(&v).unwrap();
        // Then the billing address gives phone and place, the creation the last change.
        assert_eq!((c.external_id.as_str(), c.channel), ("25", Channel::Woocommerce));
        assert_eq!(
            (c.phone.as_deref(), c.city.as_deref(), c.country.as_deref()),
            (Some("(555) 555-5555"), Some("San Francisco"), Some("US"))
        );
        assert_eq!(Some(c.updated_at), c.created_at);
        // And without any time it is refused, naming the field.
        assert_eq!(customer(&json!({"id": 25})).unwrap_err().field, "date_modified_gmt");
    }
}
