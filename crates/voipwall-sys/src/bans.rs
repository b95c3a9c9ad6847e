//! Every runtime set operation, for every caller: the placements of
//! `voipwall_nft::sets` go to the kernel here, all over netlink (hash keys
//! as single elements, networks in interval sets as start/end pairs).
//!
//! Timeouts are clamped to [`MAX_TIMEOUT_MS`] and to at least one second
//! before they are sent: one out-of-range element would make the kernel
//! refuse its whole batch.

use std::collections::BTreeMap;

use voipwall_nft::sets::{Key, Placement, Role};

use crate::netlink::{Elem, NetlinkError, SetElements};
use crate::nft::{self, NftError};

/// The longest timeout voipwall hands the kernel (ten years, the policy
/// grammar's maximum; the kernel itself refuses beyond ~584 years).
pub const MAX_TIMEOUT_MS: u64 = 3650 * 86_400_000;

/// A kernel operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BanError {
    /// Over netlink.
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    /// Through nft.
    #[error(transparent)]
    Nft(#[from] NftError),
}

/// A timeout the kernel accepts: `None` stays permanent.
pub fn clamp_timeout(ms: Option<u64>) -> Option<u64> {
    ms.map(|m| m.clamp(1000, MAX_TIMEOUT_MS))
}

/// The ban plane's kernel side for one table.
pub struct Bans {
    sock: SetElements,
}

impl Bans {
    /// Opens the netlink socket (in the caller's network namespace).
    pub fn open() -> Result<Self, BanError> {
        Ok(Self {
            sock: SetElements::open("voipwall")?,
        })
    }

    /// Adds (or refreshes) one entry; `timeout_ms` None is permanent.
    pub fn add(&mut self, p: &Placement, timeout_ms: Option<u64>) -> Result<(), BanError> {
        self.add_many(&[(*p, timeout_ms)])
    }

    /// Adds many entries, grouped per set, in netlink batches (a network's
    /// start and end elements always in the same transaction).
    pub fn add_many(&mut self, entries: &[(Placement, Option<u64>)]) -> Result<(), BanError> {
        let mut hashes: BTreeMap<&'static str, Vec<Elem>> = BTreeMap::new();
        let mut intervals: BTreeMap<&'static str, Vec<(ipnet::IpNet, Option<u64>)>> =
            BTreeMap::new();
        for (p, t) in entries {
            let t = clamp_timeout(*t);
            match p.key {
                Key::Addr(addr) => hashes.entry(p.set()).or_default().push(Elem {
                    addr,
                    timeout_ms: t,
                }),
                Key::Interval(net) => intervals.entry(p.set()).or_default().push((net, t)),
            }
        }
        for (set, elems) in &hashes {
            self.sock.add(set, elems)?;
        }
        for (set, nets) in &intervals {
            self.sock.add_intervals(set, nets)?;
        }
        Ok(())
    }

    /// Deletes one entry. Returns whether the kernel held it.
    pub fn delete(&mut self, p: &Placement) -> Result<bool, BanError> {
        match p.key {
            Key::Addr(addr) => match self.sock.delete(p.set(), &[addr]) {
                Ok(()) => Ok(true),
                Err(NetlinkError::Kernel { source, .. })
                    if source.raw_os_error() == Some(rustix::io::Errno::NOENT.raw_os_error()) =>
                {
                    Ok(false)
                }
                Err(e) => Err(e.into()),
            },
            Key::Interval(net) => match self.sock.delete_intervals(p.set(), &[net]) {
                Ok(()) => Ok(true),
                Err(NetlinkError::Kernel { source, .. })
                    if source.raw_os_error() == Some(rustix::io::Errno::NOENT.raw_os_error()) =>
                {
                    Ok(false)
                }
                Err(e) => Err(e.into()),
            },
        }
    }

    /// The raw netlink socket, for the known set's batched refreshes.
    pub fn elements(&mut self) -> &mut SetElements {
        &mut self.sock
    }
}

/// The runtime allow entries the kernel holds (both families).
pub fn runtime_allows() -> Vec<ipnet::IpNet> {
    [voipwall_nft::Family::V4, voipwall_nft::Family::V6]
        .into_iter()
        .flat_map(|f| nft::list_set(Role::AllowRt.set(f), true).unwrap_or_default())
        .map(|e| e.net)
        .collect()
}
