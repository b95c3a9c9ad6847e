//! The client against a small responder on loopback: query ids are random
//! (they differ across queries), every query carries EDNS0, and an answer
//! with TC set is asked again over TCP.

use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::sync::mpsc;
use std::time::Duration;

use voipwall_dns::{QType, Rdata};
use voipwall_sys::dns::Client;

/// The question section's end (after the name, type and class).
fn question_end(q: &[u8]) -> usize {
    let mut i = 12;
    while q[i] != 0 {
        i += 1 + usize::from(q[i]);
    }
    i + 5
}

/// An answer to `q`: its header and question, flags set, `tc` as asked,
/// and one A record 192.0.2.44 unless truncated.
fn answer(q: &[u8], tc: bool) -> Vec<u8> {
    let end = question_end(q);
    let mut m = q[..end].to_vec();
    m[2] = 0x81 | if tc { 0x02 } else { 0 };
    m[3] = 0x80;
    m[10..12].copy_from_slice(&[0, 0]);
    if !tc {
        m[6..8].copy_from_slice(&[0, 1]);
        m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 44]);
    }
    m
}

#[test]
fn ids_are_random_and_truncated_answers_are_retried_over_tcp() {
    let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = udp.local_addr().unwrap().port();
    let tcp = TcpListener::bind((Ipv4Addr::LOCALHOST, port)).unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let (seen_tx, seen) = mpsc::channel();
    // Bounded: answers 8 UDP questions (TC set) and 8 TCP ones, then stops.
    let responder = std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        for _ in 0..8 {
            let Ok((n, from)) = udp.recv_from(&mut buf) else {
                return;
            };
            let q = buf[..n].to_vec();
            seen_tx.send(q.clone()).unwrap();
            udp.send_to(&answer(&q, true), from).unwrap();
            let (mut s, _) = tcp.accept().unwrap();
            let mut l = [0u8; 2];
            s.read_exact(&mut l).unwrap();
            let mut tq = vec![0u8; usize::from(u16::from_be_bytes(l))];
            s.read_exact(&mut tq).unwrap();
            let a = answer(&tq, false);
            let mut out = u16::try_from(a.len()).unwrap().to_be_bytes().to_vec();
            out.extend_from_slice(&a);
            s.write_all(&out).unwrap();
        }
    });
    // The caller's random source (voipwall-core gives the kernel's).
    fn kernel_id() -> u16 {
        let mut b = [0u8; 2];
        std::fs::File::open("/dev/urandom")
            .unwrap()
            .read_exact(&mut b)
            .unwrap();
        u16::from_ne_bytes(b)
    }
    let client = Client {
        servers: vec![SocketAddr::from((Ipv4Addr::LOCALHOST, port))],
        timeout: Duration::from_secs(2),
        query_id: kernel_id,
    };
    let mut ids = Vec::new();
    for _ in 0..8 {
        let r = client.query("trunk.example", QType::A).expect("answer");
        assert!(!r.truncated, "the TCP answer is the one returned");
        assert_eq!(r.answers[0].data, Rdata::A(Ipv4Addr::new(192, 0, 2, 44)));
        let q = seen.recv_timeout(Duration::from_secs(2)).unwrap();
        ids.push(u16::from_be_bytes([q[0], q[1]]));
        assert_eq!(&q[10..12], &[0, 1], "EDNS0 OPT record present");
    }
    responder.join().unwrap();
    let mut distinct = ids.clone();
    distinct.sort_unstable();
    distinct.dedup();
    // Eight random 16-bit ids: a repeat has probability < 0.05 %.
    assert!(distinct.len() >= 7, "ids repeat: {ids:?}");
}
