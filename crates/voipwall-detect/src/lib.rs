//! voipwall's detection engine: SIP events and PBX log verdicts plus a clock
//! in, ban decisions and the next deadline out.
//!
//! Sans-IO: no files, no sockets, no clock, no threads. Time is an argument,
//! so `voipwall replay` (a log's own timestamps), the daemon (packet time)
//! and the tests (a scripted clock that covers a week in a millisecond) run
//! the same code. Rules are data (`data/rules/*.toml`), each with scenarios
//! that the test suite runs.
//!
//! ```
//! use voipwall_detect::{Action, Config, Engine, Event, EventKind, RuleSet, Timestamp};
//! let mut engine = Engine::new(Config::new(RuleSet::builtin()));
//! let src = "203.0.113.9".parse().unwrap();
//! for i in 0..5u64 {
//!     let ev = Event { src, kind: EventKind::AuthFailed { user: Some(b"1001") }, origin: "doc" };
//!     engine.handle_event(Timestamp(1_000_000 + i * 1000), &ev);
//! }
//! let Some(Action::Ban(ban)) = engine.poll_action() else { panic!("no ban") };
//! assert_eq!((ban.rule.as_str(), ban.ttl), ("auth-bruteforce", 3_600_000));
//! ```
#![warn(missing_docs)]

pub mod calls;
pub mod drops;
mod engine;
mod event;
pub mod packet;
pub mod rules;
pub mod scenario;
pub mod time;

pub use engine::{
    Action, Ban, Config, CounterView, Engine, Evidence, Explanation, REASSERT_EVERY,
    REASSERT_GRACE, ShieldView, Stats, UNVERIFIED_BAN_TTL,
};
pub use event::{Event, EventKind, Request, Response};
pub use rules::{Recidive, Rule, RuleKind, RuleSet, Threshold};
pub use time::Timestamp;
