//! MQTT 5.0 properties (§2.2.2): which packet may carry which (Table 2-4),
//! their data types, the values they may take, and their wire form.
//!
//! 3.1.1 has no properties; nothing here runs for it.

use super::codec::{has_nul, varint_len, write_varint, Reader, CUT_SHORT, MAX_REMAINING_LENGTH};
use super::error::MqttError;
use super::packet::{PacketType, Properties};

/// Where a property block sits: a packet's properties, or a CONNECT's will properties.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Place {
    pub(super) packet_type: PacketType,
    pub(super) will: bool,
}

impl Place {
    pub(super) fn packet(packet_type: PacketType) -> Self {
        Self {
            packet_type,
            will: false,
        }
    }

    pub(super) const WILL: Self = Self {
        packet_type: PacketType::Connect,
        will: true,
    };

    /// The identifiers Table 2-4 allows here, as a bit set.
    fn allowed(self) -> u64 {
        if self.will {
            return bits(&[0x01, 0x02, 0x03, 0x08, 0x09, 0x18, USER]);
        }
        match self.packet_type {
            PacketType::Connect => bits(&[0x11, 0x15, 0x16, 0x17, 0x19, 0x21, 0x22, USER, 0x27]),
            PacketType::ConnAck => bits(&[
                0x11, 0x12, 0x13, 0x15, 0x16, 0x1A, 0x1C, 0x1F, 0x21, 0x22, 0x24, 0x25, USER, 0x27,
                0x28, 0x29, 0x2A,
            ]),
            PacketType::Publish => bits(&[0x01, 0x02, 0x03, 0x08, 0x09, SUB_ID, 0x23, USER]),
            PacketType::PubAck
            | PacketType::PubRec
            | PacketType::PubRel
            | PacketType::PubComp
            | PacketType::SubAck
            | PacketType::UnsubAck => bits(&[0x1F, USER]),
            PacketType::Subscribe => bits(&[SUB_ID, USER]),
            PacketType::Unsubscribe => bits(&[USER]),
            PacketType::Disconnect => bits(&[0x11, 0x1C, 0x1F, USER]),
            PacketType::Auth => bits(&[0x15, 0x16, 0x1F, USER]),
            PacketType::PingReq | PacketType::PingResp => 0,
        }
    }

    /// Whether `id` may appear more than once here: User Property anywhere,
    /// Subscription Identifier in a PUBLISH (one per matching subscription).
    fn repeatable(self, id: u8) -> bool {
        id == USER || (id == SUB_ID && self.packet_type == PacketType::Publish && !self.will)
    }

    fn not_allowed(self, property: u8) -> MqttError {
        MqttError::PropertyNotAllowed {
            property,
            packet_type: self.packet_type,
            will: self.will,
        }
    }
}

const USER: u8 = 0x26;
const SUB_ID: u8 = 0x0B;

/// The identifiers MQTT 5.0 defines.
const KNOWN: u64 = bits(&[
    0x01, 0x02, 0x03, 0x08, 0x09, 0x0B, 0x11, 0x12, 0x13, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1A, 0x1C,
    0x1F, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2A,
]);

const fn bits(ids: &[u8]) -> u64 {
    let mut set = 0u64;
    let mut rest = ids;
    while let [id, tail @ ..] = rest {
        set |= 1 << *id;
        rest = tail;
    }
    set
}

/// The bit of `id` in a set, `None` when it cannot be a known identifier.
fn bit(id: u8) -> Option<u64> {
    1u64.checked_shl(u32::from(id))
        .filter(|bit| KNOWN & bit != 0)
}

/// The specification's name of a property, for error messages.
pub(super) fn property_name(id: u8) -> &'static str {
    match id {
        0x01 => "Payload Format Indicator",
        0x02 => "Message Expiry Interval",
        0x03 => "Content Type",
        0x08 => "Response Topic",
        0x09 => "Correlation Data",
        0x0B => "Subscription Identifier",
        0x11 => "Session Expiry Interval",
        0x12 => "Assigned Client Identifier",
        0x13 => "Server Keep Alive",
        0x15 => "Authentication Method",
        0x16 => "Authentication Data",
        0x17 => "Request Problem Information",
        0x18 => "Will Delay Interval",
        0x19 => "Request Response Information",
        0x1A => "Response Information",
        0x1C => "Server Reference",
        0x1F => "Reason String",
        0x21 => "Receive Maximum",
        0x22 => "Topic Alias Maximum",
        0x23 => "Topic Alias",
        0x24 => "Maximum QoS",
        0x25 => "Retain Available",
        0x26 => "User Property",
        0x27 => "Maximum Packet Size",
        0x28 => "Wildcard Subscription Available",
        0x29 => "Subscription Identifier Available",
        0x2A => "Shared Subscription Available",
        _ => "unknown property",
    }
}

/// A byte that must be 0 or 1.
fn boolean(id: u8, value: u8) -> Result<u8, MqttError> {
    if value <= 1 {
        Ok(value)
    } else {
        Err(MqttError::InvalidPropertyValue(id))
    }
}

/// A two- or four-byte value that must not be 0.
fn nonzero<T: Default + PartialEq>(id: u8, value: T) -> Result<T, MqttError> {
    if value == T::default() {
        Err(MqttError::InvalidPropertyValue(id))
    } else {
        Ok(value)
    }
}

/// Reads a Property Length and the properties it spans into `props` (which
/// starts out empty; filled in place, as the struct is large), checking each
/// is allowed at `place`, not repeated (unless it may be) and of a valid value.
pub(super) fn decode_properties<'a>(
    reader: &mut Reader<'a>,
    place: Place,
    props: &mut Properties<'a>,
) -> Result<(), MqttError> {
    let len = reader.varint()?;
    if len == 0 {
        return Ok(());
    }
    let block = usize::try_from(len)
        .map_err(|_| CUT_SHORT)
        .and_then(|len| reader.take(len))?;
    let mut r = Reader::new(block);
    let allowed = place.allowed();
    let mut seen = 0u64;
    while !r.is_empty() {
        // Identifiers are Variable Byte Integers, but all defined ones are a
        // single byte below 0x80; a longer one is unknown anyway.
        let id = r.u8()?;
        let bit = bit(id).ok_or(MqttError::UnknownProperty(id))?;
        if allowed & bit == 0 {
            return Err(place.not_allowed(id));
        }
        if seen & bit != 0 && !place.repeatable(id) {
            return Err(MqttError::DuplicateProperty(id));
        }
        seen |= bit;
        let p = &mut *props;
        match id {
            0x01 => p.payload_format_indicator = Some(boolean(id, r.u8()?)?),
            0x02 => p.message_expiry_interval = Some(r.u32()?),
            0x03 => p.content_type = Some(r.string()?),
            0x08 => p.response_topic = Some(r.string()?),
            0x09 => p.correlation_data = Some(r.binary()?),
            0x0B => p.subscription_identifiers.push(nonzero(id, r.varint()?)?),
            0x11 => p.session_expiry_interval = Some(r.u32()?),
            0x12 => p.assigned_client_identifier = Some(r.string()?),
            0x13 => p.server_keep_alive = Some(r.u16()?),
            0x15 => p.authentication_method = Some(r.string()?),
            0x16 => p.authentication_data = Some(r.binary()?),
            0x17 => p.request_problem_information = Some(boolean(id, r.u8()?)?),
            0x18 => p.will_delay_interval = Some(r.u32()?),
            0x19 => p.request_response_information = Some(boolean(id, r.u8()?)?),
            0x1A => p.response_information = Some(r.string()?),
            0x1C => p.server_reference = Some(r.string()?),
            0x1F => p.reason_string = Some(r.string()?),
            0x21 => p.receive_maximum = Some(nonzero(id, r.u16()?)?),
            0x22 => p.topic_alias_maximum = Some(r.u16()?),
            0x23 => p.topic_alias = Some(nonzero(id, r.u16()?)?),
            0x24 => p.maximum_qos = Some(boolean(id, r.u8()?)?),
            0x25 => p.retain_available = Some(boolean(id, r.u8()?)?),
            0x26 => {
                let key = r.string()?;
                let value = r.string()?;
                p.user_properties.push((key, value));
            }
            0x27 => p.maximum_packet_size = Some(nonzero(id, r.u32()?)?),
            0x28 => p.wildcard_subscription_available = Some(boolean(id, r.u8()?)?),
            0x29 => p.subscription_identifier_available = Some(boolean(id, r.u8()?)?),
            0x2A => p.shared_subscription_available = Some(boolean(id, r.u8()?)?),
            _ => return Err(MqttError::UnknownProperty(id)),
        }
    }
    Ok(())
}

/// One property value as the encoder sees it.
#[derive(Debug, Clone, Copy)]
enum Value<'a> {
    Byte(u8),
    Two(u16),
    Four(u32),
    Varint(u32),
    Str(&'a str),
    Bin(&'a [u8]),
    Pair(&'a str, &'a str),
}

/// Calls `f` with every present property in identifier order (User
/// Properties in their order), stopping at the first error.
fn each<'a>(
    p: &Properties<'a>,
    mut f: impl FnMut(u8, Value<'a>) -> Result<(), MqttError>,
) -> Result<(), MqttError> {
    use Value::{Bin, Byte, Four, Str, Two};
    macro_rules! opt {
        ($id:expr, $field:expr, $kind:ident) => {
            if let Some(value) = $field {
                f($id, $kind(value))?;
            }
        };
    }
    opt!(0x01, p.payload_format_indicator, Byte);
    opt!(0x02, p.message_expiry_interval, Four);
    opt!(0x03, p.content_type, Str);
    opt!(0x08, p.response_topic, Str);
    opt!(0x09, p.correlation_data, Bin);
    for &id in &p.subscription_identifiers {
        f(SUB_ID, Value::Varint(id))?;
    }
    opt!(0x11, p.session_expiry_interval, Four);
    opt!(0x12, p.assigned_client_identifier, Str);
    opt!(0x13, p.server_keep_alive, Two);
    opt!(0x15, p.authentication_method, Str);
    opt!(0x16, p.authentication_data, Bin);
    opt!(0x17, p.request_problem_information, Byte);
    opt!(0x18, p.will_delay_interval, Four);
    opt!(0x19, p.request_response_information, Byte);
    opt!(0x1A, p.response_information, Str);
    opt!(0x1C, p.server_reference, Str);
    opt!(0x1F, p.reason_string, Str);
    opt!(0x21, p.receive_maximum, Two);
    opt!(0x22, p.topic_alias_maximum, Two);
    opt!(0x23, p.topic_alias, Two);
    opt!(0x24, p.maximum_qos, Byte);
    opt!(0x25, p.retain_available, Byte);
    for &(key, value) in &p.user_properties {
        f(USER, Value::Pair(key, value))?;
    }
    opt!(0x27, p.maximum_packet_size, Four);
    opt!(0x28, p.wildcard_subscription_available, Byte);
    opt!(0x29, p.subscription_identifier_available, Byte);
    opt!(0x2A, p.shared_subscription_available, Byte);
    Ok(())
}

/// Bytes of a UTF-8 string field, checked as the decoder would check it.
pub(super) fn string_len(field: &'static str, s: &str) -> Result<usize, MqttError> {
    if has_nul(s.as_bytes()) {
        return Err(MqttError::InvalidString);
    }
    binary_len(field, s.as_bytes())
}

/// Bytes of a binary field (two-byte length included).
pub(super) fn binary_len(field: &'static str, b: &[u8]) -> Result<usize, MqttError> {
    if b.len() > usize::from(u16::MAX) {
        return Err(MqttError::FieldTooLong {
            field,
            len: b.len(),
        });
    }
    Ok(b.len() + 2)
}

/// Checks `p` as the decoder would at `place` and returns the bytes of its
/// properties, without the Property Length.
pub(super) fn properties_len(p: &Properties<'_>, place: Place) -> Result<usize, MqttError> {
    if p.is_empty() {
        return Ok(0);
    }
    let allowed = place.allowed();
    let mut len = 0usize;
    let mut sub_ids = 0usize;
    each(p, |id, value| {
        if allowed & bit(id).unwrap_or(0) == 0 {
            return Err(place.not_allowed(id));
        }
        let name = property_name(id);
        let value_len = match value {
            Value::Byte(b) => {
                if matches!(id, 0x01 | 0x17 | 0x19 | 0x24 | 0x25 | 0x28 | 0x29 | 0x2A) {
                    boolean(id, b)?;
                }
                1
            }
            Value::Two(n) => {
                if matches!(id, 0x21 | 0x23) {
                    nonzero(id, n)?;
                }
                2
            }
            Value::Four(n) => {
                if id == 0x27 {
                    nonzero(id, n)?;
                }
                4
            }
            Value::Varint(n) => {
                sub_ids += 1;
                if sub_ids > 1 && !place.repeatable(id) {
                    return Err(MqttError::DuplicateProperty(id));
                }
                if n == 0 || n > MAX_REMAINING_LENGTH {
                    return Err(MqttError::InvalidPropertyValue(id));
                }
                varint_len(usize::try_from(n).unwrap_or(usize::MAX))
            }
            Value::Str(s) => string_len(name, s)?,
            Value::Bin(b) => binary_len(name, b)?,
            Value::Pair(key, value) => string_len(name, key)? + string_len(name, value)?,
        };
        len = len.saturating_add(1 + value_len);
        Ok(())
    })?;
    if len > MAX_REMAINING_LENGTH as usize {
        return Err(MqttError::TooLarge { remaining_len: len });
    }
    Ok(len)
}

/// Bytes of the Property Length plus the properties.
pub(super) fn block_len(props_len: usize) -> usize {
    varint_len(props_len) + props_len
}

pub(super) fn write_u16(out: &mut Vec<u8>, n: u16) {
    out.extend_from_slice(&n.to_be_bytes());
}

/// Writes a string or binary field whose length was checked.
pub(super) fn write_binary(out: &mut Vec<u8>, b: &[u8]) {
    // At most u16::MAX bytes: checked by `binary_len`/`string_len` first.
    write_u16(out, u16::try_from(b.len()).unwrap_or(u16::MAX));
    out.extend_from_slice(b);
}

/// Writes the Property Length `props_len` (from [`properties_len`]) and the
/// properties.
pub(super) fn write_properties(out: &mut Vec<u8>, p: &Properties<'_>, props_len: usize) {
    write_varint(out, props_len);
    if props_len == 0 {
        return;
    }
    // Infallible: the closure never errors.
    let _ = each(p, |id, value| {
        out.push(id);
        match value {
            Value::Byte(b) => out.push(b),
            Value::Two(n) => write_u16(out, n),
            Value::Four(n) => out.extend_from_slice(&n.to_be_bytes()),
            Value::Varint(n) => write_varint(out, usize::try_from(n).unwrap_or(usize::MAX)),
            Value::Str(s) => write_binary(out, s.as_bytes()),
            Value::Bin(b) => write_binary(out, b),
            Value::Pair(key, value) => {
                write_binary(out, key.as_bytes());
                write_binary(out, value.as_bytes());
            }
        }
        Ok(())
    });
}
