//! The in-memory pair: a client and a server session talking through byte
//! pipes, delivering at most `step` bytes per read, with the bytes of each
//! direction also decoded by an observer.

use crate::amf0::Amf0Limits;

use super::super::*;

/// A message as an observer saw it on the wire.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Seen {
    pub(super) type_id: u8,
    pub(super) stream_id: u32,
    pub(super) timestamp: u32,
    pub(super) payload: Vec<u8>,
}

impl Seen {
    pub(super) fn command(&self) -> Option<Command> {
        (self.type_id == type_id::COMMAND_AMF0)
            .then(|| Command::decode(&self.payload, &Amf0Limits::default()).unwrap())
    }

    pub(super) fn control(&self) -> Option<Message<'_>> {
        matches!(self.type_id, 1..=6)
            .then(|| Message::decode(self.type_id, &self.payload, &Amf0Limits::default()).unwrap())
    }
}

/// Decodes one direction of the conversation after the handshake.
pub(super) struct Observer {
    pub(super) decoder: ChunkDecoder,
    pub(super) skip: usize,
    pub(super) inbox: Vec<u8>,
    pub(super) seen: Vec<Seen>,
}

impl Observer {
    pub(super) fn new() -> Self {
        Self {
            decoder: ChunkDecoder::new(ChunkLimits::default()),
            // C0+C1+C2 one way, S0+S1+S2 the other.
            skip: 1 + 2 * HANDSHAKE_SIZE,
            inbox: Vec::new(),
            seen: Vec::new(),
        }
    }

    pub(super) fn feed(&mut self, mut bytes: &[u8]) {
        let skip = self.skip.min(bytes.len());
        self.skip -= skip;
        bytes = &bytes[skip..];
        self.inbox.extend_from_slice(bytes);
        loop {
            let (n, message) = self.decoder.decode(&self.inbox).unwrap();
            let seen = message.map(|m| Seen {
                type_id: m.type_id,
                stream_id: m.stream_id,
                timestamp: m.timestamp,
                payload: m.payload.to_vec(),
            });
            self.inbox.drain(..n);
            match seen {
                Some(seen) => self.seen.push(seen),
                None => break,
            }
        }
    }

    pub(super) fn commands(&self) -> Vec<Command> {
        self.seen.iter().filter_map(Seen::command).collect()
    }

    pub(super) fn controls(&self) -> Vec<Message<'_>> {
        self.seen.iter().filter_map(Seen::control).collect()
    }
}

pub(super) type Media = (u32, MediaKind, u32, Vec<u8>);

pub(super) struct Pair {
    pub(super) server: ServerSession,
    pub(super) client: ClientSession,
    pub(super) to_server: Vec<u8>,
    pub(super) server_inbox: Vec<u8>,
    pub(super) to_client: Vec<u8>,
    pub(super) client_inbox: Vec<u8>,
    /// Most bytes delivered per read.
    pub(super) step: usize,
    pub(super) server_media: Vec<Media>,
    pub(super) client_media: Vec<Media>,
    pub(super) server_events: Vec<ServerEvent>,
    pub(super) client_events: Vec<ClientEvent>,
    pub(super) up: Observer,
    pub(super) down: Observer,
}

impl Pair {
    pub(super) fn new(server: ServerConfig, client: ClientConfig, step: usize) -> Self {
        Self {
            server: ServerSession::new(server, 1000, 11),
            client: ClientSession::new(client, 2000, 22),
            to_server: Vec::new(),
            server_inbox: Vec::new(),
            to_client: Vec::new(),
            client_inbox: Vec::new(),
            step,
            server_media: Vec::new(),
            client_media: Vec::new(),
            server_events: Vec::new(),
            client_events: Vec::new(),
            up: Observer::new(),
            down: Observer::new(),
        }
    }

    pub(super) fn default_pair() -> Self {
        Self::new(ServerConfig::default(), ClientConfig::default(), usize::MAX)
    }

    /// Bytes as if the client had written them.
    pub(super) fn inject_to_server(&mut self, bytes: &[u8]) {
        self.up.feed(bytes);
        self.to_server.extend_from_slice(bytes);
    }

    /// Bytes as if the server had written them.
    pub(super) fn inject_to_client(&mut self, bytes: &[u8]) {
        self.down.feed(bytes);
        self.to_client.extend_from_slice(bytes);
    }

    pub(super) fn try_drive(&mut self) -> Result<(), RtmpError> {
        for _ in 0..1_000_000 {
            let mut out = Vec::new();
            self.client.poll_transmit(&mut out);
            self.inject_to_server(&out);
            let mut out = Vec::new();
            self.server.poll_transmit(&mut out);
            self.inject_to_client(&out);
            if self.to_server.is_empty() && self.to_client.is_empty() {
                return Ok(());
            }

            let n = self.step.min(self.to_server.len());
            self.server_inbox.extend(self.to_server.drain(..n));
            loop {
                let progress = self.server.handle_input(&self.server_inbox)?;
                assert!(progress.consumed <= self.server_inbox.len());
                let consumed = progress.consumed;
                let got = progress
                    .media
                    .map(|m| (m.stream_id, m.kind, m.timestamp, m.payload.to_vec()));
                self.server_inbox.drain(..consumed);
                match got {
                    Some(media) => self.server_media.push(media),
                    None if consumed == 0 => break,
                    None => {}
                }
            }
            while let Some(event) = self.server.poll_event() {
                self.server_events.push(event);
            }

            let n = self.step.min(self.to_client.len());
            self.client_inbox.extend(self.to_client.drain(..n));
            loop {
                let progress = self.client.handle_input(&self.client_inbox)?;
                let consumed = progress.consumed;
                let got = progress
                    .media
                    .map(|m| (m.stream_id, m.kind, m.timestamp, m.payload.to_vec()));
                self.client_inbox.drain(..consumed);
                match got {
                    Some(media) => self.client_media.push(media),
                    None if consumed == 0 => break,
                    None => {}
                }
            }
            while let Some(event) = self.client.poll_event() {
                self.client_events.push(event);
            }
        }
        panic!("the pair never went quiet");
    }

    pub(super) fn drive(&mut self) {
        self.try_drive().unwrap();
    }

    pub(super) fn take_server_events(&mut self) -> Vec<ServerEvent> {
        std::mem::take(&mut self.server_events)
    }

    pub(super) fn take_client_events(&mut self) -> Vec<ClientEvent> {
        std::mem::take(&mut self.client_events)
    }

    /// Handshake, connect, createStream; returns the stream id.
    pub(super) fn connect_and_create(&mut self, app: &str) -> u32 {
        self.client.connect(app, "rtmp://localhost/live");
        self.client.create_stream();
        self.drive();
        let events = self.take_server_events();
        assert!(
            matches!(events[..], [ServerEvent::Connect { .. }]),
            "{events:?}"
        );
        let events = self.take_client_events();
        assert!(events.contains(&ClientEvent::Connected), "{events:?}");
        events
            .iter()
            .find_map(|e| match e {
                ClientEvent::StreamCreated { stream_id } => Some(*stream_id),
                _ => None,
            })
            .expect("stream created")
    }

    /// Up to an accepted publish of `name`; returns the stream id.
    pub(super) fn publishing(&mut self, name: &str) -> u32 {
        let stream_id = self.connect_and_create("live");
        self.client.announce_publish(name);
        self.client.publish(stream_id, name, PublishType::Live);
        self.drive();
        let events = self.take_server_events();
        assert!(
            events
                .iter()
                .any(|e| matches!(e, ServerEvent::Publish { stream_id: s, .. } if *s == stream_id)),
            "{events:?}"
        );
        self.server.accept_publish(stream_id).unwrap();
        self.drive();
        stream_id
    }

    /// Up to an accepted play of `name`; returns the stream id.
    pub(super) fn playing(&mut self, name: &str) -> u32 {
        let stream_id = self.connect_and_create("live");
        self.client.play(stream_id, name);
        self.drive();
        let events = self.take_server_events();
        assert!(
            events
                .iter()
                .any(|e| matches!(e, ServerEvent::Play { stream_id: s, .. } if *s == stream_id)),
            "{events:?}"
        );
        self.server.accept_play(stream_id).unwrap();
        self.drive();
        self.client_media.clear();
        stream_id
    }
}

pub(super) fn status_codes(events: &[ClientEvent]) -> Vec<(String, String)> {
    events
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Status { level, code, .. } => Some((level.clone(), code.clone())),
            _ => None,
        })
        .collect()
}

pub(super) fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(13) ^ seed)
        .collect()
}
