//! The store on real files: restart keeps bans without duplicating them,
//! active listing picks the longest ban per target, lifting, retention, and
//! a corrupt or foreign file is moved aside and replaced.
use voipwall_detect::Timestamp;
use voipwall_store::{BanFilter, BanRecord, EventRecord, Opened, Store};

fn tmp(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("voipwall-store-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d.join("state.db")
}

/// An applied generation at `at` that recorded a ruleset, with `script`
/// and `inputs`.
fn applied<'a>(
    at: u64,
    script: &'a str,
    inputs: Option<&'a str>,
) -> voipwall_store::NewGeneration<'a> {
    voipwall_store::NewGeneration {
        at: Timestamp(at),
        script,
        policy: "p",
        status: "applied",
        deadline: None,
        ir: Some("{}"),
        inputs,
    }
}

fn ban(t: &str, start: u64, ttl: u64) -> BanRecord {
    BanRecord::manual(t.parse().unwrap(), "test", Timestamp(start), ttl)
}

#[test]
fn bans_survive_reopen_once_each() {
    let p = tmp("reopen");
    {
        let (mut s, how) = Store::open(&p).unwrap();
        assert_eq!(how, Opened::Created);
        assert_eq!(
            s.record_bans(&[
                ban("203.0.113.9/32", 1000, 60_000),
                ban("2001:db8:bad::/64", 1000, 60_000)
            ])
            .unwrap(),
            2
        );
        // The same ban again (a replay after a crash) is not a second row.
        assert_eq!(
            s.record_bans(&[ban("203.0.113.9/32", 1000, 60_000)])
                .unwrap(),
            0
        );
    }
    let (s, how) = Store::open(&p).unwrap();
    assert_eq!(how, Opened::Existing);
    let active = s.active_bans(Timestamp(2000)).unwrap();
    assert_eq!(active.len(), 2);
    assert_eq!(s.counts().unwrap().bans, 2);
    std::fs::remove_dir_all(p.parent().unwrap()).ok();
}

#[test]
fn active_listing_keeps_the_longest_ban_per_target_and_lift_ends_it() {
    let mut s = Store::in_memory().unwrap();
    s.record_bans(&[
        ban("203.0.113.9/32", 1000, 86_400_000),
        ban("203.0.113.9/32", 5000, 60_000),
        ban("203.0.113.10/32", 1000, 10),
    ])
    .unwrap();
    let a = s.active_bans(Timestamp(6000)).unwrap();
    assert_eq!(a.len(), 1);
    assert_eq!(s.active_count(Timestamp(6000)).unwrap(), 1);
    assert_eq!(s.active_count(Timestamp(0)).unwrap(), 2);
    assert_eq!(a[0].end, Timestamp(1000 + 86_400_000));
    let f = BanFilter {
        net: Some("203.0.113.0/24".parse().unwrap()),
        ..BanFilter::default()
    };
    assert_eq!(s.bans(&f).unwrap().len(), 3);
    assert_eq!(
        s.lift(
            &"203.0.113.9/32".parse().unwrap(),
            Timestamp(7000),
            "cli (uid 0)"
        )
        .unwrap(),
        2
    );
    // `bans --all` says who lifted them, and when.
    let all = s.bans(&BanFilter::default()).unwrap();
    let lifted: Vec<_> = all.iter().filter(|b| b.lifted.is_some()).collect();
    assert_eq!(lifted.len(), 2);
    assert!(lifted.iter().all(
        |b| b.lifted == Some(Timestamp(7000)) && b.lifted_by.as_deref() == Some("cli (uid 0)")
    ));
    assert!(s.active_bans(Timestamp(8000)).unwrap().is_empty());
    assert_eq!(s.active_count(Timestamp(8000)).unwrap(), 0);
    s.prune(Timestamp(100_000_000), 10, 1000).unwrap();
    assert_eq!(s.counts().unwrap().bans, 0);
}

/// Events are bounded, and each kind has its own share (issue 19): a flood
/// of alerts recorded after the bans cannot flush the bans.
#[test]
fn events_and_audit_are_bounded_and_ordered_and_one_kind_cannot_flush_another() {
    let mut s = Store::in_memory().unwrap();
    let ev = |i: u64, kind: &str| EventRecord {
        at: Timestamp(i),
        kind: kind.into(),
        addr: None,
        detail: format!("{kind}{i}"),
    };
    let mut evs: Vec<_> = (0..50).map(|i| ev(i, "ban")).collect();
    evs.extend((0..5).map(|i| ev(50 + i, "reload")));
    evs.extend((0..2000).map(|i| ev(100 + i, "alert")));
    s.record_events(&evs).unwrap();
    s.prune(Timestamp(0), 100, u64::MAX).unwrap();
    let kept = s.events(1000).unwrap();
    let of = |k: &str| kept.iter().filter(|e| e.kind == k).count();
    assert_eq!((of("ban"), of("alert"), of("reload")), (40, 40, 5));
    let bans: Vec<&str> = kept
        .iter()
        .filter(|e| e.kind == "ban")
        .map(|e| e.detail.as_str())
        .collect();
    assert!(bans.contains(&"ban49") && bans.contains(&"ban10") && !bans.contains(&"ban9"));
    s.audit(Timestamp(5), "cli", "ban", "203.0.113.9").unwrap();
    assert_eq!(s.audit_log(10).unwrap()[0].2, "ban");
}

#[test]
fn a_corrupt_file_is_moved_aside_and_a_fresh_store_starts() {
    let p = tmp("corrupt");
    {
        let (mut s, _) = Store::open(&p).unwrap();
        s.record_bans(&[ban("203.0.113.9/32", 1000, 60_000)])
            .unwrap();
    }
    // Overwrite the middle of the file, as a bad disk or a stray write would.
    let mut bytes = std::fs::read(&p).unwrap();
    for b in bytes.iter_mut().skip(100).take(3000) {
        *b = 0xA5;
    }
    std::fs::write(&p, &bytes).unwrap();
    let (s, how) = Store::open(&p).unwrap();
    let Opened::Recovered { moved_to, reason } = how else {
        panic!("not recovered: {how:?}")
    };
    assert!(moved_to.exists(), "{moved_to:?}");
    assert!(!reason.is_empty());
    assert_eq!(s.counts().unwrap().bans, 0);
    // Not SQLite at all.
    let q = tmp("foreign");
    std::fs::write(
        &q,
        b"this is not a database, it is a text file that happens to be here",
    )
    .unwrap();
    let (_, how) = Store::open(&q).unwrap();
    assert!(matches!(how, Opened::Recovered { .. }), "{how:?}");
    std::fs::remove_dir_all(p.parent().unwrap()).ok();
    std::fs::remove_dir_all(q.parent().unwrap()).ok();
}

#[test]
fn one_bad_row_costs_only_itself() {
    let p = tmp("badrow");
    let (mut store, _) = Store::open(&p).unwrap();
    store
        .record_bans(&[
            ban("203.0.113.1/32", 1_000, 3_600_000),
            ban("203.0.113.2/32", 1_000, 3_600_000),
        ])
        .unwrap();
    drop(store);
    // Another tool writes rows we cannot read.
    let c = rusqlite::Connection::open(&p).unwrap();
    c.execute_batch(
        "INSERT INTO bans (target, rule, reason, origin, level, start_ms, end_ms, evidence)
           VALUES ('not-a-network', 'x', 'x', 'x', 0, 1000, 9999999999, '[]');
         INSERT INTO bans (target, rule, reason, origin, level, start_ms, end_ms, evidence)
           VALUES ('203.0.113.3/32', 'x', 'x', 'x', 'level-is-text', 1000, 9999999999, '[]');",
    )
    .unwrap();
    drop(c);
    let (store, _) = Store::open(&p).unwrap();
    let mut active: Vec<String> = store
        .active_bans(Timestamp(2_000))
        .unwrap()
        .iter()
        .map(|b| b.target.to_string())
        .collect();
    active.sort();
    assert_eq!(active, ["203.0.113.1/32", "203.0.113.2/32"]);
    assert_eq!(store.unreadable_bans().unwrap(), 2);
}

#[test]
fn a_schema_1_store_is_upgraded_in_place_and_a_newer_one_refused() {
    let p = tmp("schema");
    let c = rusqlite::Connection::open(&p).unwrap();
    c.execute_batch(
        "CREATE TABLE generations (id INTEGER PRIMARY KEY, at_ms INTEGER NOT NULL, script TEXT NOT NULL,
            policy TEXT NOT NULL, status TEXT NOT NULL, deadline_ms INTEGER);
         INSERT INTO generations (at_ms, script, policy, status) VALUES (1, 'table inet voipwall {}', 'old', 'applied');
         PRAGMA user_version = 1;",
    )
    .unwrap();
    drop(c);
    let (mut store, _) = Store::open(&p).unwrap();
    let g = store.generations(10).unwrap();
    assert_eq!(
        (g.len(), g[0].policy.as_str(), g[0].ir.as_deref()),
        (1, "old", None)
    );
    store
        .add_generation(
            &voipwall_store::NewGeneration {
                policy: "new",
                ..applied(2, "s", Some("{\"version\":\"x\"}"))
            },
            10,
        )
        .unwrap();
    assert_eq!(store.generations(1).unwrap()[0].ir.as_deref(), Some("{}"));
    // Only the newest generations keep their ruleset.
    for at in 3..8 {
        store
            .add_generation(&applied(at, "s", Some("{\"version\":\"x\"}")), 10)
            .unwrap();
    }
    let with_ir = store
        .generations(10)
        .unwrap()
        .iter()
        .filter(|g| g.ir.is_some())
        .count();
    assert_eq!(with_ir, voipwall_store::KEEP_IR as usize);
    // Their inputs go with them, and an old store gains the column.
    let gens = store.generations(10).unwrap();
    let with_inputs: Vec<i64> = gens
        .iter()
        .filter(|g| g.inputs.is_some())
        .map(|g| g.id)
        .collect();
    assert_eq!(with_inputs.len(), voipwall_store::KEEP_IR as usize);
    assert_eq!(gens[0].inputs.as_deref(), Some("{\"version\":\"x\"}"));
    store.set_generation_inputs(gens[0].id, "{}").unwrap();
    assert_eq!(
        store.in_force().unwrap().unwrap().inputs.as_deref(),
        Some("{}")
    );
    drop(store);
    let c = rusqlite::Connection::open(&p).unwrap();
    c.pragma_update(None, "user_version", 99).unwrap();
    drop(c);
    // Issue 19: "left untouched" includes the file's mode.
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
    let before = std::fs::read(&p).unwrap();
    assert!(matches!(
        Store::open(&p),
        Err(voipwall_store::StoreError::NewerSchema { found: 99, .. })
    ));
    assert_eq!(std::fs::read(&p).unwrap(), before, "left untouched");
    assert_eq!(
        std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
        0o640,
        "its mode left untouched"
    );
}

/// Issue 19: a store locked longer than the wait is refused after the wait
/// it names (not a shorter one), naming the process that holds the lock.
#[test]
fn a_lock_held_too_long_is_waited_for_as_long_as_said_and_its_holder_named() {
    let p = tmp("locked");
    drop(Store::open(&p).unwrap());
    let locker = r#"
import sqlite3, sys, time
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("BEGIN EXCLUSIVE")
c.execute("INSERT INTO audit (at_ms, actor, action, detail) VALUES (1, 'x', 'x', 'x')")
print("locked", flush=True)
time.sleep(8)
"#;
    let mut hold = std::process::Command::new("python3")
        .args(["-c", locker])
        .arg(&p)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(hold.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "locked");
    let started = std::time::Instant::now();
    let r = Store::open_waiting(&p, std::time::Duration::from_millis(2500));
    let took = started.elapsed();
    let _ = hold.kill();
    let _ = hold.wait();
    let Err(e @ voipwall_store::StoreError::Locked { waited_ms, .. }) = r else {
        panic!("not refused as locked after {took:?}");
    };
    let msg = e.to_string();
    assert!(
        (2500..4500).contains(&waited_ms) && took.as_millis() >= 2500,
        "waited {waited_ms} ms by its own account, {took:?} in fact: {msg}"
    );
    assert!(
        msg.contains(&format!("pid {}", hold.id())) && msg.contains("python3"),
        "{msg}"
    );
}

/// Issue 20 (foundation): one reader of the generation in force. A snapshot
/// counts (after a rollback to what was there before voipwall), a pending
/// one counts while it waits for its confirm, rolled-back and failed ones
/// never do.
#[test]
fn the_generation_in_force_is_one_query_and_counts_snapshots_and_pending_ones() {
    let mut s = Store::in_memory().unwrap();
    assert!(s.in_force().unwrap().is_none());
    let add = |s: &mut Store, status: &str| {
        s.add_generation(
            &voipwall_store::NewGeneration {
                at: Timestamp(1),
                script: status,
                policy: "p",
                status,
                deadline: None,
                ir: None,
                inputs: None,
            },
            10,
        )
        .unwrap()
    };
    add(&mut s, "snapshot");
    assert_eq!(s.in_force().unwrap().unwrap().status, "snapshot");
    let applied = add(&mut s, "applied");
    add(&mut s, "failed");
    add(&mut s, "rolled-back");
    assert_eq!(s.in_force().unwrap().unwrap().id, applied);
    let pending = add(&mut s, "pending");
    assert_eq!(s.in_force().unwrap().unwrap().id, pending);
    s.set_generation_status(pending, "rolled-back").unwrap();
    s.set_generation_status(applied, "rolled-back").unwrap();
    assert_eq!(s.in_force().unwrap().unwrap().status, "snapshot");
}

/// The newest bans in force with a limit (SQLite walks the start index and
/// stops) are exactly the first rows of the full listing (every row read):
/// one per target, the one that ends last, newest first; with and without
/// a rule; over seeded random histories with repeats, escalations, equal
/// ends and lifts.
#[test]
fn a_limited_listing_is_the_head_of_the_full_one() {
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    // More than 5,000 rows in force: the limited listing walks the start
    // index (below that it reads the rows in force like the full listing).
    for round in 0..6 {
        let p = tmp(&format!("limited-{round}"));
        let (mut s, _) = Store::open(&p).unwrap();
        let mut bans = Vec::new();
        for i in 0..8000 {
            let target = format!("203.0.{}.{}/32", next(2), next(100));
            let start = 1_000_000 + next(30) * 1000 + i % 1000;
            // Few distinct ends: equal ends of one target are common.
            let end = [1_035_000, 1_060_000, 1_060_000, 1_200_000][next(4) as usize];
            let ttl = end - start;
            let mut b = ban(&target, start, ttl);
            b.rule = ["scanner", "auth-bruteforce", "flood"][next(3) as usize].into();
            bans.push(b);
        }
        s.record_bans(&bans).unwrap();
        for _ in 0..5 {
            let t: ipnet::IpNet = format!("203.0.0.{}/32", next(100)).parse().unwrap();
            s.lift(&t, Timestamp(1_030_000), "cli").unwrap();
        }
        let now = Timestamp(1_040_000);
        for rule in [None, Some("scanner".to_string())] {
            let all = s
                .bans(&BanFilter {
                    active_at: Some(now),
                    rule: rule.clone(),
                    ..BanFilter::default()
                })
                .unwrap();
            if rule.is_none() {
                // Non-trivial: many targets in force, some with several rows.
                assert!(all.len() >= 10, "round {round}: {} in force", all.len());
            }
            for limit in [1, 5, 17, 1000] {
                let head = s
                    .bans(&BanFilter {
                        active_at: Some(now),
                        rule: rule.clone(),
                        limit: Some(limit),
                        ..BanFilter::default()
                    })
                    .unwrap();
                let want: Vec<_> = all.iter().take(limit).cloned().collect();
                assert_eq!(head, want, "round {round}, rule {rule:?}, limit {limit}");
            }
        }
        drop(s);
        let _ = std::fs::remove_dir_all(p.parent().unwrap());
    }
}

#[test]
fn a_feeds_last_good_content_survives_reopen_and_is_replaced_whole() {
    use voipwall_store::FeedRecord;
    let p = tmp("feeds");
    let rec = |name: &str, entries: &[(&str, Option<u64>)], cursor: Option<&str>| FeedRecord {
        name: name.into(),
        fetched: Timestamp(5_000),
        cursor: cursor.map(String::from),
        entries: entries
            .iter()
            .map(|(n, e)| (n.parse().unwrap(), *e))
            .collect(),
    };
    let a = rec(
        "apiban",
        &[("198.51.100.7/32", Some(9_000)), ("2001:db8::/48", None)],
        Some("1733"),
    );
    let b = rec("voipbl", &[("203.0.113.0/24", None)], None);
    {
        let (mut s, _) = Store::open(&p).unwrap();
        s.save_feed(&rec("apiban", &[("192.0.2.1/32", None)], None))
            .unwrap();
        s.save_feed(&a).unwrap();
        s.save_feed(&b).unwrap();
    }
    let (mut s, _) = Store::open(&p).unwrap();
    assert_eq!(s.feed("apiban").unwrap(), Some(a.clone()));
    assert_eq!(s.feed("voipbl").unwrap(), Some(b));
    assert_eq!(s.feed("nope").unwrap(), None);
    assert_eq!(s.keep_feeds(&["apiban".into()]).unwrap(), 1);
    assert_eq!(s.feed("voipbl").unwrap(), None);
    assert_eq!(s.feed("apiban").unwrap(), Some(a));
}

#[test]
fn the_outbox_keeps_order_survives_reopen_and_drops_the_oldest_past_its_cap() {
    let p = tmp("outbox");
    {
        let (mut s, _) = Store::open(&p).unwrap();
        for i in 0..5 {
            let dropped = s
                .outbox_push("crowdsec-alert", &format!("a{i}"), Timestamp(i), 3)
                .unwrap();
            assert_eq!(dropped, usize::from(i >= 3));
        }
        s.outbox_push("other", "x", Timestamp(9), 3).unwrap();
    }
    let (mut s, _) = Store::open(&p).unwrap();
    assert_eq!(s.outbox_len("crowdsec-alert").unwrap(), 3);
    let got = s.outbox_peek("crowdsec-alert", 2).unwrap();
    let bodies: Vec<&str> = got.iter().map(|(_, b)| b.as_str()).collect();
    assert_eq!(bodies, ["a2", "a3"]);
    s.outbox_done(&got.iter().map(|(id, _)| *id).collect::<Vec<_>>())
        .unwrap();
    let rest: Vec<String> = s
        .outbox_peek("crowdsec-alert", 10)
        .unwrap()
        .into_iter()
        .map(|(_, b)| b)
        .collect();
    assert_eq!(rest, ["a4"]);
    assert_eq!(s.outbox_len("other").unwrap(), 1);
}

#[test]
fn small_values_are_remembered_and_replaced() {
    let p = tmp("kv");
    {
        let (mut s, _) = Store::open(&p).unwrap();
        assert_eq!(s.kv("fleet:last:pbx2").unwrap(), None);
        s.set_kv("fleet:last:pbx2", "1-0").unwrap();
        s.set_kv("fleet:last:pbx2", "17-3").unwrap();
    }
    let (s, _) = Store::open(&p).unwrap();
    assert_eq!(s.kv("fleet:last:pbx2").unwrap().as_deref(), Some("17-3"));
}

/// Issue 25, item 4: the bans in force read page by page are exactly
/// those `active_bans` returns (one per target, the one that ends last),
/// whatever the page size, with several rows per target, expired and
/// lifted rows among them.
#[test]
fn active_bans_read_in_pages_are_the_active_bans() {
    let p = tmp("pages");
    let (mut s, _) = Store::open(&p).unwrap();
    let mut rows = Vec::new();
    for i in 0..40u64 {
        let t = format!("198.51.100.{i}/32");
        rows.push(ban(&t, 1000 + i, 60_000));
        if i % 3 == 0 {
            // An escalated ban of the same target, ending later.
            rows.push(ban(&t, 2000 + i, 600_000));
        }
        if i % 7 == 0 {
            // One already over.
            rows.push(ban(&t, 10, 20));
        }
    }
    rows.push(ban("2001:db8:bad::/64", 1000, 60_000));
    s.record_bans(&rows).unwrap();
    assert!(
        s.lift(&"198.51.100.5/32".parse().unwrap(), Timestamp(3000), "test")
            .unwrap()
            > 0
    );
    let now = Timestamp(5000);
    let mut want: Vec<(String, u64)> = s
        .active_bans(now)
        .unwrap()
        .iter()
        .map(|b| (b.target.to_string(), b.end.0))
        .collect();
    want.sort();
    for limit in [1, 2, 3, 7, 100] {
        let mut got = Vec::new();
        let mut after = String::new();
        loop {
            let (page, next) = s.active_bans_page(now, &after, limit).unwrap();
            got.extend(page.iter().map(|b| (b.target.to_string(), b.end.0)));
            match next {
                Some(n) => after = n,
                None => break,
            }
        }
        got.sort();
        assert_eq!(got, want, "pages of {limit}");
    }
}

/// Issue 25, item 18 (from its review): failed applies after it never
/// strip the generation in force, nor the one before it, of their
/// ruleset and inputs (a rollback and an upgrade's recompile need them).
#[test]
fn failed_applies_never_strip_the_generations_in_force() {
    let p = tmp("prune");
    let (mut s, _) = Store::open(&p).unwrap();
    let add = |s: &mut Store, at: u64| {
        s.add_generation(&applied(at, "s", Some("{\"version\":\"x\"}")), 20)
            .unwrap()
    };
    let before = add(&mut s, 1);
    let in_force = add(&mut s, 2);
    for at in 3..10 {
        let id = add(&mut s, at);
        s.set_generation_status(id, "failed").unwrap();
    }
    let gens = s.generations(20).unwrap();
    for id in [before, in_force] {
        let g = gens.iter().find(|g| g.id == id).unwrap();
        assert!(
            g.ir.is_some() && g.inputs.is_some(),
            "generation {id} was stripped"
        );
    }
    assert_eq!(s.in_force().unwrap().unwrap().id, in_force);
    // Older failed ones are pruned as before.
    assert!(
        gens.iter().filter(|g| g.inputs.is_some()).count() <= 2 + voipwall_store::KEEP_IR as usize
    );
    assert_eq!(s.newer_generation_by(before, "x").unwrap(), Some(in_force));
    assert_eq!(
        s.newer_generation_by(in_force, "x").unwrap(),
        None,
        "failed ones do not count"
    );
}

/// Issue 25, item 1: how long an apply took is recorded without rewriting
/// the generation's row (megabytes of script and inputs for a big policy),
/// read back for the generation in force, and pruned with its generation.
#[test]
fn an_apply_time_is_recorded_beside_its_generation() {
    let p = tmp("took");
    let (mut s, _) = Store::open(&p).unwrap();
    let big = "x".repeat(4 << 20);
    let add = |s: &mut Store, at: u64| s.add_generation(&applied(at, &big, None), 3).unwrap();
    let first = add(&mut s, 1);
    // The row itself is not written again: the bytes this process writes
    // (`wchar`, every write(2) whatever the page cache does) stay far
    // below the script's 4 MiB.
    let written = || {
        std::fs::read_to_string("/proc/self/io")
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("wchar: "))
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };
    let before = written();
    s.set_generation_took(first, 17).unwrap();
    let took = written() - before;
    assert!(took < 1 << 20, "{took} bytes written to record one number");
    assert_eq!(s.in_force_summary().unwrap(), Some((first, Some(17))));
    s.set_generation_took(first, 18).unwrap();
    assert_eq!(s.in_force_summary().unwrap(), Some((first, Some(18))));
    let second = add(&mut s, 2);
    assert_eq!(s.in_force_summary().unwrap(), Some((second, None)));
    for at in 3..6 {
        let id = add(&mut s, at);
        s.set_generation_took(id, at).unwrap();
    }
    assert!(s.generations(10).unwrap().iter().all(|g| g.id > first));
}
