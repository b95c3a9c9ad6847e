//! Country and AS networks from `[geo]` databases (MaxMind/DB-IP mmdb
//! files, read with the `maxminddb` crate): every network a database
//! assigns to each `country:XX` and `asn:N` the policy names. The compiler
//! puts them into one pair of interval sets per selector; the daemon
//! watches the files and replaces the sets' content when one changes,
//! without a reload.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use ipnet::IpNet;
use serde::Deserialize;
use voipwall_policy::{GeoSel, Policy};

/// The fields read from a record: `country.iso_code` (country databases)
/// and `autonomous_system_number` (ASN databases).
#[derive(Deserialize)]
struct Record<'a> {
    #[serde(borrow, default)]
    country: Option<Country<'a>>,
    #[serde(default)]
    autonomous_system_number: Option<u32>,
}

#[derive(Deserialize)]
struct Country<'a> {
    #[serde(borrow, default)]
    iso_code: Option<&'a str>,
}

/// What one file gives the selectors it serves.
pub type GeoNets = BTreeMap<GeoSel, Vec<IpNet>>;

/// Reads every network of `wanted` (all countries, or all ASes) from one
/// database. IPv4 networks of an IPv6 database (stored at `::/96`) come
/// back as IPv4; the aliases of the IPv4 tree are skipped.
pub fn read(path: &Path, wanted: &[GeoSel]) -> Result<GeoNets, String> {
    let reader = maxminddb::Reader::open_readfile(path)
        .map_err(|e| format!("{}: not a readable mmdb database: {e}", path.display()))?;
    let mut out: GeoNets = wanted.iter().map(|g| (g.clone(), Vec::new())).collect();
    if wanted.is_empty() {
        return Ok(out);
    }
    let iter = reader
        .networks(maxminddb::WithinOptions::default())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    for item in iter {
        let item = item.map_err(|e| format!("{}: damaged: {e}", path.display()))?;
        let Ok(Some(rec)) = item.decode::<Record<'_>>() else {
            continue;
        };
        let sel = if let Some(code) = rec.country.and_then(|c| c.iso_code) {
            GeoSel::Country(code.to_ascii_uppercase())
        } else if let Some(n) = rec.autonomous_system_number {
            GeoSel::Asn(n)
        } else {
            continue;
        };
        let Some(list) = out.get_mut(&sel) else {
            continue;
        };
        let net = item
            .network()
            .map_err(|e| format!("{}: damaged: {e}", path.display()))?;
        if let Some(n) = to_ipnet(net.ip(), net.prefix()) {
            list.push(n);
        }
    }
    for v in out.values_mut() {
        *v = IpNet::aggregate(v);
    }
    Ok(out)
}

/// A network as the database gives it; IPv4 inside `::/96` as IPv4.
fn to_ipnet(ip: IpAddr, prefix: u8) -> Option<IpNet> {
    match ip {
        IpAddr::V6(v6) if prefix >= 96 && v6.segments()[..6].iter().all(|&s| s == 0) => {
            let o = v6.octets();
            IpNet::new(
                IpAddr::V4(Ipv4Addr::new(o[12], o[13], o[14], o[15])),
                prefix - 96,
            )
            .ok()
        }
        _ => IpNet::new(ip, prefix).ok().map(|n| n.trunc()),
    }
}

/// The files the policy's selectors need, with the selectors each serves.
pub fn sources(policy: &Policy) -> Vec<(String, Vec<GeoSel>)> {
    let sels = policy.geo_selectors();
    let (countries, asns): (Vec<GeoSel>, Vec<GeoSel>) = sels
        .into_iter()
        .partition(|g| matches!(g, GeoSel::Country(_)));
    let mut out = Vec::new();
    if let (Some(db), false) = (&policy.geo.database, countries.is_empty()) {
        out.push((db.clone(), countries));
    }
    if let (Some(db), false) = (&policy.geo.asn_database, asns.is_empty()) {
        out.push((db.clone(), asns));
    }
    out
}

/// Every network of every selector the policy names, or the first file
/// that cannot be read.
pub fn networks(policy: &Policy) -> Result<GeoNets, String> {
    let mut out = GeoNets::new();
    for (path, wanted) in sources(policy) {
        out.extend(read(Path::new(&path), &wanted)?);
    }
    Ok(out)
}

/// A file's identity now (modification time and length), to notice a
/// changed database; `None` when it cannot be read.
pub fn stamp(path: &str) -> Option<(std::time::SystemTime, u64)> {
    std::fs::metadata(path)
        .ok()
        .and_then(|m| Some((m.modified().ok()?, m.len())))
}
