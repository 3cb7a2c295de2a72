//! Sealing secrets at rest: user API keys, agent tokens and the bot's session are stored only as
//! XChaCha20-Poly1305 ciphertexts (orion) under `BOT_ENCRYPTION_KEY`.
//!
//! A sealed blob is `version (1 byte) ‖ nonce (24) ‖ ciphertext ‖ tag (16)`. Version 2, the only
//! one written, authenticates a [`SealContext`] naming where the value lives (table, column and
//! row, or key-value namespace and key) as associated data, so a blob copied into another row
//! (another user's API key, another agent's token) does not open there. Version 1 blobs, sealed
//! without a context, still open wherever they are read and become version 2 on their next write.
//! The version byte lets a later release rotate keys or change the cipher without guessing what
//! old rows hold. Opening with a wrong key or context, or a blob that was changed or cut, is an
//! error — never garbage.

use std::fmt;

use base64::Engine as _;
use orion::aead;
use orion::hazardous::aead::xchacha20poly1305::{Nonce, SecretKey, XChaCha20Poly1305};
use secrecy::{ExposeSecret, SecretString};

use crate::domain::{AgentId, UserId};

/// Sealed without a context; its plaintext is framed by [`V1_PLAINTEXT_PREFIX`].
const VERSION_XCHACHA20: u8 = 1;
/// Sealed with its [`SealContext`] as associated data; the plaintext is not framed.
const VERSION_XCHACHA20_BOUND: u8 = 2;
/// Version 1 put this byte before every plaintext, because orion's `aead::seal` refuses an empty
/// message and an empty secret is still a value worth sealing.
const V1_PLAINTEXT_PREFIX: u8 = 0;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// version + nonce + tag: a version 2 blob of an empty value.
const MIN_SEALED_LEN: usize = 1 + NONCE_LEN + TAG_LEN;

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
    /// Authentication failed: wrong key, the blob was altered, or it was sealed for another place.
    #[error(
        "the sealed value cannot be opened: wrong BOT_ENCRYPTION_KEY, the data was altered, or it was copied \
         from another row"
    )]
    Rejected,
    /// The operating system's random source failed.
    #[error("no randomness available to seal a secret")]
    NoRandomness,
    /// The opened value is not UTF-8 text where text was expected.
    #[error("the sealed value is not text")]
    NotText,
    /// The value is beyond what the cipher can seal in one piece (256 GiB).
    #[error("the value is too large to seal")]
    TooLarge,
}

/// Where a sealed value lives, authenticated with it: a value sealed for one place does not open
/// in another. Table, column and namespace names are identifiers chosen in code (no `:`); the row
/// or key comes last, so no two places share a context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealContext(String);

impl SealContext {
    /// The value in `column` of `table`, in the row whose key is `row`.
    pub fn column(table: &str, column: &str, row: impl fmt::Display) -> SealContext {
        SealContext(format!("{table}.{column}:{row}"))
    }

    /// The value stored under `key` in the key-value `namespace`.
    pub fn kv(namespace: &str, key: &str) -> SealContext {
        SealContext(format!("kv:{namespace}:{key}"))
    }

    /// A user's own LibertAI key (`users.api_key_sealed`).
    pub fn user_api_key(user: UserId) -> SealContext {
        SealContext::column("users", "api_key_sealed", user)
    }

    /// An agent's bearer secret (`agents.token_sealed`).
    pub fn agent_token(agent: AgentId) -> SealContext {
        SealContext::column("agents", "token_sealed", agent)
    }

    /// The context as text: the associated data of the blobs sealed for it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SealContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Seals and opens secrets under one key. Cheap to clone behind an `Arc`; its `Debug` shows no key.
pub struct SecretBox {
    key: SecretKey,
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
        let key = SecretKey::try_from(bytes.as_slice()).map_err(|_| SecretsError::BadKey)?;
        Ok(SecretBox { key })
    }

    /// A box over the key in a [`SecretString`] setting.
    pub fn from_secret(encoded: &SecretString) -> Result<Self, SecretsError> {
        Self::from_encoded_key(encoded.expose_secret())
    }

    /// Seals `plaintext` for `context` with a fresh random nonce (a version 2 blob).
    pub fn seal_for(&self, context: &SealContext, plaintext: &[u8]) -> Result<Vec<u8>, SecretsError> {
        let nonce = Nonce::generate().map_err(|_| SecretsError::NoRandomness)?;
        let mut out = vec![0u8; 1 + NONCE_LEN + plaintext.len() + TAG_LEN];
        out[0] = VERSION_XCHACHA20_BOUND;
        out[1..1 + NONCE_LEN].copy_from_slice(nonce.as_ref());
        let ad = Some(context.as_str().as_bytes());
        XChaCha20Poly1305::seal(&self.key, &nonce, plaintext, ad, &mut out[1 + NONCE_LEN..])
            .map_err(|_| SecretsError::TooLarge)?;
        Ok(out)
    }

    /// Opens a blob sealed for `context` (or a version 1 blob, sealed before contexts existed,
    /// wherever it is read).
    pub fn open_for(&self, context: &SealContext, sealed: &[u8]) -> Result<Vec<u8>, SecretsError> {
        let (version, ad) = match sealed.first() {
            Some(&VERSION_XCHACHA20) => (VERSION_XCHACHA20, None),
            Some(&VERSION_XCHACHA20_BOUND) => (VERSION_XCHACHA20_BOUND, Some(context.as_str().as_bytes())),
            _ => return Err(SecretsError::Malformed),
        };
        if sealed.len() < MIN_SEALED_LEN {
            return Err(SecretsError::Malformed);
        }
        let nonce = Nonce::try_from(&sealed[1..1 + NONCE_LEN]).map_err(|_| SecretsError::Malformed)?;
        let body = &sealed[1 + NONCE_LEN..];
        let mut plain = vec![0u8; body.len() - TAG_LEN];
        XChaCha20Poly1305::open(&self.key, &nonce, body, ad, &mut plain).map_err(|_| SecretsError::Rejected)?;
        if version == VERSION_XCHACHA20 {
            // Authenticated, so a missing prefix means another program sealed it with this key.
            if plain.first() != Some(&V1_PLAINTEXT_PREFIX) {
                return Err(SecretsError::Malformed);
            }
            plain.remove(0);
        }
        Ok(plain)
    }

    /// Seals a text secret for `context`.
    pub fn seal_str_for(&self, context: &SealContext, secret: &str) -> Result<Vec<u8>, SecretsError> {
        self.seal_for(context, secret.as_bytes())
    }

    /// Opens a text secret sealed for `context` into a [`SecretString`], so it stays redacted in
    /// `Debug`.
    pub fn open_str_for(&self, context: &SealContext, sealed: &[u8]) -> Result<SecretString, SecretsError> {
        let bytes = self.open_for(context, sealed)?;
        String::from_utf8(bytes).map(SecretString::from).map_err(|_| SecretsError::NotText)
    }

    /// Whether `sealed` was written before contexts existed and opens in any row: a value that
    /// is otherwise never rewritten can be sealed again for its own.
    pub fn needs_resealing(sealed: &[u8]) -> bool {
        sealed.first() == Some(&VERSION_XCHACHA20)
    }

    /// What the previous release wrote (`1 ‖ orion::aead::seal(key, 0 ‖ plaintext)`), for tests
    /// of blobs still in a database.
    #[cfg(test)]
    pub(crate) fn seal_version_1(&self, plaintext: &[u8]) -> Vec<u8> {
        let key = aead::SecretKey::try_from(self.key.unprotected_as_ref::<[u8]>()).unwrap();
        let mut framed = vec![V1_PLAINTEXT_PREFIX];
        framed.extend_from_slice(plaintext);
        let mut out = vec![VERSION_XCHACHA20];
        out.extend(aead::seal(&key, &framed).unwrap());
        out
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
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
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

    /// A version 1 blob of `sk-sealed-by-version-1` under the key `07` × 32, written by the
    /// previous `SecretBox::seal`: `1 ‖ orion::aead::seal(key, 0 ‖ plaintext)`.
    const V1_FIXTURE: &str = "010b7244e1d72ac5f99dd10c48142a9a0cdb3727b2b92b96ecbdc645c86e6063b4e022ddc8eb9bbb9a3f60f138bee63ba0c977d887b865488781aa2ed3bf6f13";

    fn boxed() -> SecretBox {
        SecretBox::from_secret(&generate_key().unwrap()).unwrap()
    }

    fn here() -> SealContext {
        SealContext::user_api_key(42)
    }

    fn seal_v1(sb: &SecretBox, plaintext: &[u8]) -> Vec<u8> {
        sb.seal_version_1(plaintext)
    }

    #[test]
    fn round_trip_including_empty_and_binary() {
        let sb = boxed();
        for plain in [&b""[..], b"sk-live-123", &[0u8, 255, 7, 0][..]] {
            let sealed = sb.seal_for(&here(), plain).unwrap();
            assert_eq!(sealed[0], VERSION_XCHACHA20_BOUND);
            assert_eq!(sealed.len(), MIN_SEALED_LEN + plain.len(), "version ‖ nonce ‖ ciphertext ‖ tag");
            assert_eq!(sb.open_for(&here(), &sealed).unwrap(), plain);
        }
        let sealed = sb.seal_str_for(&here(), "hello").unwrap();
        assert_eq!(sb.open_str_for(&here(), &sealed).unwrap().expose_secret(), "hello");
    }

    #[test]
    fn each_seal_uses_a_fresh_nonce() {
        let sb = boxed();
        assert_ne!(sb.seal_for(&here(), b"same").unwrap(), sb.seal_for(&here(), b"same").unwrap());
    }

    #[test]
    fn a_blob_moved_to_another_row_or_column_is_rejected() {
        let sb = boxed();
        let sealed = sb.seal_str_for(&SealContext::user_api_key(42), "sk-alice").unwrap();
        let elsewhere = [
            SealContext::user_api_key(43),
            SealContext::agent_token(AgentId(42)),
            SealContext::column("users", "api_key_sealed", "42 "),
            SealContext::kv("users.api_key_sealed", "42"),
        ];
        for context in elsewhere {
            assert_eq!(sb.open_for(&context, &sealed), Err(SecretsError::Rejected), "opened in {context}");
        }
        // Nor does calling it version 1 (no context) open it.
        let mut downgraded = sealed.clone();
        downgraded[0] = VERSION_XCHACHA20;
        assert_eq!(sb.open_for(&here(), &downgraded), Err(SecretsError::Rejected));
    }

    #[test]
    fn version_1_blobs_still_open_wherever_they_are_and_rewrites_bind_them() {
        let sb = boxed();
        for plain in [&b""[..], b"sk-old"] {
            let old = seal_v1(&sb, plain);
            assert!(SecretBox::needs_resealing(&old));
            assert_eq!(sb.open_for(&here(), &old).unwrap(), plain);
            assert_eq!(sb.open_for(&SealContext::agent_token(AgentId(9)), &old).unwrap(), plain);
            let rewritten = sb.seal_for(&here(), &sb.open_for(&here(), &old).unwrap()).unwrap();
            assert!(!SecretBox::needs_resealing(&rewritten));
        }
        assert_eq!(boxed().open_for(&here(), &seal_v1(&sb, b"x")), Err(SecretsError::Rejected));
    }

    #[test]
    fn a_version_1_blob_written_by_the_previous_release_opens() {
        let sb = SecretBox::from_encoded_key(&"07".repeat(32)).unwrap();
        let old = hex::decode(V1_FIXTURE).unwrap();
        let opened = sb.open_str_for(&SealContext::agent_token(AgentId(1)), &old).unwrap();
        assert_eq!(opened.expose_secret(), "sk-sealed-by-version-1");
    }

    #[test]
    fn tampered_ciphertext_is_rejected() {
        let sb = boxed();
        for sealed in [sb.seal_for(&here(), b"secret value").unwrap(), seal_v1(&sb, b"secret value")] {
            for i in 0..sealed.len() {
                let mut bad = sealed.clone();
                bad[i] ^= 0x01;
                assert!(sb.open_for(&here(), &bad).is_err(), "flipping byte {i} must be detected");
            }
        }
    }

    #[test]
    fn truncated_ciphertext_is_rejected() {
        let sb = boxed();
        for sealed in [sb.seal_for(&here(), b"secret value").unwrap(), seal_v1(&sb, b"secret value")] {
            for len in 0..sealed.len() {
                assert!(sb.open_for(&here(), &sealed[..len]).is_err(), "length {len} must fail");
            }
        }
    }

    #[test]
    fn unknown_versions_are_malformed() {
        let sb = boxed();
        let mut sealed = sb.seal_for(&here(), b"secret value").unwrap();
        sealed[0] = 3;
        assert_eq!(sb.open_for(&here(), &sealed), Err(SecretsError::Malformed));
    }

    #[test]
    fn wrong_key_is_rejected() {
        let sealed = boxed().seal_for(&here(), b"secret value").unwrap();
        assert_eq!(boxed().open_for(&here(), &sealed), Err(SecretsError::Rejected));
    }

    #[test]
    fn keys_in_base64_urlsafe_and_hex_are_accepted_and_bad_ones_named() {
        let raw = [7u8; 32];
        use base64::engine::general_purpose::{STANDARD, URL_SAFE};
        let a = SecretBox::from_encoded_key(&STANDARD.encode(raw)).unwrap();
        let b = SecretBox::from_encoded_key(&URL_SAFE.encode(raw)).unwrap();
        let c = SecretBox::from_encoded_key(&hex::encode(raw)).unwrap();
        let sealed = a.seal_for(&here(), b"x").unwrap();
        assert_eq!(b.open_for(&here(), &sealed).unwrap(), b"x");
        assert_eq!(c.open_for(&here(), &sealed).unwrap(), b"x");
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
