//! Peeling the IPv4/IPv6 and UDP/TCP headers off a packet as NFLOG delivers
//! it (starting at the network header), down to the SIP payload.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::SipError;

/// Transport of a peeled packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// UDP.
    Udp,
    /// TCP (the payload is a piece of a stream: see [`crate::frame`]).
    Tcp,
}

/// Addresses, ports and payload of one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peeled<'a> {
    /// Source address, from the IP header (never from SIP headers).
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// UDP or TCP.
    pub transport: Transport,
    /// TCP sequence number of the payload's first byte (0 for UDP).
    pub seq: u32,
    /// TCP flags (FIN 0x01, SYN 0x02, RST 0x04, ...; 0 for UDP).
    pub flags: u8,
    /// Transport payload.
    pub payload: &'a [u8],
}

fn be16(b: &[u8], at: usize) -> Result<u16, SipError> {
    b.get(at..at + 2)
        .map(|s| u16::from_be_bytes([s[0], s[1]]))
        .ok_or(SipError::Truncated)
}

/// Peels one IP packet. Fragments other than the first, and protocols other
/// than UDP and TCP, are errors (counted by the caller, never a panic).
pub fn peel(pkt: &[u8]) -> Result<Peeled<'_>, SipError> {
    let version = pkt.first().ok_or(SipError::Truncated)? >> 4;
    let (src, dst, proto, l4) = match version {
        4 => {
            let ihl = usize::from(pkt[0] & 0x0f) * 4;
            if ihl < 20 {
                return Err(SipError::BadPacket);
            }
            if pkt.len() < ihl {
                return Err(SipError::Truncated);
            }
            let total = usize::from(be16(pkt, 2)?);
            let frag = be16(pkt, 6)? & 0x1fff;
            if frag != 0 {
                return Err(SipError::Fragment);
            }
            let src = Ipv4Addr::new(pkt[12], pkt[13], pkt[14], pkt[15]);
            let dst = Ipv4Addr::new(pkt[16], pkt[17], pkt[18], pkt[19]);
            // NFLOG may cut the packet at snaplen: trust the shorter length.
            let end = total.min(pkt.len()).max(ihl);
            (IpAddr::V4(src), IpAddr::V4(dst), pkt[9], &pkt[ihl..end])
        }
        6 => {
            if pkt.len() < 40 {
                return Err(SipError::Truncated);
            }
            let mut next = pkt[6];
            let payload_len = usize::from(be16(pkt, 4)?);
            let mut off = 40;
            let end = (40 + payload_len).min(pkt.len());
            // Walk hop-by-hop, routing, fragment and destination-options headers.
            for _ in 0..8 {
                match next {
                    0 | 43 | 60 => {
                        let h = pkt.get(off..off + 2).ok_or(SipError::Truncated)?;
                        next = h[0];
                        off += (usize::from(h[1]) + 1) * 8;
                    }
                    44 => {
                        let h = pkt.get(off..off + 8).ok_or(SipError::Truncated)?;
                        if u16::from_be_bytes([h[2], h[3]]) & 0xfff8 != 0 {
                            return Err(SipError::Fragment);
                        }
                        next = h[0];
                        off += 8;
                    }
                    _ => break,
                }
            }
            if off > end {
                return Err(SipError::Truncated);
            }
            let mut s = [0u8; 16];
            s.copy_from_slice(&pkt[8..24]);
            let mut d = [0u8; 16];
            d.copy_from_slice(&pkt[24..40]);
            (
                IpAddr::V6(Ipv6Addr::from(s)),
                IpAddr::V6(Ipv6Addr::from(d)),
                next,
                &pkt[off..end],
            )
        }
        _ => return Err(SipError::BadPacket),
    };
    let (transport, hdr) = match proto {
        17 => (Transport::Udp, 8),
        6 => {
            let off = l4.get(12).ok_or(SipError::Truncated)? >> 4;
            (Transport::Tcp, usize::from(off) * 4)
        }
        _ => return Err(SipError::NotUdpOrTcp),
    };
    if hdr < 8 || (transport == Transport::Tcp && hdr < 20) {
        return Err(SipError::BadPacket);
    }
    if l4.len() < hdr {
        return Err(SipError::Truncated);
    }
    let (seq, flags) = match transport {
        Transport::Udp => (0, 0),
        Transport::Tcp => (
            u32::from_be_bytes([l4[4], l4[5], l4[6], l4[7]]),
            *l4.get(13).ok_or(SipError::Truncated)?,
        ),
    };
    Ok(Peeled {
        src,
        dst,
        sport: be16(l4, 0)?,
        dport: be16(l4, 2)?,
        transport,
        seq,
        flags,
        payload: &l4[hdr..],
    })
}
