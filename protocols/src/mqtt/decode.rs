//! Decoding whole packets. Every field borrows from the caller's buffer; the
//! only allocations are the `Vec`s of topic filters, reason codes, User
//! Properties and Subscription Identifiers, and only when there are some.

use super::codec::{
    checked_reason_code, connack_code_from_v311, read_fixed_header, suback_code_from_v311, Reader,
};
use super::error::MqttError;
use super::packet::{
    Ack, Auth, ConnAck, Connect, Disconnect, Packet, PacketType, Properties, Publish, QoS,
    ReasonCode, RetainHandling, SubAck, Subscribe, SubscriptionOptions, UnsubAck, Unsubscribe,
    Version, Will,
};
use super::properties::{decode_properties, Place};
use crate::framing::Decoded;

/// Decodes one whole packet at the start of `buf`, borrowing its strings and
/// payloads from `buf`.
///
/// `version` is the connection's protocol version; a CONNECT ignores it (its
/// protocol level says which it is, and [`Connect::version`] reports it).
/// `Incomplete` until the whole packet is in `buf`; the size is checked
/// against `max_packet_bytes` from the fixed header first, before the body
/// is awaited (see [`read_fixed_header`]). A returned packet has
/// `2 <= consumed <= buf.len()`, and its fields fill its Remaining Length
/// exactly. 3.1.1 packets never carry properties; AUTH is refused on a 3.1.1
/// connection.
pub fn decode(
    buf: &[u8],
    version: Version,
    max_packet_bytes: u32,
) -> Result<Decoded<Packet<'_>>, MqttError> {
    let header = match read_fixed_header(buf, max_packet_bytes)? {
        Decoded::Frame { frame, .. } => frame,
        Decoded::Incomplete => return Ok(Decoded::Incomplete),
    };
    if header.packet_type == PacketType::Auth && version == Version::V311 {
        return Err(MqttError::InvalidPacketType(PacketType::Auth as u8));
    }
    let consumed = header.total_len();
    let Some(body) = buf.get(header.header_len..consumed) else {
        return Ok(Decoded::Incomplete);
    };
    // Each arm builds the whole result in place: `Packet` is large, and
    // moving it through intermediate values dominated the decode time.
    let r = Reader::new(body);
    match header.packet_type {
        PacketType::Connect => connect(r, consumed),
        PacketType::ConnAck => connack(r, version, consumed),
        PacketType::Publish => publish(r, header.flags, version, consumed),
        PacketType::PubAck | PacketType::PubRec | PacketType::PubRel | PacketType::PubComp => {
            ack(r, header.packet_type, version, consumed)
        }
        PacketType::Subscribe => subscribe(r, version, consumed),
        PacketType::SubAck => suback(r, version, consumed),
        PacketType::Unsubscribe => unsubscribe(r, version, consumed),
        PacketType::UnsubAck => unsuback(r, version, consumed),
        PacketType::PingReq | PacketType::PingResp => {
            r.finish()?;
            let frame = if header.packet_type == PacketType::PingReq {
                Packet::PingReq
            } else {
                Packet::PingResp
            };
            Ok(Decoded::Frame { frame, consumed })
        }
        PacketType::Disconnect | PacketType::Auth => {
            disconnect_or_auth(r, header.packet_type, version, consumed)
        }
    }
}

/// What every per-type decoder returns: the whole result of [`decode`].
type Decodes<'a> = Result<Decoded<Packet<'a>>, MqttError>;

/// Fills `props` with the properties in 5.0; none in 3.1.1.
fn properties_into<'a>(
    r: &mut Reader<'a>,
    version: Version,
    place: Place,
    props: &mut Properties<'a>,
) -> Result<(), MqttError> {
    match version {
        Version::V311 => Ok(()),
        Version::V5 => decode_properties(r, place, props),
    }
}

fn connect(mut r: Reader<'_>, consumed: usize) -> Decodes<'_> {
    // The protocol name and level come first and are judged first, so a
    // client of another version gets UnsupportedProtocol whatever follows.
    let name = r.binary()?;
    let level = r.u8()?;
    let version = match (name, level) {
        (b"MQTT", 4) => Version::V311,
        (b"MQTT", 5) => Version::V5,
        _ => return Err(MqttError::UnsupportedProtocol { level }),
    };
    let flags = r.u8()?;
    if flags & 0b0000_0001 != 0 {
        return Err(MqttError::Malformed("reserved CONNECT flag set"));
    }
    let clean_start = flags & 0b0000_0010 != 0;
    let will_flag = flags & 0b0000_0100 != 0;
    let will_qos = (flags >> 3) & 0b11;
    let will_retain = flags & 0b0010_0000 != 0;
    let password_flag = flags & 0b0100_0000 != 0;
    let username_flag = flags & 0b1000_0000 != 0;
    let will_qos = if will_flag {
        QoS::from_bits(will_qos).ok_or(MqttError::InvalidQoS)?
    } else if will_qos != 0 || will_retain {
        return Err(MqttError::Malformed(
            "Will QoS or Will Retain set without the Will Flag",
        ));
    } else {
        QoS::AtMostOnce
    };
    if version == Version::V311 && password_flag && !username_flag {
        return Err(MqttError::Malformed(
            "Password Flag set without the User Name Flag (3.1.1)",
        ));
    }
    let keep_alive_secs = r.u16()?;
    let mut properties = Properties::default();
    properties_into(
        &mut r,
        version,
        Place::packet(PacketType::Connect),
        &mut properties,
    )?;
    let client_id = r.string()?;
    let will = if will_flag {
        let mut properties = Properties::default();
        properties_into(&mut r, version, Place::WILL, &mut properties)?;
        Some(Will {
            topic: r.string()?,
            payload: r.binary()?,
            qos: will_qos,
            retain: will_retain,
            properties,
        })
    } else {
        None
    };
    let username = if username_flag {
        Some(r.string()?)
    } else {
        None
    };
    let password = if password_flag {
        Some(r.binary()?)
    } else {
        None
    };
    r.finish()?;
    Ok(Decoded::Frame {
        frame: Packet::Connect(Connect {
            version,
            clean_start,
            keep_alive_secs,
            client_id,
            will,
            username,
            password,
            properties,
        }),
        consumed,
    })
}

fn connack(mut r: Reader<'_>, version: Version, consumed: usize) -> Decodes<'_> {
    let ack_flags = r.u8()?;
    if ack_flags & 0b1111_1110 != 0 {
        return Err(MqttError::Malformed(
            "reserved CONNACK acknowledge flags set",
        ));
    }
    let code = match version {
        Version::V311 => connack_code_from_v311(r.u8()?)?,
        Version::V5 => checked_reason_code(PacketType::ConnAck, r.u8()?)?,
    };
    let mut properties = Properties::default();
    properties_into(
        &mut r,
        version,
        Place::packet(PacketType::ConnAck),
        &mut properties,
    )?;
    r.finish()?;
    Ok(Decoded::Frame {
        frame: Packet::ConnAck(ConnAck {
            session_present: ack_flags & 1 != 0,
            code,
            properties,
        }),
        consumed,
    })
}

fn publish(mut r: Reader<'_>, flags: u8, version: Version, consumed: usize) -> Decodes<'_> {
    // The flags were checked with the fixed header.
    let qos = QoS::from_bits((flags >> 1) & 0b11).ok_or(MqttError::InvalidQoS)?;
    let topic = r.string()?;
    let packet_id = match qos {
        QoS::AtMostOnce => None,
        QoS::AtLeastOnce | QoS::ExactlyOnce => Some(r.packet_id()?),
    };
    let mut properties = Properties::default();
    let place = Place::packet(PacketType::Publish);
    properties_into(&mut r, version, place, &mut properties)?;
    Ok(Decoded::Frame {
        frame: Packet::Publish(Publish {
            dup: flags & 0b1000 != 0,
            qos,
            retain: flags & 0b0001 != 0,
            topic,
            packet_id,
            properties,
            payload: r.rest(),
        }),
        consumed,
    })
}

/// PUBACK, PUBREC, PUBREL, PUBCOMP: in 5.0 a Remaining Length of 2 means
/// Success without properties, 3 a reason code without properties.
fn ack(
    mut r: Reader<'_>,
    packet_type: PacketType,
    version: Version,
    consumed: usize,
) -> Decodes<'_> {
    let packet_id = r.packet_id()?;
    let mut properties = Properties::default();
    let code = code_and_properties(&mut r, packet_type, version, &mut properties)?;
    r.finish()?;
    let ack = Ack {
        packet_id,
        code,
        properties,
    };
    let frame = match packet_type {
        PacketType::PubAck => Packet::PubAck(ack),
        PacketType::PubRec => Packet::PubRec(ack),
        PacketType::PubRel => Packet::PubRel(ack),
        _ => Packet::PubComp(ack),
    };
    Ok(Decoded::Frame { frame, consumed })
}

fn disconnect_or_auth(
    mut r: Reader<'_>,
    packet_type: PacketType,
    version: Version,
    consumed: usize,
) -> Decodes<'_> {
    let mut properties = Properties::default();
    let code = code_and_properties(&mut r, packet_type, version, &mut properties)?;
    r.finish()?;
    let frame = if packet_type == PacketType::Auth {
        Packet::Auth(Auth { code, properties })
    } else {
        Packet::Disconnect(Disconnect { code, properties })
    };
    Ok(Decoded::Frame { frame, consumed })
}

/// An optional reason code and optional properties (5.0 acks, DISCONNECT,
/// AUTH): nothing left means Success, one byte a code without properties
/// (not for AUTH, which may leave out the code and the Property Length only
/// together, §3.15.2). 3.1.1 has neither.
fn code_and_properties<'a>(
    r: &mut Reader<'a>,
    packet_type: PacketType,
    version: Version,
    properties: &mut Properties<'a>,
) -> Result<ReasonCode, MqttError> {
    if version == Version::V311 || r.is_empty() {
        return Ok(ReasonCode::Success);
    }
    let code = checked_reason_code(packet_type, r.u8()?)?;
    if !r.is_empty() {
        decode_properties(r, Place::packet(packet_type), properties)?;
    } else if packet_type == PacketType::Auth {
        return Err(MqttError::Malformed(
            "AUTH reason code without a property length",
        ));
    }
    Ok(code)
}

/// A topic filter of a SUBSCRIBE or UNSUBSCRIBE: a non-empty string.
fn filter<'a>(r: &mut Reader<'a>) -> Result<&'a str, MqttError> {
    match r.string()? {
        "" => Err(MqttError::Malformed("empty topic filter")),
        filter => Ok(filter),
    }
}

fn subscribe(mut r: Reader<'_>, version: Version, consumed: usize) -> Decodes<'_> {
    let packet_id = r.packet_id()?;
    let mut properties = Properties::default();
    properties_into(
        &mut r,
        version,
        Place::packet(PacketType::Subscribe),
        &mut properties,
    )?;
    let mut filters = Vec::new();
    while !r.is_empty() {
        let filter = filter(&mut r)?;
        let options = subscription_options(r.u8()?, version)?;
        filters.push((filter, options));
    }
    if filters.is_empty() {
        return Err(MqttError::NoTopicFilters);
    }
    Ok(Decoded::Frame {
        frame: Packet::Subscribe(Subscribe {
            packet_id,
            filters,
            properties,
        }),
        consumed,
    })
}

/// 3.1.1: bits 0-1 QoS, the rest reserved. 5.0: bits 0-1 QoS, 2 No Local,
/// 3 Retain As Published, 4-5 Retain Handling, 6-7 reserved.
fn subscription_options(options: u8, version: Version) -> Result<SubscriptionOptions, MqttError> {
    let invalid = MqttError::InvalidSubscriptionOptions(options);
    let reserved = match version {
        Version::V311 => 0b1111_1100,
        Version::V5 => 0b1100_0000,
    };
    if options & reserved != 0 {
        return Err(invalid);
    }
    let qos = QoS::from_bits(options & 0b11).ok_or(invalid.clone())?;
    let retain_handling = match (options >> 4) & 0b11 {
        0 => RetainHandling::OnSubscribe,
        1 => RetainHandling::OnNewSubscribe,
        2 => RetainHandling::Never,
        _ => return Err(invalid),
    };
    Ok(SubscriptionOptions {
        qos,
        no_local: options & 0b0100 != 0,
        retain_as_published: options & 0b1000 != 0,
        retain_handling,
    })
}

fn suback(mut r: Reader<'_>, version: Version, consumed: usize) -> Decodes<'_> {
    let packet_id = r.packet_id()?;
    let mut properties = Properties::default();
    properties_into(
        &mut r,
        version,
        Place::packet(PacketType::SubAck),
        &mut properties,
    )?;
    let rest = r.rest();
    if rest.is_empty() {
        return Err(MqttError::NoReasonCodes);
    }
    let codes = rest
        .iter()
        .map(|&code| match version {
            Version::V311 => suback_code_from_v311(code),
            Version::V5 => checked_reason_code(PacketType::SubAck, code),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Decoded::Frame {
        frame: Packet::SubAck(SubAck {
            packet_id,
            codes,
            properties,
        }),
        consumed,
    })
}

fn unsubscribe(mut r: Reader<'_>, version: Version, consumed: usize) -> Decodes<'_> {
    let packet_id = r.packet_id()?;
    let mut properties = Properties::default();
    properties_into(
        &mut r,
        version,
        Place::packet(PacketType::Unsubscribe),
        &mut properties,
    )?;
    let mut filters = Vec::new();
    while !r.is_empty() {
        filters.push(filter(&mut r)?);
    }
    if filters.is_empty() {
        return Err(MqttError::NoTopicFilters);
    }
    Ok(Decoded::Frame {
        frame: Packet::Unsubscribe(Unsubscribe {
            packet_id,
            filters,
            properties,
        }),
        consumed,
    })
}

fn unsuback(mut r: Reader<'_>, version: Version, consumed: usize) -> Decodes<'_> {
    let packet_id = r.packet_id()?;
    let mut properties = Properties::default();
    let mut codes = Vec::new();
    if version == Version::V5 {
        decode_properties(&mut r, Place::packet(PacketType::UnsubAck), &mut properties)?;
        let rest = r.rest();
        if rest.is_empty() {
            return Err(MqttError::NoReasonCodes);
        }
        codes = rest
            .iter()
            .map(|&code| checked_reason_code(PacketType::UnsubAck, code))
            .collect::<Result<Vec<_>, _>>()?;
    }
    r.finish()?;
    Ok(Decoded::Frame {
        frame: Packet::UnsubAck(UnsubAck {
            packet_id,
            codes,
            properties,
        }),
        consumed,
    })
}
