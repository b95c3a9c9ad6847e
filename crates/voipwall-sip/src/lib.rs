//! voipwall's SIP decoder: a zero-copy scanner for the fields detection needs
//! (method or status, Request-URI/From/To users, Call-ID, CSeq, Via,
//! Contact, User-Agent/Server, credentials and their username, Expires,
//! Content-Length), stream framing, and IP/UDP/TCP peeling of NFLOG payloads.
//!
//! Pure and panic-free on any input: no I/O, no clock, no allocation while
//! decoding; malformed input is a [`SipError`] for the caller to count.
//!
//! ```
//! let raw = b"REGISTER sip:pbx.example SIP/2.0\r\nv: SIP/2.0/UDP 203.0.113.9:5060;branch=z9hG4bK1\r\n\
//! f: <sip:1001@pbx.example>;tag=a\r\nt: <sip:1001@pbx.example>\r\ni: abc@203.0.113.9\r\n\
//! CSeq: 7 REGISTER\r\nUser-Agent: friendly-scanner\r\nl: 0\r\n\r\n";
//! let m = voipwall_sip::Message::parse(raw).unwrap();
//! assert_eq!(m.method(), Some(&b"REGISTER"[..]));
//! assert_eq!(m.from_user(), Some(&b"1001"[..]));
//! assert_eq!(m.cseq_parts(), Some((7, &b"REGISTER"[..])));
//! assert_eq!(m.agent(), Some(&b"friendly-scanner"[..]));
//! ```
#![warn(missing_docs)]

mod frame;
pub mod hep;
mod message;
pub mod pcap;
mod peel;
pub mod tcp;
pub mod ws;

pub use frame::frame;
pub use message::{MAX_HEAD, Message, StartLine, addr_user, trim, uri_user};
pub use peel::{Peeled, Transport, peel};

/// Why a packet or message was not decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SipError {
    /// The input ends before the message head does.
    #[error("truncated")]
    Truncated,
    /// The head is longer than [`MAX_HEAD`].
    #[error("head longer than {MAX_HEAD} bytes")]
    TooLong,
    /// Not a SIP request or status line.
    #[error("not a SIP start line")]
    BadStartLine,
    /// A header line without a name and colon, or an unreadable Content-Length.
    #[error("malformed header")]
    BadHeader,
    /// Not an IPv4 or IPv6 packet, or an impossible header length.
    #[error("malformed IP packet")]
    BadPacket,
    /// A non-first fragment: no transport header to read.
    #[error("IP fragment")]
    Fragment,
    /// Neither UDP nor TCP.
    #[error("not UDP or TCP")]
    NotUdpOrTcp,
}
