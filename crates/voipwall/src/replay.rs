//! `voipwall replay`: logs or a packet capture through the detection engine
//! with their own timestamps; prints the bans that would have been made.

use std::io::{BufWriter, Read, Write as _};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context as _;
use ipnet::IpNet;
use serde_json::json;
use voipwall_detect::packet::Seen;
use voipwall_detect::{Action, Config, Engine, Event, RuleSet, Timestamp};
use voipwall_logfmt::prefix::Context;
use voipwall_logfmt::{Format, LineError};

use crate::{Globals, Invalid};
use voipwall_core::owned::Parsed;

/// Arguments of `voipwall replay`.
#[derive(clap::Args)]
pub(crate) struct ReplayArgs {
    /// Log files (`-` or none: standard input), or one capture with --pcap.
    /// A log file is read up to its size when replay opens it.
    pub(crate) files: Vec<PathBuf>,
    /// Log format id (see --list-formats; the policy's [[detect.logformat]]
    /// ids too), or `auto` for all of them at once.
    #[arg(long, short = 'f', default_value = "auto")]
    pub(crate) format: String,
    /// The files are packet captures (pcap or pcapng) of SIP.
    #[arg(long)]
    pub(crate) pcap: bool,
    /// The files are packet captures of HEP (what a PBX sends a capture
    /// server): the SIP inside each HEP packet is replayed with the
    /// addresses HEP gives. Implies --pcap.
    #[arg(long)]
    pub(crate) hep: bool,
    /// The PBX's own addresses in a capture: requests from them and responses
    /// to them are not the clients'. Never banned. Repeat it for each of the
    /// PBX's addresses, IPv4 and IPv6: SIP of a family no --pbx names is
    /// left out (and said so).
    #[arg(long = "pbx")]
    pub(crate) pbx: Vec<IpAddr>,
    /// A user-defined format: a regex with named captures (addr, user, ua, expires).
    #[arg(long, requires = "event")]
    pub(crate) regex: Option<String>,
    /// The event a --regex line stands for (auth-failed, unknown-user, ...).
    #[arg(long)]
    pub(crate) event: Option<String>,
    /// Year for timestamps without one (syslog). Default: the current year.
    #[arg(long)]
    pub(crate) year: Option<i64>,
    /// Hours east of UTC of timestamps without a zone (the PBX's local time).
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub(crate) utc_offset: f64,
    /// Count and ban IPv4 sources per prefix of this length (default: the
    /// policy's [detect] group_v4, else 32).
    #[arg(long)]
    pub(crate) group_v4: Option<u8>,
    /// Count and ban IPv6 sources per prefix of this length (default: the
    /// policy's [detect] group_v6, else 64).
    #[arg(long)]
    pub(crate) group_v6: Option<u8>,
    /// Networks never banned (a would-be ban is reported as an alert).
    #[arg(long = "never-ban")]
    pub(crate) never_ban: Vec<IpNet>,
    /// Extra rule files (override built-in rules with the same id).
    #[arg(long = "rules")]
    pub(crate) rules: Vec<PathBuf>,
    /// Also print alerts and promotions.
    #[arg(long)]
    pub(crate) verbose: bool,
    /// Parser threads for logs (default: one per core). The engine runs on
    /// one thread either way and sees lines in file order.
    #[arg(long)]
    pub(crate) threads: Option<usize>,
    /// List the built-in formats and rules, then exit.
    #[arg(long)]
    pub(crate) list_formats: bool,
}

#[derive(Default, serde::Serialize)]
struct Summary {
    lines: u64,
    matched: u64,
    ambiguous: u64,
    bad_address: u64,
    too_long: u64,
    packets: u64,
    sip_messages: u64,
    undecodable: u64,
    bans: u64,
    alerts: u64,
    promotions: u64,
    /// Accounts shielded (distributed guessing).
    shields: u64,
    /// SIP messages `--pbx` left out because no `--pbx` is of their
    /// family: `[IPv4, IPv6]`.
    skipped_family: [u64; 2],
    first: Option<Timestamp>,
    last: Option<Timestamp>,
    seconds: f64,
}

pub(crate) fn replay(cli: &Globals, a: &ReplayArgs) -> anyhow::Result<()> {
    let mut rule_texts = Vec::new();
    for p in &a.rules {
        let t = std::fs::read_to_string(p)
            .with_context(|| format!("reading rule file {}", p.display()))?;
        rule_texts.push((p.display().to_string(), t));
    }
    // The policy's [detect] settings apply when there is a policy: operators
    // tune thresholds in it and replay their history against it.
    let policy = if cli.config.exists() {
        let facts = voipwall_policy::HostFacts::default();
        Some(crate::context::load_policy(&cli.config, &cli.catalog_dirs, &facts)?.policy)
    } else if crate::detection::is_default_policy(&cli.config) {
        None
    } else {
        let shown = cli.config.display();
        return Err(Invalid(format!("error: policy {shown} does not exist")).into());
    };
    let mut set = crate::detection::rules(&cli.catalog_dirs)?;
    if !rule_texts.is_empty() {
        let extra = RuleSet::load(rule_texts.iter().map(|(n, t)| (n.as_str(), t.as_str())))
            .map_err(|errs| Invalid(errs.iter().map(|e| format!("error: {e}\n")).collect()))?;
        for r in extra.rules {
            match set.get_mut(&r.id) {
                Some(slot) => *slot = r,
                None => set.rules.push(r),
            }
        }
        if extra.recidive.is_some() {
            set.recidive = extra.recidive;
        }
    }
    let mut formats = Format::all_builtin();
    if let Some(p) = &policy {
        formats.extend(crate::detection::user_formats(p)?);
    }
    if a.list_formats {
        let mut out = std::io::stdout().lock();
        if cli.json {
            let f: Vec<_> = formats.iter().map(|f| json!({"id": f.id, "description": f.description, "patterns": f.patterns.len()})).collect();
            let r: Vec<_> = set
                .rules
                .iter()
                .map(|r| json!({"id": r.id, "kind": r.kind.name(), "summary": r.summary()}))
                .collect();
            writeln!(out, "{}", json!({"formats": f, "rules": r}))?;
        } else {
            writeln!(out, "formats:")?;
            for f in &formats {
                writeln!(out, "  {:<18} {}", f.id, f.description)?;
            }
            writeln!(out, "rules:")?;
            for r in &set.rules {
                writeln!(out, "  {}", r.summary())?;
            }
        }
        return Ok(());
    }
    let format = match (&a.regex, a.format.as_str()) {
        (Some(re), _) => Format::from_regex("user-regex", a.event.as_deref().unwrap_or(""), re).map_err(|e| Invalid(format!("error: --regex: {e}")))?,
        (None, "auto") => Format::combine("auto", formats),
        (None, id) => formats.into_iter().find(|f| f.id == id).ok_or_else(|| {
            Invalid(format!(
                "error: unknown format `{id}`; `voipwall replay --list-formats` lists them (or use --regex)"
            ))
        })?,
    };
    let mut cfg = match &policy {
        Some(p) => crate::detection::engine_config(p, set, &Default::default()),
        None => Config::new(set),
    };
    if let Some(g) = a.group_v4 {
        cfg.group_v4 = g.min(32);
    }
    if let Some(g) = a.group_v6 {
        cfg.group_v6 = g.min(128);
    }
    cfg.never_ban.extend(a.never_ban.iter().copied());
    cfg.never_ban.extend(a.pbx.iter().map(|&p| IpNet::from(p)));
    cfg.max_sources = 1_000_000;
    cfg.max_bans = 1_000_000;
    let mut engine = Engine::new(cfg);
    let year = a.year.unwrap_or_else(current_year);
    let ctx = Context {
        year,
        utc_offset: (a.utc_offset * 3600.0) as i64,
    };
    let started = Instant::now();
    let mut sum = Summary::default();
    let stdout = std::io::stdout();
    let mut out = BufWriter::with_capacity(1 << 16, stdout.lock());
    let emit =
        |engine: &mut Engine, sum: &mut Summary, out: &mut BufWriter<_>| -> std::io::Result<()> {
            while let Some(act) = engine.poll_action() {
                print_action(cli.json, a.verbose, &act, sum, out)?;
            }
            Ok(())
        };
    let feed = |engine: &mut Engine,
                sum: &mut Summary,
                out: &mut BufWriter<_>,
                at: Timestamp,
                ev: &Event<'_>|
     -> std::io::Result<()> {
        sum.first.get_or_insert(at);
        sum.last = Some(sum.last.map_or(at, |l| l.max(at)));
        while let Some(t) = engine.poll_timeout().filter(|&t| t <= at) {
            engine.handle_timeout(t);
            emit(engine, sum, out)?;
        }
        engine.handle_event(at, ev);
        emit(engine, sum, out)
    };
    if a.pcap || a.hep {
        if a.files.is_empty() {
            return Err(Invalid("error: --pcap needs a capture file".into()).into());
        }
        let mut capture = voipwall_detect::packet::Capture::new(
            voipwall_sip::tcp::TcpLimits::default(),
            crate::detection::random_seed(),
        );
        // The policy's WebSocket ports are read as the daemon reads them.
        if let Some(p) = &policy {
            capture.set_websocket_ports(p.sip_websocket_ports());
        }
        for f in &a.files {
            let data = std::fs::read(f).with_context(|| format!("reading {}", f.display()))?;
            let cap = voipwall_sip::pcap::read(&data)
                .map_err(|e| Invalid(format!("error: {}: {e}", f.display())))?;
            sum.undecodable += cap.skipped;
            let mut hep_streams = voipwall_sip::hep::HepStreams::default();
            for p in cap.packets {
                sum.packets += 1;
                let at = Timestamp(p.at_ms);
                let mut res = Ok(());
                if a.hep {
                    // HEP over UDP is one packet per datagram; over TCP,
                    // whole HEP packets within each segment are read.
                    let Ok(pl) = voipwall_sip::peel(p.ip) else {
                        sum.undecodable += 1;
                        continue;
                    };
                    let rest = pl.payload;
                    let mut one = |data: &[u8], sum: &mut Summary| -> std::io::Result<()> {
                        let Ok(d) = voipwall_sip::hep::decode(data)
                            .map_err(|_| ())
                            .and_then(|h| voipwall_detect::packet::from_hep(&h).map_err(|_| ()))
                        else {
                            sum.undecodable += 1;
                            return Ok(());
                        };
                        sum.sip_messages += 1;
                        if skip_for_pbx(&a.pbx, d.local(), d.remote(), sum) {
                            return Ok(());
                        }
                        match d.engine_event("hep") {
                            Some((ev, undecodable)) => {
                                sum.undecodable += u64::from(undecodable);
                                feed(&mut engine, sum, &mut out, at, &ev)
                            }
                            None => Ok(()),
                        }
                    };
                    if pl.transport == voipwall_sip::Transport::Udp {
                        one(rest, &mut sum)?;
                    } else {
                        // Over TCP, a HEP packet may span segments: the
                        // connection's bytes are put back together first.
                        let mut res = Ok(());
                        hep_streams.segment(
                            (pl.src, pl.sport, pl.dst, pl.dport),
                            pl.seq,
                            pl.flags & 0x02 != 0,
                            pl.payload,
                            &mut |packet| {
                                if res.is_ok() {
                                    res = one(packet, &mut sum);
                                }
                            },
                        );
                        res?;
                    }
                    continue;
                }
                capture.packet(p.at_ms, p.ip, "pcap", &mut |seen| {
                    if res.is_err() {
                        return;
                    }
                    let ev = match seen {
                        Seen::Undecodable(ev) => {
                            sum.undecodable += 1;
                            ev
                        }
                        Seen::Sip(d) => {
                            sum.sip_messages += 1;
                            // With --pbx: only traffic to or from the PBX,
                            // seen from its side.
                            if skip_for_pbx(&a.pbx, d.local(), d.remote(), &mut sum) {
                                return;
                            }
                            d.engine_event("pcap").map(|(ev, undecodable)| {
                                sum.undecodable += u64::from(undecodable);
                                ev
                            })
                        }
                    };
                    if let Some(ev) = ev {
                        res = feed(&mut engine, &mut sum, &mut out, at, &ev);
                    }
                });
                res?;
            }
        }
    } else {
        let inputs: Vec<Option<&PathBuf>> = if a.files.is_empty() {
            vec![None]
        } else {
            a.files
                .iter()
                .map(|f| (f.as_os_str() != "-").then_some(f))
                .collect()
        };
        let mut last_at = Timestamp(0);
        for input in inputs {
            let source = match input {
                Some(p) => {
                    let f = std::fs::File::open(p)
                        .with_context(|| format!("opening {}", p.display()))?;
                    match f.metadata() {
                        Ok(m) if m.is_file() => Source::File(f, m.len()),
                        _ => Source::Stream(Box::new(f)),
                    }
                }
                None => Source::Stream(Box::new(std::io::stdin())),
            };
            parallel_parse(source, &format, &ctx, a.threads, |chunk| {
                sum.lines += chunk.lines;
                sum.ambiguous += chunk.ambiguous;
                sum.bad_address += chunk.bad_address;
                sum.too_long += chunk.too_long;
                for (at, ev) in chunk.events.iter("log") {
                    sum.matched += 1;
                    let at = at.unwrap_or(last_at);
                    last_at = at;
                    feed(&mut engine, &mut sum, &mut out, at, &ev)?;
                }
                Ok(())
            })?;
        }
    }
    // Timers still running at the end of the log (challenges awaiting answers).
    if let Some(last) = sum.last {
        let end = last.plus(3_600_000);
        while let Some(t) = engine.poll_timeout().filter(|&t| t <= end) {
            engine.handle_timeout(t);
            emit(&mut engine, &mut sum, &mut out)?;
        }
    }
    sum.seconds = started.elapsed().as_secs_f64();
    out.flush()?;
    drop(out);
    for (n, family) in sum.skipped_family.iter().zip(["IPv4", "IPv6"]) {
        if *n > 0 {
            eprintln!(
                "warning: {n} SIP messages over {family} were left out: no --pbx names an {family} address of the PBX (--pbx repeats: name each of its addresses)"
            );
        }
    }
    let st = engine.stats();
    if cli.json {
        eprintln!("{}", json!({"summary": sum, "engine": st}));
    } else {
        let rate = if sum.seconds > 0.0 {
            (sum.lines.max(sum.packets) as f64 / sum.seconds) as u64
        } else {
            0
        };
        eprintln!(
            "replayed {} lines{} in {:.2} s ({rate}/s): {} events, {} ambiguous lines refused, {} bans, {} alerts{}; time span {} .. {}",
            sum.lines,
            if a.pcap {
                format!(
                    ", {} packets ({} SIP, {} undecodable)",
                    sum.packets, sum.sip_messages, sum.undecodable
                )
            } else {
                String::new()
            },
            sum.seconds,
            st.events,
            sum.ambiguous,
            sum.bans,
            sum.alerts,
            match sum.shields {
                0 => String::new(),
                1 => ", 1 account shielded".into(),
                n => format!(", {n} accounts shielded"),
            },
            sum.first.map_or("-".into(), |t| t.to_string()),
            sum.last.map_or("-".into(), |t| t.to_string()),
        );
    }
    Ok(())
}

/// With `--pbx`: whether a message is left out (not to or from the PBX,
/// seen from its side). A message left out because no `--pbx` is of its
/// family is counted, so the run can say so instead of silently skipping
/// a whole family.
fn skip_for_pbx(pbx: &[IpAddr], local: IpAddr, remote: IpAddr, sum: &mut Summary) -> bool {
    if pbx.is_empty() {
        return false;
    }
    let skip = pbx.contains(&remote) || !pbx.contains(&local);
    if skip && !pbx.iter().any(|p| p.is_ipv4() == local.is_ipv4()) {
        sum.skipped_family[usize::from(local.is_ipv6())] += 1;
    }
    skip
}

/// What one chunk of lines gave.
#[derive(Default)]
struct ChunkOut {
    lines: u64,
    ambiguous: u64,
    bad_address: u64,
    too_long: u64,
    events: Parsed,
}

fn parse_chunk(format: &Format, ctx: &Context, chunk: &[u8], mut out: ChunkOut) -> ChunkOut {
    out.events.clear();
    (out.lines, out.ambiguous, out.bad_address, out.too_long) = (0, 0, 0, 0);
    format.parse_lines(chunk, ctx, |r| {
        out.lines += 1;
        match r {
            Ok(l) => out.events.push(&l),
            Err(LineError::Ambiguous) => out.ambiguous += 1,
            Err(LineError::BadAddress) => out.bad_address += 1,
            Err(LineError::TooLong) => out.too_long += 1,
            Err(_) => {}
        }
    });
    out
}

/// Where `parallel_parse` reads lines from.
enum Source {
    /// A pipe or standard input: read in order by the calling thread.
    Stream(Box<dyn Read + Send>),
    /// A regular file of this many bytes (its size when opened): each
    /// worker reads its own chunks, so no thread copies them for another.
    File(std::fs::File, u64),
}

/// Lines are cut into chunks of this many bytes.
const CHUNK: usize = 1 << 20;

/// Parses `input` on worker threads (one per core), in chunks that hold
/// whole lines, and hands the results to `sink` in input order: the engine
/// sees the lines exactly as a single thread would.
fn parallel_parse(
    input: Source,
    format: &Format,
    ctx: &Context,
    threads: Option<usize>,
    mut sink: impl FnMut(&ChunkOut) -> std::io::Result<()>,
) -> anyhow::Result<()> {
    use std::collections::BTreeMap;
    use std::sync::{Mutex, mpsc};
    /// Chunks handed out and not yet given to `sink`: bounds the memory
    /// when the engine is slower than the parsers.
    const IN_FLIGHT: u64 = 8;
    /// A chunk to parse: bytes read by the caller, or the n-th chunk of
    /// the file for the worker to read.
    enum Job {
        Read(Vec<u8>, usize),
        At(u64),
    }
    let workers = threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .clamp(1, 16);
    let (mut stream, file) = match input {
        Source::Stream(r) => (Some(r), None),
        Source::File(f, len) => (None, Some((f, len))),
    };
    let file = file.as_ref();
    // Buffers go back to the reader once parsed: after the first few, no
    // chunk is allocated, zeroed or faulted in again.
    let (job_tx, job_rx) = mpsc::channel::<(u64, Job)>();
    let job_rx = Mutex::new(job_rx);
    let (res_tx, res_rx) = mpsc::channel::<(u64, std::io::Result<ChunkOut>)>();
    let (free_tx, free_rx) = mpsc::channel::<Vec<u8>>();
    // So do the results' buffers, once the engine has them.
    let (done_tx, done_rx) = mpsc::channel::<ChunkOut>();
    let done_rx = Mutex::new(done_rx);
    std::thread::scope(|scope| -> anyhow::Result<()> {
        for _ in 0..workers {
            let res_tx = res_tx.clone();
            let free_tx = free_tx.clone();
            let (job_rx, done_rx) = (&job_rx, &done_rx);
            scope.spawn(move || {
                let mut own = Vec::new();
                loop {
                    let job = job_rx.lock().map(|rx| rx.recv());
                    let Ok(Ok((idx, job))) = job else { break };
                    let reused = done_rx.lock().ok().and_then(|rx| rx.try_recv().ok());
                    let reused = reused.unwrap_or_default();
                    // A parser that panicked still answers, so the engine
                    // thread is not left waiting for its chunk.
                    let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        match job {
                            Job::Read(buf, len) => {
                                let out = parse_chunk(format, ctx, &buf[..len], reused);
                                // The reader may have finished: a lost buffer is fine.
                                let _ = free_tx.send(buf);
                                Ok(out)
                            }
                            Job::At(n) => file
                                .map_or(Ok(0..0), |(f, len)| {
                                    lines_of_chunk(f, *len, (n, CHUNK), &mut own)
                                })
                                .map(|r| parse_chunk(format, ctx, &own[r], reused)),
                        }
                    }))
                    .unwrap_or_else(|_| Err(std::io::Error::other("a parser thread failed")));
                    if res_tx.send((idx, out)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(res_tx);
        drop(free_tx);
        let chunks = file.map(|(_, len)| len.div_ceil(CHUNK as u64));
        // The partial last line of the previous read.
        let mut carry: Vec<u8> = Vec::new();
        let (mut sent, mut next, mut eof) = (0u64, 0u64, false);
        let mut ready: BTreeMap<u64, ChunkOut> = BTreeMap::new();
        let result = (|| -> anyhow::Result<()> {
            loop {
                while !eof && sent - next < IN_FLIGHT {
                    let job = match (chunks, stream.as_mut()) {
                        (Some(n), _) => {
                            eof = sent + 1 >= n;
                            if sent >= n {
                                break;
                            }
                            Job::At(sent)
                        }
                        (None, Some(input)) => {
                            let buf = free_rx.try_recv().unwrap_or_default();
                            let (buf, filled) =
                                read_lines(input.as_mut(), buf, &mut carry, &mut eof)?;
                            if filled == 0 {
                                continue;
                            }
                            Job::Read(buf, filled)
                        }
                        (None, None) => break,
                    };
                    job_tx.send((sent, job)).context("parser threads ended")?;
                    sent += 1;
                }
                if next == sent {
                    return Ok(());
                }
                let (idx, out) = res_rx.recv().context("parser thread ended")?;
                ready.insert(idx, out.context("reading log")?);
                while let Some(out) = ready.remove(&next) {
                    sink(&out)?;
                    let _ = done_tx.send(out);
                    next += 1;
                }
            }
        })();
        drop(job_tx);
        result
    })
}

/// Reads the next chunk of whole lines from a stream into `buf` (after the
/// partial line `carry` left by the last read); returns the buffer and how
/// many of its bytes are lines. A line longer than a chunk is read on.
fn read_lines(
    input: &mut dyn Read,
    mut buf: Vec<u8>,
    carry: &mut Vec<u8>,
    eof: &mut bool,
) -> anyhow::Result<(Vec<u8>, usize)> {
    let mut filled = carry.len();
    if buf.len() < filled + CHUNK {
        buf.resize(filled + CHUNK, 0);
    }
    buf[..filled].copy_from_slice(carry);
    carry.clear();
    let mut want = filled + CHUNK;
    loop {
        while filled < want {
            let n = input.read(&mut buf[filled..want]).context("reading log")?;
            if n == 0 {
                *eof = true;
                return Ok((buf, filled));
            }
            filled += n;
        }
        // Keep the partial last line for the next chunk.
        match memchr::memrchr(b'\n', &buf[..filled]) {
            Some(nl) => {
                carry.extend_from_slice(&buf[nl + 1..filled]);
                return Ok((buf, nl + 1));
            }
            None => {
                want = filled + CHUNK;
                buf.resize(want, 0);
            }
        }
    }
}

/// Reads into `buf` the lines of a file `len` bytes long that start in its
/// `n`-th chunk, and returns where they are in `buf`. A line belongs to the
/// chunk it starts in: the byte before the chunk says whether its first
/// byte starts a line, and the last line is read past the chunk's end to
/// its newline (or the end of the file).
fn lines_of_chunk(
    f: &std::fs::File,
    len: u64,
    (n, chunk): (u64, usize),
    buf: &mut Vec<u8>,
) -> std::io::Result<std::ops::Range<usize>> {
    let start = n * chunk as u64;
    let from = start.saturating_sub(1);
    let end = (start + chunk as u64).min(len);
    if from >= end {
        return Ok(0..0);
    }
    let size = |a: u64, b: u64| usize::try_from(b - a).unwrap_or(usize::MAX);
    buf.resize(size(from, end), 0);
    let got = read_at_most(f, buf, from)?;
    // A file cut shorter since it was opened (logrotate's copytruncate)
    // ends where the reads end, as a stream would.
    let mut ended = got < buf.len();
    buf.truncate(got);
    let first = match start {
        0 => 0,
        _ => match memchr::memchr(b'\n', buf) {
            Some(i) => i + 1,
            None => return Ok(0..0),
        },
    };
    if first >= buf.len() {
        // The chunk is inside one line that started before it.
        return Ok(0..0);
    }
    // The last line runs on to its newline: read on in small steps.
    let mut at = end;
    while !ended && at < len && buf.last() != Some(&b'\n') {
        let step = (at + chunk.min(64 * 1024) as u64).min(len);
        let old = buf.len();
        buf.resize(old + size(at, step), 0);
        let got = read_at_most(f, &mut buf[old..], at)?;
        ended = old + got < buf.len();
        buf.truncate(old + got);
        at = step;
        if let Some(nl) = memchr::memchr(b'\n', &buf[old..]) {
            buf.truncate(old + nl + 1);
            break;
        }
    }
    Ok(first..buf.len())
}

/// Reads at `at` until `buf` is full or the file ends; returns how many
/// bytes were read.
fn read_at_most(f: &std::fs::File, buf: &mut [u8], at: u64) -> std::io::Result<usize> {
    use std::os::unix::fs::FileExt as _;
    let mut got = 0;
    while got < buf.len() {
        match f.read_at(&mut buf[got..], at + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

fn print_action(
    json: bool,
    verbose: bool,
    act: &Action,
    sum: &mut Summary,
    out: &mut impl std::io::Write,
) -> std::io::Result<()> {
    match act {
        Action::Ban(b) => {
            sum.bans += 1;
            if json {
                serde_json::to_writer(&mut *out, &BanLine::of(b))?;
                writeln!(out)
            } else {
                writeln!(
                    out,
                    "{}  ban {:<22} {:<22} until {}  {}",
                    b.at,
                    b.target.to_string(),
                    b.rule,
                    b.until,
                    b.reason
                )
            }
        }
        Action::Alert {
            addr,
            rule,
            at,
            message,
            repeats,
        } => {
            sum.alerts += 1;
            if json {
                writeln!(
                    out,
                    "{}",
                    json!({"alert": true, "addr": addr, "rule": rule, "at": at.to_string(), "message": message, "repeats": repeats})
                )
            } else {
                writeln!(out, "{at}  alert {addr:<20} {rule:<22} {message}")
            }
        }
        Action::Promote { addr, at, until } => {
            sum.promotions += 1;
            if verbose {
                if json {
                    writeln!(
                        out,
                        "{}",
                        json!({"promote": true, "addr": addr, "at": at.to_string(), "until": until.to_string()})
                    )?;
                } else {
                    writeln!(out, "{at}  known {addr} until {until}")?;
                }
            }
            Ok(())
        }
        Action::Shield(v) => {
            sum.shields += 1;
            if json {
                writeln!(
                    out,
                    "{}",
                    json!({"shield": true, "account": v.account, "at": v.since.to_string(), "until": v.until.to_string(),
                           "failures": v.failures, "sources": v.sources})
                )
            } else {
                writeln!(
                    out,
                    "{}  shield {:<22} until {}  {} failed authentications from {} sources: each source failing on it is banned at its first verified failure",
                    v.since, v.account, v.until, v.failures, v.sources
                )
            }
        }
        Action::ShieldEnd(v) => {
            if json {
                writeln!(
                    out,
                    "{}",
                    json!({"shield_end": true, "account": v.account, "at": v.until.to_string(), "since": v.since.to_string(),
                           "failures": v.failures, "bans": v.bans, "alerts": v.alerts})
                )
            } else {
                writeln!(
                    out,
                    "{}  shield-end {:<18} {} failures, {} sources banned, {} alerts",
                    v.until, v.account, v.failures, v.bans, v.alerts
                )
            }
        }
        // Replay has no kernel that could lose a ban (it feeds handle_event).
        Action::Demote { .. } | Action::Reassert(_) => Ok(()),
    }
}

/// A ban as `replay --json` prints it (keys in order, times as text),
/// written without building a JSON tree per ban.
#[derive(serde::Serialize)]
struct BanLine<'a> {
    addr: Shown<IpNet>,
    at: Shown<Timestamp>,
    evidence: EvidenceLines<'a>,
    level: u32,
    offender: IpAddr,
    reason: &'a str,
    rule: &'a str,
    ttl_s: u64,
    until: Shown<Timestamp>,
}

impl<'a> BanLine<'a> {
    fn of(b: &'a voipwall_detect::Ban) -> Self {
        Self {
            addr: Shown(b.target),
            at: Shown(b.at),
            evidence: EvidenceLines(&b.evidence),
            level: b.level,
            offender: b.offender,
            reason: &b.reason,
            rule: &b.rule,
            ttl_s: b.ttl / 1000,
            until: Shown(b.until),
        }
    }
}

struct EvidenceLines<'a>(&'a [voipwall_detect::Evidence]);

impl serde::Serialize for EvidenceLines<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(serde::Serialize)]
        struct Line<'a> {
            at: Shown<Timestamp>,
            origin: &'a str,
            src: IpAddr,
            what: &'a str,
        }
        s.collect_seq(self.0.iter().map(|e| Line {
            at: Shown(e.at),
            origin: &e.origin,
            src: e.src,
            what: &e.what,
        }))
    }
}

/// A value written as its `Display` text.
struct Shown<T>(T);

impl<T: std::fmt::Display> serde::Serialize for Shown<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

/// The current year, for syslog timestamps that carry none (the one clock
/// read of replay; `--year` overrides it).
fn current_year() -> i64 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Timestamp(secs * 1000).to_civil().0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every line of a file is read once, whole, by the chunk it starts
    /// in, whatever the chunk size: lines longer than a chunk, a chunk
    /// that starts right after a newline, a last line without one.
    #[test]
    fn chunks_of_a_file_hold_each_line_once() {
        let dir = std::env::temp_dir().join(format!("vw-replay-chunks-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let texts: [&[u8]; 6] = [
            b"",
            b"\n",
            b"one line without a newline",
            b"a\nbb\nccc\n\n\ndddd\r\neeeee",
            b"short\na line much longer than any of the small chunks tried here\nx\n",
            b"\n\nab\ncd\n",
        ];
        for (i, text) in texts.iter().enumerate() {
            let path = dir.join(format!("t{i}"));
            std::fs::write(&path, text).unwrap();
            let f = std::fs::File::open(&path).unwrap();
            let len = text.len() as u64;
            for chunk in 1..=text.len().max(1) + 2 {
                let mut got = Vec::new();
                let mut buf = Vec::new();
                for n in 0..len.div_ceil(chunk as u64) {
                    let r = lines_of_chunk(&f, len, (n, chunk), &mut buf).unwrap();
                    // Each piece starts where a line starts.
                    let at = got.len();
                    assert!(
                        r.is_empty() || at == 0 || text.get(at - 1) == Some(&b'\n'),
                        "text {i}, chunks of {chunk}: chunk {n} starts inside a line"
                    );
                    got.extend_from_slice(&buf[r]);
                }
                assert_eq!(
                    String::from_utf8_lossy(&got),
                    String::from_utf8_lossy(text),
                    "text {i}, chunks of {chunk}"
                );
                // Cut shorter since it was opened: read to the new end,
                // each line once, no error.
                let was = len + 7;
                let mut got = Vec::new();
                for n in 0..was.div_ceil(chunk as u64) {
                    let r = lines_of_chunk(&f, was, (n, chunk), &mut buf).unwrap();
                    got.extend_from_slice(&buf[r]);
                }
                assert_eq!(got, *text, "text {i}, chunks of {chunk}, file cut short");
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
