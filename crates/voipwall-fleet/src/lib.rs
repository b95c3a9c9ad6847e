//! voipwall beyond one host, on the fleet thread: blocklist feeds now
//! (CrowdSec's Local API and a Redis Streams fleet are to come, on the same
//! thread and HTTP client). Async code lives here and in the API only; the
//! engine loop never waits on the network. What the fleet changes in the
//! kernel goes through `voipwall-core` (its feed sets, its ban plane).

pub mod feeds;
pub mod http;

use voipwall_core::daemon::FleetContext;

/// Starts the fleet thread (its own single-threaded runtime).
pub fn start(ctx: FleetContext) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("fleet".into())
        .spawn(move || {
            rt.block_on(feeds::run(ctx.link, ctx.state_dir, ctx.stop));
        })?;
    Ok(())
}
