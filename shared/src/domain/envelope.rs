//! Envelope encryption of the secrets tenants give us (connector credentials): each secret is
//! sealed with AES-256-GCM under its own random data key, and the data key is stored wrapped by
//! a key-encryption key — a KMS key in AWS (`adapters::kms`), a local 32-byte key file in the
//! local stack (`LocalKek`). The associated data binds a sealed secret to its row (tenant and
//! kind): moved to another row, it no longer opens.
//!
//! Stored form (one `bytea`): `v1 | u16 len | key ref | u16 len | wrapped data key | 12-byte nonce
//! | ciphertext with its 16-byte tag`.
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};

const VERSION: u8 = 1;
pub const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 12;

#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("the sealed secret is malformed")]
    Malformed,
    #[error("the sealed secret does not open (wrong key or data, or tampered with)")]
    Open,
    #[error("the random source failed")]
    Random,
    #[error("the key service failed: {0}")]
    Kek(String),
}

/// A secret as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// Which key-encryption key wrapped the data key (`local:<id>` or the KMS key's ARN).
    pub key_ref: String,
    pub wrapped_key: Vec<u8>,
    pub nonce: [u8; NONCE_LEN],
    pub ciphertext: Vec<u8>,
}

fn random<const N: usize>() -> Result<[u8; N], EnvelopeError> {
    let mut out = [0u8; N];
    getrandom::fill(&mut out).map_err(|_| EnvelopeError::Random)?;
    Ok(out)
}

fn cipher(key: &[u8]) -> Result<LessSafeKey, EnvelopeError> {
    Ok(LessSafeKey::new(
        UnboundKey::new(&AES_256_GCM, key).map_err(|_| EnvelopeError::Malformed)?,
    ))
}

/// AES-256-GCM with a fresh random nonce: `(nonce, ciphertext || tag)`.
pub fn encrypt(key: &[u8], aad: &[u8], plaintext: &[u8]) -> Result<([u8; NONCE_LEN], Vec<u8>), EnvelopeError> {
    let nonce = random::<NONCE_LEN>()?;
    let mut out = plaintext.to_vec();
    cipher(key)?
        .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut out)
        .map_err(|_| EnvelopeError::Malformed)?;
    Ok((nonce, out))
}

pub fn decrypt(key: &[u8], aad: &[u8], nonce: &[u8; NONCE_LEN], ciphertext: &[u8]) -> Result<Vec<u8>, EnvelopeError> {
    let mut buf = ciphertext.to_vec();
    let plain = cipher(key)?
        .open_in_place(Nonce::assume_unique_for_key(*nonce), Aad::from(aad), &mut buf)
        .map_err(|_| EnvelopeError::Open)?;
    Ok(plain.to_vec())
}

/// A fresh data key.
pub fn data_key() -> Result<[u8; KEY_LEN], EnvelopeError> {
    random::<KEY_LEN>()
}

impl Sealed {
    /// Seals `plaintext` under `data_key`, recording the wrapped form of the key.
    pub fn seal(
        data_key: &[u8; KEY_LEN],
        key_ref: String,
        wrapped_key: Vec<u8>,
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<Self, EnvelopeError> {
        let (nonce, ciphertext) = encrypt(data_key, aad, plaintext)?;
        Ok(Self {
            key_ref,
            wrapped_key,
            nonce,
            ciphertext,
        })
    }

    pub fn open(&self, data_key: &[u8], aad: &[u8]) -> Result<Vec<u8>, EnvelopeError> {
        decrypt(data_key, aad, &self.nonce, &self.ciphertext)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = vec![VERSION];
        for part in [self.key_ref.as_bytes(), self.wrapped_key.as_slice()] {
            out.extend(u16::try_from(part.len()).unwrap_or(u16::MAX).to_be_bytes());
            out.extend(part);
        }
        out.extend(self.nonce);
        out.extend(&self.ciphertext);
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        fn take<'a>(rest: &mut &'a [u8], n: usize) -> Result<&'a [u8], EnvelopeError> {
            if rest.len() < n {
                return Err(EnvelopeError::Malformed);
            }
            let (head, tail) = rest.split_at(n);
            *rest = tail;
            Ok(head)
        }
        fn part<'a>(rest: &mut &'a [u8]) -> Result<&'a [u8], EnvelopeError> {
            let len = take(rest, 2)?;
            let len = u16::from_be_bytes(len.try_into().map_err(|_| EnvelopeError::Malformed)?);
            take(rest, usize::from(len))
        }
        let (&version, mut rest) = bytes.split_first().ok_or(EnvelopeError::Malformed)?;
        if version != VERSION {
            return Err(EnvelopeError::Malformed);
        }
        let key_ref = String::from_utf8(part(&mut rest)?.to_vec()).map_err(|_| EnvelopeError::Malformed)?;
        let wrapped_key = part(&mut rest)?.to_vec();
        let nonce: [u8; NONCE_LEN] = take(&mut rest, NONCE_LEN)?
            .try_into()
            .map_err(|_| EnvelopeError::Malformed)?;
        if rest.len() < 16 {
            return Err(EnvelopeError::Malformed);
        }
        Ok(Self {
            key_ref,
            wrapped_key,
            nonce,
            ciphertext: rest.to_vec(),
        })
    }
}

/// The local stack's key-encryption key: 32 bytes (64 hex characters in a file). It wraps each
/// data key with AES-256-GCM.
#[derive(Clone)]
pub struct LocalKek {
    key: [u8; KEY_LEN],
    /// `local:` and the first 8 hex characters of the key's SHA-256 (tells keys apart).
    pub key_ref: String,
}

const WRAP_AAD: &[u8] = b"portal data key";

impl LocalKek {
    pub fn from_hex(hex_key: &str) -> Result<Self, EnvelopeError> {
        let bytes = hex::decode(hex_key.trim()).map_err(|_| EnvelopeError::Malformed)?;
        let key: [u8; KEY_LEN] = bytes.try_into().map_err(|_| EnvelopeError::Malformed)?;
        let digest = super::secret::sha256_bytes(&key);
        Ok(Self {
            key,
            key_ref: format!("local:{}", hex::encode(digest.get(..4).unwrap_or_default())),
        })
    }

    /// A new data key: `(plaintext, wrapped)`.
    pub fn new_data_key(&self) -> Result<([u8; KEY_LEN], Vec<u8>), EnvelopeError> {
        let key = data_key()?;
        let (nonce, wrapped) = encrypt(&self.key, WRAP_AAD, &key)?;
        Ok((key, [nonce.as_slice(), &wrapped].concat()))
    }

    pub fn unwrap_key(&self, wrapped: &[u8]) -> Result<Vec<u8>, EnvelopeError> {
        if wrapped.len() < NONCE_LEN {
            return Err(EnvelopeError::Malformed);
        }
        let (nonce, body) = wrapped.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| EnvelopeError::Malformed)?;
        decrypt(&self.key, WRAP_AAD, &nonce, body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_secret_opens_only_with_its_key_and_row() {
        let kek = LocalKek::from_hex(&"11".repeat(32)).unwrap();
        let (key, wrapped) = kek.new_data_key().unwrap();
        let sealed = Sealed::seal(&key, kek.key_ref.clone(), wrapped, b"tenant-a/shopify", b"shpat_secret").unwrap();
        let stored = sealed.to_bytes();
        assert!(!stored.windows(12).any(|w| w == b"shpat_secret"));
        let back = Sealed::from_bytes(&stored).unwrap();
        assert_eq!(back, sealed);
        let key = kek.unwrap_key(&back.wrapped_key).unwrap();
        assert_eq!(back.open(&key, b"tenant-a/shopify").unwrap(), b"shpat_secret");
        assert!(matches!(back.open(&key, b"tenant-b/shopify"), Err(EnvelopeError::Open)));
        let other = LocalKek::from_hex(&"22".repeat(32)).unwrap();
        assert!(other.unwrap_key(&back.wrapped_key).is_err());
        let mut tampered = stored.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        let t = Sealed::from_bytes(&tampered).unwrap();
        assert!(t.open(&key, b"tenant-a/shopify").is_err());
        assert!(Sealed::from_bytes(&stored[..5]).is_err());
        assert!(LocalKek::from_hex("abcd").is_err());
    }
}
