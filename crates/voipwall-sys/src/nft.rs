//! Policy plane: the apply's netlink batch ([`apply_batch`]), and the `nft`
//! binary for recorded scripts, checks, table removal and listing.

use std::io::Write as _;
use std::net::IpAddr;
use std::process::{Command, Stdio};

use ipnet::IpNet;
use serde::Serialize;

/// Our table, as nft names it.
pub const TABLE: &str = "inet voipwall";

/// Running `nft` failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NftError {
    /// The binary could not be run.
    #[error("cannot run `nft` (is the nftables package installed?): {0}")]
    Spawn(std::io::Error),
    /// A question asked over netlink failed.
    #[error("asking nftables over netlink: {0}")]
    Netlink(std::io::Error),
    /// nft rejected the input; the kernel state is unchanged.
    #[error("nft refused {what}: {stderr}")]
    Refused {
        /// What was attempted.
        what: String,
        /// nft's message.
        stderr: String,
    },
    /// The kernel refused voipwall's own batch; its state is unchanged.
    #[error("the kernel refused {what}: {reason}")]
    Kernel {
        /// The message it refused.
        what: String,
        /// The errno and the kernel's explanation.
        reason: String,
    },
    /// nft printed something we could not read.
    #[error("unexpected nft output: {0}")]
    Output(String),
}

/// Runs `nft <args>` with `stdin` and returns stdout.
fn nft(args: &[&str], stdin: Option<&str>, what: &str) -> Result<String, NftError> {
    let mut child = Command::new("nft")
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(NftError::Spawn)?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes()).map_err(NftError::Spawn)?;
    }
    let out = child.wait_with_output().map_err(NftError::Spawn)?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(NftError::Refused {
            what: what.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// Checks a script against the running kernel without changing anything (`nft -c`).
pub fn check_script(script: &str) -> Result<(), NftError> {
    nft(&["-c", "-f", "-"], Some(script), "the ruleset (check)").map(drop)
}

/// Applies a script in one transaction. nft sends the whole file as one
/// netlink batch and the kernel commits all of it or none of it, so on failure
/// the previous ruleset stays in place. A separate `nft -c` pass first would
/// guarantee nothing more and, measured with 100,000 block entries, costs as
/// much as the apply itself (BENCHMARKS.md); `voipwall check --kernel` runs it
/// on demand.
pub fn apply_script(script: &str) -> Result<(), NftError> {
    nft(&["-f", "-"], Some(script), "the ruleset").map(drop)
}

/// Applies a batch voipwall built itself (`voipwall_nft::netlink`) in one
/// transaction, without `nft`: the kernel commits all of it or none of it,
/// so on failure the previous ruleset stays in place. A refusal names the
/// message the kernel refused and the kernel's own reason.
pub fn apply_batch(batch: &voipwall_nft::netlink::Batch) -> Result<(), NftError> {
    use netlink_sys::{Socket, constants::NETLINK_NETFILTER};
    use rustix::net::sockopt;
    let sock = Socket::new(NETLINK_NETFILTER).map_err(NftError::Netlink)?;
    let mut sock = sock;
    sock.bind_auto().map_err(NftError::Netlink)?;
    // Errors carry the refused message's header only, and the kernel's
    // explanation.
    sock.set_cap_ack(true).map_err(NftError::Netlink)?;
    sock.set_ext_ack(true).map_err(NftError::Netlink)?;
    // The whole batch is one datagram; the kernel processes it inside
    // sendmsg and has queued every reply by the time it returns: an error
    // for each message it refused, or the acknowledgement of the last
    // message once all of it is committed.
    let snd = batch.bytes.len() + 64 * 1024;
    if sockopt::set_socket_send_buffer_size_force(&sock, snd).is_err() {
        sockopt::set_socket_send_buffer_size(&sock, snd)
            .map_err(|e| NftError::Netlink(e.into()))?;
    }
    let rcv = 1 << 20;
    if sockopt::set_socket_recv_buffer_size_force(&sock, rcv).is_err() {
        let _ = sockopt::set_socket_recv_buffer_size(&sock, rcv);
    }
    let sent = sock.send(&batch.bytes, 0).map_err(NftError::Netlink)?;
    if sent != batch.bytes.len() {
        return Err(NftError::Output(format!(
            "netlink sent {sent} of {} bytes",
            batch.bytes.len()
        )));
    }
    sock.set_non_blocking(true).map_err(NftError::Netlink)?;
    let mut committed = false;
    let mut overflowed = false;
    let mut refused: Option<(u32, std::io::Error, String)> = None;
    let mut rbuf: Vec<u8> = Vec::with_capacity(64 * 1024);
    loop {
        rbuf.clear();
        match sock.recv(&mut rbuf, 0) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            // Replies were dropped: only errors can be that many (a commit
            // sends one acknowledgement), so the batch was refused.
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NOBUFS.raw_os_error()) => {
                overflowed = true;
                continue;
            }
            Err(e) => return Err(NftError::Netlink(e)),
        }
        let mut off = 0;
        while let Some((ty, body, next)) = crate::netlink::nlmsg(&rbuf, off) {
            let seq = u32::from_ne_bytes(rbuf[off + 8..off + 12].try_into().unwrap_or_default());
            off = next;
            if ty != 2 || body.len() < 4 {
                continue;
            }
            let code = i32::from_ne_bytes(body[..4].try_into().unwrap_or_default());
            if code == 0 {
                committed |= seq == batch.last_seq;
            } else if refused.is_none() {
                // After the code: the refused message's header (16 bytes,
                // capped), then NLMSGERR_ATTR_MSG (1), the reason.
                let reason = body
                    .get(20..)
                    .map(crate::netlink::attr_list)
                    .and_then(|a| a.into_iter().find(|(t, _)| *t == 1).map(|(_, v)| v))
                    .map(|v| {
                        String::from_utf8_lossy(v.split(|b| *b == 0).next().unwrap_or(v))
                            .into_owned()
                    })
                    .unwrap_or_default();
                refused = Some((seq, std::io::Error::from_raw_os_error(-code), reason));
            }
        }
    }
    if let Some((seq, err, reason)) = refused {
        let reason = if reason.is_empty() {
            String::new()
        } else {
            format!(" ({reason})")
        };
        return Err(NftError::Kernel {
            what: format!("the ruleset ({})", batch.describe(seq)),
            reason: format!("{err}{reason}"),
        });
    }
    if overflowed {
        return Err(NftError::Kernel {
            what: "the ruleset".into(),
            reason: "more messages than could be reported".into(),
        });
    }
    if !committed {
        return Err(NftError::Output(
            "the kernel did not acknowledge the ruleset".into(),
        ));
    }
    Ok(())
}

/// Whether our table exists.
pub fn table_exists() -> Result<bool, NftError> {
    // Over netlink: `nft list tables` reads every set element first
    // (~300 ms with a 100,000-entry block list).
    crate::query::table_exists("voipwall").map_err(NftError::Netlink)
}

/// Removes our table and nothing else. Returns whether it existed.
pub fn delete_table() -> Result<bool, NftError> {
    if !table_exists()? {
        return Ok(false);
    }
    nft(
        &["delete", "table", "inet", "voipwall"],
        None,
        "deleting table inet voipwall",
    )?;
    Ok(true)
}

/// The text of our table as the kernel has it (`nft list table`).
pub fn list_table() -> Result<String, NftError> {
    nft(
        &["list", "table", "inet", "voipwall"],
        None,
        "listing table inet voipwall",
    )
}

/// The names of our table's sets (`nft -t`: without their elements).
pub fn set_names() -> Result<Vec<String>, NftError> {
    let text = nft(
        &["-t", "list", "sets", "table", "inet", "voipwall"],
        None,
        "listing the sets of table inet voipwall",
    )?;
    Ok(text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("set ")?.strip_suffix(" {"))
        .map(str::to_string)
        .collect())
}

/// Deletes one set of our table (refused while a rule uses it).
pub fn delete_set(name: &str) -> Result<(), NftError> {
    nft(
        &["delete", "set", "inet", "voipwall", name],
        None,
        &format!("deleting set {name}"),
    )
    .map(drop)
}

/// The whole ruleset (all tables), for before/after comparisons.
pub fn list_ruleset() -> Result<String, NftError> {
    nft(&["list", "ruleset"], None, "listing the ruleset")
}

/// Base chains of other tables (ufw, firewalld, iptables-nft, docker…),
/// with their rules counted: they see the same packets as ours.
pub fn foreign_chains() -> Result<Vec<voipwall_nft::foreign::ForeignChain>, NftError> {
    crate::query::foreign_chains("voipwall").map_err(NftError::Netlink)
}

/// iptables-legacy tables loaded in the kernel (`filter`, `nat`, …, with
/// `ip6:` for IPv6): they filter too, and nft cannot list them.
pub fn legacy_iptables() -> Vec<String> {
    let read = |p: &str, tag: &str| -> Vec<String> {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| format!("{tag}{}", l.trim()))
            .collect()
    };
    let mut v = read("/proc/net/ip_tables_names", "");
    v.extend(read("/proc/net/ip6_tables_names", "ip6:"));
    v
}

/// One element of a set, as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SetEntry {
    /// Address or prefix.
    pub net: IpNet,
    /// Timeout the element was added with, seconds.
    pub timeout: Option<u64>,
    /// Seconds until it expires.
    pub expires: Option<u64>,
}

/// Lists a set's elements over netlink (GETSETELEM dump); `interval` says
/// how to read them (start/end pairs become networks). Cost grows with the
/// set: the store, not this, is the source of truth for large ban sets.
pub fn list_set(set: &str, interval: bool) -> Result<Vec<SetEntry>, NftError> {
    let held = crate::query::set_elements("voipwall", set).map_err(NftError::Netlink)?;
    let secs = |ms: Option<u64>| ms.map(|m| m.div_ceil(1000));
    if !interval {
        return Ok(held
            .into_iter()
            .map(|e| SetEntry {
                net: IpNet::from(e.key),
                timeout: secs(e.timeout_ms),
                expires: secs(e.expires_ms),
            })
            .collect());
    }
    let as_held: Vec<voipwall_nft::kernel::Held> = held
        .iter()
        .map(|e| voipwall_nft::kernel::Held {
            key: e.key,
            end: e.end,
            chain: None,
        })
        .collect();
    let ranges = voipwall_nft::kernel::elements(true, &as_held);
    Ok(ranges
        .into_iter()
        .map(|r| {
            let start = held.iter().find(|e| !e.end && e.key == r.lo);
            SetEntry {
                net: range_net(r.lo, r.hi),
                timeout: secs(start.and_then(|e| e.timeout_ms)),
                expires: secs(start.and_then(|e| e.expires_ms)),
            }
        })
        .collect())
}

/// The network a range is, or its first address alone when it is not one.
pub(crate) fn range_net(lo: IpAddr, hi: IpAddr) -> IpNet {
    let (l, h, bits) = match (lo, hi) {
        (IpAddr::V4(l), IpAddr::V4(h)) => (u128::from(u32::from(l)), u128::from(u32::from(h)), 32),
        (IpAddr::V6(l), IpAddr::V6(h)) => (u128::from(l), u128::from(h), 128),
        _ => return IpNet::from(lo),
    };
    let size = h.wrapping_sub(l).wrapping_add(1);
    if size != 0 && size.is_power_of_two() && l % size == 0 {
        let len = bits - size.trailing_zeros() as u8;
        IpNet::new(lo, len).unwrap_or_else(|_| IpNet::from(lo))
    } else if size == 0 && l == 0 {
        IpNet::new(lo, 0).unwrap_or_else(|_| IpNet::from(lo))
    } else {
        IpNet::from(lo)
    }
}

/// Named counters of our table: (name, packets, bytes).
///
/// Over netlink, one dump of the table's counter objects: `nft list
/// counters` builds its cache from the whole table, and while a ban storm
/// changes the sets every few milliseconds its dump is interrupted and
/// restarted again and again (a `bench/api` run caught one `nft` process
/// with seconds of CPU on a two-core box, beside the packet path).
pub fn counters() -> Result<Vec<(String, u64, u64)>, NftError> {
    let mut res = crate::query::counters("voipwall").map_err(NftError::Netlink)?;
    res.sort();
    Ok(res)
}

/// Addresses configured on the host's interfaces, in this netns (rtnetlink).
pub fn host_addresses() -> Vec<IpAddr> {
    let mut addrs: Vec<IpAddr> = crate::link::interfaces()
        .unwrap_or_default()
        .into_iter()
        .flat_map(|i| i.addrs.into_iter().map(|n| n.addr()))
        .collect();
    addrs.sort();
    addrs.dedup();
    addrs
}

/// Names of the host's interfaces in this netns (rtnetlink).
pub fn interface_names() -> Vec<String> {
    crate::link::interfaces()
        .unwrap_or_default()
        .into_iter()
        .map(|i| i.name)
        .collect()
}
