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
