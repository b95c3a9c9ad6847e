//! Message framing on a stream (TCP, TLS after decryption): a message ends
//! Content-Length bytes after the blank line (RFC 3261 section 18.3).

use crate::{Message, SipError};

/// Length of the first complete message at the start of `stream`, after
/// skipping keep-alive CRLFs; `Ok(None)` when more bytes are needed.
/// Returns `(skipped, len)`: the message is `stream[skipped..skipped + len]`.
pub fn frame(stream: &[u8]) -> Result<Option<(usize, usize)>, SipError> {
    let skipped = stream
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(stream.len());
    let s = &stream[skipped..];
    match Message::parse(s) {
        Ok(m) => {
            // On a stream Content-Length is mandatory; a missing one means no body.
            let body = match m.content_length {
                Some(_) => m.content_len().ok_or(SipError::BadHeader)?,
                None => 0,
            };
            let len = m.head_len.checked_add(body).ok_or(SipError::TooLong)?;
            Ok((s.len() >= len).then_some((skipped, len)))
        }
        Err(SipError::Truncated) => Ok(None),
        Err(e) => Err(e),
    }
}
