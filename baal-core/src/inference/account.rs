//! What LibertAI says about a key: whether it is accepted, and the credits behind it. The
//! platform asks before it stores a user's key, and for the account card.

use secrecy::{ExposeSecret, SecretString};

/// LibertAI's answer about one API key.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum KeyCheck {
    /// The key works; its balance in credits.
    Valid {
        /// Credits left.
        balance: f64,
    },
    /// LibertAI refused the key (any 4xx): it is wrong or revoked.
    Invalid,
    /// LibertAI could not be asked (network, 5xx, an answer that is not JSON): nothing is known.
    Unavailable,
}

/// Asks `api_base` (e.g. `https://api.libertai.io`) for the balance of `key`. Never fails: an
/// unreachable service is [`KeyCheck::Unavailable`], so callers can tell a user to try again
/// rather than that their key is wrong. Logs no key and no URL (the URL carries no secret, but
/// errors from reqwest would repeat it for every attempt).
pub async fn check_key(http: &reqwest::Client, api_base: &str, key: &SecretString) -> KeyCheck {
    let url = format!("{}/credits/balance", api_base.trim_end_matches('/'));
    let response = match http.get(url).bearer_auth(key.expose_secret()).send().await {
        Ok(response) => response,
        Err(err) => {
            tracing::warn!(error = %err.without_url(), "LibertAI balance check failed");
            return KeyCheck::Unavailable;
        }
    };
    match response.status().as_u16() {
        200 => match response.json::<serde_json::Value>().await {
            Ok(body) => {
                KeyCheck::Valid { balance: body.get("balance").and_then(serde_json::Value::as_f64).unwrap_or(0.0) }
            }
            Err(_) => KeyCheck::Unavailable,
        },
        400..=499 => KeyCheck::Invalid,
        _ => KeyCheck::Unavailable,
    }
}
