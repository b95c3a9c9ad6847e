//! The HTTP API: a client of the daemon's control channel (the same
//! requests and typed answers as the control socket, the same ban plane
//! behind them), on its own thread with its own small async runtime. It
//! never touches the engine itself, and the engine loop never waits for
//! it; the kernel only through the CLI's own functions (rollback, the
//! table's counters), off the runtime's thread.
//!
//! Resources (all JSON; errors are `application/problem+json`):
//! - `GET /api/v1/status` (read)
//! - `GET /api/v1/bans?all=&rule=&net=&limit=` (read)
//! - `POST /api/v1/bans` `{"target", "duration", "reason", "exact", "force"}` (admin)
//! - `DELETE /api/v1/bans/{target}` (admin; a network as `203.0.113.0%2F24`)
//! - `POST /api/v1/bans/{target}/extend` `{"duration"}` (admin)
//! - `POST /api/v1/allow`, `POST /api/v1/block` `{"target", "duration", "force"}`
//!   and `DELETE /api/v1/allow/{target}`, `DELETE /api/v1/block/{target}` (admin)
//! - `POST /api/v1/call/decide` (read): what the call rules say of a call
//! - `GET /api/v1/explain/{addr}` (read): what detection knows, stored bans
//! - `GET /api/v1/generations` (read): the recorded rulesets, newest first,
//!   and which one is in force
//! - `GET /v1/decisions/stream?startup=` (bouncer, `X-Api-Key`): CrowdSec's
//!   decision stream, so a CrowdSec bouncer can follow voipwall
//! - `GET /metrics` (read): Prometheus text
//!
//! Tokens: `Authorization: Bearer <token>` (bouncers: `X-Api-Key`); no
//! token or an unknown one → 401, a token whose role may not → 403.

use std::collections::{BTreeMap, HashMap};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde::{Deserialize, Serialize};
use voipwall_core::daemon::control::Answer;
use voipwall_core::daemon::{ApiContext, ControlHandle, Request};
use voipwall_core::plane::{Op, Verb};
use voipwall_core::tokens::Role;
use voipwall_store::Store;

mod dashboard;
mod metrics;
mod notify;
mod openapi;

/// Connections served at once on each listener; more wait in the
/// kernel's accept queue until one closes.
const MAX_CONNECTIONS: usize = 128;

/// The largest request body taken (larger ones are answered 413).
const BODY_LIMIT: usize = 64 << 10;

/// How long a request waits for the engine thread: shorter than `IDLE`, so
/// an answer (or the 503 that says there is none) is written before the
/// connection could be taken for idle.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

struct Api {
    control: ControlHandle,
    state_dir: std::path::PathBuf,
    catalog_dirs: Vec<std::path::PathBuf>,
    /// Tokens are looked up here for every request (a revoked token stops
    /// working at once).
    store: Mutex<Store>,
    /// Each bouncer's last view of the decisions (value → decision), for
    /// the stream's deltas.
    bouncers: Mutex<HashMap<String, BTreeMap<String, Decision>>>,
    /// Event streams open (`MAX_STREAMS`).
    streams: Arc<tokio::sync::Semaphore>,
    /// The table's named counters (name, packets, bytes), read every
    /// `KERNEL_EVERY` off the runtime's thread: a scrape never waits for
    /// `nft`.
    kernel: Mutex<Vec<(String, u64, u64)>>,
    /// The last status answer, when it came and the `epoch` it was asked
    /// in (`STATUS_FOR`).
    status: tokio::sync::Mutex<Option<(std::time::Instant, u64, Answer)>>,
    /// Bumped by every verb through this API.
    epoch: std::sync::atomic::AtomicU64,
    /// The dashboard's sessions.
    sessions: dashboard::Sessions,
    /// Reads that scan many rows (the dashboard's bans and chart, the
    /// decisions stream's bans in force), on a connection of their own,
    /// opened once, off the runtime's thread: they never hold the engine
    /// thread nor the connection that checks tokens.
    reads: Mutex<Store>,
    /// The listeners serve TLS (session cookies are `Secure`).
    tls: bool,
    /// One decisions-stream pull at a time: two overlapping pulls of one
    /// bouncer could store their views in the wrong order (and tell it a
    /// ban in force was deleted).
    stream_turn: tokio::sync::Mutex<()>,
}

/// How often the kernel's counters are read for `/metrics`.
const KERNEL_EVERY: Duration = Duration::from_secs(5);

/// Starts the API on its own thread. Binds first, so an address that
/// cannot be bound is reported to the daemon now.
pub fn start(ctx: ApiContext) -> anyhow::Result<()> {
    if !ctx.notify.is_empty() {
        notify::start(
            &ctx.notify,
            ctx.control.clone(),
            ctx.state_dir.clone(),
            ctx.stop.clone(),
        )?;
    }
    if ctx.settings.listen.is_empty() {
        return Ok(());
    }
    let db = ctx.state_dir.join("state.db");
    let store = Store::open_existing(&db)?;
    let reads = Store::open_existing(&db)?;
    let tls = match (&ctx.settings.tls_cert, &ctx.settings.tls_key) {
        (Some(cert), Some(key)) => Some(tls_acceptor(cert, key)?),
        _ => None,
    };
    // Bound now where possible; an address that cannot be (the unit starts
    // before the network) is tried again every `BIND_EVERY` and shows as
    // `retrying` in `status` meanwhile.
    let board = ctx.listeners.clone();
    let mut listeners = Vec::new();
    for a in &ctx.settings.listen {
        let r = bind(*a);
        if let Err(e) = &r {
            tracing::warn!(listen = %a, error = %e, "The HTTP API cannot listen here yet; trying again every few seconds.");
        }
        report(
            &board,
            *a,
            tls.is_some(),
            r.as_ref().err().map(ToString::to_string),
        );
        listeners.push((*a, r.ok()));
    }
    let api = Arc::new(Api {
        control: ctx.control,
        state_dir: ctx.state_dir.clone(),
        catalog_dirs: ctx.catalog_dirs.clone(),
        store: Mutex::new(store),
        bouncers: Mutex::new(HashMap::new()),
        streams: Arc::new(tokio::sync::Semaphore::new(MAX_STREAMS)),
        kernel: Mutex::new(Vec::new()),
        status: tokio::sync::Mutex::new(None),
        epoch: std::sync::atomic::AtomicU64::new(0),
        sessions: dashboard::Sessions::default(),
        reads: Mutex::new(reads),
        tls: tls.is_some(),
        stream_turn: tokio::sync::Mutex::new(()),
    });
    let stop = ctx.stop;
    std::thread::Builder::new()
        .name("api".into())
        .spawn(move || {
            // The packet path first: on a busy box the engine thread wins
            // the CPU over API clients (Linux nice values are per thread;
            // the runtime's blocking threads, made from this one, inherit
            // it).
            if let Err(e) = rustix::process::nice(API_NICE) {
                tracing::debug!(error = %e, "The API thread keeps its priority.");
            }
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .enable_time()
                .max_blocking_threads(8)
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(error = %e, "The HTTP API's runtime could not start.");
                    return;
                }
            };
            rt.block_on(async move {
                let reader = api.clone();
                tokio::spawn(async move {
                    loop {
                        if let Ok(Ok(c)) = tokio::task::spawn_blocking(voipwall_sys::nft::counters).await {
                            *reader
                                .kernel
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner) = c;
                        }
                        tokio::time::sleep(KERNEL_EVERY).await;
                    }
                });
                let app = router(api);
                let mut tasks = Vec::new();
                for (addr, bound) in listeners {
                    let app = app.clone();
                    let stop = stop.clone();
                    let tls = tls.clone();
                    let board = board.clone();
                    tasks.push(tokio::spawn(async move {
                        let mut bound = bound;
                        let l = loop {
                            if let Some(l) = bound.take() {
                                break l;
                            }
                            if stop.load(Ordering::Relaxed) {
                                return;
                            }
                            tokio::time::sleep(BIND_EVERY).await;
                            match bind(addr) {
                                Ok(l) => {
                                    tracing::info!(listen = %addr, "The HTTP API could bind at last.");
                                    report(&board, addr, tls.is_some(), None);
                                    bound = Some(l);
                                }
                                Err(e) => report(&board, addr, tls.is_some(), Some(e.to_string())),
                            }
                        };
                        let Ok(l) = tokio::net::TcpListener::from_std(l) else {
                            return;
                        };
                        let l = Capped::new(l, tls.clone());
                        tracing::info!(listen = %addr, tls = tls.is_some(), "HTTP API listening.");
                        let shutdown = async move {
                            while !stop.load(Ordering::Relaxed) {
                                tokio::time::sleep(Duration::from_millis(500)).await;
                            }
                        };
                        let svc = app.into_make_service_with_connect_info::<Peer>();
                        if let Err(e) = axum::serve(l, svc).with_graceful_shutdown(shutdown).await {
                            tracing::error!(listen = %addr, error = %e, "The HTTP API listener failed.");
                        }
                    }));
                }
                for t in tasks {
                    let _ = t.await;
                }
            });
        })?;
    Ok(())
}

/// How much lower the API's threads run than the engine's.
const API_NICE: i32 = 5;

/// How often an address that could not be bound is tried again.
const BIND_EVERY: Duration = Duration::from_secs(2);

/// A non-blocking listener on `a`.
fn bind(a: SocketAddr) -> std::io::Result<TcpListener> {
    let l = TcpListener::bind(a)?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// Records how the listener on `a` is doing, for `status`.
fn report(
    board: &Mutex<Vec<voipwall_core::daemon::control::ApiListener>>,
    a: SocketAddr,
    tls: bool,
    error: Option<String>,
) {
    let mut b = board
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let listen = a.to_string();
    let attempts = b
        .iter()
        .find(|l| l.listen == listen)
        .map_or(0, |l| l.attempts)
        + 1;
    b.retain(|l| l.listen != listen);
    b.push(voipwall_core::daemon::control::ApiListener {
        listen,
        state: if error.is_some() {
            "retrying"
        } else {
            "listening"
        }
        .into(),
        tls,
        error,
        attempts,
    });
    b.sort_by(|x, y| x.listen.cmp(&y.listen));
}

/// The TLS server of `[api] tls_cert` and `tls_key` (PEM files, read once
/// at start; ring's primitives, TLS 1.2 and 1.3, HTTP/1.1).
fn tls_acceptor(cert: &str, key: &str) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    use rustls_pki_types::pem::PemObject as _;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow::anyhow!("reading the API's certificate {cert}: {e}"))?;
    if certs.is_empty() {
        anyhow::bail!("the API's certificate file {cert} holds no certificate");
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| anyhow::anyhow!("reading the API's private key {key}: {e}"))?;
    // ring, as the project's one TLS stack (aws-lc-rs would add a C and
    // cmake build). rustls 0.23.48 marks it deprecated for want of
    // post-quantum key exchange; classical X25519/P-256 remain.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| anyhow::anyhow!("the API's certificate and key: {e}"))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
}

/// How long a TLS handshake may take.
const HANDSHAKE_WITHIN: Duration = Duration::from_secs(10);

/// A listener that serves at most `MAX_CONNECTIONS` connections at once: a
/// connection holds a permit from before it is accepted until it closes;
/// beyond, accepting waits (the kernel's queue holds the rest). A task
/// accepts; under TLS each handshake runs in a task of its own (bounded by
/// `HANDSHAKE_WITHIN`), so a slow client never holds up the others.
struct Capped {
    local: SocketAddr,
    ready: tokio::sync::mpsc::Receiver<(CappedIo, SocketAddr)>,
}

impl Capped {
    fn new(l: tokio::net::TcpListener, tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let local = l
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let (tx, ready) = tokio::sync::mpsc::channel(16);
        let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        tokio::spawn(async move {
            loop {
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    return;
                };
                // Serving stopped (the daemon is stopping): stop accepting.
                if tx.is_closed() {
                    return;
                }
                // Out of descriptors and the like: wait, as axum does.
                let Ok((stream, addr)) = l.accept().await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let io = |conn| CappedIo {
                    conn,
                    busy: Arc::default(),
                    _permit: permit,
                    idle: Box::pin(tokio::time::sleep(IDLE)),
                };
                match &tls {
                    None => {
                        if tx.send((io(Conn::Plain(stream)), addr)).await.is_err() {
                            return;
                        }
                    }
                    Some(acceptor) => {
                        let (acceptor, tx) = (acceptor.clone(), tx.clone());
                        tokio::spawn(async move {
                            let hs =
                                tokio::time::timeout(HANDSHAKE_WITHIN, acceptor.accept(stream));
                            if let Ok(Ok(s)) = hs.await {
                                let _ = tx.send((io(Conn::Tls(Box::new(s))), addr)).await;
                            }
                        });
                    }
                }
            }
        });
        Self { local, ready }
    }
}

/// A connection, plain or TLS.
enum Conn {
    Plain(tokio::net::TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>),
}

/// An accepted connection and its permit. A connection that gets no
/// answer written for `IDLE` (since it was accepted or since the last
/// answer's bytes) is closed at its next read: idle clients, and clients
/// trickling a request a byte at a time, cannot hold the slots (hyper's
/// own header timeout needs a timer axum does not give it). A long answer
/// being read, or an event stream's keep-alives, count as answers.
struct CappedIo {
    conn: Conn,
    /// Set while a request of this connection is being handled.
    busy: Arc<std::sync::atomic::AtomicBool>,
    _permit: tokio::sync::OwnedSemaphorePermit,
    idle: std::pin::Pin<Box<tokio::time::Sleep>>,
}

/// How long a connection may go without an answer written.
const IDLE: Duration = Duration::from_secs(15);

impl axum::serve::Listener for Capped {
    type Io = CappedIo;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(x) => x,
            // The accepting task ended (the runtime is stopping).
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

impl tokio::io::AsyncRead for Conn {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => std::pin::Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl tokio::io::AsyncWrite for Conn {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => std::pin::Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => std::pin::Pin::new(s).poll_flush(cx),
            Self::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => std::pin::Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

impl tokio::io::AsyncRead for CappedIo {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match std::pin::Pin::new(&mut self.conn).poll_read(cx, buf) {
            std::task::Poll::Ready(r) => std::task::Poll::Ready(r),
            // A request being handled: its answer resets the timer.
            std::task::Poll::Pending if self.busy.load(Ordering::Acquire) => {
                std::task::Poll::Pending
            }
            std::task::Poll::Pending => match self.idle.as_mut().poll(cx) {
                std::task::Poll::Ready(()) => std::task::Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "no request completed in time",
                ))),
                std::task::Poll::Pending => std::task::Poll::Pending,
            },
        }
    }
}

impl tokio::io::AsyncWrite for CappedIo {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.conn).poll_write(cx, buf);
        if matches!(r, std::task::Poll::Ready(Ok(n)) if n > 0) {
            // A long answer being read by the client is not idleness.
            let next = tokio::time::Instant::now() + IDLE;
            self.idle.as_mut().reset(next);
        }
        r
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.conn).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.conn).poll_shutdown(cx)
    }
}

/// The peer of a connection, for handlers (`ConnectInfo<Peer>`).
#[derive(Clone, Debug)]
struct Peer(SocketAddr, Arc<std::sync::atomic::AtomicBool>);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, Capped>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, Capped>) -> Self {
        Self(*stream.remote_addr(), stream.io().busy.clone())
    }
}

/// Marks the connection busy while a request is handled: its idle timer
/// does not run out under a slow request (a rollback, a policy check).
async fn track_busy(
    ConnectInfo(peer): ConnectInfo<Peer>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    struct Done(Arc<std::sync::atomic::AtomicBool>);
    impl Drop for Done {
        fn drop(&mut self) {
            self.0.store(false, Ordering::Release);
        }
    }
    peer.1.store(true, Ordering::Release);
    let _done = Done(peer.1.clone());
    next.run(req).await
}

/// The route adding a runtime list entry with verb `v`.
fn list_add(v: Verb) -> axum::routing::MethodRouter<Arc<Api>> {
    post(
        move |State(api): State<Arc<Api>>, Token(who, _): Token<Admin>, Body(bytes): Body| {
            list_entry(api, who, bytes, v)
        },
    )
}

/// The route removing a runtime list entry with verb `v`.
fn list_remove(v: Verb) -> axum::routing::MethodRouter<Arc<Api>> {
    delete(
        move |State(api): State<Arc<Api>>,
              Token(who, _): Token<Admin>,
              Path(target): Path<String>| { list_delete(api, who, target, v) },
    )
}

fn router(api: Arc<Api>) -> Router {
    Router::new()
        .route("/api/v1/status", get(status))
        .route("/api/v1/bans", get(bans).post(ban))
        .route("/api/v1/bans/{target}", delete(unban))
        .route("/api/v1/bans/{target}/extend", post(extend))
        .route("/api/v1/allow", list_add(Verb::Allow))
        .route("/api/v1/allow/{target}", list_remove(Verb::Disallow))
        .route("/api/v1/block", list_add(Verb::Block))
        .route("/api/v1/block/{target}", list_remove(Verb::Unblock))
        .route("/api/v1/explain/{addr}", get(explain))
        .route("/api/v1/call/decide", post(call_decide))
        .route("/api/v1/generations", get(generations))
        .route("/api/v1/generations/{id}/diff", get(generation_diff))
        .route("/api/v1/generations/confirm", post(confirm))
        .route("/api/v1/generations/rollback", post(rollback))
        .route("/api/v1/policy/check", post(policy_check))
        .route("/api/v1/events", get(events))
        .route("/api/v1/drops", get(drops))
        .route("/api/v1/events/stream", get(events_stream))
        .route("/v1/decisions/stream", get(decisions_stream))
        .route("/v1/decisions", get(decisions))
        .route("/v1/banlist.txt", get(banlist))
        .route("/metrics", get(metrics))
        .route("/api/openapi.json", get(openapi_document))
        .merge(dashboard::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(not_allowed)
        .layer(axum::middleware::from_fn(track_busy))
        // Request bodies are a ban or an extend: a few hundred bytes.
        .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(api)
}

/// A query string, or a 400 problem saying what is wrong with it.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(Problem))]
struct Query<T>(T);

/// A path parameter, or a problem.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(Problem))]
struct Path<T>(T);

/// A request body (at most `BODY_LIMIT` bytes: a 413 problem beyond).
struct Body(axum::body::Bytes);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = Problem;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Problem> {
        Ok(Self(axum::body::Bytes::from_request(req, state).await?))
    }
}

impl From<QueryRejection> for Problem {
    fn from(r: QueryRejection) -> Self {
        Self(r.status(), r.body_text())
    }
}

impl From<PathRejection> for Problem {
    fn from(r: PathRejection) -> Self {
        Self(r.status(), r.body_text())
    }
}

impl From<BytesRejection> for Problem {
    fn from(r: BytesRejection) -> Self {
        Self(r.status(), r.body_text())
    }
}

/// A method the path does not take: a 405 problem.
async fn not_allowed() -> Response {
    Problem(
        StatusCode::METHOD_NOT_ALLOWED,
        "this path does not take that method".into(),
    )
    .into_response()
}

/// Any other path: a 404 problem.
async fn not_found() -> Response {
    Problem(StatusCode::NOT_FOUND, "no such resource".into()).into_response()
}

/// An RFC 9457 problem.
struct Problem(StatusCode, String);

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "type": "about:blank",
            "title": self.0.canonical_reason().unwrap_or(""),
            "status": self.0.as_u16(),
            "detail": self.1,
        });
        (
            self.0,
            [(header::CONTENT_TYPE, "application/problem+json")],
            body.to_string(),
        )
            .into_response()
    }
}

/// The caller's token: its name and role, if the role is one of `may`. A
/// token presented that is not one is a failed authentication: reported to
/// the engine as the peer's (rule `api-auth`).
fn auth(
    api: &Api,
    peer: SocketAddr,
    headers: &HeaderMap,
    may: &[Role],
) -> Result<(String, Role), Problem> {
    // Both headers may carry a token: every one presented must be known,
    // and they must be the same token (a valid bearer token must not hide
    // a guessed key from `api-auth`).
    // `Authorization` counts when its scheme is Bearer (any case); another
    // scheme (a proxy's Basic) is not a token.
    let bearer = headers.get(header::AUTHORIZATION).and_then(|v| {
        let v = v.to_str().ok()?;
        let (scheme, rest) = v.split_once(' ').unwrap_or((v, ""));
        scheme.eq_ignore_ascii_case("bearer").then_some(Some(rest))
    });
    let key = headers.get("x-api-key").map(|v| v.to_str().ok());
    let presented: Vec<&str> = [bearer, key]
        .into_iter()
        .flatten()
        .map(|t| t.map(str::trim).unwrap_or(""))
        .collect();
    if presented.is_empty() {
        return Err(Problem(
            StatusCode::UNAUTHORIZED,
            "a token is needed: `Authorization: Bearer <token>` (`voipwall token create`)".into(),
        ));
    }
    let mut who: Option<(String, Role)> = None;
    for token in presented {
        let found = if token.is_empty() || token.len() > 256 {
            Ok(None)
        } else {
            let store = api
                .store
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            voipwall_core::tokens::check(&store, token)
        };
        let found = found.map_err(|e| {
            // Never a guess: the store could not say (a valid token must
            // not get its holder banned).
            Problem(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("tokens cannot be checked now: {e}"),
            )
        })?;
        let Some(found) = found else {
            // An IPv4 client of an IPv6 listener is `::ffff:a.b.c.d`:
            // banned as the IPv4 address it is.
            api.control.api_auth_failed(peer.ip().to_canonical());
            return Err(Problem(
                StatusCode::UNAUTHORIZED,
                "unknown or revoked token".into(),
            ));
        };
        if who.as_ref().is_some_and(|w| w.0 != found.0) {
            return Err(Problem(
                StatusCode::UNAUTHORIZED,
                "two different tokens: send one".into(),
            ));
        }
        who = Some(found);
    }
    let Some((name, role)) = who else {
        return Err(Problem(StatusCode::UNAUTHORIZED, "no token".into()));
    };
    if !may.contains(&role) {
        return Err(Problem(
            StatusCode::FORBIDDEN,
            format!("a {} token may not do this", role.name()),
        ));
    }
    Ok((name, role))
}

/// Which roles a [`Token`] extractor admits.
trait Roles {
    const MAY: &'static [Role];
}

/// Admin and read tokens.
struct Read;
/// Admin tokens.
struct Admin;
/// Bouncer and admin tokens.
struct Bouncer;
/// Any token.
struct AnyRole;

impl Roles for Read {
    const MAY: &'static [Role] = &[Role::Admin, Role::Read];
}
impl Roles for Admin {
    const MAY: &'static [Role] = &[Role::Admin];
}
impl Roles for Bouncer {
    const MAY: &'static [Role] = &[Role::Bouncer, Role::Admin];
}
impl Roles for AnyRole {
    const MAY: &'static [Role] = &[Role::Bouncer, Role::Admin, Role::Read];
}

/// The caller's token name, its role one of `R`'s: the first extractor of
/// every handler, so no request reaches a handler unauthenticated (401,
/// 403 otherwise, and a wrong token reported to `api-auth`).
struct Token<R>(String, std::marker::PhantomData<R>);

impl<R: Roles> FromRequestParts<Arc<Api>> for Token<R> {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        api: &Arc<Api>,
    ) -> Result<Self, Problem> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<Peer>>()
            .map(|c| c.0.0)
            .ok_or_else(|| Problem(StatusCode::INTERNAL_SERVER_ERROR, "no peer address".into()))?;
        let (name, _) = auth(api, peer, &parts.headers, R::MAY)?;
        Ok(Self(name, std::marker::PhantomData))
    }
}

/// Asks the engine thread, off the async runtime's thread.
async fn ask(api: &Arc<Api>, req: Request) -> Result<Answer, Problem> {
    let api = api.clone();
    tokio::task::spawn_blocking(move || api.control.call(req, ANSWER_WITHIN))
        .await
        .ok()
        .flatten()
        .ok_or_else(|| {
            Problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "the daemon did not answer".into(),
            )
        })
}

/// Asks the engine thread and answers as HTTP.
async fn asked(api: &Arc<Api>, req: Request) -> Response {
    match ask(api, req).await {
        Ok(a) => respond(a),
        Err(p) => p.into_response(),
    }
}

/// A JSON request body, or a 400 saying what is wrong with it.
fn body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, Response> {
    serde_json::from_slice(bytes).map_err(|e| bad(format!("body: {e}")))
}

/// A duration as the CLI's `--for` takes it (`None`: permanent), or a 400.
fn duration(d: &str) -> Result<Option<u64>, Response> {
    voipwall_policy::parse_ban_duration(d).map_err(|e| bad(format!("duration: {e}")))
}

/// An answer as HTTP: a refusal is 422 (a runtime verb) or 400.
fn respond(a: Answer) -> Response {
    match a {
        Answer::Error(e) => Problem(StatusCode::BAD_REQUEST, e.error).into_response(),
        Answer::Runtime(o) if !o.ok => Problem(
            if o.absent {
                StatusCode::NOT_FOUND
            } else {
                StatusCode::UNPROCESSABLE_ENTITY
            },
            o.error.unwrap_or_else(|| "refused".into()),
        )
        .into_response(),
        a => Json(a).into_response(),
    }
}

async fn status(State(api): State<Arc<Api>>, _: Token<Read>) -> Response {
    match status_answer(&api).await {
        Ok(a) => respond(a),
        Err(p) => p.into_response(),
    }
}

/// `GET /api/v1/bans`'s search.
#[derive(Deserialize, schemars::JsonSchema)]
pub(crate) struct BansQuery {
    /// Include ended and lifted bans.
    #[serde(default)]
    all: bool,
    /// Only this rule.
    rule: Option<String>,
    /// Only bans touching this address or network.
    net: Option<String>,
    /// At most this many (default 1000, at most 100000).
    limit: Option<usize>,
}

async fn bans(State(api): State<Arc<Api>>, _: Token<Read>, Query(q): Query<BansQuery>) -> Response {
    let req = Request::Bans {
        all: q.all,
        rule: q.rule,
        net: q.net,
        limit: Some(q.limit.unwrap_or(1000).min(100_000)),
    };
    asked(&api, req).await
}

/// `POST /api/v1/bans`.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BanBody {
    /// An address or network.
    #[schemars(regex(pattern = crate::openapi::TARGET))]
    target: String,
    /// `30m`, `7d`, `permanent`; absent: `[bans] default_ttl`.
    #[schemars(regex(pattern = crate::openapi::DURATION))]
    duration: Option<String>,
    /// For the audit log and `explain`.
    #[serde(default)]
    reason: Option<String>,
    /// Ban exactly this target (no widening to the rule's prefix).
    #[serde(default)]
    exact: bool,
    /// Ban even where anti-lockout refuses (management, trunks).
    #[serde(default)]
    force: bool,
}

/// `POST /api/v1/bans/{target}/extend`.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExtendBody {
    /// The remaining time wanted (`2h`, `7d`); a longer one is kept.
    #[schemars(regex(pattern = crate::openapi::DURATION))]
    duration: String,
}

/// Runs a runtime verb for the token `who`.
async fn verb(api: &Arc<Api>, who: &str, mut op: Op) -> Response {
    op.actor = format!("api:{who}");
    let r = asked(api, Request::Runtime(op)).await;
    // What a caller just did shows in its next status.
    api.epoch.fetch_add(1, Ordering::AcqRel);
    r
}

/// How long a status answer is served again: scrapers and dashboards
/// polling many times a second wake the engine thread ten times a second
/// at most (the daemon keeps its own answer as long).
const STATUS_FOR: Duration = Duration::from_millis(100);

/// The daemon's status, asked at most every `STATUS_FOR`: one request
/// asks while the others wait for its answer (the lock is held across the
/// ask), and an answer asked before a verb of this API is never kept after
/// it (`epoch`).
async fn status_answer(api: &Arc<Api>) -> Result<Answer, Problem> {
    let mut cached = api.status.lock().await;
    if let Some((at, epoch, a)) = cached.as_ref()
        && at.elapsed() < STATUS_FOR
        && *epoch == api.epoch.load(Ordering::Acquire)
    {
        return Ok(a.clone());
    }
    let epoch = api.epoch.load(Ordering::Acquire);
    let a = ask(api, Request::Status).await?;
    *cached = Some((std::time::Instant::now(), epoch, a.clone()));
    Ok(a)
}

fn bad(detail: String) -> Response {
    Problem(StatusCode::BAD_REQUEST, detail).into_response()
}

async fn ban(
    State(api): State<Arc<Api>>,
    Token(who, _): Token<Admin>,
    Body(bytes): Body,
) -> Response {
    let b: BanBody = match body(&bytes) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let seconds = match b.duration.as_deref().map(duration).transpose() {
        Ok(s) => s,
        Err(r) => return r,
    };
    let mut op = Op::simple(Verb::Ban, &b.target, seconds.flatten());
    op.default_ttl = seconds.is_none();
    op.reason = b.reason.unwrap_or_else(|| "api".into());
    op.exact = b.exact;
    op.force = b.force;
    verb(&api, &who, op).await
}

async fn unban(
    State(api): State<Arc<Api>>,
    Token(who, _): Token<Admin>,
    Path(target): Path<String>,
) -> Response {
    verb(&api, &who, Op::simple(Verb::Unban, &target, None)).await
}

async fn extend(
    State(api): State<Arc<Api>>,
    Token(who, _): Token<Admin>,
    Path(target): Path<String>,
    Body(bytes): Body,
) -> Response {
    let b: ExtendBody = match body(&bytes) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let secs = match duration(&b.duration) {
        Ok(Some(s)) => s,
        Ok(None) => return bad("extend takes a duration from now".into()),
        Err(r) => return r,
    };
    verb(&api, &who, Op::simple(Verb::Extend, &target, Some(secs))).await
}

/// `POST /api/v1/allow` and `POST /api/v1/block`.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListBody {
    /// An address or network.
    #[schemars(regex(pattern = crate::openapi::TARGET))]
    target: String,
    /// Absent: permanent.
    #[schemars(regex(pattern = crate::openapi::DURATION))]
    duration: Option<String>,
    /// Even where anti-lockout refuses.
    #[serde(default)]
    force: bool,
}

/// `allow` and `block`: a runtime list entry, permanent unless a duration
/// says otherwise.
async fn list_entry(api: Arc<Api>, who: String, bytes: axum::body::Bytes, v: Verb) -> Response {
    let b: ListBody = match body(&bytes) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let seconds = match b.duration.as_deref().map(duration).transpose() {
        Ok(s) => s.flatten(),
        Err(r) => return r,
    };
    let mut op = Op::simple(v, &b.target, seconds);
    op.force = b.force;
    if v == Verb::Block {
        op.reason = "block".into();
    }
    verb(&api, &who, op).await
}

async fn list_delete(api: Arc<Api>, who: String, target: String, v: Verb) -> Response {
    let mut op = Op::simple(v, &target, None);
    if v == Verb::Unblock {
        op.reason = "block".into();
    }
    verb(&api, &who, op).await
}

async fn explain(
    State(api): State<Arc<Api>>,
    _: Token<Read>,
    Path(addr): Path<String>,
) -> Response {
    asked(&api, Request::Explain { addr }).await
}

/// `POST /api/v1/call/decide`.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CallDecideBody {
    /// The caller's address.
    from: String,
    /// The authenticated user (digest username), if the dialplan knows it.
    #[serde(default)]
    user: Option<String>,
    /// The number dialled.
    to: String,
}

/// `POST /api/v1/call/decide` (read): what the call rules say of a call
/// about to be placed, from the daemon's counters, nothing counted (a
/// dialplan's `CURL()` or `http_client` asks before dialling out).
async fn call_decide(State(api): State<Arc<Api>>, _: Token<Read>, Body(bytes): Body) -> Response {
    let b: CallDecideBody = match body(&bytes) {
        Ok(b) => b,
        Err(r) => return r,
    };
    asked(
        &api,
        Request::CallDecide {
            from: b.from,
            user: b.user,
            to: b.to,
        },
    )
    .await
}

/// One recorded ruleset, without its script.
#[derive(Serialize, Deserialize, schemars::JsonSchema)]
pub(crate) struct GenerationRow {
    /// Its number (`voipwall rollback --to N`).
    id: i64,
    /// When it was recorded (ms since the epoch).
    at: String,
    /// `applied`, `confirmed`, `pending`, `rolled_back`, `snapshot`, ...
    status: String,
    /// The policy file it was compiled from.
    policy: String,
    /// A pending apply's confirmation deadline (ms since the epoch).
    deadline: Option<String>,
    /// Whether the kernel runs it now.
    in_force: bool,
}

/// `GET /api/v1/generations`.
#[derive(Serialize, Deserialize, schemars::JsonSchema)]
pub(crate) struct GenerationsReply {
    /// Always true.
    ok: bool,
    /// Newest first (at most 100).
    generations: Vec<GenerationRow>,
}

/// The recorded generations, newest first (at most 100), for the API and
/// the dashboard.
fn generation_rows(api: &Api) -> Result<Vec<GenerationRow>, String> {
    let store = api
        .store
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let in_force = store.in_force_summary().ok().flatten().map(|(id, _)| id);
    store
        .generation_list(100)
        .map(|gs| {
            gs.into_iter()
                .map(|g| GenerationRow {
                    in_force: Some(g.id) == in_force,
                    id: g.id,
                    at: g.at.to_string(),
                    status: g.status,
                    policy: g.policy,
                    deadline: g.deadline.map(|d| d.to_string()),
                })
                .collect()
        })
        .map_err(|e| e.to_string())
}

async fn generations(State(api): State<Arc<Api>>, _: Token<Read>) -> Response {
    match generation_rows(&api) {
        Ok(generations) => Json(GenerationsReply {
            ok: true,
            generations,
        })
        .into_response(),
        Err(e) => Problem(StatusCode::SERVICE_UNAVAILABLE, e).into_response(),
    }
}

/// One decision, as CrowdSec's Local API gives it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
pub(crate) struct Decision {
    /// The stored ban's row id.
    id: i64,
    /// Always `voipwall`.
    origin: String,
    /// Always `ban`.
    #[serde(rename = "type")]
    kind: String,
    /// `Ip` or `Range`.
    scope: String,
    /// The address or network.
    value: String,
    /// Time left (`3599s`).
    duration: String,
    /// `voipwall/<rule>`.
    scenario: String,
    /// When it ends (ms): a ban extended since the bouncer's last pull is
    /// offered again with its new duration.
    #[serde(skip)]
    end: u64,
}

/// `GET /v1/decisions/stream`'s query.
#[derive(Deserialize, schemars::JsonSchema)]
pub(crate) struct StreamQuery {
    /// Everything in force (a bouncer starting), not only what changed.
    #[serde(default)]
    startup: bool,
    /// Origins to offer, comma-separated (`detect,manual,kernel,fleet`);
    /// default: voipwall's own (`detect`, `manual` for the CLI and the API,
    /// `kernel` for flood bans), never what a fleet, CrowdSec or a feed
    /// brought.
    origins: Option<String>,
}

/// `GET /v1/decisions`'s query.
#[derive(Deserialize, schemars::JsonSchema)]
pub(crate) struct DecisionsQuery {
    /// Only decisions covering this address.
    ip: Option<String>,
    /// As for the stream.
    origins: Option<String>,
}

/// `GET /v1/decisions?ip=`: the decisions in force (covering `ip`), as
/// CrowdSec's Local API answers a live-mode bouncer (`null` for none).
async fn decisions(
    State(api): State<Arc<Api>>,
    _: Token<AnyRole>,
    Query(q): Query<DecisionsQuery>,
) -> Response {
    let ip = match q
        .ip
        .as_deref()
        .map(str::parse::<std::net::IpAddr>)
        .transpose()
    {
        Ok(ip) => ip.map(|a| a.to_canonical()),
        Err(_) => return bad("ip: not an IP address".into()),
    };
    let all = match current_decisions(&api, q.origins.as_deref()).await {
        Ok(d) => d,
        Err(p) => return p.into_response(),
    };
    let list: Vec<Decision> = all
        .into_values()
        .filter(|d| {
            ip.is_none_or(|ip| {
                d.value
                    .parse::<ipnet::IpNet>()
                    .or_else(|_| d.value.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .is_ok_and(|n| n.contains(&ip))
            })
        })
        .collect();
    Json(Some(list).filter(|l| !l.is_empty())).into_response()
}

/// `GET /v1/banlist.txt`: one address or network per line, for scripts.
async fn banlist(State(api): State<Arc<Api>>, _: Token<AnyRole>) -> Response {
    match current_decisions(&api, None).await {
        Ok(d) => {
            let mut text = String::new();
            for v in d.keys() {
                text.push_str(v);
                text.push('\n');
            }
            ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response()
        }
        Err(p) => p.into_response(),
    }
}

/// The stream's answer: `null` for an empty list, as CrowdSec's Local API
/// says it.
#[derive(Serialize, Deserialize, schemars::JsonSchema)]
pub(crate) struct StreamReply {
    /// Decisions new (or extended) since the last pull.
    new: Option<Vec<Decision>>,
    /// Decisions ended or lifted since the last pull.
    deleted: Option<Vec<Decision>>,
}

/// The bans in force as decisions (the bans voipwall made: detection, the
/// CLI and the API; not those it only observed).
/// The origins of voipwall's own bans: detection (`detect`, and
/// `detect-unverified`), the CLI and the API (`manual`), and bans the
/// kernel's flood guard made (`kernel`). Anything else (a fleet, CrowdSec,
/// a feed, whatever name it comes under) is offered only when `?origins=`
/// names it; `observe` never is (those bans were never in the kernel).
const OWN: &[&str] = &["detect", "manual", "kernel"];

/// Whether `ban` is offered, given `?origins=`.
fn offered(ban: &voipwall_store::BanRecord, asked: Option<&str>) -> bool {
    let kind = ban.origin_kind();
    if kind == "observe" {
        return false;
    }
    match asked {
        Some(list) => list.split(',').any(|o| o.trim() == kind),
        None => OWN.contains(&kind),
    }
}

async fn current_decisions(
    api: &Arc<Api>,
    origins: Option<&str>,
) -> Result<BTreeMap<String, Decision>, Problem> {
    // Every ban in force, read on the API's own connection: a bouncer
    // polling every second with 100,000 bans in force must not hold the
    // engine thread (a ban committed a moment ago is in the next pull).
    let now = voipwall_core::safety::now();
    let a = api.clone();
    let bans = tokio::task::spawn_blocking(move || {
        a.reads
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .active_bans(now)
    })
    .await
    .map_err(|e| Problem(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?
    .map_err(|e| Problem(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    let mut out = BTreeMap::new();
    for b in bans.iter().filter(|b| offered(b, origins)) {
        let (scope, value) = if b.target.prefix_len() == b.target.max_prefix_len() {
            ("Ip", b.target.addr().to_string())
        } else {
            ("Range", b.target.to_string())
        };
        let secs = if b.is_permanent() {
            // CrowdSec has no permanent decision: ten years.
            87_600 * 3600
        } else {
            b.end.since(now) / 1000
        };
        out.insert(
            value.clone(),
            Decision {
                id: b.id.unwrap_or(0),
                origin: "voipwall".into(),
                kind: "ban".into(),
                scope: scope.into(),
                value,
                duration: format!("{secs}s"),
                scenario: format!("voipwall/{}", b.rule),
                end: b.end.0,
            },
        );
    }
    Ok(out)
}

async fn decisions_stream(
    State(api): State<Arc<Api>>,
    Token(who, _): Token<Bouncer>,
    Query(q): Query<StreamQuery>,
) -> Response {
    let _turn = api.stream_turn.lock().await;
    let now = match current_decisions(&api, q.origins.as_deref()).await {
        Ok(d) => d,
        Err(p) => return p.into_response(),
    };
    let mut all = api
        .bouncers
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let before = if q.startup {
        BTreeMap::new()
    } else {
        all.get(&who).cloned().unwrap_or_default()
    };
    let new: Vec<Decision> = now
        .iter()
        .filter(|(k, d)| {
            before
                .get(*k)
                .is_none_or(|b| b.id != d.id || b.end != d.end)
        })
        .map(|(_, d)| d.clone())
        .collect();
    let deleted: Vec<Decision> = before
        .iter()
        .filter(|(k, _)| !now.contains_key(*k))
        .map(|(_, d)| d.clone())
        .collect();
    let body = StreamReply {
        new: Some(new).filter(|v| !v.is_empty()),
        deleted: Some(deleted).filter(|v| !v.is_empty()),
    };
    all.insert(who, now);
    Json(body).into_response()
}

/// Runs `f` off the runtime's thread: the CLI's own functions (the store,
/// the kernel), not a copy of them. An operator's error is `status`.
async fn blocking<T: Serialize + Send + 'static>(
    status: StatusCode,
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> Response {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Json(v).into_response(),
        Ok(Err(e)) => {
            let text = format!("{e:#}");
            let text = text.strip_prefix("error: ").unwrap_or(&text).to_string();
            let code = if e.downcast_ref::<voipwall_core::Invalid>().is_some() {
                status
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            Problem(code, text).into_response()
        }
        Err(_) => {
            Problem(StatusCode::SERVICE_UNAVAILABLE, "the task failed".into()).into_response()
        }
    }
}

/// A generation's number in a path.
async fn generation_diff(
    State(api): State<Arc<Api>>,
    _: Token<Read>,
    Path(id): Path<i64>,
) -> Response {
    let dir = api.state_dir.clone();
    blocking(StatusCode::NOT_FOUND, move || {
        let store = voipwall_core::safety::state_store(&dir)?;
        voipwall_core::safety::generation_diff(&store, id)
    })
    .await
}

/// What `confirm` and `rollback` did.
#[derive(Serialize, Deserialize, schemars::JsonSchema)]
pub(crate) struct GenerationReply {
    /// Always true.
    ok: bool,
    /// What happened, for the operator.
    result: String,
}

/// `POST /api/v1/generations/rollback`.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RollbackBody {
    /// The generation to apply; absent: the one before the generation in
    /// force.
    to: Option<i64>,
}

async fn confirm(State(api): State<Arc<Api>>, Token(who, _): Token<Admin>) -> Response {
    let dir = api.state_dir.clone();
    blocking(StatusCode::CONFLICT, move || {
        let result = voipwall_core::safety::confirm_as(&dir, &format!("api:{who}"))?;
        Ok(GenerationReply { ok: true, result })
    })
    .await
}

async fn rollback(
    State(api): State<Arc<Api>>,
    Token(who, _): Token<Admin>,
    Body(bytes): Body,
) -> Response {
    let b: RollbackBody = match if bytes.is_empty() {
        Ok(RollbackBody { to: None })
    } else {
        body(&bytes)
    } {
        Ok(b) => b,
        Err(r) => return r,
    };
    let dir = api.state_dir.clone();
    blocking(StatusCode::CONFLICT, move || {
        let result = voipwall_core::safety::rollback(&dir, b.to, &format!("api:{who}"))?;
        Ok(GenerationReply { ok: true, result })
    })
    .await
}

/// `POST /api/v1/policy/check`: the body is a policy file's text; every
/// diagnostic comes back at once (`policy.toml:line:col`). Nothing is
/// applied.
async fn policy_check(State(api): State<Arc<Api>>, _: Token<Read>, Body(bytes): Body) -> Response {
    let Ok(text) = String::from_utf8(bytes.to_vec()) else {
        return bad("the policy is not UTF-8".into());
    };
    let dirs = api.catalog_dirs.clone();
    blocking(StatusCode::BAD_REQUEST, move || {
        let facts = voipwall_core::context::host_facts();
        voipwall_core::context::check_text("policy.toml", &text, &dirs, &facts)
    })
    .await
}

/// `GET /api/v1/events`'s query.
#[derive(Deserialize, schemars::JsonSchema)]
pub(crate) struct EventsQuery {
    /// How many recent events (default 50).
    limit: Option<usize>,
}

impl EventsQuery {
    /// How many recent events: 50 unless asked, at most the daemon's
    /// 10,000.
    fn limit(&self) -> usize {
        self.limit.unwrap_or(50).min(10_000)
    }
}

/// Recent events, oldest first (bans, alerts, verbs, daemon notes; an
/// event's own fields are free-form).
async fn events(
    State(api): State<Arc<Api>>,
    _: Token<Read>,
    Query(q): Query<EventsQuery>,
) -> Response {
    let req = Request::Events {
        follow: false,
        limit: Some(q.limit()),
    };
    asked(&api, req).await
}

/// `GET /api/v1/drops`'s query.
#[derive(Deserialize, schemars::JsonSchema)]
pub(crate) struct DropsQuery {
    /// The window, minutes (1-60, default 60).
    minutes: Option<u64>,
    /// How many sources and ports (default 20, at most 1000).
    top: Option<usize>,
    /// Samples after this sequence number (the report's `next`).
    since: Option<u64>,
}

/// The drop log: top refused sources, ports and zones over the window
/// (what `voipwall drops` shows).
async fn drops(
    State(api): State<Arc<Api>>,
    _: Token<Read>,
    Query(q): Query<DropsQuery>,
) -> Response {
    let req = Request::Drops {
        minutes: q.minutes,
        top: q.top,
        since: q.since,
    };
    asked(&api, req).await
}

/// Event streams served at once (each is one of the engine's followers,
/// which the control socket's `events --follow` shares).
const MAX_STREAMS: usize = 8;

/// Events as Server-Sent Events: the recent ones, then each as it
/// happens (`data:` is the event's JSON; `event:` its kind when it has
/// one). A client that stops reading is dropped by the engine, never
/// waited for.
async fn events_stream(
    State(api): State<Arc<Api>>,
    _: Token<Read>,
    Query(q): Query<EventsQuery>,
) -> Response {
    use axum::response::sse::{Event, KeepAlive, Sse};
    let Ok(permit) = api.streams.clone().try_acquire_owned() else {
        return Problem(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{MAX_STREAMS} event streams already"),
        )
        .into_response();
    };
    let req = Request::Events {
        follow: true,
        limit: Some(q.limit()),
    };
    let a = api.clone();
    let got = tokio::task::spawn_blocking(move || a.control.follow(req, ANSWER_WITHIN))
        .await
        .ok()
        .flatten();
    let (past, rx) = match got {
        Some((Answer::Events(e), Some(rx))) => (e.events, rx),
        Some((a, _)) => return respond_unavailable(a),
        None => {
            return Problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "the daemon did not answer".into(),
            )
            .into_response();
        }
    };
    fn event(v: &serde_json::Value) -> Result<Event, std::convert::Infallible> {
        let e = Event::default().data(v.to_string());
        Ok(
            match v
                .get("kind")
                .or_else(|| v.get("event"))
                .and_then(|k| k.as_str())
            {
                Some(k) if !k.is_empty() && !k.contains(['\n', '\r']) => e.event(k),
                _ => e,
            },
        )
    }
    let past: std::collections::VecDeque<serde_json::Value> = past.into();
    let stream =
        futures_util::stream::unfold((past, rx, permit), |(mut past, rx, permit)| async move {
            if let Some(v) = past.pop_front() {
                return Some((event(&v), (past, rx, permit)));
            }
            loop {
                match rx.try_recv() {
                    Ok(v) => return Some((event(&v), (past, rx, permit))),
                    Err(std::sync::mpsc::TryRecvError::Empty) => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(std::sync::mpsc::TryRecvError::Disconnected) => return None,
                }
            }
        });
    // A comment every 10 s: proxies keep the stream, and the connection's
    // idle timer sees it written.
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(10)))
        .into_response()
}

/// An answer that is not the one asked for: the daemon refused (too many
/// followers) or is in a state that cannot answer.
fn respond_unavailable(a: Answer) -> Response {
    match a {
        Answer::Error(e) => Problem(StatusCode::SERVICE_UNAVAILABLE, e.error).into_response(),
        _ => Problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "the daemon cannot stream events now".into(),
        )
        .into_response(),
    }
}

/// The OpenAPI document (built once).
async fn openapi_document() -> Response {
    static DOC: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let doc = DOC.get_or_init(|| openapi::document().to_string());
    ([(header::CONTENT_TYPE, "application/json")], doc.as_str()).into_response()
}

async fn metrics(State(api): State<Arc<Api>>, _: Token<Read>) -> Response {
    let status = match status_answer(&api).await {
        Ok(a) => a,
        Err(p) => return p.into_response(),
    };
    let generation = {
        let store = api
            .store
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        store.in_force_summary().ok().flatten()
    };
    let kernel = api
        .kernel
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    // The drop log's totals (a small answer: no sources, no samples).
    let drops = match ask(
        &api,
        Request::Drops {
            minutes: Some(1),
            top: Some(0),
            since: None,
        },
    )
    .await
    {
        Ok(Answer::Drops(d)) => d.totals,
        _ => Vec::new(),
    };
    match metrics::exposition(&status, generation, &kernel, &drops) {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => Problem(StatusCode::SERVICE_UNAVAILABLE, e).into_response(),
    }
}
