//! Names for voipwall: trunk hostnames, DDNS names and SRV targets are
//! resolved to A and AAAA with their TTLs, re-resolved when the TTL runs
//! out, and turned into element-by-element set changes; a failing resolver
//! keeps the last good answer and says so.
//!
//! [`codec`] and [`schedule`] are pure (tested, property-tested, fuzzed);
//! [`client`] is a small blocking UDP client, the only I/O.

pub mod codec;
pub mod conf;
pub mod schedule;

pub use codec::{DnsError, QType, Rdata, Record, Response, encode_query, parse_response};
pub use conf::resolv_conf_servers;
pub use schedule::{Change, NameState, Resolved, Settings, Tracker};
