//! What this host shows, read from the kernel for the pure judgments in
//! `voipwall-host`: listening sockets.

use voipwall_host::audit::Listening;

/// Sockets in the listening state, from /proc/net/{tcp,tcp6,udp,udp6}.
pub(crate) fn listening() -> Vec<Listening> {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    voipwall_host::audit::listening(
        &read("/proc/net/tcp"),
        &read("/proc/net/tcp6"),
        &read("/proc/net/udp"),
        &read("/proc/net/udp6"),
    )
}
