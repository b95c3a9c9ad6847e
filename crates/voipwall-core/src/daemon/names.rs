//! The resolver thread: trunk and peer hostnames (A, AAAA, SIP SRV targets)
//! re-resolved on their TTL, their kernel sets updated element by element
//! over netlink. No apply, no flush: a moved trunk costs one add and one
//! delete. A failing resolver leaves the last good addresses in place.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use voipwall_dns::{Settings, Tracker};
use voipwall_nft::{Family, NameSet, Ruleset};
use voipwall_policy::Policy;
use voipwall_sys::dns::Client;
use voipwall_sys::netlink::{Elem, SetElements};

struct Shared {
    tracker: Tracker,
    /// The compiled ruleset's names: sets and whether detection must never
    /// ban their addresses.
    names: BTreeMap<String, NameSet>,
    client: Client,
    /// Set changes made, for status.
    updates: u64,
    /// Where to tell the engine that a peer's addresses moved.
    notify: Option<(std::sync::mpsc::Sender<super::Input>, super::Waker)>,
    /// Where real answers go, as each name's last good one.
    store: Option<std::sync::mpsc::Sender<super::StoreOp>>,
    /// The answers recorded, so an unchanged answer is not written again.
    recorded: BTreeMap<String, BTreeSet<IpAddr>>,
}

/// Handle kept by the engine thread.
pub struct Names {
    shared: Arc<Mutex<Shared>>,
    started: Instant,
}

fn settings(p: &Policy) -> Settings {
    Settings {
        min_refresh_ms: p.dns.min_refresh * 1000,
        max_refresh_ms: p.dns.max_refresh * 1000,
        retry_ms: (p.dns.min_refresh * 1000).clamp(1000, 5000),
    }
}

impl Names {
    /// Starts the thread. It runs until `stop`.
    pub fn start(stop: Arc<AtomicBool>) -> std::io::Result<Self> {
        let shared = Arc::new(Mutex::new(Shared {
            tracker: Tracker::new(Settings::default()),
            names: BTreeMap::new(),
            client: Client {
                servers: Vec::new(),
                timeout: Duration::from_millis(700),
                query_id: crate::random::query_id,
            },
            updates: 0,
            notify: None,
            store: None,
            recorded: BTreeMap::new(),
        }));
        let started = Instant::now();
        let s = shared.clone();
        std::thread::Builder::new()
            .name("names".into())
            .spawn(move || run(&s, started, &stop))?;
        Ok(Self { shared, started })
    }

    /// After an apply: the names of `rs`, each starting from the addresses
    /// the apply put in its sets, all due at once.
    pub fn update(&self, policy: &Policy, rs: &Ruleset) {
        let now = ms(self.started);
        let elements = |set: &str| -> BTreeSet<IpAddr> {
            rs.set(set)
                .map(|s| s.elements.iter().map(|e| e.lo).collect())
                .unwrap_or_default()
        };
        let names: Vec<(String, bool, BTreeSet<IpAddr>)> = rs
            .names
            .iter()
            .map(|n| {
                let mut cur = elements(&n.v4);
                cur.extend(elements(&n.v6));
                (n.host.clone(), n.srv, cur)
            })
            .collect();
        let mut g = self.shared.lock().expect("names lock");
        g.tracker.set_settings(settings(policy));
        g.tracker.set_names(now, names);
        g.names = rs
            .names
            .iter()
            .map(|n| (n.host.clone(), n.clone()))
            .collect();
        g.client = crate::context::dns_client(policy);
    }

    /// Tells the engine thread (through its input channel) when a name's
    /// addresses move, so detection never bans a peer's new address; real
    /// answers go to the store as the names' last good ones.
    pub(crate) fn connect(
        &self,
        tx: std::sync::mpsc::Sender<super::Input>,
        waker: super::Waker,
        store: std::sync::mpsc::Sender<super::StoreOp>,
    ) {
        let mut g = self.shared.lock().expect("names lock");
        g.notify = Some((tx, waker));
        g.store = Some(store);
    }

    /// After the generation's script went back into the kernel (the table
    /// vanished and was restored): its name sets hold what that generation
    /// resolved, the resolver knows better. Every name's current addresses
    /// go back in, element by element, and what the generation had that
    /// they lack goes out.
    pub fn reassert(&self, rs: Option<&Ruleset>) {
        let g = self.shared.lock().expect("names lock");
        let mut nl = None;
        for st in g.tracker.states() {
            let Some(ns) = g.names.get(&st.host) else {
                continue;
            };
            let had: BTreeSet<IpAddr> = rs
                .map(|rs| {
                    [&ns.v4, &ns.v6]
                        .iter()
                        .filter_map(|set| rs.set(set))
                        .flat_map(|s| s.elements.iter().map(|e| e.lo))
                        .collect()
                })
                .unwrap_or_default();
            let c = voipwall_dns::Change {
                host: st.host.clone(),
                add: st.current.iter().copied().collect(),
                remove: had.difference(&st.current).copied().collect(),
            };
            apply_change(&mut nl, ns, &c);
        }
    }

    /// At start: a name whose last good answer (from the store) differs
    /// from what the applied generation put in its sets gets that answer
    /// into the kernel now, before any lookup.
    pub fn seed(&self, last_good: &BTreeMap<String, Vec<IpAddr>>) {
        let mut g = self.shared.lock().expect("names lock");
        let mut changes = Vec::new();
        for (host, addrs) in last_good {
            let addrs: BTreeSet<IpAddr> = addrs.iter().copied().collect();
            if let Some(c) = g.tracker.seed(host, addrs.clone()) {
                g.recorded.insert(host.clone(), addrs);
                changes.push(c);
            }
        }
        if changes.is_empty() {
            return;
        }
        let mut nl = None;
        for c in changes {
            if let Some(ns) = g.names.get(&c.host).cloned() {
                apply_change(&mut nl, &ns, &c);
                tracing::info!(host = %c.host, added = ?c.add, removed = ?c.remove, "Name sets set to the last good answer the store recorded.");
            }
        }
    }

    /// Every address the protected names (peers, allow entries, trusted,
    /// local and other networks) hold now; block-list names are not.
    pub fn addresses(&self) -> Vec<IpAddr> {
        let g = self.shared.lock().expect("names lock");
        g.tracker
            .states()
            .filter(|n| g.names.get(&n.host).is_some_and(|ns| ns.protect))
            .flat_map(|n| n.current.iter().copied())
            .collect()
    }

    /// For `status`.
    pub fn status(&self) -> super::control::DnsStatus {
        let now = ms(self.started);
        let g = self.shared.lock().expect("names lock");
        super::control::DnsStatus {
            names: g
                .tracker
                .states()
                .map(|n| super::control::NameStatus {
                    host: n.host.clone(),
                    srv: n.srv,
                    addresses: n.current.iter().copied().collect(),
                    ttl_s: n.ttl_s,
                    error: n.error.clone(),
                    failures: n.failures,
                    next_in_ms: n.due_ms.saturating_sub(now),
                })
                .collect(),
            set_updates: g.updates,
            servers: g.client.servers.clone(),
        }
    }
}

fn ms(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// One name's set change, element by element over netlink.
fn apply_change(nl: &mut Option<SetElements>, ns: &NameSet, c: &voipwall_dns::Change) {
    if nl.is_none() {
        *nl = SetElements::open("voipwall")
            .map_err(|e| tracing::error!(error = %e, "Cannot open netlink for name sets."))
            .ok();
    }
    let Some(sock) = nl.as_mut() else { return };
    let set_of = |a: &IpAddr| {
        if Family::of(a) == Family::V4 {
            &ns.v4
        } else {
            &ns.v6
        }
    };
    for a in &c.add {
        if let Err(e) = sock.add(
            set_of(a),
            &[Elem {
                addr: *a,
                timeout_ms: None,
            }],
        ) {
            tracing::error!(host = %c.host, addr = %a, error = %e, "Could not add a resolved address.");
        }
    }
    for a in &c.remove {
        // Absent already (another apply refilled the set): fine.
        let _ = sock.delete(set_of(a), &[*a]);
    }
}

fn run(shared: &Arc<Mutex<Shared>>, started: Instant, stop: &AtomicBool) {
    let mut nl: Option<SetElements> = None;
    while !stop.load(Ordering::Relaxed) {
        let now = ms(started);
        let (due, client) = {
            let g = shared.lock().expect("names lock");
            (g.tracker.due(now), g.client.clone())
        };
        for (host, srv) in due {
            let outcome = client.resolve(&host, srv);
            if let Err(e) = &outcome {
                tracing::warn!(host = %host, error = %e, "Name lookup failed; the last good addresses stay.");
            }
            let (change, name) = {
                let mut g = shared.lock().expect("names lock");
                let good: Option<BTreeSet<IpAddr>> = outcome
                    .as_ref()
                    .ok()
                    .filter(|r| !r.addrs.is_empty())
                    .map(|r| r.addrs.clone());
                let c = g.tracker.record(ms(started), &host, outcome);
                // Recorded only once it reached the store thread: an answer
                // that came before the store was connected is written with
                // the next one.
                if let Some(good) = good
                    && g.recorded.get(&host) != Some(&good)
                    && g.store.as_ref().is_some_and(|store| {
                        store
                            .send(super::StoreOp::NameAnswers(
                                vec![(host.clone(), good.iter().copied().collect())],
                                super::now(),
                            ))
                            .is_ok()
                    })
                {
                    g.recorded.insert(host.clone(), good);
                }
                (c, g.names.get(&host).cloned())
            };
            let (Some(c), Some(ns)) = (change, name) else {
                continue;
            };
            apply_change(&mut nl, &ns, &c);
            {
                let mut g = shared.lock().expect("names lock");
                g.updates += 1;
                if let (Some((tx, waker)), true) = (&g.notify, ns.protect) {
                    let _ = tx.send(super::Input::PeerMoved {
                        add: c.add.clone(),
                        remove: c.remove.clone(),
                    });
                    waker.wake();
                }
            }
            tracing::info!(
                host = %host,
                added = ?c.add,
                removed = ?c.remove,
                "Name moved; its set was updated element by element."
            );
        }
        let next = shared.lock().expect("names lock").tracker.next_due();
        let wait = next.map_or(500, |d| d.saturating_sub(ms(started)).min(500));
        std::thread::sleep(Duration::from_millis(wait.max(20)));
    }
}
