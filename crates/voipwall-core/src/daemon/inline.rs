//! The call guard's inline mode: new INVITEs over UDP to SIP ports wait at
//! an NFQUEUE for the engine's verdict. The queue is read by the engine
//! thread itself (its socket is one more in the loop's `poll`): the verdict
//! comes from the same counters as everything else, with no thread hop.
//!
//! This kernel family may lack nft's `queue` statement (CONFIG_NFT_QUEUE),
//! while the xt NFQUEUE target through nft_compat is there: the rules are
//! `iptables-nft` rules in the `security` table (input, priority 150: after
//! voipwall's own input chain accepted the packet), marked with a comment,
//! put in place when the queue is bound and removed when the daemon stops
//! or the policy leaves inline mode. With `--queue-bypass` a killed daemon
//! leaves calls flowing; the queue is bound fail-open, so a full queue
//! lets packets through too.

use std::collections::VecDeque;

use voipwall_policy::{Policy, Proto};
use voipwall_sys::nfqueue::NfqueueReader;

use super::control::Latency;

/// Packets the kernel holds for a verdict at most.
const QUEUE_MAXLEN: u32 = 4096;
/// Verdict latencies kept for `status`.
const KEPT: usize = 4096;

/// What a policy asks of the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Want {
    queue: u16,
    ports: Vec<(u16, u16)>,
}

/// Inline mode as `status` shows it.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct InlineView {
    /// The queue number.
    pub queue: u16,
    /// Whether the queue is bound and its rules are in place.
    pub running: bool,
    /// Why it is not running.
    #[serde(default)]
    pub error: Option<String>,
    /// Something that runs in part (IPv6 rules refused).
    #[serde(default)]
    pub warning: Option<String>,
    /// INVITEs held for a verdict since the queue was bound.
    pub held: u64,
    /// Of them, dropped.
    pub dropped: u64,
    /// Verdicts the socket refused.
    pub verdict_errors: u64,
    /// Times the socket's receive buffer overflowed (the kernel let those
    /// INVITEs through unchecked: fail-open).
    #[serde(default)]
    pub overflows: u64,
    /// Queue rules found missing (removed by another tool) and put back.
    #[serde(default)]
    pub rules_restored: u64,
    /// From the packet's arrival (its kernel timestamp) to its verdict,
    /// microseconds, over the last 4,096 INVITEs.
    pub verdict_latency_us: Latency,
}

/// The queue, its rules and their counters.
pub(crate) struct Inline {
    /// False with `--no-apply` (the daemon leaves the kernel alone).
    allowed: bool,
    /// The queue rules are in place (removed at close).
    installed: bool,
    /// The IPv6 rules are in place too (else IPv6 INVITEs are read from
    /// NFLOG, passively).
    v6: bool,
    want: Option<Want>,
    pub(crate) reader: Option<NfqueueReader>,
    view: InlineView,
    lat: VecDeque<u32>,
}

impl Want {
    /// What `policy` asks for: none in passive mode.
    pub(crate) fn of(policy: &Policy) -> Option<Self> {
        if !policy.call.inline {
            return None;
        }
        let ports = policy
            .sip_readable_ports()
            .into_iter()
            .filter(|p| p.proto == Proto::Udp)
            .map(|p| (p.lo, p.hi))
            .collect();
        Some(Self {
            queue: policy.call.queue,
            ports,
        })
    }
}

impl Inline {
    pub(crate) fn new(allowed: bool) -> Self {
        Self {
            allowed,
            installed: false,
            v6: false,
            want: None,
            reader: None,
            view: InlineView::default(),
            lat: VecDeque::new(),
        }
    }

    /// Makes the queue and its rules what `want` says (binding before the
    /// rules go in, so no INVITE waits for a listener that is not there).
    pub(crate) fn set(&mut self, want: Option<Want>) {
        if want == self.want && (self.reader.is_some() || want.is_none()) {
            return;
        }
        self.close();
        self.want = want.clone();
        let Some(w) = want else { return };
        self.view = InlineView {
            queue: w.queue,
            ..InlineView::default()
        };
        self.lat.clear();
        if !self.allowed {
            self.fail("--no-apply: the daemon leaves the kernel alone".into());
            return;
        }
        if w.ports.is_empty() {
            self.fail("the policy grants no SIP port over UDP: nothing to hold".into());
            return;
        }
        // Rules left by a daemon that was killed go first: a packet they
        // queue while this socket binds would wait for a verdict nobody
        // sends.
        if let Err(e) = voipwall_sys::nfqueue::remove_queue_rules() {
            tracing::warn!(error = %e, "Could not remove queue rules left by an earlier run.");
        }
        let reader = match NfqueueReader::open(w.queue, QUEUE_MAXLEN) {
            Ok(r) => r,
            Err(e) => {
                self.fail(format!("cannot bind NFQUEUE {}: {e}", w.queue));
                return;
            }
        };
        // Whatever happens next, rules may be in place: removed at close.
        self.installed = true;
        match voipwall_sys::nfqueue::install_queue_rules(&w.ports, w.queue) {
            Ok(warning) => {
                if let Some(w) = &warning {
                    tracing::warn!(warning = %w, "Inline call guard: IPv4 only.");
                }
                self.v6 = warning.is_none();
                self.view.warning = warning;
            }
            Err(e) => {
                self.fail(format!("cannot put the queue rules in place: {e}"));
                return;
            }
        }
        tracing::info!(
            queue = w.queue,
            "Inline call guard: new INVITEs over UDP wait for a verdict (bypassed when the daemon is gone)."
        );
        self.view.running = true;
        self.reader = Some(reader);
    }

    fn fail(&mut self, why: String) {
        tracing::error!(error = %why, "Inline call guard not running: calls are checked passively.");
        self.view.error = Some(why);
        self.view.running = false;
    }

    /// Removes the rules and unbinds the queue.
    pub(crate) fn close(&mut self) {
        if std::mem::take(&mut self.installed) {
            match voipwall_sys::nfqueue::remove_queue_rules() {
                Ok(n) if n > 0 => {
                    tracing::info!(rules = n, "Inline call guard: queue rules removed.")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "Could not remove the inline queue rules."),
            }
        }
        // What the queue still holds goes on (the engine is not asked:
        // the daemon is stopping or the mode changing).
        if let Some(mut r) = self.reader.take() {
            let _ = r.drain(|_| voipwall_sys::nfqueue::Verdict::Accept);
        }
        self.view.running = false;
        self.want = None;
    }

    /// Puts the queue rules back when another tool removed them (a flush
    /// of the whole ruleset, `iptables -F`): every 10 s from the loop.
    pub(crate) fn check_rules(&mut self) {
        let Some(w) = self.want.clone() else { return };
        if self.reader.is_none()
            || voipwall_sys::query::marked_rules(
                "ip",
                "security",
                "INPUT",
                voipwall_sys::nfqueue::QUEUE_COMMENT.as_bytes(),
            ) > 0
        {
            return;
        }
        tracing::warn!(
            "Inline call guard: the queue rules were removed by another tool; putting them back."
        );
        match voipwall_sys::nfqueue::install_queue_rules(&w.ports, w.queue) {
            Ok(warning) => {
                self.v6 = warning.is_none();
                self.view.rules_restored += 1;
            }
            Err(e) => tracing::error!(error = %e, "Could not put the queue rules back."),
        }
    }

    /// Whether the queue holds `packet`, so that its NFLOG copy is
    /// skipped (the engine gets it from the queue).
    pub(crate) fn holds(&self, packet: &[u8]) -> bool {
        self.reader.is_some()
            && (self.v6 || packet.first().is_some_and(|b| b >> 4 == 4))
            && voipwall_sys::nfqueue::held_by_queue(packet)
    }

    /// Records the verdict latencies of a drain.
    pub(crate) fn record(&mut self, lat_us: &[u64]) {
        for &l in lat_us {
            if self.lat.len() == KEPT {
                self.lat.pop_front();
            }
            self.lat.push_back(u32::try_from(l).unwrap_or(u32::MAX));
        }
        if let Some(r) = &self.reader {
            self.view.held = r.stats.packets;
            self.view.dropped = r.stats.dropped;
            self.view.verdict_errors = r.stats.verdict_errors;
            self.view.overflows = r.stats.enobufs;
        }
    }

    /// For `status`: none in passive mode.
    pub(crate) fn view(&self) -> Option<InlineView> {
        self.want.as_ref()?;
        let mut v = self.view.clone();
        let mut l: Vec<u64> = self.lat.iter().map(|&x| u64::from(x)).collect();
        l.sort_unstable();
        let at = |q: usize| {
            l.get((l.len() * q / 100).min(l.len().saturating_sub(1)))
                .copied()
        };
        v.verdict_latency_us = Latency {
            samples: l.len(),
            p50: at(50),
            p99: at(99),
            max: l.last().copied(),
        };
        Some(v)
    }
}
