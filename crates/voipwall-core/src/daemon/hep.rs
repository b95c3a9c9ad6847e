//! The HEP listener: UDP and TCP on each `[hep] listen` address, on its own
//! thread. Only listed senders are read (a packet or connection from
//! anyone else is dropped and counted: HEP names the source of the SIP it
//! carries, so an unlisted sender could forge evidence against anyone).
//! Packets are decoded here ([`voipwall_sip::hep`]) and handed to the
//! engine thread in batches; the engine decodes the SIP as it does for
//! NFLOG copies.
//!
//! Bounded: at most 32 TCP connections (more are closed at once), 256 KiB
//! buffered per connection (a HEP packet is at most 64 KiB), a connection
//! silent for 5 minutes is closed, at most 512 packets per batch and 64
//! batches waiting for the engine thread (beyond, packets are dropped and
//! counted). An address that cannot be bound yet (the network comes up
//! after the firewall) is retried every 5 s.
//!
//! Over UDP, a sender is recognised by its source address only, which an
//! attacker who can forge that address can imitate: for a PBX on another
//! host, prefer HEP over TCP (or keep the HEP port to the PBX's zone).

use std::io::Read as _;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsFd as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use ipnet::IpNet;
use voipwall_sys::nflog::wait_readable;

use super::{Input, Waker};

const MAX_CONNS: usize = 32;
const MAX_BUFFER: usize = 256 * 1024;
const IDLE: Duration = Duration::from_secs(300);
const BATCH: usize = 512;
const PENDING: usize = 64;

/// One HEP packet's SIP, owned, for the engine thread.
#[derive(Debug, Clone)]
pub struct HepPacket {
    /// Source of the original packet.
    pub src: IpAddr,
    /// Its destination.
    pub dst: IpAddr,
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// IP protocol as the sender gave it (17 UDP, 6 TCP, others for TLS/WS).
    pub ip_proto: u8,
    /// The SIP message.
    pub payload: Vec<u8>,
}

impl HepPacket {
    /// A view of it as a decoded HEP packet, for the SIP decoder.
    pub fn hep(&self) -> voipwall_sip::hep::Hep<'_> {
        voipwall_sip::hep::Hep {
            version: 3,
            src: self.src,
            dst: self.dst,
            sport: self.sport,
            dport: self.dport,
            ip_proto: self.ip_proto,
            payload_type: None,
            capture_id: None,
            time: None,
            payload: &self.payload,
        }
    }
}

/// What the listener counted besides packets.
#[derive(Debug, Clone, Copy, Default)]
pub struct HepCounts {
    /// Packets (or connections) from senders not listed.
    pub refused: u64,
    /// Connections from listed senders closed because MAX_CONNS were open.
    pub over_cap: u64,
    /// Packets that did not decode as HEP, or carried no SIP.
    pub malformed: u64,
    /// Packets dropped because the engine thread was behind.
    pub dropped: u64,
}

struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    last: Instant,
}

fn bind(a: &SocketAddr) -> anyhow::Result<(UdpSocket, TcpListener)> {
    let u = UdpSocket::bind(a).with_context(|| format!("HEP: binding udp {a}"))?;
    u.set_nonblocking(true)?;
    let t = TcpListener::bind(a).with_context(|| format!("HEP: binding tcp {a}"))?;
    t.set_nonblocking(true)?;
    Ok((u, t))
}

/// Starts the listener thread: it binds every listen address (UDP and
/// TCP), retrying those that cannot be bound yet, then serves.
pub fn serve(
    listen: Vec<SocketAddr>,
    senders: Vec<IpNet>,
    tx: Sender<Input>,
    waker: Waker,
    stop: Arc<AtomicBool>,
    pending: Arc<std::sync::atomic::AtomicUsize>,
) -> anyhow::Result<()> {
    std::thread::Builder::new().name("hep".into()).spawn(move || {
        let mut udp = Vec::new();
        let mut tcp = Vec::new();
        let mut todo = listen;
        while !todo.is_empty() && !stop.load(Ordering::Relaxed) {
            todo.retain(|a| match bind(a) {
                Ok((u, t)) => {
                    tracing::info!(listen = %a, "HEP listener bound.");
                    udp.push(u);
                    tcp.push(t);
                    false
                }
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "HEP listener not bound yet; retrying every 5 s.");
                    true
                }
            });
            if !todo.is_empty() {
                std::thread::sleep(Duration::from_secs(5));
            }
        }
        run(&udp, &tcp, &senders, &tx, &waker, &stop, &pending);
    })?;
    Ok(())
}

fn allowed(senders: &[IpNet], a: IpAddr) -> bool {
    let a = match a {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(a, IpAddr::V4),
        v4 => v4,
    };
    senders.iter().any(|n| n.contains(&a))
}

fn take(data: &[u8], out: &mut Vec<HepPacket>, counts: &mut HepCounts) {
    match voipwall_sip::hep::decode(data) {
        Ok(h) if h.is_sip() => out.push(HepPacket {
            // A dual-stack sender writes IPv4 peers as ::ffff:a.b.c.d.
            src: h.src.to_canonical(),
            dst: h.dst.to_canonical(),
            sport: h.sport,
            dport: h.dport,
            ip_proto: h.ip_proto,
            payload: h.payload.to_vec(),
        }),
        _ => counts.malformed += 1,
    }
}

fn run(
    udp: &[UdpSocket],
    tcp: &[TcpListener],
    senders: &[IpNet],
    tx: &Sender<Input>,
    waker: &Waker,
    stop: &AtomicBool,
    pending: &std::sync::atomic::AtomicUsize,
) {
    let mut conns: Vec<Conn> = Vec::new();
    let mut buf = vec![0u8; 65_536];
    while !stop.load(Ordering::Relaxed) {
        let mut fds = Vec::new();
        fds.extend(udp.iter().map(|s| s.as_fd()));
        fds.extend(tcp.iter().map(|s| s.as_fd()));
        fds.extend(conns.iter().map(|c| c.stream.as_fd()));
        let ready = wait_readable(&fds, 200).unwrap_or_default();
        let read_us = super::now_us();
        let mut packets = Vec::new();
        let mut counts = HepCounts::default();
        for (i, s) in udp.iter().enumerate() {
            if !ready.get(i).copied().unwrap_or(false) {
                continue;
            }
            while packets.len() < BATCH {
                let Ok((n, from)) = s.recv_from(&mut buf) else {
                    break;
                };
                if allowed(senders, from.ip()) {
                    take(&buf[..n], &mut packets, &mut counts);
                } else {
                    counts.refused += 1;
                }
            }
        }
        for (i, l) in tcp.iter().enumerate() {
            if !ready.get(udp.len() + i).copied().unwrap_or(false) {
                continue;
            }
            while let Ok((stream, from)) = l.accept() {
                if !allowed(senders, from.ip()) {
                    counts.refused += 1;
                    continue;
                }
                if conns.len() >= MAX_CONNS {
                    counts.over_cap += 1;
                    continue;
                }
                if stream.set_nonblocking(true).is_ok() {
                    conns.push(Conn {
                        stream,
                        buf: Vec::new(),
                        last: Instant::now(),
                    });
                }
            }
        }
        let base = udp.len() + tcp.len();
        let now = Instant::now();
        let mut keep = vec![true; conns.len()];
        for (i, c) in conns.iter_mut().enumerate() {
            if !ready.get(base + i).copied().unwrap_or(false) {
                keep[i] = now.duration_since(c.last) < IDLE;
                continue;
            }
            c.last = now;
            loop {
                match c.stream.read(&mut buf) {
                    Ok(0) => {
                        keep[i] = false;
                        break;
                    }
                    Ok(n) => c.buf.extend_from_slice(&buf[..n]),
                    Err(_) => break,
                }
                if c.buf.len() >= MAX_BUFFER {
                    break;
                }
            }
            let mut at = 0;
            loop {
                match voipwall_sip::hep::frame(&c.buf[at..]) {
                    Ok(Some(n)) => {
                        take(&c.buf[at..at + n], &mut packets, &mut counts);
                        at += n;
                    }
                    Ok(None) => break,
                    Err(_) => {
                        // Not HEP version 3: the stream cannot be framed.
                        counts.malformed += 1;
                        keep[i] = false;
                        break;
                    }
                }
            }
            c.buf.drain(..at);
            if c.buf.len() >= MAX_BUFFER {
                keep[i] = false;
            }
        }
        let mut k = keep.into_iter();
        conns.retain(|_| k.next().unwrap_or(false));
        if !packets.is_empty() && pending.load(Ordering::Relaxed) >= PENDING {
            // The engine thread is behind: drop rather than queue without end.
            counts.dropped += packets.len() as u64;
            packets.clear();
        }
        if !packets.is_empty()
            || counts.refused + counts.over_cap + counts.malformed + counts.dropped > 0
        {
            pending.fetch_add(1, Ordering::Relaxed);
            if tx.send(Input::Hep(packets, counts, read_us)).is_ok() {
                waker.wake();
            }
        }
    }
}
