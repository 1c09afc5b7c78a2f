//! The fixed header, the wire primitives both directions share (Variable
//! Byte Integers, the borrowed [`Reader`]) and the tables of which reason
//! codes each packet type may carry.

use super::error::MqttError;
use super::packet::{PacketType, QoS, ReasonCode};
use crate::framing::Decoded;

/// The largest Remaining Length (and Variable Byte Integer) MQTT can encode:
/// four 7-bit groups.
pub const MAX_REMAINING_LENGTH: u32 = 268_435_455;

/// The fixed header of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedHeader {
    /// From the high nibble of the first byte.
    pub packet_type: PacketType,
    /// The low nibble of the first byte (already checked for the type).
    pub flags: u8,
    /// Bytes after the fixed header.
    pub remaining_len: u32,
    /// Bytes of the fixed header itself: 2 to 5.
    pub header_len: usize,
}

impl FixedHeader {
    /// Bytes of the whole packet: `header_len + remaining_len`.
    pub fn total_len(&self) -> usize {
        self.header_len
            .saturating_add(usize::try_from(self.remaining_len).unwrap_or(usize::MAX))
    }
}

/// Reads only the fixed header (type, flags, Remaining Length), so a caller
/// can check the size and size its buffer before the body arrives.
///
/// `Incomplete` while the Remaining Length is not all there; `consumed` of a
/// returned header is its `header_len`. Refused as soon as the bytes are
/// there: a reserved packet type (0), flags the type does not allow (for a
/// PUBLISH: QoS 3, or DUP at QoS 0), a Remaining Length running past four
/// bytes, and a packet whose `total_len` exceeds `max_packet_bytes`
/// ([`MqttError::PacketTooLarge`]). A non-minimal Remaining Length (e.g.
/// `0x80 0x00` for 0) is accepted. AUTH (15) is accepted here; [`decode`]
/// refuses it on a 3.1.1 connection.
///
/// [`decode`]: super::decode
pub fn read_fixed_header(
    buf: &[u8],
    max_packet_bytes: u32,
) -> Result<Decoded<FixedHeader>, MqttError> {
    let Some((&first, rest)) = buf.split_first() else {
        return Ok(Decoded::Incomplete);
    };
    let packet_type =
        PacketType::from_u8(first >> 4).ok_or(MqttError::InvalidPacketType(first >> 4))?;
    let flags = first & 0x0F;
    check_flags(packet_type, flags)?;
    let mut remaining_len = 0u32;
    for (shift, (index, &byte)) in (0u32..).step_by(7).zip(rest.iter().take(4).enumerate()) {
        remaining_len |= u32::from(byte & 0x7F) << shift;
        if byte & 0x80 == 0 {
            let header = FixedHeader {
                packet_type,
                flags,
                remaining_len,
                header_len: index + 2,
            };
            let size = u64::try_from(header.total_len()).unwrap_or(u64::MAX);
            if size > u64::from(max_packet_bytes) {
                return Err(MqttError::PacketTooLarge {
                    size,
                    limit: max_packet_bytes,
                });
            }
            return Ok(Decoded::Frame {
                frame: header,
                consumed: header.header_len,
            });
        }
    }
    if rest.len() >= 4 {
        Err(MqttError::MalformedRemainingLength)
    } else {
        Ok(Decoded::Incomplete)
    }
}

/// The fixed-header flags of every type: PUBREL, SUBSCRIBE and UNSUBSCRIBE
/// carry 0b0010, PUBLISH its DUP/QoS/RETAIN bits, all others 0.
fn check_flags(packet_type: PacketType, flags: u8) -> Result<(), MqttError> {
    let expected = match packet_type {
        PacketType::Publish => {
            let qos = QoS::from_bits((flags >> 1) & 0b11).ok_or(MqttError::InvalidQoS)?;
            if qos == QoS::AtMostOnce && flags & 0b1000 != 0 {
                return Err(MqttError::Malformed("DUP flag set on a QoS 0 PUBLISH"));
            }
            return Ok(());
        }
        PacketType::PubRel | PacketType::Subscribe | PacketType::Unsubscribe => 0b0010,
        _ => 0,
    };
    if flags == expected {
        Ok(())
    } else {
        Err(MqttError::InvalidFlags { packet_type, flags })
    }
}

/// The flags an encoder writes for a non-PUBLISH packet type.
pub(super) fn fixed_flags(packet_type: PacketType) -> u8 {
    match packet_type {
        PacketType::PubRel | PacketType::Subscribe | PacketType::Unsubscribe => 0b0010,
        _ => 0,
    }
}

/// Bytes a Variable Byte Integer of `value` takes (values above the maximum
/// are refused before anything is written).
pub(super) fn varint_len(value: usize) -> usize {
    match value {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// Appends `value` (at most [`MAX_REMAINING_LENGTH`]) as a Variable Byte Integer.
pub(super) fn write_varint(out: &mut Vec<u8>, value: usize) {
    let mut value = value;
    loop {
        // Truncation intended: the low seven bits.
        let byte = (value & 0x7F) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// The error of a field that runs past the end of its packet (or of its
/// property block).
pub(super) const CUT_SHORT: MqttError =
    MqttError::Malformed("a field runs past the end of the packet");

/// Reads fields off the front of a packet body, borrowing from it.
#[derive(Debug)]
pub(super) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(super) fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Everything that is left.
    pub(super) fn rest(&mut self) -> &'a [u8] {
        core::mem::take(&mut self.buf)
    }

    /// Errors unless every byte was read: a packet's fields must fill its
    /// Remaining Length exactly.
    pub(super) fn finish(&self) -> Result<(), MqttError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(MqttError::Malformed("bytes left over after the last field"))
        }
    }

    pub(super) fn take(&mut self, len: usize) -> Result<&'a [u8], MqttError> {
        let (head, tail) = self.buf.split_at_checked(len).ok_or(CUT_SHORT)?;
        self.buf = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], MqttError> {
        let (head, tail) = self.buf.split_first_chunk::<N>().ok_or(CUT_SHORT)?;
        self.buf = tail;
        Ok(*head)
    }

    pub(super) fn u8(&mut self) -> Result<u8, MqttError> {
        let (&first, tail) = self.buf.split_first().ok_or(CUT_SHORT)?;
        self.buf = tail;
        Ok(first)
    }

    pub(super) fn u16(&mut self) -> Result<u16, MqttError> {
        self.array().map(u16::from_be_bytes)
    }

    pub(super) fn u32(&mut self) -> Result<u32, MqttError> {
        self.array().map(u32::from_be_bytes)
    }

    /// A packet identifier: two bytes, never 0.
    pub(super) fn packet_id(&mut self) -> Result<u16, MqttError> {
        match self.u16()? {
            0 => Err(MqttError::ZeroPacketId),
            id => Ok(id),
        }
    }

    /// A Variable Byte Integer of one to four bytes (non-minimal encodings accepted).
    pub(super) fn varint(&mut self) -> Result<u32, MqttError> {
        let mut value = 0u32;
        for shift in [0u32, 7, 14, 21] {
            let byte = self.u8()?;
            value |= u32::from(byte & 0x7F) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(MqttError::Malformed(
            "variable byte integer runs past its fourth byte",
        ))
    }

    /// Binary Data: a two-byte length and that many bytes.
    pub(super) fn binary(&mut self) -> Result<&'a [u8], MqttError> {
        let len = self.u16()?;
        self.take(usize::from(len))
    }

    /// A UTF-8 Encoded String: valid UTF-8 without U+0000.
    pub(super) fn string(&mut self) -> Result<&'a str, MqttError> {
        let bytes = self.binary()?;
        if has_nul(bytes) {
            return Err(MqttError::InvalidString);
        }
        core::str::from_utf8(bytes).map_err(|_| MqttError::InvalidString)
    }
}

/// Whether `bytes` holds a 0 byte (U+0000 in UTF-8). Branch-free, so it
/// vectorizes: for topic-sized strings it beats `memchr`'s setup.
pub(super) fn has_nul(bytes: &[u8]) -> bool {
    bytes.iter().fold(false, |found, &byte| found | (byte == 0))
}

/// Whether MQTT 5.0 allows `code` in a packet of `packet_type` (the tables of
/// §3.2.2.2, 3.4.2.1, 3.5.2.1, 3.6.2.1, 3.7.2.1, 3.9.3, 3.11.3, 3.14.2.1,
/// 3.15.2.1).
pub(super) fn reason_code_allowed(packet_type: PacketType, code: ReasonCode) -> bool {
    use ReasonCode as R;
    match packet_type {
        PacketType::ConnAck => matches!(
            code,
            R::Success
                | R::UnspecifiedError
                | R::MalformedPacket
                | R::ProtocolError
                | R::ImplementationSpecificError
                | R::UnsupportedProtocolVersion
                | R::ClientIdentifierNotValid
                | R::BadUserNameOrPassword
                | R::NotAuthorized
                | R::ServerUnavailable
                | R::ServerBusy
                | R::Banned
                | R::BadAuthenticationMethod
                | R::TopicNameInvalid
                | R::PacketTooLarge
                | R::QuotaExceeded
                | R::PayloadFormatInvalid
                | R::RetainNotSupported
                | R::QoSNotSupported
                | R::UseAnotherServer
                | R::ServerMoved
                | R::ConnectionRateExceeded
        ),
        PacketType::PubAck | PacketType::PubRec => matches!(
            code,
            R::Success
                | R::NoMatchingSubscribers
                | R::UnspecifiedError
                | R::ImplementationSpecificError
                | R::NotAuthorized
                | R::TopicNameInvalid
                | R::PacketIdentifierInUse
                | R::QuotaExceeded
                | R::PayloadFormatInvalid
        ),
        PacketType::PubRel | PacketType::PubComp => {
            matches!(code, R::Success | R::PacketIdentifierNotFound)
        }
        PacketType::SubAck => matches!(
            code,
            R::Success
                | R::GrantedQoS1
                | R::GrantedQoS2
                | R::UnspecifiedError
                | R::ImplementationSpecificError
                | R::NotAuthorized
                | R::TopicFilterInvalid
                | R::PacketIdentifierInUse
                | R::QuotaExceeded
                | R::SharedSubscriptionsNotSupported
                | R::SubscriptionIdentifiersNotSupported
                | R::WildcardSubscriptionsNotSupported
        ),
        PacketType::UnsubAck => matches!(
            code,
            R::Success
                | R::NoSubscriptionExisted
                | R::UnspecifiedError
                | R::ImplementationSpecificError
                | R::NotAuthorized
                | R::TopicFilterInvalid
                | R::PacketIdentifierInUse
        ),
        PacketType::Disconnect => matches!(
            code,
            R::Success
                | R::DisconnectWithWill
                | R::UnspecifiedError
                | R::MalformedPacket
                | R::ProtocolError
                | R::ImplementationSpecificError
                | R::NotAuthorized
                | R::ServerBusy
                | R::ServerShuttingDown
                | R::KeepAliveTimeout
                | R::SessionTakenOver
                | R::TopicFilterInvalid
                | R::TopicNameInvalid
                | R::ReceiveMaximumExceeded
                | R::TopicAliasInvalid
                | R::PacketTooLarge
                | R::MessageRateTooHigh
                | R::QuotaExceeded
                | R::AdministrativeAction
                | R::PayloadFormatInvalid
                | R::RetainNotSupported
                | R::QoSNotSupported
                | R::UseAnotherServer
                | R::ServerMoved
                | R::SharedSubscriptionsNotSupported
                | R::ConnectionRateExceeded
                | R::MaximumConnectTime
                | R::SubscriptionIdentifiersNotSupported
                | R::WildcardSubscriptionsNotSupported
        ),
        PacketType::Auth => matches!(
            code,
            R::Success | R::ContinueAuthentication | R::ReAuthenticate
        ),
        _ => false,
    }
}

/// A 5.0 reason code byte, checked against the packet type's table.
pub(super) fn checked_reason_code(
    packet_type: PacketType,
    code: u8,
) -> Result<ReasonCode, MqttError> {
    ReasonCode::from_u8(code)
        .filter(|reason| reason_code_allowed(packet_type, *reason))
        .ok_or(MqttError::InvalidReasonCode { packet_type, code })
}

/// A 3.1.1 CONNACK return code (0 to 5) as the reason code it stands for.
pub(super) fn connack_code_from_v311(code: u8) -> Result<ReasonCode, MqttError> {
    Ok(match code {
        0 => ReasonCode::Success,
        1 => ReasonCode::UnsupportedProtocolVersion,
        2 => ReasonCode::ClientIdentifierNotValid,
        3 => ReasonCode::ServerUnavailable,
        4 => ReasonCode::BadUserNameOrPassword,
        5 => ReasonCode::NotAuthorized,
        _ => {
            return Err(MqttError::InvalidReasonCode {
                packet_type: PacketType::ConnAck,
                code,
            })
        }
    })
}

/// The 3.1.1 CONNACK return code for a reason code: the five that have one
/// keep it, any other failure becomes 3 (Server unavailable).
pub(super) fn connack_code_to_v311(code: ReasonCode) -> Result<u8, MqttError> {
    Ok(match code {
        ReasonCode::Success => 0,
        ReasonCode::UnsupportedProtocolVersion => 1,
        ReasonCode::ClientIdentifierNotValid => 2,
        ReasonCode::BadUserNameOrPassword => 4,
        ReasonCode::NotAuthorized => 5,
        other if other.is_error() => 3,
        other => {
            return Err(MqttError::InvalidReasonCode {
                packet_type: PacketType::ConnAck,
                code: other.into(),
            })
        }
    })
}

/// A 3.1.1 SUBACK return code (0, 1, 2 or 0x80) as a reason code.
pub(super) fn suback_code_from_v311(code: u8) -> Result<ReasonCode, MqttError> {
    Ok(match code {
        0x00 => ReasonCode::Success,
        0x01 => ReasonCode::GrantedQoS1,
        0x02 => ReasonCode::GrantedQoS2,
        0x80 => ReasonCode::UnspecifiedError,
        _ => {
            return Err(MqttError::InvalidReasonCode {
                packet_type: PacketType::SubAck,
                code,
            })
        }
    })
}

/// The 3.1.1 SUBACK return code for a reason code: the granted QoS, or 0x80
/// for any failure.
pub(super) fn suback_code_to_v311(code: ReasonCode) -> Result<u8, MqttError> {
    Ok(match code {
        ReasonCode::Success => 0x00,
        ReasonCode::GrantedQoS1 => 0x01,
        ReasonCode::GrantedQoS2 => 0x02,
        other if other.is_error() => 0x80,
        other => {
            return Err(MqttError::InvalidReasonCode {
                packet_type: PacketType::SubAck,
                code: other.into(),
            })
        }
    })
}
