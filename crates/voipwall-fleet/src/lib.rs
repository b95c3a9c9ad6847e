//! voipwall beyond one host, on the fleet thread: blocklist feeds,
//! CrowdSec's Local API as a bouncer and a watcher, and a Redis Streams
//! fleet. Async code lives here and in the API only; the engine loop never
//! waits on the network. What the fleet changes in the kernel goes through
//! `voipwall-core` (`feeds::FeedSets`: the origins' own sets).

pub mod crowdsec;
pub mod feeds;
pub mod http;
pub mod resp;
pub mod streams;
pub mod watcher;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::broadcast;
use voipwall_core::daemon::ControlHandle;
use voipwall_core::daemon::FleetContext;
use voipwall_core::daemon::control::{Answer, Request};
use voipwall_core::feeds::FeedSets;

/// Starts the fleet thread (its own single-threaded runtime): the feeds'
/// loop, the bouncer, the watcher and the Redis fleet, sharing one netlink
/// socket and store connection for the kernel sets, and one follower of
/// the engine's ban events.
pub fn start(ctx: FleetContext) -> anyhow::Result<std::thread::JoinHandle<()>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let sets = Arc::new(Mutex::new(FeedSets::open(
        &ctx.state_dir,
        ctx.link.clone(),
    )?));
    let (events, _) = broadcast::channel::<Value>(16_384);
    {
        let (control, events, stop) = (ctx.control.clone(), events.clone(), ctx.stop.clone());
        std::thread::Builder::new()
            .name("fleet-events".into())
            .spawn(move || follow(&control, &events, &stop))?;
    }
    let h = std::thread::Builder::new()
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
                    events.subscribe(),
                    ctx.state_dir.clone(),
                    ctx.stop.clone(),
                ));
                let fleet = tokio::spawn(streams::run(
                    ctx.link.clone(),
                    sets.clone(),
                    events.subscribe(),
                    ctx.state_dir,
                    ctx.control,
                    ctx.stop.clone(),
                ));
                feeds::run(ctx.link, sets, ctx.stop).await;
                // The others stop within their own waits; what is left
                // (a pull, a request) is dropped with the runtime.
                for t in [bouncer, watcher, fleet] {
                    let _ = tokio::time::timeout(Duration::from_secs(1), t).await;
                }
            });
            // Blocking work (a kernel batch, a store write) gets 2 s; the
            // store connections close when their tasks are dropped.
            rt.shutdown_timeout(Duration::from_secs(2));
        })?;
    Ok(h)
}

/// Forwards the engine's bans and lifts (a blocking channel) to the fleet's
/// tasks until `stop`.
fn follow(control: &ControlHandle, tx: &broadcast::Sender<Value>, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        let req = Request::Events {
            follow: true,
            limit: Some(0),
        };
        let Some((Answer::Events(_), Some(rx))) = control.follow(req, Duration::from_secs(5))
        else {
            std::thread::sleep(Duration::from_secs(1));
            continue;
        };
        loop {
            match rx.recv_timeout(Duration::from_millis(500)) {
                Ok(v) => {
                    if matches!(v["kind"].as_str(), Some("ban" | "manual-ban" | "lift")) {
                        // No receiver yet is not an error.
                        let _ = tx.send(v);
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
    }
}
