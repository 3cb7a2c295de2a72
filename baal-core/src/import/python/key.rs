//! The Python Baal's Fernet key, and telling a token it cannot open (wrong key, altered) from one
//! that is not a Fernet token at all.

use std::fmt;

use base64::Engine as _;
use secrecy::{ExposeSecret, SecretString};

use crate::env::SettingError;

/// Fernet's version byte, the first of every token.
const VERSION: u8 = 0x80;
/// Version, timestamp, IV and HMAC: a token's bytes besides its ciphertext.
const OVERHEAD: usize = 1 + 8 + 16 + 32;
/// AES block size: the ciphertext is a whole number of blocks, at least one.
const BLOCK: usize = 16;
/// How far in the future a token may be dated (Python's `cryptography` allows the same skew).
const MAX_CLOCK_SKEW_SECS: u64 = 60;

/// The Python Baal's `BOT_ENCRYPTION_KEY`: 32 bytes as URL-safe base64, opening its Fernet
/// tokens. `Debug` shows no key.
#[derive(Clone)]
pub struct PythonKey(fernet::Fernet);

impl fmt::Debug for PythonKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PythonKey([REDACTED])")
    }
}

/// Why a token did not open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TokenError {
    /// Well formed, but the key does not authenticate it: another key, or the token was altered.
    Rejected,
    /// Not a Fernet token; says why (never showing the token).
    Malformed(String),
}

impl PythonKey {
    /// The key in `encoded` (surrounding whitespace ignored); `origin` names where it came from
    /// (`PYTHON_BOT_ENCRYPTION_KEY`, a file) in the error when it is not a Fernet key.
    pub fn from_secret(encoded: &SecretString, origin: &str) -> Result<PythonKey, SettingError> {
        fernet::Fernet::new(encoded.expose_secret().trim()).map(PythonKey).ok_or_else(|| {
            SettingError::new(
                origin,
                "not a Fernet key (32 bytes written as URL-safe base64, 44 characters)",
                "use the Python Baal's BOT_ENCRYPTION_KEY, from its .env",
            )
        })
    }

    /// Opens `token` into its plaintext text.
    pub(crate) fn open(&self, token: &str) -> Result<SecretString, TokenError> {
        check_shape(token)?;
        let plain = self.0.decrypt(token).map_err(|_| TokenError::Rejected)?;
        String::from_utf8(plain)
            .map(SecretString::from)
            .map_err(|_| TokenError::Malformed("opens to bytes that are not text".into()))
    }

    /// A token of `plaintext` under this key, as the Python Baal writes them (tests, fixtures).
    #[cfg(feature = "testing")]
    pub(crate) fn encrypt(&self, plaintext: &str) -> String {
        self.0.encrypt(plaintext.as_bytes())
    }
}

/// Whether `token` is shaped as a Fernet token, so that a failure to open it is the key's (or an
/// alteration's) and not garbage in the column.
fn check_shape(token: &str) -> Result<(), TokenError> {
    let malformed = |why: &str| Err(TokenError::Malformed(why.to_owned()));
    let Ok(bytes) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token.trim_end_matches('=')) else {
        return malformed("not a Fernet token (not URL-safe base64)");
    };
    if bytes.first() != Some(&VERSION) {
        return malformed("not a Fernet token (wrong version byte)");
    }
    if bytes.len() < OVERHEAD + BLOCK || !(bytes.len() - OVERHEAD).is_multiple_of(BLOCK) {
        return malformed("not a Fernet token (cut short or padded)");
    }
    let mut stamp = [0u8; 8];
    stamp.copy_from_slice(&bytes[1..9]);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    if u64::from_be_bytes(stamp) > now.saturating_add(MAX_CLOCK_SKEW_SECS) {
        return malformed("a Fernet token dated in the future (was the Python Baal's clock ahead?)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Fernet specification's test vector (github.com/fernet/spec, `verify.json`).
    const SPEC_SECRET: &str = "cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4=";
    const SPEC_TOKEN: &str =
        "gAAAAAAdwJ6wAAECAwQFBgcICQoLDA0ODy021cpGVWKZ_eEwCGM4BLLF_5CV9dOPmrhuVUPgJobwOz7JcbmrR64jVmpU4IwqDA==";

    fn key(encoded: &str) -> PythonKey {
        PythonKey::from_secret(&SecretString::from(encoded), "TEST_KEY").unwrap()
    }

    #[test]
    fn opens_the_specifications_test_vector() {
        assert_eq!(key(SPEC_SECRET).open(SPEC_TOKEN).unwrap().expose_secret(), "hello");
        let other = key(&fernet::Fernet::generate_key());
        assert_eq!(other.open(SPEC_TOKEN).unwrap_err(), TokenError::Rejected);
    }

    #[test]
    fn tells_garbage_from_a_token_another_key_made() {
        let k = key(SPEC_SECRET);
        for garbage in ["", "sk-plaintext-key", "%%%%", &SPEC_TOKEN[..60], "AAAA"] {
            assert!(matches!(k.open(garbage), Err(TokenError::Malformed(_))), "{garbage:?}");
        }
        let mut altered = SPEC_TOKEN.to_owned();
        altered.replace_range(30..31, if &SPEC_TOKEN[30..31] == "A" { "B" } else { "A" });
        assert_eq!(k.open(&altered).unwrap_err(), TokenError::Rejected);
    }

    #[test]
    fn a_bad_key_names_its_origin_and_not_its_value() {
        for bad in ["too-short", "not base64 at all!!!!!!!!!!!!!!!!!!!!!!!!!!", "c2hvcnQ="] {
            let err = PythonKey::from_secret(&SecretString::from(bad), "PYTHON_BOT_ENCRYPTION_KEY").unwrap_err();
            assert_eq!(err.variable, "PYTHON_BOT_ENCRYPTION_KEY");
            assert!(!err.to_string().contains(bad), "{err}");
        }
        assert_eq!(format!("{:?}", key(SPEC_SECRET)), "PythonKey([REDACTED])");
    }
}
