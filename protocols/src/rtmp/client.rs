//! The client side of an RTMP connection as a sans-IO state machine, for
//! load generators and tests.

use std::collections::VecDeque;

use crate::amf0::{self, Amf0Limits, Amf0Value};

use super::chunk::{ChunkDecoder, ChunkLimits, MessageHeader};
use super::handshake::ClientHandshake;
use super::message::{type_id, Command, Message, UserControl};
use super::server::PublishType;
use super::session::{csid, string_prop, Link, MediaKind, MediaMessage, Progress};
use super::RtmpError;

/// Client settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientConfig {
    /// Our outbound chunk size, announced with `connect`.
    pub chunk_size: u32,
    /// Limits of the chunk decoder.
    pub chunk_limits: ChunkLimits,
    /// Limits for decoding commands.
    pub amf0_limits: Amf0Limits,
    /// Sign C1 and check the server's answer (digest handshake).
    pub digest_handshake: bool,
    /// The `flashVer` of `connect`.
    pub flash_ver: String,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            chunk_size: 4096,
            chunk_limits: ChunkLimits::default(),
            amf0_limits: Amf0Limits::default(),
            digest_handshake: true,
            flash_ver: "FMLE/3.0 (compatible; shoal)".into(),
        }
    }
}

/// What the client session tells its caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// The handshake is over (commands sent before it now go out).
    HandshakeDone {
        /// For a digest handshake, whether the server's answer checked out.
        server_verified: Option<bool>,
    },
    /// `connect` succeeded.
    Connected,
    /// `connect` was refused.
    ConnectRejected {
        /// The `code` of the answer.
        code: String,
        /// The `description` of the answer.
        description: String,
    },
    /// `createStream` gave a stream.
    StreamCreated {
        /// The new message stream.
        stream_id: u32,
    },
    /// An `onStatus` from the server.
    Status {
        /// The message stream it came on.
        stream_id: u32,
        /// `status` or `error`.
        level: String,
        /// E.g. `NetStream.Publish.Start`.
        code: String,
        /// Free text.
        description: String,
    },
    /// `_error` answering a command other than `connect`.
    CommandFailed {
        /// The command's name.
        name: String,
        /// The `code` of the answer, if any.
        code: String,
    },
    /// Stream Begin.
    StreamBegin {
        /// The stream.
        stream_id: u32,
    },
    /// Stream EOF.
    StreamEof {
        /// The stream.
        stream_id: u32,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Call {
    Connect,
    CreateStream,
    Other(String),
}

/// One RTMP connection, client side, sans-IO.
///
/// C0+C1 are in the output from the start. Commands may be issued at once:
/// they are held until the handshake is over. The loop is the server's:
/// [`handle_input`](Self::handle_input) (which returns media of played
/// streams in [`Progress::media`]), [`poll_event`](Self::poll_event),
/// [`pending_output`](Self::pending_output).
#[derive(Debug)]
pub struct ClientSession {
    handshake: ClientHandshake,
    decoder: ChunkDecoder,
    core: ClientCore,
}

#[derive(Debug)]
struct ClientCore {
    config: ClientConfig,
    link: Link,
    events: VecDeque<ClientEvent>,
    next_transaction: u32,
    calls: Vec<(f64, Call)>,
    /// The Window Acknowledgement Size we last sent.
    window_sent: Option<u32>,
}

impl ClientSession {
    /// A session with C0+C1 queued. `epoch_ms` and `random_seed` fill C1.
    pub fn new(config: ClientConfig, epoch_ms: u32, random_seed: u64) -> Self {
        let mut link = Link::new();
        let handshake = ClientHandshake::start(
            epoch_ms,
            random_seed,
            config.digest_handshake,
            link.out_mut(),
        );
        link.hold();
        Self {
            handshake,
            decoder: ChunkDecoder::new(config.chunk_limits.clone()),
            core: ClientCore {
                config,
                link,
                events: VecDeque::new(),
                next_transaction: 1,
                calls: Vec::new(),
                window_sent: None,
            },
        }
    }

    /// Consumes input: S0+S1+S2, then messages. Stops after each media
    /// message (audio, video, data on a non-zero stream), returned in
    /// [`Progress::media`], or when no whole chunk head is left.
    pub fn handle_input<'a>(&'a mut self, input: &'a [u8]) -> Result<Progress<'a>, RtmpError> {
        let mut at = 0;
        if !self.handshake.is_done() {
            let mut c2 = Vec::new();
            at = self.handshake.handle_input(input, &mut c2)?;
            self.core.link.count_received(at);
            if !self.handshake.is_done() {
                return Ok(Progress {
                    consumed: at,
                    media: None,
                });
            }
            self.core.link.release(&c2);
            self.core.events.push_back(ClientEvent::HandshakeDone {
                server_verified: self.handshake.server_verified(),
            });
        }
        let body = input.get(at..).unwrap_or_default();
        let mut used = 0;
        let found = loop {
            let rest = body.get(used..).unwrap_or_default();
            let (n, message) = self.decoder.next_message(rest)?;
            used += n;
            self.core.link.count_received(n);
            let Some(message) = message else {
                break None;
            };
            let payload = self.decoder.payload(&message, rest);
            if let Some(kind) = self.core.handle_message(&message.header, payload)? {
                break Some((message, kind, rest));
            }
        };
        let media = found.map(|(message, kind, rest)| MediaMessage {
            stream_id: message.header.stream_id,
            kind,
            timestamp: message.header.timestamp,
            payload: self.decoder.payload(&message, rest),
        });
        Ok(Progress {
            consumed: at + used,
            media,
        })
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.core.events.pop_front()
    }

    /// Bytes waiting to be written to the socket.
    pub fn pending_output(&self) -> &[u8] {
        self.core.link.pending()
    }

    /// Marks `n` bytes of [`pending_output`](Self::pending_output) as written.
    pub fn consume_output(&mut self, n: usize) {
        self.core.link.consume(n);
    }

    /// Appends all pending output to `out`; returns how many bytes.
    pub fn poll_transmit(&mut self, out: &mut Vec<u8>) -> usize {
        self.core.link.poll_transmit(out)
    }

    /// Whether the handshake is over.
    pub fn handshake_done(&self) -> bool {
        self.handshake.is_done()
    }

    /// The server's chunk size in force.
    pub fn in_chunk_size(&self) -> u32 {
        self.decoder.chunk_size()
    }

    /// Our chunk size in force.
    pub fn out_chunk_size(&self) -> u32 {
        self.core.link.out_chunk_size()
    }

    /// Bytes received so far (handshake included).
    pub fn bytes_received(&self) -> u64 {
        self.core.link.received()
    }

    /// Sends Set Chunk Size (if ours is not the default) and `connect`.
    pub fn connect(&mut self, app: &str, tc_url: &str) {
        if self.core.link.out_chunk_size() != self.core.config.chunk_size {
            self.core
                .link
                .set_out_chunk_size(self.core.config.chunk_size);
        }
        let txn = self.core.call(Call::Connect);
        let flash_ver = self.core.config.flash_ver.clone();
        self.core
            .link
            .command(csid::COMMAND, 0, "connect", txn, |body| {
                amf0::write_object(
                    body,
                    &[
                        ("app", Amf0Value::from(app)),
                        ("type", Amf0Value::from("nonprivate")),
                        ("flashVer", Amf0Value::from(flash_ver)),
                        ("tcUrl", Amf0Value::from(tc_url)),
                        ("fpad", Amf0Value::from(false)),
                        ("capabilities", Amf0Value::from(15.0)),
                        ("audioCodecs", Amf0Value::from(3191.0)),
                        ("videoCodecs", Amf0Value::from(252.0)),
                        ("videoFunction", Amf0Value::from(1.0)),
                        ("objectEncoding", Amf0Value::from(0.0)),
                    ],
                );
            });
    }

    /// Sends `createStream`; [`ClientEvent::StreamCreated`] follows.
    pub fn create_stream(&mut self) {
        let txn = self.core.call(Call::CreateStream);
        self.core
            .link
            .command(csid::COMMAND, 0, "createStream", txn, amf0::write_null);
    }

    /// Sends `releaseStream` and `FCPublish` for `name`, as encoders do
    /// before `createStream`.
    pub fn announce_publish(&mut self, name: &str) {
        for command in ["releaseStream", "FCPublish"] {
            let txn = self.core.call(Call::Other(command.into()));
            self.core
                .link
                .command(csid::COMMAND, 0, command, txn, |body| {
                    amf0::write_null(body);
                    amf0::write_string(body, name);
                });
        }
    }

    /// Sends `publish`; the server answers with `onStatus`
    /// (`NetStream.Publish.Start` when accepted).
    pub fn publish(&mut self, stream_id: u32, name: &str, publish_type: PublishType) {
        self.core
            .link
            .command(csid::STREAM, stream_id, "publish", 0.0, |body| {
                amf0::write_null(body);
                amf0::write_string(body, name);
                amf0::write_string(body, publish_type.as_str());
            });
    }

    /// Sends `play` (live, from now) and a 3-second buffer length.
    pub fn play(&mut self, stream_id: u32, name: &str) {
        self.core
            .link
            .command(csid::STREAM, stream_id, "play", 0.0, |body| {
                amf0::write_null(body);
                amf0::write_string(body, name);
                amf0::write_number(body, -1000.0);
            });
        self.core.link.user_control(UserControl::SetBufferLength {
            stream_id,
            buffer_ms: 3000,
        });
    }

    /// Sends `FCUnpublish` for `name`.
    pub fn fc_unpublish(&mut self, name: &str) {
        let txn = self.core.call(Call::Other("FCUnpublish".into()));
        self.core
            .link
            .command(csid::COMMAND, 0, "FCUnpublish", txn, |body| {
                amf0::write_null(body);
                amf0::write_string(body, name);
            });
    }

    /// Sends `deleteStream`.
    pub fn delete_stream(&mut self, stream_id: u32) {
        self.core
            .link
            .command(csid::COMMAND, 0, "deleteStream", 0.0, |body| {
                amf0::write_null(body);
                amf0::write_number(body, f64::from(stream_id));
            });
    }

    /// Sends a media message (an FLV tag body) on `stream_id`.
    pub fn send_media(&mut self, stream_id: u32, kind: MediaKind, timestamp: u32, payload: &[u8]) {
        self.core
            .link
            .send(kind.csid(), timestamp, kind.type_id(), stream_id, payload);
    }

    /// Sends `@setDataFrame onMetaData` with these properties.
    pub fn send_metadata(&mut self, stream_id: u32, properties: &[(&str, Amf0Value)]) {
        self.core
            .link
            .amf0(csid::STREAM, type_id::DATA_AMF0, stream_id, |body| {
                amf0::write_string(body, "@setDataFrame");
                amf0::write_string(body, "onMetaData");
                amf0::write_ecma_array(body, properties);
            });
    }

    /// Announces a new outbound chunk size and uses it from the next
    /// message on. 0 and values over 2^24 - 1 are refused.
    pub fn set_chunk_size(&mut self, size: u32) -> Result<(), RtmpError> {
        if size == 0 || size > super::chunk_encode::MAX_MESSAGE_LENGTH {
            return Err(RtmpError::InvalidChunkSize(size));
        }
        self.core.link.set_out_chunk_size(size);
        Ok(())
    }
}

impl ClientCore {
    fn call(&mut self, call: Call) -> f64 {
        let txn = f64::from(self.next_transaction);
        self.next_transaction = self.next_transaction.wrapping_add(1).max(1);
        // Answers that never come must not pile up.
        if self.calls.len() >= 64 {
            self.calls.remove(0);
        }
        self.calls.push((txn, call));
        txn
    }

    fn take_call(&mut self, txn: f64) -> Option<Call> {
        let index = self.calls.iter().position(|(t, _)| *t == txn)?;
        Some(self.calls.remove(index).1)
    }

    fn handle_message(
        &mut self,
        header: &MessageHeader,
        payload: &[u8],
    ) -> Result<Option<MediaKind>, RtmpError> {
        let message = Message::decode(header.type_id, payload, &self.config.amf0_limits)?;
        match message {
            Message::Audio(_) => return Ok(Some(MediaKind::Audio)),
            Message::Video(_) => return Ok(Some(MediaKind::Video)),
            Message::Data { .. } if header.stream_id != 0 => return Ok(Some(MediaKind::Data)),
            Message::WindowAckSize(window) => self.link.set_peer_window(window),
            Message::SetPeerBandwidth { window, .. } if self.window_sent != Some(window) => {
                self.window_sent = Some(window);
                self.link.control(&Message::WindowAckSize(window));
            }
            Message::UserControl(event) => match event {
                UserControl::PingRequest(ts) => {
                    self.link.user_control(UserControl::PingResponse(ts));
                }
                UserControl::StreamBegin(stream_id) => {
                    self.events
                        .push_back(ClientEvent::StreamBegin { stream_id });
                }
                UserControl::StreamEof(stream_id) => {
                    self.events.push_back(ClientEvent::StreamEof { stream_id });
                }
                _ => {}
            },
            Message::Command(command) => self.handle_command(header, command),
            _ => {}
        }
        Ok(None)
    }

    fn handle_command(&mut self, header: &MessageHeader, command: Command) {
        let info = command.args.first().unwrap_or(&command.command_object);
        match command.name.as_str() {
            "_result" => match self.take_call(command.transaction_id) {
                Some(Call::Connect) => {
                    let code = string_prop(info, "code");
                    if code.is_empty() || code == super::server::status::CONNECT_SUCCESS {
                        self.events.push_back(ClientEvent::Connected);
                    } else {
                        self.events.push_back(ClientEvent::ConnectRejected {
                            code,
                            description: string_prop(info, "description"),
                        });
                    }
                }
                Some(Call::CreateStream) => {
                    let id = command.args.first().and_then(Amf0Value::as_f64);
                    if let Some(stream_id) = id.filter(|v| *v >= 1.0 && *v <= f64::from(u32::MAX)) {
                        self.events.push_back(ClientEvent::StreamCreated {
                            stream_id: stream_id as u32,
                        });
                    }
                }
                Some(Call::Other(_)) | None => {}
            },
            "_error" => {
                let code = string_prop(info, "code");
                match self.take_call(command.transaction_id) {
                    Some(Call::Connect) => self.events.push_back(ClientEvent::ConnectRejected {
                        code,
                        description: string_prop(info, "description"),
                    }),
                    Some(Call::CreateStream) => self.events.push_back(ClientEvent::CommandFailed {
                        name: "createStream".into(),
                        code,
                    }),
                    Some(Call::Other(name)) => {
                        self.events
                            .push_back(ClientEvent::CommandFailed { name, code });
                    }
                    None => {}
                }
            }
            "onStatus" => self.events.push_back(ClientEvent::Status {
                stream_id: header.stream_id,
                level: string_prop(info, "level"),
                code: string_prop(info, "code"),
                description: string_prop(info, "description"),
            }),
            // onBWDone, onFCPublish, onFCUnpublish and the rest need nothing.
            _ => {}
        }
    }
}
