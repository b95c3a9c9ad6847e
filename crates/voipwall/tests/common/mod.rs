//! Helpers shared by the real-kernel test files (`mod common;` in each).

use std::path::{Path, PathBuf};
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

/// dnsmasq in namespace `ns` on 127.0.0.1, answering from a hosts file in
/// `dir` (TTL 1 s) and with `extra` options; stopped on drop.
#[allow(dead_code)] // not every test file runs a resolver
pub(crate) struct Dnsmasq {
    pub(crate) hosts: PathBuf,
    pid: PathBuf,
}

#[allow(dead_code)]
impl Dnsmasq {
    pub(crate) fn start(ns: &str, dir: &Path, hosts: &str, extra: &[&str]) -> Self {
        let file = dir.join("hosts");
        std::fs::write(&file, hosts).expect("hosts file");
        let pid = dir.join("dnsmasq.pid");
        let addn = format!("--addn-hosts={}", file.display());
        let pidf = format!("--pid-file={}", pid.display());
        let mut args = vec![
            "ip",
            "netns",
            "exec",
            ns,
            "dnsmasq",
            "--listen-address=127.0.0.1",
            "--bind-interfaces",
            "--port=53",
            "--no-resolv",
            "--no-hosts",
            "--user=root",
            "--local-ttl=1",
            &addn,
            &pidf,
        ];
        args.extend_from_slice(extra);
        must(&args);
        Self { hosts: file, pid }
    }

    /// New records: rewrites the hosts file and tells dnsmasq to re-read it.
    pub(crate) fn serve(&self, hosts: &str) {
        std::fs::write(&self.hosts, hosts).expect("hosts file");
        if let Ok(p) = std::fs::read_to_string(&self.pid) {
            must(&["kill", "-HUP", p.trim()]);
        }
    }

    /// Takes the resolver down (an outage).
    pub(crate) fn stop(&mut self) {
        if let Ok(p) = std::fs::read_to_string(&self.pid) {
            let _ = run(&["kill", p.trim()]);
            let _ = std::fs::remove_file(&self.pid);
        }
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        self.stop();
    }
}
