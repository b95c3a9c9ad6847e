//! Keeps the `[geo]` sets current: a thread looks at the database files
//! every few seconds and, when one changed (a cron job dropped a new
//! GeoLite2 or DB-IP file), replaces the content of each country's and
//! AS's sets in one nft transaction, without a reload. A file that cannot
//! be read leaves the sets as they are, said in the log.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use voipwall_nft::{GeoSet, Ruleset};
use voipwall_policy::{GeoSel, Policy};

/// How often the files are looked at.
const EVERY: Duration = Duration::from_secs(3);

type Stamp = Option<(SystemTime, u64)>;

#[derive(Default)]
struct State {
    /// Each database and the selectors it serves.
    sources: Vec<(String, Vec<GeoSel>)>,
    /// Each selector's sets.
    sets: Vec<GeoSet>,
    /// What each file looked like when its content last went into the
    /// kernel (`None`: never, or unknown: read at the next look).
    stamps: BTreeMap<String, Stamp>,
}

/// The watcher's handle.
pub(super) struct GeoWatch {
    state: Arc<Mutex<State>>,
}

impl GeoWatch {
    /// Starts the thread (it ends when `stop` is set).
    pub(super) fn start(stop: Arc<AtomicBool>) -> std::io::Result<Self> {
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        std::thread::Builder::new()
            .name("geo".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    look(&shared);
                    let mut slept = Duration::ZERO;
                    while slept < EVERY && !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(200));
                        slept += Duration::from_millis(200);
                    }
                }
            })?;
        Ok(Self { state })
    }

    /// The policy and ruleset in force. `fresh`: the ruleset was compiled
    /// from the files as they are now (an apply or reload); otherwise (a
    /// recorded generation at start) the files are read at the next look.
    pub(super) fn update(&self, policy: &Policy, rs: &Ruleset, fresh: bool) {
        let mut g = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        g.sources = crate::geo::sources(policy);
        g.sets = rs.geo.clone();
        g.stamps = g
            .sources
            .iter()
            .map(|(p, _)| (p.clone(), crate::geo::stamp(p).filter(|_| fresh)))
            .collect();
    }
}

/// One look: every file whose stamp moved is read and its sets replaced.
fn look(shared: &Mutex<State>) {
    let (sources, sets, stamps) = {
        let g = shared.lock().unwrap_or_else(PoisonError::into_inner);
        (g.sources.clone(), g.sets.clone(), g.stamps.clone())
    };
    for (path, wanted) in sources {
        let now = crate::geo::stamp(&path);
        let before = stamps.get(&path).copied().flatten();
        if now.is_none() || (before.is_some() && before == now) {
            continue;
        }
        let result = crate::geo::read(Path::new(&path), &wanted).and_then(|nets| {
            let script = script(&sets, &nets);
            voipwall_sys::nft::apply_script(&script)
                .map(|()| nets)
                .map_err(|e| e.to_string())
        });
        match result {
            Ok(nets) => {
                let summary: Vec<String> = nets
                    .iter()
                    .map(|(g, v)| format!("{g}: {} networks", v.len()))
                    .collect();
                if before.is_some() {
                    tracing::info!(database = %path, "A [geo] database changed; its sets follow it: {}.", summary.join(", "));
                } else {
                    tracing::info!(database = %path, "[geo] sets loaded from the database: {}.", summary.join(", "));
                }
            }
            Err(e) => {
                tracing::warn!(database = %path, error = %e, "A [geo] database changed but cannot be used; its sets keep what they had.");
            }
        }
        // Tried once per change: a broken file is not read again until it
        // changes again.
        let mut g = shared.lock().unwrap_or_else(PoisonError::into_inner);
        g.stamps.insert(path, now);
    }
}

/// One transaction: each selector's sets flushed and filled.
fn script(sets: &[GeoSet], nets: &crate::geo::GeoNets) -> String {
    let mut s = String::new();
    for gs in sets {
        let Some((_, list)) = nets.iter().find(|(g, _)| g.to_string() == gs.selector) else {
            continue;
        };
        for (set, v4) in [(&gs.v4, true), (&gs.v6, false)] {
            s.push_str(&format!("flush set inet voipwall {set}\n"));
            let elems: Vec<String> = list
                .iter()
                .filter(|n| n.addr().is_ipv4() == v4)
                .map(ToString::to_string)
                .collect();
            for chunk in elems.chunks(4096) {
                s.push_str(&format!(
                    "add element inet voipwall {set} {{ {} }}\n",
                    chunk.join(", ")
                ));
            }
        }
    }
    s
}
