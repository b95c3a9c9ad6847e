//! The one step from a captured IP packet to an [`Event`]: peel the IP and
//! transport headers, decode the SIP message, and take the remote party —
//! the source of a request the host received, the destination of a
//! response it sent. The daemon (NFLOG), `replay --pcap` and the benches
//! all use it, so they cannot disagree about what a packet means. SIP over
//! TCP goes through [`Capture`], which reassembles each flow first.

use std::net::IpAddr;

use voipwall_sip::tcp::{FlowKey, Piece, Reassembler, TcpLimits, TcpStats};
use voipwall_sip::{Message, Peeled, SipError, Transport, peel};

use crate::event::Event;

/// A decoded SIP packet.
#[derive(Debug, Clone)]
pub struct Decoded<'a> {
    /// The IP/transport view (addresses from the IP header, never from SIP).
    pub peeled: Peeled<'a>,
    /// The SIP message.
    pub msg: Message<'a>,
}

impl<'a> Decoded<'a> {
    /// Whether it is a request (else a response).
    pub fn is_request(&self) -> bool {
        self.msg.status().is_none()
    }

    /// The remote party: a request's source, a response's destination.
    pub fn remote(&self) -> IpAddr {
        if self.is_request() {
            self.peeled.src
        } else {
            self.peeled.dst
        }
    }

    /// This host's side: a request's destination, a response's source.
    pub fn local(&self) -> IpAddr {
        if self.is_request() {
            self.peeled.dst
        } else {
            self.peeled.src
        }
    }

    /// The event for the engine; `None` when the message lacks what
    /// matching needs (Call-ID, CSeq).
    pub fn event(&self, origin: &'a str) -> Option<Event<'a>> {
        let mut ev = Event::from_message(self.remote(), &self.msg, origin)?;
        let stream = self.peeled.transport != Transport::Udp;
        match &mut ev.kind {
            crate::event::EventKind::Response(r) => r.stream = stream,
            crate::event::EventKind::Request(r) => r.stream = stream,
            _ => {}
        }
        Some(ev)
    }

    /// A request this host sent (its source is one of `own`): not an
    /// event from a remote party. Detection reads only the BYEs and
    /// CANCELs among them, which end calls the call guard counts
    /// ([`crate::Engine::host_hangup`]).
    pub fn sent_by_host(&self, own: &[IpAddr]) -> bool {
        self.is_request() && own.contains(&self.peeled.src)
    }

    /// The far end and Call-ID of a BYE or CANCEL (a hang-up).
    pub fn hangup(&self) -> Option<(IpAddr, &'a [u8])> {
        let m = self.msg.method()?;
        (self.is_request()
            && (m.eq_ignore_ascii_case(b"BYE") || m.eq_ignore_ascii_case(b"CANCEL")))
        .then_some(())?;
        Some((self.peeled.dst, self.msg.call_id?))
    }

    /// What the engine gets for this message, the same for the daemon
    /// (NFLOG, HEP) and `replay` (pcap, HEP): its event; for a request
    /// without the Call-ID or CSeq that matching needs, an undecodable
    /// event from its source (`Some((event, true))`: counted as
    /// undecodable); for such a response, nothing.
    pub fn engine_event(&self, origin: &'a str) -> Option<(Event<'a>, bool)> {
        match self.event(origin) {
            Some(ev) => Some((ev, false)),
            None if self.is_request() => Some((Event::undecodable(self.peeled.src, origin), true)),
            None => None,
        }
    }
}

/// Decodes one captured IP packet (IPv4 or IPv6, UDP or TCP) carrying one
/// SIP message.
pub fn decode(ip: &[u8]) -> Result<Decoded<'_>, SipError> {
    let peeled = peel(ip)?;
    let msg = Message::parse_captured(peeled.payload)?;
    Ok(Decoded { peeled, msg })
}

/// The SIP message a HEP packet carries, with the addresses and ports HEP
/// gives for the original packet (the daemon's HEP listener and
/// `replay --hep`). HEP's IP protocol 17 is UDP; anything else (TCP, and
/// the numbers senders use for TLS and WebSocket) is a stream transport.
pub fn from_hep<'a>(h: &voipwall_sip::hep::Hep<'a>) -> Result<Decoded<'a>, SipError> {
    let msg = Message::parse_captured(h.payload)?;
    Ok(Decoded {
        peeled: Peeled {
            src: h.src,
            dst: h.dst,
            sport: h.sport,
            dport: h.dport,
            transport: if h.ip_proto == 17 {
                Transport::Udp
            } else {
                Transport::Tcp
            },
            seq: 0,
            flags: 0,
            payload: h.payload,
        },
        msg,
    })
}

/// The event for a captured packet that does not decode as SIP: when it is
/// an inbound request (its payload does not start like a response), one
/// [`crate::EventKind::Undecodable`] from its IP source. Detection counts it only
/// if the PBX answers that source (see the `undecodable` rule).
pub fn undecodable<'a>(ip: &[u8], origin: &'a str) -> Option<Event<'a>> {
    let p = peel(ip).ok()?;
    (!p.payload.starts_with(b"SIP/")).then_some(Event::undecodable(p.src, origin))
}

/// What one captured packet yields.
#[derive(Debug)]
pub enum Seen<'a> {
    /// A SIP message.
    Sip(Decoded<'a>),
    /// Something sent to a SIP port that does not decode; the event is
    /// there when it reads as a request from its source (see
    /// [`undecodable`]).
    Undecodable(Option<Event<'a>>),
}

/// The capture path with state: UDP datagrams decode one by one, TCP
/// segments are reassembled per flow ([`voipwall_sip::tcp`]) and each
/// message framed from the stream decodes as a datagram would, with the
/// flow's addresses.
#[derive(Debug)]
pub struct Capture {
    tcp: Reassembler,
}

impl Capture {
    /// A capture path; `seed` keys the flow table's hash (pass a random one).
    pub fn new(limits: TcpLimits, seed: u64) -> Self {
        Self {
            tcp: Reassembler::new(limits, seed),
        }
    }

    /// Takes one captured IP packet at `now_ms` and passes what it yields
    /// to `f`: for UDP one message (or one undecodable), for TCP every
    /// message the segment completes (often none).
    pub fn packet(&mut self, now_ms: u64, ip: &[u8], origin: &str, f: &mut dyn FnMut(Seen<'_>)) {
        let Ok(p) = peel(ip) else {
            return f(Seen::Undecodable(None));
        };
        match p.transport {
            Transport::Udp => match Message::parse_captured(p.payload) {
                Ok(msg) => f(Seen::Sip(Decoded { peeled: p, msg })),
                Err(_) => f(Seen::Undecodable(undecodable(ip, origin))),
            },
            Transport::Tcp => {
                let key = FlowKey {
                    src: p.src,
                    sport: p.sport,
                    dst: p.dst,
                    dport: p.dport,
                };
                self.tcp
                    .segment(now_ms, key, p.seq, p.flags, p.payload, &mut |piece| {
                        let msg = match piece {
                            Piece::Message(m) => {
                                Message::parse_captured(m).ok().map(|msg| (m, msg))
                            }
                            Piece::Garbage => None,
                        };
                        match msg {
                            Some((m, msg)) => f(Seen::Sip(Decoded {
                                peeled: Peeled { payload: m, ..p },
                                msg,
                            })),
                            None => f(Seen::Undecodable(Some(Event::undecodable(p.src, origin)))),
                        }
                    });
            }
        }
    }

    /// Port ranges (inclusive) where SIP travels over plain WebSocket, for
    /// TCP flows created from now on.
    pub fn set_websocket_ports(&mut self, ports: Vec<(u16, u16)>) {
        self.tcp.set_websocket_ports(ports);
    }

    /// The capture lost copies (NFLOG overflow): TCP flows skip the gap
    /// they find next instead of waiting for it.
    pub fn copies_lost(&mut self) {
        self.tcp.copies_lost();
    }

    /// Forgets idle TCP flows.
    pub fn expire(&mut self, now_ms: u64) {
        self.tcp.expire(now_ms);
    }

    /// The TCP reassembler's counters.
    pub fn tcp_stats(&self) -> TcpStats {
        self.tcp.stats()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn udp4(payload: &[u8]) -> Vec<u8> {
        let total = u16::try_from(28 + payload.len()).unwrap();
        let mut p = vec![0x45, 0];
        p.extend_from_slice(&total.to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 0, 64, 17, 0, 0, 198, 51, 100, 7, 203, 0, 113, 1]);
        p.extend_from_slice(&[0x13, 0xba, 0x13, 0xc4]);
        p.extend_from_slice(&u16::try_from(8 + payload.len()).unwrap().to_be_bytes());
        p.extend_from_slice(&[0, 0]);
        p.extend_from_slice(payload);
        p
    }

    /// The daemon and `replay` take the engine's event from here: a
    /// request without Call-ID or CSeq is an undecodable event from its
    /// source, a response without them is nothing, a whole request is
    /// itself.
    #[test]
    fn a_request_without_call_id_is_undecodable_for_everyone() {
        let bare = udp4(b"OPTIONS sip:100@x SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.7:5060\r\nContent-Length: 0\r\n\r\n");
        let d = decode(&bare).unwrap();
        let (ev, undecodable) = d.engine_event("nflog").unwrap();
        assert!(undecodable);
        assert_eq!(ev.kind, crate::EventKind::Undecodable);
        assert_eq!(ev.src, "198.51.100.7".parse::<IpAddr>().unwrap());
        let resp = udp4(
            b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 198.51.100.7:5060\r\nContent-Length: 0\r\n\r\n",
        );
        assert!(decode(&resp).unwrap().engine_event("pcap").is_none());
        let whole = udp4(b"OPTIONS sip:100@x SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.7:5060\r\nCall-ID: a@b\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n");
        let (ev, undecodable) = decode(&whole).unwrap().engine_event("pcap").unwrap();
        assert!(!undecodable);
        assert!(matches!(ev.kind, crate::EventKind::Request(_)));
    }
}
