//! The fleet's one HTTP client (feeds now; CrowdSec's Local API next):
//! HTTP/1.1 through hyper on the fleet thread's runtime, TLS through rustls
//! (ring) with the system's roots, one connection per request, the body
//! bounded and every step under a deadline, so a server that never
//! answers or sends gigabytes costs a timeout, not the daemon.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::rt::TokioIo;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The URL cannot be used.
    #[error("{0}")]
    Url(String),
    /// No connection.
    #[error("cannot connect to {0}: {1}")]
    Connect(String, String),
    /// A deadline passed.
    #[error("{0} took longer than {1} s")]
    Timeout(&'static str, u64),
    /// The body is larger than allowed.
    #[error("the answer is larger than {0} bytes: refused")]
    TooBig(u64),
    /// TLS or HTTP went wrong.
    #[error("{0}")]
    Protocol(String),
}

/// Bounds of one request.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The largest body read.
    pub max_body: u64,
    /// Resolving and connecting (TLS included).
    pub connect: Duration,
    /// The whole exchange.
    pub total: Duration,
}

/// One request.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// `GET`, `POST`, `DELETE`…
    pub method: &'a str,
    /// `http://` or `https://` URL.
    pub url: &'a str,
    /// Extra headers.
    pub headers: Vec<(&'static str, String)>,
    /// The body (sent with a Content-Length).
    pub body: Option<Vec<u8>>,
}

/// The answer.
#[derive(Debug, Clone)]
pub struct Response {
    /// HTTP status.
    pub status: u16,
    /// The body, whole.
    pub body: Vec<u8>,
}

/// A URL taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    /// `https`.
    pub tls: bool,
    /// Host name or address (IPv6 without brackets).
    pub host: String,
    /// Port.
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

/// Takes an `http://` or `https://` URL apart.
pub fn parse_url(url: &str) -> Result<Url, HttpError> {
    let bad = |why: &str| HttpError::Url(format!("`{}` {why}", url.escape_debug()));
    if url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(bad("has spaces or control characters"));
    }
    let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else {
        return Err(bad("is not an http:// or https:// URL"));
    };
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) if rest[i..].starts_with('/') => (&rest[..i], rest[i..].to_string()),
        Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
        None => (rest, "/".to_string()),
    };
    if authority.contains('@') {
        return Err(bad("carries credentials: give them in a file"));
    }
    let default = if tls { 443 } else { 80 };
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or_else(|| bad("has an unclosed `[`"))?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| bad("has a bad port"))?,
            None if after.is_empty() => default,
            None => return Err(bad("has text after `]`")),
        };
        (h.to_string(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p.parse().map_err(|_| bad("has a bad port"))?),
            None => (authority.to_string(), default),
        }
    };
    if host.is_empty() {
        return Err(bad("has no host"));
    }
    Ok(Url {
        tls,
        host,
        port,
        path,
    })
}

/// The fleet's TLS client configuration: the system's roots, ring.
pub(crate) fn tls_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let mut roots = rustls::RootCertStore::empty();
            let found = rustls_native_certs::load_native_certs();
            for c in found.certs {
                let _ = roots.add(c);
            }
            // ring, the project's one TLS stack (see voipwall-api).
            #[allow(deprecated)]
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            Arc::new(
                rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .expect("ring supports TLS 1.2 and 1.3")
                    .with_root_certificates(roots)
                    .with_no_client_auth(),
            )
        })
        .clone()
}

/// Sends one request and reads the whole answer, within `limits`.
pub async fn fetch(req: &Request<'_>, limits: &Limits) -> Result<Response, HttpError> {
    let url = parse_url(req.url)?;
    let secs = limits.total.as_secs();
    tokio::time::timeout(limits.total, exchange(req, &url, limits))
        .await
        .map_err(|_| HttpError::Timeout("the request", secs))?
}

async fn exchange(req: &Request<'_>, url: &Url, limits: &Limits) -> Result<Response, HttpError> {
    let target = format!("{}:{}", url.host, url.port);
    let connect = async {
        let addrs: Vec<std::net::SocketAddr> =
            tokio::net::lookup_host((url.host.as_str(), url.port))
                .await
                .map_err(|e| HttpError::Connect(target.clone(), e.to_string()))?
                .collect();
        let mut last = String::from("no address");
        for a in addrs {
            match tokio::net::TcpStream::connect(a).await {
                Ok(s) => return Ok(s),
                Err(e) => last = e.to_string(),
            }
        }
        Err(HttpError::Connect(target.clone(), last))
    };
    let secs = limits.connect.as_secs();
    let tcp = tokio::time::timeout(limits.connect, connect)
        .await
        .map_err(|_| HttpError::Timeout("connecting", secs))??;
    let _ = tcp.set_nodelay(true);
    if url.tls {
        let name = rustls_pki_types::ServerName::try_from(url.host.clone())
            .map_err(|e| HttpError::Url(format!("`{}`: {e}", url.host)))?;
        let tls = tokio::time::timeout(
            limits.connect,
            tokio_rustls::TlsConnector::from(tls_config()).connect(name, tcp),
        )
        .await
        .map_err(|_| HttpError::Timeout("the TLS handshake", secs))?
        .map_err(|e| HttpError::Connect(target.clone(), format!("TLS: {e}")))?;
        send(TokioIo::new(tls), req, url, limits).await
    } else {
        send(TokioIo::new(tcp), req, url, limits).await
    }
}

async fn send<I>(
    io: I,
    req: &Request<'_>,
    url: &Url,
    limits: &Limits,
) -> Result<Response, HttpError>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let proto = |e: hyper::Error| HttpError::Protocol(format!("HTTP: {e}"));
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(proto)?;
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let default_port = if url.tls { 443 } else { 80 };
    let host = match (url.host.contains(':'), url.port == default_port) {
        (true, true) => format!("[{}]", url.host),
        (true, false) => format!("[{}]:{}", url.host, url.port),
        (false, true) => url.host.clone(),
        (false, false) => format!("{}:{}", url.host, url.port),
    };
    let mut b = hyper::Request::builder()
        .method(req.method)
        .uri(url.path.as_str())
        .header("host", host)
        .header(
            "user-agent",
            concat!("voipwall/", env!("CARGO_PKG_VERSION")),
        )
        .header("connection", "close");
    for (k, v) in &req.headers {
        b = b.header(*k, v.as_str());
    }
    let body = Full::new(Bytes::from(req.body.clone().unwrap_or_default()));
    let request = b
        .body(body)
        .map_err(|e| HttpError::Protocol(format!("building the request: {e}")))?;
    let resp = sender.send_request(request).await.map_err(proto)?;
    let status = resp.status().as_u16();
    let declared = resp
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_body) {
        driver.abort();
        return Err(HttpError::TooBig(limits.max_body));
    }
    let max = usize::try_from(limits.max_body).unwrap_or(usize::MAX);
    let body = Limited::new(resp.into_body(), max)
        .collect()
        .await
        .map_err(|e| {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                HttpError::TooBig(limits.max_body)
            } else {
                HttpError::Protocol(format!("reading the answer: {e}"))
            }
        })?
        .to_bytes()
        .to_vec();
    driver.abort();
    Ok(Response { status, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_scheme_host_port_and_path() {
        let u = parse_url("https://apiban.org/api/get").unwrap();
        assert_eq!(
            (u.tls, u.host.as_str(), u.port, u.path.as_str()),
            (true, "apiban.org", 443, "/api/get")
        );
        let u = parse_url("http://[2001:db8::1]:8080?x=1").unwrap();
        assert_eq!(
            (u.tls, u.host.as_str(), u.port, u.path.as_str()),
            (false, "2001:db8::1", 8080, "/?x=1")
        );
        let u = parse_url("http://198.51.100.1:81").unwrap();
        assert_eq!((u.port, u.path.as_str()), (81, "/"));
        for bad in [
            "ftp://x/",
            "http://",
            "http://a b/",
            "http://u:p@host/",
            "http://[::1/",
            "http://host:99999/",
            "http://host/\r\nX: 1",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }
}
