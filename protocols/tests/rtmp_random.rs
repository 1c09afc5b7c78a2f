//! Seeded randomized checks of `rtmp`: random messages on random chunk
//! streams (1-, 2- and 3-byte basic headers), written with every header
//! format a real encoder may choose, extended timestamps with and without
//! their repetition on continuation chunks, Set Chunk Size between rounds,
//! and chunks of different chunk streams interleaved, decode back to the
//! same messages whatever the read sizes; cuts decode to a prefix without
//! an error; mutated and random bytes never panic and never break the
//! decoder's bounds, nor those of the server and client sessions. Fixed
//! seeds, so a failure names the seed that reproduces it.

mod support;

use shoal_protocols::amf0::Amf0Limits;
use shoal_protocols::rtmp::{
    encode_message, type_id, write_chunk_header, ChunkDecoder, ChunkLimits, ClientConfig,
    ClientSession, MediaKind, Message, PublishType, RtmpError, ServerConfig, ServerSession,
    HANDSHAKE_SIZE,
};
use support::Rng;

const SEEDS: u64 = 48;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Msg {
    csid: u32,
    timestamp: u32,
    type_id: u8,
    stream_id: u32,
    payload: Vec<u8>,
}

/// What the writer remembers of a chunk stream's last header.
#[derive(Debug, Clone, Copy)]
struct Last {
    timestamp: u32,
    ts_field: u32,
    length: usize,
    type_id: u8,
    stream_id: u32,
}

/// Writes chunk streams the way encoders in the field do.
struct Writer {
    last: std::collections::HashMap<u32, Last>,
    chunk_size: usize,
}

const CSIDS: [u32; 13] = [3, 4, 5, 6, 8, 20, 63, 64, 100, 319, 320, 1000, 65_599];
const TYPES: [u8; 8] = [3, 4, 8, 9, 15, 18, 20, 22];

impl Writer {
    /// The chunks of `m`, each with the message attached to its last one.
    fn chunks(&mut self, rng: &mut Rng, m: &Msg) -> Vec<(Vec<u8>, Option<Msg>)> {
        let len = m.payload.len();
        let last = self.last.get(&m.csid).copied();
        let mut formats = vec![0u8];
        let mut delta = 0;
        if let Some(last) = last.filter(|l| l.stream_id == m.stream_id) {
            delta = m.timestamp.wrapping_sub(last.timestamp);
            formats.push(1);
            if last.length == len && last.type_id == m.type_id {
                formats.push(2);
                if delta == last.ts_field {
                    formats.push(3);
                }
            }
        }
        let fmt = *rng.pick(&formats);
        let field = if fmt == 0 { m.timestamp } else { delta };
        let extended = field >= 0x00FF_FFFF;
        let repeat_extended = extended && !rng.chance(3);
        let mut chunks = Vec::new();
        let mut head = Vec::new();
        write_chunk_header(
            &mut head,
            fmt,
            m.csid,
            field,
            len as u32,
            m.type_id,
            m.stream_id,
        );
        let mut pieces = m.payload.chunks(self.chunk_size).peekable();
        if pieces.peek().is_none() {
            chunks.push((std::mem::take(&mut head), Some(m.clone())));
        }
        let mut first = true;
        while let Some(piece) = pieces.next() {
            let mut chunk = if first {
                std::mem::take(&mut head)
            } else {
                let mut continuation = Vec::new();
                let ts = if repeat_extended { field } else { 0 };
                write_chunk_header(&mut continuation, 3, m.csid, ts, 0, 0, 0);
                continuation
            };
            first = false;
            chunk.extend_from_slice(piece);
            let done = pieces.peek().is_none().then(|| m.clone());
            chunks.push((chunk, done));
        }
        self.last.insert(
            m.csid,
            Last {
                timestamp: m.timestamp,
                ts_field: field,
                length: len,
                type_id: m.type_id,
                stream_id: m.stream_id,
            },
        );
        chunks
    }
}

fn random_timestamp(rng: &mut Rng, previous: u32) -> u32 {
    match rng.below(6) {
        0 => rng.next() as u32,
        1 => rng.range(0x00FF_FFF0, 0x0100_0010) as u32,
        2 => u32::MAX - rng.below(5) as u32,
        _ => previous.wrapping_add(rng.range(0, 100) as u32),
    }
}

/// A random conversation: the wire and the messages in completion order.
fn random_conversation(rng: &mut Rng) -> (Vec<u8>, Vec<Msg>) {
    let mut writer = Writer {
        last: Default::default(),
        chunk_size: 128,
    };
    let mut wire = Vec::new();
    let mut expected = Vec::new();
    let mut clock = std::collections::HashMap::new();
    for round in 0..rng.range(1, 4) {
        if round > 0 {
            let any = rng.range(1, 5000) as u32;
            let size = *rng.pick(&[1u32, 2, 7, 128, 4096, 60_000, any]);
            let set = Msg {
                csid: 2,
                timestamp: 0,
                type_id: type_id::SET_CHUNK_SIZE,
                stream_id: 0,
                payload: size.to_be_bytes().to_vec(),
            };
            for (chunk, done) in writer.chunks(rng, &set) {
                wire.extend_from_slice(&chunk);
                expected.extend(done);
            }
            writer.chunk_size = size as usize;
        }
        // Per chunk stream, a queue of chunks; interleaved at random.
        let mut queues: Vec<std::collections::VecDeque<(Vec<u8>, Option<Msg>)>> = Vec::new();
        let streams = rng.range(1, 4) as usize;
        let mut used = Vec::new();
        for _ in 0..streams {
            let csid = *rng.pick(&CSIDS);
            if used.contains(&csid) {
                continue;
            }
            used.push(csid);
            let mut queue = std::collections::VecDeque::new();
            let max_len = if writer.chunk_size < 16 { 300 } else { 9000 };
            let stream_id = *rng.pick(&[0u32, 1, 7, u32::MAX]);
            let type_id = *rng.pick(&TYPES);
            let fixed_len = rng.below(max_len);
            for _ in 0..rng.range(1, 6) {
                let previous = clock.get(&csid).copied().unwrap_or(0);
                let timestamp = random_timestamp(rng, previous);
                clock.insert(csid, timestamp);
                // Repeated lengths and types let formats 2 and 3 happen.
                let len = if rng.chance(2) {
                    fixed_len
                } else if rng.chance(8) {
                    0
                } else {
                    rng.below(max_len)
                };
                let m = Msg {
                    csid,
                    timestamp,
                    type_id: if rng.chance(4) {
                        *rng.pick(&TYPES)
                    } else {
                        type_id
                    },
                    stream_id: if rng.chance(6) {
                        *rng.pick(&[0u32, 1])
                    } else {
                        stream_id
                    },
                    payload: rng.bytes(len),
                };
                queue.extend(writer.chunks(rng, &m));
            }
            queues.push(queue);
        }
        while !queues.is_empty() {
            let i = rng.below(queues.len());
            let (chunk, done) = queues[i].pop_front().unwrap();
            wire.extend_from_slice(&chunk);
            expected.extend(done);
            if queues[i].is_empty() {
                queues.remove(i);
            }
        }
    }
    (wire, expected)
}

/// Reads `wire` in random pieces; returns the messages and any error.
fn read(rng: &mut Rng, wire: &[u8], limits: &ChunkLimits) -> (Vec<Msg>, Option<RtmpError>) {
    let mut decoder = ChunkDecoder::new(limits.clone());
    let mut inbox = Vec::new();
    let mut got = Vec::new();
    let mut fed = 0;
    while fed < wire.len() {
        let end = (fed + rng.range(1, 3000) as usize).min(wire.len());
        inbox.extend_from_slice(&wire[fed..end]);
        fed = end;
        loop {
            let (n, message) = match decoder.decode(&inbox) {
                Ok(result) => result,
                Err(error) => return (got, Some(error)),
            };
            assert!(n <= inbox.len());
            let message = message.map(|m| Msg {
                csid: m.csid,
                timestamp: m.timestamp,
                type_id: m.type_id,
                stream_id: m.stream_id,
                payload: m.payload.to_vec(),
            });
            if let Some(m) = &message {
                assert!(m.payload.len() <= limits.max_message_bytes as usize);
                // Every message decodes without panicking.
                let _ = Message::decode(m.type_id, &m.payload, &Amf0Limits::default());
            }
            assert!(decoder.buffered_bytes() <= limits.max_buffered_bytes);
            inbox.drain(..n);
            match message {
                Some(m) => got.push(m),
                None => break,
            }
        }
    }
    (got, None)
}

#[test]
fn random_chunk_streams_reassemble() {
    let mut total = 0;
    for seed in 0..SEEDS {
        let mut rng = Rng(1000 + seed);
        for case in 0..8 {
            let (wire, expected) = random_conversation(&mut rng);
            let (got, error) = read(&mut rng, &wire, &ChunkLimits::default());
            assert_eq!(error, None, "seed {seed} case {case}");
            for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
                assert_eq!(
                    (g.csid, g.timestamp, g.type_id, g.stream_id, g.payload.len()),
                    (e.csid, e.timestamp, e.type_id, e.stream_id, e.payload.len()),
                    "seed {seed} case {case} message {i}"
                );
                assert_eq!(g, e, "seed {seed} case {case} message {i}");
            }
            assert_eq!(got.len(), expected.len(), "seed {seed} case {case}");
            total += expected.len();
        }
    }
    assert!(total > SEEDS as usize * 8 * 3);
}

#[test]
fn cuts_give_a_prefix_and_no_error() {
    for seed in 0..SEEDS {
        let mut rng = Rng(2000 + seed);
        for case in 0..8 {
            let (wire, expected) = random_conversation(&mut rng);
            let cut = rng.below(wire.len() + 1);
            let (got, error) = read(&mut rng, &wire[..cut], &ChunkLimits::default());
            assert_eq!(error, None, "seed {seed} case {case} cut {cut}");
            assert_eq!(got[..], expected[..got.len()], "seed {seed} case {case}");
        }
    }
}

fn mutate(rng: &mut Rng, wire: &mut Vec<u8>) {
    // Basic header bytes and lengths.
    support::mutate(
        rng,
        wire,
        &[0x00, 0x01, 0x02, 0x3F, 0x40, 0x80, 0xC0, 0xC1, 0xFF],
    );
}

#[test]
fn mutations_and_small_limits_never_panic() {
    for seed in 0..SEEDS {
        let mut rng = Rng(3000 + seed);
        for _ in 0..6 {
            let (mut wire, _) = random_conversation(&mut rng);
            mutate(&mut rng, &mut wire);
            let limits = ChunkLimits {
                max_message_bytes: rng.range(0, 10_000) as u32,
                max_chunk_streams: rng.range(0, 8) as usize,
                max_buffered_bytes: rng.range(0, 20_000) as usize,
            };
            read(&mut rng, &wire, &limits);
            read(&mut rng, &wire, &ChunkLimits::default());
        }
    }
    let mut rng = Rng(3500);
    for _ in 0..20_000 {
        let len = rng.below(64);
        let bytes = rng.bytes(len);
        read(&mut rng, &bytes, &ChunkLimits::default());
    }
}

#[test]
fn encode_message_round_trips() {
    for seed in 0..SEEDS {
        let mut rng = Rng(4000 + seed);
        let mut wire = Vec::new();
        let mut expected = Vec::new();
        let chunk_size = *rng.pick(&[1u32, 3, 128, 4096]);
        if chunk_size != 128 {
            encode_message(&mut wire, 128, 2, 0, 1, 0, &chunk_size.to_be_bytes());
            expected.push(Msg {
                csid: 2,
                timestamp: 0,
                type_id: 1,
                stream_id: 0,
                payload: chunk_size.to_be_bytes().to_vec(),
            });
        }
        for _ in 0..20 {
            let len = rng.below(1000);
            let m = Msg {
                csid: *rng.pick(&CSIDS),
                timestamp: random_timestamp(&mut rng, 0),
                type_id: *rng.pick(&TYPES),
                stream_id: rng.next() as u32,
                payload: rng.bytes(len),
            };
            encode_message(
                &mut wire,
                chunk_size,
                m.csid,
                m.timestamp,
                m.type_id,
                m.stream_id,
                &m.payload,
            );
            expected.push(m);
        }
        let (got, error) = read(&mut rng, &wire, &ChunkLimits::default());
        assert_eq!(error, None, "seed {seed}");
        assert_eq!(got, expected, "seed {seed}");
    }
}

/// The bytes a publishing client sends, and those a server answers with,
/// from a real conversation.
fn recorded_conversation(rng: &mut Rng) -> (Vec<u8>, Vec<u8>) {
    let mut server = ServerSession::new(ServerConfig::default(), 0, 1);
    let mut client = ClientSession::new(ClientConfig::default(), 0, 2);
    let (mut up, mut down) = (Vec::new(), Vec::new());
    client.connect("live", "rtmp://h/live?x=1");
    client.create_stream();
    client.announce_publish("cam");
    client.publish(1, "cam?key=k", PublishType::Live);
    client.send_metadata(1, &[]);
    for i in 0..10 {
        let kind = *rng.pick(&[MediaKind::Audio, MediaKind::Video]);
        let len = rng.below(9000);
        client.send_media(1, kind, i * 40, &rng.bytes(len));
    }
    client.play(1, "other");
    client.fc_unpublish("cam");
    client.delete_stream(1);
    for _ in 0..4 {
        let mut out = Vec::new();
        client.poll_transmit(&mut out);
        up.extend_from_slice(&out);
        let mut at = 0;
        while let Ok(progress) = server.handle_input(&out[at..]) {
            if progress.consumed == 0 && progress.media.is_none() {
                break;
            }
            at += progress.consumed;
        }
        while let Some(event) = server.poll_event() {
            if let shoal_protocols::rtmp::ServerEvent::Publish { stream_id, .. } = event {
                let _ = server.accept_publish(stream_id);
            }
        }
        let mut out = Vec::new();
        server.poll_transmit(&mut out);
        down.extend_from_slice(&out);
        let mut at = 0;
        while let Ok(progress) = client.handle_input(&out[at..]) {
            if progress.consumed == 0 && progress.media.is_none() {
                break;
            }
            at += progress.consumed;
        }
    }
    (up, down)
}

/// Feeds `wire` in random pieces; the session must not panic or over-consume.
fn feed<F>(rng: &mut Rng, wire: &[u8], mut handle: F)
where
    F: FnMut(&[u8]) -> Result<(usize, bool), RtmpError>,
{
    let mut inbox = Vec::new();
    let mut fed = 0;
    while fed < wire.len() {
        let end = (fed + rng.range(1, 5000) as usize).min(wire.len());
        inbox.extend_from_slice(&wire[fed..end]);
        fed = end;
        loop {
            match handle(&inbox) {
                Ok((n, media)) => {
                    assert!(n <= inbox.len());
                    inbox.drain(..n);
                    if n == 0 && !media {
                        break;
                    }
                }
                Err(_) => return,
            }
        }
    }
}

#[test]
fn sessions_survive_mutated_conversations() {
    for seed in 0..SEEDS {
        let mut rng = Rng(5000 + seed);
        let (up, down) = recorded_conversation(&mut rng);
        for _ in 0..4 {
            // Mutate only after the handshake, so the chunk layer is reached.
            let mut body = up[1 + 2 * HANDSHAKE_SIZE..].to_vec();
            mutate(&mut rng, &mut body);
            let mut wire = up[..1 + 2 * HANDSHAKE_SIZE].to_vec();
            wire.extend_from_slice(&body);
            let mut server = ServerSession::new(ServerConfig::default(), 0, 1);
            feed(&mut rng, &wire, |input| {
                let progress = server.handle_input(input)?;
                let media = progress.media.is_some();
                let consumed = progress.consumed;
                while let Some(event) = server.poll_event() {
                    if let shoal_protocols::rtmp::ServerEvent::Publish { stream_id, .. } = event {
                        let _ = server.accept_publish(stream_id);
                    }
                }
                Ok((consumed, media))
            });

            let mut body = down[1 + 2 * HANDSHAKE_SIZE..].to_vec();
            mutate(&mut rng, &mut body);
            let mut wire = down[..1 + 2 * HANDSHAKE_SIZE].to_vec();
            wire.extend_from_slice(&body);
            let mut client = ClientSession::new(ClientConfig::default(), 0, 2);
            feed(&mut rng, &wire, |input| {
                let progress = client.handle_input(input)?;
                let media = progress.media.is_some();
                let consumed = progress.consumed;
                while client.poll_event().is_some() {}
                Ok((consumed, media))
            });
        }
        // Random bytes after a good handshake.
        let mut wire = up[..1 + 2 * HANDSHAKE_SIZE].to_vec();
        let len = rng.below(3000);
        wire.extend_from_slice(&rng.bytes(len));
        let mut server = ServerSession::new(ServerConfig::default(), 0, 1);
        feed(&mut rng, &wire, |input| {
            let progress = server.handle_input(input)?;
            Ok((progress.consumed, progress.media.is_some()))
        });
    }
}
