//! What a policy does to this host, judged without touching it.
//!
//! - [`audit`]: listening services run through the compiled ruleset from the
//!   internet, weak SIP secrets, default credentials, other firewalls.
//! - [`lockout`]: the anti-lockout check every apply runs first.
//! - [`propose`]: the policy `voipwall init` writes.
//! - [`infra`]: gateways and NTP servers, protected from forged evidence.
//!
//! Pure, like the policy and SIP crates (`clippy.toml`): the binary reads
//! `/proc`, the interfaces and the PBX and passes them in.
#![warn(missing_docs)]

pub mod audit;
pub mod infra;
pub mod lockout;
pub mod propose;
