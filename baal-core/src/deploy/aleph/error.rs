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
    /// Maps a pyaleph `error_code` and its `details` to a reason.
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
            Some(5) => Rejection::InsufficientBalance,
            Some(202) => Rejection::InvalidPaymentMethod,
            Some(0) => Rejection::InvalidFormat(details.to_string()),
            Some(1) => Rejection::InvalidSignature,
            Some(2) => Rejection::PermissionDenied,
            code => Rejection::Other { code, detail: details.to_string() },
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::InsufficientCredits { required, available } => {
                write!(f, "the operator's account has too few Aleph credits")?;
                if let (Some(required), Some(available)) = (required, available) {
                    write!(f, " (a day of its VMs needs {required}, it has {available})")?;
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
