//! RTMP messages (RTMP 1.0 §5.4, §6, §7): protocol control, user control,
//! commands, data and media.

use crate::amf0::{self, Amf0Limits, Amf0Value};

use super::RtmpError;

/// Message type ids.
pub mod type_id {
    /// Set Chunk Size (protocol control).
    pub const SET_CHUNK_SIZE: u8 = 1;
    /// Abort Message (protocol control).
    pub const ABORT: u8 = 2;
    /// Acknowledgement (protocol control).
    pub const ACKNOWLEDGEMENT: u8 = 3;
    /// User Control Message.
    pub const USER_CONTROL: u8 = 4;
    /// Window Acknowledgement Size (protocol control).
    pub const WINDOW_ACK_SIZE: u8 = 5;
    /// Set Peer Bandwidth (protocol control).
    pub const SET_PEER_BANDWIDTH: u8 = 6;
    /// Audio data.
    pub const AUDIO: u8 = 8;
    /// Video data.
    pub const VIDEO: u8 = 9;
    /// Data message, AMF3.
    pub const DATA_AMF3: u8 = 15;
    /// Shared object message, AMF3.
    pub const SHARED_OBJECT_AMF3: u8 = 16;
    /// Command message, AMF3.
    pub const COMMAND_AMF3: u8 = 17;
    /// Data message, AMF0 (`@setDataFrame`, `onMetaData`).
    pub const DATA_AMF0: u8 = 18;
    /// Shared object message, AMF0.
    pub const SHARED_OBJECT_AMF0: u8 = 19;
    /// Command message, AMF0.
    pub const COMMAND_AMF0: u8 = 20;
    /// Aggregate message.
    pub const AGGREGATE: u8 = 22;
}

/// User Control Message events (RTMP 1.0 §7.1.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserControl {
    /// 0: the stream became functional.
    StreamBegin(u32),
    /// 1: playback of the stream ended.
    StreamEof(u32),
    /// 2: no more data on the stream for now.
    StreamDry(u32),
    /// 3: the client's buffer length for a stream.
    SetBufferLength {
        /// The stream.
        stream_id: u32,
        /// Buffer length in milliseconds.
        buffer_ms: u32,
    },
    /// 4: the stream is recorded.
    StreamIsRecorded(u32),
    /// 6: a ping carrying the sender's timestamp.
    PingRequest(u32),
    /// 7: the answer to a ping, echoing its timestamp.
    PingResponse(u32),
    /// Any other event type (ignored).
    Other {
        /// The event type.
        event_type: u16,
    },
}

impl UserControl {
    /// Decodes the payload of a User Control Message.
    pub fn decode(payload: &[u8]) -> Result<Self, RtmpError> {
        let bad = RtmpError::BadControlMessage {
            type_id: type_id::USER_CONTROL,
        };
        let (event, data) = payload.split_first_chunk::<2>().ok_or(bad.clone())?;
        let event_type = u16::from_be_bytes(*event);
        let word = |at: usize| {
            data.get(at..at + 4)
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
                .map(u32::from_be_bytes)
                .ok_or(bad.clone())
        };
        Ok(match event_type {
            0 => Self::StreamBegin(word(0)?),
            1 => Self::StreamEof(word(0)?),
            2 => Self::StreamDry(word(0)?),
            3 => Self::SetBufferLength {
                stream_id: word(0)?,
                buffer_ms: word(4)?,
            },
            4 => Self::StreamIsRecorded(word(0)?),
            6 => Self::PingRequest(word(0)?),
            7 => Self::PingResponse(word(0)?),
            event_type => Self::Other { event_type },
        })
    }

    /// Appends the payload.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let (event, words): (u16, &[u32]) = match self {
            Self::StreamBegin(id) => (0, &[*id]),
            Self::StreamEof(id) => (1, &[*id]),
            Self::StreamDry(id) => (2, &[*id]),
            Self::SetBufferLength {
                stream_id,
                buffer_ms,
            } => (3, &[*stream_id, *buffer_ms]),
            Self::StreamIsRecorded(id) => (4, &[*id]),
            Self::PingRequest(ts) => (6, &[*ts]),
            Self::PingResponse(ts) => (7, &[*ts]),
            Self::Other { event_type } => (*event_type, &[]),
        };
        out.extend_from_slice(&event.to_be_bytes());
        for word in words {
            out.extend_from_slice(&word.to_be_bytes());
        }
    }
}

/// The limit type of Set Peer Bandwidth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerBandwidthLimit {
    /// 0: limit output to the window.
    Hard,
    /// 1: limit to the window or the limit in force, whichever is smaller.
    Soft,
    /// 2: hard if the previous limit was hard, else ignore.
    Dynamic,
    /// Another value.
    Other(u8),
}

impl PeerBandwidthLimit {
    fn from_u8(value: u8) -> Self {
        match value {
            0 => Self::Hard,
            1 => Self::Soft,
            2 => Self::Dynamic,
            other => Self::Other(other),
        }
    }

    fn as_u8(self) -> u8 {
        match self {
            Self::Hard => 0,
            Self::Soft => 1,
            Self::Dynamic => 2,
            Self::Other(value) => value,
        }
    }
}

/// A command message: name, transaction id, command object, arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    /// `connect`, `createStream`, `publish`, `_result`, `onStatus`, ...
    pub name: String,
    /// Matches a `_result`/`_error` to its request; 0 when no answer is
    /// expected.
    pub transaction_id: f64,
    /// The command object (`null` for most stream commands).
    pub command_object: Amf0Value,
    /// The remaining values.
    pub args: Vec<Amf0Value>,
}

impl Command {
    /// Decodes an AMF0 command body. The name must be a string; a missing
    /// transaction id reads as 0 and a missing command object as `null`.
    pub fn decode(body: &[u8], limits: &Amf0Limits) -> Result<Self, RtmpError> {
        let mut values = amf0::decode_all(body, limits)?.into_iter();
        let Some(Amf0Value::String(name) | Amf0Value::LongString(name)) = values.next() else {
            return Err(RtmpError::BadCommand);
        };
        let transaction_id = values.next().and_then(|v| v.as_f64()).unwrap_or(0.0);
        let command_object = values.next().unwrap_or(Amf0Value::Null);
        Ok(Self {
            name,
            transaction_id,
            command_object,
            args: values.collect(),
        })
    }

    /// Appends the AMF0 body.
    pub fn encode(&self, out: &mut Vec<u8>) {
        amf0::write_string(out, &self.name);
        amf0::write_number(out, self.transaction_id);
        amf0::encode(&self.command_object, out);
        for arg in &self.args {
            amf0::encode(arg, out);
        }
    }

    /// The first argument as a string (the stream name of `publish`,
    /// `play`, `releaseStream`, `FCPublish`).
    pub fn first_string_arg(&self) -> Option<&str> {
        self.args.first().and_then(Amf0Value::as_str)
    }
}

/// A decoded message.
#[derive(Debug, Clone, PartialEq)]
pub enum Message<'a> {
    /// 1: the sender's new chunk size.
    SetChunkSize(u32),
    /// 2: drop the partial message on this chunk stream.
    Abort {
        /// The chunk stream.
        csid: u32,
    },
    /// 3: bytes received so far.
    Acknowledgement {
        /// The sequence number (bytes received, wrapping).
        sequence: u32,
    },
    /// 4: a user control event.
    UserControl(UserControl),
    /// 5: acknowledge every this many bytes.
    WindowAckSize(u32),
    /// 6: limit the output bandwidth.
    SetPeerBandwidth {
        /// Window size in bytes.
        window: u32,
        /// How to apply it.
        limit: PeerBandwidthLimit,
    },
    /// 8: audio (an FLV audio tag body).
    Audio(&'a [u8]),
    /// 9: video (an FLV video tag body).
    Video(&'a [u8]),
    /// 18 or 15: a data message; `body` is AMF0 (the leading zero byte of an
    /// AMF3 data message is dropped).
    Data {
        /// The AMF0 values, undecoded.
        body: &'a [u8],
    },
    /// 20 or 17: a command (an AMF3 command's leading zero byte dropped).
    Command(Command),
    /// 22: aggregate of FLV tags.
    Aggregate(&'a [u8]),
    /// Any other type (shared objects, unknown).
    Other {
        /// The type id.
        type_id: u8,
        /// The payload.
        payload: &'a [u8],
    },
}

fn be32(payload: &[u8], at: usize, kind: u8) -> Result<u32, RtmpError> {
    payload
        .get(at..at + 4)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(u32::from_be_bytes)
        .ok_or(RtmpError::BadControlMessage { type_id: kind })
}

/// The AMF0 body of a type 15/17 message: one leading zero byte dropped.
fn strip_amf3_marker(payload: &[u8]) -> &[u8] {
    match payload.split_first() {
        Some((0, rest)) => rest,
        _ => payload,
    }
}

impl<'a> Message<'a> {
    /// Decodes a message of type `type_id` from its payload. Commands are
    /// decoded within `limits`; media and data payloads are borrowed.
    pub fn decode(type_id: u8, payload: &'a [u8], limits: &Amf0Limits) -> Result<Self, RtmpError> {
        use self::type_id as t;
        Ok(match type_id {
            t::SET_CHUNK_SIZE => Self::SetChunkSize(be32(payload, 0, type_id)?),
            t::ABORT => Self::Abort {
                csid: be32(payload, 0, type_id)?,
            },
            t::ACKNOWLEDGEMENT => Self::Acknowledgement {
                sequence: be32(payload, 0, type_id)?,
            },
            t::USER_CONTROL => Self::UserControl(UserControl::decode(payload)?),
            t::WINDOW_ACK_SIZE => Self::WindowAckSize(be32(payload, 0, type_id)?),
            t::SET_PEER_BANDWIDTH => Self::SetPeerBandwidth {
                window: be32(payload, 0, type_id)?,
                limit: PeerBandwidthLimit::from_u8(payload.get(4).copied().unwrap_or(2)),
            },
            t::AUDIO => Self::Audio(payload),
            t::VIDEO => Self::Video(payload),
            t::DATA_AMF0 => Self::Data { body: payload },
            t::DATA_AMF3 => Self::Data {
                body: strip_amf3_marker(payload),
            },
            t::COMMAND_AMF0 => Self::Command(Command::decode(payload, limits)?),
            t::COMMAND_AMF3 => Self::Command(Command::decode(strip_amf3_marker(payload), limits)?),
            t::AGGREGATE => Self::Aggregate(payload),
            type_id => Self::Other { type_id, payload },
        })
    }

    /// The type id this message is sent with (AMF0 types for data and
    /// commands).
    pub fn type_id(&self) -> u8 {
        use self::type_id as t;
        match self {
            Self::SetChunkSize(_) => t::SET_CHUNK_SIZE,
            Self::Abort { .. } => t::ABORT,
            Self::Acknowledgement { .. } => t::ACKNOWLEDGEMENT,
            Self::UserControl(_) => t::USER_CONTROL,
            Self::WindowAckSize(_) => t::WINDOW_ACK_SIZE,
            Self::SetPeerBandwidth { .. } => t::SET_PEER_BANDWIDTH,
            Self::Audio(_) => t::AUDIO,
            Self::Video(_) => t::VIDEO,
            Self::Data { .. } => t::DATA_AMF0,
            Self::Command(_) => t::COMMAND_AMF0,
            Self::Aggregate(_) => t::AGGREGATE,
            Self::Other { type_id, .. } => *type_id,
        }
    }

    /// Appends the payload.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Self::SetChunkSize(value)
            | Self::Abort { csid: value }
            | Self::Acknowledgement { sequence: value }
            | Self::WindowAckSize(value) => out.extend_from_slice(&value.to_be_bytes()),
            Self::UserControl(event) => event.encode(out),
            Self::SetPeerBandwidth { window, limit } => {
                out.extend_from_slice(&window.to_be_bytes());
                out.push(limit.as_u8());
            }
            Self::Audio(payload)
            | Self::Video(payload)
            | Self::Data { body: payload }
            | Self::Aggregate(payload)
            | Self::Other { payload, .. } => out.extend_from_slice(payload),
            Self::Command(command) => command.encode(out),
        }
    }
}
