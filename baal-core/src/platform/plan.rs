//! What a user's agents run on. Deployments, `/account`, `/dashboard`, `baal-cli users list` and
//! `baal-cli doctor` all ask [`Plan::of`], so none of them can promise a free tier the operator
//! does not pay for.

use std::fmt;

use super::PlatformConfig;
use crate::domain::User;

/// Whose LibertAI key pays for a user's agents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Plan {
    /// The user's own key (`/login`): no daily limit.
    OwnKey,
    /// The operator's key (`LIBERTAI_API_KEY`), up to `daily_messages` messages per UTC day.
    FreeTier {
        /// `FREE_TIER_DAILY_MESSAGES`.
        daily_messages: u32,
    },
    /// Neither: no agent of this user can be deployed until they `/login`.
    NoKey,
}

impl Plan {
    /// The plan of `user` under `config`.
    pub fn of(user: &User, config: &PlatformConfig) -> Plan {
        Plan::decide(user.api_key_sealed.is_some(), config)
    }

    /// The plan of a user who has (or has not) stored a key of their own; a user the store does
    /// not know has not.
    pub(crate) fn decide(has_own_key: bool, config: &PlatformConfig) -> Plan {
        match (has_own_key, config.libertai_api_key.is_some()) {
            (true, _) => Plan::OwnKey,
            (false, true) => Plan::FreeTier { daily_messages: config.free_tier_daily_messages },
            (false, false) => Plan::NoKey,
        }
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Plan::OwnKey => f.write_str("own key"),
            Plan::FreeTier { daily_messages } => write!(f, "free tier ({daily_messages}/day)"),
            Plan::NoKey => f.write_str("no key (must /login)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use secrecy::SecretString;

    use super::*;

    fn user(own_key: bool) -> User {
        let mut user = User::new(1, chrono::Utc::now());
        user.api_key_sealed = own_key.then(|| b"sealed".to_vec());
        user
    }

    #[test]
    fn own_key_wins_then_the_operators_key_then_nothing() {
        let operator = PlatformConfig::default()
            .with_libertai_api_key(SecretString::from("operator"))
            .with_free_tier_daily_messages(7);
        let no_operator = PlatformConfig::default();
        assert_eq!(Plan::of(&user(true), &operator), Plan::OwnKey);
        assert_eq!(Plan::of(&user(true), &no_operator), Plan::OwnKey);
        assert_eq!(Plan::of(&user(false), &operator), Plan::FreeTier { daily_messages: 7 });
        assert_eq!(Plan::of(&user(false), &no_operator), Plan::NoKey);
        assert_eq!(Plan::FreeTier { daily_messages: 7 }.to_string(), "free tier (7/day)");
    }
}
