//! The Aleph Cloud deployer: one VM per agent, paid with credits, the agent shipped over SSH,
//! HTTPS by Caddy on the agent's `*.2n6.me` name.

pub mod message;
#[allow(dead_code)] // the CRN client lands next
pub mod sign;
