//! The driver library: everything voipwall does with the kernel, the store
//! and the files, on top of the pure crates. The one ban plane
//! ([`plane`]), the one apply path ([`safety::apply_path`]), the daemon
//! ([`daemon`]), loading a policy from disk ([`context`]), the engine's
//! configuration from a policy ([`detection`]) and what the host shows
//! ([`host`]). The CLI is a thin layer over it; the HTTP API, the fleet and
//! the feeds call the same functions.

pub mod clock;
pub mod context;
pub mod daemon;
pub mod detection;
pub mod feeds;
pub mod geo;
pub mod host;
pub mod human;
pub mod owned;
pub mod plane;
pub mod random;
pub mod safety;
pub mod tokens;

/// Invalid input: exit code 1. The message is already rendered for humans.
#[derive(Debug)]
pub struct Invalid(pub String);

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0.trim_end())
    }
}

impl std::error::Error for Invalid {}

/// Ends the process with this exit code, the output already written
/// (`audit`'s severity codes).
#[derive(Debug)]
pub struct ExitWith(pub u8);

impl std::fmt::Display for ExitWith {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {}", self.0)
    }
}

impl std::error::Error for ExitWith {}
