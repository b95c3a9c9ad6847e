//! WebSocket framing (RFC 6455) as SIP over WebSocket uses it (RFC 7118):
//! after an HTTP upgrade, each SIP message travels as one WebSocket message
//! (a text or binary frame, or a first frame and continuations), masked
//! from the client. Only the frame header is read here; the payload is
//! unmasked by the caller into its message buffer.

/// One frame header at the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    /// Last frame of its message.
    pub fin: bool,
    /// 0 continuation, 1 text, 2 binary, 8 close, 9 ping, 10 pong.
    pub opcode: u8,
    /// The masking key, when the sender masked (clients must).
    pub mask: Option<[u8; 4]>,
    /// Header length: the payload starts here.
    pub header: usize,
    /// Payload length.
    pub len: u64,
}

impl Frame {
    /// Whether it carries (part of) a message rather than control.
    pub fn is_data(&self) -> bool {
        self.opcode <= 2
    }
}

/// Why bytes are not a WebSocket frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WsError {
    /// Reserved bits or an undefined opcode: not a frame (or not in step).
    #[error("not a WebSocket frame")]
    BadFrame,
}

/// Reads the frame header at the start of `buf`; `Ok(None)` when more bytes
/// are needed for the header itself.
pub fn frame(buf: &[u8]) -> Result<Option<Frame>, WsError> {
    let (Some(&b0), Some(&b1)) = (buf.first(), buf.get(1)) else {
        return Ok(None);
    };
    let opcode = b0 & 0x0f;
    // RSV bits are only set by negotiated extensions; SIP over WebSocket
    // negotiates none (a compressed frame would hide the SIP anyway).
    if b0 & 0x70 != 0 || !matches!(opcode, 0 | 1 | 2 | 8 | 9 | 10) {
        return Err(WsError::BadFrame);
    }
    let masked = b1 & 0x80 != 0;
    let (len, mut at) = match b1 & 0x7f {
        126 => match buf.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => {
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                (u64::from_be_bytes(a), 10)
            }
            None => return Ok(None),
        },
        n => (u64::from(n), 2),
    };
    let mask = if masked {
        let Some(k) = buf.get(at..at + 4) else {
            return Ok(None);
        };
        at += 4;
        Some([k[0], k[1], k[2], k[3]])
    } else {
        None
    };
    // Control frames are short and never fragmented (RFC 6455 5.5).
    if opcode >= 8 && (len > 125 || b0 & 0x80 == 0) {
        return Err(WsError::BadFrame);
    }
    Ok(Some(Frame {
        fin: b0 & 0x80 != 0,
        opcode,
        mask,
        header: at,
        len,
    }))
}

/// Appends `payload` (which starts `offset` bytes into its frame's payload)
/// to `out`, unmasked.
pub fn unmask_into(out: &mut Vec<u8>, payload: &[u8], mask: Option<[u8; 4]>, offset: u64) {
    match mask {
        None => out.extend_from_slice(payload),
        Some(k) => out.extend(
            payload
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ k[((offset + i as u64) % 4) as usize]),
        ),
    }
}

/// Encodes one frame: for tests, benches and the fuzz corpus.
pub fn encode(opcode: u8, fin: bool, mask: Option<[u8; 4]>, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![(u8::from(fin) << 7) | (opcode & 0x0f)];
    let m = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n @ 0..=125 => f.push(m | n as u8),
        n @ 126..=65_535 => {
            f.push(m | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(m | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if let Some(k) = mask {
        f.extend_from_slice(&k);
    }
    unmask_into(&mut f, payload, mask, 0);
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_and_refusals() {
        for (len, hdr) in [(5usize, 6), (300, 8), (70_000, 14)] {
            let p = vec![b'a'; len];
            let f = encode(1, true, Some([1, 2, 3, 4]), &p);
            let h = frame(&f).unwrap().unwrap();
            assert_eq!(
                (h.fin, h.opcode, h.header, h.len),
                (true, 1, hdr, len as u64)
            );
            let mut out = Vec::new();
            unmask_into(&mut out, &f[h.header..], h.mask, 0);
            assert_eq!(out, p);
            assert_eq!(frame(&f[..hdr - 1]), Ok(None));
        }
        assert_eq!(frame(&[0x83, 0]), Err(WsError::BadFrame)); // opcode 3
        assert_eq!(frame(&[0xc1, 0]), Err(WsError::BadFrame)); // RSV1
        assert_eq!(frame(&[0x09, 0]), Err(WsError::BadFrame)); // fragmented ping
        // Unmasking continues the key across a split payload.
        let f = encode(2, true, Some([9, 8, 7, 6]), b"REGISTER");
        let mut out = Vec::new();
        unmask_into(&mut out, &f[6..9], Some([9, 8, 7, 6]), 0);
        unmask_into(&mut out, &f[9..], Some([9, 8, 7, 6]), 3);
        assert_eq!(out, b"REGISTER");
    }
}
