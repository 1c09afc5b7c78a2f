//! Encoding packets. A first pass checks every field as the decoder would
//! and sums the lengths; the second pass writes, and cannot fail. On error
//! nothing is appended. No intermediate buffer.

use super::codec::{
    checked_reason_code, connack_code_to_v311, fixed_flags, suback_code_to_v311, varint_len,
    write_varint, MAX_REMAINING_LENGTH,
};
use super::error::MqttError;
use super::packet::{
    Ack, ConnAck, Connect, Packet, PacketType, Properties, Publish, QoS, ReasonCode, Subscribe,
    SubscriptionOptions, UnsubAck, Unsubscribe, Version,
};
use super::properties::{
    binary_len, block_len, properties_len, string_len, write_binary, write_properties, write_u16,
    Place,
};

/// Appends the packet's wire bytes to `out`.
///
/// `version` is the connection's protocol version; a CONNECT is written in
/// its own [`Connect::version`]. 3.1.1 drops what it cannot carry:
/// properties, the reason codes of acks, UNSUBACK and DISCONNECT, and the
/// 5.0 subscription options; a 3.1.1 CONNACK writes the return code of its
/// reason code (any failure without one as 3, Server unavailable) and a
/// 3.1.1 SUBACK any failure as 0x80. 5.0 acks, DISCONNECT and AUTH use their
/// shortest form.
///
/// Refused, with nothing appended: a string or binary field over 65,535
/// bytes, a string holding U+0000, a Remaining Length over
/// [`MAX_REMAINING_LENGTH`], packet identifier 0, a PUBLISH whose packet
/// identifier does not match its QoS (or DUP at QoS 0), a SUBSCRIBE or
/// UNSUBSCRIBE without filters (or with an empty one), a SUBACK or 5.0
/// UNSUBACK without codes, a reason code or property the packet may not
/// carry, a property value the decoder would refuse, a 3.1.1 CONNECT with a
/// password but no user name, and AUTH in 3.1.1.
pub fn encode(packet: &Packet<'_>, version: Version, out: &mut Vec<u8>) -> Result<(), MqttError> {
    let plan = plan(packet, version)?;
    out.reserve(plan.total());
    write(packet, version, &plan, out);
    Ok(())
}

/// The number of bytes [`encode`] would append (with the same refusals).
pub fn encoded_len(packet: &Packet<'_>, version: Version) -> Result<usize, MqttError> {
    plan(packet, version).map(|plan| plan.total())
}

/// Appends a PUBLISH's fixed header, topic, packet identifier and properties
/// — everything except the payload bytes, which the Remaining Length does
/// count — so a server can send this head and a shared payload buffer in one
/// vectored write. `encode(&Packet::Publish(p))` is exactly this followed by
/// `p.payload`.
pub fn encode_publish_head(
    publish: &Publish<'_>,
    version: Version,
    out: &mut Vec<u8>,
) -> Result<(), MqttError> {
    let plan = plan_publish(publish, version)?;
    out.reserve(plan.total() - publish.payload.len());
    write_publish_head(publish, version, &plan, out);
    Ok(())
}

/// What the first pass found: the Remaining Length and the sizes of the
/// property blocks (without their Property Length).
#[derive(Debug, Default)]
struct Plan {
    remaining: usize,
    props: usize,
    will_props: usize,
}

impl Plan {
    fn total(&self) -> usize {
        1 + varint_len(self.remaining) + self.remaining
    }
}

fn checked(remaining: usize, props: usize, will_props: usize) -> Result<Plan, MqttError> {
    if remaining > MAX_REMAINING_LENGTH as usize {
        return Err(MqttError::TooLarge {
            remaining_len: remaining,
        });
    }
    Ok(Plan {
        remaining,
        props,
        will_props,
    })
}

fn packet_id(id: u16) -> Result<usize, MqttError> {
    if id == 0 {
        Err(MqttError::ZeroPacketId)
    } else {
        Ok(2)
    }
}

/// The size of a packet's properties in `version` (0 in 3.1.1, where they are dropped).
fn props_in(version: Version, p: &Properties<'_>, place: Place) -> Result<usize, MqttError> {
    match version {
        Version::V311 => Ok(0),
        Version::V5 => properties_len(p, place),
    }
}

/// Bytes of a property block with its Property Length, none in 3.1.1.
fn block_in(version: Version, props: usize) -> usize {
    match version {
        Version::V311 => 0,
        Version::V5 => block_len(props),
    }
}

fn plan(packet: &Packet<'_>, version: Version) -> Result<Plan, MqttError> {
    match packet {
        Packet::Connect(c) => plan_connect(c),
        Packet::ConnAck(c) => {
            connack_code(c, version)?;
            let props = props_in(version, &c.properties, Place::packet(PacketType::ConnAck))?;
            checked(2 + block_in(version, props), props, 0)
        }
        Packet::Publish(p) => plan_publish(p, version),
        Packet::PubAck(a) => plan_ack(a, PacketType::PubAck, version),
        Packet::PubRec(a) => plan_ack(a, PacketType::PubRec, version),
        Packet::PubRel(a) => plan_ack(a, PacketType::PubRel, version),
        Packet::PubComp(a) => plan_ack(a, PacketType::PubComp, version),
        Packet::Subscribe(s) => plan_subscribe(s, version),
        Packet::SubAck(s) => {
            let mut len = packet_id(s.packet_id)?;
            let props = props_in(version, &s.properties, Place::packet(PacketType::SubAck))?;
            len += block_in(version, props);
            if s.codes.is_empty() {
                return Err(MqttError::NoReasonCodes);
            }
            for &code in &s.codes {
                suback_code(code, version)?;
            }
            checked(len.saturating_add(s.codes.len()), props, 0)
        }
        Packet::Unsubscribe(u) => plan_unsubscribe(u, version),
        Packet::UnsubAck(u) => {
            let len = packet_id(u.packet_id)?;
            if version == Version::V311 {
                return checked(len, 0, 0);
            }
            let props = properties_len(&u.properties, Place::packet(PacketType::UnsubAck))?;
            if u.codes.is_empty() {
                return Err(MqttError::NoReasonCodes);
            }
            for &code in &u.codes {
                checked_reason_code(PacketType::UnsubAck, code.into())?;
            }
            checked(
                (len + block_len(props)).saturating_add(u.codes.len()),
                props,
                0,
            )
        }
        Packet::PingReq | Packet::PingResp => checked(0, 0, 0),
        Packet::Disconnect(d) => {
            plan_code_and_properties(PacketType::Disconnect, d.code, &d.properties, version, true)
        }
        Packet::Auth(a) => {
            if version == Version::V311 {
                return Err(MqttError::InvalidPacketType(PacketType::Auth as u8));
            }
            plan_code_and_properties(PacketType::Auth, a.code, &a.properties, version, false)
        }
    }
}

fn plan_connect(c: &Connect<'_>) -> Result<Plan, MqttError> {
    let version = c.version;
    // Protocol Name (2 + "MQTT"), Protocol Level, Connect Flags, Keep Alive.
    let mut len = 10;
    let props = props_in(version, &c.properties, Place::packet(PacketType::Connect))?;
    len += block_in(version, props);
    len += string_len("client identifier", c.client_id)?;
    let mut will_props = 0;
    if let Some(will) = &c.will {
        will_props = props_in(version, &will.properties, Place::WILL)?;
        len += block_in(version, will_props);
        len += string_len("will topic", will.topic)?;
        len += binary_len("will payload", will.payload)?;
    }
    if let Some(username) = c.username {
        len += string_len("user name", username)?;
    }
    if let Some(password) = c.password {
        if version == Version::V311 && c.username.is_none() {
            return Err(MqttError::Malformed(
                "Password Flag set without the User Name Flag (3.1.1)",
            ));
        }
        len += binary_len("password", password)?;
    }
    checked(len, props, will_props)
}

fn plan_publish(p: &Publish<'_>, version: Version) -> Result<Plan, MqttError> {
    if p.dup && p.qos == QoS::AtMostOnce {
        return Err(MqttError::Malformed("DUP flag set on a QoS 0 PUBLISH"));
    }
    let mut len = string_len("topic name", p.topic)?;
    match (p.qos, p.packet_id) {
        (QoS::AtMostOnce, None) => {}
        (QoS::AtLeastOnce | QoS::ExactlyOnce, Some(id)) => len += packet_id(id)?,
        (qos, _) => return Err(MqttError::PacketIdQoSMismatch { qos }),
    }
    let props = props_in(version, &p.properties, Place::packet(PacketType::Publish))?;
    len += block_in(version, props);
    checked(len.saturating_add(p.payload.len()), props, 0)
}

fn plan_ack(a: &Ack<'_>, packet_type: PacketType, version: Version) -> Result<Plan, MqttError> {
    let len = packet_id(a.packet_id)?;
    if version == Version::V311 {
        return checked(len, 0, 0);
    }
    let Plan {
        remaining, props, ..
    } = plan_code_and_properties(packet_type, a.code, &a.properties, version, true)?;
    checked(len + remaining, props, 0)
}

/// The optional reason code and properties of 5.0 acks, DISCONNECT and
/// AUTH: nothing when Success without properties, the code alone when
/// `code_alone` allows it, else both.
fn plan_code_and_properties(
    packet_type: PacketType,
    code: ReasonCode,
    properties: &Properties<'_>,
    version: Version,
    code_alone: bool,
) -> Result<Plan, MqttError> {
    if version == Version::V311 {
        return checked(0, 0, 0);
    }
    checked_reason_code(packet_type, code.into())?;
    let props = properties_len(properties, Place::packet(packet_type))?;
    // Every present property takes at least two bytes: 0 means none.
    let remaining = match (code, props) {
        (ReasonCode::Success, 0) => 0,
        (_, 0) if code_alone => 1,
        _ => 1 + block_len(props),
    };
    checked(remaining, props, 0)
}

fn plan_subscribe(s: &Subscribe<'_>, version: Version) -> Result<Plan, MqttError> {
    let mut len = packet_id(s.packet_id)?;
    let props = props_in(version, &s.properties, Place::packet(PacketType::Subscribe))?;
    len += block_in(version, props);
    if s.filters.is_empty() {
        return Err(MqttError::NoTopicFilters);
    }
    for (filter, _) in &s.filters {
        len = len.saturating_add(filter_len(filter)? + 1);
    }
    checked(len, props, 0)
}

fn plan_unsubscribe(u: &Unsubscribe<'_>, version: Version) -> Result<Plan, MqttError> {
    let mut len = packet_id(u.packet_id)?;
    let props = props_in(
        version,
        &u.properties,
        Place::packet(PacketType::Unsubscribe),
    )?;
    len += block_in(version, props);
    if u.filters.is_empty() {
        return Err(MqttError::NoTopicFilters);
    }
    for filter in &u.filters {
        len = len.saturating_add(filter_len(filter)?);
    }
    checked(len, props, 0)
}

fn filter_len(filter: &str) -> Result<usize, MqttError> {
    if filter.is_empty() {
        return Err(MqttError::Malformed("empty topic filter"));
    }
    string_len("topic filter", filter)
}

fn connack_code(c: &ConnAck<'_>, version: Version) -> Result<u8, MqttError> {
    match version {
        Version::V311 => connack_code_to_v311(c.code),
        Version::V5 => checked_reason_code(PacketType::ConnAck, c.code.into()).map(u8::from),
    }
}

fn suback_code(code: ReasonCode, version: Version) -> Result<u8, MqttError> {
    match version {
        Version::V311 => suback_code_to_v311(code),
        Version::V5 => checked_reason_code(PacketType::SubAck, code.into()).map(u8::from),
    }
}

fn subscription_options(options: SubscriptionOptions, version: Version) -> u8 {
    let qos = options.qos as u8;
    match version {
        Version::V311 => qos,
        Version::V5 => {
            qos | u8::from(options.no_local) << 2
                | u8::from(options.retain_as_published) << 3
                | (options.retain_handling as u8) << 4
        }
    }
}

fn write_header(out: &mut Vec<u8>, packet_type: PacketType, flags: u8, remaining: usize) {
    out.push((packet_type as u8) << 4 | flags);
    write_varint(out, remaining);
}

/// Writes the properties of a planned packet in 5.0.
fn write_props_in(out: &mut Vec<u8>, version: Version, p: &Properties<'_>, props: usize) {
    if version == Version::V5 {
        write_properties(out, p, props);
    }
}

/// The second pass: `plan` came from [`plan`] for the same packet and version.
fn write(packet: &Packet<'_>, version: Version, plan: &Plan, out: &mut Vec<u8>) {
    let packet_type = packet.packet_type();
    if let Packet::Publish(p) = packet {
        write_publish_head(p, version, plan, out);
        out.extend_from_slice(p.payload);
        return;
    }
    if let Packet::Connect(c) = packet {
        write_connect(c, plan, out);
        return;
    }
    write_header(out, packet_type, fixed_flags(packet_type), plan.remaining);
    match packet {
        Packet::ConnAck(c) => {
            out.push(u8::from(c.session_present));
            // Checked by the plan.
            out.push(connack_code(c, version).unwrap_or(0x80));
            write_props_in(out, version, &c.properties, plan.props);
        }
        Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => {
            write_u16(out, a.packet_id);
            write_code_and_properties(out, a.code, &a.properties, plan.remaining - 2, plan);
        }
        Packet::Subscribe(s) => {
            write_u16(out, s.packet_id);
            write_props_in(out, version, &s.properties, plan.props);
            for &(filter, options) in &s.filters {
                write_binary(out, filter.as_bytes());
                out.push(subscription_options(options, version));
            }
        }
        Packet::SubAck(s) => {
            write_u16(out, s.packet_id);
            write_props_in(out, version, &s.properties, plan.props);
            for &code in &s.codes {
                // Checked by the plan.
                out.push(suback_code(code, version).unwrap_or(0x80));
            }
        }
        Packet::Unsubscribe(u) => {
            write_u16(out, u.packet_id);
            write_props_in(out, version, &u.properties, plan.props);
            for filter in &u.filters {
                write_binary(out, filter.as_bytes());
            }
        }
        Packet::UnsubAck(u) => write_unsuback(out, u, version, plan),
        Packet::Disconnect(d) => {
            write_code_and_properties(out, d.code, &d.properties, plan.remaining, plan);
        }
        Packet::Auth(a) => {
            write_code_and_properties(out, a.code, &a.properties, plan.remaining, plan);
        }
        Packet::PingReq | Packet::PingResp | Packet::Connect(_) | Packet::Publish(_) => {}
    }
}

/// Writes the optional code and properties that take `len` bytes (0: none,
/// 1: the code alone, more: both). 3.1.1 planned 0.
fn write_code_and_properties(
    out: &mut Vec<u8>,
    code: ReasonCode,
    properties: &Properties<'_>,
    len: usize,
    plan: &Plan,
) {
    if len >= 1 {
        out.push(code.into());
    }
    if len >= 2 {
        write_properties(out, properties, plan.props);
    }
}

fn write_unsuback(out: &mut Vec<u8>, u: &UnsubAck<'_>, version: Version, plan: &Plan) {
    write_u16(out, u.packet_id);
    if version == Version::V5 {
        write_properties(out, &u.properties, plan.props);
        out.extend(u.codes.iter().map(|&code| u8::from(code)));
    }
}

fn write_connect(c: &Connect<'_>, plan: &Plan, out: &mut Vec<u8>) {
    let version = c.version;
    write_header(out, PacketType::Connect, 0, plan.remaining);
    write_binary(out, b"MQTT");
    out.push(version.level());
    let mut flags = u8::from(c.clean_start) << 1;
    if let Some(will) = &c.will {
        flags |= 0b0000_0100 | (will.qos as u8) << 3 | u8::from(will.retain) << 5;
    }
    flags |= u8::from(c.password.is_some()) << 6 | u8::from(c.username.is_some()) << 7;
    out.push(flags);
    write_u16(out, c.keep_alive_secs);
    write_props_in(out, version, &c.properties, plan.props);
    write_binary(out, c.client_id.as_bytes());
    if let Some(will) = &c.will {
        write_props_in(out, version, &will.properties, plan.will_props);
        write_binary(out, will.topic.as_bytes());
        write_binary(out, will.payload);
    }
    if let Some(username) = c.username {
        write_binary(out, username.as_bytes());
    }
    if let Some(password) = c.password {
        write_binary(out, password);
    }
}

fn write_publish_head(p: &Publish<'_>, version: Version, plan: &Plan, out: &mut Vec<u8>) {
    let flags = u8::from(p.dup) << 3 | (p.qos as u8) << 1 | u8::from(p.retain);
    write_header(out, PacketType::Publish, flags, plan.remaining);
    write_binary(out, p.topic.as_bytes());
    if let Some(id) = p.packet_id {
        write_u16(out, id);
    }
    write_props_in(out, version, &p.properties, plan.props);
}
