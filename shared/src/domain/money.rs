//! Money as integer minor units of an ISO 4217 currency, from the decimal strings shops send
//! (`"404.95"`, `"-10.00"`, `"0.9"`, `"12"`): exact, never through a float.

/// Digits after the decimal point of a currency (ISO 4217): 0 for JPY, KRW, ...; 3 for KWD,
/// BHD, ...; 2 for the rest.
pub fn exponent(currency: &str) -> u32 {
    match currency {
        "BIF" | "CLP" | "DJF" | "GNF" | "ISK" | "JPY" | "KMF" | "KRW" | "PYG" | "RWF" | "UGX" | "UYI" | "VND"
        | "VUV" | "XAF" | "XOF" | "XPF" => 0,
        "BHD" | "IQD" | "JOD" | "KWD" | "LYD" | "OMR" | "TND" => 3,
        _ => 2,
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("{0:?} is not a decimal amount")]
    NotDecimal(String),
    #[error("{0:?} has more decimals than {1} allows")]
    TooPrecise(String, String),
    #[error("{0:?} is out of range")]
    OutOfRange(String),
}

/// `"404.95"` USD → 40495. Extra decimals are accepted only when they are zeros.
pub fn to_minor(amount: &str, currency: &str) -> Result<i64, MoneyError> {
    let raw = amount.trim();
    let bad = || MoneyError::NotDecimal(raw.to_owned());
    let (negative, digits) = match raw.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, raw.strip_prefix('+').unwrap_or(raw)),
    };
    let (whole, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if (whole.is_empty() && frac.is_empty())
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    let exp = exponent(currency) as usize;
    let (kept, dropped) = frac.split_at(frac.len().min(exp));
    if dropped.bytes().any(|b| b != b'0') {
        return Err(MoneyError::TooPrecise(raw.to_owned(), currency.to_owned()));
    }
    let mut text = String::with_capacity(whole.len() + exp);
    text.push_str(if whole.is_empty() { "0" } else { whole });
    text.push_str(kept);
    for _ in kept.len()..exp {
        text.push('0');
    }
    let value: i64 = text.parse().map_err(|_| MoneyError::OutOfRange(raw.to_owned()))?;
    if value > 10_i64.pow(15) {
        return Err(MoneyError::OutOfRange(raw.to_owned()));
    }
    Ok(if negative { -value } else { value })
}

/// A line's total: `unit * quantity - discount`, checked (amounts are at most 10^15 minor
/// units, but a quantity of two billion times that is not an i64: it must not wrap).
pub fn line_total(unit: i64, quantity: i32, discount: i64) -> Result<i64, MoneyError> {
    unit.checked_mul(i64::from(quantity))
        .and_then(|t| t.checked_sub(discount))
        .ok_or_else(|| MoneyError::OutOfRange(format!("{unit} x {quantity} - {discount}")))
}

/// `a + b`, checked.
pub fn add(a: i64, b: i64) -> Result<i64, MoneyError> {
    a.checked_add(b)
        .ok_or_else(|| MoneyError::OutOfRange(format!("{a} + {b}")))
}

/// An amount that may come as a JSON string or number (WooCommerce sends both).
pub fn value_to_minor(value: &serde_json::Value, currency: &str) -> Result<i64, MoneyError> {
    match value {
        serde_json::Value::String(s) => to_minor(s, currency),
        serde_json::Value::Number(n) => to_minor(&n.to_string(), currency),
        serde_json::Value::Null => Ok(0),
        other => Err(MoneyError::NotDecimal(other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_totals_and_sums_never_wrap() {
        assert_eq!(line_total(19999, 2, 500), Ok(39498));
        assert!(matches!(
            line_total(10_i64.pow(15), i32::MAX, 0),
            Err(MoneyError::OutOfRange(_))
        ));
        assert!(matches!(line_total(i64::MIN / 2, 3, 0), Err(MoneyError::OutOfRange(_))));
        assert!(matches!(line_total(0, 1, i64::MIN), Err(MoneyError::OutOfRange(_))));
        assert_eq!(add(1, 2), Ok(3));
        assert!(matches!(add(i64::MAX, 1), Err(MoneyError::OutOfRange(_))));
    }

    #[test]
    fn decimal_strings_to_minor_units_exactly() {
        for (amount, currency, minor) in [
            ("404.95", "USD", 40495),
            ("0.9", "USD", 90),
            ("-10.00", "USD", -1000),
            ("12", "EUR", 1200),
            ("0.0", "USD", 0),
            (".5", "USD", 50),
            ("1500", "JPY", 1500),
            ("1500.00", "JPY", 1500),
            ("1.234", "KWD", 1234),
            ("19.990", "USD", 1999),
            ("0.1", "USD", 10),
            ("4503599627370496.01", "XXX", 0),
        ] {
            if currency == "XXX" {
                assert!(to_minor(amount, "USD").is_err());
                continue;
            }
            assert_eq!(to_minor(amount, currency), Ok(minor), "{amount} {currency}");
        }
        for bad in ["", "-", "1,00", "1.2.3", "abc", "1e3", " .", "--1"] {
            assert!(to_minor(bad, "USD").is_err(), "{bad:?}");
        }
        assert!(matches!(to_minor("1.005", "USD"), Err(MoneyError::TooPrecise(..))));
        assert!(matches!(to_minor("1500.5", "JPY"), Err(MoneyError::TooPrecise(..))));
        assert_eq!(value_to_minor(&serde_json::json!(12), "USD"), Ok(1200));
        assert_eq!(value_to_minor(&serde_json::json!(29.35), "USD"), Ok(2935));
        assert_eq!(value_to_minor(&serde_json::json!("29.35"), "USD"), Ok(2935));
    }
}
