//! Decodes the input as an RTMP chunk stream with limits picked by the
//! first byte, fed in pieces whose sizes come from the second byte. A call
//! must take no more than it was given, a message must respect the size
//! limit and the decoder its buffering limit; every message is decoded as
//! a message (no panic), encoded again and must decode to itself. Then the
//! same bytes go to a server session after a valid handshake.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_protocols::amf0::Amf0Limits;
use shoal_protocols::rtmp::{
    encode_message, ChunkDecoder, ChunkLimits, Message, ServerConfig, ServerSession,
    DEFAULT_CHUNK_SIZE, HANDSHAKE_SIZE,
};

fuzz_target!(|data: &[u8]| {
    let [setup, piece, stream @ ..] = data else {
        return;
    };
    let limits = ChunkLimits {
        max_message_bytes: [0u32, 100, 70_000, 4 << 20][usize::from(setup & 3)],
        max_chunk_streams: [1usize, 4, 64, 1000][usize::from(setup >> 2 & 3)],
        max_buffered_bytes: [0usize, 1000, 1 << 20, 8 << 20][usize::from(setup >> 4 & 3)],
    };
    let piece = usize::from(*piece).max(1);

    let mut decoder = ChunkDecoder::new(limits.clone());
    let mut inbox = Vec::new();
    let mut fed = 0;
    'read: while fed < stream.len() {
        let end = (fed + piece).min(stream.len());
        inbox.extend_from_slice(&stream[fed..end]);
        fed = end;
        loop {
            let (consumed, message) = match decoder.decode(&inbox) {
                Ok(result) => result,
                Err(_) => break 'read,
            };
            assert!(consumed <= inbox.len(), "consumed past the input");
            let Some(m) = message else {
                inbox.drain(..consumed);
                assert!(decoder.buffered_bytes() <= limits.max_buffered_bytes);
                break;
            };
            assert!(m.payload.len() <= limits.max_message_bytes as usize);
            let _ = Message::decode(m.type_id, m.payload, &Amf0Limits::default());

            let mut again = Vec::new();
            encode_message(
                &mut again,
                DEFAULT_CHUNK_SIZE,
                m.csid,
                m.timestamp,
                m.type_id,
                m.stream_id,
                m.payload,
            );
            let mut fresh = ChunkDecoder::new(ChunkLimits::default());
            if m.type_id > 2 {
                let (n, back) = fresh.decode(&again).expect("re-encoded message decodes");
                let back = back.expect("re-encoded message is whole");
                assert_eq!(n, again.len());
                assert_eq!(
                    (
                        back.csid,
                        back.timestamp,
                        back.type_id,
                        back.stream_id,
                        back.payload
                    ),
                    (m.csid, m.timestamp, m.type_id, m.stream_id, m.payload)
                );
            }
            inbox.drain(..consumed);
            assert!(decoder.buffered_bytes() <= limits.max_buffered_bytes);
        }
    }

    // The same bytes as what a client sends after a simple handshake.
    let mut wire = vec![3];
    wire.extend_from_slice(&[0; 2 * HANDSHAKE_SIZE]);
    wire.extend_from_slice(stream);
    let mut server = ServerSession::new(ServerConfig::default(), 0, 0);
    let mut at = 0;
    loop {
        let Ok(progress) = server.handle_input(&wire[at..]) else {
            break;
        };
        assert!(progress.consumed <= wire.len() - at);
        let stop = progress.consumed == 0 && progress.media.is_none();
        at += progress.consumed;
        while server.poll_event().is_some() {}
        if stop {
            break;
        }
    }
});
