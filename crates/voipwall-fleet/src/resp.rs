//! Redis's protocol (RESP2), as much as the fleet needs: commands out as
//! arrays of bulk strings, replies in (simple strings, errors, integers,
//! bulk strings, arrays, nulls), and a connection over TCP or TLS that
//! authenticates with an ACL user. The codec is pure (`encode`, `decode`:
//! bytes in, values out, never a panic), property-tested and fuzzed; the
//! connection is the only I/O.
//!
//! Written here rather than taken from the `redis` crate: five commands,
//! RESP2 only, and the crate's 150 dependencies with tokio, streams and TLS
//! (STACK.md) for them. Sentinel is not spoken (see issue 22's note).

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

/// A reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`.
    Simple(String),
    /// `-ERR ...`, `-NOPERM ...`.
    Error(String),
    /// `:1`.
    Int(i64),
    /// `$n` (None: `$-1`).
    Bulk(Option<Vec<u8>>),
    /// `*n` (None: `*-1`).
    Array(Option<Vec<Self>>),
}

impl Reply {
    /// A bulk or simple string as text.
    pub fn text(&self) -> Option<String> {
        match self {
            Self::Simple(s) => Some(s.clone()),
            Self::Bulk(Some(b)) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        }
    }

    /// An array's items (a null array is empty).
    pub fn items(&self) -> &[Self] {
        match self {
            Self::Array(Some(v)) => v,
            _ => &[],
        }
    }
}

/// The largest bulk string or array accepted (a reply bigger than this is
/// a broken or hostile server).
const MAX_LEN: usize = 64 << 20;
/// The largest whole reply read (XREAD's 1,000 records are ~300 kB).
const MAX_REPLY: usize = 32 << 20;
/// How deep arrays may nest.
const MAX_DEPTH: usize = 8;

/// A command as RESP: an array of bulk strings.
pub fn encode(args: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + args.iter().map(|a| a.len() + 16).sum::<usize>());
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Reads one reply from the front of `buf`: `Ok(None)` when more bytes
/// are needed, `Ok(Some((reply, used)))`, or an error for bytes that are
/// not RESP.
pub fn decode(buf: &[u8]) -> Result<Option<(Reply, usize)>, String> {
    decode_at(buf, 0)
}

fn line(buf: &[u8]) -> Option<(&[u8], usize)> {
    let i = memchr_crlf(buf)?;
    Some((&buf[..i], i + 2))
}

fn memchr_crlf(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}

fn int(b: &[u8]) -> Result<i64, String> {
    std::str::from_utf8(b)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("`{}` is not a number", String::from_utf8_lossy(b)))
}

fn decode_at(buf: &[u8], depth: usize) -> Result<Option<(Reply, usize)>, String> {
    if depth > MAX_DEPTH {
        return Err("replies nested too deep".into());
    }
    let Some(&kind) = buf.first() else {
        return Ok(None);
    };
    let Some((head, used)) = line(&buf[1..]) else {
        if buf.len() > 1 << 16 {
            return Err("a reply line without its end".into());
        }
        return Ok(None);
    };
    let used = used + 1;
    let text = || String::from_utf8_lossy(head).into_owned();
    match kind {
        b'+' => Ok(Some((Reply::Simple(text()), used))),
        b'-' => Ok(Some((Reply::Error(text()), used))),
        b':' => Ok(Some((Reply::Int(int(head)?), used))),
        b'$' => {
            let n = int(head)?;
            if n < 0 {
                return Ok(Some((Reply::Bulk(None), used)));
            }
            let n = usize::try_from(n).map_err(|_| "a length out of range")?;
            if n > MAX_LEN {
                return Err(format!("a {n}-byte string: refused"));
            }
            if buf.len() < used + n + 2 {
                return Ok(None);
            }
            if &buf[used + n..used + n + 2] != b"\r\n" {
                return Err("a string without its end".into());
            }
            Ok(Some((
                Reply::Bulk(Some(buf[used..used + n].to_vec())),
                used + n + 2,
            )))
        }
        b'*' => {
            let n = int(head)?;
            if n < 0 {
                return Ok(Some((Reply::Array(None), used)));
            }
            let n = usize::try_from(n).map_err(|_| "a length out of range")?;
            if n > MAX_LEN / 4 {
                return Err(format!("a {n}-item array: refused"));
            }
            let mut items = Vec::with_capacity(n.min(1024));
            let mut at = used;
            for _ in 0..n {
                match decode_at(&buf[at..], depth + 1)? {
                    Some((r, u)) => {
                        items.push(r);
                        at += u;
                    }
                    None => return Ok(None),
                }
            }
            Ok(Some((Reply::Array(Some(items)), at)))
        }
        k => Err(format!("`{}` does not start a reply", char::from(k))),
    }
}

/// A byte stream Redis speaks on (TCP or TLS).
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// One connection, authenticated.
pub struct Conn {
    io: Box<dyn Io>,
    buf: Vec<u8>,
}

/// Where Redis is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addr {
    /// `rediss://`.
    pub tls: bool,
    /// Host name or address.
    pub host: String,
    /// Port (default 6379).
    pub port: u16,
}

/// `redis://HOST[:PORT]` or `rediss://...`.
pub fn parse_addr(url: &str) -> Result<Addr, String> {
    let (tls, rest) = if let Some(r) = url.strip_prefix("rediss://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("redis://") {
        (false, r)
    } else {
        return Err(format!("`{url}` is not a redis:// or rediss:// address"));
    };
    let rest = rest.trim_end_matches('/');
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (h, after) = v6.split_once(']').ok_or("an unclosed `[`")?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| "a bad port")?,
            None => 6379,
        };
        (h.to_string(), port)
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p.parse().map_err(|_| "a bad port")?),
            None => (rest.to_string(), 6379),
        }
    };
    if host.is_empty() {
        return Err(format!("`{url}` has no host"));
    }
    Ok(Addr { tls, host, port })
}

impl Conn {
    /// Connects and authenticates (`AUTH user password`).
    pub async fn open(
        addr: &Addr,
        user: &str,
        password: &str,
        wait: Duration,
    ) -> Result<Self, String> {
        let target = format!("{}:{}", addr.host, addr.port);
        let tcp = tokio::time::timeout(
            wait,
            tokio::net::TcpStream::connect((addr.host.as_str(), addr.port)),
        )
        .await
        .map_err(|_| {
            format!(
                "cannot connect to {target}: no answer in {} s",
                wait.as_secs()
            )
        })?
        .map_err(|e| format!("cannot connect to {target}: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let io: Box<dyn Io> = if addr.tls {
            let name = rustls_pki_types::ServerName::try_from(addr.host.clone())
                .map_err(|e| format!("`{}`: {e}", addr.host))?;
            let tls = tokio::time::timeout(
                wait,
                tokio_rustls::TlsConnector::from(crate::http::tls_config()).connect(name, tcp),
            )
            .await
            .map_err(|_| format!("TLS with {target}: no answer in {} s", wait.as_secs()))?
            .map_err(|e| format!("TLS with {target}: {e}"))?;
            Box::new(tls)
        } else {
            Box::new(tcp)
        };
        let mut c = Self {
            io,
            buf: Vec::with_capacity(64 * 1024),
        };
        match c
            .call(&[b"AUTH", user.as_bytes(), password.as_bytes()], wait)
            .await?
        {
            Reply::Simple(_) => Ok(c),
            Reply::Error(e) => Err(format!("Redis refused user {user}: {e}")),
            r => Err(format!("Redis answered AUTH with {r:?}")),
        }
    }

    /// Sends one command and reads its reply within `wait`.
    pub async fn call(&mut self, args: &[&[u8]], wait: Duration) -> Result<Reply, String> {
        tokio::time::timeout(wait, self.exchange(args))
            .await
            .map_err(|_| format!("Redis did not answer within {} s", wait.as_secs()))?
    }

    async fn exchange(&mut self, args: &[&[u8]]) -> Result<Reply, String> {
        self.io
            .write_all(&encode(args))
            .await
            .map_err(|e| format!("writing to Redis: {e}"))?;
        loop {
            if let Some((r, used)) = decode(&self.buf)? {
                self.buf.drain(..used);
                return Ok(r);
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = self
                .io
                .read(&mut chunk)
                .await
                .map_err(|e| format!("reading from Redis: {e}"))?;
            if n == 0 {
                return Err("Redis closed the connection".into());
            }
            if self.buf.len() + n > MAX_REPLY {
                return Err(format!("a reply larger than {MAX_REPLY} bytes: refused"));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn replies_decode_and_commands_encode() {
        assert_eq!(
            encode(&[b"XADD", b"k", b"*", b"f", b""]),
            b"*5\r\n$4\r\nXADD\r\n$1\r\nk\r\n$1\r\n*\r\n$1\r\nf\r\n$0\r\n\r\n"
        );
        let r = b"*2\r\n*2\r\n$11\r\nvoipwall:b1\r\n*1\r\n*2\r\n$3\r\n1-0\r\n*2\r\n$1\r\na\r\n$1\r\nb\r\n:7\r\n";
        let (v, used) = decode(r).unwrap().unwrap();
        assert_eq!(used, r.len());
        assert_eq!(
            v.items()[0].items()[0].text().as_deref(),
            Some("voipwall:b1")
        );
        assert_eq!(v.items()[1], Reply::Int(7));
        assert_eq!(
            decode(b"+OK\r\n").unwrap().unwrap().0,
            Reply::Simple("OK".into())
        );
        assert_eq!(
            decode(b"-NOPERM no\r\n").unwrap().unwrap().0,
            Reply::Error("NOPERM no".into())
        );
        assert_eq!(decode(b"$-1\r\n").unwrap().unwrap().0, Reply::Bulk(None));
        assert_eq!(decode(b"*-1\r\n").unwrap().unwrap().0, Reply::Array(None));
        // Incomplete: more bytes needed.
        for cut in 0..r.len() {
            assert_eq!(decode(&r[..cut]).unwrap(), None, "{cut}");
        }
        for bad in [
            &b"?x\r\n"[..],
            b"$abc\r\n",
            b"$3\r\nabcX\r\n",
            b"$999999999999\r\n",
        ] {
            assert!(decode(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn addresses() {
        assert_eq!(
            parse_addr("redis://192.0.2.10:6380").unwrap(),
            Addr {
                tls: false,
                host: "192.0.2.10".into(),
                port: 6380
            }
        );
        let a = parse_addr("rediss://[2001:db8::1]").unwrap();
        assert!(a.tls && a.host == "2001:db8::1" && a.port == 6379);
        assert!(parse_addr("http://x").is_err());
        assert!(parse_addr("redis://:1").is_err());
    }

    fn reply() -> impl Strategy<Value = Reply> {
        let leaf = prop_oneof![
            "[a-zA-Z0-9 ]{0,20}".prop_map(Reply::Simple),
            "[a-zA-Z0-9 ]{0,20}".prop_map(Reply::Error),
            any::<i64>().prop_map(Reply::Int),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40))
                .prop_map(Reply::Bulk),
        ];
        leaf.prop_recursive(3, 32, 6, |inner| {
            proptest::option::of(proptest::collection::vec(inner, 0..6)).prop_map(Reply::Array)
        })
    }

    fn write(r: &Reply, out: &mut Vec<u8>) {
        match r {
            Reply::Simple(s) => out.extend_from_slice(format!("+{s}\r\n").as_bytes()),
            Reply::Error(s) => out.extend_from_slice(format!("-{s}\r\n").as_bytes()),
            Reply::Int(n) => out.extend_from_slice(format!(":{n}\r\n").as_bytes()),
            Reply::Bulk(None) => out.extend_from_slice(b"$-1\r\n"),
            Reply::Bulk(Some(b)) => {
                out.extend_from_slice(format!("${}\r\n", b.len()).as_bytes());
                out.extend_from_slice(b);
                out.extend_from_slice(b"\r\n");
            }
            Reply::Array(None) => out.extend_from_slice(b"*-1\r\n"),
            Reply::Array(Some(v)) => {
                out.extend_from_slice(format!("*{}\r\n", v.len()).as_bytes());
                for x in v {
                    write(x, out);
                }
            }
        }
    }

    proptest! {
        #[test]
        fn any_reply_round_trips_whole_and_waits_when_cut(r in reply(), junk in proptest::collection::vec(any::<u8>(), 0..8)) {
            let mut bytes = Vec::new();
            write(&r, &mut bytes);
            let whole = bytes.len();
            bytes.extend_from_slice(&junk);
            let (got, used) = decode(&bytes).unwrap().unwrap();
            prop_assert_eq!(got, r);
            prop_assert_eq!(used, whole);
            prop_assert_eq!(decode(&bytes[..whole - 1]).unwrap(), None);
        }

        #[test]
        fn any_bytes_decode_without_panic(b in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(&b);
        }
    }
}
