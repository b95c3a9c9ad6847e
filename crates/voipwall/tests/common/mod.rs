//! Helpers shared by the real-kernel test files (`mod common;` in each).

use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

/// Runs a command; panics only if it cannot be started.
pub(crate) fn run(args: &[&str]) -> Output {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("running {args:?}: {e}"))
}

/// Runs a command that must succeed (the test fails with its stderr
/// otherwise); returns its stdout.
pub(crate) fn must(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An id for one lab: tests run as threads of one process, so the pid alone
/// would give two labs the same namespace names.
#[allow(dead_code)] // not every test file builds labs
pub(crate) fn lab_id() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}
