//! Webhook signatures, verified on the exact raw body bytes, in constant time.
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// HMAC-SHA256 of the concatenated `parts`, keyed by `key`.
pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC takes a key of any length; `new_from_slice` cannot fail for it.
    let mut mac = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => return [0; 32],
    };
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// Equal in constant time (for equal lengths; lengths are not secret).
pub fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// Stripe's `Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>...][,v0=...]` scheme: HMAC-SHA256 of
/// `"{t}.{raw body}"` keyed by the whole endpoint secret string (`whsec_...`, not decoded).
/// Accepted when ANY v1 matches ANY configured secret (secret rotation: Stripe sends one v1 per
/// active secret) and `|now - t| <= tolerance` in either direction. Other schemes are ignored.
pub mod stripe {
    use super::{hmac_sha256, same};

    pub const DEFAULT_TOLERANCE_SECS: i64 = 300;
    const MAX_HEADER_LEN: usize = 4096;

    #[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
    pub enum SignatureError {
        #[error("the Stripe-Signature header is missing or malformed")]
        Malformed,
        #[error("the Stripe-Signature header has no v1 signature")]
        NoV1,
        #[error("the signature timestamp is outside the tolerance")]
        Timestamp,
        #[error("no v1 signature matches")]
        Mismatch,
    }

    /// The parsed header: its timestamp and every v1 signature (decoded).
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Header {
        pub timestamp: i64,
        pub v1: Vec<[u8; 32]>,
    }

    pub fn parse(header: &str) -> Result<Header, SignatureError> {
        if header.len() > MAX_HEADER_LEN {
            return Err(SignatureError::Malformed);
        }
        let mut timestamp = None;
        let mut v1 = Vec::new();
        for item in header.split(',') {
            let Some((key, value)) = item.trim().split_once('=') else {
                return Err(SignatureError::Malformed);
            };
            match key {
                "t" => {
                    if timestamp.is_some() || value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
                        return Err(SignatureError::Malformed);
                    }
                    timestamp = Some(value.parse::<i64>().map_err(|_| SignatureError::Malformed)?);
                }
                "v1" => {
                    // A v1 that is not 32 bytes of hex can never match: skip it, as Stripe's libraries do.
                    let mut sig = [0u8; 32];
                    if hex::decode_to_slice(value, &mut sig).is_ok() {
                        v1.push(sig);
                    }
                }
                _ => {}
            }
        }
        let timestamp = timestamp.ok_or(SignatureError::Malformed)?;
        if v1.is_empty() {
            return Err(SignatureError::NoV1);
        }
        Ok(Header { timestamp, v1 })
    }

    /// Verifies `body` (the exact bytes received) against the header with any of `secrets`.
    /// Returns the signed timestamp.
    pub fn verify(
        header: &str,
        body: &[u8],
        secrets: &[&str],
        now: i64,
        tolerance: i64,
    ) -> Result<i64, SignatureError> {
        let parsed = parse(header)?;
        if now.abs_diff(parsed.timestamp) > tolerance.unsigned_abs() {
            return Err(SignatureError::Timestamp);
        }
        let t = parsed.timestamp.to_string();
        let matched = secrets.iter().any(|secret| {
            let expected = hmac_sha256(secret.as_bytes(), &[t.as_bytes(), b".", body]);
            // Check every candidate: no early exit that would tell which one matched.
            parsed.v1.iter().fold(false, |acc, sig| acc | same(sig, &expected))
        });
        if matched {
            Ok(parsed.timestamp)
        } else {
            Err(SignatureError::Mismatch)
        }
    }

    /// A header for `body` signed with `secret` at `t` (tests, local tools, the benchmark).
    pub fn sign(secret: &str, t: i64, body: &[u8]) -> String {
        let sig = hmac_sha256(secret.as_bytes(), &[t.to_string().as_bytes(), b".", body]);
        format!("t={t},v1={}", hex::encode(sig))
    }
}

#[cfg(test)]
mod tests {
    use super::stripe::{SignatureError, sign, verify};

    const NEW: &str = "whsec_new";
    const OLD: &str = "whsec_old";
    const BODY: &[u8] = br#"{"id":"evt_1","type":"invoice.paid"}"#;

    #[test]
    fn a_signature_over_the_exact_bytes_verifies_within_tolerance() {
        let header = sign(NEW, 1_000, BODY);
        assert_eq!(verify(&header, BODY, &[NEW], 1_000, 300), Ok(1_000));
        assert_eq!(verify(&header, BODY, &[NEW], 1_300, 300), Ok(1_000));
        assert_eq!(verify(&header, BODY, &[NEW], 700, 300), Ok(1_000));
    }

    #[test]
    fn stale_and_future_timestamps_are_refused() {
        let header = sign(NEW, 1_000, BODY);
        assert_eq!(
            verify(&header, BODY, &[NEW], 1_301, 300),
            Err(SignatureError::Timestamp)
        );
        assert_eq!(verify(&header, BODY, &[NEW], 699, 300), Err(SignatureError::Timestamp));
    }

    #[test]
    fn any_v1_with_any_secret_matches_during_rotation() {
        let with_old = sign(OLD, 1_000, BODY);
        let with_new = sign(NEW, 1_000, BODY);
        let both = format!("{with_old},v1={}", with_new.split("v1=").nth(1).unwrap());
        assert!(verify(&both, BODY, &[NEW], 1_000, 300).is_ok());
        assert!(verify(&both, BODY, &[OLD], 1_000, 300).is_ok());
        assert!(verify(&with_old, BODY, &[NEW, OLD], 1_000, 300).is_ok());
        assert_eq!(
            verify(&with_old, BODY, &[NEW], 1_000, 300),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn forged_or_malformed_headers_are_refused() {
        let header = sign(NEW, 1_000, BODY);
        let mut body = BODY.to_vec();
        body.push(b'\n');
        assert_eq!(
            verify(&header, &body, &[NEW], 1_000, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(&header.replace("t=1000", "t=1001"), BODY, &[NEW], 1_000, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(&header.replace("v1=", "v0="), BODY, &[NEW], 1_000, 300),
            Err(SignatureError::NoV1)
        );
        for bad in [
            "",
            "garbage",
            "t=,v1=00",
            "t=abc,v1=00",
            "t=-5,v1=00",
            "t=1,t=2,v1=00",
            "v1=00",
        ] {
            assert_eq!(
                verify(bad, BODY, &[NEW], 1_000, 300),
                Err(SignatureError::Malformed),
                "{bad:?}"
            );
        }
    }
}
