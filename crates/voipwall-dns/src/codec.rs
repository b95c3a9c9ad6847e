//! DNS messages (RFC 1035, SRV from RFC 2782, AAAA from RFC 3596): one
//! question out, the answer section back with TTLs. Only what trunk
//! re-resolution needs; anything else in an answer is skipped. Parsing is
//! bounds-checked and loop-safe (compression pointers must point backwards).

use std::net::{Ipv4Addr, Ipv6Addr};

/// Record types voipwall asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QType {
    /// IPv4 address.
    A = 1,
    /// Canonical name (only read from answers).
    Cname = 5,
    /// IPv6 address.
    Aaaa = 28,
    /// Service location.
    Srv = 33,
}

/// The data of one answer record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rdata {
    /// A.
    A(Ipv4Addr),
    /// AAAA.
    Aaaa(Ipv6Addr),
    /// CNAME target.
    Cname(String),
    /// SRV.
    Srv {
        /// Priority.
        priority: u16,
        /// Weight.
        weight: u16,
        /// Port.
        port: u16,
        /// Target host.
        target: String,
    },
    /// A type voipwall does not read.
    Other(u16),
}

/// One answer record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Owner name, lower case, no trailing dot.
    pub name: String,
    /// Seconds it may be cached.
    pub ttl: u32,
    /// Data.
    pub data: Rdata,
}

/// A parsed response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Transaction id.
    pub id: u16,
    /// Response code: 0 no error, 2 server failure, 3 name does not exist.
    pub rcode: u8,
    /// TC: the answer did not fit (the client asks again over TCP).
    pub truncated: bool,
    /// Answer records.
    pub answers: Vec<Record>,
}

/// Why a message was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsError {
    /// Shorter than its own structure says.
    Truncated,
    /// A name with a forward or looping pointer, a label over 63 bytes or a
    /// name over 255 bytes.
    BadName,
    /// Not a response (QR bit clear).
    NotResponse,
    /// The name to ask for is not a valid DNS name.
    BadQuery,
}

impl std::fmt::Display for DnsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Truncated => "truncated DNS message",
            Self::BadName => "malformed name in DNS message",
            Self::NotResponse => "not a DNS response",
            Self::BadQuery => "not a valid DNS name",
        })
    }
}

impl std::error::Error for DnsError {}

/// The UDP payload size advertised with EDNS0 (RFC 6891): the DNS flag
/// day's 1232 bytes, which fits any path's MTU without fragments.
pub const EDNS_UDP_SIZE: u16 = 1232;

/// A query for `name` (recursion desired), with an EDNS0 OPT record so
/// SRV answers larger than 512 bytes come back whole over UDP.
pub fn encode_query(id: u16, name: &str, qtype: QType) -> Result<Vec<u8>, DnsError> {
    let mut m = Vec::with_capacity(name.len() + 29);
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&[0x01, 0x00]); // RD
    m.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 1]); // 1 question, 1 additional (OPT)
    let name = name.trim_end_matches('.');
    if name.is_empty() || name.len() > 253 {
        return Err(DnsError::BadQuery);
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(DnsError::BadQuery);
        }
        m.push(u8::try_from(label.len()).map_err(|_| DnsError::BadQuery)?);
        m.extend_from_slice(label.as_bytes());
    }
    m.push(0);
    m.extend_from_slice(&(qtype as u16).to_be_bytes());
    m.extend_from_slice(&[0, 1]); // class IN
    // OPT: root name, type 41, class = UDP size, TTL 0 (no DO), no options.
    m.push(0);
    m.extend_from_slice(&41u16.to_be_bytes());
    m.extend_from_slice(&EDNS_UDP_SIZE.to_be_bytes());
    m.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    Ok(m)
}

fn u16_at(b: &[u8], i: usize) -> Result<u16, DnsError> {
    b.get(i..i + 2)
        .map(|s| u16::from_be_bytes([s[0], s[1]]))
        .ok_or(DnsError::Truncated)
}

fn u32_at(b: &[u8], i: usize) -> Result<u32, DnsError> {
    b.get(i..i + 4)
        .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or(DnsError::Truncated)
}

/// Reads a (possibly compressed) name at `i`; returns it and the offset
/// after it in the original position.
fn read_name(b: &[u8], mut i: usize) -> Result<(String, usize), DnsError> {
    let mut out = String::new();
    let mut end = None;
    let mut jumps = 0;
    loop {
        let len = *b.get(i).ok_or(DnsError::Truncated)?;
        match len & 0xc0 {
            0x00 => {
                if len == 0 {
                    i += 1;
                    break;
                }
                let l = usize::from(len);
                let label = b.get(i + 1..i + 1 + l).ok_or(DnsError::Truncated)?;
                if !out.is_empty() {
                    out.push('.');
                }
                out.extend(label.iter().map(|c| char::from(c.to_ascii_lowercase())));
                if out.len() > 255 {
                    return Err(DnsError::BadName);
                }
                i += 1 + l;
            }
            0xc0 => {
                let target = usize::from(u16_at(b, i)? & 0x3fff);
                // Pointers go backwards only: no loops.
                if target >= i || jumps > 64 {
                    return Err(DnsError::BadName);
                }
                jumps += 1;
                end.get_or_insert(i + 2);
                i = target;
            }
            _ => return Err(DnsError::BadName),
        }
    }
    Ok((out, end.unwrap_or(i)))
}

/// Parses a response.
pub fn parse_response(b: &[u8]) -> Result<Response, DnsError> {
    let id = u16_at(b, 0)?;
    let flags = u16_at(b, 2)?;
    if flags & 0x8000 == 0 {
        return Err(DnsError::NotResponse);
    }
    let qd = u16_at(b, 4)?;
    let an = u16_at(b, 6)?;
    let mut i = 12;
    for _ in 0..qd {
        let (_, next) = read_name(b, i)?;
        i = next + 4;
    }
    let mut answers = Vec::new();
    for _ in 0..an {
        let (name, next) = read_name(b, i)?;
        let ty = u16_at(b, next)?;
        let ttl = u32_at(b, next + 4)?;
        let len = usize::from(u16_at(b, next + 8)?);
        let start = next + 10;
        let rd = b.get(start..start + len).ok_or(DnsError::Truncated)?;
        let data = match ty {
            1 if len == 4 => Rdata::A(Ipv4Addr::new(rd[0], rd[1], rd[2], rd[3])),
            28 if len == 16 => {
                let mut a = [0u8; 16];
                a.copy_from_slice(rd);
                Rdata::Aaaa(Ipv6Addr::from(a))
            }
            5 => Rdata::Cname(read_name(b, start)?.0),
            33 if len >= 7 => Rdata::Srv {
                priority: u16_at(b, start)?,
                weight: u16_at(b, start + 2)?,
                port: u16_at(b, start + 4)?,
                target: read_name(b, start + 6)?.0,
            },
            other => Rdata::Other(other),
        };
        // TTLs above 2^31 - 1 are treated as zero (RFC 2181 8).
        let ttl = if ttl > i32::MAX as u32 { 0 } else { ttl };
        answers.push(Record { name, ttl, data });
        i = start + len;
    }
    Ok(Response {
        id,
        rcode: (flags & 0x000f) as u8,
        truncated: flags & 0x0200 != 0,
        answers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A response to `q` with the given answer records (name compressed
    /// to the question).
    pub(crate) fn respond(q: &[u8], rcode: u8, answers: &[(u16, u32, Vec<u8>)]) -> Vec<u8> {
        // The question without the query's OPT record (answers come before
        // the additional section).
        let mut m = q[..q.len() - OPT_LEN].to_vec();
        m[10..12].copy_from_slice(&[0, 0]);
        m[2] = 0x81;
        m[3] = 0x80 | rcode;
        m[6..8].copy_from_slice(&u16::try_from(answers.len()).unwrap().to_be_bytes());
        for (ty, ttl, rd) in answers {
            m.extend_from_slice(&[0xc0, 12]);
            m.extend_from_slice(&ty.to_be_bytes());
            m.extend_from_slice(&[0, 1]);
            m.extend_from_slice(&ttl.to_be_bytes());
            m.extend_from_slice(&u16::try_from(rd.len()).unwrap().to_be_bytes());
            m.extend_from_slice(rd);
        }
        m
    }

    #[test]
    fn round_trip_a_aaaa_srv_cname() {
        let q = encode_query(7, "Trunk.Example.NET.", QType::A).unwrap();
        let mut srv = vec![0, 10, 0, 5, 0x13, 0xc4];
        srv.extend_from_slice(&[0xc0, 12]); // target = the question name
        let r = respond(
            &q,
            0,
            &[
                (1, 60, vec![203, 0, 113, 7]),
                (
                    28,
                    30,
                    "2001:db8::7".parse::<Ipv6Addr>().unwrap().octets().to_vec(),
                ),
                (33, 300, srv),
                (5, 10, vec![0xc0, 12]),
                (16, 5, b"\x03txt".to_vec()),
            ],
        );
        let p = parse_response(&r).unwrap();
        assert_eq!(p.id, 7);
        assert_eq!(p.rcode, 0);
        assert_eq!(p.answers.len(), 5);
        assert_eq!(p.answers[0].name, "trunk.example.net");
        assert_eq!(p.answers[0].data, Rdata::A(Ipv4Addr::new(203, 0, 113, 7)));
        assert_eq!(p.answers[1].ttl, 30);
        assert_eq!(
            p.answers[2].data,
            Rdata::Srv {
                priority: 10,
                weight: 5,
                port: 5060,
                target: "trunk.example.net".into()
            }
        );
        assert_eq!(p.answers[3].data, Rdata::Cname("trunk.example.net".into()));
        assert_eq!(p.answers[4].data, Rdata::Other(16));
    }

    const OPT_LEN: usize = 11;

    #[test]
    fn queries_carry_an_edns0_opt_record() {
        let q = encode_query(9, "a.example", QType::Srv).unwrap();
        assert_eq!(&q[10..12], &[0, 1], "one additional record");
        let opt = &q[q.len() - OPT_LEN..];
        assert_eq!(opt[..3], [0, 0, 41]);
        assert_eq!(u16::from_be_bytes([opt[3], opt[4]]), EDNS_UDP_SIZE);
    }

    #[test]
    fn refuses_loops_and_short_messages() {
        let q = encode_query(1, "a.example", QType::A).unwrap();
        let mut r = respond(&q, 0, &[(1, 1, vec![1, 2, 3, 4])]);
        // Point the answer's name at itself.
        let at = q.len() - OPT_LEN;
        r[at] = 0xc0;
        r[at + 1] = u8::try_from(at).unwrap();
        assert_eq!(parse_response(&r), Err(DnsError::BadName));
        assert_eq!(parse_response(&r[..5]), Err(DnsError::Truncated));
        assert_eq!(parse_response(&q), Err(DnsError::NotResponse));
        assert_eq!(encode_query(1, "", QType::A), Err(DnsError::BadQuery));
        assert_eq!(encode_query(1, "a..b", QType::A), Err(DnsError::BadQuery));
    }
}
