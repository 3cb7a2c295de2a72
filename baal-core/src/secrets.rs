//! Sealing secrets at rest: user API keys, agent tokens and the bot's session are stored only as
//! XChaCha20-Poly1305 ciphertexts (orion) under `BOT_ENCRYPTION_KEY`.
//!
//! A sealed blob is `version (1 byte) ‖ nonce (24) ‖ ciphertext ‖ tag (16)`. The version byte lets
//! a later release rotate keys or change the cipher without guessing what old rows hold. Opening
//! with a wrong key, or a blob that was changed or cut, is an error — never garbage.

use std::fmt;

use base64::Engine as _;
use orion::aead;
use secrecy::{ExposeSecret, SecretString};

const VERSION_XCHACHA20: u8 = 1;
/// Inside the ciphertext every plaintext starts with this byte, because orion refuses to seal an
/// empty message and an empty secret is still a value worth sealing.
const PLAINTEXT_PREFIX: u8 = 0;
/// version + nonce + tag + the prefix byte.
const MIN_SEALED_LEN: usize = 1 + 24 + 16 + 1;

/// Why a secret could not be sealed or opened. The texts never contain key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SecretsError {
    /// The key is not 32 bytes of base64 (standard or URL-safe) or hex.
    #[error(
        "BOT_ENCRYPTION_KEY must be 32 random bytes written as base64 (44 characters) or hex (64); \
         generate one with `baal-cli keygen`"
    )]
    BadKey,
    /// The blob is shorter than any sealed value or has an unknown version byte.
    #[error("the sealed value is malformed (truncated or not written by Baal)")]
    Malformed,
    /// Authentication failed: wrong key, or the blob was altered.
    #[error("the sealed value cannot be opened: wrong BOT_ENCRYPTION_KEY, or the data was altered")]
    Rejected,
    /// The operating system's random source failed.
    #[error("no randomness available to seal a secret")]
    NoRandomness,
    /// The opened value is not UTF-8 text where text was expected.
    #[error("the sealed value is not text")]
    NotText,
}

/// Seals and opens secrets under one key. Cheap to clone behind an `Arc`; its `Debug` shows no key.
pub struct SecretBox {
    key: aead::SecretKey,
}

impl fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretBox([REDACTED])")
    }
}

impl SecretBox {
    /// A box over a key written as base64 (standard or URL-safe, as the Python Baal's Fernet keys
    /// are) or hex.
    pub fn from_encoded_key(encoded: &str) -> Result<Self, SecretsError> {
        let bytes = decode_key(encoded.trim()).ok_or(SecretsError::BadKey)?;
        let key = aead::SecretKey::try_from(bytes.as_slice()).map_err(|_| SecretsError::BadKey)?;
        Ok(SecretBox { key })
    }

    /// A box over the key in a [`SecretString`] setting.
    pub fn from_secret(encoded: &SecretString) -> Result<Self, SecretsError> {
        Self::from_encoded_key(encoded.expose_secret())
    }

    /// Seals `plaintext` with a fresh random nonce.
    pub fn seal(&self, plaintext: &[u8]) -> Result<Vec<u8>, SecretsError> {
        let mut framed = Vec::with_capacity(plaintext.len() + 1);
        framed.push(PLAINTEXT_PREFIX);
        framed.extend_from_slice(plaintext);
        let sealed = aead::seal(&self.key, &framed).map_err(|_| SecretsError::NoRandomness)?;
        let mut out = Vec::with_capacity(sealed.len() + 1);
        out.push(VERSION_XCHACHA20);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Opens a blob made by [`SecretBox::seal`].
    pub fn open(&self, sealed: &[u8]) -> Result<Vec<u8>, SecretsError> {
        if sealed.len() < MIN_SEALED_LEN || sealed[0] != VERSION_XCHACHA20 {
            return Err(SecretsError::Malformed);
        }
        let mut framed = aead::open(&self.key, &sealed[1..]).map_err(|_| SecretsError::Rejected)?;
        if framed.first() != Some(&PLAINTEXT_PREFIX) {
            return Err(SecretsError::Malformed);
        }
        framed.remove(0);
        Ok(framed)
    }

    /// Seals a text secret.
    pub fn seal_str(&self, secret: &str) -> Result<Vec<u8>, SecretsError> {
        self.seal(secret.as_bytes())
    }

    /// Opens a text secret into a [`SecretString`], so it stays redacted in `Debug`.
    pub fn open_str(&self, sealed: &[u8]) -> Result<SecretString, SecretsError> {
        let bytes = self.open(sealed)?;
        String::from_utf8(bytes).map(SecretString::from).map_err(|_| SecretsError::NotText)
    }
}

/// A fresh random key, base64-encoded, for `BOT_ENCRYPTION_KEY`.
pub fn generate_key() -> Result<SecretString, SecretsError> {
    let key = aead::SecretKey::generate().map_err(|_| SecretsError::NoRandomness)?;
    Ok(SecretString::from(base64::engine::general_purpose::STANDARD.encode(key.unprotected_as_ref::<[u8]>())))
}

/// A fresh agent bearer secret: 32 random bytes, URL-safe base64 without padding (43 characters),
/// the same shape the Python agents use.
pub fn generate_token() -> SecretString {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    SecretString::from(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// The last `n` characters of a secret for display (`…abcd`), or nothing when the secret is so
/// short that showing them would reveal most of it.
pub fn secret_hint(secret: &SecretString, n: usize) -> String {
    let chars: Vec<char> = secret.expose_secret().chars().collect();
    if chars.len() < n * 4 {
        return "…".to_owned();
    }
    let tail: String = chars[chars.len() - n..].iter().collect();
    format!("…{tail}")
}

fn decode_key(encoded: &str) -> Option<Vec<u8>> {
    use base64::engine::general_purpose::{STANDARD, URL_SAFE};
    let bytes = if encoded.len() == 64 && encoded.bytes().all(|b| b.is_ascii_hexdigit()) {
        hex::decode(encoded).ok()?
    } else {
        STANDARD.decode(encoded).or_else(|_| URL_SAFE.decode(encoded)).ok()?
    };
    (bytes.len() == 32).then_some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boxed() -> SecretBox {
        SecretBox::from_secret(&generate_key().unwrap()).unwrap()
    }

    #[test]
    fn round_trip_including_empty_and_binary() {
        let sb = boxed();
        for plain in [&b""[..], b"sk-live-123", &[0u8, 255, 7, 0][..]] {
            let sealed = sb.seal(plain).unwrap();
            assert_eq!(sb.open(&sealed).unwrap(), plain);
        }
        let sealed = sb.seal_str("hello").unwrap();
        assert_eq!(sb.open_str(&sealed).unwrap().expose_secret(), "hello");
    }

    #[test]
    fn each_seal_uses_a_fresh_nonce() {
        let sb = boxed();
        assert_ne!(sb.seal(b"same").unwrap(), sb.seal(b"same").unwrap());
    }

    #[test]
    fn tampered_ciphertext_is_rejected() {
        let sb = boxed();
        let sealed = sb.seal(b"secret value").unwrap();
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x01;
            assert!(sb.open(&bad).is_err(), "flipping byte {i} must be detected");
        }
    }

    #[test]
    fn truncated_ciphertext_is_rejected() {
        let sb = boxed();
        let sealed = sb.seal(b"secret value").unwrap();
        for len in 0..sealed.len() {
            assert!(sb.open(&sealed[..len]).is_err(), "length {len} must fail");
        }
    }

    #[test]
    fn wrong_key_is_rejected() {
        let sealed = boxed().seal(b"secret value").unwrap();
        assert_eq!(boxed().open(&sealed), Err(SecretsError::Rejected));
    }

    #[test]
    fn keys_in_base64_urlsafe_and_hex_are_accepted_and_bad_ones_named() {
        let raw = [7u8; 32];
        use base64::engine::general_purpose::{STANDARD, URL_SAFE};
        let a = SecretBox::from_encoded_key(&STANDARD.encode(raw)).unwrap();
        let b = SecretBox::from_encoded_key(&URL_SAFE.encode(raw)).unwrap();
        let c = SecretBox::from_encoded_key(&hex::encode(raw)).unwrap();
        let sealed = a.seal(b"x").unwrap();
        assert_eq!(b.open(&sealed).unwrap(), b"x");
        assert_eq!(c.open(&sealed).unwrap(), b"x");
        for bad in ["", "short", &STANDARD.encode([1u8; 16]), "!!!!"] {
            let err = SecretBox::from_encoded_key(bad).unwrap_err();
            assert!(err.to_string().contains("BOT_ENCRYPTION_KEY"));
        }
    }

    #[test]
    fn debug_shows_no_key_material() {
        let key = generate_key().unwrap();
        let sb = SecretBox::from_secret(&key).unwrap();
        assert_eq!(format!("{sb:?}"), "SecretBox([REDACTED])");
        assert!(!format!("{key:?}").contains(key.expose_secret()));
    }

    #[test]
    fn tokens_have_the_python_shape() {
        let t = generate_token();
        assert_eq!(t.expose_secret().len(), 43);
        assert_ne!(t.expose_secret(), generate_token().expose_secret());
    }

    #[test]
    fn hints_show_at_most_the_tail() {
        let key = SecretString::from("sk-abcdefghijklmnop1234");
        assert_eq!(secret_hint(&key, 4), "…1234");
        assert_eq!(secret_hint(&SecretString::from("short"), 4), "…");
    }
}
