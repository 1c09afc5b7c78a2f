//! MQTT 3.1.1 and 5.0 control packets, sans-IO.
//!
//! [`decode`] reads one whole packet from the start of the caller's buffer
//! and borrows every string and payload from it; [`encode`] appends a
//! packet's wire bytes to a buffer it is handed. [`read_fixed_header`] reads
//! just the type and Remaining Length, so a connection can refuse a packet
//! over its `max_packet_bytes` (or size its buffer) before the body arrives;
//! [`encode_publish_head`] writes a PUBLISH without its payload, for a
//! vectored write of the head and a payload shared between subscribers.
//!
//! One set of types ([`Packet`] and friends) serves both versions: the
//! decoder leaves 5.0-only fields at their defaults for 3.1.1 and the 3.1.1
//! encoder drops them. The codec checks the wire format and the rules a
//! packet carries on its own (flags, lengths, UTF-8, properties allowed per
//! packet type, packet identifier 0, ...); the session checks the rest
//! (topic names and filters with [`crate::topic`], Topic Alias mappings,
//! Receive Maximum, what a client may send). Invariants of a decoded
//! packet: `2 <= consumed <= buf.len()`, and its fields fill its Remaining
//! Length exactly. [`MqttError::reason_code`] is what a 5.0 server answers
//! a refused packet with.
//!
//! ```
//! use shoal_protocols::mqtt::{
//!     decode, encode, Decoded, Packet, Properties, Publish, QoS, Version,
//! };
//!
//! let publish = Packet::Publish(Publish {
//!     dup: false,
//!     qos: QoS::AtLeastOnce,
//!     retain: false,
//!     topic: "sensors/42/temp",
//!     packet_id: Some(7),
//!     properties: Properties {
//!         message_expiry_interval: Some(60),
//!         ..Properties::default()
//!     },
//!     payload: b"21.5",
//! });
//! let mut inbox = Vec::new();
//! encode(&publish, Version::V5, &mut inbox).unwrap();
//! encode(&Packet::PingReq, Version::V5, &mut inbox).unwrap();
//!
//! // The connection's read loop: decode while whole packets are buffered.
//! let mut start = 0;
//! let mut packets = Vec::new();
//! while let Decoded::Frame { frame, consumed } =
//!     decode(&inbox[start..], Version::V5, 1024).unwrap()
//! {
//!     packets.push(frame);
//!     start += consumed;
//! }
//! assert_eq!(packets, [publish, Packet::PingReq]);
//! assert_eq!(start, inbox.len());
//! ```

mod codec;
mod decode;
mod encode;
mod error;
mod packet;
mod properties;

#[cfg(test)]
mod tests;

pub use crate::framing::Decoded;
pub use codec::{read_fixed_header, FixedHeader, MAX_REMAINING_LENGTH};
pub use decode::decode;
pub use encode::{encode, encode_publish_head, encoded_len};
pub use error::MqttError;
pub use packet::*;
