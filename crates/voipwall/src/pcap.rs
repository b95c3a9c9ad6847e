//! Packet captures (classic pcap and pcapng, as tcpdump and tshark write
//! them) to IP packets with their times. Pure over bytes; malformed input is
//! an error, never a panic.

/// One captured packet, starting at its IP header.
pub(crate) struct Captured<'a> {
    /// Capture time, ms since the epoch.
    pub(crate) at_ms: u64,
    /// The IP packet.
    pub(crate) ip: &'a [u8],
}

/// Link types whose payload we can reach the IP header of.
fn ip_offset(linktype: u32, frame: &[u8]) -> Option<usize> {
    match linktype {
        // Ethernet, with up to two VLAN tags.
        1 => {
            let mut off = 12;
            for _ in 0..3 {
                let et = u16::from_be_bytes([*frame.get(off)?, *frame.get(off + 1)?]);
                match et {
                    0x8100 | 0x88a8 => off += 4,
                    0x0800 | 0x86dd => return Some(off + 2),
                    _ => return None,
                }
            }
            None
        }
        // Raw IP.
        101 | 228 | 229 | 12 | 14 => Some(0),
        // Linux cooked v1 and v2.
        113 => Some(16),
        276 => Some(20),
        // Loopback (BSD null).
        0 => Some(4),
        _ => None,
    }
}

/// Reads every packet of a capture. Returns the packets and how many
/// frames had a link type or shape we could not read.
pub(crate) fn packets(data: &[u8]) -> Result<(Vec<Captured<'_>>, u64), String> {
    let magic = data.get(..4).ok_or("file shorter than a capture header")?;
    match magic {
        [0xd4, 0xc3, 0xb2, 0xa1]
        | [0xa1, 0xb2, 0xc3, 0xd4]
        | [0x4d, 0x3c, 0xb2, 0xa1]
        | [0xa1, 0xb2, 0x3c, 0x4d] => classic(data),
        [0x0a, 0x0d, 0x0d, 0x0a] => pcapng(data),
        _ => Err("not a pcap or pcapng file (unknown magic number)".into()),
    }
}

fn rd32(b: &[u8], at: usize, le: bool) -> Option<u32> {
    let s: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
    Some(if le {
        u32::from_le_bytes(s)
    } else {
        u32::from_be_bytes(s)
    })
}

fn classic(data: &[u8]) -> Result<(Vec<Captured<'_>>, u64), String> {
    let le = data[0] == 0xd4 || data[0] == 0x4d;
    let nanos = data[0] == 0x4d || data[3] == 0x4d;
    let linktype = rd32(data, 20, le).ok_or("truncated pcap header")? & 0x0fff_ffff;
    let mut out = Vec::new();
    let mut skipped = 0;
    let mut pos = 24;
    while pos + 16 <= data.len() {
        let (Some(sec), Some(frac), Some(incl)) = (
            rd32(data, pos, le),
            rd32(data, pos + 4, le),
            rd32(data, pos + 8, le),
        ) else {
            break;
        };
        let start = pos + 16;
        let end = start
            .checked_add(incl as usize)
            .filter(|&e| e <= data.len())
            .ok_or("truncated packet record")?;
        let frame = &data[start..end];
        let ms = u64::from(sec) * 1000
            + if nanos {
                u64::from(frac) / 1_000_000
            } else {
                u64::from(frac) / 1000
            };
        match ip_offset(linktype, frame).and_then(|o| frame.get(o..)) {
            Some(ip) => out.push(Captured { at_ms: ms, ip }),
            None => skipped += 1,
        }
        pos = end;
    }
    Ok((out, skipped))
}

fn pcapng(data: &[u8]) -> Result<(Vec<Captured<'_>>, u64), String> {
    let le = match data.get(8..12) {
        Some([0x4d, 0x3c, 0x2b, 0x1a]) => true,
        Some([0x1a, 0x2b, 0x3c, 0x4d]) => false,
        _ => return Err("pcapng: bad byte-order magic".into()),
    };
    let mut links: Vec<(u32, u64)> = Vec::new(); // (linktype, ticks per second)
    let mut out = Vec::new();
    let mut skipped = 0;
    let mut pos = 0;
    while pos + 12 <= data.len() {
        let kind = rd32(data, pos, le).ok_or("truncated block")?;
        let len = rd32(data, pos + 4, le).ok_or("truncated block")? as usize;
        if len < 12 || pos + len > data.len() {
            return Err(format!("pcapng: bad block length {len} at byte {pos}"));
        }
        let body = &data[pos + 8..pos + len - 4];
        match kind {
            // Interface description: linktype, options (if_tsresol).
            1 => {
                let lt = u32::from(u16::from_le_bytes([
                    body.first().copied().unwrap_or(0),
                    body.get(1).copied().unwrap_or(0),
                ]));
                let lt = if le {
                    lt
                } else {
                    u32::from(u16::from_be_bytes([body[0], body[1]]))
                };
                let mut tps = 1_000_000u64;
                let mut o = 8;
                while o + 4 <= body.len() {
                    let code = u16::from_le_bytes([body[o], body[o + 1]]);
                    let olen = usize::from(u16::from_le_bytes([body[o + 2], body[o + 3]]));
                    let (code, olen) = if le {
                        (code, olen)
                    } else {
                        (
                            u16::from_be_bytes([body[o], body[o + 1]]),
                            usize::from(u16::from_be_bytes([body[o + 2], body[o + 3]])),
                        )
                    };
                    if code == 0 {
                        break;
                    }
                    if code == 9 && olen == 1 {
                        let v = body.get(o + 4).copied().unwrap_or(6);
                        tps = if v & 0x80 == 0 {
                            10u64.checked_pow(u32::from(v)).unwrap_or(1_000_000)
                        } else {
                            1u64.checked_shl(u32::from(v & 0x7f)).unwrap_or(1_000_000)
                        };
                    }
                    o += 4 + olen.div_ceil(4) * 4;
                }
                links.push((lt, tps.max(1)));
            }
            // Enhanced packet.
            6 => {
                let (Some(ifid), Some(hi), Some(lo), Some(caplen)) = (
                    rd32(body, 0, le),
                    rd32(body, 4, le),
                    rd32(body, 8, le),
                    rd32(body, 12, le),
                ) else {
                    return Err("pcapng: truncated packet block".into());
                };
                let frame = body
                    .get(20..20 + caplen as usize)
                    .ok_or("pcapng: truncated packet data")?;
                let Some(&(lt, tps)) = links.get(ifid as usize) else {
                    skipped += 1;
                    pos += len;
                    continue;
                };
                let ticks = (u64::from(hi) << 32) | u64::from(lo);
                let ms =
                    u64::try_from(u128::from(ticks) * 1000 / u128::from(tps)).unwrap_or(u64::MAX);
                match ip_offset(lt, frame).and_then(|o| frame.get(o..)) {
                    Some(ip) => out.push(Captured { at_ms: ms, ip }),
                    None => skipped += 1,
                }
            }
            _ => {}
        }
        pos += len;
    }
    Ok((out, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classic_raw_ip_and_garbage() {
        let mut f = vec![
            0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 101, 0,
            0, 0,
        ];
        let pkt = [0x45u8, 0, 0, 20];
        f.extend_from_slice(&10u32.to_le_bytes());
        f.extend_from_slice(&500_000u32.to_le_bytes());
        f.extend_from_slice(&4u32.to_le_bytes());
        f.extend_from_slice(&4u32.to_le_bytes());
        f.extend_from_slice(&pkt);
        let (p, skipped) = packets(&f).unwrap();
        assert_eq!(
            (p.len(), skipped, p[0].at_ms, p[0].ip),
            (1, 0, 10_500, &pkt[..])
        );
        assert!(packets(b"nope").is_err());
        f.truncate(f.len() - 1);
        assert!(packets(&f).is_err());
    }
}
