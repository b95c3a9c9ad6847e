//! Notifications (`[[notify]]`): a webhook (JSON, signed with HMAC-SHA256)
//! or an e-mail (SMTP, lettre) when something needs a person — a ban storm,
//! detection wanting to ban a protected endpoint, an apply that failed or
//! was rolled back, safe mode, the daemon (re)starting.
//!
//! The notifier is a client of the engine's event stream, like `events
//! --follow` and the API's SSE: the engine only `try_send`s to it and drops
//! it if it falls behind (it follows again). Each entry has its own thread
//! and a bounded queue; sending retries with back-off, so a dead webhook
//! costs its own thread's sleep and nothing else.

use std::collections::VecDeque;
use std::io::{Read as _, Write as _};
use std::net::{TcpStream, ToSocketAddrs as _};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use serde_json::{Value, json};
use voipwall_core::daemon::control::{Answer, Request};
use voipwall_core::daemon::{ControlHandle, now_ms};
use voipwall_policy::{NotifySettings, NotifyTarget};

/// Notifications waiting per entry; beyond, the oldest is dropped.
const QUEUE: usize = 256;
/// Attempts per notification, with back-off 1, 2, 4, 8, 16 s between.
const ATTEMPTS: u32 = 6;
/// How long one attempt may take.
const TIMEOUT: Duration = Duration::from_secs(10);
/// How often the store is read for failed and rolled-back applies.
const APPLY_EVERY: Duration = Duration::from_secs(2);
/// At most one `protected` notification per entry in this long: alerts can
/// be provoked from outside (forged packets in a protected address's
/// name); the ones in between are counted in the next.
const PROTECTED_EVERY: Duration = Duration::from_secs(60);

/// One notification.
#[derive(Debug, Clone)]
struct Note {
    event: &'static str,
    summary: String,
    details: Value,
}

struct Sink {
    settings: NotifySettings,
    queue: Mutex<VecDeque<Note>>,
    ready: Condvar,
    /// Ban times (ms) in the last minute, for the storm.
    bans: Mutex<(VecDeque<u64>, bool)>,
    /// The last `protected` notification, and how many were held back
    /// since.
    protected: Mutex<(Option<std::time::Instant>, u64)>,
    /// The same for `shield` (forged failures can start shields).
    shield: Mutex<(Option<std::time::Instant>, u64)>,
}

impl Sink {
    fn wants(&self, event: &str) -> bool {
        self.settings.events.iter().any(|e| e == event)
    }

    fn push(&self, mut n: Note) {
        if !self.wants(n.event) {
            return;
        }
        if n.event == "protected" || n.event == "shield" {
            let limiter = if n.event == "shield" {
                &self.shield
            } else {
                &self.protected
            };
            let mut g = limiter.lock().unwrap_or_else(PoisonError::into_inner);
            let now = std::time::Instant::now();
            if g.0.is_some_and(|t| now.duration_since(t) < PROTECTED_EVERY) {
                g.1 += 1;
                return;
            }
            if g.1 > 0 {
                n.summary = format!(
                    "{} ({} more {} in the last minute)",
                    n.summary,
                    g.1,
                    if n.event == "shield" {
                        "shield notes"
                    } else {
                        "alerts"
                    }
                );
            }
            *g = (Some(now), 0);
        }
        let mut q = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        if q.len() >= QUEUE {
            q.pop_front();
            tracing::warn!("Notifications: queue full, the oldest was dropped.");
        }
        q.push_back(n);
        self.ready.notify_one();
    }

    /// A ban at `at_ms`: a storm starts when the last minute holds
    /// `ban_storm` bans, and is told once; it ends when the minute holds
    /// fewer than half.
    fn ban(&self, at_ms: u64) {
        let threshold = self.settings.ban_storm as usize;
        let started = {
            let mut g = self.bans.lock().unwrap_or_else(PoisonError::into_inner);
            let (times, storm) = &mut *g;
            times.push_back(at_ms);
            while times.front().is_some_and(|t| *t + 60_000 <= at_ms) {
                times.pop_front();
            }
            // Never more than the threshold kept: memory stays bounded.
            while times.len() > threshold {
                times.pop_front();
            }
            if *storm && times.len() < threshold.div_ceil(2) {
                *storm = false;
            }
            if !*storm && times.len() >= threshold {
                *storm = true;
                true
            } else {
                false
            }
        };
        if started {
            self.push(Note {
                event: "ban_storm",
                summary: format!(
                    "ban storm: {threshold} or more bans within a minute on {}",
                    hostname()
                ),
                details: json!({"bans_per_minute": threshold}),
            });
        }
    }
}

/// This host's name, read once (every notification says it).
fn hostname() -> &'static str {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "this host".into())
    })
}

/// Starts the notifier: one thread follows the engine's events, one reads
/// the store for applies, one per entry sends.
pub(crate) fn start(
    entries: &[NotifySettings],
    control: ControlHandle,
    state_dir: PathBuf,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let mut sinks = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let sender = match Sender::new(&e.target) {
            Ok(s) => s,
            Err(err) => {
                tracing::error!(entry = %e.origin, error = %format!("{err:#}"), "Notifications: this entry cannot send; it is off.");
                continue;
            }
        };
        let sink = Arc::new(Sink {
            settings: e.clone(),
            queue: Mutex::new(VecDeque::new()),
            ready: Condvar::new(),
            bans: Mutex::new((VecDeque::new(), false)),
            protected: Mutex::new((None, 0)),
            shield: Mutex::new((None, 0)),
        });
        let (s, stop) = (sink.clone(), stop.clone());
        std::thread::Builder::new()
            .name(format!("notify-{i}"))
            .spawn(move || send_loop(&s, &sender, &stop))?;
        sinks.push(sink);
    }
    if sinks.is_empty() {
        return Ok(());
    }
    let sinks: Arc<[Arc<Sink>]> = sinks.into();
    {
        let (sinks, stop) = (sinks.clone(), stop.clone());
        std::thread::Builder::new()
            .name("notify-events".into())
            .spawn(move || follow(&sinks, &control, &stop))?;
    }
    std::thread::Builder::new()
        .name("notify-applies".into())
        .spawn(move || applies(&sinks, &state_dir, &stop))?;
    Ok(())
}

fn to_all(sinks: &[Arc<Sink>], n: &Note) {
    for s in sinks {
        s.push(n.clone());
    }
}

/// Follows the engine's events (following again when dropped).
fn follow(sinks: &[Arc<Sink>], control: &ControlHandle, stop: &AtomicBool) {
    let mut first = true;
    while !stop.load(Ordering::Relaxed) {
        if first {
            // Safe mode at start: holding now, or held before the engine ran.
            match control.call(Request::Status, TIMEOUT) {
                Some(Answer::Holding(h)) => to_all(
                    sinks,
                    &Note {
                        event: "safe_mode",
                        summary: format!(
                            "safe mode on {}: the policy is held back for {} s more",
                            hostname(),
                            h.safe_mode.apply_in_s
                        ),
                        details: serde_json::to_value(&h).unwrap_or(Value::Null),
                    },
                ),
                Some(Answer::Status(s)) => {
                    if let Some(held) = s.safe_mode.held_at_start_s {
                        to_all(
                            sinks,
                            &Note {
                                event: "safe_mode",
                                summary: format!(
                                    "safe mode on {}: the policy was held back for {held} s at start (two boots close together)",
                                    hostname()
                                ),
                                details: json!({"held_at_start_s": held}),
                            },
                        );
                    }
                }
                _ => {}
            }
        }
        let req = Request::Events {
            follow: true,
            limit: Some(if first { 20 } else { 0 }),
        };
        let Some((Answer::Events(past), Some(rx))) = control.follow(req, TIMEOUT) else {
            std::thread::sleep(Duration::from_secs(1));
            continue;
        };
        // The daemon's own start event is among the last few at start.
        if first {
            for v in past.events.iter().filter(|v| v["kind"] == "start").take(1) {
                event(sinks, v);
            }
        }
        first = false;
        loop {
            match rx.recv_timeout(Duration::from_millis(500)) {
                Ok(v) => event(sinks, &v),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
    }
}

fn event(sinks: &[Arc<Sink>], v: &Value) {
    let kind = v["kind"].as_str().unwrap_or("");
    let text = |k: &str| v[k].as_str().unwrap_or("").to_string();
    match kind {
        "ban" => {
            let at = now_ms();
            for s in sinks {
                s.ban(at);
            }
        }
        "alert" => to_all(
            sinks,
            &Note {
                event: "protected",
                summary: format!(
                    "detection wanted to ban {} (protected: alert only): {}",
                    text("addr"),
                    text("detail")
                ),
                details: v.clone(),
            },
        ),
        "shield" | "shield-end" => to_all(
            sinks,
            &Note {
                event: "shield",
                summary: format!("{}: {}", hostname(), text("detail")),
                details: v.clone(),
            },
        ),
        "start" => to_all(
            sinks,
            &Note {
                event: "started",
                summary: format!("voipwall started on {}: {}", hostname(), text("detail")),
                details: v.clone(),
            },
        ),
        _ => {}
    }
}

/// Reads the generations: one that failed or was rolled back since the
/// last look is told (the CLI applies and the rollback timer run in other
/// processes; the store is where they meet).
fn applies(sinks: &[Arc<Sink>], state_dir: &std::path::Path, stop: &AtomicBool) {
    let mut seen: Option<std::collections::HashMap<i64, String>> = None;
    // Opened once (the daemon opened it before): the opener's recovery
    // (a damaged file is moved aside) must not run every two seconds.
    let store = match voipwall_store::Store::open_existing(&state_dir.join("state.db")) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "Notifications: the store cannot be read; failed and rolled-back applies are not told.");
            return;
        }
    };
    while !stop.load(Ordering::Relaxed) {
        if let Ok(gens) = store.generation_list(50) {
            let now: std::collections::HashMap<i64, String> =
                gens.iter().map(|g| (g.id, g.status.clone())).collect();
            if let Some(before) = &seen {
                for g in &gens {
                    let was = before.get(&g.id);
                    if was == Some(&g.status) {
                        continue;
                    }
                    let what = match g.status.as_str() {
                        "failed" => "failed: the kernel refused it; the previous ruleset stays",
                        "rolled-back" => "was rolled back",
                        _ => continue,
                    };
                    to_all(
                        sinks,
                        &Note {
                            event: "apply",
                            summary: format!("generation {} on {} {what}", g.id, hostname()),
                            details: json!({"generation": g.id, "status": g.status, "policy": g.policy}),
                        },
                    );
                }
            }
            seen = Some(now);
        }
        std::thread::sleep(APPLY_EVERY);
    }
}

fn send_loop(sink: &Sink, sender: &Sender, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        let note = {
            let q = sink.queue.lock().unwrap_or_else(PoisonError::into_inner);
            let (mut q, _) = sink
                .ready
                .wait_timeout_while(q, Duration::from_millis(500), |q| q.is_empty())
                .unwrap_or_else(PoisonError::into_inner);
            q.pop_front()
        };
        let Some(note) = note else { continue };
        let mut delay = Duration::from_secs(1);
        for attempt in 1..=ATTEMPTS {
            match sender.send(&note) {
                Ok(()) => break,
                Err(e) if attempt == ATTEMPTS => {
                    tracing::error!(event = note.event, error = %format!("{e:#}"), "Notification not delivered; given up after {ATTEMPTS} attempts.");
                }
                Err(e) => {
                    tracing::warn!(event = note.event, attempt, error = %format!("{e:#}"), "Notification not delivered; trying again.");
                    std::thread::sleep(delay);
                    delay *= 2;
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                }
            }
        }
    }
}

/// How an entry sends.
enum Sender {
    Webhook {
        url: Url,
        key: ring::hmac::Key,
        tls: Option<Arc<rustls::ClientConfig>>,
    },
    Email {
        transport: lettre::SmtpTransport,
        from: lettre::message::Mailbox,
        to: Vec<lettre::message::Mailbox>,
    },
}

struct Url {
    host: String,
    port: u16,
    path: String,
}

fn parse_url(url: &str) -> anyhow::Result<(bool, Url)> {
    let (https, rest) = if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else {
        anyhow::bail!("`{url}` is not http:// or https://");
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => match p.parse() {
            Ok(p) => (h, p),
            Err(_) => (authority, if https { 443 } else { 80 }),
        },
        _ => (authority, if https { 443 } else { 80 }),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    anyhow::ensure!(!host.is_empty(), "`{url}` has no host");
    Ok((
        https,
        Url {
            host: host.to_string(),
            port,
            path: if path.is_empty() {
                "/".into()
            } else {
                path.into()
            },
        },
    ))
}

fn secret(path: &str) -> anyhow::Result<String> {
    let s = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("reading {path}: {e}"))?
        .trim()
        .to_string();
    anyhow::ensure!(!s.is_empty(), "{path} is empty");
    Ok(s)
}

impl Sender {
    fn new(t: &NotifyTarget) -> anyhow::Result<Self> {
        match t {
            NotifyTarget::Webhook { url, secret_file } => {
                let (https, url) = parse_url(url)?;
                let key =
                    ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret(secret_file)?.as_bytes());
                let tls = if https {
                    let mut roots = rustls::RootCertStore::empty();
                    for c in rustls_native_certs::load_native_certs().certs {
                        let _ = roots.add(c);
                    }
                    #[allow(deprecated)]
                    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
                        rustls::crypto::ring::default_provider(),
                    ))
                    .with_safe_default_protocol_versions()?
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                    Some(Arc::new(cfg))
                } else {
                    None
                };
                Ok(Self::Webhook { url, key, tls })
            }
            NotifyTarget::Email {
                server,
                tls,
                from,
                to,
                username,
                password_file,
            } => {
                use lettre::transport::smtp::authentication::Credentials;
                let (host, port) = server
                    .rsplit_once(':')
                    .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
                    .ok_or_else(|| anyhow::anyhow!("`{server}` is not host:port"))?;
                let mut b = match tls.as_str() {
                    "tls" => lettre::SmtpTransport::relay(&host)?,
                    "starttls" => lettre::SmtpTransport::starttls_relay(&host)?,
                    _ => lettre::SmtpTransport::builder_dangerous(&host),
                }
                .port(port)
                .timeout(Some(TIMEOUT));
                if let Some(user) = username {
                    let pass = match password_file {
                        Some(f) => secret(f)?,
                        None => anyhow::bail!("`username` without `password_file`"),
                    };
                    b = b.credentials(Credentials::new(user.clone(), pass));
                }
                Ok(Self::Email {
                    transport: b.build(),
                    from: from.parse()?,
                    to: to
                        .iter()
                        .map(|t| t.parse())
                        .collect::<Result<Vec<_>, _>>()?,
                })
            }
        }
    }

    fn send(&self, n: &Note) -> anyhow::Result<()> {
        let at = now_ms();
        match self {
            Self::Webhook { url, key, tls } => {
                let body = serde_json::to_string(&json!({
                    "event": n.event,
                    "at": voipwall_detect::Timestamp(at).to_string(),
                    "host": hostname(),
                    "summary": n.summary,
                    "details": n.details,
                }))?;
                let ts = (at / 1000).to_string();
                let mut signed = Vec::with_capacity(ts.len() + 1 + body.len());
                signed.extend_from_slice(ts.as_bytes());
                signed.push(b'.');
                signed.extend_from_slice(body.as_bytes());
                let tag = ring::hmac::sign(key, &signed);
                let sig: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
                let host_header = if url.host.contains(':') {
                    format!("[{}]:{}", url.host, url.port)
                } else {
                    format!("{}:{}", url.host, url.port)
                };
                let req = format!(
                    "POST {} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: voipwall/{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nX-Voipwall-Event: {}\r\nX-Voipwall-Timestamp: {ts}\r\nX-Voipwall-Signature: sha256={sig}\r\nConnection: close\r\n\r\n{body}",
                    url.path,
                    env!("CARGO_PKG_VERSION"),
                    body.len(),
                    n.event,
                );
                let addr = (url.host.as_str(), url.port)
                    .to_socket_addrs()?
                    .next()
                    .ok_or_else(|| anyhow::anyhow!("{} has no address", url.host))?;
                let tcp = TcpStream::connect_timeout(&addr, TIMEOUT)?;
                tcp.set_read_timeout(Some(TIMEOUT))?;
                tcp.set_write_timeout(Some(TIMEOUT))?;
                let mut answer = Vec::new();
                match tls {
                    Some(cfg) => {
                        let name = rustls_pki_types::ServerName::try_from(url.host.clone())?;
                        let conn = rustls::ClientConnection::new(cfg.clone(), name)?;
                        let mut s = rustls::StreamOwned::new(conn, tcp);
                        s.write_all(req.as_bytes())?;
                        let _ = s.take(4096).read_to_end(&mut answer);
                    }
                    None => {
                        let mut s = tcp;
                        s.write_all(req.as_bytes())?;
                        let _ = s.take(4096).read_to_end(&mut answer);
                    }
                }
                let line = String::from_utf8_lossy(&answer);
                let code = line
                    .split_whitespace()
                    .nth(1)
                    .and_then(|c| c.parse::<u16>().ok())
                    .ok_or_else(|| anyhow::anyhow!("no HTTP answer"))?;
                anyhow::ensure!((200..300).contains(&code), "the webhook answered {code}");
                Ok(())
            }
            Self::Email {
                transport,
                from,
                to,
            } => {
                use lettre::Transport as _;
                let mut m = lettre::Message::builder()
                    .from(from.clone())
                    .subject(format!("[voipwall] {}", n.summary));
                for t in to {
                    m = m.to(t.clone());
                }
                let text = format!(
                    "{}\n\nevent: {}\nat: {}\nhost: {}\n\n{}\n",
                    n.summary,
                    n.event,
                    voipwall_detect::Timestamp(at),
                    hostname(),
                    serde_json::to_string_pretty(&n.details).unwrap_or_default()
                );
                transport.send(&m.body(text)?)?;
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_host_port_and_path() {
        let (https, u) = parse_url("https://hooks.example.org/a/b").unwrap();
        assert!(https);
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("hooks.example.org", 443, "/a/b")
        );
        let (https, u) = parse_url("http://[2001:db8::1]:8080").unwrap();
        assert!(!https);
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("2001:db8::1", 8080, "/")
        );
        let (_, u) = parse_url("http://192.0.2.1:9/x").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("192.0.2.1", 9));
        assert!(parse_url("ftp://x").is_err());
        assert!(parse_url("http:///x").is_err());
    }

    #[test]
    fn a_storm_is_told_once_until_it_calms_down() {
        let s = Sink {
            settings: NotifySettings {
                target: NotifyTarget::Webhook {
                    url: "http://192.0.2.1/".into(),
                    secret_file: "/k".into(),
                },
                events: vec!["ban_storm".into()],
                ban_storm: 10,
                origin: Default::default(),
            },
            queue: Mutex::new(VecDeque::new()),
            ready: Condvar::new(),
            bans: Mutex::new((VecDeque::new(), false)),
            protected: Mutex::new((None, 0)),
            shield: Mutex::new((None, 0)),
        };
        for i in 0..30 {
            s.ban(1_000_000 + i * 100);
        }
        assert_eq!(s.queue.lock().unwrap().len(), 1);
        // A quiet minute, then another storm: told again.
        for i in 0..10 {
            s.ban(1_200_000 + i * 100);
        }
        assert_eq!(s.queue.lock().unwrap().len(), 2);
    }
}
