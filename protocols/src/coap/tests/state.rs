//! Deduplication, retransmission, observation and link format, under
//! simulated time.

use super::*;

const CON: MessageType = MessageType::Confirmable;
const NON: MessageType = MessageType::NonConfirmable;

// --- Deduplication ---------------------------------------------------------------

#[test]
fn duplicate_con_gets_the_same_answer() {
    let mut dedup = Deduplicator::new(DedupConfig::default());
    assert_eq!(dedup.check(0, &"a", CON, 7), Seen::New);
    // Still being processed: a duplicate with nothing to send.
    assert_eq!(
        dedup.check(100, &"a", CON, 7),
        Seen::Duplicate { response: None }
    );
    assert!(dedup.record_response(&"a", 7, b"\x60\x44\x00\x07"));
    assert_eq!(
        dedup.check(2_000, &"a", CON, 7),
        Seen::Duplicate {
            response: Some(&b"\x60\x44\x00\x07"[..])
        }
    );
    // Another peer, another id: new.
    assert_eq!(dedup.check(2_000, &"b", CON, 7), Seen::New);
    assert_eq!(dedup.check(2_000, &"a", CON, 8), Seen::New);
    // ACK and RST are not deduplicated.
    assert_eq!(
        dedup.check(2_000, &"a", MessageType::Acknowledgement, 7),
        Seen::New
    );
    assert_eq!(dedup.check(2_000, &"a", MessageType::Reset, 7), Seen::New);
    assert_eq!(dedup.figures().duplicates, 2);
    assert_eq!(dedup.figures().entries, 3);
    // Unknown id: not recorded.
    assert!(!dedup.record_response(&"a", 99, b"x"));
}

#[test]
fn dedup_lifetimes() {
    let mut dedup = Deduplicator::new(DedupConfig::default());
    assert_eq!(dedup.check(1_000, &1u8, CON, 1), Seen::New);
    assert_eq!(dedup.check(1_000, &1u8, NON, 2), Seen::New);
    // NON_LIFETIME is 145 s, EXCHANGE_LIFETIME 247 s.
    let non_end = 1_000 + NON_LIFETIME_MS;
    assert!(matches!(
        dedup.check(non_end - 1, &1u8, NON, 2),
        Seen::Duplicate { .. }
    ));
    assert_eq!(dedup.check(non_end, &1u8, NON, 2), Seen::New);
    let con_end = 1_000 + EXCHANGE_LIFETIME_MS;
    assert!(matches!(
        dedup.check(con_end - 1, &1u8, CON, 1),
        Seen::Duplicate { .. }
    ));
    assert_eq!(dedup.check(con_end, &1u8, CON, 1), Seen::New);
    // Entries go once the longest lifetime has passed.
    dedup.expire(con_end + EXCHANGE_LIFETIME_MS);
    assert_eq!(dedup.figures().entries, 0);
    assert!(dedup.figures().expired >= 3);
    // Time going backwards is taken as no time passing.
    assert_eq!(dedup.check(5, &1u8, CON, 9), Seen::New);
    assert!(matches!(
        dedup.check(6, &1u8, CON, 9),
        Seen::Duplicate { .. }
    ));
}

#[test]
fn dedup_bounds_per_peer_and_global() {
    let config = DedupConfig {
        max_per_peer: 3,
        max_entries: 5,
        max_response_bytes: 4,
        ..DedupConfig::default()
    };
    let mut dedup = Deduplicator::new(config);
    for id in 0..4 {
        assert_eq!(dedup.check(id.into(), &"a", CON, id), Seen::New);
    }
    // The peer's oldest went.
    assert_eq!(dedup.figures().evicted_per_peer, 1);
    assert_eq!(dedup.check(10, &"a", CON, 0), Seen::New);
    assert_eq!(dedup.figures().evicted_per_peer, 2);
    assert!(matches!(
        dedup.check(10, &"a", CON, 3),
        Seen::Duplicate { .. }
    ));
    // Other peers fill the table: the oldest of all go.
    for peer in ["b", "c", "d", "e", "f"] {
        assert_eq!(dedup.check(20, &peer, CON, 1), Seen::New);
    }
    let figures = dedup.figures();
    assert!(figures.entries <= 5, "{figures:?}");
    assert!(figures.evicted_global > 0, "{figures:?}");
    assert!(matches!(
        dedup.check(30, &"f", CON, 1),
        Seen::Duplicate { .. }
    ));
    // Answers over the size bound are not kept.
    assert!(!dedup.record_response(&"f", 1, b"12345"));
    assert_eq!(dedup.figures().responses_not_kept, 1);
    assert_eq!(
        dedup.check(30, &"f", CON, 1),
        Seen::Duplicate { response: None }
    );
    assert_eq!(dedup.remove_peer(&"f"), 1);
    assert_eq!(dedup.check(30, &"f", CON, 1), Seen::New);
}

#[test]
fn dedup_table_never_exceeds_its_bound() {
    let config = DedupConfig {
        max_per_peer: 4,
        max_entries: 64,
        ..DedupConfig::default()
    };
    let mut dedup = Deduplicator::new(config);
    for i in 0..10_000u32 {
        // 50 peers, each sending every id twice, 50 messages apart.
        let peer = i % 50;
        dedup.check(u64::from(i), &peer, CON, (i / 100) as u16);
        assert!(dedup.figures().entries <= 64);
    }
    let figures = dedup.figures();
    assert!(
        figures.evicted_global > 0 && figures.duplicates > 0,
        "{figures:?}"
    );
}

// --- Retransmission ---------------------------------------------------------------

fn con(message_id: u16, token: u8) -> Vec<u8> {
    let mut out = Vec::new();
    let mut notification = MessageBuilder::new(
        CON,
        Code::CONTENT,
        message_id,
        Token::new(&[token]).unwrap(),
    );
    notification.observe(5).unwrap().payload(b"down");
    notification.encode(&mut out);
    out
}

/// Polls at `now_ms`; returns the events as (kind, message id).
fn due(retransmitter: &mut Retransmitter<&'static str>, now_ms: u64) -> Vec<(&'static str, u16)> {
    let mut events = Vec::new();
    while let Some(event) = retransmitter.poll(now_ms) {
        events.push(match event {
            RetransmitEvent::Retransmit {
                message_id, bytes, ..
            } => {
                assert_eq!(decode(bytes).unwrap().message_id, message_id);
                ("again", message_id)
            }
            RetransmitEvent::GaveUp { message_id, .. } => ("gave up", message_id),
        });
        assert!(events.len() < 100);
    }
    events
}

#[test]
fn retransmission_schedule() {
    for (fraction, first) in [
        (0.5, 2_500u64),
        (0.0, 2_000),
        (1.0, 3_000),
        (f64::NAN, 2_000),
        (7.0, 3_000),
    ] {
        let mut retransmitter = Retransmitter::new(RetransmitConfig::default());
        assert_eq!(
            retransmitter.send(1_000, &"p", &con(0x10, 1), fraction),
            Ok(0x10)
        );
        // Timeouts double: T, 2T, 4T, 8T, then give up after 16T more.
        let mut at = 1_000;
        for (attempt, timeout) in [first, 2 * first, 4 * first, 8 * first]
            .into_iter()
            .enumerate()
        {
            at += timeout;
            assert_eq!(
                retransmitter.poll_timeout(),
                Some(at),
                "{fraction} attempt {attempt}"
            );
            assert!(due(&mut retransmitter, at - 1).is_empty());
            assert_eq!(due(&mut retransmitter, at), [("again", 0x10)]);
        }
        at += 16 * first;
        assert!(due(&mut retransmitter, at - 1).is_empty());
        assert_eq!(due(&mut retransmitter, at), [("gave up", 0x10)]);
        assert_eq!(retransmitter.poll_timeout(), None);
        let figures = retransmitter.figures();
        assert_eq!(
            (figures.retransmitted, figures.gave_up, figures.outstanding),
            (4, 1, 0)
        );
        if fraction == 1.0 {
            assert_eq!(at - 1_000, MAX_TRANSMIT_WAIT_MS);
        }
    }
}

#[test]
fn ack_and_rst_stop_retransmission() {
    let config = RetransmitConfig {
        nstart: 2,
        ..RetransmitConfig::default()
    };
    let mut retransmitter = Retransmitter::new(config);
    retransmitter.send(0, &"p", &con(1, 0xa1), 0.0).unwrap();
    retransmitter.send(0, &"p", &con(2, 0xa2), 0.0).unwrap();
    // NSTART reached for this peer, not for another.
    assert!(!retransmitter.can_send(&"p"));
    assert_eq!(
        retransmitter.send(0, &"p", &con(3, 0xa3), 0.0),
        Err(CoapError::PeerBusy { outstanding: 2 })
    );
    assert!(retransmitter.can_send(&"q"));
    assert_eq!(due(&mut retransmitter, 2_000), [("again", 1), ("again", 2)]);
    assert_eq!(
        retransmitter.on_ack(&"p", 1),
        Some(Token::new(&[0xa1]).unwrap())
    );
    assert_eq!(retransmitter.on_ack(&"p", 1), None);
    assert_eq!(retransmitter.on_rst(&"q", 2), None);
    assert_eq!(
        retransmitter.on_rst(&"p", 2),
        Some(Token::new(&[0xa2]).unwrap())
    );
    assert_eq!(retransmitter.outstanding(&"p"), 0);
    assert!(due(&mut retransmitter, 100_000).is_empty());
    let figures = retransmitter.figures();
    assert_eq!(
        (figures.sent, figures.acked, figures.reset, figures.refused),
        (2, 1, 1, 1)
    );
    // Only CONs; no id twice.
    let mut non = Vec::new();
    encode_empty(&mut non, NON, 5);
    assert_eq!(
        retransmitter.send(0, &"p", &non, 0.0),
        Err(CoapError::NotConfirmable)
    );
    assert_eq!(
        retransmitter.send(0, &"p", b"\x40", 0.0),
        Err(CoapError::NotConfirmable)
    );
    retransmitter.send(0, &"p", &con(9, 1), 0.0).unwrap();
    assert_eq!(
        retransmitter.send(0, &"p", &con(9, 1), 0.0),
        Err(CoapError::MessageIdInUse { message_id: 9 })
    );
    assert_eq!(retransmitter.remove_peer(&"p"), 1);
    assert_eq!(retransmitter.figures().outstanding, 0);
}

#[test]
fn retransmission_table_is_bounded() {
    let config = RetransmitConfig {
        max_outstanding: 3,
        ..RetransmitConfig::default()
    };
    let mut retransmitter = Retransmitter::new(config);
    let peers = ["a", "b", "c", "d"];
    for (i, peer) in peers.iter().enumerate() {
        let result = retransmitter.send(0, peer, &con(i as u16, 0), 0.0);
        assert_eq!(result.is_ok(), i < 3);
    }
    assert_eq!(
        retransmitter.send(0, &"d", &con(3, 0), 0.0),
        Err(CoapError::RetransmitFull { limit: 3 })
    );
    // Many sends and ACKs leave no pile of stale timers.
    assert!(retransmitter.on_ack(&"a", 0).is_some());
    for i in 3..10_000u16 {
        retransmitter.send(u64::from(i), &"d", &con(i, 0), 0.0).ok();
        retransmitter.on_ack(&"d", i);
    }
    assert!(retransmitter.poll_timeout().is_some());
    assert_eq!(retransmitter.figures().outstanding, 2);
    assert_eq!(retransmitter.figures().acked, 1 + 9_997);
    assert!(retransmitter.timer_count() <= 2 * 2 + 64 + 1);
}

#[test]
fn message_ids_wrap() {
    let mut ids = MessageIdCounter::new(0xfffe);
    assert_eq!(
        [ids.next_id(), ids.next_id(), ids.next_id()],
        [0xfffe, 0xffff, 0]
    );
}

// --- Observation -------------------------------------------------------------------

#[test]
fn observe_freshness() {
    let cases = [
        (1, 2, true),
        (2, 1, false),
        (5, 5, false),
        (0x00ff_ffff, 0, true), // wrapped
        (0, 0x00ff_ffff, false),
        (0, (1 << 23) - 1, true),
        (0, 1 << 23, false),
        (1 << 23, 0, false),
        ((1 << 23) + 1, 0, true),
    ];
    for (old, new, fresher) in cases {
        assert_eq!(is_fresher(old, 0, new, 0), fresher, "{old} → {new}");
    }
    // After 128 s anything is fresher.
    assert!(!is_fresher(2, 0, 1, OBSERVE_FRESHNESS_MS));
    assert!(is_fresher(2, 0, 1, OBSERVE_FRESHNESS_MS + 1));
    // Values are taken modulo 2^24.
    assert!(is_fresher(0x0100_0001, 0, 2, 0));
}

#[test]
fn observe_values_always_fresher() {
    let mut previous = None;
    let mut now = 0u64;
    for step in 0..5_000u64 {
        // Bursts (same millisecond), small steps, and jumps past 2^24 ms.
        now += match step % 7 {
            0 => 0,
            1 => 1,
            2 => 40_000_000,
            3 => 9_000_000,
            _ => step,
        };
        let value = next_observe_value(previous, now);
        assert!(value <= OBSERVE_MASK);
        if let Some(previous) = previous {
            assert!(
                is_fresher(previous, 0, value, 0),
                "{previous} → {value} at {now}"
            );
        }
        previous = Some(value);
    }
}

#[test]
fn observer_registry() {
    let config = ObserveConfig {
        max_observers: 3,
        max_per_peer: 2,
    };
    let mut registry: ObserverRegistry<&str, &str> = ObserverRegistry::new(config);
    let t = |byte: u8| Token::new(&[byte]).unwrap();
    let first = registry.register(1_000, &"p", t(1), "d1").unwrap();
    assert_eq!(first, Registered::Added { observe: 1_000 });
    // The same peer and token again: replaced, value still fresher.
    let again = registry.register(1_000, &"p", t(1), "d1").unwrap();
    assert!(matches!(again, Registered::Replaced { .. }));
    assert!(is_fresher(first.observe(), 0, again.observe(), 0));
    assert_eq!(registry.len(), 1);
    registry.register(1_000, &"p", t(2), "d1").unwrap();
    assert_eq!(
        registry.register(1_000, &"p", t(3), "d2"),
        Err(CoapError::ObserversFull { limit: 2 })
    );
    registry.register(1_000, &"q", t(1), "d2").unwrap();
    assert_eq!(
        registry.register(1_000, &"r", t(1), "d2"),
        Err(CoapError::ObserversFull { limit: 3 })
    );
    let observers: Vec<(&&str, Token)> = registry.observers(&"d1").collect();
    assert_eq!(observers, [(&"p", t(1)), (&"p", t(2))]);
    // Notifications count up.
    let n1 = registry.next_notification(1_000, &"p", t(1)).unwrap();
    let n2 = registry.next_notification(1_000, &"p", t(1)).unwrap();
    assert!(is_fresher(again.observe(), 0, n1, 0) && is_fresher(n1, 0, n2, 0));
    assert_eq!(registry.next_notification(1_000, &"p", t(9)), None);
    // Moving an observation to another resource.
    registry.register(2_000, &"p", t(2), "d2").unwrap();
    assert_eq!(registry.observers(&"d1").count(), 1);
    assert_eq!(registry.observers(&"d2").count(), 2);
    assert_eq!(registry.resource(&"p", t(2)), Some(&"d2"));
    // Deregistration and a peer going away.
    assert_eq!(registry.deregister(&"p", t(1)), Some("d1"));
    assert_eq!(registry.deregister(&"p", t(1)), None);
    assert_eq!(registry.observers(&"d1").count(), 0);
    assert_eq!(registry.remove_peer(&"p"), 1);
    assert_eq!(registry.len(), 1);
    registry.register(3_000, &"r", t(1), "d2").unwrap();
    assert!(!registry.is_empty());
}

#[test]
fn observe_requests() {
    let request = |code: Code, observe: Option<u32>| {
        let mut builder = MessageBuilder::new(CON, code, 1, Token::EMPTY);
        if let Some(value) = observe {
            builder.option_uint(OptionNumber::OBSERVE, value).unwrap();
        }
        let mut wire = Vec::new();
        builder.encode(&mut wire);
        wire
    };
    let parse = |wire: &[u8]| decode(wire).unwrap().observe_request();
    assert_eq!(
        parse(&request(Code::GET, Some(0))),
        Some(ObserveRequest::Register)
    );
    assert_eq!(
        parse(&request(Code::GET, Some(1))),
        Some(ObserveRequest::Deregister)
    );
    assert_eq!(
        parse(&request(Code::FETCH, Some(0))),
        Some(ObserveRequest::Register)
    );
    assert_eq!(parse(&request(Code::GET, Some(2))), None);
    assert_eq!(parse(&request(Code::GET, None)), None);
    assert_eq!(parse(&request(Code::POST, Some(0))), None);
}

// --- Link format ------------------------------------------------------------------

#[test]
fn well_known_core() {
    let links = [
        Link {
            target: "/devices/{id}/up",
            rt: Some("shoal.up"),
            ct: Some(0),
            ..Link::default()
        },
        Link {
            target: "/devices/{id}/down",
            rt: Some("shoal.down core.s"),
            obs: true,
            title: Some("say \"hi\""),
            ..Link::default()
        },
        Link {
            target: "/odd>target ",
            interface: Some("core.b"),
            ..Link::default()
        },
    ];
    let mut out = Vec::new();
    encode_link_format(&mut out, &links);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "</devices/{id}/up>;rt=\"shoal.up\";ct=0,\
         </devices/{id}/down>;rt=\"shoal.down core.s\";obs;title=\"say \\\"hi\\\"\",\
         </odd%3Etarget%20>;if=\"core.b\""
    );
    let filter = |query: &[u8]| -> Vec<usize> {
        let item = QueryItem::parse(query);
        links
            .iter()
            .enumerate()
            .filter(|(_, l)| l.matches(&item))
            .map(|(i, _)| i)
            .collect()
    };
    assert_eq!(filter(b"rt=shoal.up"), [0]);
    assert_eq!(filter(b"rt=core.s"), [1]);
    assert_eq!(filter(b"rt=shoal*"), [0, 1]);
    assert_eq!(filter(b"href=/devices/*"), [0, 1]);
    assert_eq!(filter(b"ct=0"), [0]);
    assert_eq!(filter(b"obs"), [1]);
    assert_eq!(filter(b"if=core.b"), [2]);
    assert_eq!(filter(b"sz=1"), Vec::<usize>::new());
    let mut empty = Vec::new();
    encode_link_format(&mut empty, &[]);
    assert!(empty.is_empty());
}
