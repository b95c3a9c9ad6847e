//! The only voipwall crate that touches the kernel.
//!
//! - [`nft`]: the policy plane. Scripts from `voipwall-nft` are checked with
//!   `nft -c` and applied in one transaction; the table is removed only on
//!   `disable`.
//! - [`netlink`]: the ban plane. Elements with per-element timeouts go to the
//!   ban and known sets over raw nftables netlink, batched.
//! - [`nflog`]: packet copies from an NFLOG group, batched and walked in place.
//! - [`nfqueue`]: the call guard's inline INVITE verdicts, and the
//!   `iptables-nft` rules that queue them.
#![warn(missing_docs)]

pub mod bans;
pub mod dns;
pub mod link;
pub mod netlink;
pub mod nflog;
pub mod nfqueue;
pub mod nft;
pub mod notify;
pub mod query;
pub mod route;
