//! KMS as the key-encryption key of connector secrets: each secret gets a data key from
//! `GenerateDataKey` (AES-256), stored wrapped (the ciphertext blob); `Decrypt` unwraps it. The
//! encryption context names the purpose, so a blob of another use does not decrypt here.
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::DataKeySpec;

use crate::domain::envelope::{EnvelopeError, KEY_LEN, Sealed};

const CONTEXT: (&str, &str) = ("purpose", "portal-connector-secret");

#[derive(Clone)]
pub struct KmsKek {
    pub client: aws_sdk_kms::Client,
    /// Key id, ARN or alias.
    pub key_id: String,
}

fn kek_error(e: impl std::fmt::Display) -> EnvelopeError {
    EnvelopeError::Kek(e.to_string())
}

impl KmsKek {
    /// A new data key: `(plaintext, wrapped, the key's ARN)`.
    pub async fn new_data_key(&self) -> Result<([u8; KEY_LEN], Vec<u8>, String), EnvelopeError> {
        let out = self
            .client
            .generate_data_key()
            .key_id(&self.key_id)
            .key_spec(DataKeySpec::Aes256)
            .encryption_context(CONTEXT.0, CONTEXT.1)
            .send()
            .await
            .map_err(|e| kek_error(aws_sdk_kms::error::DisplayErrorContext(e)))?;
        let plaintext: [u8; KEY_LEN] = out
            .plaintext()
            .map(|b| b.as_ref().to_vec())
            .unwrap_or_default()
            .try_into()
            .map_err(|_| kek_error("GenerateDataKey answered no 32-byte key"))?;
        let wrapped = out
            .ciphertext_blob()
            .map(|b| b.as_ref().to_vec())
            .ok_or_else(|| kek_error("GenerateDataKey answered no ciphertext blob"))?;
        let key_ref = out.key_id().unwrap_or(&self.key_id).to_owned();
        Ok((plaintext, wrapped, key_ref))
    }

    pub async fn unwrap_key(&self, sealed: &Sealed) -> Result<Vec<u8>, EnvelopeError> {
        let out = self
            .client
            .decrypt()
            .key_id(&sealed.key_ref)
            .ciphertext_blob(Blob::new(sealed.wrapped_key.clone()))
            .encryption_context(CONTEXT.0, CONTEXT.1)
            .send()
            .await
            .map_err(|e| kek_error(aws_sdk_kms::error::DisplayErrorContext(e)))?;
        out.plaintext()
            .map(|b| b.as_ref().to_vec())
            .ok_or_else(|| kek_error("Decrypt answered no plaintext"))
    }
}

/// The key-encryption key of connector secrets from the environment: `CONNECTOR_KMS_KEY_ID`
/// (AWS), else `CONNECTOR_LOCAL_KEY_FILE` (the local stack: 64 hex characters).
pub fn connector_keys(env: &crate::config::Env, aws: &aws_config::SdkConfig) -> anyhow::Result<super::keys::Keys> {
    use super::keys::Keys;
    if let Some(key_id) = env.optional("CONNECTOR_KMS_KEY_ID") {
        return Ok(Keys::Kms(KmsKek {
            client: aws_sdk_kms::Client::new(aws),
            key_id,
        }));
    }
    let Some(path) = env.optional("CONNECTOR_LOCAL_KEY_FILE") else {
        anyhow::bail!("set CONNECTOR_KMS_KEY_ID (AWS) or CONNECTOR_LOCAL_KEY_FILE (local stack)");
    };
    let hex_key =
        std::fs::read_to_string(&path).map_err(|e| anyhow::anyhow!("CONNECTOR_LOCAL_KEY_FILE {path}: {e}"))?;
    Ok(Keys::Local(
        crate::domain::envelope::LocalKek::from_hex(&hex_key)
            .map_err(|_| anyhow::anyhow!("CONNECTOR_LOCAL_KEY_FILE {path}: not 64 hex characters"))?,
    ))
}
