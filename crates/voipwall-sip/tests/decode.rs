//! Decoding cases: compact forms, folding, several Vias, responses, framing, peeling.
// A test is a driver: it may read its seed files (the crate itself may not).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]
use std::net::IpAddr;

use voipwall_sip::{Message, SipError, StartLine, Transport, frame, peel};

const REGISTER: &[u8] = b"REGISTER sip:pbx.example.net SIP/2.0\r\n\
Via: SIP/2.0/UDP 203.0.113.9:5062;rport;branch=z9hG4bK-524287-1\r\n\
Max-Forwards: 70\r\n\
From: \"1001\" <sip:1001@pbx.example.net>;tag=4a2b\r\n\
To: <sip:1001@pbx.example.net>\r\n\
Call-ID: 8d1c3f@203.0.113.9\r\n\
CSeq: 2 REGISTER\r\n\
Contact: <sip:1001@203.0.113.9:5062>\r\n\
Authorization: Digest username=\"1001\", realm=\"pbx\", nonce=\"abc\", uri=\"sip:pbx.example.net\", response=\"00\"\r\n\
Expires: 3600\r\n\
User-Agent: Yealink SIP-T46S 66.86.0.15\r\n\
Content-Length: 0\r\n\r\n";

#[test]
fn register_fields() {
    let m = Message::parse(REGISTER).unwrap();
    assert!(matches!(
        m.start,
        StartLine::Request {
            method: b"REGISTER",
            ..
        }
    ));
    assert_eq!(m.ruri_user(), None, "no user part in sip:pbx.example.net");
    assert_eq!(m.from_user(), Some(&b"1001"[..]));
    assert_eq!(m.to_user(), Some(&b"1001"[..]));
    assert_eq!(m.call_id, Some(&b"8d1c3f@203.0.113.9"[..]));
    assert_eq!(m.cseq_parts(), Some((2, &b"REGISTER"[..])));
    assert_eq!(m.via_sent_by(), Some(&b"203.0.113.9:5062"[..]));
    assert_eq!(m.via_branch(), Some(&b"z9hG4bK-524287-1"[..]));
    assert_eq!(m.via_count, 1);
    assert!(m.has_auth());
    assert_eq!(m.auth_username(), Some(&b"1001"[..]));
    assert_eq!(m.expires_secs(), Some(3600));
    assert_eq!(m.content_len(), Some(0));
    assert_eq!(m.agent(), Some(&b"Yealink SIP-T46S 66.86.0.15"[..]));
    assert_eq!(m.contact, Some(&b"<sip:1001@203.0.113.9:5062>"[..]));
    assert_eq!(m.head_len, REGISTER.len());
}

#[test]
fn compact_forms_case_folding_and_vias() {
    let raw = b"INVITE sip:0044201234567@pbx.example SIP/2.0\n\
v: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bKa, SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKb\n\
VIA: SIP/2.0/TCP 10.0.0.2;branch=z9hG4bKc\n\
f: sip:100@198.51.100.7;tag=x\n\
t: <sip:0044201234567@pbx.example>\n\
i: call-1\n\
cseq: 1\n  INVITE\n\
user-agent: friendly-\n\tscanner\n\
m: <sip:100@198.51.100.7>\n\
l: 5\n\
\n\
v=0\r\n";
    let m = Message::parse(raw).unwrap();
    assert_eq!(m.ruri_user(), Some(&b"0044201234567"[..]));
    assert_eq!(m.from_user(), Some(&b"100"[..]));
    assert_eq!(m.via_count, 3);
    assert_eq!(m.via_sent_by(), Some(&b"198.51.100.7:5060"[..]));
    assert_eq!(m.via_branch(), Some(&b"z9hG4bKa"[..]));
    // Folded values keep their inner line break; the parts still come out.
    assert_eq!(m.cseq_parts(), Some((1, &b"INVITE"[..])));
    assert!(
        m.user_agent.unwrap().starts_with(b"friendly-")
            && m.user_agent.unwrap().ends_with(b"scanner")
    );
    assert_eq!(m.content_len(), Some(5));
    assert!(!m.has_auth());
}

#[test]
fn responses_take_the_method_from_cseq() {
    let raw = b"SIP/2.0 401 Unauthorized\r\nVia: SIP/2.0/UDP 203.0.113.9:5062;branch=z9hG4bK1\r\n\
From: <sip:1001@pbx>;tag=1\r\nTo: <sip:1001@pbx>;tag=2\r\nCall-ID: c1\r\nCSeq: 1 REGISTER\r\n\
WWW-Authenticate: Digest realm=\"pbx\", nonce=\"n\"\r\nServer: kamailio (5.6.3 (x86_64/linux))\r\nContent-Length: 0\r\n\r\n";
    let m = Message::parse(raw).unwrap();
    assert_eq!(m.status(), Some(401));
    assert_eq!(m.method(), Some(&b"REGISTER"[..]));
    assert_eq!(m.agent(), Some(&b"kamailio (5.6.3 (x86_64/linux))"[..]));
    assert!(
        !m.has_auth(),
        "WWW-Authenticate is a challenge, not credentials"
    );
}

#[test]
fn proxy_authorization_and_tel_uris() {
    let raw = b"INVITE tel:+441234567;phone-context=x SIP/2.0\r\nProxy-Authorization: Digest realm=\"r\",username=bob,nonce=\"n\"\r\nCSeq: 2 INVITE\r\n\r\n";
    let m = Message::parse(raw).unwrap();
    assert_eq!(m.ruri_user(), Some(&b"+441234567"[..]));
    assert_eq!(m.auth_username(), Some(&b"bob"[..]));
}

#[test]
fn malformed_input_is_an_error_not_a_panic() {
    let cases: &[(&[u8], SipError)] = &[
        (b"", SipError::Truncated),
        (b"REGISTER sip:x SIP/2.0\r\nVia: a\r\n", SipError::Truncated),
        (b"HELLO\r\n\r\n", SipError::BadStartLine),
        (b"SIP/2.0 999 Nope\r\n\r\n", SipError::BadStartLine),
        (b"SIP/2.0 abc Nope\r\n\r\n", SipError::BadStartLine),
        (b"REGISTER sip:x HTTP/1.1\r\n\r\n", SipError::BadStartLine),
        (
            b"REGISTER sip:x SIP/2.0\r\nno colon here\r\n\r\n",
            SipError::BadHeader,
        ),
        (
            b"REGISTER sip:x SIP/2.0\r\n: empty name\r\n\r\n",
            SipError::BadHeader,
        ),
    ];
    for (raw, want) in cases {
        assert_eq!(
            Message::parse(raw).unwrap_err(),
            *want,
            "{:?}",
            String::from_utf8_lossy(raw)
        );
    }
    let mut huge = b"OPTIONS sip:x SIP/2.0\r\n".to_vec();
    for _ in 0..4000 {
        huge.extend_from_slice(b"X-Pad: 0123456789\r\n");
    }
    assert_eq!(Message::parse(&huge).unwrap_err(), SipError::TooLong);
}

#[test]
fn stream_framing() {
    let one = b"OPTIONS sip:x SIP/2.0\r\nCSeq: 1 OPTIONS\r\nContent-Length: 4\r\n\r\nbody";
    let mut stream = b"\r\n\r\n".to_vec(); // keep-alives
    stream.extend_from_slice(one);
    stream.extend_from_slice(one);
    let (skip, len) = frame(&stream).unwrap().unwrap();
    assert_eq!((skip, len), (4, one.len()));
    let rest = &stream[skip + len..];
    assert_eq!(frame(rest).unwrap(), Some((0, one.len())));
    // Partial: head complete, body not; head incomplete.
    assert_eq!(frame(&one[..one.len() - 1]).unwrap(), None);
    assert_eq!(frame(&one[..20]).unwrap(), None);
    assert_eq!(
        frame(b"OPTIONS sip:x SIP/2.0\r\nl: x\r\n\r\n").unwrap_err(),
        SipError::BadHeader
    );
}

fn ipv4_udp(payload: &[u8]) -> Vec<u8> {
    let total = u16::try_from(20 + 8 + payload.len()).unwrap();
    let mut p = vec![
        0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0, 203, 0, 113, 9, 203, 0, 113, 1,
    ];
    p[2..4].copy_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&5062u16.to_be_bytes());
    p.extend_from_slice(&5060u16.to_be_bytes());
    p.extend_from_slice(&u16::try_from(8 + payload.len()).unwrap().to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    p
}

#[test]
fn peel_ipv4_udp_then_parse() {
    let pkt = ipv4_udp(REGISTER);
    let p = peel(&pkt).unwrap();
    assert_eq!(p.src, "203.0.113.9".parse::<IpAddr>().unwrap());
    assert_eq!(
        (p.sport, p.dport, p.transport),
        (5062, 5060, Transport::Udp)
    );
    assert_eq!(
        Message::parse(p.payload).unwrap().from_user(),
        Some(&b"1001"[..])
    );
    // Cut by NFLOG's snaplen: still peels, the payload is shorter.
    assert_eq!(peel(&pkt[..100]).unwrap().payload.len(), 100 - 28);
    // A non-first fragment has no UDP header.
    let mut frag = pkt.clone();
    frag[6..8].copy_from_slice(&0x0010u16.to_be_bytes());
    assert_eq!(peel(&frag).unwrap_err(), SipError::Fragment);
    assert_eq!(peel(&pkt[..10]).unwrap_err(), SipError::Truncated);
}

#[test]
fn peel_ipv6_udp_with_an_extension_header_and_ipv4_tcp() {
    let payload = b"OPTIONS sip:x SIP/2.0\r\n\r\n";
    let mut p = vec![0x60, 0, 0, 0];
    let len = u16::try_from(8 + 8 + payload.len()).unwrap();
    p.extend_from_slice(&len.to_be_bytes());
    p.extend_from_slice(&[0, 64]); // next header: hop-by-hop, hop limit
    p.extend_from_slice(
        &"2001:db8::9"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    p.extend_from_slice(
        &"2001:db8::1"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    p.extend_from_slice(&[17, 0, 1, 4, 0, 0, 0, 0]); // hop-by-hop: next UDP, length 0 (8 bytes)
    p.extend_from_slice(&5060u16.to_be_bytes());
    p.extend_from_slice(&5060u16.to_be_bytes());
    p.extend_from_slice(&u16::try_from(8 + payload.len()).unwrap().to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    let peeled = peel(&p).unwrap();
    assert_eq!(peeled.src, "2001:db8::9".parse::<IpAddr>().unwrap());
    assert_eq!(peeled.payload, payload);

    let mut t = ipv4_udp(b"");
    t.truncate(20);
    t[9] = 6;
    let mut tcp = vec![
        0x13, 0xc4, 0x13, 0xc4, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0,
    ];
    tcp.extend_from_slice(payload);
    t.extend_from_slice(&tcp);
    let total = u16::try_from(t.len()).unwrap();
    t[2..4].copy_from_slice(&total.to_be_bytes());
    let peeled = peel(&t).unwrap();
    assert_eq!(peeled.transport, Transport::Tcp);
    assert_eq!(peeled.payload, payload);
}

/// The fuzz seeds for `pcap_file` are real captures: each holds one
/// REGISTER that reads and decodes.
#[test]
fn pcap_seeds_decode() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz/seeds/pcap_file");
    let mut n = 0;
    for e in std::fs::read_dir(dir).expect("seed dir") {
        let data = std::fs::read(e.expect("entry").path()).expect("read");
        let c = voipwall_sip::pcap::read(&data).expect("capture");
        assert_eq!((c.packets.len(), c.skipped), (1, 0));
        let p = peel(c.packets[0].ip).expect("peel");
        let m = Message::parse(p.payload).expect("sip");
        assert_eq!(m.call_id, Some(&b"a1"[..]));
        n += 1;
    }
    assert_eq!(n, 2);
}

/// Shapes PBXs accept that a strict reading refused (issue 12): each must
/// decode with the fields detection needs.
#[test]
fn what_pbxs_accept_decodes() {
    let base = "REGISTER sip:192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bK1\r\nFrom: <sip:1001@192.0.2.1>;tag=1\r\nTo: <sip:1001@192.0.2.1>\r\nCall-ID: c1\r\nCSeq: 7 REGISTER\r\nContent-Length: 0\r\n\r\n";
    let shapes: Vec<(&str, String)> = vec![
        ("leading CRLF", format!("\r\n{base}")),
        (
            "several leading CRLFs and a bare LF",
            format!("\r\n\r\n\n{base}"),
        ),
        (
            "trailing space on the request line",
            base.replacen(" SIP/2.0\r\n", " SIP/2.0 \r\n", 1),
        ),
        (
            "tab and double space in the request line",
            base.replacen(
                "REGISTER sip:192.0.2.1 SIP/2.0",
                "REGISTER\tsip:192.0.2.1  SIP/2.0",
                1,
            ),
        ),
        (
            "a 20 KB header before Call-ID",
            base.replacen(
                "Call-ID:",
                &format!("X-Pad: {}\r\nCall-ID:", "a".repeat(20_000)),
                1,
            ),
        ),
        (
            "CSeq above 2^32",
            base.replacen("CSeq: 7 ", "CSeq: 4294967303 ", 1),
        ),
        (
            "lower-case version",
            base.replacen(" SIP/2.0\r\n", " sip/2.0\r\n", 1),
        ),
    ];
    for (what, msg) in &shapes {
        let m = Message::parse(msg.as_bytes()).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(m.method(), Some(&b"REGISTER"[..]), "{what}");
        assert_eq!(m.call_id, Some(&b"c1"[..]), "{what}");
        assert_eq!(m.to_user(), Some(&b"1001"[..]), "{what}");
        assert!(m.cseq_parts().is_some(), "{what}");
        assert!(m.complete, "{what}");
        assert_eq!(
            &msg.as_bytes()[m.head_len..],
            b"",
            "{what}: head_len covers the head"
        );
    }
    let big = Message::parse(shapes[5].1.as_bytes()).unwrap();
    assert_eq!(big.cseq_parts().unwrap().0, 4_294_967_303);
}

/// A copy cut short (a capture's snaplen) keeps every complete line; a
/// line cut in the middle is not used, and `complete` says so.
#[test]
fn a_cut_copy_keeps_its_complete_lines() {
    let msg = b"INVITE sip:900441234@192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/UDP 203.0.113.5;branch=z9hG4bK2\r\nFrom: <sip:a@b>;tag=1\r\nCall-ID: abc\r\nCSeq: 1 INVITE\r\nTo: <sip:900441234@192.0.2.1>\r\nContent-Length: 0\r\n\r\n";
    let cut_at = msg.windows(4).position(|w| w == b"To: ").unwrap() + 10;
    let m = Message::parse_captured(&msg[..cut_at]).unwrap();
    assert!(!m.complete);
    assert_eq!(m.call_id, Some(&b"abc"[..]));
    assert_eq!(m.cseq_parts(), Some((1, &b"INVITE"[..])));
    assert_eq!(m.to, None, "the cut To line is not read");
    assert_eq!(m.ruri_user(), Some(&b"900441234"[..]));
    assert_eq!(Message::parse(&msg[..cut_at]), Err(SipError::Truncated));
    // A fold cut in the middle drops its header too.
    let folded = b"OPTIONS sip:x SIP/2.0\r\nCall-ID: k\r\nUser-Agent: friendly\r\n scanner";
    let m = Message::parse_captured(folded).unwrap();
    assert_eq!((m.call_id, m.user_agent), (Some(&b"k"[..]), None));
}

/// The nonce a challenge issues and the nonce credentials carry: what lets
/// detection tell a guess from a forged failure (issue 12).
#[test]
fn challenge_and_credential_nonces() {
    let c = b"SIP/2.0 401 Unauthorized\r\nCall-ID: a\r\nCSeq: 1 REGISTER\r\nWWW-Authenticate: Digest realm=\"pbx.test\", nonce=\"Z3k1aGV4YQ==\", qop=\"auth\"\r\n\r\n";
    let m = Message::parse(c).unwrap();
    assert_eq!(m.challenge_nonce(), Some(&b"Z3k1aGV4YQ=="[..]));
    let r = b"REGISTER sip:pbx.test SIP/2.0\r\nCall-ID: a\r\nCSeq: 2 REGISTER\r\nAuthorization: Digest username=\"1002\", realm=\"pbx.test\", cnonce=\"zzz\", nonce=\"Z3k1aGV4YQ==\", uri=\"sip:pbx.test\", response=\"0\"\r\n\r\n";
    let m = Message::parse(r).unwrap();
    assert_eq!(
        m.auth_nonce(),
        Some(&b"Z3k1aGV4YQ=="[..]),
        "cnonce is not nonce"
    );
    let p = b"SIP/2.0 407 Proxy Authentication Required\r\nCall-ID: b\r\nCSeq: 1 INVITE\r\nProxy-Authenticate: Digest nonce=abc, realm=r\r\n\r\n";
    assert_eq!(
        Message::parse(p).unwrap().challenge_nonce(),
        Some(&b"abc"[..])
    );
    let none = b"REGISTER sip:x SIP/2.0\r\nCall-ID: c\r\nCSeq: 1 REGISTER\r\nAuthorization: Digest username=\"u\"\r\n\r\n";
    assert_eq!(Message::parse(none).unwrap().auth_nonce(), None);
}

#[test]
fn session_expires_is_read_with_or_without_parameters() {
    let m = Message::parse(
        b"UPDATE sip:1@x SIP/2.0\r\nCall-ID: a\r\nCSeq: 2 UPDATE\r\nSession-Expires: 1800;refresher=uac\r\n\r\n",
    )
    .unwrap();
    assert_eq!(m.session_expires_secs(), Some(1800));
    let m =
        Message::parse(b"INVITE sip:1@x SIP/2.0\r\nCall-ID: a\r\nCSeq: 3 INVITE\r\nx: 90\r\n\r\n")
            .unwrap();
    assert_eq!(m.session_expires_secs(), Some(90));
    let m = Message::parse(
        b"INVITE sip:1@x SIP/2.0\r\nCall-ID: a\r\nCSeq: 3 INVITE\r\nSession-Expires: soon\r\n\r\n",
    )
    .unwrap();
    assert_eq!(m.session_expires_secs(), None);
}
