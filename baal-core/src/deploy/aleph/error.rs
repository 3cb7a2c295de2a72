//! What can go wrong talking to Aleph Cloud and to the VM, worded for the operator.

use std::fmt;

/// Why the network refused a message (pyaleph error codes, spec §3.5).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rejection {
    /// Code 6: the account cannot pay a day of its credit resources.
    InsufficientCredits {
        /// Credits the CCN asked for, when it said.
        required: Option<String>,
        /// Credits the account has, when it said.
        available: Option<String>,
    },
    /// Code 5: hold-tier balance too low.
    InsufficientBalance,
    /// Code 202: the payment type is no longer accepted.
    InvalidPaymentMethod,
    /// Code 0 or an HTTP 422 before processing: the message does not match the schema.
    InvalidFormat(String),
    /// Code 1.
    InvalidSignature,
    /// Code 2.
    PermissionDenied,
    /// Any other code.
    Other {
        /// The pyaleph error code, if any.
        code: Option<i64>,
        /// What the CCN said.
        detail: String,
    },
}

impl Rejection {
    /// Maps a pyaleph `error_code` and its `details` (the message's record, `GET
    /// /api/v0/messages/{hash}`) to a reason.
    pub(crate) fn from_code(code: Option<i64>, details: &serde_json::Value) -> Rejection {
        let first = details.get("errors").and_then(|e| e.get(0)).cloned().unwrap_or(serde_json::Value::Null);
        let text = |key: &str| {
            first.get(key).map(|v| match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            })
        };
        match code {
            Some(6) => Rejection::InsufficientCredits {
                required: text("required_credits"),
                available: text("account_credits"),
            },
            code => Rejection::plain(code, describe(details)),
        }
    }

    /// Maps the `error` of a refusing answer to the POST (`{"code": 6, "message": "credit balance
    /// insufficient: have 0 credits, need 1460.08 …"}`, as heph sends, keeping no record) to a
    /// reason. Amounts come from the words, the only place this shape has them.
    pub(crate) fn from_answer(code: Option<i64>, message: &str) -> Rejection {
        match code {
            Some(6) => Rejection::InsufficientCredits {
                required: amount_after(message, "need"),
                available: amount_after(message, "have"),
            },
            code => Rejection::plain(code, message.to_owned()),
        }
    }

    /// The reasons whose details carry nothing Baal reads.
    fn plain(code: Option<i64>, detail: String) -> Rejection {
        match code {
            Some(5) => Rejection::InsufficientBalance,
            Some(202) => Rejection::InvalidPaymentMethod,
            Some(0) => Rejection::InvalidFormat(detail),
            Some(1) => Rejection::InvalidSignature,
            Some(2) => Rejection::PermissionDenied,
            code => Rejection::Other { code, detail },
        }
    }

    /// What the agent's owner is told when Baal's `kind` message was refused: what happened, that
    /// it is on Baal's side, and what happens next. Short enough for the error card (300
    /// characters) with the CCN's detail cut.
    pub(crate) fn for_owner(&self, kind: &str) -> String {
        const BAALS_SIDE: &str = "This is on Baal's side, not yours:";
        let request = match kind {
            "INSTANCE" => "Baal's request for a VM",
            "FORGET" => "Baal's request to release the VM",
            _ => "Baal's request",
        };
        match self {
            Rejection::InsufficientCredits { required, available } => {
                let amounts = match (required, available) {
                    (Some(need), Some(have)) => {
                        format!(
                            ": a day of Baal's VMs, this one included, costs {need} credits and the wallet holds {have}"
                        )
                    }
                    (Some(need), None) => format!(": a day of Baal's VMs, this one included, costs {need} credits"),
                    (None, Some(have)) => format!(": the wallet holds {have} credits"),
                    (None, None) => String::new(),
                };
                format!(
                    "Baal's Aleph Cloud wallet is short of credits{amounts}. {BAALS_SIDE} the operator has to top up the wallet. Press Retry once they have."
                )
            }
            Rejection::InsufficientBalance => format!(
                "Baal's Aleph Cloud wallet holds too few ALEPH tokens. {BAALS_SIDE} the operator has to top up the wallet. Press Retry once they have."
            ),
            Rejection::InvalidPaymentMethod => format!(
                "The Aleph network no longer accepts the way Baal pays for VMs. {BAALS_SIDE} the operator has to update Baal."
            ),
            Rejection::InvalidFormat(_) => format!(
                "The Aleph network refused {request} as malformed. {BAALS_SIDE} it is a bug the operator has to fix."
            ),
            Rejection::InvalidSignature => format!(
                "The Aleph network refused the signature on {request}. {BAALS_SIDE} the operator has to check the wallet's key."
            ),
            Rejection::PermissionDenied => format!(
                "The Aleph network refused {request}: Baal's wallet may not do that. {BAALS_SIDE} the operator has to check the wallet."
            ),
            Rejection::Other { code, detail } => {
                let code = code.map(|c| format!(" (error code {c})")).unwrap_or_default();
                let detail: String = detail.chars().take(120).collect();
                format!("The Aleph network refused {request}{code}: {detail}")
            }
        }
    }
}

/// A details value as words: a string as itself, anything else as JSON.
fn describe(details: &serde_json::Value) -> String {
    match details {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The number that follows `word` in `text` (`have 0 credits, need 1460.08 (…)` → `0`, `1460.08`).
fn amount_after(text: &str, word: &str) -> Option<String> {
    let mut words = text
        .split(|c: char| c.is_whitespace() || c == '(')
        .map(|w| w.trim_end_matches([',', '.', ':', ';']))
        .filter(|w| !w.is_empty());
    let amount = words.by_ref().skip_while(|w| !w.eq_ignore_ascii_case(word)).nth(1)?;
    // Anything else (`1,000`, `more`) is not a number Baal can repeat faithfully.
    amount.chars().all(|c| c.is_ascii_digit() || c == '.').then(|| amount.to_owned())
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::InsufficientCredits { required, available } => {
                write!(f, "the operator's account has too few Aleph credits")?;
                match (required, available) {
                    (Some(required), Some(available)) => {
                        write!(f, " (a day of its VMs needs {required}, it has {available})")?
                    }
                    (Some(required), None) => write!(f, " (a day of its VMs needs {required})")?,
                    (None, Some(available)) => write!(f, " (it has {available})")?,
                    (None, None) => {}
                }
                write!(f, "; buy credits for the ALEPH_PRIVATE_KEY wallet on the Aleph Cloud console, then retry")
            }
            Rejection::InsufficientBalance => {
                write!(f, "the operator's ALEPH balance is too low for this resource; top up the wallet, then retry")
            }
            Rejection::InvalidPaymentMethod => write!(
                f,
                "the network no longer accepts this payment type for instances; Baal must pay with credits (report this as a bug)"
            ),
            Rejection::InvalidFormat(detail) => {
                write!(f, "the message does not match the network's schema (report this as a bug): {detail}")
            }
            Rejection::InvalidSignature => {
                write!(f, "the signature was refused; check that ALEPH_PRIVATE_KEY is the intended wallet")
            }
            Rejection::PermissionDenied => write!(f, "this wallet is not allowed to act on that resource"),
            Rejection::Other { code: Some(code), detail } => write!(f, "error code {code}: {detail}"),
            Rejection::Other { code: None, detail } => write!(f, "{detail}"),
        }
    }
}

/// A failure of the Aleph deployer. `Display` tells the operator what happened and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AlephError {
    /// A setting is missing or wrong.
    #[error("{0}")]
    Config(String),
    /// The network refused a message.
    #[error("the Aleph network rejected the {kind} message {hash}: {reason}")]
    Rejected {
        /// `INSTANCE` or `FORGET`.
        kind: String,
        /// The message's item hash.
        hash: String,
        /// Why.
        reason: Rejection,
    },
    /// A peer could not be reached or answered with an error.
    #[error("{what} failed: {detail}")]
    Peer {
        /// The peer and the request (`CRN https://x notify`).
        what: String,
        /// What went wrong.
        detail: String,
    },
    /// A bounded wait ran out.
    #[error("{what} did not happen within {seconds} s")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long Baal waited.
        seconds: u64,
    },
    /// No compute node passes the filters (or all are blacklisted).
    #[error("no Aleph compute node can take a VM right now ({0}); retry in a few minutes")]
    NoNode(String),
    /// SSH to the VM failed.
    #[error("SSH to {target} failed: {detail}")]
    Ssh {
        /// `host:port`.
        target: String,
        /// What went wrong.
        detail: String,
    },
    /// The VM's SSH server refused every key Baal offered.
    #[error("SSH to {target} failed: the VM refused {keys}")]
    KeyRefused {
        /// `host:port`.
        target: String,
        /// The keys offered, as the operator knows them (the setting that names each).
        keys: String,
    },
    /// The VM presented a different host key than the one pinned at first contact.
    #[error(
        "the VM at {target} presented a different SSH host key than the one recorded at first contact; refusing to connect (if the VM was really reinstalled, clear its recorded host key)"
    )]
    HostKeyChanged {
        /// `host:port`.
        target: String,
    },
    /// A step of the VM-side script failed.
    #[error("the VM step `{step}` failed: {detail}")]
    Remote {
        /// The script command.
        step: String,
        /// Its stderr (never a secret: the script prints none).
        detail: String,
    },
}

impl AlephError {
    pub(crate) fn peer(what: impl Into<String>, detail: impl fmt::Display) -> AlephError {
        AlephError::Peer { what: what.into(), detail: detail.to_string() }
    }

    /// Whether a retry later could succeed.
    pub fn retryable(&self) -> bool {
        match self {
            AlephError::Config(_) | AlephError::HostKeyChanged { .. } => false,
            AlephError::Rejected { reason, .. } => matches!(reason, Rejection::Other { .. }),
            _ => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heph_words_give_the_amounts() {
        let said = "credit balance insufficient: have 0 credits, need 1460.08 (existing_cost=0.000000/s + new=0.016899/s * 86400s)";
        assert_eq!(
            Rejection::from_answer(Some(6), said),
            Rejection::InsufficientCredits { required: Some("1460.08".into()), available: Some("0".into()) }
        );
        // heph's credit transfer words it differently; the same amounts come out.
        assert_eq!(
            Rejection::from_answer(Some(6), "insufficient credit balance: have 12, need 100"),
            Rejection::InsufficientCredits { required: Some("100".into()), available: Some("12".into()) }
        );
        // Words without amounts, or amounts Baal cannot read, give none rather than a wrong one.
        assert_eq!(
            Rejection::from_answer(Some(6), "have 1,000 credits, need 2,000"),
            Rejection::InsufficientCredits { required: None, available: None }
        );
        assert_eq!(
            Rejection::from_answer(Some(6), "have you tried paying? we need more."),
            Rejection::InsufficientCredits { required: None, available: None }
        );
        assert_eq!(
            Rejection::from_answer(Some(0), "unknown field `x`"),
            Rejection::InvalidFormat("unknown field `x`".into())
        );
        assert_eq!(
            Rejection::from_answer(Some(304), "volume too small"),
            Rejection::Other { code: Some(304), detail: "volume too small".into() }
        );
    }

    #[test]
    fn pyaleph_details_give_the_amounts() {
        let details = serde_json::json!({"errors": [{"required_credits": "1460.08", "account_credits": "0", "min_runtime_days": 1}]});
        assert_eq!(
            Rejection::from_code(Some(6), &details),
            Rejection::InsufficientCredits { required: Some("1460.08".into()), available: Some("0".into()) }
        );
        let details = serde_json::json!({"errors": [{"loc": ["content", "x"], "type": "extra_forbidden"}]});
        assert!(
            matches!(Rejection::from_code(Some(0), &details), Rejection::InvalidFormat(d) if d.contains("extra_forbidden"))
        );
    }

    /// The error card shows 300 characters: the owner's text must fit with large amounts and a
    /// long detail.
    #[test]
    fn owner_texts_say_whose_side_and_fit_the_card() {
        let reasons = [
            Rejection::InsufficientCredits {
                required: Some("123456789012.99".into()),
                available: Some("98765432101.5".into()),
            },
            Rejection::InsufficientCredits { required: None, available: None },
            Rejection::InsufficientBalance,
            Rejection::InvalidPaymentMethod,
            Rejection::InvalidFormat("x".repeat(1000)),
            Rejection::InvalidSignature,
            Rejection::PermissionDenied,
            Rejection::Other { code: Some(304), detail: "y".repeat(1000) },
        ];
        for reason in &reasons {
            for kind in ["INSTANCE", "FORGET"] {
                let text = reason.for_owner(kind);
                assert!(text.chars().count() <= 300, "{} characters: {text}", text.chars().count());
                let retryable =
                    AlephError::Rejected { kind: kind.into(), hash: "h".into(), reason: reason.clone() }.retryable();
                assert!(retryable || text.contains("on Baal's side, not yours"), "{text}");
            }
        }
        let credits = reasons[0].for_owner("INSTANCE");
        assert!(
            credits.contains("costs 123456789012.99 credits") && credits.contains("holds 98765432101.5"),
            "{credits}"
        );
    }
}
