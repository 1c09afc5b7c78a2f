//! Decodes the input as a series of CoAP datagrams from a few peers (the
//! first byte picks the option limit; then each datagram is a peer byte, a
//! length byte and that many bytes). Whatever decodes must encode back to
//! the same bytes and survive every getter; every error's answer must be a
//! valid message answering the same header. Each request then goes through
//! the deduplicator, the Block1 reassembler, the observer registry and the
//! Block2 slicer, whose bounds must hold.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_protocols::coap::{
    decode, decode_with, encode_message, Block1Config, Block1Reassembler, Block2Slice,
    DecodeLimits, DedupConfig, Deduplicator, MessageType, ObserveConfig, ObserveRequest,
    ObserverRegistry, Reaction,
};

fuzz_target!(|data: &[u8]| {
    let Some((&setup, mut rest)) = data.split_first() else {
        return;
    };
    let limits = DecodeLimits {
        max_options: usize::from(setup & 0x7F),
    };
    let mut dedup = Deduplicator::new(DedupConfig {
        max_per_peer: 4,
        max_entries: 16,
        ..DedupConfig::default()
    });
    let mut bodies = Block1Reassembler::new(Block1Config {
        max_body_bytes: 4096,
        max_transfers: 4,
        max_transfers_per_peer: 2,
        transfer_timeout_ms: 1_000,
        max_szx: 6,
    });
    let mut observers = ObserverRegistry::new(ObserveConfig {
        max_observers: 8,
        max_per_peer: 2,
    });
    let mut now_ms = 0u64;
    while let [peer, len, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len());
        let (datagram, next) = tail.split_at(len);
        rest = next;
        now_ms += 100;
        let peer = *peer & 3;

        let message = match decode_with(datagram, &limits) {
            Ok(message) => message,
            Err(error) => {
                let mut answer = Vec::new();
                let wrote = error.write_answer(&mut answer, 1);
                assert_eq!(wrote, error.reaction() != Reaction::Ignore);
                if wrote {
                    let back = decode(&answer).expect("an answer decodes");
                    let header = error.header().expect("an answer has a header");
                    match error.reaction() {
                        Reaction::Reset => assert_eq!(back.message_id, header.message_id),
                        _ => assert_eq!(back.token, header.token),
                    }
                }
                continue;
            }
        };
        assert!(message.option_count() <= limits.max_options);
        let mut again = Vec::new();
        encode_message(&message, &mut again);
        assert_eq!(again, datagram, "re-encoding differs");
        assert_eq!(message.options().count(), message.option_count());
        let _ = message.check_options();
        let mut path = String::new();
        let _ = message.write_path(&mut path);
        let _ = message.query_value("secret");
        let _ = (message.content_format(), message.size1(), message.size2());

        if !message.is_request() {
            continue;
        }
        dedup.check(now_ms, &peer, message.mtype, message.message_id);
        if message.mtype == MessageType::Confirmable {
            dedup.record_response(&peer, message.message_id, datagram);
        }
        assert!(dedup.figures().entries <= 16);
        let _ = bodies.feed(now_ms, &peer, &message);
        let figures = bodies.figures();
        assert!(figures.active <= 4 && figures.buffered_bytes <= 4 * 4096);
        match message.observe_request() {
            Some(ObserveRequest::Register) => {
                let _ = observers.register(now_ms, &peer, message.token, path.clone());
            }
            Some(ObserveRequest::Deregister) => {
                observers.deregister(&peer, message.token);
            }
            None => {}
        }
        assert!(observers.len() <= 8);
        if let Ok(requested) = message.block2() {
            if let Some(slice) = Block2Slice::of(message.payload, requested, setup >> 5) {
                assert!(slice.payload.len() <= 1024);
                assert!(slice.payload.len() <= message.payload.len());
            }
        }
    }
});
