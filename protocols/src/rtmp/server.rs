//! The server side of an RTMP connection as a sans-IO state machine.

use std::collections::VecDeque;

use crate::amf0::{self, Amf0Limits, Amf0Value};

use super::chunk::{ChunkDecoder, ChunkLimits, MessageHeader};
use super::chunk_encode::{media_chunk_head, ChunkHead};
use super::handshake::{HandshakeKind, ServerHandshake};
use super::message::{type_id, Command, Message, PeerBandwidthLimit, UserControl};
use super::session::{csid, split_query, string_prop, Link, MediaKind, MediaMessage, Progress};
use super::RtmpError;

/// `onStatus` codes a server sends.
pub mod status {
    /// Publishing started.
    pub const PUBLISH_START: &str = "NetStream.Publish.Start";
    /// The stream name is refused (bad key, already published, ...).
    pub const PUBLISH_BAD_NAME: &str = "NetStream.Publish.BadName";
    /// Playback reset to the start of the list.
    pub const PLAY_RESET: &str = "NetStream.Play.Reset";
    /// Playback started.
    pub const PLAY_START: &str = "NetStream.Play.Start";
    /// No such stream to play.
    pub const PLAY_STREAM_NOT_FOUND: &str = "NetStream.Play.StreamNotFound";
    /// Playback failed for another reason.
    pub const PLAY_FAILED: &str = "NetStream.Play.Failed";
    /// The publisher of the stream being played went away.
    pub const PLAY_UNPUBLISH_NOTIFY: &str = "NetStream.Play.UnpublishNotify";
    /// The connection is accepted.
    pub const CONNECT_SUCCESS: &str = "NetConnection.Connect.Success";
}

/// Server settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// Our outbound chunk size, announced after `connect`. Media messages up
    /// to this size go out as one chunk ([`ServerSession::media_head`]).
    pub chunk_size: u32,
    /// Window Acknowledgement Size announced to the client.
    pub window_ack_size: u32,
    /// Set Peer Bandwidth announced to the client.
    pub peer_bandwidth: u32,
    /// Limits of the chunk decoder.
    pub chunk_limits: ChunkLimits,
    /// Limits for decoding commands.
    pub amf0_limits: Amf0Limits,
    /// Most message streams (`createStream`) per connection.
    pub max_streams: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            chunk_size: 60_000,
            window_ack_size: 2_500_000,
            peer_bandwidth: 2_500_000,
            chunk_limits: ChunkLimits::default(),
            amf0_limits: Amf0Limits::default(),
            max_streams: 8,
        }
    }
}

/// The publishing mode a client asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishType {
    /// Live only (the default, and what an unknown value reads as).
    Live,
    /// Record to a new file.
    Record,
    /// Append to a recording.
    Append,
}

impl PublishType {
    /// The value of `publish`'s type argument.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Live => "live",
            Self::Record => "record",
            Self::Append => "append",
        }
    }

    fn parse(text: Option<&str>) -> Self {
        match text {
            Some("record") => Self::Record,
            Some("append") => Self::Append,
            _ => Self::Live,
        }
    }
}

/// What the server session tells its caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerEvent {
    /// `connect` was answered with success.
    Connect {
        /// The application, without a query.
        app: String,
        /// What followed `?` in the application, if anything.
        app_query: String,
        /// The `tcUrl` the client gave.
        tc_url: String,
    },
    /// A client wants to publish: answer with
    /// [`ServerSession::accept_publish`] or [`ServerSession::reject_publish`].
    Publish {
        /// The message stream.
        stream_id: u32,
        /// The application of the connection.
        app: String,
        /// The stream name, without a query.
        name: String,
        /// What followed `?` in the name (e.g. `key=...`).
        query: String,
        /// Live, record or append.
        publish_type: PublishType,
    },
    /// A client wants to play: answer with [`ServerSession::accept_play`]
    /// or [`ServerSession::reject_play`].
    Play {
        /// The message stream.
        stream_id: u32,
        /// The application of the connection.
        app: String,
        /// The stream name, without a query.
        name: String,
        /// What followed `?` in the name.
        query: String,
    },
    /// A publishing stream stopped (`FCUnpublish`, `closeStream`,
    /// `deleteStream`).
    Unpublish {
        /// The message stream.
        stream_id: u32,
    },
    /// A playing stream stopped (`closeStream`, `deleteStream`).
    CloseStream {
        /// The message stream.
        stream_id: u32,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum StreamState {
    Idle,
    PublishPending { name: String },
    Publishing { name: String },
    PlayPending,
    Playing,
}

#[derive(Debug)]
struct StreamSlot {
    id: u32,
    state: StreamState,
}

/// Where a media payload starts in its message, and what it is.
#[derive(Debug, Clone, Copy)]
struct MediaSpan {
    kind: MediaKind,
    skip: usize,
}

/// One RTMP connection, server side, sans-IO.
///
/// The loop: hand the bytes read from the socket to
/// [`handle_input`](Self::handle_input) until it consumes nothing more;
/// after each call take the events from [`poll_event`](Self::poll_event)
/// and write [`pending_output`](Self::pending_output) to the socket.
/// Media messages from a publisher are not events: `handle_input` stops at
/// each one and returns it in [`Progress::media`], borrowing the decoder's
/// buffer (or the input), so the caller copies each payload once, into its
/// own buffer. Bytes written directly to the socket (a media head from
/// [`media_head`](Self::media_head) and a shared payload) must go after
/// the pending output.
#[derive(Debug)]
pub struct ServerSession {
    handshake: ServerHandshake,
    decoder: ChunkDecoder,
    core: ServerCore,
}

#[derive(Debug)]
struct ServerCore {
    config: ServerConfig,
    link: Link,
    events: VecDeque<ServerEvent>,
    connected: bool,
    app: String,
    tc_url: String,
    streams: Vec<StreamSlot>,
    next_stream_id: u32,
}

impl ServerSession {
    /// A session waiting for C0+C1. `epoch_ms` and `random_seed` fill S1.
    pub fn new(config: ServerConfig, epoch_ms: u32, random_seed: u64) -> Self {
        Self {
            handshake: ServerHandshake::new(epoch_ms, random_seed),
            decoder: ChunkDecoder::new(config.chunk_limits.clone()),
            core: ServerCore {
                config,
                link: Link::new(),
                events: VecDeque::new(),
                connected: false,
                app: String::new(),
                tc_url: String::new(),
                streams: Vec::new(),
                next_stream_id: 1,
            },
        }
    }

    /// Consumes input: the handshake, then messages, answering the ones
    /// the session handles itself (control, connect, createStream, ...)
    /// and queueing events. Stops after a media message from a publisher
    /// (returned in [`Progress::media`]) or when the input holds no more
    /// whole chunk head; call again with the rest.
    ///
    /// Media is returned for streams whose publish is accepted or still
    /// waiting for an answer (encoders send metadata and sequence headers
    /// right after `publish`); media on any other stream is dropped.
    /// Aggregate and shared-object messages are ignored.
    pub fn handle_input<'a>(&'a mut self, input: &'a [u8]) -> Result<Progress<'a>, RtmpError> {
        let mut at = 0;
        if !self.handshake.is_done() {
            at = self
                .handshake
                .handle_input(input, self.core.link.out_mut())?;
            self.core.link.count_received(at);
            if !self.handshake.is_done() {
                return Ok(Progress {
                    consumed: at,
                    media: None,
                });
            }
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
            if let Some(span) = self.core.handle_message(&message.header, payload)? {
                break Some((message, span, rest));
            }
        };
        let media = found.map(|(message, span, rest)| {
            let payload = self.decoder.payload(&message, rest);
            MediaMessage {
                stream_id: message.header.stream_id,
                kind: span.kind,
                timestamp: message.header.timestamp,
                payload: payload.get(span.skip..).unwrap_or_default(),
            }
        });
        Ok(Progress {
            consumed: at + used,
            media,
        })
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<ServerEvent> {
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

    /// The handshake the client used, once C1 is read.
    pub fn handshake_kind(&self) -> Option<HandshakeKind> {
        self.handshake.kind()
    }

    /// Whether `connect` has been answered.
    pub fn is_connected(&self) -> bool {
        self.core.connected
    }

    /// The application of `connect` (without query).
    pub fn app(&self) -> &str {
        &self.core.app
    }

    /// The `tcUrl` of `connect`.
    pub fn tc_url(&self) -> &str {
        &self.core.tc_url
    }

    /// Bytes received so far (handshake included).
    pub fn bytes_received(&self) -> u64 {
        self.core.link.received()
    }

    /// The chunk size of our output in force.
    pub fn out_chunk_size(&self) -> u32 {
        self.core.link.out_chunk_size()
    }

    /// The client's chunk size in force.
    pub fn in_chunk_size(&self) -> u32 {
        self.decoder.chunk_size()
    }

    /// Accepts a [`ServerEvent::Publish`]: Stream Begin and `onStatus`
    /// `NetStream.Publish.Start`; media on the stream goes on being
    /// returned by `handle_input`.
    pub fn accept_publish(&mut self, stream_id: u32) -> Result<(), RtmpError> {
        let slot = self.core.slot_mut(stream_id)?;
        let StreamState::PublishPending { name } = &slot.state else {
            return Err(RtmpError::WrongStreamState { stream_id });
        };
        let name = name.clone();
        let description = format!("{name} is now published.");
        slot.state = StreamState::Publishing { name };
        let link = &mut self.core.link;
        link.user_control(UserControl::StreamBegin(stream_id));
        link.on_status(stream_id, "status", status::PUBLISH_START, &description);
        Ok(())
    }

    /// Refuses a [`ServerEvent::Publish`] with an `onStatus` error, e.g.
    /// [`status::PUBLISH_BAD_NAME`]; the stream may publish again.
    pub fn reject_publish(
        &mut self,
        stream_id: u32,
        code: &str,
        description: &str,
    ) -> Result<(), RtmpError> {
        let slot = self.core.slot_mut(stream_id)?;
        if !matches!(slot.state, StreamState::PublishPending { .. }) {
            return Err(RtmpError::WrongStreamState { stream_id });
        }
        slot.state = StreamState::Idle;
        self.core
            .link
            .on_status(stream_id, "error", code, description);
        Ok(())
    }

    /// Accepts a [`ServerEvent::Play`]: Stream Begin, `onStatus`
    /// `NetStream.Play.Reset` and `NetStream.Play.Start`,
    /// `|RtmpSampleAccess`, then `NetStream.Data.Start`. Send media with
    /// [`send_media`](Self::send_media) or [`media_head`](Self::media_head).
    pub fn accept_play(&mut self, stream_id: u32) -> Result<(), RtmpError> {
        let slot = self.core.slot_mut(stream_id)?;
        if slot.state != StreamState::PlayPending {
            return Err(RtmpError::WrongStreamState { stream_id });
        }
        slot.state = StreamState::Playing;
        let link = &mut self.core.link;
        link.user_control(UserControl::StreamBegin(stream_id));
        link.on_status(
            stream_id,
            "status",
            status::PLAY_RESET,
            "Playing and resetting.",
        );
        link.on_status(stream_id, "status", status::PLAY_START, "Started playing.");
        link.amf0(csid::STREAM, type_id::DATA_AMF0, stream_id, |body| {
            amf0::write_string(body, "|RtmpSampleAccess");
            amf0::write_boolean(body, true);
            amf0::write_boolean(body, true);
        });
        link.amf0(csid::STREAM, type_id::DATA_AMF0, stream_id, |body| {
            amf0::write_string(body, "onStatus");
            amf0::write_object(body, &[("code", Amf0Value::from("NetStream.Data.Start"))]);
        });
        Ok(())
    }

    /// Refuses a [`ServerEvent::Play`] with an `onStatus` error, e.g.
    /// [`status::PLAY_STREAM_NOT_FOUND`].
    pub fn reject_play(
        &mut self,
        stream_id: u32,
        code: &str,
        description: &str,
    ) -> Result<(), RtmpError> {
        let slot = self.core.slot_mut(stream_id)?;
        if slot.state != StreamState::PlayPending {
            return Err(RtmpError::WrongStreamState { stream_id });
        }
        slot.state = StreamState::Idle;
        self.core
            .link
            .on_status(stream_id, "error", code, description);
        Ok(())
    }

    /// Tells a player that the publisher went away: `onStatus`
    /// `NetStream.Play.UnpublishNotify` and Stream EOF. The player stays.
    pub fn send_unpublish_notify(&mut self, stream_id: u32) -> Result<(), RtmpError> {
        let slot = self.core.slot_mut(stream_id)?;
        if slot.state != StreamState::Playing {
            return Err(RtmpError::WrongStreamState { stream_id });
        }
        let link = &mut self.core.link;
        link.on_status(
            stream_id,
            "status",
            status::PLAY_UNPUBLISH_NOTIFY,
            "The stream is unpublished.",
        );
        link.user_control(UserControl::StreamEof(stream_id));
        Ok(())
    }

    /// Queues a media message to a player (copied into the output, cut
    /// into chunks if it is larger than the chunk size). The stream's state
    /// is not checked.
    pub fn send_media(&mut self, stream_id: u32, kind: MediaKind, timestamp: u32, payload: &[u8]) {
        self.core
            .link
            .send(kind.csid(), timestamp, kind.type_id(), stream_id, payload);
    }

    /// The head of a media message of `length` bytes sent as one chunk, or
    /// `None` if it is larger than our chunk size (use
    /// [`send_media`](Self::send_media)). Write the pending output first,
    /// then the head, then the payload.
    pub fn media_head(
        &self,
        stream_id: u32,
        kind: MediaKind,
        timestamp: u32,
        length: usize,
    ) -> Option<ChunkHead> {
        let length = u32::try_from(length).ok()?;
        (length <= self.core.link.out_chunk_size())
            .then(|| media_chunk_head(kind.csid(), timestamp, kind.type_id(), stream_id, length))
    }

    /// Sends a Ping Request carrying `timestamp`.
    pub fn send_ping(&mut self, timestamp: u32) {
        self.core
            .link
            .user_control(UserControl::PingRequest(timestamp));
    }
}

/// Bytes of an AMF0 string `@setDataFrame`: marker, length, text.
const SET_DATA_FRAME: &[u8] = b"\x02\x00\x0d@setDataFrame";
const CLEAR_DATA_FRAME: &[u8] = b"\x02\x00\x0f@clearDataFrame";

impl ServerCore {
    fn slot_mut(&mut self, stream_id: u32) -> Result<&mut StreamSlot, RtmpError> {
        self.streams
            .iter_mut()
            .find(|s| s.id == stream_id)
            .ok_or(RtmpError::UnknownStream { stream_id })
    }

    fn is_publishing(&self, stream_id: u32) -> bool {
        self.streams.iter().any(|s| {
            s.id == stream_id
                && matches!(
                    s.state,
                    StreamState::PublishPending { .. } | StreamState::Publishing { .. }
                )
        })
    }

    /// Handles one message; returns where the media is if it is media to
    /// hand to the caller.
    fn handle_message(
        &mut self,
        header: &MessageHeader,
        payload: &[u8],
    ) -> Result<Option<MediaSpan>, RtmpError> {
        let kind = match header.type_id {
            type_id::AUDIO => MediaKind::Audio,
            type_id::VIDEO => MediaKind::Video,
            type_id::DATA_AMF0 | type_id::DATA_AMF3 => MediaKind::Data,
            _ => {
                let message = Message::decode(header.type_id, payload, &self.config.amf0_limits)?;
                self.handle_control(header, message)?;
                return Ok(None);
            }
        };
        if !self.is_publishing(header.stream_id) {
            return Ok(None);
        }
        let mut skip = 0;
        if kind == MediaKind::Data {
            if header.type_id == type_id::DATA_AMF3 && payload.first() == Some(&0) {
                skip = 1;
            }
            let body = payload.get(skip..).unwrap_or_default();
            if body.starts_with(CLEAR_DATA_FRAME) {
                return Ok(None);
            }
            if body.starts_with(SET_DATA_FRAME) {
                skip += SET_DATA_FRAME.len();
            }
        }
        Ok(Some(MediaSpan { kind, skip }))
    }

    fn handle_control(
        &mut self,
        header: &MessageHeader,
        message: Message<'_>,
    ) -> Result<(), RtmpError> {
        match message {
            Message::WindowAckSize(window) => self.link.set_peer_window(window),
            Message::UserControl(UserControl::PingRequest(timestamp)) => {
                self.link.user_control(UserControl::PingResponse(timestamp));
            }
            Message::Command(command) => self.handle_command(header, command)?,
            // Set Chunk Size and Abort are applied by the decoder; the rest
            // needs nothing from a server.
            _ => {}
        }
        Ok(())
    }

    fn handle_command(
        &mut self,
        header: &MessageHeader,
        command: Command,
    ) -> Result<(), RtmpError> {
        let name = command.name.as_str();
        if name == "connect" {
            self.on_connect(&command);
            return Ok(());
        }
        if !self.connected {
            return match name {
                "createStream" | "publish" | "play" | "releaseStream" | "FCPublish"
                | "deleteStream" => Err(RtmpError::NotConnected),
                _ => Ok(()),
            };
        }
        let txn = command.transaction_id;
        match name {
            "createStream" => self.on_create_stream(txn),
            "releaseStream" => self.answer_void(txn),
            "FCPublish" => {
                let stream = command.first_string_arg().unwrap_or_default().to_owned();
                self.link
                    .command(csid::COMMAND, 0, "onFCPublish", 0.0, |body| {
                        amf0::write_null(body);
                        super::session::write_info(body, "status", status::PUBLISH_START, &stream);
                    });
                self.answer_void(txn);
            }
            "FCUnpublish" => {
                let (stream, _) = split_query(command.first_string_arg().unwrap_or_default());
                let found = self.streams.iter().find_map(|s| match &s.state {
                    StreamState::PublishPending { name } | StreamState::Publishing { name }
                        if *name == stream =>
                    {
                        Some(s.id)
                    }
                    _ => None,
                });
                if let Some(id) = found {
                    self.stop_stream(id);
                }
                self.answer_void(txn);
            }
            "publish" => self.on_publish(header.stream_id, &command),
            "play" => self.on_play(header.stream_id, &command),
            "deleteStream" => {
                let id = command.args.first().and_then(Amf0Value::as_f64);
                if let Some(id) = id.and_then(stream_id_of) {
                    self.stop_stream(id);
                    self.streams.retain(|s| s.id != id);
                }
            }
            "closeStream" => self.stop_stream(header.stream_id),
            "getStreamLength" => {
                self.link.command(csid::COMMAND, 0, "_result", txn, |body| {
                    amf0::write_null(body);
                    amf0::write_number(body, 0.0);
                });
            }
            // receiveAudio, receiveVideo, pause, _checkbw and unknown
            // commands: nothing to do.
            _ => {}
        }
        Ok(())
    }

    fn on_connect(&mut self, command: &Command) {
        if self.connected {
            return;
        }
        let object = &command.command_object;
        let app = string_prop(object, "app");
        let (app, app_query) = split_query(app.trim_end_matches('/'));
        let tc_url = string_prop(object, "tcUrl");
        let link = &mut self.link;
        link.control(&Message::WindowAckSize(self.config.window_ack_size));
        link.control(&Message::SetPeerBandwidth {
            window: self.config.peer_bandwidth,
            limit: PeerBandwidthLimit::Dynamic,
        });
        link.set_out_chunk_size(self.config.chunk_size);
        link.command(
            csid::COMMAND,
            0,
            "_result",
            command.transaction_id,
            |body| {
                amf0::write_object(
                    body,
                    &[
                        ("fmsVer", Amf0Value::from("FMS/3,0,1,123")),
                        ("capabilities", Amf0Value::from(31.0)),
                    ],
                );
                amf0::write_object(
                    body,
                    &[
                        ("level", Amf0Value::from("status")),
                        ("code", Amf0Value::from(status::CONNECT_SUCCESS)),
                        ("description", Amf0Value::from("Connection succeeded.")),
                        ("objectEncoding", Amf0Value::from(0.0)),
                    ],
                );
            },
        );
        self.connected = true;
        self.app.clone_from(&app);
        self.tc_url.clone_from(&tc_url);
        self.events.push_back(ServerEvent::Connect {
            app,
            app_query,
            tc_url,
        });
    }

    /// `_result` with `null, undefined`, when an answer is expected.
    fn answer_void(&mut self, txn: f64) {
        if txn != 0.0 {
            self.link.command(csid::COMMAND, 0, "_result", txn, |body| {
                amf0::write_null(body);
                amf0::write_undefined(body);
            });
        }
    }

    fn on_create_stream(&mut self, txn: f64) {
        if self.streams.len() >= self.config.max_streams {
            self.link.command(csid::COMMAND, 0, "_error", txn, |body| {
                amf0::write_null(body);
                super::session::write_info(
                    body,
                    "error",
                    "NetConnection.Call.Failed",
                    "Too many streams.",
                );
            });
            return;
        }
        let id = self.next_stream_id;
        self.next_stream_id = self.next_stream_id.wrapping_add(1).max(1);
        self.streams.push(StreamSlot {
            id,
            state: StreamState::Idle,
        });
        self.link.command(csid::COMMAND, 0, "_result", txn, |body| {
            amf0::write_null(body);
            amf0::write_number(body, f64::from(id));
        });
    }

    /// The idle slot of `stream_id`, created if the client skipped
    /// `createStream`; `None` if busy or no room.
    fn idle_slot(&mut self, stream_id: u32) -> Option<&mut StreamSlot> {
        let known = self.streams.iter().position(|s| s.id == stream_id);
        let index = match known {
            Some(index) => index,
            None if stream_id != 0 && self.streams.len() < self.config.max_streams => {
                self.streams.push(StreamSlot {
                    id: stream_id,
                    state: StreamState::Idle,
                });
                self.streams.len() - 1
            }
            None => return None,
        };
        self.streams
            .get_mut(index)
            .filter(|s| s.state == StreamState::Idle)
    }

    fn on_publish(&mut self, stream_id: u32, command: &Command) {
        let (name, query) = split_query(command.first_string_arg().unwrap_or_default());
        let publish_type = PublishType::parse(command.args.get(1).and_then(Amf0Value::as_str));
        let Some(slot) = self.idle_slot(stream_id).filter(|_| !name.is_empty()) else {
            self.link.on_status(
                stream_id,
                "error",
                status::PUBLISH_BAD_NAME,
                "No stream name, or the stream is busy.",
            );
            return;
        };
        slot.state = StreamState::PublishPending { name: name.clone() };
        self.events.push_back(ServerEvent::Publish {
            stream_id,
            app: self.app.clone(),
            name,
            query,
            publish_type,
        });
    }

    fn on_play(&mut self, stream_id: u32, command: &Command) {
        let (name, query) = split_query(command.first_string_arg().unwrap_or_default());
        let Some(slot) = self.idle_slot(stream_id).filter(|_| !name.is_empty()) else {
            self.link.on_status(
                stream_id,
                "error",
                status::PLAY_FAILED,
                "No stream name, or the stream is busy.",
            );
            return;
        };
        slot.state = StreamState::PlayPending;
        self.events.push_back(ServerEvent::Play {
            stream_id,
            app: self.app.clone(),
            name,
            query,
        });
    }

    /// Ends what the stream was doing, with the matching event.
    fn stop_stream(&mut self, stream_id: u32) {
        let Some(slot) = self.streams.iter_mut().find(|s| s.id == stream_id) else {
            return;
        };
        let event = match slot.state {
            StreamState::PublishPending { .. } | StreamState::Publishing { .. } => {
                ServerEvent::Unpublish { stream_id }
            }
            StreamState::PlayPending | StreamState::Playing => {
                ServerEvent::CloseStream { stream_id }
            }
            StreamState::Idle => return,
        };
        slot.state = StreamState::Idle;
        self.events.push_back(event);
    }
}

/// A stream id sent as an AMF0 number.
fn stream_id_of(value: f64) -> Option<u32> {
    (value >= 0.0 && value <= f64::from(u32::MAX) && value.fract() == 0.0).then_some(value as u32)
}
