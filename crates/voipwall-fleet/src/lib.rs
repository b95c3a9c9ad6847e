//! voipwall beyond one host, on the fleet thread: blocklist feeds and
//! CrowdSec's Local API as a bouncer and a watcher (a Redis Streams fleet
//! is to come, on the same thread). Async
//! code lives here and in the API only; the engine loop never waits on the
//! network. What the fleet changes in the kernel goes through
//! `voipwall-core` (`feeds::FeedSets`: the origins' own sets).

pub mod crowdsec;
pub mod feeds;
pub mod http;
pub mod watcher;

use std::sync::{Arc, Mutex};

use voipwall_core::daemon::FleetContext;
use voipwall_core::feeds::FeedSets;

/// Starts the fleet thread (its own single-threaded runtime): the feeds'
/// loop and the bouncer's, sharing one netlink socket and store
/// connection.
pub fn start(ctx: FleetContext) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let sets = Arc::new(Mutex::new(FeedSets::open(&ctx.state_dir)?));
    std::thread::Builder::new()
        .name("fleet".into())
        .spawn(move || {
            rt.block_on(async move {
                let bouncer = tokio::spawn(crowdsec::run(
                    ctx.link.clone(),
                    sets.clone(),
                    ctx.stop.clone(),
                ));
                let watcher = tokio::spawn(watcher::run(
                    ctx.link.clone(),
                    ctx.control,
                    ctx.state_dir,
                    ctx.stop.clone(),
                ));
                feeds::run(ctx.link, sets, ctx.stop).await;
                let _ = bouncer.await;
                let _ = watcher.await;
            });
        })?;
    Ok(())
}
