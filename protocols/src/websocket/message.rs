//! Messages from frames: fragmentation, control frames, UTF-8, close.

use super::close::{parse_close, CloseCode};
use super::frame::{Opcode, MAX_CONTROL_PAYLOAD_BYTES};
use super::WsError;

/// What a frame fed to the [`Reassembler`] completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'a> {
    /// A whole message. `data` is the caller's payload for a message that
    /// came in one frame, the reassembler's buffer for a fragmented one
    /// (valid until the next call). Text is valid UTF-8.
    Message {
        /// A text message (the data is valid UTF-8); otherwise binary.
        text: bool,
        /// The message's bytes.
        data: &'a [u8],
    },
    /// A ping; answer with a pong carrying the same bytes.
    Ping(&'a [u8]),
    /// A pong (unsolicited ones are allowed and may be ignored).
    Pong(&'a [u8]),
    /// The peer closes. `code` is [`CloseCode::NO_STATUS`] when the frame
    /// carried none. Answer with a close frame (echoing the code, or 1000).
    Close {
        /// The peer's code, already checked to be one a peer may send.
        code: CloseCode,
        /// The peer's reason (UTF-8, at most 123 bytes).
        reason: &'a str,
    },
}

/// Assembles messages from the frames of one connection.
///
/// Feed it every frame's opcode, FIN bit and unmasked payload, in order
/// ([`feed`](Self::feed)). A message that comes in one frame (the common
/// case) is never copied: its event borrows the payload that was fed. Only
/// a fragmented message is copied into the reassembler's buffer, which is
/// bounded by `max_message_bytes`, grows with the fragments and is freed on
/// the next call after the message completes: an idle connection holds no
/// buffer.
///
/// Refused with an error (then close the connection with
/// [`WsError::close_code`]): a continuation without a message open or a new
/// data frame while one is open (1002), a message over `max_message_bytes`
/// (1009), text that is not UTF-8 (1007, found at the first bad fragment),
/// a fragmented or oversized control frame (1002), and a bad close payload
/// (1002, or 1007 for a reason that is not UTF-8).
#[derive(Debug, Clone)]
pub struct Reassembler {
    max_message_bytes: usize,
    state: State,
    buffer: Vec<u8>,
    /// Bytes of a text message's buffer checked to be whole UTF-8 characters.
    valid_utf8_bytes: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// No message open, buffer empty.
    Idle,
    /// A fragmented message is open.
    Open { text: bool },
    /// The buffer holds a finished message handed out in the last event.
    Delivered,
}

impl Reassembler {
    /// A reassembler for messages of at most `max_message_bytes`.
    pub fn new(max_message_bytes: usize) -> Self {
        Self {
            max_message_bytes,
            state: State::Idle,
            buffer: Vec::new(),
            valid_utf8_bytes: 0,
        }
    }

    /// The message size limit.
    pub fn max_message_bytes(&self) -> usize {
        self.max_message_bytes
    }

    /// Whether no fragmented message is open.
    pub fn is_idle(&self) -> bool {
        !matches!(self.state, State::Open { .. })
    }

    /// Whether a frame with this opcode and FIN bit is a whole message on
    /// its own: a FIN text or binary frame while no message is open. Its
    /// [`feed`](Self::feed) returns the fed payload itself as the message,
    /// so the caller can keep (or publish) the payload where it lies.
    pub fn is_whole_message(&self, opcode: Opcode, fin: bool) -> bool {
        fin && matches!(opcode, Opcode::Text | Opcode::Binary) && self.is_idle()
    }

    /// Bytes of the fragmented message buffered so far (or of the last one
    /// delivered, until the next call).
    pub fn buffered_bytes(&self) -> usize {
        self.buffer.len()
    }

    #[cfg(test)]
    pub(super) fn buffer_capacity(&self) -> usize {
        self.buffer.capacity()
    }

    /// Drops any open message and frees the buffer.
    pub fn reset(&mut self) {
        self.state = State::Idle;
        self.buffer = Vec::new();
        self.valid_utf8_bytes = 0;
    }

    /// Takes one frame: its opcode, FIN bit and unmasked payload. Returns the
    /// event it completes, `None` for a fragment that leaves its message
    /// open. After an error the reassembler is reset.
    pub fn feed<'a>(
        &'a mut self,
        opcode: Opcode,
        fin: bool,
        payload: &'a [u8],
    ) -> Result<Option<Event<'a>>, WsError> {
        if self.state == State::Delivered {
            self.reset();
        }
        let result = self.step(opcode, fin, payload);
        if result.is_err() {
            self.reset();
        }
        match result {
            Ok(Step::Event(event)) => Ok(Some(event)),
            Ok(Step::Open) => Ok(None),
            Ok(Step::Buffered { text }) => Ok(Some(Event::Message {
                text,
                data: &self.buffer,
            })),
            Err(error) => Err(error),
        }
    }

    fn step<'p>(
        &mut self,
        opcode: Opcode,
        fin: bool,
        payload: &'p [u8],
    ) -> Result<Step<'p>, WsError> {
        if opcode.is_control() {
            if !fin {
                return Err(WsError::FragmentedControl);
            }
            if payload.len() > MAX_CONTROL_PAYLOAD_BYTES {
                return Err(WsError::ControlTooLong {
                    len: payload.len() as u64,
                });
            }
        }
        match (opcode, self.state) {
            (Opcode::Ping, _) => Ok(Step::Event(Event::Ping(payload))),
            (Opcode::Pong, _) => Ok(Step::Event(Event::Pong(payload))),
            (Opcode::Close, _) => {
                let (code, reason) = parse_close(payload)?;
                Ok(Step::Event(Event::Close { code, reason }))
            }
            (Opcode::Text | Opcode::Binary, State::Open { .. }) => Err(WsError::MessageInterrupted),
            (Opcode::Continuation, State::Idle | State::Delivered) => {
                Err(WsError::UnexpectedContinuation)
            }
            (Opcode::Text | Opcode::Binary, State::Idle | State::Delivered) => {
                let text = opcode == Opcode::Text;
                self.check_size(payload.len())?;
                if fin {
                    if text && core::str::from_utf8(payload).is_err() {
                        return Err(WsError::InvalidUtf8);
                    }
                    return Ok(Step::Event(Event::Message {
                        text,
                        data: payload,
                    }));
                }
                self.state = State::Open { text };
                self.append(payload, text, false)?;
                Ok(Step::Open)
            }
            (Opcode::Continuation, State::Open { text }) => {
                self.check_size(self.buffer.len().saturating_add(payload.len()))?;
                self.append(payload, text, fin)?;
                if fin {
                    self.state = State::Delivered;
                    Ok(Step::Buffered { text })
                } else {
                    Ok(Step::Open)
                }
            }
        }
    }

    fn check_size(&self, len: usize) -> Result<(), WsError> {
        if len > self.max_message_bytes {
            return Err(WsError::MessageTooLarge {
                len: len as u64,
                max: self.max_message_bytes as u64,
            });
        }
        Ok(())
    }

    /// Appends a fragment (the size is checked already), growing the buffer
    /// no further than the limit, and checks the text's new bytes: a bad
    /// sequence fails now, a character cut at the end may finish in the
    /// next fragment but not after the last.
    fn append(&mut self, fragment: &[u8], text: bool, last: bool) -> Result<(), WsError> {
        let needed = self.buffer.len().saturating_add(fragment.len());
        if needed > self.buffer.capacity() {
            let target = needed
                .max(self.buffer.capacity().saturating_mul(2))
                .min(self.max_message_bytes)
                .max(needed);
            self.buffer.reserve_exact(target - self.buffer.len());
        }
        self.buffer.extend_from_slice(fragment);
        if !text {
            return Ok(());
        }
        let unchecked = self.buffer.get(self.valid_utf8_bytes..).unwrap_or(&[]);
        match core::str::from_utf8(unchecked) {
            Ok(_) => self.valid_utf8_bytes = self.buffer.len(),
            Err(error) if error.error_len().is_none() && !last => {
                self.valid_utf8_bytes += error.valid_up_to();
            }
            Err(_) => return Err(WsError::InvalidUtf8),
        }
        Ok(())
    }
}

/// The outcome of a frame, before it borrows the buffer.
enum Step<'p> {
    Event(Event<'p>),
    Open,
    Buffered { text: bool },
}
