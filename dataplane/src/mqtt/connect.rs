//! CONNECT: the request taken out of the read buffer, authentication
//! against the registry, the will's ACL check, the client id (given or
//! assigned), the session taken over from this core or claimed from the
//! others, and the CONNACK, or a refusing CONNACK for a CONNECT that is bad
//! or not allowed.

use std::rc::Rc;
use std::time::{Duration, Instant};

use shoal_protocols::config::{validate_device_id, ListenerAuth};
use shoal_protocols::control::SecretDigest;
use shoal_protocols::mqtt::{
    read_fixed_header, ConnAck, Decoded, MqttError, Packet, Properties, ReasonCode, Version,
};
use shoal_protocols::topic::validate_topic_name;
use tracing::debug;

use super::broker::unpack;
use super::conn::{keepalive_grace, MqttConn};
use super::packets::owned_props;
use super::session::Will;
use super::task::{Client, End};
use super::MqttListenerRt;
use crate::auth::{authenticate, AuthFailure, Credentials};
use crate::core::{CloseReason, ConnId, Core};
use crate::pool::Payload;

/// A CONNECT, owned, waiting for the registry and the other cores.
#[derive(Debug)]
pub(super) struct ConnectRequest {
    version: Version,
    clean_start: bool,
    keep_alive_secs: u16,
    client_id: String,
    username: Option<String>,
    password: Option<Vec<u8>>,
    will: Option<Will>,
    session_expiry: u32,
    receive_maximum: u16,
    max_packet_size: u32,
    auth_method: bool,
}

/// The CONNECT, owned, out of the read buffer; a will topic that is not a
/// valid topic name ends the connection.
pub(super) fn connect_request(
    c: &shoal_protocols::mqtt::Connect<'_>,
) -> Result<ConnectRequest, End> {
    let now = Instant::now();
    let will = match &c.will {
        Some(w) => {
            validate_topic_name(w.topic).map_err(|e| {
                End::Protocol(ReasonCode::TopicNameInvalid, format!("will topic: {e}"))
            })?;
            Some(Will {
                topic: w.topic.into(),
                payload: Payload::heap(w.payload),
                qos: w.qos as u8,
                retain: w.retain,
                props: owned_props(&w.properties, now),
                delay: Duration::from_secs(u64::from(
                    w.properties.will_delay_interval.unwrap_or(0),
                )),
            })
        }
        None => None,
    };
    Ok(ConnectRequest {
        version: c.version,
        clean_start: c.clean_start,
        keep_alive_secs: c.keep_alive_secs,
        client_id: c.client_id.to_owned(),
        username: c.username.map(str::to_owned),
        password: c.password.map(<[u8]>::to_vec),
        will,
        session_expiry: c.properties.session_expiry_interval.unwrap_or(0),
        receive_maximum: c.properties.receive_maximum.unwrap_or(u16::MAX),
        max_packet_size: c.properties.maximum_packet_size.unwrap_or(0),
        auth_method: c.properties.authentication_method.is_some(),
    })
}

/// Sends a refusing CONNACK and ends.
fn refuse(conn: &MqttConn, code: ReasonCode, why: impl Into<String>) -> End {
    conn.send_packet(&Packet::ConnAck(ConnAck {
        session_present: false,
        code,
        properties: Properties::default(),
    }));
    End::Refused(code, why.into())
}

/// Authenticates, takes the session over from wherever it is, answers
/// CONNACK.
pub(super) async fn connect(
    core: &Rc<Core>,
    rt: &Rc<MqttListenerRt>,
    conn: &Rc<MqttConn>,
    id: ConnId,
    client: &mut Client,
    req: ConnectRequest,
) -> Result<(), End> {
    conn.version.set(req.version);
    conn.max_packet_out.set(req.max_packet_size);
    if req.auth_method {
        return Err(refuse(
            conn,
            ReasonCode::BadAuthenticationMethod,
            "extended authentication is not supported",
        ));
    }
    // Who is it?
    if rt.auth == ListenerAuth::DeviceSecret {
        let (Some(user), Some(password)) = (&req.username, &req.password) else {
            core.stats.auth_failures.inc();
            return Err(refuse(conn, ReasonCode::BadUserNameOrPassword, "device authentication failed: user name (device id) and password (secret) are required"));
        };
        if let Err(e) = validate_device_id(user) {
            core.stats.auth_failures.inc();
            return Err(refuse(
                conn,
                ReasonCode::BadUserNameOrPassword,
                format!("device authentication failed: {e}"),
            ));
        }
        let device: Rc<str> = user.as_str().into();
        let credentials = Credentials {
            device: Rc::clone(&device),
            digest: SecretDigest::of(user, password),
        };
        match authenticate(core, &credentials).await {
            Ok(product) => {
                client.acl = Some(core.mqtt.acl().for_device(&product, &device));
                client.device = Some(device);
            }
            Err(failure) => {
                core.stats.auth_failures.inc();
                let code = match failure {
                    AuthFailure::Busy | AuthFailure::NoAnswer => ReasonCode::ServerBusy,
                    _ => ReasonCode::BadUserNameOrPassword,
                };
                return Err(refuse(
                    conn,
                    code,
                    format!("device {device:?} authentication failed: {failure}"),
                ));
            }
        }
    }
    let mut will = req.will;
    if let (Some(w), Some(acl)) = (&will, &client.acl) {
        if !acl.may_publish(&w.topic) {
            core.stats.mqtt_acl_denials.inc();
            return Err(refuse(
                conn,
                ReasonCode::NotAuthorized,
                format!("will topic {:?} is not allowed", w.topic),
            ));
        }
    }
    // The client id: given, or assigned.
    let mut assigned = None;
    let client_id: Rc<str> = if req.client_id.is_empty() {
        if req.version == Version::V311 && !req.clean_start {
            return Err(refuse(
                conn,
                ReasonCode::ClientIdentifierNotValid,
                "an empty client id needs a clean session",
            ));
        }
        let generated = format!("shoal-{}-{}", core.index, core.mqtt.assign_id());
        assigned = Some(generated.clone());
        generated.into()
    } else {
        req.client_id.as_str().into()
    };
    let settings = core.settings.borrow().mqtt.clone();
    let max_expiry = u32::try_from(settings.max_session_expiry.as_secs()).unwrap_or(u32::MAX);
    let expiry_secs = match req.version {
        Version::V5 => req.session_expiry.min(max_expiry),
        Version::V311 if req.clean_start => 0,
        Version::V311 => max_expiry,
    };
    // Take the session from this core and from the others.
    let local = core.mqtt.take_local(core, &client_id, req.clean_start);
    let remote = core
        .mqtt
        .claim_remote(core, &client_id, req.clean_start)
        .await;
    if conn.close.borrow().is_some() {
        return Err(End::Closed(
            conn.close
                .borrow_mut()
                .take()
                .unwrap_or(CloseReason::TakenOver),
        ));
    }
    let (session, present) = match (local, remote) {
        (Some(s), _) => {
            core.mqtt.reinsert(&s);
            (s, true)
        }
        (None, Some(transfer)) => {
            let s = core
                .mqtt
                .new_session(core, Rc::clone(&client_id), req.version);
            unpack(core, &s, *transfer);
            (s, true)
        }
        (None, None) => (
            core.mqtt
                .new_session(core, Rc::clone(&client_id), req.version),
            false,
        ),
    };
    core.mqtt.mark_online(&session);
    {
        let mut st = session.state.borrow_mut();
        st.version = req.version;
        st.conn = Some(Rc::clone(conn));
        st.will_due = None;
        st.expiry = Duration::from_secs(u64::from(expiry_secs));
        st.send_window = usize::from(req.receive_maximum.min(settings.max_inflight).max(1));
    }
    client.session = Some(Rc::clone(&session));
    client.connect_expiry = expiry_secs;
    client.grace = keepalive_grace(req.keep_alive_secs);
    // The alias table is made when a client first sets an alias.
    client.alias_max = settings.max_topic_aliases;
    client.will = will.take();
    let mut properties = Properties::default();
    if req.version == Version::V5 {
        properties.receive_maximum = Some(settings.max_inflight);
        properties.maximum_packet_size = Some(conn.max_packet_in.get());
        properties.topic_alias_maximum = Some(settings.max_topic_aliases);
        properties.retain_available = Some(1);
        properties.shared_subscription_available = Some(1);
        properties.wildcard_subscription_available = Some(1);
        properties.subscription_identifier_available = Some(1);
        properties.assigned_client_identifier = assigned.as_deref();
        if req.session_expiry != expiry_secs {
            properties.session_expiry_interval = Some(expiry_secs);
        }
        properties.maximum_qos = None;
    }
    conn.send_packet(&Packet::ConnAck(ConnAck {
        session_present: present,
        code: ReasonCode::Success,
        properties,
    }));
    if let Some(device) = &client.device {
        core.device_online(id, Rc::clone(device));
    }
    debug!(listener = %rt.name, peer = %conn.peer, client_id = %client_id, session_present = present, "mqtt client connected");
    session.resend_inflight();
    Ok(())
}

/// A CONNECT the codec refused: the client still gets a CONNACK saying
/// why, in its own version when its protocol level is readable (the 3.1.1
/// form otherwise).
pub(super) fn refuse_connect_error(conn: &MqttConn, bytes: &[u8], e: &MqttError) {
    let code = e.reason_code();
    // CONNECT: fixed header, then "MQTT" (2-byte length + 4 bytes), then
    // the protocol level.
    let level = match read_fixed_header(bytes, u32::MAX) {
        Ok(Decoded::Frame { frame, .. }) => bytes.get(frame.header_len + 6).copied(),
        _ => None,
    };
    let version = match level {
        Some(5) if !matches!(e, MqttError::UnsupportedProtocol { .. }) => Version::V5,
        _ => Version::V311,
    };
    conn.version.set(version);
    conn.send_packet(&Packet::ConnAck(ConnAck {
        session_present: false,
        code,
        properties: Properties::default(),
    }));
}
