//! Arbitrary bytes never panic the decoder, the framer or the peeler; and a
//! message rendered from random fields decodes back to those fields.
use proptest::prelude::*;
use voipwall_sip::{Message, frame, peel};

fn token() -> impl Strategy<Value = String> {
    "[A-Za-z0-9][A-Za-z0-9._+-]{0,15}"
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn never_panics(data in prop::collection::vec(any::<u8>(), 0..600)) {
        let _ = Message::parse(&data);
        let _ = frame(&data);
        let _ = peel(&data);
        let _ = voipwall_sip::pcap::read(&data);
    }

    /// Capture-shaped input: a valid pcapng or pcap header, then random
    /// blocks of either byte order with plausible lengths.
    #[test]
    fn capture_shaped_input_never_panics(
        ng in any::<bool>(),
        be in any::<bool>(),
        blocks in prop::collection::vec((0u32..8, prop::collection::vec(any::<u8>(), 0..64), any::<bool>()), 0..12),
    ) {
        let w = |v: u32| if be { v.to_be_bytes() } else { v.to_le_bytes() };
        let mut f: Vec<u8> = if ng {
            let mut h = vec![0x0a, 0x0d, 0x0d, 0x0a];
            h.extend_from_slice(&w(28));
            h.extend_from_slice(&w(0x1a2b_3c4d));
            h.extend_from_slice(&[0, 1, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
            h.extend_from_slice(&w(28));
            h
        } else {
            let mut h = w(0xa1b2_c3d4).to_vec();
            h.extend_from_slice(&[0; 16]);
            h.extend_from_slice(&w(101));
            h
        };
        for (kind, body, lie) in blocks {
            let len = if lie { body.len() as u32 } else { 12 + body.len() as u32 };
            f.extend_from_slice(&w(if ng { kind } else { kind * 1000 }));
            f.extend_from_slice(&w(len));
            f.extend_from_slice(&body);
            f.extend_from_slice(&w(len));
        }
        let _ = voipwall_sip::pcap::read(&f);
    }

    #[test]
    fn sip_shaped_input_never_panics(
        lines in prop::collection::vec(
            prop_oneof![
                Just("REGISTER sip:a@b SIP/2.0".to_string()), Just("SIP/2.0 401 x".to_string()),
                "[A-Za-z-]{1,12}: [ -~]{0,30}", "[fivtml]: [ -~]{0,30}", Just(String::new()), Just(" \tfolded".to_string()),
                "[ -~]{0,40}",
            ],
            0..20,
        ),
        crlf in any::<bool>(),
    ) {
        let text = lines.join(if crlf { "\r\n" } else { "\n" });
        let m = Message::parse(text.as_bytes());
        if let Ok(m) = m {
            let _ = (m.from_user(), m.to_user(), m.ruri_user(), m.cseq_parts(), m.via_sent_by(), m.via_branch(), m.auth_username(), m.expires_secs(), m.content_len());
        }
        let _ = frame(text.as_bytes());
    }

    /// Header lines the quick path takes (a visible name, one line) and
    /// the ones it leaves to the general path (white space or control bytes
    /// around the name, folds, no colon, LF without CR, a cut copy) read the
    /// same as with the general path alone, for whole and captured copies.
    #[test]
    fn the_quick_header_path_reads_as_the_general_path(
        lines in prop::collection::vec(
            prop_oneof![
                "(Via|v|VIA|From|f|To|t|To |Call-ID|i|CSeq|Contact|m|User-Agent|Server|Expires|Session-Expires|x|Content-Length|l|Authorization|Proxy-Authorization|WWW-Authenticate|Proxy-Authenticate|X-Other|Call-Id):[ -~]{0,24}",
                "[ \t]?[A-Za-z:-]{0,8}[ \t\r]?:?[ -~]{0,12}",
                "[ \t][ -~]{0,12}",
                Just(String::new()),
                "[\x00-\x7f]{0,10}",
            ],
            0..14,
        ),
        ends in prop::collection::vec(prop_oneof![Just("\r\n"), Just("\n"), Just("\r")], 14),
        start in prop_oneof![Just("REGISTER sip:a@b SIP/2.0"), Just("SIP/2.0 401 Unauthorized"), Just("\r\nOPTIONS sip:x SIP/2.0")],
        cut in any::<prop::sample::Index>(),
    ) {
        let mut text = format!("{start}\r\n");
        for (l, e) in lines.iter().zip(&ends) {
            text += l;
            text += e;
        }
        let b = text.as_bytes();
        prop_assert_eq!(Message::parse(b), Message::parse_general(b, false));
        prop_assert_eq!(Message::parse_captured(b), Message::parse_general(b, true));
        let short = &b[..cut.index(b.len() + 1)];
        prop_assert_eq!(Message::parse(short), Message::parse_general(short, false));
        prop_assert_eq!(Message::parse_captured(short), Message::parse_general(short, true));
    }

    #[test]
    fn rendered_message_decodes_back(
        method in "[A-Z]{3,9}", ruser in token(), fuser in token(), tuser in token(), host in "[a-z]{1,10}\\.example",
        call_id in "[A-Za-z0-9@.-]{1,30}", cseq in 1u32..1_000_000, agent in "[A-Za-z0-9 ./()-]{1,40}",
        auth_user in prop::option::of(token()), expires in prop::option::of(0u32..100_000),
        compact in any::<bool>(), body in "[ -~]{0,50}",
    ) {
        let (f, t, i, v, l) = if compact { ("f", "t", "i", "v", "l") } else { ("From", "To", "Call-ID", "Via", "Content-Length") };
        let mut s = format!("{method} sip:{ruser}@{host} SIP/2.0\r\n{v}: SIP/2.0/UDP 203.0.113.9:5060;branch=z9hG4bK{cseq}\r\n");
        s += &format!("{f}: \"Display\" <sip:{fuser}@{host}>;tag=t1\r\n{t}: <sip:{tuser}@{host}>\r\n{i}: {call_id}\r\nCSeq: {cseq} {method}\r\n");
        s += &format!("User-Agent: {}\r\n", agent.trim());
        if let Some(u) = &auth_user {
            s += &format!("Authorization: Digest username=\"{u}\", realm=\"r\"\r\n");
        }
        if let Some(e) = expires {
            s += &format!("Expires: {e}\r\n");
        }
        s += &format!("{l}: {}\r\n\r\n{body}", body.len());
        let m = Message::parse(s.as_bytes()).unwrap();
        prop_assert_eq!(m.method(), Some(method.as_bytes()));
        prop_assert_eq!(m.ruri_user(), Some(ruser.as_bytes()));
        prop_assert_eq!(m.from_user(), Some(fuser.as_bytes()));
        prop_assert_eq!(m.to_user(), Some(tuser.as_bytes()));
        prop_assert_eq!(m.call_id, Some(call_id.as_bytes()));
        prop_assert_eq!(m.cseq_parts(), Some((u64::from(cseq), method.as_bytes())));
        prop_assert_eq!(m.agent(), Some(agent.trim().as_bytes()));
        prop_assert_eq!(m.auth_username(), auth_user.as_deref().map(str::as_bytes));
        prop_assert_eq!(m.expires_secs(), expires);
        prop_assert_eq!(m.via_sent_by(), Some(&b"203.0.113.9:5060"[..]));
        prop_assert_eq!(frame(s.as_bytes()).unwrap(), Some((0, s.len())));
    }
}

mod tcp {
    use proptest::prelude::*;
    use voipwall_sip::tcp::{FlowKey, Piece, Reassembler, TcpLimits};

    fn key() -> FlowKey {
        FlowKey {
            src: "2001:db8::7".parse().unwrap(),
            sport: 40000,
            dst: "2001:db8::1".parse().unwrap(),
            dport: 5060,
        }
    }

    fn key_ws() -> FlowKey {
        FlowKey {
            sport: 40001,
            ..key()
        }
    }

    fn message(i: usize, body: usize, crlf: bool) -> Vec<u8> {
        let lead = if crlf { "\r\n\r\n" } else { "" };
        format!(
            "{lead}OPTIONS sip:{i}@pbx SIP/2.0\r\nCall-ID: {i}\r\nCSeq: {i} OPTIONS\r\nContent-Length: {body}\r\n\r\n{}",
            "b".repeat(body)
        )
        .into_bytes()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        /// Messages cut at random points, with random retransmissions of
        /// earlier pieces and neighbours swapped (the first data segment
        /// too: the SYN says where the stream starts), come out whole, in
        /// order.
        #[test]
        fn any_segmentation_yields_the_messages(
            bodies in prop::collection::vec((0usize..300, any::<bool>()), 1..8),
            cuts in prop::collection::vec(1usize..200, 1..40),
            swaps in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
            repeats in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
            isn in any::<u32>(),
        ) {
            let msgs: Vec<Vec<u8>> = bodies.iter().enumerate().map(|(i, &(b, c))| message(i, b, c)).collect();
            let stream = msgs.concat();
            let mut segs = Vec::new();
            let (mut at, mut k) = (0usize, 0usize);
            while at < stream.len() {
                let n = cuts[k % cuts.len()].min(stream.len() - at);
                segs.push((isn.wrapping_add(at as u32), stream[at..at + n].to_vec()));
                at += n;
                k += 1;
            }
            for r in &repeats {
                let s = segs[r.index(segs.len())].clone();
                let to = (r.index(segs.len()) + 2).min(segs.len());
                segs.insert(to, s);
            }
            for s in &swaps {
                let i = s.index(segs.len());
                if i + 1 < segs.len() {
                    segs.swap(i, i + 1);
                }
            }
            let mut r = Reassembler::new(TcpLimits::default(), 1);
            let mut got = Vec::new();
            r.segment(0, key(), isn.wrapping_sub(1), voipwall_sip::tcp::SYN, &[], &mut |_| {});
            for (seq, d) in &segs {
                r.segment(0, key(), *seq, 0, d, &mut |p| {
                    if let Piece::Message(m) = p {
                        got.push(m.to_vec());
                    }
                });
            }
            let want: Vec<Vec<u8>> = msgs.iter().map(|m| {
                let s = m.iter().position(|&b| b != b'\r' && b != b'\n').unwrap();
                m[s..].to_vec()
            }).collect();
            prop_assert_eq!(got, want);
            prop_assert_eq!(r.stats().bytes, 0);
        }

        /// SIP over WebSocket: messages cut into frames at random points
        /// (continuations, pings between, masked or not) and the stream cut
        /// into random segments come out whole, in order.
        #[test]
        fn any_websocket_framing_yields_the_messages(
            bodies in prop::collection::vec((0usize..200, any::<bool>()), 1..6),
            frame_cuts in prop::collection::vec(1usize..120, 1..10),
            seg_cuts in prop::collection::vec(1usize..90, 1..20),
            pings in prop::collection::vec(any::<bool>(), 1..10),
            key in proptest::option::of(any::<[u8; 4]>()),
        ) {
            use voipwall_sip::ws;
            let msgs: Vec<Vec<u8>> = bodies.iter().enumerate().map(|(i, &(b, _))| message(i, b, false)).collect();
            let mut stream = b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n".to_vec();
            let mut k = 0;
            for m in &msgs {
                let mut at = 0;
                let mut first = true;
                while at < m.len() {
                    let n = frame_cuts[k % frame_cuts.len()].min(m.len() - at);
                    let fin = at + n == m.len();
                    stream.extend(ws::encode(if first { 1 } else { 0 }, fin, key, &m[at..at + n]));
                    if pings[k % pings.len()] && !fin {
                        stream.extend(ws::encode(9, true, key, b"p"));
                    }
                    first = false;
                    at += n;
                    k += 1;
                }
            }
            let mut r = Reassembler::new(TcpLimits::default(), 1);
            r.set_websocket_ports(vec![(5066, 5066)]);
            let wkey = FlowKey { dport: 5066, ..key_ws() };
            r.segment(0, wkey, 99, voipwall_sip::tcp::SYN, &[], &mut |_| {});
            let mut got = Vec::new();
            let (mut at, mut i) = (0usize, 0usize);
            while at < stream.len() {
                let n = seg_cuts[i % seg_cuts.len()].min(stream.len() - at);
                r.segment(0, wkey, 100 + at as u32, 0, &stream[at..at + n], &mut |p| {
                    if let Piece::Message(m) = p {
                        got.push(m.to_vec());
                    }
                });
                at += n;
                i += 1;
            }
            prop_assert_eq!(got, msgs);
            prop_assert_eq!(r.stats().bytes, 0);
        }

        /// Random segments on random flows never panic and never hold more
        /// than the limits allow.
        #[test]
        fn arbitrary_segments_stay_within_bounds(
            segs in prop::collection::vec((0u16..40, any::<u32>(), any::<u8>(), prop::collection::vec(any::<u8>(), 0..300)), 0..200),
        ) {
            let limits = TcpLimits { max_flows: 16, flow_bytes: 1024, total_bytes: 4096, max_out_of_order: 4, idle_ms: 1000, max_syns: 8 };
            let mut r = Reassembler::new(limits, 9);
            for (i, (port, seq, flags, data)) in segs.iter().enumerate() {
                let k = FlowKey { sport: *port, ..key() };
                r.segment(i as u64, k, *seq % 4096, *flags, data, &mut |_| {});
                let s = r.stats();
                prop_assert!(s.flows <= 16);
                prop_assert!(s.bytes <= 4096, "{:?}", s);
            }
            r.expire(u64::MAX);
            prop_assert_eq!(r.stats().bytes, 0);
        }
    }
}

mod hep {
    use std::net::IpAddr;

    use proptest::prelude::*;
    use voipwall_sip::hep::{Hep, decode, encode_v3, frame};

    fn ip() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            any::<[u8; 4]>().prop_map(IpAddr::from),
            any::<[u8; 16]>().prop_map(IpAddr::from),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..400), v3 in any::<bool>()) {
            let mut b = data;
            if v3 && b.len() >= 6 {
                b[..4].copy_from_slice(b"HEP3");
            }
            let _ = decode(&b);
            let _ = frame(&b);
        }

        /// What encode_v3 writes, decode reads back, field for field, and
        /// a stream of such packets frames into them.
        #[test]
        fn v3_round_trips(
            src in ip(), dst in ip(), sport in any::<u16>(), dport in any::<u16>(),
            proto in any::<u8>(), ptype in proptest::option::of(any::<u8>()),
            cid in proptest::option::of(any::<u32>()), time in proptest::option::of(any::<(u32, u32)>()),
            payload in prop::collection::vec(any::<u8>(), 1..300),
        ) {
            // Both addresses of one family, as senders write them.
            let dst = match (src, dst) {
                (IpAddr::V4(_), IpAddr::V6(d)) => IpAddr::from(d.octets()[..4].try_into().map(|a: [u8; 4]| a).unwrap()),
                (IpAddr::V6(_), IpAddr::V4(d)) => IpAddr::from(d.to_ipv6_mapped()),
                _ => dst,
            };
            let h = Hep { version: 3, src, dst, sport, dport, ip_proto: proto, payload_type: ptype, capture_id: cid, time, payload: &payload };
            let b = encode_v3(&h);
            prop_assert_eq!(decode(&b), Ok(h));
            let stream = [b.clone(), b.clone()].concat();
            prop_assert_eq!(frame(&stream), Ok(Some(b.len())));
        }
    }
}
