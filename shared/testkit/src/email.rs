//! Email marketing's world: SendGrid's event webhook signatures (a P-256 key pair made for the
//! test, signing as SendGrid does) and its event bodies.
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};
use serde_json::Value;

/// A P-256 key pair, its public half as SendGrid shows it (base64 DER SubjectPublicKeyInfo).
pub struct SendgridKey {
    pub pair: EcdsaKeyPair,
    pub public: String,
}

impl Default for SendgridKey {
    fn default() -> Self {
        Self::new()
    }
}

impl SendgridKey {
    #[allow(clippy::expect_used)]
    pub fn new() -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).expect("a P-256 key");
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng).expect("its pair");
        // The fixed SPKI header of a P-256 key, then the uncompressed point.
        let mut spki = vec![
            0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01, 0x06, 0x08, 0x2A, 0x86, 0x48,
            0xCE, 0x3D, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
        ];
        spki.extend_from_slice(pair.public_key().as_ref());
        Self {
            pair,
            public: B64.encode(spki),
        }
    }

    /// SendGrid's signature of a delivery: base64 DER ECDSA over timestamp + body.
    #[allow(clippy::expect_used)]
    pub fn sign(&self, timestamp: &str, body: &[u8]) -> String {
        let mut signed = timestamp.as_bytes().to_vec();
        signed.extend_from_slice(body);
        B64.encode(
            self.pair
                .sign(&SystemRandom::new(), &signed)
                .expect("a signature")
                .as_ref(),
        )
    }
}

/// A SendGrid body as SendGrid writes it: one event a line, CRLF between and at the end.
pub fn sg_body(events: &[Value]) -> Vec<u8> {
    let lines: Vec<String> = events.iter().map(Value::to_string).collect();
    format!("[{}]\r\n", lines.join(",\r\n")).into_bytes()
}
