//! Golden bytes pin the wire format: a change that moves any of these is a
//! protocol change and needs a new [`PROTOCOL_VERSION`].

use super::*;
use crate::config::{DataPlaneConfig, EMBEDDED_DEFAULT_TOML};
use crate::framing::Decoded;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn golden<T>(msg: &T, expected_hex: &str)
where
    T: Serialize + serde::de::DeserializeOwned + PartialEq + core::fmt::Debug,
{
    let bytes = wire::encode_to_vec(msg).unwrap();
    assert_eq!(hex(&bytes), expected_hex, "wire bytes of {msg:?}");
    match wire::decode::<T>(&bytes, 1024).unwrap() {
        Decoded::Frame { frame, consumed } => {
            assert_eq!(&frame, msg);
            assert_eq!(consumed, bytes.len());
        }
        Decoded::Incomplete => panic!("incomplete"),
    }
}

#[test]
fn hello_golden() {
    // 0000000d  length 13
    // 01        protocol_version 1 (varint)
    // 02 6e 31  node "n1"
    // 05 30 2e 31 2e 30  software_version "0.1.0"
    // 00        role: DataPlane
    // 02        cores 2
    // 07        last_applied_version 7
    golden(
        &Hello {
            protocol_version: 1,
            node: "n1".into(),
            software_version: "0.1.0".into(),
            role: PeerRole::DataPlane {
                cores: 2,
                last_applied_version: 7,
            },
        },
        "0000000d\
         01\
         026e31\
         05302e312e30\
         00\
         02\
         07",
    );
    // A CLI hello: role Cli is variant 1.
    golden(
        &Hello {
            protocol_version: 1,
            node: "c".into(),
            software_version: "9".into(),
            role: PeerRole::Cli,
        },
        "00000006\
         01\
         0163\
         0139\
         01",
    );
}

#[test]
fn hello_version_is_readable_whatever_follows() {
    // A hello of a later version whose fields after the version changed.
    let mut body = Vec::new();
    body.extend_from_slice(&postcard::to_allocvec(&300u32).unwrap());
    body.extend_from_slice(&[0xff, 0xff, 0x01]);
    assert_eq!(Hello::peek_protocol_version(&body), Some(300));
    assert_eq!(Hello::peek_protocol_version(&[]), None);
}

#[test]
fn hello_reply_golden() {
    golden(
        &HelloReply::Welcome {
            protocol_version: 1,
            node: "cp".into(),
            software_version: "1".into(),
        },
        "00000007\
         00\
         01\
         026370\
         0131",
    );
    golden(
        &HelloReply::Refused {
            protocol_version: 1,
            reason: "no".into(),
        },
        "00000005\
         01\
         01\
         026e6f",
    );
}

#[test]
fn delta_golden() {
    // 01        ToDataPlane::Delta
    // 05        version 5
    // 02        two changes
    // 00 02     Upsert(Resource::Device)
    // 02 6d 31  id "m1"
    // 01 70     product "p"
    // 16 x 0xab secret digest (fixed array: no length)
    // 01        Remove
    // 03 01 72  key: kind Route, name "r"
    golden(
        &ToDataPlane::Delta {
            version: 5,
            changes: vec![
                Change::Upsert(Resource::Device(Device {
                    id: "m1".into(),
                    product: "p".into(),
                    secret: SecretDigest([0xab; 16]),
                })),
                Change::Remove(ResourceKey {
                    kind: ResourceKind::Route,
                    name: "r".into(),
                }),
            ],
        },
        "0000001e\
         01\
         05\
         02\
         0002\
         026d31\
         0170\
         abababababababababababababababab\
         01\
         030172",
    );
}

#[test]
fn listener_golden() {
    // The embedded default TCP listener as a snapshot's only resource.
    let config = DataPlaneConfig::from_toml(EMBEDDED_DEFAULT_TOML).unwrap();
    let listener = Listener::from(&config.listeners[0]);
    // 00          ToDataPlane::Snapshot
    // 01 00 01    version 1, part 0, last true
    // 01          one resource
    // 00          Resource::Listener
    // 0b "tcp-default"
    // 00          protocol Tcp
    // 0e "127.0.0.1:7000"
    // a0 8d 06    max_connections 100000
    // 80 20       max_frame_bytes 4096
    // e0 a7 12    idle_timeout_ms 300000
    // 01 02       framing Some(LengthField)
    // 00 02 01 00 00  offset 0, width 2, big endian, adjustment 0, strip none
    // 00          identity LoginFrame
    // 00          auth None
    golden(
        &ToDataPlane::Snapshot {
            version: 1,
            part: 0,
            last: true,
            resources: vec![Resource::Listener(listener)],
        },
        "00000033\
         00010001\
         01\
         00\
         0b7463702d64656661756c74\
         00\
         0e3132372e302e302e313a37303030\
         a08d06\
         8020\
         e0a712\
         0102\
         0002010000\
         00\
         00",
    );
}

#[test]
fn acks_golden() {
    golden(
        &FromDataPlane::Ack { version: 300 },
        "00000003\
         00ac02",
    );
    golden(
        &FromDataPlane::Nack {
            version: 2,
            error: "x".into(),
        },
        "00000004\
         01020178",
    );
}

#[test]
fn cli_golden() {
    golden(
        &CliRequest::Get {
            kind: ResourceKind::Device,
            name: Some("d".into()),
        },
        "00000005\
         01020101\
         64",
    );
    golden(
        &CliResponse::Error(ApiError {
            code: ErrorCode::Nacked,
            message: "m".into(),
        }),
        "00000004\
         0502016d",
    );
}

#[test]
fn kicks_golden() {
    // Variant indexes pin the append-only order: KickDevice is 2 and
    // KickStream 3 of ToDataPlane.
    golden(
        &ToDataPlane::KickDevice {
            request: 7,
            device: "d".into(),
        },
        "00000004\
         02070164",
    );
    // 03        KickStream
    // ac02      request 300 (varint)
    // 08 ...    stream "live/cam" (length 8)
    golden(
        &ToDataPlane::KickStream {
            request: 300,
            stream: "live/cam".into(),
        },
        "0000000c\
         03ac0208\
         6c6976652f63616d",
    );
    // 03 Kicked, 04 StreamKicked; request 7; publishers 1.
    golden(
        &FromDataPlane::Kicked {
            request: 7,
            connections: 2,
        },
        "00000003\
         030702",
    );
    golden(
        &FromDataPlane::StreamKicked {
            request: 7,
            publishers: 1,
        },
        "00000003\
         040701",
    );
}

#[test]
fn cli_stream_kick_golden() {
    // 05 KickStream (after KickDevice, 4); stream "a/b".
    golden(
        &CliRequest::KickStream {
            stream: "a/b".into(),
        },
        "00000005\
         0503612f\
         62",
    );
    // 06 StreamKicked (after Error, 5); publishers 0.
    golden(
        &CliResponse::StreamKicked { publishers: 0 },
        "00000002\
         0600",
    );
}

#[test]
fn limits_and_garbage() {
    let bytes = wire::encode_to_vec(&CliRequest::Status).unwrap();
    assert_eq!(hex(&bytes), "0000000100");
    // The limit is checked from the prefix alone.
    assert!(matches!(
        wire::decode::<CliRequest>(&[0, 0x10, 0, 0], 1024),
        Err(ControlError::FrameTooLarge {
            frame_bytes: 0x100000,
            max_frame_bytes: 1024
        })
    ));
    assert!(matches!(
        wire::decode::<CliRequest>(&[0, 0, 0], 1024),
        Ok(Decoded::Incomplete)
    ));
    assert!(matches!(
        wire::decode::<CliRequest>(&[0, 0, 0, 2, 0], 1024),
        Ok(Decoded::Incomplete)
    ));
    // An unknown variant, and trailing bytes, are errors.
    assert!(wire::decode::<CliRequest>(&[0, 0, 0, 1, 0x7f], 1024).is_err());
    assert!(wire::decode::<CliRequest>(&[0, 0, 0, 2, 0, 0], 1024).is_err());
}

#[test]
fn frame_buffer_yields_messages_across_reads() {
    let mut stream = Vec::new();
    for v in 0..50u64 {
        wire::encode(&FromDataPlane::Ack { version: v * 1000 }, &mut stream).unwrap();
    }
    let mut fb = FrameBuffer::new(64);
    let mut got = Vec::new();
    for chunk in stream.chunks(3) {
        fb.extend(chunk);
        while let Some(m) = fb.next_message::<FromDataPlane>().unwrap() {
            got.push(m);
        }
    }
    assert_eq!(got.len(), 50);
    assert_eq!(got[49], FromDataPlane::Ack { version: 49_000 });
    assert_eq!(fb.pending_bytes(), 0);
}

#[test]
fn random_bytes_never_panic() {
    // A seeded generator: mutated and truncated frames of real messages.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let config = DataPlaneConfig::from_toml(EMBEDDED_DEFAULT_TOML).unwrap();
    let base = wire::encode_to_vec(&ToDataPlane::Snapshot {
        version: 3,
        part: 0,
        last: true,
        resources: config
            .listeners
            .iter()
            .map(|l| Resource::Listener(Listener::from(l)))
            .collect(),
    })
    .unwrap();
    for _ in 0..20_000 {
        let mut bytes = base.clone();
        let flips = (next() % 4) as usize;
        for _ in 0..flips {
            let i = (next() as usize) % bytes.len();
            bytes[i] = next() as u8;
        }
        bytes.truncate((next() as usize) % (bytes.len() + 1));
        if let Ok(Decoded::Frame { consumed, .. }) = wire::decode::<ToDataPlane>(&bytes, 4096) {
            assert!(consumed <= bytes.len());
        }
        let _ = wire::decode::<CliRequest>(&bytes, 4096);
        let _ = Hello::peek_protocol_version(&bytes);
    }
}

#[test]
fn config_round_trips_through_the_wire_types() {
    let config = DataPlaneConfig::from_toml(EMBEDDED_DEFAULT_TOML).unwrap();
    let listeners: Vec<Listener> = config.listeners.iter().map(Listener::from).collect();
    let routes: Vec<Route> = config.routes.iter().map(Route::from).collect();
    let products: Vec<Product> = config.products.iter().map(Product::from).collect();
    let streams: Vec<Stream> = config.streams.iter().map(Stream::from).collect();
    let back = to_dataplane_config(
        config.runtime.clone(),
        config.pools.clone(),
        &listeners,
        &routes,
        &products,
        &streams,
    );
    assert_eq!(back, config);
}

#[test]
fn document_to_resources() {
    let doc = DesiredStateDocument::from_toml(
        r#"
[[product]]
name = "meter"

[[device]]
id = "m1"
product = "meter"
secret = "abcdefgh1"

[[route]]
name = "r"
filter = "devices/+/up"
action = { kind = "drop" }

[[stream]]
name = "live/*"
"#,
    )
    .unwrap();
    let r = doc.to_resources().unwrap();
    let kinds: Vec<_> = r.iter().map(Resource::kind).collect();
    assert_eq!(
        kinds,
        [
            ResourceKind::Product,
            ResourceKind::Device,
            ResourceKind::Route,
            ResourceKind::Stream
        ]
    );
    let Resource::Device(d) = &r[1] else { panic!() };
    assert!(d.secret.matches("m1", b"abcdefgh1"));
    let Resource::Stream(s) = &r[3] else { panic!() };
    assert!(s.allow_play);

    let bad = DesiredStateDocument::from_toml(
        "[[device]]\nid = \"m1\"\nproduct = \"p\"\nsecret = \"short\"\n",
    )
    .unwrap()
    .to_resources()
    .unwrap_err();
    assert!(bad.to_string().starts_with("device[0] \"m1\""), "{bad}");
    let e = DesiredStateDocument::from_toml("[runtime]\n").unwrap_err();
    assert!(e.to_string().contains("runtime"), "{e}");
}

#[test]
fn kinds_parse() {
    assert_eq!(ResourceKind::parse("devices"), Some(ResourceKind::Device));
    assert_eq!(ResourceKind::parse("route"), Some(ResourceKind::Route));
    assert_eq!(ResourceKind::parse("nope"), None);
}

#[test]
fn forward_http_route_golden() {
    // 00000025  length 37
    // 03        Resource::Route
    // 01 68     name "h"
    // 01 23     filter "#"
    // 00 00     listener None, device None
    // 04        RouteAction::ForwardHttp (appended after Drop)
    // 11 ...    url "http://127.0.0.1/" (17 bytes)
    // 64        batch_max 100
    // 14        batch_wait_ms 20
    // 80 80 40  queue_bytes 1048576
    // 90 4e     queue_messages 10000
    // 02        connections 2
    // 88 27     timeout_ms 5000
    // 03        max_retries 3
    let route = Route::from(&crate::config::RouteConfig {
        name: "h".into(),
        filter: "#".into(),
        listener: None,
        device: None,
        action: crate::config::RouteAction::ForwardHttp(crate::config::WebhookConfig::new(
            "http://127.0.0.1/",
        )),
    });
    golden(
        &Resource::Route(route.clone()),
        "00000025\
         03\
         0168\
         0123\
         0000\
         04\
         11687474703a2f2f3132372e302e302e312f\
         64\
         14\
         808040\
         904e\
         02\
         8827\
         03",
    );
    assert_eq!(
        crate::config::RouteConfig::from(&route).action,
        crate::config::RouteAction::ForwardHttp(crate::config::WebhookConfig::new(
            "http://127.0.0.1/"
        ))
    );
}
