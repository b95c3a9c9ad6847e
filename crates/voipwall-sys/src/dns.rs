//! The blocking DNS client (UDP, TCP when an answer is truncated) over
//! `voipwall-dns`'s pure codec: the I/O lives here, with the rest of the
//! host I/O, so the codec and the schedule stay pure (their crate's
//! clippy.toml).

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use voipwall_dns::codec::{QType, Rdata, Response, encode_query, parse_response};
use voipwall_dns::schedule::Resolved;

/// Asks `servers` in turn, each with one retry.
#[derive(Debug, Clone)]
pub struct Client {
    /// Name servers (port 53 unless given).
    pub servers: Vec<SocketAddr>,
    /// Wait per attempt.
    pub timeout: Duration,
    /// Where query ids come from: the caller's random source (the kernel's,
    /// `voipwall_core::random::query_id`), never a counter.
    pub query_id: fn() -> u16,
}

impl Client {
    /// One query; the first server that answers wins. SERVFAIL and REFUSED
    /// move on to the next server.
    pub fn query(&self, name: &str, qtype: QType) -> Result<Response, String> {
        if self.servers.is_empty() {
            return Err("no name server configured".into());
        }
        let mut last = String::new();
        for server in &self.servers {
            for attempt in 0..2u16 {
                match self.ask(*server, name, qtype, attempt) {
                    Ok(r) if r.rcode == 0 || r.rcode == 3 => return Ok(r),
                    Ok(r) => last = format!("{server}: rcode {}", r.rcode),
                    Err(e) => last = format!("{server}: {e}"),
                }
            }
        }
        Err(last)
    }

    fn ask(
        &self,
        server: SocketAddr,
        name: &str,
        qtype: QType,
        attempt: u16,
    ) -> Result<Response, String> {
        let bind: SocketAddr = if server.is_ipv4() {
            "0.0.0.0:0".parse().expect("literal")
        } else {
            "[::]:0".parse().expect("literal")
        };
        // A fresh socket per question: the kernel picks a random source
        // port; with a random id an off-path forger must guess 32 bits.
        let sock = UdpSocket::bind(bind).map_err(|e| e.to_string())?;
        sock.connect(server).map_err(|e| e.to_string())?;
        let _ = attempt;
        let id = (self.query_id)();
        let q = encode_query(id, name, qtype).map_err(|e| e.to_string())?;
        sock.send(&q).map_err(|e| e.to_string())?;
        let deadline = Instant::now() + self.timeout;
        let mut buf = [0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err("timed out".into());
            }
            sock.set_read_timeout(Some(left))
                .map_err(|e| e.to_string())?;
            let n = match sock.recv(&mut buf) {
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err("timed out".into());
                }
                Err(e) => return Err(e.to_string()),
            };
            match parse_response(&buf[..n]) {
                // Did not fit even with EDNS0: the same question over TCP.
                Ok(r) if r.id == id && r.truncated => return self.ask_tcp(server, &q, id),
                Ok(r) if r.id == id => return Ok(r),
                _ => {} // stray or malformed: keep waiting
            }
        }
    }

    /// A and AAAA of `host` and, with `srv`, of the targets of its
    /// `_sip._udp` and `_sip._tcp` SRV records. An error only when every
    /// query failed; a name that does not exist is an empty answer.
    /// One question over TCP (RFC 7766: two-byte length prefix).
    fn ask_tcp(&self, server: SocketAddr, q: &[u8], id: u16) -> Result<Response, String> {
        use std::io::{Read as _, Write as _};
        let mut s = std::net::TcpStream::connect_timeout(&server, self.timeout)
            .map_err(|e| format!("tcp: {e}"))?;
        s.set_read_timeout(Some(self.timeout))
            .and_then(|()| s.set_write_timeout(Some(self.timeout)))
            .map_err(|e| e.to_string())?;
        let len = u16::try_from(q.len()).map_err(|_| "query too long".to_string())?;
        let mut out = len.to_be_bytes().to_vec();
        out.extend_from_slice(q);
        s.write_all(&out).map_err(|e| format!("tcp: {e}"))?;
        let mut l = [0u8; 2];
        s.read_exact(&mut l).map_err(|e| format!("tcp: {e}"))?;
        let mut buf = vec![0u8; usize::from(u16::from_be_bytes(l))];
        s.read_exact(&mut buf).map_err(|e| format!("tcp: {e}"))?;
        match parse_response(&buf) {
            Ok(r) if r.id == id => Ok(r),
            Ok(_) => Err("tcp: answer to another question".into()),
            Err(e) => Err(format!("tcp: {e}")),
        }
    }

    /// A name's addresses (A and AAAA, following SRV targets when `srv`)
    /// with the lowest TTL, as the schedule wants them.
    pub fn resolve(&self, host: &str, srv: bool) -> Result<Resolved, String> {
        let mut addrs = BTreeSet::new();
        let mut ttl = u32::MAX;
        let mut errors = Vec::new();
        let mut ok = 0;
        let mut targets = vec![host.to_string()];
        if srv {
            for prefix in ["_sip._udp", "_sip._tcp"] {
                match self.query(&format!("{prefix}.{host}"), QType::Srv) {
                    Ok(r) => {
                        ok += 1;
                        for rec in r.answers {
                            if let Rdata::Srv { target, .. } = rec.data
                                && !target.is_empty()
                                && !targets.contains(&target)
                            {
                                ttl = ttl.min(rec.ttl);
                                targets.push(target);
                            }
                        }
                    }
                    Err(e) => errors.push(e),
                }
            }
        }
        for t in &targets {
            for qt in [QType::A, QType::Aaaa] {
                match self.query(t, qt) {
                    Ok(r) => {
                        ok += 1;
                        for rec in r.answers {
                            let a = match rec.data {
                                Rdata::A(a) => IpAddr::V4(a),
                                Rdata::Aaaa(a) => IpAddr::V6(a),
                                _ => continue,
                            };
                            ttl = ttl.min(rec.ttl);
                            addrs.insert(a);
                        }
                    }
                    Err(e) => errors.push(e),
                }
            }
        }
        if ok == 0 {
            return Err(errors
                .first()
                .cloned()
                .unwrap_or_else(|| "no answer".into()));
        }
        Ok(Resolved {
            addrs,
            ttl_s: if ttl == u32::MAX { 60 } else { ttl },
        })
    }
}
