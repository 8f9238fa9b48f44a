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
    #[tracing::instrument(skip_all, fields(key_id = %self.key_id))]
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

    #[tracing::instrument(skip_all, fields(key_id = %self.key_id))]
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

/// The key-encryption key of connector secrets: KMS (AWS), or the local stack's key file
/// (64 hex characters, read once here).
pub fn connector_keys(
    kek: &crate::config::KekSource,
    aws: &aws_config::SdkConfig,
) -> anyhow::Result<super::keys::Keys> {
    use super::keys::Keys;
    match kek {
        crate::config::KekSource::Kms { key_id } => Ok(Keys::Kms(KmsKek {
            client: aws_sdk_kms::Client::new(aws),
            key_id: key_id.clone(),
        })),
        crate::config::KekSource::LocalFile(path) => {
            let shown = path.display();
            let hex_key =
                std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("CONNECTOR_LOCAL_KEY_FILE {shown}: {e}"))?;
            Ok(Keys::Local(
                crate::domain::envelope::LocalKek::from_hex(&hex_key)
                    .map_err(|_| anyhow::anyhow!("CONNECTOR_LOCAL_KEY_FILE {shown}: not 64 hex characters"))?,
            ))
        }
    }
}
