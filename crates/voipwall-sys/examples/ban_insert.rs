//! Ban-insert benchmark, run inside a namespace where `voipwall apply` made
//! the table: single netlink adds (one transaction each), one batched add, and
//! spawning `nft add element` per ban, side by side in one run.
//!
//! Usage: ban_insert <singles> <batch> <spawns>; prints one JSON object.
use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::time::Instant;

use voipwall_sys::netlink::{Elem, SetElements};

fn addr(base: u32, i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(base + i))
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    let idx = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[idx.min(v.len() - 1)]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<u32> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("numbers"))
        .collect();
    let (singles, batch, spawns) = (args[0], args[1], args[2]);
    let mut sock = SetElements::open("voipwall")?;
    let timeout = Some(3_600_000);

    // Single adds: 198.18.0.0/15 (benchmarking range), one transaction per ban.
    let base = u32::from(Ipv4Addr::new(198, 18, 0, 0));
    let mut lat = Vec::with_capacity(singles as usize);
    let t0 = Instant::now();
    for i in 0..singles {
        let t = Instant::now();
        sock.add(
            "vw_ban_v4",
            &[Elem {
                addr: addr(base, i),
                timeout_ms: timeout,
            }],
        )?;
        lat.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let single_total = t0.elapsed().as_secs_f64();

    // One batched call: 100.64.0.0/10 addresses (set elements only).
    let bbase = u32::from(Ipv4Addr::new(100, 64, 0, 0));
    let elems: Vec<Elem> = (0..batch)
        .map(|i| Elem {
            addr: addr(bbase, i),
            timeout_ms: timeout,
        })
        .collect();
    let t = Instant::now();
    sock.add("vw_ban_v4", &elems)?;
    let batch_s = t.elapsed().as_secs_f64();

    // Spawning nft per ban, the way fail2ban-style actions do it.
    let sbase = u32::from(Ipv4Addr::new(198, 19, 128, 0));
    let mut slat = Vec::with_capacity(spawns as usize);
    for i in 0..spawns {
        let t = Instant::now();
        let st = Command::new("nft")
            .args([
                "add",
                "element",
                "inet",
                "voipwall",
                "vw_ban_v4",
                &format!("{{ {} timeout 1h }}", addr(sbase, i)),
            ])
            .status()?;
        assert!(st.success());
        slat.push(t.elapsed().as_secs_f64() * 1e6);
    }

    println!(
        "{{\"single_n\":{singles},\"single_p50_us\":{:.2},\"single_p99_us\":{:.2},\"single_per_s\":{:.0},\
\"batch_n\":{batch},\"batch_s\":{:.4},\"batch_per_s\":{:.0},\"batch_us_per_elem\":{:.2},\
\"spawn_n\":{spawns},\"spawn_p50_us\":{:.0},\"spawn_p99_us\":{:.0}}}",
        pct(&mut lat.clone(), 0.5),
        pct(&mut lat, 0.99),
        f64::from(singles) / single_total,
        batch_s,
        f64::from(batch) / batch_s,
        batch_s * 1e6 / f64::from(batch),
        pct(&mut slat.clone(), 0.5),
        pct(&mut slat, 0.99),
    );
    Ok(())
}
