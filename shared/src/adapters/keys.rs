//! The key-encryption keys that seal tenants' secrets (envelope encryption, `domain::envelope`):
//! a KMS key in AWS, a local key file in the local stack. An adapter: it reaches KMS.
use crate::domain::envelope::{EnvelopeError, LocalKek, Sealed};

/// The key-encryption key of connector secrets: a KMS key in AWS (`CONNECTOR_KMS_KEY_ID`), a
/// local key file in the local stack (`CONNECTOR_LOCAL_KEY_FILE`).
#[derive(Clone)]
pub enum Keys {
    Local(LocalKek),
    #[cfg(feature = "kms")]
    Kms(super::kms::KmsKek),
}

impl Keys {
    #[tracing::instrument(skip_all)]
    pub async fn new_data_key(&self) -> Result<([u8; 32], Vec<u8>, String), EnvelopeError> {
        match self {
            Keys::Local(kek) => {
                let (key, wrapped) = kek.new_data_key()?;
                Ok((key, wrapped, kek.key_ref.clone()))
            }
            #[cfg(feature = "kms")]
            Keys::Kms(kms) => kms.new_data_key().await,
        }
    }

    #[tracing::instrument(skip_all)]
    pub async fn unwrap_key(&self, sealed: &Sealed) -> Result<Vec<u8>, EnvelopeError> {
        match self {
            Keys::Local(kek) if sealed.key_ref == kek.key_ref => kek.unwrap_key(&sealed.wrapped_key),
            Keys::Local(_) => Err(EnvelopeError::Kek(format!(
                "sealed under {}, not the configured local key",
                sealed.key_ref
            ))),
            #[cfg(feature = "kms")]
            Keys::Kms(kms) => kms.unwrap_key(sealed).await,
        }
    }
}
