//! Benchmark traffic: SIP over UDP from many source addresses, through a raw
//! socket (IPv4 headers written here, so sources need not be configured).
//! Only for the benchmark namespaces: run it inside one with
//! `ip netns exec`; it sends to the one destination it is given.
//!
//! Usage:
//!   sip_send <dst-ip> <kind> <messages> <rate-per-s> <sources> <first-source-ip>
//!
//! kind: `register` (a REGISTER, as a phone sends, no user agent of note),
//! `scanner` (OPTIONS with User-Agent friendly-scanner) or `options` (an
//! OPTIONS as a device's keep-alive, nothing a rule bans at once). Sources are taken
//! round-robin from `sources` consecutive addresses starting at
//! `first-source-ip`. For each message it prints nothing; at the end, one
//! JSON line: sent, seconds, rate. With `VOIPWALL_SEND_LOG=<file>` it writes
//! `<source> <send time µs since epoch>` for the first message of each
//! source (latency measurement). `VOIPWALL_SEND_DPORT=<port>` sends to
//! another port than 5060 (a closed one, for the drop log's flood).

use std::io::Write as _;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn checksum(data: &[u8]) -> u16 {
    let mut sum = 0u32;
    for c in data.chunks(2) {
        let w = u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]);
        sum += u32::from(w);
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn packet(src: Ipv4Addr, dst: Ipv4Addr, dport: u16, payload: &[u8]) -> Vec<u8> {
    let total = 20 + 8 + payload.len();
    let mut p = Vec::with_capacity(total);
    p.extend_from_slice(&[0x45, 0]);
    p.extend_from_slice(&(total as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    let c = checksum(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p.extend_from_slice(&5070u16.to_be_bytes());
    p.extend_from_slice(&dport.to_be_bytes());
    p.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]); // no UDP checksum (allowed for IPv4)
    p.extend_from_slice(payload);
    p
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.len() != 7 {
        eprintln!(
            "usage: sip_send <dst-ip> <register|scanner|options> <messages> <rate-per-s> <sources> <first-source-ip>"
        );
        std::process::exit(2);
    }
    let dst: Ipv4Addr = a[1].parse().expect("dst");
    let kind = a[2].as_str();
    let n: u64 = a[3].parse().expect("messages");
    let rate: u64 = a[4].parse().expect("rate");
    let sources: u32 = a[5].parse().expect("sources");
    let first = u32::from(a[6].parse::<Ipv4Addr>().expect("first source"));
    let dport: u16 = std::env::var("VOIPWALL_SEND_DPORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(5060);
    let mut log = std::env::var_os("VOIPWALL_SEND_LOG")
        .map(|p| std::io::BufWriter::new(std::fs::File::create(p).expect("log file")));
    use rustix::net::{
        AddressFamily, SendFlags, SocketAddrV4, SocketType, ipproto, sendto, socket,
    };
    let fd = socket(AddressFamily::INET, SocketType::RAW, Some(ipproto::RAW)).expect("raw socket");
    let sa = SocketAddrV4::new(dst, 0);
    // One packet per source, built before sending (the sender must not be
    // the bottleneck); each source repeats its own message.
    let packets: Vec<Vec<u8>> = (0..sources)
        .map(|i| {
            let src = Ipv4Addr::from(first.wrapping_add(i));
            let payload = match kind {
                "options" => format!(
                    "OPTIONS sip:100@{dst} SIP/2.0\r\nVia: SIP/2.0/UDP {src}:5070;branch=z9hG4bK{i}\r\nFrom: <sip:100@{src}>;tag=1\r\nTo: <sip:100@{dst}>\r\nCall-ID: c{i}@{src}\r\nCSeq: 1 OPTIONS\r\nUser-Agent: Grandstream HT801 1.0.33.4\r\nContent-Length: 0\r\n\r\n"
                ),
                "scanner" => format!(
                    "OPTIONS sip:100@{dst} SIP/2.0\r\nVia: SIP/2.0/UDP {src}:5070;branch=z9hG4bK{i}\r\nFrom: <sip:100@{src}>;tag=1\r\nTo: <sip:100@{dst}>\r\nCall-ID: c{i}@{src}\r\nCSeq: 1 OPTIONS\r\nUser-Agent: friendly-scanner\r\nContent-Length: 0\r\n\r\n"
                ),
                _ => format!(
                    "REGISTER sip:{dst} SIP/2.0\r\nVia: SIP/2.0/UDP {src}:5070;branch=z9hG4bK{i}\r\nFrom: <sip:1001@{dst}>;tag=1\r\nTo: <sip:1001@{dst}>\r\nCall-ID: c{i}@{src}\r\nCSeq: 1 REGISTER\r\nContact: <sip:1001@{src}:5070>\r\nExpires: 60\r\nUser-Agent: Yealink SIP-T46U 66.86.0.15\r\nContent-Length: 0\r\n\r\n"
                ),
            };
            packet(src, dst, dport, payload.as_bytes())
        })
        .collect();
    let start = Instant::now();
    let mut sent = 0u64;
    while sent < n {
        // Pace: the i-th message leaves at i / rate seconds.
        let due = Duration::from_nanos(sent.saturating_mul(1_000_000_000) / rate.max(1));
        let now = start.elapsed();
        if now < due {
            let gap = due - now;
            if gap > Duration::from_micros(200) {
                std::thread::sleep(gap - Duration::from_micros(100));
            }
            continue;
        }
        let s = (sent % u64::from(sources)) as usize;
        let src = Ipv4Addr::from(first.wrapping_add(s as u32));
        let p = &packets[s];
        if let Some(l) = log.as_mut()
            && sent < u64::from(sources)
        {
            let us = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_micros());
            let _ = writeln!(l, "{src} {us}");
        }
        match sendto(&fd, p, SendFlags::empty(), &sa) {
            Ok(_) => {}
            Err(rustix::io::Errno::NOBUFS) => {
                std::thread::sleep(Duration::from_micros(50));
                continue;
            }
            Err(e) => panic!("sendto: {e}"),
        }
        sent += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    if let Some(mut l) = log {
        let _ = l.flush();
    }
    println!(
        "{{\"sent\": {sent}, \"seconds\": {secs:.3}, \"rate\": {:.0}}}",
        sent as f64 / secs
    );
}
