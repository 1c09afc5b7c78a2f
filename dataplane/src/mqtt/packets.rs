//! The packets of an established session: PUBLISH (topic aliases, the
//! ACL, retained messages, QoS 2 bookkeeping), the acknowledgements,
//! SUBSCRIBE (shared subscriptions, `max_subscriptions`, the retained
//! messages that follow the SUBACK), UNSUBSCRIBE, PINGREQ and DISCONNECT,
//! and the owned copy of a publish's 5.0 properties.

use std::rc::Rc;
use std::time::{Duration, Instant};

use shoal_protocols::mqtt::{
    Packet, Properties, QoS, ReasonCode, RetainHandling, UnsubAck, Version,
};
use shoal_protocols::topic::{validate_topic_filter, validate_topic_name};
use tracing::warn;

use super::broker::{retain_everywhere, split_shared, subscribe_entry, unsubscribe_entry};
use super::conn::{AckKind, MqttConn};
use super::session::{Outgoing, Session};
use super::task::{Client, End, PendingSubAck, Step};
use super::MqttListenerRt;
use crate::core::Core;
use crate::message::{Message, Origin, PublishProps};
use crate::pool::{Payload, PoolBuf};

/// Handles one packet of a connected client.
#[allow(clippy::too_many_arguments)]
pub(super) fn handle(
    core: &Rc<Core>,
    rt: &Rc<MqttListenerRt>,
    conn: &Rc<MqttConn>,
    client: &mut Client,
    shared: &Rc<PoolBuf>,
    start: usize,
    packet: Packet<'_>,
    read_end: Option<Instant>,
) -> Result<Option<Step>, End> {
    let Some(session) = client.session.clone() else {
        return Ok(None);
    };
    let v5 = conn.version.get() == Version::V5;
    match packet {
        Packet::Publish(p) => {
            // Resolve the Topic Alias.
            let topic: Rc<str> = match p.properties.topic_alias {
                Some(alias) => {
                    if client.aliases.is_empty() && alias <= client.alias_max {
                        client.aliases = vec![None; usize::from(client.alias_max)];
                    }
                    let slot = client
                        .aliases
                        .get_mut(usize::from(alias).wrapping_sub(1))
                        .ok_or_else(|| {
                            End::Protocol(
                                ReasonCode::TopicAliasInvalid,
                                format!("topic alias {alias} is above the maximum"),
                            )
                        })?;
                    if p.topic.is_empty() {
                        slot.clone().ok_or_else(|| {
                            End::Protocol(
                                ReasonCode::ProtocolError,
                                format!("topic alias {alias} was never set"),
                            )
                        })?
                    } else {
                        let t: Rc<str> = p.topic.into();
                        *slot = Some(Rc::clone(&t));
                        t
                    }
                }
                // A device mostly publishes to the same topic: reuse it.
                None => match &client.last_topic {
                    Some(t) if **t == *p.topic => Rc::clone(t),
                    _ => {
                        let t: Rc<str> = p.topic.into();
                        client.last_topic = Some(Rc::clone(&t));
                        t
                    }
                },
            };
            validate_topic_name(&topic).map_err(|e| {
                End::Protocol(ReasonCode::TopicNameInvalid, format!("publish topic: {e}"))
            })?;
            let packet_id = p.packet_id.unwrap_or(0);
            if p.qos == QoS::ExactlyOnce {
                let mut st = session.state.borrow_mut();
                if st.incoming_qos2.contains(&packet_id) {
                    // A resend of one we have: acknowledge again only.
                    drop(st);
                    conn.send_ack(AckKind::Rec, packet_id, ReasonCode::Success);
                    return Ok(None);
                }
                let max = usize::from(core.settings.borrow().mqtt.max_inflight);
                if st.incoming_qos2.len() >= max {
                    return Err(End::Protocol(
                        ReasonCode::ReceiveMaximumExceeded,
                        format!("more than {max} QoS 2 publishes unacknowledged"),
                    ));
                }
                st.incoming_qos2.insert(packet_id);
            }
            let allowed = client.acl.as_ref().is_none_or(|a| a.may_publish(&topic));
            let mut retained_mark = 0;
            let code = if allowed {
                let range = {
                    let base = shared.filled().as_ptr() as usize;
                    let at = (p.payload.as_ptr() as usize).saturating_sub(base);
                    at..at + p.payload.len()
                };
                let _ = start;
                let msg = Message {
                    topic,
                    payload: Payload::new(Rc::clone(shared), range),
                    qos: p.qos as u8,
                    retain: p.retain,
                    origin: Origin {
                        listener: Some(Rc::clone(&rt.name)),
                        device: client.device.clone(),
                        session: session.key,
                    },
                    hops: 0,
                    props: if v5 {
                        owned_props(&p.properties, Instant::now())
                    } else {
                        None
                    },
                };
                if msg.retain {
                    retain_everywhere(core, &msg);
                    if p.qos != QoS::AtMostOnce {
                        retained_mark = core.interest_mark();
                    }
                }
                core.publish_read(msg, read_end);
                ReasonCode::Success
            } else {
                core.stats.mqtt_acl_denials.inc();
                if let Some(more) = rt.error_log.allow() {
                    warn!(listener = %rt.name, client_id = %session.client_id, topic = %topic, suppressed = more, "publish refused: not allowed for the device's product");
                }
                ReasonCode::NotAuthorized
            };
            let code = if v5 { code } else { ReasonCode::Success };
            let kind = match p.qos {
                QoS::AtMostOnce => return Ok(None),
                QoS::AtLeastOnce => AckKind::Ack,
                QoS::ExactlyOnce => {
                    if code.is_error() {
                        session.state.borrow_mut().incoming_qos2.remove(&packet_id);
                    }
                    AckKind::Rec
                }
            };
            if retained_mark != 0 {
                return Ok(Some(Step::RetainedAck {
                    mark: retained_mark,
                    kind,
                    packet_id,
                    code,
                }));
            }
            conn.send_ack(kind, packet_id, code);
        }
        Packet::PubAck(a) | Packet::PubComp(a) => {
            session.acknowledged(a.packet_id);
        }
        Packet::PubRec(a) => {
            if a.code.is_error() {
                session.acknowledged(a.packet_id);
            } else if session.received(a.packet_id) {
                conn.send_pubrel(a.packet_id);
            } else {
                conn.send_ack(
                    AckKind::Rel,
                    a.packet_id,
                    ReasonCode::PacketIdentifierNotFound,
                );
            }
        }
        Packet::PubRel(a) => {
            let known = session
                .state
                .borrow_mut()
                .incoming_qos2
                .remove(&a.packet_id);
            let code = if known || !v5 {
                ReasonCode::Success
            } else {
                ReasonCode::PacketIdentifierNotFound
            };
            conn.send_ack(AckKind::Comp, a.packet_id, code);
        }
        Packet::Subscribe(s) => {
            return Ok(Some(Step::SubAck(Box::new(subscribe(
                core, rt, conn, client, &session, &s,
            )))));
        }
        Packet::Unsubscribe(u) => {
            let mut codes = Vec::with_capacity(u.filters.len());
            for filter in &u.filters {
                let entry = session.state.borrow_mut().subs.remove(*filter);
                codes.push(match entry {
                    Some(e) => {
                        unsubscribe_entry(core, filter, &e.handle);
                        ReasonCode::Success
                    }
                    None => ReasonCode::NoSubscriptionExisted,
                });
            }
            conn.send_packet(&Packet::UnsubAck(UnsubAck {
                packet_id: u.packet_id,
                codes,
                properties: Properties::default(),
            }));
        }
        Packet::PingReq => {
            conn.send_packet(&Packet::PingResp);
        }
        Packet::Disconnect(d) => {
            if let Some(expiry) = d.properties.session_expiry_interval {
                if client.connect_expiry == 0 && expiry > 0 {
                    return Err(End::Protocol(
                        ReasonCode::ProtocolError,
                        "session expiry set on DISCONNECT after 0 at CONNECT".into(),
                    ));
                }
                let max = core.settings.borrow().mqtt.max_session_expiry;
                session.state.borrow_mut().expiry = Duration::from_secs(u64::from(expiry)).min(max);
            }
            return Err(End::Disconnected(d.code));
        }
        Packet::Connect(_) => {
            return Err(End::Protocol(
                ReasonCode::ProtocolError,
                "a second CONNECT".into(),
            ));
        }
        Packet::Auth(_) => {
            return Err(End::Protocol(
                ReasonCode::ProtocolError,
                "AUTH without extended authentication".into(),
            ));
        }
        Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => {
            return Err(End::Protocol(
                ReasonCode::ProtocolError,
                "a packet only a server sends".into(),
            ));
        }
    }
    Ok(None)
}

fn subscribe(
    core: &Rc<Core>,
    rt: &Rc<MqttListenerRt>,
    conn: &Rc<MqttConn>,
    client: &Client,
    session: &Rc<Session>,
    s: &shoal_protocols::mqtt::Subscribe<'_>,
) -> PendingSubAck {
    let v5 = conn.version.get() == Version::V5;
    let sub_id = s.properties.subscription_identifiers.first().copied();
    let mut codes = Vec::with_capacity(s.filters.len());
    let mut retained: Vec<Outgoing> = Vec::new();
    let now = Instant::now();
    for (filter, options) in &s.filters {
        let (inner, is_shared) = match split_shared(filter) {
            Some((group, inner)) => {
                if group.is_empty() || group.contains(['+', '#']) {
                    codes.push(ReasonCode::TopicFilterInvalid);
                    continue;
                }
                (inner, true)
            }
            None => (*filter, false),
        };
        if validate_topic_filter(inner).is_err() || (is_shared && options.no_local) {
            codes.push(ReasonCode::TopicFilterInvalid);
            continue;
        }
        if let Some(acl) = &client.acl {
            if !acl.may_subscribe(inner) {
                core.stats.mqtt_acl_denials.inc();
                if let Some(more) = rt.error_log.allow() {
                    warn!(listener = %rt.name, client_id = %session.client_id, filter = %filter, suppressed = more, "subscription refused: not allowed for the device's product");
                }
                codes.push(ReasonCode::NotAuthorized);
                continue;
            }
        }
        let max_subs = core.settings.borrow().mqtt.max_subscriptions as usize;
        let full = {
            let st = session.state.borrow();
            st.subs.len() >= max_subs && !st.subs.contains_key(*filter)
        };
        if full {
            core.stats.mqtt_subscriptions_refused.inc();
            if let Some(more) = rt.error_log.allow() {
                warn!(listener = %rt.name, client_id = %session.client_id, filter = %filter, max_subscriptions = max_subs, suppressed = more, "subscription refused: the session holds max_subscriptions filters");
            }
            codes.push(ReasonCode::QuotaExceeded);
            continue;
        }
        let existed = subscribe_entry(core, session, filter, *options, sub_id);
        codes.push(match options.qos {
            QoS::AtMostOnce => ReasonCode::Success,
            QoS::AtLeastOnce => ReasonCode::GrantedQoS1,
            QoS::ExactlyOnce => ReasonCode::GrantedQoS2,
        });
        let send_retained = !is_shared
            && match options.retain_handling {
                RetainHandling::OnSubscribe => true,
                RetainHandling::OnNewSubscribe => !existed,
                RetainHandling::Never => false,
            };
        if send_retained {
            core.mqtt
                .retained
                .borrow()
                .for_each_match(inner, now, |topic, r| {
                    retained.push(Outgoing {
                        topic: Rc::clone(topic),
                        payload: r.payload.clone(),
                        qos: QoS::from_bits(r.qos.min(options.qos as u8)).unwrap_or_default(),
                        retain: true,
                        props: r.props.clone(),
                        sub_id,
                    });
                });
        }
    }
    let codes = if v5 {
        codes
    } else {
        codes
            .into_iter()
            .map(|c| {
                if c.is_error() {
                    ReasonCode::UnspecifiedError
                } else {
                    c
                }
            })
            .collect()
    };
    let mark = if codes.iter().any(|c| !c.is_error()) {
        core.interest_mark()
    } else {
        0
    };
    PendingSubAck {
        mark,
        packet_id: s.packet_id,
        codes,
        retained,
    }
}

/// The 5.0 properties of a publish (or a will), owned, when it has any;
/// a Message Expiry Interval becomes a deadline from `now`.
pub(super) fn owned_props(p: &Properties<'_>, now: Instant) -> Option<Rc<PublishProps>> {
    let any = p.payload_format_indicator.is_some()
        || p.message_expiry_interval.is_some()
        || p.content_type.is_some()
        || p.response_topic.is_some()
        || p.correlation_data.is_some()
        || !p.user_properties.is_empty();
    any.then(|| {
        Rc::new(PublishProps {
            payload_format_indicator: p.payload_format_indicator,
            expires_at: p
                .message_expiry_interval
                .map(|s| now + Duration::from_secs(u64::from(s))),
            content_type: p.content_type.map(Into::into),
            response_topic: p.response_topic.map(Into::into),
            correlation_data: p.correlation_data.map(Into::into),
            user_properties: p
                .user_properties
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
        })
    })
}
