//! [`BearerCheck`]: checks the `Authorization` header of the agent's HTTP API.
//!
//! Only a SHA-256 digest of the secret is kept after start, so the secret itself does not sit in
//! the agent's memory; digests are compared in constant time.

use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

/// Checks bearer tokens against the agent's secret.
#[derive(Clone)]
pub struct BearerCheck {
    digest: [u8; 32],
}

impl std::fmt::Debug for BearerCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerCheck([REDACTED])")
    }
}

impl BearerCheck {
    /// Keeps the digest of `secret`; the caller drops the secret afterwards.
    pub fn new(secret: &SecretString) -> Self {
        BearerCheck { digest: Sha256::digest(secret.expose_secret().trim().as_bytes()).into() }
    }

    /// Whether an `Authorization` header value carries the secret (`Bearer <secret>`, or the bare
    /// secret as the Python agent also accepts). Empty or absent: refused.
    pub fn allows(&self, header: Option<&str>) -> bool {
        let Some(value) = header else { return false };
        let token = value.strip_prefix("Bearer ").unwrap_or(value).trim();
        if token.is_empty() {
            return false;
        }
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        orion::util::secure_cmp(&digest, &self.digest).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_only_the_secret() {
        let check = BearerCheck::new(&SecretString::from("s3cret"));
        assert!(check.allows(Some("Bearer s3cret")));
        assert!(check.allows(Some("s3cret")));
        assert!(!check.allows(Some("Bearer s3cre")));
        assert!(!check.allows(Some("Bearer ")));
        assert!(!check.allows(None));
        assert!(!format!("{check:?}").contains("s3cret"));
    }
}
