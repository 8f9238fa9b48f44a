//! The Stripe signature test vectors of ../shared/fixtures/stripe (generated for this project
//! over real webhook bodies) all pass. Skipped, saying so, where the fixtures are absent.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use serde_json::Value;
use sha2::{Digest, Sha256};
use shared::domain::signature::stripe::{SignatureError, verify};

#[test]
fn every_signature_test_vector_passes() {
    let Some(dir) = testkit::shared_fixtures("stripe") else {
        return;
    };
    let vectors: Value =
        serde_json::from_slice(&std::fs::read(dir.join("_signature-test-vectors__generated.json")).unwrap()).unwrap();
    let cases = vectors["cases"].as_array().unwrap();
    assert!(cases.len() >= 20);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let mut body = std::fs::read(dir.join(case["body_file"].as_str().unwrap())).unwrap();
        assert_eq!(
            hex::encode(Sha256::digest(&body)),
            case["body_sha256"].as_str().unwrap(),
            "{name}: body changed"
        );
        if let Some(mutation) = case["body_mutation"].as_str() {
            assert!(
                mutation.starts_with("append b'\\n'"),
                "{name}: unknown mutation {mutation}"
            );
            body.push(b'\n');
        }
        let result = verify(
            case["header"].as_str().unwrap(),
            &body,
            &[case["secret"].as_str().unwrap()],
            case["now"].as_i64().unwrap(),
            case["tolerance_s"].as_i64().unwrap(),
        );
        let expected = match case["expect"].as_str().unwrap() {
            "valid" => Ok(()),
            "reject_timestamp" => Err(SignatureError::Timestamp),
            "reject_signature" => Err(SignatureError::Mismatch),
            "reject_no_v1_signature" => Err(SignatureError::NoV1),
            "reject_malformed_header" => Err(SignatureError::Malformed),
            other => panic!("{name}: unknown expectation {other}"),
        };
        assert_eq!(result.map(|_| ()), expected, "{name}");
    }
}
