//! Why a packet could not be decoded or encoded.

use super::packet::{PacketType, QoS, ReasonCode};
use super::properties::property_name;

/// Why an MQTT packet was refused by the decoder or the encoder.
///
/// [`MqttError::reason_code`] gives the MQTT 5.0 reason code a server
/// answers a decode error with (in a CONNACK before the session exists, in a
/// DISCONNECT after); a 3.1.1 server just closes the connection, except for
/// [`MqttError::UnsupportedProtocol`] (CONNACK return code 1).
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MqttError {
    /// The packet (fixed header included) is larger than the limit; refused
    /// as soon as its fixed header is readable.
    #[error("packet of {size} bytes exceeds the limit of {limit} bytes (max_packet_bytes)")]
    PacketTooLarge {
        /// Size of the whole packet, fixed header included.
        size: u64,
        /// The limit in force.
        limit: u32,
    },
    /// The Remaining Length runs past its fourth byte.
    #[error("malformed remaining length: continuation bit set in its fourth byte")]
    MalformedRemainingLength,
    /// The packet type is 0 (reserved), or 15 (AUTH) on a 3.1.1 connection.
    #[error("invalid packet type {0}")]
    InvalidPacketType(u8),
    /// The fixed header's flag bits are not the ones this packet type requires.
    #[error("invalid fixed header flags {flags:#06b} for {packet_type:?}")]
    InvalidFlags {
        /// The packet type.
        packet_type: PacketType,
        /// The low nibble of the first byte.
        flags: u8,
    },
    /// CONNECT names a protocol other than "MQTT" level 4 (3.1.1) or 5
    /// (5.0), e.g. MQTT 3.1 ("MQIsdp" level 3). Only returned once the
    /// protocol name and level are readable, so a server may still answer
    /// with CONNACK return code 1 (3.1.1) or reason code 0x84 (5.0) before
    /// it closes the connection.
    #[error("unsupported protocol name or level {level}")]
    UnsupportedProtocol {
        /// The protocol level byte of the CONNECT.
        level: u8,
    },
    /// The bytes do not follow the packet's wire format; says what is wrong.
    #[error("malformed packet: {0}")]
    Malformed(&'static str),
    /// A UTF-8 string field is not valid UTF-8 or holds U+0000.
    #[error("invalid UTF-8 string (ill-formed, or contains U+0000)")]
    InvalidString,
    /// A PUBLISH or a will with QoS 3.
    #[error("invalid QoS 3")]
    InvalidQoS,
    /// Subscription options with a reserved bit set, QoS 3 or Retain Handling 3.
    #[error("invalid subscription options {0:#010b}")]
    InvalidSubscriptionOptions(u8),
    /// A reason code that this packet type (in this protocol version) does not allow.
    #[error("reason code {code:#04x} is not allowed in {packet_type:?}")]
    InvalidReasonCode {
        /// The packet type.
        packet_type: PacketType,
        /// The reason (or 3.1.1 return) code byte.
        code: u8,
    },
    /// A property identifier MQTT 5.0 does not define.
    #[error("unknown property identifier {0:#04x}")]
    UnknownProperty(u8),
    /// A property that this packet type (or a will) may not carry.
    #[error(
        "property {property:#04x} ({}) is not allowed in {packet_type:?}{}",
        property_name(*property),
        if *will { " will properties" } else { "" }
    )]
    PropertyNotAllowed {
        /// The property identifier.
        property: u8,
        /// The packet it came in (CONNECT for will properties).
        packet_type: PacketType,
        /// Whether it was among a CONNECT's will properties.
        will: bool,
    },
    /// A property that may appear only once appears again.
    #[error("property {0:#04x} ({name}) appears more than once", name = property_name(*.0))]
    DuplicateProperty(u8),
    /// A property value outside the values the specification allows (Receive
    /// Maximum, Maximum Packet Size, Topic Alias or Subscription Identifier
    /// 0; a boolean byte other than 0 or 1).
    #[error("invalid value of property {0:#04x} ({name})", name = property_name(*.0))]
    InvalidPropertyValue(u8),
    /// A packet identifier of 0 (packet identifiers are never 0).
    #[error("packet identifier 0")]
    ZeroPacketId,
    /// A SUBSCRIBE or UNSUBSCRIBE without a topic filter.
    #[error("no topic filter")]
    NoTopicFilters,
    /// A SUBACK or (5.0) UNSUBACK without a reason code.
    #[error("no reason code")]
    NoReasonCodes,
    /// Encoding: a PUBLISH has a packet identifier at QoS 0, or none at QoS 1 or 2.
    #[error("a PUBLISH at {qos:?} must {} a packet identifier", if matches!(qos, QoS::AtMostOnce) { "not carry" } else { "carry" })]
    PacketIdQoSMismatch {
        /// The PUBLISH's QoS.
        qos: QoS,
    },
    /// Encoding: a string or binary field is longer than 65,535 bytes.
    #[error("{field} of {len} bytes is longer than 65535 bytes")]
    FieldTooLong {
        /// Which field.
        field: &'static str,
        /// Its length.
        len: usize,
    },
    /// Encoding: the packet's remaining length would exceed
    /// [`MAX_REMAINING_LENGTH`](super::MAX_REMAINING_LENGTH).
    #[error("remaining length of {remaining_len} bytes exceeds 268435455")]
    TooLarge {
        /// The remaining length the packet would need.
        remaining_len: usize,
    },
}

impl MqttError {
    /// The MQTT 5.0 reason code for this error, as the specification
    /// classifies it: a packet that cannot be parsed (bad fixed header,
    /// length, UTF-8, unknown property or one not valid for its packet type,
    /// §2.2.2.2) is 0x81 Malformed Packet; a parsed packet that breaks a rule
    /// (a repeated property, a value out of range, packet identifier 0, no
    /// topic filter, a reason code the packet may not carry) is 0x82 Protocol
    /// Error; Topic Alias 0 is 0x94 (§3.3.4); a too large packet 0x95; an
    /// unsupported protocol 0x84. The encode-only errors map to 0x83
    /// (Implementation specific error) or 0x95.
    pub fn reason_code(&self) -> ReasonCode {
        match self {
            Self::PacketTooLarge { .. } | Self::TooLarge { .. } => ReasonCode::PacketTooLarge,
            Self::UnsupportedProtocol { .. } => ReasonCode::UnsupportedProtocolVersion,
            Self::MalformedRemainingLength
            | Self::InvalidPacketType(_)
            | Self::InvalidFlags { .. }
            | Self::Malformed(_)
            | Self::InvalidString
            | Self::InvalidQoS
            | Self::UnknownProperty(_)
            | Self::PropertyNotAllowed { .. } => ReasonCode::MalformedPacket,
            // MQTT-3.8.3-5: reserved bits make it malformed; QoS 3 and Retain
            // Handling 3 are protocol errors (§3.8.3.1).
            Self::InvalidSubscriptionOptions(options) if options & 0xC0 != 0 => {
                ReasonCode::MalformedPacket
            }
            Self::InvalidPropertyValue(0x23) => ReasonCode::TopicAliasInvalid,
            Self::InvalidSubscriptionOptions(_)
            | Self::InvalidReasonCode { .. }
            | Self::DuplicateProperty(_)
            | Self::InvalidPropertyValue(_)
            | Self::ZeroPacketId
            | Self::NoTopicFilters
            | Self::NoReasonCodes
            | Self::PacketIdQoSMismatch { .. } => ReasonCode::ProtocolError,
            Self::FieldTooLong { .. } => ReasonCode::ImplementationSpecificError,
        }
    }
}
