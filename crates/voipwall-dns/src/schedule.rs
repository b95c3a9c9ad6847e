//! When to ask again, and what changed. Pure: time is an argument.
//!
//! Each name is re-resolved when its TTL runs out (clamped between a floor
//! and a ceiling, so a TTL of 0 does not hammer the server and a TTL of a
//! week does not hide a move). A failed or empty answer keeps the last good
//! addresses in the kernel and retries with doubling back-off; the state
//! says so, for `voipwall status`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde::Serialize;

/// Timing settings, milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Never sooner than this after an answer.
    pub min_refresh_ms: u64,
    /// Never later than this after an answer.
    pub max_refresh_ms: u64,
    /// First retry after a failure (doubles up to `max_refresh_ms`).
    pub retry_ms: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            min_refresh_ms: 10_000,
            max_refresh_ms: 300_000,
            retry_ms: 5_000,
        }
    }
}

/// A successful lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// Every address found (A, AAAA, SRV targets').
    pub addrs: BTreeSet<IpAddr>,
    /// The smallest TTL among the records used, seconds.
    pub ttl_s: u32,
}

/// What one name's set must change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The name.
    pub host: String,
    /// Addresses to add.
    pub add: Vec<IpAddr>,
    /// Addresses to delete.
    pub remove: Vec<IpAddr>,
}

/// What is known about one name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NameState {
    /// The name.
    pub host: String,
    /// Also follows SIP SRV records.
    pub srv: bool,
    /// The addresses in the kernel now.
    pub current: BTreeSet<IpAddr>,
    /// TTL of the last good answer, seconds.
    pub ttl_s: Option<u32>,
    /// When the last good answer came, ms.
    pub last_good_ms: Option<u64>,
    /// The last failure, while it lasts.
    pub error: Option<String>,
    /// Failures in a row.
    pub failures: u32,
    /// When to ask next, ms.
    pub due_ms: u64,
}

/// The names and their schedule.
#[derive(Debug, Clone, Default)]
pub struct Tracker {
    names: BTreeMap<String, NameState>,
    settings: Settings,
}

impl Tracker {
    /// An empty tracker.
    pub fn new(settings: Settings) -> Self {
        Self {
            names: BTreeMap::new(),
            settings,
        }
    }

    /// New timing settings (after a reload); names keep their state.
    pub fn set_settings(&mut self, settings: Settings) {
        self.settings = settings;
    }

    /// Replaces the names (after an apply): each starts with the addresses
    /// the apply put in the kernel and is due at once. A name seen before
    /// keeps its failure history.
    pub fn set_names(&mut self, now_ms: u64, names: Vec<(String, bool, BTreeSet<IpAddr>)>) {
        let mut next = BTreeMap::new();
        for (host, srv, current) in names {
            let old = self.names.remove(&host);
            next.insert(
                host.clone(),
                NameState {
                    host,
                    srv,
                    current,
                    ttl_s: old.as_ref().and_then(|o| o.ttl_s),
                    last_good_ms: old.as_ref().and_then(|o| o.last_good_ms),
                    error: old.as_ref().and_then(|o| o.error.clone()),
                    failures: old.as_ref().map_or(0, |o| o.failures),
                    due_ms: now_ms,
                },
            );
        }
        self.names = next;
    }

    /// Sets a tracked name's addresses without a lookup (at start, the
    /// last good answer a store recorded), keeping its schedule. Returns the
    /// set change when they differ; `None` for an unknown name or an empty
    /// answer (an empty answer never replaces addresses).
    pub fn seed(&mut self, host: &str, addrs: BTreeSet<IpAddr>) -> Option<Change> {
        let n = self.names.get_mut(host)?;
        if addrs.is_empty() || addrs == n.current {
            return None;
        }
        let add: Vec<IpAddr> = addrs.difference(&n.current).copied().collect();
        let remove: Vec<IpAddr> = n.current.difference(&addrs).copied().collect();
        n.current = addrs;
        Some(Change {
            host: host.to_string(),
            add,
            remove,
        })
    }

    /// Names due now: `(host, srv)`.
    pub fn due(&self, now_ms: u64) -> Vec<(String, bool)> {
        self.names
            .values()
            .filter(|n| n.due_ms <= now_ms)
            .map(|n| (n.host.clone(), n.srv))
            .collect()
    }

    /// The earliest due time, if any name is tracked.
    pub fn next_due(&self) -> Option<u64> {
        self.names.values().map(|n| n.due_ms).min()
    }

    /// Records a lookup. Returns the set change when the addresses moved.
    pub fn record(
        &mut self,
        now_ms: u64,
        host: &str,
        outcome: Result<Resolved, String>,
    ) -> Option<Change> {
        let s = self.settings;
        let n = self.names.get_mut(host)?;
        match outcome {
            Ok(r) if !r.addrs.is_empty() => {
                let add: Vec<IpAddr> = r.addrs.difference(&n.current).copied().collect();
                let remove: Vec<IpAddr> = n.current.difference(&r.addrs).copied().collect();
                n.current = r.addrs;
                n.ttl_s = Some(r.ttl_s);
                n.last_good_ms = Some(now_ms);
                n.error = None;
                n.failures = 0;
                n.due_ms =
                    now_ms + (u64::from(r.ttl_s) * 1000).clamp(s.min_refresh_ms, s.max_refresh_ms);
                (!add.is_empty() || !remove.is_empty()).then(|| Change {
                    host: host.to_string(),
                    add,
                    remove,
                })
            }
            other => {
                let why = match other {
                    Err(e) => e,
                    Ok(_) => "the answer has no address".to_string(),
                };
                n.failures += 1;
                n.error = Some(format!(
                    "{why}; keeping the last good {} address(es)",
                    n.current.len()
                ));
                let backoff = s
                    .retry_ms
                    .saturating_mul(1 << (n.failures - 1).min(16))
                    .min(s.max_refresh_ms);
                n.due_ms = now_ms + backoff;
                None
            }
        }
    }

    /// Every name's state, by name.
    pub fn states(&self) -> impl Iterator<Item = &NameState> {
        self.names.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(a: &[&str]) -> BTreeSet<IpAddr> {
        a.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn follows_ttl_keeps_last_good_and_backs_off() {
        let mut t = Tracker::new(Settings {
            min_refresh_ms: 1000,
            max_refresh_ms: 60_000,
            retry_ms: 2000,
        });
        t.set_names(0, vec![("trunk".into(), false, set(&["203.0.113.7"]))]);
        assert_eq!(t.due(0).len(), 1);
        // Same answer: nothing to change; next due after the TTL.
        let same = Resolved {
            addrs: set(&["203.0.113.7"]),
            ttl_s: 30,
        };
        assert_eq!(t.record(0, "trunk", Ok(same)), None);
        assert_eq!(t.next_due(), Some(30_000));
        assert!(t.due(29_999).is_empty());
        // Moved: one add and one delete, element by element.
        let moved = Resolved {
            addrs: set(&["203.0.113.8", "2001:db8::8"]),
            ttl_s: 0,
        };
        let c = t.record(30_000, "trunk", Ok(moved)).unwrap();
        assert_eq!(
            c.add,
            vec![
                "203.0.113.8".parse::<IpAddr>().unwrap(),
                "2001:db8::8".parse().unwrap()
            ]
        );
        assert_eq!(c.remove, vec!["203.0.113.7".parse::<IpAddr>().unwrap()]);
        assert_eq!(t.next_due(), Some(31_000), "TTL 0 is clamped to the floor");
        // Failures keep the addresses and back off 2 s, 4 s, 8 s ...
        assert_eq!(t.record(31_000, "trunk", Err("timeout".into())), None);
        assert_eq!(t.next_due(), Some(33_000));
        assert_eq!(
            t.record(
                33_000,
                "trunk",
                Ok(Resolved {
                    addrs: set(&[]),
                    ttl_s: 5
                })
            ),
            None
        );
        assert_eq!(t.next_due(), Some(37_000));
        let st = t.states().next().unwrap();
        assert_eq!(st.current.len(), 2, "last good kept");
        assert!(
            st.error
                .as_deref()
                .unwrap()
                .contains("keeping the last good 2")
        );
        // A new apply keeps the failure history but makes the name due now.
        t.set_names(40_000, vec![("trunk".into(), true, set(&["203.0.113.8"]))]);
        assert_eq!(t.states().next().unwrap().failures, 2);
        assert_eq!(t.due(40_000), vec![("trunk".to_string(), true)]);
        assert_eq!(t.record(40_000, "unknown", Err("x".into())), None);
    }

    #[test]
    fn a_seed_sets_the_addresses_but_never_empties_them_or_moves_the_schedule() {
        let mut t = Tracker::new(Settings::default());
        t.set_names(5, vec![("trunk".into(), false, set(&["203.0.113.7"]))]);
        assert_eq!(t.seed("trunk", set(&[])), None, "empty never replaces");
        assert_eq!(t.seed("trunk", set(&["203.0.113.7"])), None, "same");
        let c = t.seed("trunk", set(&["203.0.113.8"])).unwrap();
        assert_eq!(c.add, vec!["203.0.113.8".parse::<IpAddr>().unwrap()]);
        assert_eq!(c.remove, vec!["203.0.113.7".parse::<IpAddr>().unwrap()]);
        assert_eq!(t.due(5), vec![("trunk".to_string(), false)], "still due");
        assert_eq!(t.seed("other", set(&["192.0.2.1"])), None);
    }
}
