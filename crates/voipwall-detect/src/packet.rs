//! The one step from a captured IP packet to an [`Event`]: peel the IP and
//! transport headers, decode the SIP message, and take the remote party —
//! the source of a request the host received, the destination of a
//! response it sent. The daemon (NFLOG), `replay --pcap` and the benches
//! all use it, so they cannot disagree about what a packet means.

use std::net::IpAddr;

use voipwall_sip::{Message, Peeled, SipError, peel};

use crate::event::{Event, EventKind};

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
        Event::from_message(self.remote(), &self.msg, origin)
    }
}

/// Decodes one captured IP packet (IPv4 or IPv6, UDP or TCP) carrying one
/// SIP message.
pub fn decode(ip: &[u8]) -> Result<Decoded<'_>, SipError> {
    let peeled = peel(ip)?;
    let msg = Message::parse_captured(peeled.payload)?;
    Ok(Decoded { peeled, msg })
}

/// The event for a captured packet that does not decode as SIP: when it is
/// an inbound request (its payload does not start like a response), one
/// [`EventKind::Undecodable`] from its IP source. Detection counts it only
/// if the PBX answers that source (see the `undecodable` rule).
pub fn undecodable<'a>(ip: &[u8], origin: &'a str) -> Option<Event<'a>> {
    let p = peel(ip).ok()?;
    (!p.payload.starts_with(b"SIP/")).then_some(Event {
        src: p.src,
        kind: EventKind::Undecodable,
        origin,
    })
}
