//! Seeded randomized checks of the MQTT codec: random valid packets of every
//! type (with random properties the type allows) in both versions, then
//! round trips, concatenated streams, truncations and mutations. Fixed
//! seeds, so a failure names the seed that reproduces it.

mod support;

use shoal_protocols::mqtt::{
    decode, encode, encode_publish_head, encoded_len, read_fixed_header, Ack, Auth, ConnAck,
    Connect, Decoded, Disconnect, MqttError, Packet, Properties, Publish, QoS, ReasonCode,
    RetainHandling, SubAck, Subscribe, SubscriptionOptions, UnsubAck, Unsubscribe, Version, Will,
    MAX_REMAINING_LENGTH,
};
use support::Rng;

const SEEDS: u64 = 64;
const STREAMS_PER_SEED: usize = 80;
const MAX: u32 = 1 << 24;

/// Strings and byte strings the generated packets borrow from.
struct Pool {
    strings: Vec<String>,
    blobs: Vec<Vec<u8>>,
}

impl Pool {
    fn new(rng: &mut Rng) -> Self {
        // ASCII, topic characters and multi-byte UTF-8; never U+0000.
        const PIECES: &[&str] = &[
            "a",
            "b",
            "z",
            "/",
            "+",
            "#",
            "$",
            " ",
            "\u{e9}",
            "\u{20ac}",
            "\u{1d11e}",
            "\u{7f}",
        ];
        let strings = (0..48)
            .map(|i| {
                let len = match i {
                    0 => 0,
                    _ if rng.chance(12) => rng.range(50, 400),
                    _ => rng.range(1, 12),
                };
                (0..len).map(|_| *rng.pick(PIECES)).collect()
            })
            .collect();
        let blobs = (0..48)
            .map(|i| {
                let len = match i {
                    0 => 0,
                    _ if rng.chance(10) => rng.range(100, 3000),
                    _ => rng.range(1, 24),
                };
                (0..len).map(|_| rng.next() as u8).collect()
            })
            .collect();
        Self { strings, blobs }
    }

    fn str(&self, rng: &mut Rng) -> &str {
        rng.pick(&self.strings).as_str()
    }

    fn nonempty(&self, rng: &mut Rng) -> &str {
        &self.strings[1 + rng.below(self.strings.len() - 1)]
    }

    fn bytes(&self, rng: &mut Rng) -> &[u8] {
        rng.pick(&self.blobs).as_slice()
    }
}

// Table 2-4 of MQTT 5.0, written out again as the oracle.
const CONNECT_PROPS: &[u8] = &[0x11, 0x15, 0x16, 0x17, 0x19, 0x21, 0x22, 0x26, 0x27];
const WILL_PROPS: &[u8] = &[0x01, 0x02, 0x03, 0x08, 0x09, 0x18, 0x26];
const CONNACK_PROPS: &[u8] = &[
    0x11, 0x12, 0x13, 0x15, 0x16, 0x1A, 0x1C, 0x1F, 0x21, 0x22, 0x24, 0x25, 0x26, 0x27, 0x28, 0x29,
    0x2A,
];
const PUBLISH_PROPS: &[u8] = &[0x01, 0x02, 0x03, 0x08, 0x09, 0x0B, 0x23, 0x26];
const REASON_PROPS: &[u8] = &[0x1F, 0x26];
const SUBSCRIBE_PROPS: &[u8] = &[0x0B, 0x26];
const UNSUBSCRIBE_PROPS: &[u8] = &[0x26];
const DISCONNECT_PROPS: &[u8] = &[0x11, 0x1C, 0x1F, 0x26];
const AUTH_PROPS: &[u8] = &[0x15, 0x16, 0x1F, 0x26];

/// Random values for a random subset of `ids`.
fn random_props<'a>(rng: &mut Rng, pool: &'a Pool, ids: &[u8], in_publish: bool) -> Properties<'a> {
    let mut p = Properties::default();
    if rng.chance(3) {
        return p;
    }
    for &id in ids {
        if !rng.chance(3) {
            continue;
        }
        let flag = rng.below(2) as u8;
        let two = rng.next() as u16;
        let four = rng.next() as u32;
        match id {
            0x01 => p.payload_format_indicator = Some(flag),
            0x02 => p.message_expiry_interval = Some(four),
            0x03 => p.content_type = Some(pool.str(rng)),
            0x08 => p.response_topic = Some(pool.str(rng)),
            0x09 => p.correlation_data = Some(pool.bytes(rng)),
            0x0B => {
                let count = if in_publish { rng.range(1, 4) } else { 1 };
                for _ in 0..count {
                    let id = match rng.below(3) {
                        0 => rng.range(1, 127),
                        1 => rng.range(128, 20_000),
                        _ => rng.range(1, u64::from(MAX_REMAINING_LENGTH)),
                    };
                    p.subscription_identifiers.push(id as u32);
                }
            }
            0x11 => p.session_expiry_interval = Some(four),
            0x12 => p.assigned_client_identifier = Some(pool.str(rng)),
            0x13 => p.server_keep_alive = Some(two),
            0x15 => p.authentication_method = Some(pool.str(rng)),
            0x16 => p.authentication_data = Some(pool.bytes(rng)),
            0x17 => p.request_problem_information = Some(flag),
            0x18 => p.will_delay_interval = Some(four),
            0x19 => p.request_response_information = Some(flag),
            0x1A => p.response_information = Some(pool.str(rng)),
            0x1C => p.server_reference = Some(pool.str(rng)),
            0x1F => p.reason_string = Some(pool.str(rng)),
            0x21 => p.receive_maximum = Some(two.max(1)),
            0x22 => p.topic_alias_maximum = Some(two),
            0x23 => p.topic_alias = Some(two.max(1)),
            0x24 => p.maximum_qos = Some(flag),
            0x25 => p.retain_available = Some(flag),
            0x26 => {
                for _ in 0..rng.range(1, 3) {
                    p.user_properties.push((pool.str(rng), pool.str(rng)));
                }
            }
            0x27 => p.maximum_packet_size = Some(four.max(1)),
            0x28 => p.wildcard_subscription_available = Some(flag),
            0x29 => p.subscription_identifier_available = Some(flag),
            0x2A => p.shared_subscription_available = Some(flag),
            _ => unreachable!("{id:#x}"),
        }
    }
    p
}

fn qos(rng: &mut Rng) -> QoS {
    *rng.pick(&[QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce])
}

fn packet_id(rng: &mut Rng) -> u16 {
    if rng.chance(4) {
        *rng.pick(&[1, u16::MAX])
    } else {
        rng.range(1, u64::from(u16::MAX)) as u16
    }
}

/// A reason code among `codes`.
fn code(rng: &mut Rng, codes: &[u8]) -> ReasonCode {
    ReasonCode::from_u8(*rng.pick(codes)).unwrap()
}

const CONNACK_V5: &[u8] = &[
    0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95, 0x97,
    0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F,
];
const CONNACK_V311: &[u8] = &[0x00, 0x84, 0x85, 0x88, 0x86, 0x87];
const PUBACK_V5: &[u8] = &[0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99];
const PUBREL_V5: &[u8] = &[0x00, 0x92];
const SUBACK_V5: &[u8] = &[
    0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2,
];
const SUBACK_V311: &[u8] = &[0x00, 0x01, 0x02, 0x80];
const UNSUBACK_V5: &[u8] = &[0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91];
const DISCONNECT_V5: &[u8] = &[
    0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93, 0x94, 0x95,
    0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2,
];
const AUTH_V5: &[u8] = &[0x00, 0x18, 0x19];

/// A random packet of a random type that is valid in `version` (so the
/// round trip is exact: nothing 3.1.1 would drop).
fn random_packet<'a>(rng: &mut Rng, pool: &'a Pool, version: Version) -> Packet<'a> {
    let v5 = version == Version::V5;
    let props = |rng: &mut Rng, ids: &[u8], in_publish: bool| {
        if v5 {
            random_props(rng, pool, ids, in_publish)
        } else {
            Properties::default()
        }
    };
    let kinds = if v5 { 15 } else { 14 };
    match rng.below(kinds) {
        0 => {
            let will = rng.chance(2).then(|| Will {
                topic: pool.str(rng),
                payload: pool.bytes(rng),
                qos: qos(rng),
                retain: rng.chance(2),
                properties: props(rng, WILL_PROPS, false),
            });
            let username = rng.chance(2).then(|| pool.str(rng));
            let password = (rng.chance(2) && (v5 || username.is_some())).then(|| pool.bytes(rng));
            Packet::Connect(Connect {
                version,
                clean_start: rng.chance(2),
                keep_alive_secs: rng.next() as u16,
                client_id: pool.str(rng),
                will,
                username,
                password,
                properties: props(rng, CONNECT_PROPS, false),
            })
        }
        1 => Packet::ConnAck(ConnAck {
            session_present: rng.chance(2),
            code: code(rng, if v5 { CONNACK_V5 } else { CONNACK_V311 }),
            properties: props(rng, CONNACK_PROPS, false),
        }),
        2..=4 => {
            // PUBLISH, the common case, three times as likely.
            let qos = qos(rng);
            Packet::Publish(Publish {
                dup: qos != QoS::AtMostOnce && rng.chance(3),
                qos,
                retain: rng.chance(2),
                topic: pool.str(rng),
                packet_id: (qos != QoS::AtMostOnce).then(|| packet_id(rng)),
                properties: props(rng, PUBLISH_PROPS, true),
                payload: pool.bytes(rng),
            })
        }
        5 => {
            let kind = rng.below(4);
            let codes = if kind < 2 { PUBACK_V5 } else { PUBREL_V5 };
            let ack = Ack {
                packet_id: packet_id(rng),
                code: if v5 {
                    code(rng, codes)
                } else {
                    ReasonCode::Success
                },
                properties: props(rng, REASON_PROPS, false),
            };
            match kind {
                0 => Packet::PubAck(ack),
                1 => Packet::PubRec(ack),
                2 => Packet::PubRel(ack),
                _ => Packet::PubComp(ack),
            }
        }
        6 => {
            let filters = (0..rng.range(1, 5))
                .map(|_| {
                    let options = SubscriptionOptions {
                        qos: qos(rng),
                        no_local: v5 && rng.chance(2),
                        retain_as_published: v5 && rng.chance(2),
                        retain_handling: if v5 {
                            *rng.pick(&[
                                RetainHandling::OnSubscribe,
                                RetainHandling::OnNewSubscribe,
                                RetainHandling::Never,
                            ])
                        } else {
                            RetainHandling::OnSubscribe
                        },
                    };
                    (pool.nonempty(rng), options)
                })
                .collect();
            Packet::Subscribe(Subscribe {
                packet_id: packet_id(rng),
                filters,
                properties: props(rng, SUBSCRIBE_PROPS, false),
            })
        }
        7 => Packet::SubAck(SubAck {
            packet_id: packet_id(rng),
            codes: (0..rng.range(1, 6))
                .map(|_| code(rng, if v5 { SUBACK_V5 } else { SUBACK_V311 }))
                .collect(),
            properties: props(rng, REASON_PROPS, false),
        }),
        8 => Packet::Unsubscribe(Unsubscribe {
            packet_id: packet_id(rng),
            filters: (0..rng.range(1, 5)).map(|_| pool.nonempty(rng)).collect(),
            properties: props(rng, UNSUBSCRIBE_PROPS, false),
        }),
        9 => Packet::UnsubAck(UnsubAck {
            packet_id: packet_id(rng),
            codes: if v5 {
                (0..rng.range(1, 6))
                    .map(|_| code(rng, UNSUBACK_V5))
                    .collect()
            } else {
                Vec::new()
            },
            properties: props(rng, REASON_PROPS, false),
        }),
        10 => Packet::PingReq,
        11 => Packet::PingResp,
        12 | 13 => Packet::Disconnect(Disconnect {
            code: if v5 {
                code(rng, DISCONNECT_V5)
            } else {
                ReasonCode::Success
            },
            properties: props(rng, DISCONNECT_PROPS, false),
        }),
        _ => Packet::Auth(Auth {
            code: code(rng, AUTH_V5),
            properties: props(rng, AUTH_PROPS, false),
        }),
    }
}

/// Decodes at the start of `buf` with `max`, checking the invariants and the
/// agreement with `read_fixed_header`; for a decoded packet also that it
/// encodes and decodes back to itself.
fn checked_decode<'a>(
    buf: &'a [u8],
    version: Version,
    max: u32,
    context: &str,
) -> Option<(Packet<'a>, usize)> {
    let result = decode(buf, version, max);
    let header = read_fixed_header(buf, max);
    match result {
        Ok(Decoded::Frame { frame, consumed }) => {
            assert!(consumed >= 2, "{context}: consumed {consumed}");
            assert!(consumed <= buf.len(), "{context}: consumed {consumed}");
            assert!(consumed <= max as usize, "{context}: over the limit");
            let Ok(Decoded::Frame { frame: header, .. }) = header else {
                panic!("{context}: decoded but header {header:?}");
            };
            assert_eq!(header.total_len(), consumed, "{context}");
            assert_eq!(header.packet_type, frame.packet_type(), "{context}");
            // What decodes re-encodes (possibly shorter: minimal lengths,
            // short forms) and decodes to the same packet.
            let mut again = Vec::new();
            encode(&frame, version, &mut again)
                .unwrap_or_else(|err| panic!("{context}: {frame:?} decoded but encode: {err}"));
            assert!(again.len() <= consumed, "{context}: {frame:?} grew");
            assert_eq!(
                decode(&again, version, MAX),
                Ok(Decoded::Frame {
                    frame: frame.clone(),
                    consumed: again.len()
                }),
                "{context}: {again:02x?}"
            );
            Some((frame, consumed))
        }
        Ok(Decoded::Incomplete) => {
            match header {
                Ok(Decoded::Incomplete) => {}
                Ok(Decoded::Frame { frame, .. }) => {
                    assert!(frame.total_len() > buf.len(), "{context}: incomplete");
                }
                Err(err) => panic!("{context}: incomplete but header {err}"),
            }
            None
        }
        Err(err) => {
            assert!(!err.to_string().is_empty());
            let _ = err.reason_code();
            if let Err(header_err) = header {
                assert_eq!(header_err, err, "{context}");
            }
            if let MqttError::PacketTooLarge { size, limit } = err {
                assert!(size > u64::from(limit), "{context}");
            }
            None
        }
    }
}

/// Decodes packets from the start of `buf` until none is left; returns them
/// and the total consumed.
fn decode_all<'a>(
    buf: &'a [u8],
    version: Version,
    max: u32,
    context: &str,
) -> (Vec<Packet<'a>>, usize) {
    let mut at = 0;
    let mut packets = Vec::new();
    while let Some((packet, consumed)) = checked_decode(&buf[at..], version, max, context) {
        packets.push(packet);
        at += consumed;
    }
    (packets, at)
}

/// Encodes `packet` both ways (and the PUBLISH head); they must agree.
fn encode_checked(packet: &Packet<'_>, version: Version, context: &str) -> Vec<u8> {
    let mut out = vec![0xEE];
    encode(packet, version, &mut out).unwrap_or_else(|err| panic!("{context}: {packet:?}: {err}"));
    let wire = out.split_off(1);
    assert_eq!(encoded_len(packet, version), Ok(wire.len()), "{context}");
    if let Packet::Publish(publish) = packet {
        let mut head = Vec::new();
        encode_publish_head(publish, version, &mut head).unwrap();
        assert_eq!([&head[..], publish.payload].concat(), wire, "{context}");
    }
    wire
}

/// Every strict prefix of a whole packet is incomplete (all prefixes for
/// small packets, a sample for large ones).
fn check_prefixes(rng: &mut Rng, wire: &[u8], version: Version, context: &str) {
    let lens: Vec<usize> = if wire.len() <= 64 {
        (0..wire.len()).collect()
    } else {
        (0..16).map(|_| rng.below(wire.len())).collect()
    };
    for len in lens {
        assert_eq!(
            decode(&wire[..len], version, MAX),
            Ok(Decoded::Incomplete),
            "{context}: prefix {len} of {wire:02x?}"
        );
    }
}

fn mutate(rng: &mut Rng, wire: &mut Vec<u8>) {
    for _ in 0..rng.range(1, 4) {
        match rng.below(5) {
            0 | 1 if !wire.is_empty() => {
                let at = rng.below(wire.len());
                wire[at] ^= 1 << rng.below(8);
            }
            2 if !wire.is_empty() => {
                let at = rng.below(wire.len());
                wire[at] = rng.next() as u8;
            }
            3 => {
                let at = rng.below(wire.len() + 1);
                wire.insert(at, rng.next() as u8);
            }
            _ if !wire.is_empty() => {
                let at = rng.below(wire.len());
                wire.remove(at);
            }
            _ => {}
        }
    }
}

#[test]
fn random_packets_round_trip_stream_truncate_and_mutate() {
    let mut round_trips = 0usize;
    let mut mutants_decoded = 0usize;
    let mut kinds = std::collections::HashSet::new();
    for seed in 0..SEEDS {
        let mut rng = Rng(seed);
        let pool = Pool::new(&mut rng);
        for case in 0..STREAMS_PER_SEED {
            let version = if rng.chance(2) {
                Version::V5
            } else {
                Version::V311
            };
            let context = format!("seed {seed} case {case} {version:?}");

            // (a) each packet round-trips alone; each prefix is incomplete.
            let packets: Vec<Packet<'_>> = (0..rng.range(1, 6))
                .map(|_| random_packet(&mut rng, &pool, version))
                .collect();
            let mut stream = Vec::new();
            let mut boundaries = vec![0];
            for packet in &packets {
                let wire = encode_checked(packet, version, &context);
                assert_eq!(
                    decode(&wire, version, MAX),
                    Ok(Decoded::Frame {
                        frame: packet.clone(),
                        consumed: wire.len()
                    }),
                    "{context}: {wire:02x?}"
                );
                check_prefixes(&mut rng, &wire, version, &context);
                kinds.insert((version, packet.packet_type()));
                round_trips += 1;
                stream.extend_from_slice(&wire);
                boundaries.push(stream.len());
            }

            // (b) concatenated packets decode in order.
            let (decoded, consumed) = decode_all(&stream, version, MAX, &context);
            assert_eq!(decoded, packets, "{context}");
            assert_eq!(consumed, stream.len(), "{context}");

            // (c) a truncated stream gives the whole packets before the cut,
            // then stops with Incomplete.
            for _ in 0..4 {
                let cut = rng.below(stream.len() + 1);
                let whole = boundaries.iter().filter(|b| **b <= cut).count() - 1;
                let (decoded, consumed) = decode_all(&stream[..cut], version, MAX, &context);
                assert_eq!(decoded, packets[..whole], "{context}: cut {cut}");
                assert_eq!(consumed, boundaries[whole], "{context}: cut {cut}");
                assert_eq!(
                    decode(&stream[consumed..cut], version, MAX),
                    Ok(Decoded::Incomplete),
                    "{context}: cut {cut}"
                );
            }

            // (d) a smaller limit refuses exactly the packets above it.
            let limit = rng.range(2, 200) as u32;
            let (decoded, consumed) = decode_all(&stream, version, limit, &context);
            let fitting = boundaries
                .windows(2)
                .take_while(|w| w[1] - w[0] <= limit as usize)
                .count();
            assert_eq!(decoded.len(), fitting, "{context}: limit {limit}");
            assert_eq!(consumed, boundaries[fitting], "{context}: limit {limit}");

            // (e) mutations never panic nor break the invariants; whatever
            // decodes round-trips (checked inside).
            for _ in 0..12 {
                let mut wire = stream.clone();
                mutate(&mut rng, &mut wire);
                let other = if rng.chance(4) {
                    match version {
                        Version::V5 => Version::V311,
                        Version::V311 => Version::V5,
                    }
                } else {
                    version
                };
                mutants_decoded += decode_all(&wire, other, MAX, &context).0.len();
            }
        }
    }
    // Every packet type came up in both versions (AUTH in 5.0 only).
    assert_eq!(kinds.len(), 14 + 15, "{kinds:?}");
    assert!(round_trips > 1000, "{round_trips}");
    assert!(mutants_decoded > 1000, "{mutants_decoded}");
}

#[test]
fn random_garbage_never_panics() {
    let mut rng = Rng(0x5EED);
    for _ in 0..20_000 {
        let len = rng.below(48);
        // Plausible first bytes more often than not.
        let mut wire: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        if let Some(first) = wire.first_mut() {
            if rng.chance(2) {
                *first = (rng.range(1, 15) as u8) << 4 | *rng.pick(&[0, 2]);
            }
        }
        if wire.len() > 1 && rng.chance(2) {
            wire[1] = (wire.len() - 2) as u8 & 0x7F;
        }
        for version in [Version::V311, Version::V5] {
            let max = *rng.pick(&[2, 16, MAX]);
            decode_all(&wire, version, max, &format!("garbage {wire:02x?}"));
        }
    }
}
