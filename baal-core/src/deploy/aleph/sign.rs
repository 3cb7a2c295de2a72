//! Ethereum signing for Aleph messages and the CRN control API.
//!
//! Hand-written on k256 + sha3 + p256 rather than taken from `aleph-types`/`aleph-sdk`: those
//! crates pin k256 0.13 / reqwest 0.13 trees of their own (a second copy of the curve crates next
//! to russh's), churn between 0.x releases, and we use four operations of them. The spec's
//! Appendix A vectors pin every byte of what is produced here (see the tests).

use k256::ecdsa::SigningKey;
use secrecy::{ExposeSecret, SecretString};
use sha3::{Digest, Keccak256};

/// The operator's wallet could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "ALEPH_PRIVATE_KEY is not a valid secp256k1 private key ({0}). Set it to the wallet's 64 hex digits, with or without 0x"
)]
pub struct BadPrivateKey(pub(crate) &'static str);

/// An Ethereum account that signs Aleph messages. `Debug` shows the address only.
#[derive(Clone)]
pub struct EthAccount {
    key: SigningKey,
    address: String,
}

impl std::fmt::Debug for EthAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EthAccount").field("address", &self.address).finish_non_exhaustive()
    }
}

impl EthAccount {
    /// Loads a hex private key (`0x` optional).
    pub fn from_hex(private_key: &SecretString) -> Result<EthAccount, BadPrivateKey> {
        let text = private_key.expose_secret().trim();
        let text = text.strip_prefix("0x").unwrap_or(text);
        if text.len() != 64 {
            return Err(BadPrivateKey("it must be 64 hex digits"));
        }
        let bytes = hex::decode(text).map_err(|_| BadPrivateKey("it contains characters that are not hex digits"))?;
        let key = SigningKey::from_slice(&bytes).map_err(|_| BadPrivateKey("it is out of the curve's range"))?;
        let address = checksum_address(&key);
        Ok(EthAccount { key, address })
    }

    /// The EIP-55 checksummed address (`0xAbC…`), used as `sender` and `content.address`.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// EIP-191 `personal_sign` of `message`: `0x` + hex(r‖s‖v), v ∈ {27, 28}.
    pub fn personal_sign(&self, message: &[u8]) -> String {
        let (signature, recovery) = self.key.sign_prehash_recoverable(&eip191_digest(message));
        let mut out = [0u8; 65];
        out[..64].copy_from_slice(&signature.to_bytes());
        out[64] = 27 + recovery.to_byte();
        format!("0x{}", hex::encode(out))
    }
}

pub(crate) fn keccak256(data: &[u8]) -> [u8; 32] {
    Keccak256::digest(data).into()
}

/// keccak256("\x19Ethereum Signed Message:\n" + byte length + message).
pub(crate) fn eip191_digest(message: &[u8]) -> [u8; 32] {
    let mut hasher = Keccak256::new();
    hasher.update(format!("\x19Ethereum Signed Message:\n{}", message.len()).as_bytes());
    hasher.update(message);
    hasher.finalize().into()
}

/// The checksummed address that produced `signature` (`0x` + r‖s‖v) over `message` with
/// EIP-191, or `None` when the signature is malformed. Used by the test doubles to verify what
/// Baal sends, as the CCN and CRNs do.
pub fn recover_signer(message: &[u8], signature: &str) -> Option<String> {
    use k256::ecdsa::{RecoveryId, Signature, VerifyingKey};
    let raw = hex::decode(signature.trim_start_matches("0x")).ok()?;
    if raw.len() != 65 {
        return None;
    }
    let sig = Signature::from_slice(&raw[..64]).ok()?;
    let recovery = RecoveryId::from_byte(if raw[64] >= 27 { raw[64] - 27 } else { raw[64] })?;
    let key = VerifyingKey::recover_from_prehash(&eip191_digest(message), &sig, recovery).ok()?;
    Some(address_of(&key))
}

fn checksum_address(key: &SigningKey) -> String {
    address_of(key.verifying_key())
}

fn address_of(key: &k256::ecdsa::VerifyingKey) -> String {
    let point = key.to_sec1_point(false);
    let hash = keccak256(&point.as_bytes()[1..]);
    let lower = hex::encode(&hash[12..]);
    let lower_hash = keccak256(lower.as_bytes());
    let mut out = String::with_capacity(42);
    out.push_str("0x");
    for (i, c) in lower.chars().enumerate() {
        let nibble = (lower_hash[i / 2] >> if i % 2 == 0 { 4 } else { 0 }) & 0x0f;
        out.push(if c.is_ascii_alphabetic() && nibble >= 8 { c.to_ascii_uppercase() } else { c });
    }
    out
}

/// The two headers the CRN control API (`/control/machine/{hash}/erase`, …) requires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrnAuthHeaders {
    /// `X-SignedPubKey`: the wallet authorizes an ephemeral P-256 key for `domain`.
    pub signed_pubkey: String,
    /// `X-SignedOperation`: the ephemeral key signs this one request.
    pub signed_operation: String,
}

/// An ephemeral P-256 key authorized by the wallet for one CRN domain.
pub(crate) struct CrnAuthKey {
    key: p256::ecdsa::SigningKey,
    domain: String,
    signed_pubkey: String,
}

impl CrnAuthKey {
    /// A new random ephemeral key authorized until `expires` (ISO-8601 with `Z`).
    pub(crate) fn generate(account: &EthAccount, domain: &str, expires: &str) -> CrnAuthKey {
        loop {
            let bytes: [u8; 32] = rand::random();
            if let Ok(key) = p256::ecdsa::SigningKey::from_slice(&bytes) {
                return CrnAuthKey::with_key(account, key, domain, expires);
            }
        }
    }

    pub(crate) fn with_key(
        account: &EthAccount,
        key: p256::ecdsa::SigningKey,
        domain: &str,
        expires: &str,
    ) -> CrnAuthKey {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let point = key.verifying_key().to_sec1_point(false);
        let bytes = point.as_bytes();
        // serde_json::json! sorts nothing when preserve_order is off, so build the text in the
        // documented key order explicitly; the CRN parses it, but the vectors compare bytes.
        let payload = format!(
            r#"{{"pubkey":{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}},"alg":"ECDSA","domain":{},"address":"{}","expires":"{}","chain":"ETH"}}"#,
            b64.encode(&bytes[1..33]),
            b64.encode(&bytes[33..65]),
            serde_json::Value::from(domain),
            account.address(),
            expires,
        );
        let signature = account.personal_sign(payload.as_bytes());
        let signed_pubkey = serde_json::json!({
            "sender": account.address(),
            "payload": hex::encode(payload.as_bytes()),
            "signature": signature,
            "content": {"domain": domain},
        })
        .to_string();
        CrnAuthKey { key, domain: domain.to_owned(), signed_pubkey }
    }

    /// Headers for `method path` at `time` (ISO-8601 with microseconds and `Z`).
    pub(crate) fn headers(&self, method: &str, path: &str, time: &str) -> CrnAuthHeaders {
        use p256::ecdsa::signature::Signer as _;
        let operation = format!(
            r#"{{"time":"{time}","method":"{method}","path":{},"domain":{}}}"#,
            serde_json::Value::from(path),
            serde_json::Value::from(self.domain.as_str()),
        );
        let signature: p256::ecdsa::Signature = self.key.sign(operation.as_bytes());
        let signed_operation = serde_json::json!({
            "payload": hex::encode(operation.as_bytes()),
            "signature": hex::encode(signature.to_bytes()),
        })
        .to_string();
        CrnAuthHeaders { signed_pubkey: self.signed_pubkey.clone(), signed_operation }
    }
}

/// Checks CRN auth headers the way a CRN does (aleph-vm `authentication.py`): the wallet's
/// EIP-191 signature over the key payload, the payload's domain and expiry, the ES256 signature of
/// the operation, its method, path, domain and time (±2 min). Returns the wallet address. Used by
/// the test doubles; Baal itself only signs.
pub fn verify_crn_auth(
    signed_pubkey: &str,
    signed_operation: &str,
    method: &str,
    path: &str,
    domain: &str,
) -> Result<String, String> {
    use base64::Engine as _;
    use p256::ecdsa::signature::Verifier as _;
    let json = |text: &str| serde_json::from_str::<serde_json::Value>(text).map_err(|e| format!("bad JSON: {e}"));
    let hex_json = |value: &serde_json::Value| -> Result<(Vec<u8>, serde_json::Value), String> {
        let bytes =
            hex::decode(value.as_str().ok_or("payload missing")?).map_err(|e| format!("payload not hex: {e}"))?;
        let parsed = serde_json::from_slice(&bytes).map_err(|e| format!("payload not JSON: {e}"))?;
        Ok((bytes, parsed))
    };
    let pubkey = json(signed_pubkey)?;
    let (payload_bytes, payload) = hex_json(&pubkey["payload"])?;
    let signer = recover_signer(&payload_bytes, pubkey["signature"].as_str().ok_or("signature missing")?)
        .ok_or("Invalid signature")?;
    let address = payload["address"].as_str().unwrap_or_default();
    if !signer.eq_ignore_ascii_case(address) {
        return Err("Invalid signature".into());
    }
    if payload["domain"] != domain {
        return Err(format!("Invalid domain: Signed: {} != Request: {domain}", payload["domain"]));
    }
    if payload["chain"] != "ETH" {
        return Err("Invalid X-SignedPubKey data".into());
    }
    let expires = payload["expires"].as_str().and_then(|e| chrono::DateTime::parse_from_rfc3339(e).ok());
    if expires.is_none_or(|e| e < chrono::Utc::now()) {
        return Err("Token expired".into());
    }
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let coordinate = |name: &str| b64.decode(payload["pubkey"][name].as_str().unwrap_or_default()).unwrap_or_default();
    let mut point = vec![4u8];
    point.extend(coordinate("x"));
    point.extend(coordinate("y"));
    let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(&point).map_err(|_| "bad pubkey")?;
    let operation = json(signed_operation)?;
    let (op_bytes, op) = hex_json(&operation["payload"])?;
    let signature = hex::decode(operation["signature"].as_str().unwrap_or_default().trim_start_matches("0x"))
        .ok()
        .and_then(|raw| p256::ecdsa::Signature::from_slice(&raw).ok())
        .ok_or("bad operation signature")?;
    key.verify(&op_bytes, &signature).map_err(|_| "Invalid signature")?;
    if op["method"] != method || op["path"] != path || op["domain"] != domain {
        return Err("Invalid method, path or domain".into());
    }
    let time = op["time"].as_str().and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok()).ok_or("bad time")?;
    if (chrono::Utc::now() - time.with_timezone(&chrono::Utc)).num_seconds().abs() > 120 {
        return Err("Time is too far in the past or future".into());
    }
    Ok(signer)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Public Anvil/Hardhat dev key #0 (spec Appendix A.2); never funded.
    pub(crate) const DEV_KEY: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";

    fn dev_account() -> EthAccount {
        EthAccount::from_hex(&SecretString::from(DEV_KEY)).unwrap()
    }

    fn recover(message: &[u8], signature: &str) -> String {
        recover_signer(message, signature).unwrap().to_lowercase()
    }

    #[test]
    fn address_is_checksummed() {
        assert_eq!(dev_account().address(), "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266");
        assert!(!format!("{:?}", dev_account()).contains("ac0974"));
    }

    #[test]
    fn plain_eip191_vector() {
        assert_eq!(
            dev_account().personal_sign(b"hello"),
            "0xf16ea9a3478698f695fd1401bfe27e9e4a7e8e3da94aa72b021125e31fa899cc573c48ea3fe1d4ab61a9db10c19032026e3ed2dbccba5a178235ac27f94504311c"
        );
    }

    #[test]
    fn bad_keys_are_refused_with_a_fix() {
        for bad in ["", "0x12", "zz".repeat(32).as_str(), "00".repeat(32).as_str()] {
            let err = EthAccount::from_hex(&SecretString::from(bad)).unwrap_err();
            assert!(err.to_string().contains("ALEPH_PRIVATE_KEY"), "{err}");
        }
    }

    #[test]
    fn crn_auth_documented_vector_verifies() {
        // aleph-vm doc/operator_auth.md: EIP-191 over the JSON bytes recovers the address.
        let payload = r#"{"pubkey": {"crv": "P-256", "kty": "EC", "x": "9bDo4uIIhksZRrgz1Gyr2PPemC46Ns_G0WqD6MMjwFs", "y": "oH43BxlxT3O0es36hYgq1C7-a2ZSZqEm_kV5nclyfzY"}, "alg": "ECDSA", "domain": "localhost", "address": "0xbA26b153591D4620fd2A740A0F1eF70dAd6523b0", "expires": "2010-12-26T17:05:55Z"}"#;
        let sig = "0xea99ef5f1a10f2d103f94dce4f8650730315246e6d15cf9e5862c11adfd6482703cd1ec684a4f3dffb36ae5c4a57b08a47108fe55e3b2454e45f6e63342e0f471b";
        assert_eq!(recover(payload.as_bytes(), sig), "0xbA26b153591D4620fd2A740A0F1eF70dAd6523b0".to_lowercase());
    }

    #[test]
    fn crn_auth_generation_vector() {
        let key = p256::ecdsa::SigningKey::from_slice(&[0x11; 32]).unwrap();
        let auth = CrnAuthKey::with_key(&dev_account(), key, "crn.example.org", "2030-01-01T00:00:00Z");
        let headers = auth.headers(
            "POST",
            "/control/machine/b9663e878db4de1c5ba45a65426ff9ca8f4877476b1f85b091d2038205eeba57/erase",
            "2030-01-01T00:00:00.000000Z",
        );
        let pubkey: serde_json::Value = serde_json::from_str(&headers.signed_pubkey).unwrap();
        let payload = String::from_utf8(hex::decode(pubkey["payload"].as_str().unwrap()).unwrap()).unwrap();
        assert_eq!(
            payload,
            r#"{"pubkey":{"crv":"P-256","kty":"EC","x":"AhfmF_C2RDkoJ4-WmZ5pojpPLBUr321s32bluAKC1O0","y":"GUp968uXcS0t2jyoWqh2Wlb0X8dYWZZS8ol8ZTBuV5Q"},"alg":"ECDSA","domain":"crn.example.org","address":"0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266","expires":"2030-01-01T00:00:00Z","chain":"ETH"}"#
        );
        assert_eq!(
            pubkey["signature"],
            "0x4bdba2bdefbcc625370ce867aaad8bc574b4227024dc67af40a89828ee265fe578d40fc0553662093780905373605e5b278a61afd5ffe099764dc8027a3437ab1b"
        );
        assert_eq!(pubkey["sender"], "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266");
        assert_eq!(pubkey["content"]["domain"], "crn.example.org");
        let op: serde_json::Value = serde_json::from_str(&headers.signed_operation).unwrap();
        let op_payload = String::from_utf8(hex::decode(op["payload"].as_str().unwrap()).unwrap()).unwrap();
        assert_eq!(
            op_payload,
            r#"{"time":"2030-01-01T00:00:00.000000Z","method":"POST","path":"/control/machine/b9663e878db4de1c5ba45a65426ff9ca8f4877476b1f85b091d2038205eeba57/erase","domain":"crn.example.org"}"#
        );
        assert_eq!(
            op["signature"],
            "02eccdf410c01e0724551f416308be0e271120eb44366bd1a1f8beafcd97d9325eaebf7fff55adeccb48c20365007f55115ef40c6cf773404bd2c7a2cf4e970f"
        );
    }
}
