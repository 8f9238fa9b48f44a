//! Secrets we hand out (API keys, invitation tokens): random, shown once, stored only as a
//! SHA-256 hash. They carry 128+ bits of entropy, so a plain hash is the right storage.
use sha2::{Digest, Sha256};

/// `n` random bytes as lowercase hex.
pub fn random_hex(n: usize) -> anyhow::Result<String> {
    let mut bytes = vec![0u8; n];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("random source failed: {e}"))?;
    Ok(hex::encode(bytes))
}

pub fn sha256(value: &str) -> Vec<u8> {
    sha256_bytes(value.as_bytes())
}

pub fn sha256_bytes(value: &[u8]) -> Vec<u8> {
    Sha256::digest(value).to_vec()
}

/// A new API key: `pk_<8-hex prefix>_<32-hex secret>`. The prefix is shown in lists so people
/// can tell keys apart; the whole string is the credential.
pub struct NewApiKey {
    pub token: String,
    pub prefix: String,
    pub hash: Vec<u8>,
}

pub fn new_api_key() -> anyhow::Result<NewApiKey> {
    let prefix = random_hex(4)?;
    let token = format!("pk_{prefix}_{}", random_hex(16)?);
    let hash = sha256(&token);
    Ok(NewApiKey { token, prefix, hash })
}

/// Whether a bearer credential is shaped like an API key (rather than a JWT).
pub fn looks_like_api_key(bearer: &str) -> bool {
    bearer.starts_with("pk_") && bearer.len() <= 128 && bearer.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// An invitation token (URL-safe hex, 256 bits) and its hash.
pub fn new_invitation_token() -> anyhow::Result<(String, Vec<u8>)> {
    let token = random_hex(32)?;
    let hash = sha256(&token);
    Ok((token, hash))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_keys_are_unique_and_recognisable() {
        let a = new_api_key().unwrap();
        let b = new_api_key().unwrap();
        assert_ne!(a.token, b.token);
        assert!(looks_like_api_key(&a.token));
        assert!(a.token.starts_with(&format!("pk_{}_", a.prefix)));
        assert_eq!(a.hash, sha256(&a.token));
        assert!(!looks_like_api_key("eyJhbGciOiJSUzI1NiJ9.e30.sig"));
        assert!(!looks_like_api_key("pk_../../etc"));
    }
}
