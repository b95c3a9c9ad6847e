//! HEP (Homer Encapsulation Protocol) decoding: the copies of SIP a PBX
//! sends after decrypting TLS or WebSocket, with the addresses and ports of
//! the original packet.
//!
//! Versions 1 and 2 are a fixed binary header (version, header length,
//! address family, IP protocol, ports, addresses; version 2 adds a time
//! header) followed by the payload. Version 3 is `HEP3`, a 16-bit total
//! length and chunks (vendor 16 bits, type 16 bits, length 16 bits
//! including those 6 bytes, value), all in network byte order; the generic
//! chunk types used here are 1 family, 2 IP protocol, 3/4 IPv4 source and
//! destination, 5/6 IPv6 source and destination, 7/8 ports, 9/10 time,
//! 11 payload type (1 = SIP), 12 capture agent id, 15 payload, 16 a
//! compressed payload (refused: no decompression of attacker-sized input).
//!
//! Pure and panic-free on any input; no allocation.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why a HEP packet was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HepError {
    /// Shorter than its header or its stated length.
    #[error("truncated HEP packet")]
    Truncated,
    /// Not version 1, 2 or 3.
    #[error("not a HEP packet")]
    NotHep,
    /// A chunk or header length that cannot be.
    #[error("malformed HEP header")]
    Malformed,
    /// No source or destination address.
    #[error("HEP packet without addresses")]
    NoAddress,
    /// No payload chunk.
    #[error("HEP packet without payload")]
    NoPayload,
    /// Only a compressed payload (not decompressed, by design).
    #[error("compressed HEP payload")]
    Compressed,
}

/// One decoded HEP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hep<'a> {
    /// 1, 2 or 3.
    pub version: u8,
    /// Source of the original packet.
    pub src: IpAddr,
    /// Destination of the original packet.
    pub dst: IpAddr,
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// IP protocol of the original packet (17 UDP, 6 TCP; senders use
    /// other numbers for TLS and WebSocket, e.g. Kamailio 22).
    pub ip_proto: u8,
    /// Payload type (version 3; 1 is SIP). `None` when absent.
    pub payload_type: Option<u8>,
    /// Capture agent id, when given.
    pub capture_id: Option<u32>,
    /// Capture time, seconds and microseconds, when given.
    pub time: Option<(u32, u32)>,
    /// The captured message.
    pub payload: &'a [u8],
}

impl Hep<'_> {
    /// Whether the payload is SIP (version 3 says so, or says nothing;
    /// versions 1 and 2 carry only SIP).
    pub fn is_sip(&self) -> bool {
        self.payload_type.is_none_or(|t| t == 1)
    }
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    b.get(at..at + 2).map(|s| u16::from_be_bytes([s[0], s[1]]))
}

fn be32(b: &[u8]) -> Option<u32> {
    (b.len() == 4).then(|| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

fn addr(b: &[u8]) -> Option<IpAddr> {
    match b.len() {
        4 => Some(IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))),
        16 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(b);
            Some(IpAddr::V6(Ipv6Addr::from(a)))
        }
        _ => None,
    }
}

/// Length of the first whole HEP version 3 packet at the start of a TCP
/// stream; `Ok(None)` when more bytes are needed. Versions 1 and 2 carry
/// no total length and are not framed on streams (senders use UDP).
pub fn frame(stream: &[u8]) -> Result<Option<usize>, HepError> {
    if stream.len() < 6 {
        return if b"HEP3".starts_with(&stream[..stream.len().min(4)]) {
            Ok(None)
        } else {
            Err(HepError::NotHep)
        };
    }
    if &stream[..4] != b"HEP3" {
        return Err(HepError::NotHep);
    }
    let len = usize::from(be16(stream, 4).ok_or(HepError::Truncated)?);
    if len < 6 {
        return Err(HepError::Malformed);
    }
    Ok((stream.len() >= len).then_some(len))
}

/// HEP over TCP from captured segments (`replay --hep`; the daemon's own
/// listener reads real sockets): per connection, the bytes in sequence
/// order, framed into whole HEP packets across segment boundaries.
/// Retransmitted bytes are skipped; after a gap (a segment lost or out of
/// order) the stream is searched for the next `HEP3` and read on from
/// there. Bounded: at most [`HepStreams::MAX_FLOWS`] connections (the least
/// recently used go) and [`HepStreams::MAX_BUF`] bytes waiting in each.
pub struct HepStreams {
    flows: hashlink::LruCache<(IpAddr, u16, IpAddr, u16), HepStream>,
}

#[derive(Default)]
struct HepStream {
    next: Option<u32>,
    buf: Vec<u8>,
}

impl Default for HepStreams {
    fn default() -> Self {
        Self {
            flows: hashlink::LruCache::new(Self::MAX_FLOWS),
        }
    }
}

impl HepStreams {
    /// Connections followed at once.
    pub const MAX_FLOWS: usize = 4096;
    /// Bytes waiting for the rest of a packet, per connection (a HEP
    /// packet is at most 64 kB).
    pub const MAX_BUF: usize = 1 << 17;

    /// One captured segment of the connection `key` (source, source port,
    /// destination, destination port); each whole HEP packet it completes
    /// goes to `out`, in stream order.
    pub fn segment(
        &mut self,
        key: (IpAddr, u16, IpAddr, u16),
        seq: u32,
        syn: bool,
        payload: &[u8],
        out: &mut dyn FnMut(&[u8]),
    ) {
        if !self.flows.contains_key(&key) {
            self.flows.insert(key, HepStream::default());
        }
        let Some(f) = self.flows.get_mut(&key) else {
            return;
        };
        if syn {
            f.next = Some(seq.wrapping_add(1));
            f.buf.clear();
            if payload.is_empty() {
                return;
            }
        }
        let start = if syn { seq.wrapping_add(1) } else { seq };
        let next = *f.next.get_or_insert(start);
        // How far this segment is ahead of (positive) or behind the next
        // byte expected.
        let ahead = start.wrapping_sub(next) as i32;
        let fresh: &[u8] = if ahead > 0 {
            // A gap: what waited cannot be finished; read on from here.
            f.buf.clear();
            payload
        } else {
            let old = ahead.unsigned_abs() as usize;
            payload.get(old..).unwrap_or(&[])
        };
        if fresh.is_empty() {
            return;
        }
        f.next = Some(
            start
                .wrapping_add(payload.len() as u32)
                .max_by_seq(next.wrapping_add(fresh.len() as u32)),
        );
        f.buf.extend_from_slice(fresh);
        loop {
            // Not at a packet's start (picked up mid-stream, after a gap or
            // junk): skip to the next "HEP3".
            if !f.buf.is_empty() && !b"HEP3".starts_with(&f.buf[..f.buf.len().min(4)]) {
                match f.buf.windows(4).position(|w| w == b"HEP3") {
                    Some(i) => {
                        f.buf.drain(..i);
                    }
                    None => {
                        let keep = f.buf.len().min(3);
                        let cut = f.buf.len() - keep;
                        f.buf.drain(..cut);
                        break;
                    }
                }
            }
            match frame(&f.buf) {
                Ok(Some(n)) => {
                    out(&f.buf[..n]);
                    f.buf.drain(..n);
                }
                Ok(None) => break,
                Err(_) => {
                    // A bad header at a "HEP3": skip its magic and look on.
                    f.buf.drain(..f.buf.len().min(4));
                }
            }
        }
        if f.buf.len() > Self::MAX_BUF {
            f.buf.clear();
        }
    }
}

/// Sequence-number arithmetic: the later of two positions.
trait MaxBySeq {
    fn max_by_seq(self, other: Self) -> Self;
}

impl MaxBySeq for u32 {
    fn max_by_seq(self, other: Self) -> Self {
        if (other.wrapping_sub(self) as i32) > 0 {
            other
        } else {
            self
        }
    }
}

/// Decodes one HEP packet (a UDP datagram, or one framed from a stream).
pub fn decode(buf: &[u8]) -> Result<Hep<'_>, HepError> {
    if buf.starts_with(b"HEP3") {
        return decode_v3(buf);
    }
    match buf.first() {
        Some(1 | 2) => decode_v12(buf),
        Some(_) => Err(HepError::NotHep),
        None => Err(HepError::Truncated),
    }
}

fn decode_v12(buf: &[u8]) -> Result<Hep<'_>, HepError> {
    if buf.len() < 8 {
        return Err(HepError::Truncated);
    }
    let version = buf[0];
    let hdr_len = usize::from(buf[1]);
    let family = buf[2];
    let ip_proto = buf[3];
    let sport = be16(buf, 4).ok_or(HepError::Truncated)?;
    let dport = be16(buf, 6).ok_or(HepError::Truncated)?;
    let alen = match family {
        2 => 4,
        10 => 16,
        _ => return Err(HepError::Malformed),
    };
    if hdr_len != 8 + 2 * alen {
        return Err(HepError::Malformed);
    }
    let ips = buf.get(8..8 + 2 * alen).ok_or(HepError::Truncated)?;
    let src = addr(&ips[..alen]).ok_or(HepError::NoAddress)?;
    let dst = addr(&ips[alen..]).ok_or(HepError::NoAddress)?;
    let mut at = hdr_len;
    let mut time = None;
    let mut capture_id = None;
    if version == 2 {
        // seconds and microseconds (little-endian, as senders write them),
        // a 16-bit capture id and two bytes of padding.
        let t = buf.get(at..at + 12).ok_or(HepError::Truncated)?;
        time = Some((
            u32::from_le_bytes([t[0], t[1], t[2], t[3]]),
            u32::from_le_bytes([t[4], t[5], t[6], t[7]]),
        ));
        capture_id = Some(u32::from(u16::from_le_bytes([t[8], t[9]])));
        at += 12;
    }
    let payload = &buf[at..];
    if payload.is_empty() {
        return Err(HepError::NoPayload);
    }
    Ok(Hep {
        version,
        src,
        dst,
        sport,
        dport,
        ip_proto,
        payload_type: None,
        capture_id,
        time,
        payload,
    })
}

fn decode_v3(buf: &[u8]) -> Result<Hep<'_>, HepError> {
    let total = usize::from(be16(buf, 4).ok_or(HepError::Truncated)?);
    if total < 6 {
        return Err(HepError::Malformed);
    }
    let buf = buf.get(..total).ok_or(HepError::Truncated)?;
    let mut at = 6;
    let (mut src, mut dst) = (None, None);
    let (mut sport, mut dport, mut ip_proto) = (0u16, 0u16, 0u8);
    let (mut payload, mut compressed) = (None, false);
    let (mut payload_type, mut capture_id) = (None, None);
    let (mut secs, mut usecs) = (None, None);
    while at < buf.len() {
        let vendor = be16(buf, at).ok_or(HepError::Truncated)?;
        let kind = be16(buf, at + 2).ok_or(HepError::Truncated)?;
        let len = usize::from(be16(buf, at + 4).ok_or(HepError::Truncated)?);
        if len < 6 {
            return Err(HepError::Malformed);
        }
        let v = buf.get(at + 6..at + len).ok_or(HepError::Truncated)?;
        at += len;
        if vendor != 0 {
            continue;
        }
        let one = || v.first().copied().filter(|_| v.len() == 1);
        match kind {
            2 => ip_proto = one().ok_or(HepError::Malformed)?,
            3 | 5 => src = Some(addr(v).ok_or(HepError::Malformed)?),
            4 | 6 => dst = Some(addr(v).ok_or(HepError::Malformed)?),
            7 => {
                sport = be16(v, 0)
                    .filter(|_| v.len() == 2)
                    .ok_or(HepError::Malformed)?
            }
            8 => {
                dport = be16(v, 0)
                    .filter(|_| v.len() == 2)
                    .ok_or(HepError::Malformed)?
            }
            9 => secs = Some(be32(v).ok_or(HepError::Malformed)?),
            10 => usecs = Some(be32(v).ok_or(HepError::Malformed)?),
            11 => payload_type = Some(one().ok_or(HepError::Malformed)?),
            12 => capture_id = Some(be32(v).ok_or(HepError::Malformed)?),
            15 => payload = Some(v),
            16 => compressed = true,
            _ => {}
        }
    }
    let (Some(src), Some(dst)) = (src, dst) else {
        return Err(HepError::NoAddress);
    };
    let payload = match payload {
        Some(p) if !p.is_empty() => p,
        _ if compressed => return Err(HepError::Compressed),
        _ => return Err(HepError::NoPayload),
    };
    Ok(Hep {
        version: 3,
        src,
        dst,
        sport,
        dport,
        ip_proto,
        payload_type,
        capture_id,
        time: secs.map(|s| (s, usecs.unwrap_or(0))),
        payload,
    })
}

/// Encodes a HEP version 3 packet with the generic chunks [`decode`]
/// reads: for tests, benches and the fuzz corpus.
pub fn encode_v3(h: &Hep<'_>) -> Vec<u8> {
    let mut out = b"HEP3\0\0".to_vec();
    let mut chunk = |kind: u16, v: &[u8]| {
        out.extend_from_slice(&0u16.to_be_bytes());
        out.extend_from_slice(&kind.to_be_bytes());
        out.extend_from_slice(&u16::try_from(v.len() + 6).unwrap_or(u16::MAX).to_be_bytes());
        out.extend_from_slice(v);
    };
    let v6 = matches!(h.src, IpAddr::V6(_));
    chunk(1, &[if v6 { 10 } else { 2 }]);
    chunk(2, &[h.ip_proto]);
    let octets = |a: IpAddr| match a {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    chunk(if v6 { 5 } else { 3 }, &octets(h.src));
    chunk(if v6 { 6 } else { 4 }, &octets(h.dst));
    chunk(7, &h.sport.to_be_bytes());
    chunk(8, &h.dport.to_be_bytes());
    if let Some((s, us)) = h.time {
        chunk(9, &s.to_be_bytes());
        chunk(10, &us.to_be_bytes());
    }
    if let Some(t) = h.payload_type {
        chunk(11, &[t]);
    }
    if let Some(c) = h.capture_id {
        chunk(12, &c.to_be_bytes());
    }
    chunk(15, h.payload);
    let len = u16::try_from(out.len()).unwrap_or(u16::MAX);
    out[4..6].copy_from_slice(&len.to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hep_of(payload: &[u8]) -> Vec<u8> {
        encode_v3(&Hep {
            version: 3,
            src: "203.0.113.9".parse().unwrap(),
            dst: "198.51.100.1".parse().unwrap(),
            sport: 5060,
            dport: 5060,
            ip_proto: 17,
            payload_type: Some(1),
            capture_id: Some(1),
            time: None,
            payload,
        })
    }

    proptest::proptest! {
        /// Any segments, in any order and shape: no panic, and everything
        /// handed out is one whole HEP packet by its own header.
        #[test]
        fn any_segments_give_only_whole_packets(
            segs in proptest::collection::vec((0u32..400, proptest::bool::ANY, proptest::collection::vec(proptest::prelude::any::<u8>(), 0..120)), 0..30),
            salt in proptest::collection::vec(0usize..3, 0..30),
        ) {
            let good = hep_of(b"x");
            let key: (IpAddr, u16, IpAddr, u16) = ("192.0.2.1".parse().unwrap(), 1, "192.0.2.2".parse().unwrap(), 2);
            let mut r = HepStreams::default();
            for (i, (seq, syn, mut bytes)) in segs.into_iter().enumerate() {
                // Some segments carry real HEP, so framing is exercised.
                if salt.get(i) == Some(&1) {
                    bytes.extend_from_slice(&good);
                }
                r.segment(key, seq, syn, &bytes, &mut |p| {
                    assert_eq!(frame(p), Ok(Some(p.len())));
                });
            }
        }
    }

    #[test]
    fn hep_over_tcp_is_framed_across_segments_retransmissions_and_gaps() {
        let (a, b, c) = (hep_of(b"one"), hep_of(b"two"), hep_of(b"three"));
        let stream = [a.clone(), b.clone(), c.clone()].concat();
        let key: (IpAddr, u16, IpAddr, u16) = (
            "198.51.100.1".parse().unwrap(),
            40000,
            "198.51.100.50".parse().unwrap(),
            9060,
        );
        let mut got: Vec<Vec<u8>> = Vec::new();
        let mut r = HepStreams::default();
        r.segment(key, 99, true, &[], &mut |p| got.push(p.to_vec()));
        // Cut anywhere, one segment sent twice (a retransmission).
        let cut = [0, 7, a.len() + 3, a.len() + b.len() + 1, stream.len()];
        for w in cut.windows(2) {
            let seq = 100 + u32::try_from(w[0]).unwrap();
            r.segment(key, seq, false, &stream[w[0]..w[1]], &mut |p| {
                got.push(p.to_vec())
            });
            r.segment(key, seq, false, &stream[w[0]..w[1]], &mut |p| {
                got.push(p.to_vec())
            });
        }
        assert_eq!(got, vec![a.clone(), b.clone(), c.clone()]);
        // A gap: the half packet before it is lost, the next whole one is
        // found again.
        got.clear();
        let mut r = HepStreams::default();
        r.segment(key, 1, false, &a[..5], &mut |p| got.push(p.to_vec()));
        let junk_then_b = [b"xx".to_vec(), b.clone()].concat();
        r.segment(key, 500, false, &junk_then_b, &mut |p| got.push(p.to_vec()));
        assert_eq!(got, vec![b]);
    }

    fn sample() -> Hep<'static> {
        Hep {
            version: 3,
            src: "203.0.113.9".parse().unwrap(),
            dst: "198.51.100.1".parse().unwrap(),
            sport: 40001,
            dport: 5061,
            ip_proto: 6,
            payload_type: Some(1),
            capture_id: Some(2001),
            time: Some((1_795_000_000, 12)),
            payload: b"OPTIONS sip:x SIP/2.0\r\n\r\n",
        }
    }

    #[test]
    fn v3_round_trip_and_framing() {
        let h = sample();
        let b = encode_v3(&h);
        assert_eq!(decode(&b), Ok(h));
        let mut stream = b.clone();
        stream.extend_from_slice(&b[..10]);
        assert_eq!(frame(&stream), Ok(Some(b.len())));
        assert_eq!(frame(&b[..10]), Ok(None));
        assert_eq!(frame(b"HE"), Ok(None));
        assert_eq!(frame(b"GET / HTTP/1.1"), Err(HepError::NotHep));
        // An unknown vendor's chunk is skipped.
        let mut v = b.clone();
        v.extend_from_slice(&[0, 9, 0, 1, 0, 7, 0xaa]);
        let n = u16::try_from(v.len()).unwrap().to_be_bytes();
        v[4..6].copy_from_slice(&n);
        assert_eq!(decode(&v), Ok(h));
    }

    #[test]
    fn v2_ipv6_with_time_header() {
        let mut b = vec![2u8, 40, 10, 17];
        b.extend_from_slice(&5060u16.to_be_bytes());
        b.extend_from_slice(&5060u16.to_be_bytes());
        b.extend_from_slice(&"2001:db8::7".parse::<Ipv6Addr>().unwrap().octets());
        b.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        b.extend_from_slice(&100u32.to_le_bytes());
        b.extend_from_slice(&5u32.to_le_bytes());
        b.extend_from_slice(&[7, 0, 0, 0]);
        b.extend_from_slice(b"REGISTER sip:x SIP/2.0\r\n\r\n");
        let h = decode(&b).unwrap();
        assert_eq!((h.version, h.sport, h.ip_proto), (2, 5060, 17));
        assert_eq!(h.src, "2001:db8::7".parse::<IpAddr>().unwrap());
        assert_eq!((h.time, h.capture_id), (Some((100, 5)), Some(7)));
        assert!(h.payload.starts_with(b"REGISTER"));
    }

    #[test]
    fn refusals() {
        assert_eq!(decode(b""), Err(HepError::Truncated));
        assert_eq!(decode(b"SIP/2.0 200 OK"), Err(HepError::NotHep));
        let b = encode_v3(&sample());
        assert_eq!(decode(&b[..b.len() - 1]), Err(HepError::Truncated));
        // A chunk length below its own header.
        let mut bad = b.clone();
        bad[10..12].copy_from_slice(&3u16.to_be_bytes());
        assert_eq!(decode(&bad), Err(HepError::Malformed));
        // No payload chunk.
        let no_payload = encode_v3(&Hep {
            payload: b"",
            ..sample()
        });
        assert_eq!(decode(&no_payload), Err(HepError::NoPayload));
    }
}
