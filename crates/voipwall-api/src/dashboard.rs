//! The dashboard: server-rendered HTML on the API's listener, no
//! JavaScript. Every page is a client of the API's own paths: reads ask
//! the engine (`Request::Status`, `Explain`, `Drops`) or read the store on
//! the API's connection as the API's handlers do; every change goes
//! through the same verb and safety functions as `POST /api/v1/...`, under
//! the session's token name in the audit log.
//!
//! Sessions: an admin or read token logs in; the browser gets a cookie
//! naming a session kept here (never the token), `HttpOnly`,
//! `SameSite=Strict`, `Secure` under TLS. A session ends when idle for
//! [`IDLE`], after [`ABSOLUTE`], at logout, and when its token is revoked
//! (checked on every request). Every form carries the session's CSRF
//! token; a change without it is refused (403).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Instant;

use axum::response::Redirect;

use super::*;

/// A session idle this long ends.
const IDLE: Duration = Duration::from_secs(30 * 60);
/// A session ends this long after login whatever it does.
const ABSOLUTE: Duration = Duration::from_secs(12 * 3600);
/// Sessions kept at once (the oldest goes first).
const MAX_SESSIONS: usize = 256;
/// Bans shown on a page.
const PAGE: usize = 100;

/// One logged-in browser.
#[derive(Clone)]
struct Session {
    name: String,
    role: Role,
    /// The token's hash: the session ends when it is revoked.
    token_hash: String,
    csrf: String,
    created: Instant,
    last: Instant,
}

/// The sessions, by the SHA-256 of their cookie (a leaked memory dump or
/// log line of this map cannot be replayed as a cookie).
#[derive(Default)]
pub(crate) struct Sessions(Mutex<HashMap<String, Session>>);

/// HTML-escapes text for element content and quoted attributes.
fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// Percent-encodes a path segment or a query value.
fn enc(s: &str) -> String {
    let mut o = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            o.push(b as char);
        } else {
            let _ = write!(o, "%{b:02X}");
        }
    }
    o
}

/// An `application/x-www-form-urlencoded` body's fields (the URL
/// standard's parser; a repeated field keeps its last value).
fn form(bytes: &[u8]) -> HashMap<String, String> {
    form_urlencoded::parse(bytes).into_owned().collect()
}

fn cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == "vw_session")
        .map(|(_, v)| v.to_string())
}

/// The request's session, if it has a live one (idle and absolute limits,
/// token still in force). A dead one is forgotten.
fn session(api: &Api, headers: &HeaderMap) -> Option<(String, Session)> {
    let id = cookie(headers)?;
    if id.len() != 64 {
        return None;
    }
    let key = voipwall_core::tokens::hash(&id);
    let mut map = api
        .sessions
        .0
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let s = map.get(&key)?.clone();
    let now = Instant::now();
    let alive = now.duration_since(s.last) < IDLE && now.duration_since(s.created) < ABSOLUTE;
    if !alive {
        map.remove(&key);
        return None;
    }
    let held = api
        .store
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .token_by_hash(&s.token_hash);
    match held {
        Ok(Some((name, _))) if name == s.name => {}
        // Revoked (or renamed): the session ends.
        Ok(_) => {
            map.remove(&key);
            return None;
        }
        // The store could not say: this request is refused, the session
        // stays (a busy store must not log everyone out).
        Err(_) => return None,
    }
    if let Some(x) = map.get_mut(&key) {
        x.last = now;
    }
    Some((key, s))
}

/// A page needs a session: the login page otherwise.
struct Ui(Session);

impl FromRequestParts<Arc<Api>> for Ui {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        api: &Arc<Api>,
    ) -> Result<Self, Response> {
        session(api, &parts.headers)
            .map(|(_, s)| Self(s))
            .ok_or_else(|| Redirect::to("/ui/login").into_response())
    }
}

/// Whether the form carries the session's CSRF token (compared in
/// constant time).
fn csrf_ok(s: &Session, f: &HashMap<String, String>) -> bool {
    let given = f.get("csrf").map(String::as_bytes).unwrap_or_default();
    given.len() == s.csrf.len()
        && given
            .iter()
            .zip(s.csrf.as_bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// A change: a session whose CSRF token the form carries, an admin's.
fn may_change(s: &Session, f: &HashMap<String, String>) -> Result<(), Response> {
    if !csrf_ok(s, f) {
        return Err(html(
            StatusCode::FORBIDDEN,
            "Refused",
            None,
            "<p class=\"bad\">This change did not carry the page's CSRF token: refused. Reload the page and try again.</p>".into(),
        ));
    }
    if s.role != Role::Admin {
        return Err(html(
            StatusCode::FORBIDDEN,
            "Refused",
            Some(s),
            "<p class=\"bad\">A read session sees everything and changes nothing.</p>".into(),
        ));
    }
    Ok(())
}

const CSS: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1b1f24;background:#f6f7f9}\
header{background:#1b2a41;color:#fff;padding:8px 16px;display:flex;gap:16px;align-items:center;flex-wrap:wrap}\
header a{color:#cfe0ff;text-decoration:none}header a.on{color:#fff;font-weight:600}\
header form{margin-left:auto}main{padding:16px;max-width:1200px}\
table{border-collapse:collapse;background:#fff;width:100%}td,th{border:1px solid #dde1e6;padding:4px 8px;text-align:left;vertical-align:top}\
th{background:#eef1f4}.bad{color:#a11}.good{color:#176d2c}.banner{background:#a11;color:#fff;padding:8px 16px;font-weight:600}\
.cards{display:flex;gap:12px;flex-wrap:wrap}.card{background:#fff;border:1px solid #dde1e6;padding:8px 12px;min-width:140px}\
.card b{display:block;font-size:22px}form.inline{display:inline}code,pre{font:12px ui-monospace,monospace}\
pre{background:#fff;border:1px solid #dde1e6;padding:8px;overflow:auto}";

/// A whole page.
fn html(code: StatusCode, title: &str, s: Option<&Session>, body: String) -> Response {
    let mut o = String::with_capacity(body.len() + 2048);
    let _ = write!(
        o,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\"><title>{} · voipwall</title><style>{CSS}</style></head><body>",
        esc(title)
    );
    if let Some(s) = s {
        o.push_str("<header><b>voipwall</b>");
        for (href, name) in [
            ("/ui/", "Overview"),
            ("/ui/bans", "Bans"),
            ("/ui/zones", "Zones"),
            ("/ui/generations", "Generations"),
            ("/ui/drops", "Drops"),
        ] {
            let _ = write!(
                o,
                "<a href=\"{href}\"{}>{name}</a>",
                if name == title { " class=\"on\"" } else { "" }
            );
        }
        let _ = write!(
            o,
            "<form method=\"post\" action=\"/ui/logout\"><input type=\"hidden\" name=\"csrf\" value=\"{}\"><span>{} ({})</span> <button>Log out</button></form></header>",
            esc(&s.csrf),
            esc(&s.name),
            s.role.name()
        );
    }
    let _ = write!(
        o,
        "<main><h1>{}</h1>{body}</main></body></html>",
        esc(title)
    );
    (
        code,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            // No script runs, no other origin frames or receives a form.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
            ),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        o,
    )
        .into_response()
}

fn page(title: &str, s: &Session, body: String) -> Response {
    html(StatusCode::OK, title, Some(s), body)
}

fn csrf_input(s: &Session) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        esc(&s.csrf)
    )
}

fn failed(s: &Session, title: &str, what: &str) -> Response {
    html(
        StatusCode::SERVICE_UNAVAILABLE,
        title,
        Some(s),
        format!("<p class=\"bad\">{}</p>", esc(what)),
    )
}

/// The dashboard's routes, on the API's router.
pub(crate) fn routes() -> Router<Arc<Api>> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui/") }))
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route("/ui/login", get(login_page).post(login))
        .route("/ui/logout", post(logout))
        .route("/ui/", get(overview))
        .route("/ui/bans", get(bans_page))
        .route("/ui/bans/unban", post(unban_form))
        .route("/ui/bans/extend", post(extend_form))
        .route("/ui/address/{addr}", get(address_page))
        .route("/ui/zones", get(zones_page))
        .route("/ui/generations", get(generations_page))
        .route("/ui/generations/{id}", get(generation_page))
        .route("/ui/generations/rollback", post(rollback_form))
        .route("/ui/generations/confirm", post(confirm_form))
        .route("/ui/drops", get(drops_page))
}

async fn login_page() -> Response {
    html(
        StatusCode::OK,
        "Log in",
        None,
        "<form method=\"post\" action=\"/ui/login\"><p><label>API token (admin or read; <code>voipwall token create</code>)<br><input type=\"password\" name=\"token\" size=\"72\" autocomplete=\"off\" autofocus></label></p><p><button type=\"submit\">Log in</button></p></form>".into(),
    )
}

async fn login(
    State(api): State<Arc<Api>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Body(bytes): Body,
) -> Response {
    let f = form(&bytes);
    let token = f
        .get("token")
        .map(|t| t.trim().to_string())
        .unwrap_or_default();
    let mut h = HeaderMap::new();
    if let Ok(v) = format!("Bearer {token}").parse() {
        h.insert(header::AUTHORIZATION, v);
    }
    // The API's own check: a wrong token is an `api-auth` failure of this
    // peer, a bouncer token may not log in.
    let (name, role) = match auth(&api, peer.0, &h, <Read as Roles>::MAY) {
        Ok(w) => w,
        Err(p) => {
            return html(
                p.0,
                "Log in",
                None,
                format!(
                    "<p class=\"bad\">{}</p><p><a href=\"/ui/login\">Try again</a></p>",
                    esc(&p.1)
                ),
            );
        }
    };
    let (Ok(id), Ok(csrf)) = (
        voipwall_core::tokens::random_hex(32),
        voipwall_core::tokens::random_hex(32),
    ) else {
        return html(
            StatusCode::SERVICE_UNAVAILABLE,
            "Log in",
            None,
            "<p class=\"bad\">No random source: no session.</p>".into(),
        );
    };
    let now = Instant::now();
    {
        let mut map = api
            .sessions
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.retain(|_, s| {
            now.duration_since(s.last) < IDLE && now.duration_since(s.created) < ABSOLUTE
        });
        if map.len() >= MAX_SESSIONS
            && let Some(oldest) = map
                .iter()
                .min_by_key(|(_, s)| s.last)
                .map(|(k, _)| k.clone())
        {
            map.remove(&oldest);
        }
        map.insert(
            voipwall_core::tokens::hash(&id),
            Session {
                name,
                role,
                token_hash: voipwall_core::tokens::hash(&token),
                csrf,
                created: now,
                last: now,
            },
        );
    }
    let secure = if api.tls { "; Secure" } else { "" };
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, "/ui/".to_string()),
            (
                header::SET_COOKIE,
                format!("vw_session={id}; Path=/; HttpOnly; SameSite=Strict{secure}"),
            ),
        ],
    )
        .into_response()
}

async fn logout(State(api): State<Arc<Api>>, headers: HeaderMap, Body(bytes): Body) -> Response {
    if let Some((key, s)) = session(&api, &headers) {
        let f = form(&bytes);
        if csrf_ok(&s, &f) {
            api.sessions
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .remove(&key);
        } else {
            return html(
                StatusCode::FORBIDDEN,
                "Refused",
                Some(&s),
                "<p class=\"bad\">Logout without the page's CSRF token: refused.</p>".into(),
            );
        }
    }
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, "/ui/login".to_string()),
            (
                header::SET_COOKIE,
                "vw_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0".to_string(),
            ),
        ],
    )
        .into_response()
}

fn ago(now_ms: u64, at: u64) -> String {
    let s = now_ms.saturating_sub(at) / 1000;
    match s {
        0..60 => format!("{s}s ago"),
        60..3600 => format!("{}m ago", s / 60),
        3600..86_400 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86_400),
    }
}

fn until(now_ms: u64, b: &voipwall_store::BanRecord) -> String {
    if b.is_permanent() {
        "permanent".into()
    } else {
        let s = b.end.0.saturating_sub(now_ms) / 1000;
        format!("{}h {}m left", s / 3600, s % 3600 / 60)
    }
}

/// Bans per hour and rule over the last day, stacked bars.
fn chart(counts: &[(voipwall_detect::Timestamp, String, u64)], now_ms: u64) -> String {
    const HOUR: u64 = 3_600_000;
    let first = (now_ms / HOUR).saturating_sub(23) * HOUR;
    let mut rules: Vec<&str> = counts.iter().map(|(_, r, _)| r.as_str()).collect();
    rules.sort_unstable();
    rules.dedup();
    let palette = [
        "#3465a4", "#cc0000", "#4e9a06", "#c4a000", "#75507b", "#ce5c00", "#06989a", "#555753",
    ];
    let colour = |r: &str| palette[rules.iter().position(|x| *x == r).unwrap_or(0) % palette.len()];
    let mut per: Vec<Vec<(&str, u64)>> = vec![Vec::new(); 24];
    for (t, r, n) in counts {
        if t.0 >= first {
            let i = usize::try_from((t.0 - first) / HOUR).unwrap_or(0).min(23);
            per[i].push((r.as_str(), *n));
        }
    }
    let max = per
        .iter()
        .map(|v| v.iter().map(|x| x.1).sum::<u64>())
        .max()
        .unwrap_or(0)
        .max(1);
    let (w, h) = (720.0_f64, 160.0_f64);
    let bw = w / 24.0;
    let mut o = format!(
        "<svg role=\"img\" aria-label=\"bans per hour by rule, last 24 hours\" width=\"{w}\" height=\"{}\" viewBox=\"0 0 {w} {}\" style=\"background:#fff;border:1px solid #dde1e6\">",
        h + 20.0,
        h + 20.0
    );
    for (i, v) in per.iter().enumerate() {
        let mut y = h;
        for (r, n) in v {
            let bh = (*n as f64) / (max as f64) * (h - 10.0);
            y -= bh;
            let _ = write!(
                o,
                "<rect x=\"{:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{bh:.1}\" fill=\"{}\"><title>{} {n}</title></rect>",
                i as f64 * bw + 1.0,
                bw - 2.0,
                colour(r),
                esc(r)
            );
        }
    }
    let _ = write!(
        o,
        "<text x=\"2\" y=\"{}\" font-size=\"11\">24 h ago</text><text x=\"{}\" y=\"{}\" font-size=\"11\">now</text><text x=\"2\" y=\"11\" font-size=\"11\">{max}/h</text></svg><p>",
        h + 15.0,
        w - 30.0,
        h + 15.0
    );
    for r in &rules {
        let _ = write!(
            o,
            "<span style=\"color:{}\">■</span> {} &nbsp;",
            colour(r),
            esc(r)
        );
    }
    o.push_str("</p>");
    o
}

async fn overview(State(api): State<Arc<Api>>, Ui(s): Ui) -> Response {
    let status = status_answer(&api).await;
    let now = voipwall_core::daemon::now_ms();
    let a = api.clone();
    let (counts, generation) = tokio::task::spawn_blocking(move || {
        let store = a
            .reads
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let since = voipwall_detect::Timestamp(now.saturating_sub(24 * 3_600_000));
        (
            store.ban_counts(since, 3_600_000).unwrap_or_default(),
            store.in_force_summary().ok().flatten(),
        )
    })
    .await
    .unwrap_or_default();
    let mut o = String::new();
    match status {
        Ok(Answer::Holding(h)) => {
            let _ = write!(
                o,
                "<div class=\"banner\">SAFE MODE: the policy is held back for {} s more (two boots close together). Management stays reachable.</div>",
                h.safe_mode.apply_in_s
            );
        }
        Ok(Answer::Status(st)) => {
            if let Some(held) = st.safe_mode.held_at_start_s {
                let _ = write!(
                    o,
                    "<div class=\"banner\">Safe mode held the policy back for {held} s at start.</div>"
                );
            }
            let c = &st.counters;
            let _ = write!(
                o,
                "<div class=\"cards\"><div class=\"card\">Bans now<b>{}</b></div><div class=\"card\">Bans since start<b>{}</b></div><div class=\"card\">Alerts<b>{}</b></div><div class=\"card\">Mode<b>{}</b></div><div class=\"card\">Generation in force<b>{}</b></div><div class=\"card\">Ban latency p99<b>{}</b></div></div>",
                st.active_bans,
                c.bans,
                c.alerts,
                esc(&st.mode),
                generation.map_or("none".into(), |(id, _)| id.to_string()),
                st.ban_latency_us
                    .p99
                    .map_or("–".into(), |u| format!("{:.2} ms", u as f64 / 1000.0)),
            );
            o.push_str("<h2>Bans per hour, last 24 h</h2>");
            o.push_str(&chart(&counts, now));
            o.push_str("<h2>Top rules since start</h2><table><tr><th>Rule</th><th>Origin</th><th>Bans</th></tr>");
            let mut top: Vec<(&String, &String, u64)> = c
                .bans_by
                .iter()
                .flat_map(|(r, o)| o.iter().map(move |(or, n)| (r, or, *n)))
                .collect();
            top.sort_by_key(|b| std::cmp::Reverse(b.2));
            for (r, or, n) in top.iter().take(10) {
                let _ = write!(
                    o,
                    "<tr><td>{}</td><td>{}</td><td>{n}</td></tr>",
                    esc(r),
                    esc(or)
                );
            }
            o.push_str("</table>");
            let healthy = |bad: u64| if bad == 0 { "good" } else { "bad" };
            let _ = write!(
                o,
                "<h2>Packet path</h2><table><tr><th>NFLOG copies</th><td>{}</td></tr><tr><th>NFLOG losses (buffer full)</th><td class=\"{}\">{}</td></tr><tr><th>Not SIP</th><td>{}</td></tr><tr><th>HEP received / refused</th><td>{} / {}</td></tr><tr><th>Log lines / events</th><td>{} / {}</td></tr><tr><th>Kernel refusals</th><td class=\"{}\">{}</td></tr><tr><th>Store errors</th><td class=\"{}\">{}</td></tr><tr><th>Sources tracked / evicted</th><td>{} / {}</td></tr></table>",
                c.nflog_packets,
                healthy(c.nflog_enobufs),
                c.nflog_enobufs,
                c.sip_undecodable,
                c.hep_packets,
                c.hep_refused,
                c.log_lines,
                c.log_events,
                healthy(c.kernel_errors),
                c.kernel_errors,
                healthy(st.store_errors),
                st.store_errors,
                st.engine.tracked_sources,
                st.engine.evicted_sources,
            );
        }
        Ok(_) | Err(_) => o.push_str("<p class=\"bad\">The daemon did not answer.</p>"),
    }
    page("Overview", &s, o)
}

/// `GET /ui/bans?q=&rule=`.
#[derive(Deserialize)]
struct BansSearch {
    q: Option<String>,
    rule: Option<String>,
}

async fn bans_page(
    State(api): State<Arc<Api>>,
    Ui(s): Ui,
    Query(q): Query<BansSearch>,
) -> Response {
    let net =
        q.q.as_deref()
            .map(str::trim)
            .filter(|x| !x.is_empty())
            .map(str::to_string);
    let rule = q
        .rule
        .as_deref()
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(str::to_string);
    let now = voipwall_core::daemon::now_ms();
    // The store on the API's own connection: a page of 100 out of 100,000
    // never holds the engine thread.
    let a = api.clone();
    let (n, r) = (net.clone(), rule.clone());
    let got = tokio::task::spawn_blocking(
        move || -> anyhow::Result<(usize, Vec<voipwall_store::BanRecord>)> {
            let store = a
                .reads
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let net = n
                .as_deref()
                .map(voipwall_policy::parse_net)
                .transpose()
                .map_err(|e| anyhow::anyhow!(e))?;
            let at = voipwall_detect::Timestamp(now);
            if net.is_none() && r.is_none() {
                // The first page and a count, both answered by SQLite
                // without reading every ban.
                let page = store.bans(&voipwall_store::BanFilter {
                    active_at: Some(at),
                    limit: Some(PAGE),
                    ..voipwall_store::BanFilter::default()
                })?;
                let total = usize::try_from(store.active_count(at)?).unwrap_or(usize::MAX);
                return Ok((total, page));
            }
            let all = store.bans(&voipwall_store::BanFilter {
                active_at: Some(at),
                rule: r,
                net,
                limit: None,
            })?;
            let total = all.len();
            Ok((total, all.into_iter().take(PAGE).collect()))
        },
    )
    .await;
    let (total, bans) = match got {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => return failed(&s, "Bans", &format!("{e:#}")),
        Err(e) => return failed(&s, "Bans", &e.to_string()),
    };
    let mut o = format!(
        "<form method=\"get\" action=\"/ui/bans\"><input name=\"q\" placeholder=\"address or network\" value=\"{}\"> <input name=\"rule\" placeholder=\"rule\" value=\"{}\"> <button>Search</button></form><p>{total} active ban(s){}.</p>",
        esc(net.as_deref().unwrap_or("")),
        esc(rule.as_deref().unwrap_or("")),
        if total > PAGE {
            format!("; the newest {PAGE} shown (search to narrow)")
        } else {
            String::new()
        }
    );
    o.push_str("<table><tr><th>Target</th><th>Rule</th><th>Origin</th><th>Since</th><th>Ends</th><th>Reason</th>");
    if s.role == Role::Admin {
        o.push_str("<th>Change</th>");
    }
    o.push_str("</tr>");
    for b in &bans {
        let t = b.target.to_string();
        let addr_link = b.offender.unwrap_or_else(|| b.target.addr());
        let _ = write!(
            o,
            "<tr data-target=\"{}\"><td><a href=\"/ui/address/{}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>",
            esc(&t),
            enc(&addr_link.to_string()),
            esc(&t),
            esc(&b.rule),
            esc(&b.origin),
            ago(now, b.start.0),
            until(now, b),
            esc(&b.reason)
        );
        if s.role == Role::Admin {
            let _ = write!(
                o,
                "<td><form class=\"inline unban\" method=\"post\" action=\"/ui/bans/unban\">{}<input type=\"hidden\" name=\"target\" value=\"{}\"><button>Unban</button></form> <form class=\"inline extend\" method=\"post\" action=\"/ui/bans/extend\">{}<input type=\"hidden\" name=\"target\" value=\"{}\"><input name=\"duration\" size=\"4\" value=\"7d\"><button>Extend</button></form></td>",
                csrf_input(&s),
                esc(&t),
                csrf_input(&s),
                esc(&t)
            );
        }
        o.push_str("</tr>");
    }
    o.push_str("</table>");
    page("Bans", &s, o)
}

/// The outcome of a verb, as a page.
fn outcome(s: &Session, title: &str, r: Response, back: &str) -> Response {
    let ok = r.status().is_success();
    let body = format!(
        "<p class=\"{}\">{}</p><p><a href=\"{back}\">Back</a></p>",
        if ok { "good" } else { "bad" },
        if ok { "Done." } else { "Refused." },
    );
    html(r.status(), title, Some(s), body)
}

async fn unban_form(State(api): State<Arc<Api>>, Ui(s): Ui, Body(bytes): Body) -> Response {
    let f = form(&bytes);
    if let Err(r) = may_change(&s, &f) {
        return r;
    }
    let target = f.get("target").cloned().unwrap_or_default();
    let r = verb(&api, &s.name, Op::simple(Verb::Unban, &target, None)).await;
    outcome(&s, "Unban", r, "/ui/bans")
}

async fn extend_form(State(api): State<Arc<Api>>, Ui(s): Ui, Body(bytes): Body) -> Response {
    let f = form(&bytes);
    if let Err(r) = may_change(&s, &f) {
        return r;
    }
    let target = f.get("target").cloned().unwrap_or_default();
    let Ok(Some(secs)) = duration(f.get("duration").map_or("", String::as_str)) else {
        return outcome(
            &s,
            "Extend",
            StatusCode::BAD_REQUEST.into_response(),
            "/ui/bans",
        );
    };

    let r = verb(&api, &s.name, Op::simple(Verb::Extend, &target, Some(secs))).await;
    outcome(&s, "Extend", r, "/ui/bans")
}

async fn address_page(
    State(api): State<Arc<Api>>,
    Ui(s): Ui,
    Path(addr): Path<String>,
) -> Response {
    let now = voipwall_core::daemon::now_ms();
    let x = match ask(&api, Request::Explain { addr: addr.clone() }).await {
        Ok(Answer::Explain(x)) => x,
        Ok(Answer::Error(e)) => return failed(&s, "Address", &e.error),
        _ => return failed(&s, "Address", "the daemon did not answer"),
    };
    let e = &x.engine;
    let mut o = format!(
        "<p><b>{}</b> (group {}): {}{}</p>",
        esc(&e.addr.to_string()),
        esc(&e.group.to_string()),
        match &e.banned {
            Some(b) => format!("<span class=\"bad\">banned by {}</span>", esc(&b.rule)),
            None => "<span class=\"good\">not banned</span>".into(),
        },
        if e.protected {
            " · protected (alerts only)"
        } else {
            ""
        }
    );
    o.push_str("<h2>Evidence</h2><table><tr><th>Rule</th><th>Progress</th><th>Evidence</th></tr>");
    for c in &e.counters {
        let prog: Vec<String> = c
            .progress
            .iter()
            .map(|(n, of, w)| format!("{n}/{of} in {}s", w / 1000))
            .collect();
        let ev: Vec<String> = c
            .evidence
            .iter()
            .map(|v| esc(&serde_json::to_string(v).unwrap_or_default()))
            .collect();
        let _ = write!(
            o,
            "<tr><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
            esc(&c.rule),
            esc(&prog.join(", ")),
            ev.join("<br>")
        );
    }
    o.push_str("</table><h2>Timeline (stored bans)</h2><table><tr><th>Target</th><th>Rule</th><th>Origin</th><th>Started</th><th>Ends</th><th>Lifted</th><th>Reason</th></tr>");
    for b in &x.stored_bans {
        let _ = write!(
            o,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{} ({})</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&b.target.to_string()),
            esc(&b.rule),
            esc(&b.origin),
            b.start,
            ago(now, b.start.0),
            if b.is_permanent() {
                "permanent".into()
            } else {
                b.end.to_string()
            },
            b.lifted.map_or(String::new(), |l| l.to_string()),
            esc(&b.reason)
        );
    }
    o.push_str("</table>");
    // What the kernel does with it: `voipwall explain ADDR` on the host.
    let _ = write!(
        o,
        "<p>The kernel's verdict for each port: <code>voipwall explain {}</code> on the host.</p>",
        esc(&e.addr.to_string())
    );
    page("Address", &s, o)
}

async fn zones_page(State(api): State<Arc<Api>>, Ui(s): Ui) -> Response {
    let path = match status_answer(&api).await {
        Ok(Answer::Status(st)) => st.policy.clone(),
        _ => return failed(&s, "Zones", "the daemon did not answer"),
    };
    let dirs = api.catalog_dirs.clone();
    let loaded = tokio::task::spawn_blocking(move || {
        let facts = voipwall_core::context::host_facts();
        voipwall_core::context::load_policy(std::path::Path::new(&path), &dirs, &facts)
    })
    .await;
    let p = match loaded {
        Ok(Ok(l)) => l.policy,
        Ok(Err(e)) => return failed(&s, "Zones", &format!("{e:#}")),
        Err(e) => return failed(&s, "Zones", &e.to_string()),
    };
    let zones: Vec<voipwall_policy::Zone> = voipwall_policy::Zone::ALL.to_vec();
    let mut o = String::from(
        "<p>Each cell names the policy line that grants the service in the zone (the file as it reads now).</p><table><tr><th>Service</th>",
    );
    for z in &zones {
        let _ = write!(o, "<th>{}</th>", esc(&z.to_string()));
    }
    o.push_str("</tr>");
    for (name, svc) in &p.services {
        let ports: Vec<String> = svc.ports.iter().map(ToString::to_string).collect();
        let _ = write!(
            o,
            "<tr><th>{} <small>{}</small></th>",
            esc(name),
            esc(&ports.join(" "))
        );
        for z in &zones {
            let cell = if *z == voipwall_policy::Zone::Trusted {
                "all (trusted)".to_string()
            } else {
                p.grants
                    .get(z)
                    .and_then(|g| g.iter().find(|g| g.service == *name))
                    .map_or(String::new(), |g| {
                        format!(
                            "<span class=\"good\">✔</span> <small>{}</small>",
                            esc(&g.origin.to_string())
                        )
                    })
            };
            let _ = write!(o, "<td>{cell}</td>");
        }
        o.push_str("</tr>");
    }
    o.push_str("</table><h2>Interfaces and networks</h2><table><tr><th>Interface or network</th><th>Zone</th><th>Where</th></tr>");
    for i in &p.interfaces {
        let _ = write!(
            o,
            "<tr><td>{}</td><td>{}</td><td><small>{}</small></td></tr>",
            esc(&i.name),
            esc(&i.zone.to_string()),
            esc(&i.origin.to_string())
        );
    }
    for n in &p.networks {
        let _ = write!(
            o,
            "<tr><td>{}</td><td>{}</td><td><small>{}</small></td></tr>",
            esc(&n.net.to_string()),
            esc(&n.zone.to_string()),
            esc(&n.origin.to_string())
        );
    }
    o.push_str("</table>");
    page("Zones", &s, o)
}

async fn generations_page(State(api): State<Arc<Api>>, Ui(s): Ui) -> Response {
    let rows = generation_rows(&api);
    let rows = match rows {
        Ok(r) => r,
        Err(e) => return failed(&s, "Generations", &e),
    };
    let mut o = String::from(
        "<table><tr><th>Generation</th><th>Recorded</th><th>Status</th><th>Policy</th><th></th></tr>",
    );
    for g in &rows {
        let _ = write!(
            o,
            "<tr data-generation=\"{}\"><td><a href=\"/ui/generations/{}\">{}</a>{}</td><td>{}</td><td>{}</td><td>{}</td><td>",
            g.id,
            g.id,
            g.id,
            if g.in_force { " <b>in force</b>" } else { "" },
            esc(&g.at),
            esc(&g.status),
            esc(&g.policy)
        );
        if s.role == Role::Admin {
            if g.status == "pending" {
                let _ = write!(
                    o,
                    "<form class=\"inline confirm\" method=\"post\" action=\"/ui/generations/confirm\">{}<button>Confirm</button></form>",
                    csrf_input(&s)
                );
            } else if !g.in_force {
                let _ = write!(
                    o,
                    "<form class=\"inline rollback\" method=\"post\" action=\"/ui/generations/rollback\">{}<input type=\"hidden\" name=\"to\" value=\"{}\"><button>Roll back to {}</button></form>",
                    csrf_input(&s),
                    g.id,
                    g.id
                );
            }
        }
        o.push_str("</td></tr>");
    }
    o.push_str("</table>");
    page("Generations", &s, o)
}

async fn generation_page(State(api): State<Arc<Api>>, Ui(s): Ui, Path(id): Path<i64>) -> Response {
    let dir = api.state_dir.clone();
    let d = tokio::task::spawn_blocking(move || {
        let store = voipwall_core::safety::state_store(&dir)?;
        voipwall_core::safety::generation_diff(&store, id)
    })
    .await;
    let d = match d {
        Ok(Ok(d)) => d,
        Ok(Err(e)) => return failed(&s, "Generations", &format!("{e:#}")),
        Err(e) => return failed(&s, "Generations", &e.to_string()),
    };
    let mut o = format!(
        "<p>Generation {} against {}.</p><pre>",
        d.generation,
        d.against.map_or("nothing".into(), |a| a.to_string())
    );
    for l in &d.removed {
        let _ = writeln!(o, "<span class=\"bad\">- {}</span>", esc(l));
    }
    for l in &d.added {
        let _ = writeln!(o, "<span class=\"good\">+ {}</span>", esc(l));
    }
    o.push_str("</pre>");
    page("Generations", &s, o)
}

/// What a rollback or a confirm did, as a page.
fn generation_outcome(
    s: &Session,
    r: Result<anyhow::Result<String>, tokio::task::JoinError>,
) -> Response {
    match r {
        Ok(Ok(result)) => html(
            StatusCode::OK,
            "Generations",
            Some(s),
            format!(
                "<p class=\"good\">{}</p><p><a href=\"/ui/generations\">Back</a></p>",
                esc(&result)
            ),
        ),
        Ok(Err(e)) => html(
            StatusCode::CONFLICT,
            "Generations",
            Some(s),
            format!("<p class=\"bad\">{}</p>", esc(&format!("{e:#}"))),
        ),
        Err(e) => failed(s, "Generations", &e.to_string()),
    }
}

async fn rollback_form(State(api): State<Arc<Api>>, Ui(s): Ui, Body(bytes): Body) -> Response {
    let f = form(&bytes);
    if let Err(r) = may_change(&s, &f) {
        return r;
    }
    let to = match f.get("to").map(|t| t.parse::<i64>()) {
        None => None,
        Some(Ok(n)) => Some(n),
        Some(Err(_)) => {
            return html(
                StatusCode::BAD_REQUEST,
                "Generations",
                Some(&s),
                "<p class=\"bad\">`to` is not a generation number.</p>".into(),
            );
        }
    };
    let dir = api.state_dir.clone();
    let who = format!("api:{}", s.name);
    let r =
        tokio::task::spawn_blocking(move || voipwall_core::safety::rollback(&dir, to, &who)).await;
    generation_outcome(&s, r)
}

async fn confirm_form(State(api): State<Arc<Api>>, Ui(s): Ui, Body(bytes): Body) -> Response {
    let f = form(&bytes);
    if let Err(r) = may_change(&s, &f) {
        return r;
    }
    let dir = api.state_dir.clone();
    let who = format!("api:{}", s.name);
    let r =
        tokio::task::spawn_blocking(move || voipwall_core::safety::confirm_as(&dir, &who)).await;
    generation_outcome(&s, r)
}

async fn drops_page(State(api): State<Arc<Api>>, Ui(s): Ui) -> Response {
    let now = voipwall_core::daemon::now_ms();
    let Ok(Answer::Drops(r)) = ask(
        &api,
        Request::Drops {
            minutes: Some(60),
            top: Some(50),
            since: None,
        },
    )
    .await
    else {
        return failed(&s, "Drops", "the daemon did not answer");
    };

    if !r.enabled {
        return page(
            "Drops",
            &s,
            "<p>The drop log is off (<code>[drops] log = false</code>).</p>".into(),
        );
    }
    let mut o = format!(
        "<p>{} refused packets sampled in the last hour (the kernel keeps {} a second per zone and per ban/block set).</p><table><tr><th>Source</th><th>Samples</th><th>Refused by</th><th>Last port</th><th>Last seen</th></tr>",
        r.samples, r.rate
    );
    for x in &r.sources {
        let _ = write!(
            o,
            "<tr><td><a href=\"/ui/address/{}\">{}</a></td><td>{}</td><td>{} {}</td><td>{}{}</td><td>{}</td></tr>",
            enc(&x.src.to_string()),
            esc(&x.src.to_string()),
            x.samples,
            x.kind.as_str(),
            esc(&x.name),
            esc(&x.last_proto),
            x.last_port.map_or(String::new(), |p| format!("/{p}")),
            ago(now, x.last_ms)
        );
    }
    o.push_str("</table><h2>Ports</h2><table><tr><th>Port</th><th>Samples</th></tr>");
    for p in &r.ports {
        let _ = write!(
            o,
            "<tr><td>{}{}</td><td>{}</td></tr>",
            esc(&p.proto),
            p.port.map_or(String::new(), |x| format!("/{x}")),
            p.samples
        );
    }
    o.push_str(
        "</table><h2>Zones and sets</h2><table><tr><th>Refused by</th><th>Samples</th></tr>",
    );
    for z in &r.reasons {
        let _ = write!(
            o,
            "<tr><td>{} {}</td><td>{}</td></tr>",
            z.kind.as_str(),
            esc(&z.name),
            z.samples
        );
    }
    o.push_str("</table>");
    page("Drops", &s, o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_and_forms_decode() {
        assert_eq!(
            esc("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        let f = form(b"target=203.0.113.7%2F32&csrf=ab+cd&x=%zz&=&y");
        assert_eq!(f["target"], "203.0.113.7/32");
        assert_eq!(f["csrf"], "ab cd");
        assert_eq!(f["x"], "%zz");
        assert_eq!(f["y"], "");
        assert_eq!(enc("2001:db8::1"), "2001%3Adb8%3A%3A1");
    }
}
