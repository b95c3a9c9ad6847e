//! The drop log's reader: a thread bound to `[drops] nflog_group` that
//! turns each sampled refusal into a [`DropSample`] (its port named by the
//! policy's services) and keeps the window ([`DropWindow`]). The kernel
//! rate-limits the samples, so this thread and the window stay small
//! whatever the flood; the engine thread only reads the window when asked.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use voipwall_detect::drops::{DropWindow, DropsReport, parse_sample};
use voipwall_policy::Policy;

/// No group bound.
const OFF: u32 = u32::MAX;

/// What the reader and the daemon share.
#[derive(Default)]
pub(crate) struct DropLog {
    window: Mutex<DropWindow>,
    /// The group to bind, or [`OFF`].
    group: AtomicU32,
    rate: AtomicU32,
    /// (protocol, first port, last port, service) from the policy.
    services: Mutex<Vec<(String, u16, u16, String)>>,
    /// Copies read, and times the receive buffer overflowed.
    copies: AtomicU64,
    lost: AtomicU64,
}

impl DropLog {
    /// Takes the policy's `[drops]` and services (at start and on reload).
    pub(crate) fn configure(&self, policy: &Policy) {
        let mut ports: Vec<(String, u16, u16, String)> = policy
            .services
            .values()
            .flat_map(|s| {
                s.ports
                    .iter()
                    .map(move |p| (p.proto.to_string(), p.lo, p.hi, s.name.clone()))
            })
            .collect();
        ports.sort();
        *self.services.lock().unwrap_or_else(PoisonError::into_inner) = ports;
        self.rate.store(policy.drops.rate, Ordering::Relaxed);
        self.group.store(
            policy.drops.group().map_or(OFF, u32::from),
            Ordering::Relaxed,
        );
    }

    /// The report `voipwall drops` shows.
    pub(crate) fn report(&self, now_ms: u64, minutes: u64, top: usize, since: u64) -> DropsReport {
        let group = self.group.load(Ordering::Relaxed);
        let mut r = self
            .window
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .report(now_ms, minutes, top, since);
        r.enabled = group != OFF;
        r.rate = self.rate.load(Ordering::Relaxed);
        r.copies = self.copies.load(Ordering::Relaxed);
        r.lost = self.lost.load(Ordering::Relaxed);
        r
    }

    fn service(&self, proto: &str, port: Option<u16>) -> Option<String> {
        let port = port?;
        self.services
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .find(|(p, lo, hi, _)| p == proto && (*lo..=*hi).contains(&port))
            .map(|(_, _, _, s)| s.clone())
    }
}

/// Starts the reader thread. It binds the configured group, rebinds when
/// a reload changes it, and stops with the daemon.
pub(crate) fn start(log: Arc<DropLog>, stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    std::thread::Builder::new()
        .name("drops".into())
        .spawn(move || {
            let mut bound: Option<(u32, voipwall_sys::nflog::NflogReader)> = None;
            let mut failed = OFF;
            let mut batch = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let want = log.group.load(Ordering::Relaxed);
                if bound.as_ref().map_or(OFF, |(g, _)| *g) != want {
                    bound = None;
                    if want != OFF && failed != want {
                        let mut cfg = voipwall_sys::nflog::NflogConfig::new(
                            u16::try_from(want).unwrap_or(0),
                        );
                        // Samples are few (the kernel limits them) and
                        // nobody waits on them: small buffers, batches.
                        cfg.copy_range = 128;
                        cfg.rcvbuf = 1 << 20;
                        match voipwall_sys::nflog::NflogReader::open(&cfg) {
                            Ok(r) => {
                                tracing::info!(group = want, "Drop log: reading NFLOG group.");
                                bound = Some((want, r));
                                failed = OFF;
                            }
                            Err(e) => {
                                tracing::error!(group = want, error = %e, "Drop log: cannot bind the NFLOG group; no drop log.");
                                failed = want;
                            }
                        }
                    }
                }
                let Some((_, reader)) = bound.as_mut() else {
                    std::thread::sleep(Duration::from_millis(500));
                    continue;
                };
                match voipwall_sys::nflog::wait_readable(&[reader.fd()], 500) {
                    Ok(r) if r.first() == Some(&true) => {}
                    Ok(_) => continue,
                    Err(e) => {
                        tracing::warn!(error = %e, "Drop log: poll failed.");
                        std::thread::sleep(Duration::from_millis(500));
                        continue;
                    }
                }
                let read = reader.drain(|p| {
                    let at = p.timestamp_us.map_or_else(super::now_ms, |us| us / 1000);
                    if let Some(s) = p.prefix.and_then(|pre| parse_sample(pre, p.payload, at)) {
                        batch.push(s);
                    }
                });
                if let Err(e) = read {
                    tracing::warn!(error = %e, "Drop log: read failed.");
                }
                log.copies.store(reader.stats.packets, Ordering::Relaxed);
                log.lost.store(reader.stats.enobufs, Ordering::Relaxed);
                for s in &mut batch {
                    s.service = log.service(&s.proto, s.port);
                }
                let mut w = log.window.lock().unwrap_or_else(PoisonError::into_inner);
                for s in batch.drain(..) {
                    w.push(s);
                }
            }
        })?;
    Ok(())
}
