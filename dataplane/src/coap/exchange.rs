//! One datagram: decoded, deduplicated, and a request served.
//!
//! ```text
//!  decode + check_options ── error ─▶ CoapError::write_answer (RST, 4.xx or nothing)
//!   ├─ ACK / RST ─▶ notify::on_ack / on_reset
//!   ├─ Empty CON (ping) ─▶ RST
//!   └─ request ─▶ Deduplicator ── duplicate ─▶ the recorded answer again
//!                  └─ new ─▶ route ─▶ auth::admit ─▶ /devices/{id}/up | /devices/{id}/down | /.well-known/core
//!  every answer to a CON is piggybacked on the ACK and recorded for its duplicates;
//!  a NON is answered with a NON
//! ```
//!
//! Resources:
//! - `POST /devices/{id}/up[/{subtopic}…]`: the payload (the whole body
//!   of a Block1 transfer, at most `max_frame_bytes`) is published on
//!   `devices/{id}/up[/…]`; 2.04 (2.31 for each block but the last; 4.13
//!   with Size1 when too large).
//! - `GET /devices/{id}/down`: the latest downlink payload this core saw
//!   for the device (2.05, empty when none came yet: the resource exists
//!   for every device, it just has no representation yet); with Observe 0
//!   the peer and token become an observer, Observe 1 or a GET without
//!   Observe with the same token end the observation. Bodies larger than
//!   a block go out Block2, with an ETag per payload.
//! - `GET /.well-known/core`: the two resources as templates, in link
//!   format (`</devices/{id}/up>`, `</devices/{id}/down>;obs`), filtered by
//!   the query as RFC 6690 §4.1 says.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

use shoal_protocols::coap::{
    block2_response, decode, encode_link_format, encode_reset, Block1Outcome, BlockOption,
    CoapError, Code, ContentFormat, Header, Link, Message, MessageBuilder, MessageType,
    ObserveRequest, OptionNumber, Seen, MAX_SZX,
};
use shoal_protocols::config::validate_device_id;
use tracing::warn;

use super::auth::{admit, Admission};
use super::session::{session_for, CoapSession, Latest};
use super::{notify, CoapListenerRt};
use crate::core::Core;
use crate::message::{Message as BusMessage, Origin};
use crate::pool::{Payload, PoolBuf};

/// The resource a request names.
#[derive(Debug)]
pub(super) enum Target<'m> {
    WellKnown,
    /// `/devices/{id}/up`, `topic` with the subtopic levels when there are
    /// any.
    Up {
        device: &'m str,
        topic: Option<String>,
    },
    Down {
        device: &'m str,
    },
}

/// A datagram larger than the listener takes: a request is answered 4.13
/// with the largest body (Size1) and block size (Block1) it would take.
pub(super) fn oversized(core: &Core, rt: &CoapListenerRt, peer: SocketAddr, bytes: &[u8]) {
    core.stats.frame_errors.inc();
    core.coap.errors.inc();
    if let Some(more) = rt.bad_log.allow() {
        warn!(listener = %rt.name, %peer, max_bytes = rt.datagram_bytes, suppressed = more, "coap datagram too large; send the body block-wise (Block1)");
    }
    let header = match decode(bytes) {
        Ok(message) => Some(message.header()),
        Err(e) => e.header().copied(),
    };
    let Some(header) = header.filter(|h| h.code.is_request()) else {
        return;
    };
    if !matches!(
        header.mtype,
        MessageType::Confirmable | MessageType::NonConfirmable
    ) {
        return;
    }
    let mut answer =
        MessageBuilder::response(&header, Code::REQUEST_ENTITY_TOO_LARGE, rt.next_non_id());
    let limit = rt.spec.config.max_frame_bytes;
    let _ = answer.option_uint(OptionNumber::SIZE1, limit);
    if let Some(block) = BlockOption::new(0, false, MAX_SZX) {
        let _ = answer.block(OptionNumber::BLOCK1, block);
    }
    respond(core, rt, peer, &header, &answer);
}

/// Handles one datagram held in `buf`.
pub(super) fn datagram(
    core: &Rc<Core>,
    rt: &Rc<CoapListenerRt>,
    peer: SocketAddr,
    buf: &Rc<PoolBuf>,
    read_end: Option<Instant>,
) {
    let bytes = buf.filled();
    let message = match decode(bytes).and_then(|m| m.check_options().map(|()| m)) {
        Ok(message) => message,
        Err(e) => {
            core.stats.frame_errors.inc();
            answer_error(core, rt, peer, &e);
            return;
        }
    };
    match message.mtype {
        MessageType::Acknowledgement => {
            notify::on_ack(core, rt, peer, message.message_id);
            return;
        }
        MessageType::Reset => {
            notify::on_reset(core, rt, peer, message.message_id);
            return;
        }
        MessageType::Confirmable | MessageType::NonConfirmable => {}
    }
    if message.is_empty() || !message.is_request() {
        // A ping is answered with an RST (RFC 7252 §4.3); so is a CON
        // response (Shoal sends no requests); an Empty NON is ignored.
        if message.is_ping() {
            notify::on_ping(rt, peer);
        } else {
            reject(core, rt, peer, "not a request");
        }
        if message.mtype == MessageType::Confirmable {
            let mut out = rt.take_scratch();
            encode_reset(&mut out, message.message_id);
            rt.send(core, peer, &out);
            rt.put_scratch(out);
        }
        return;
    }
    let now = rt.now_ms();
    let duplicate = {
        let mut exchanges = rt.exchanges.borrow_mut();
        match exchanges
            .dedup
            .check(now, &peer, message.mtype, message.message_id)
        {
            Seen::New => false,
            Seen::Duplicate { response } => {
                if let Some(answer) = response {
                    rt.send(core, peer, answer);
                }
                true
            }
        }
    };
    if duplicate {
        core.coap.duplicates.inc();
        return;
    }
    core.coap.requests.inc();
    handle_request(core, rt, peer, &message, Some(buf), read_end, false);
}

/// Serves a new request. `buf` holds its datagram when it still is in the
/// pool buffer it was read into (its payload is then published without a
/// copy); `admitted`: its secret was checked already.
pub(super) fn handle_request(
    core: &Rc<Core>,
    rt: &Rc<CoapListenerRt>,
    peer: SocketAddr,
    request: &Message<'_>,
    buf: Option<&Rc<PoolBuf>>,
    read_end: Option<Instant>,
    admitted: bool,
) {
    let header = request.header();
    if request.has_option(OptionNumber::PROXY_URI) || request.has_option(OptionNumber::PROXY_SCHEME)
    {
        respond_code(
            core,
            rt,
            peer,
            &header,
            Code::PROXYING_NOT_SUPPORTED,
            "not a proxy",
        );
        return;
    }
    let target = match target(request) {
        Ok(Some(target)) => target,
        Ok(None) => {
            respond_code(core, rt, peer, &header, Code::NOT_FOUND, "no such resource");
            return;
        }
        Err(Refusal::Error(e)) => {
            answer_error(core, rt, peer, &e);
            return;
        }
        Err(Refusal::Code(code, text)) => {
            respond_code(core, rt, peer, &header, code, text);
            return;
        }
    };
    let device = match &target {
        Target::WellKnown => {
            well_known(core, rt, peer, request);
            return;
        }
        Target::Up { device, .. } | Target::Down { device } => *device,
    };
    if let Err(why) = validate_device_id(device) {
        respond_code(core, rt, peer, &header, Code::BAD_REQUEST, &why);
        return;
    }
    if !admitted {
        let datagram = buf.map_or(&[][..], |b| b.filled());
        match admit(core, rt, peer, device, request, datagram) {
            Admission::Admitted => {}
            Admission::Refused | Admission::Pending => return,
        }
    }
    let Some(session) = session_for(core, rt, device) else {
        respond_code(
            core,
            rt,
            peer,
            &header,
            Code::SERVICE_UNAVAILABLE,
            "the listener is at max_connections",
        );
        return;
    };
    match target {
        Target::Up { topic, .. } => {
            post_up(core, rt, peer, request, &session, topic, buf, read_end)
        }
        Target::Down { .. } => get_down(core, rt, peer, request, &session),
        Target::WellKnown => {}
    }
}

/// Why a request names no resource it may use.
pub(super) enum Refusal {
    Error(CoapError),
    Code(Code, &'static str),
}

/// The resource of the request's path and method; `None`: no such
/// resource.
pub(super) fn target<'m>(request: &Message<'m>) -> Result<Option<Target<'m>>, Refusal> {
    let utf8 = |segment: &'m [u8]| {
        std::str::from_utf8(segment).map_err(|_| {
            Refusal::Error(CoapError::InvalidUtf8 {
                header: request.header(),
                number: OptionNumber::URI_PATH,
            })
        })
    };
    let method = |allowed: Code, text: &'static str| {
        if request.code == allowed {
            Ok(())
        } else {
            Err(Refusal::Code(Code::METHOD_NOT_ALLOWED, text))
        }
    };
    let mut segments = request.uri_path();
    match segments.next() {
        Some(b".well-known") if request.uri_path_is(&[".well-known", "core"]) => {
            method(Code::GET, "use GET")?;
            return Ok(Some(Target::WellKnown));
        }
        Some(b"devices") => {}
        _ => return Ok(None),
    }
    let (Some(device), Some(resource)) = (segments.next(), segments.next()) else {
        return Ok(None);
    };
    let device = utf8(device)?;
    match resource {
        b"up" => {
            method(Code::POST, "use POST to publish")?;
            let mut topic: Option<String> = None;
            for level in segments {
                let level = utf8(level)?;
                if level.is_empty() || level.contains(['+', '#', '\0']) {
                    return Err(Refusal::Code(
                        Code::BAD_REQUEST,
                        "subtopic levels must be non-empty and hold no '+', '#' or NUL",
                    ));
                }
                let topic = topic.get_or_insert_with(|| format!("devices/{device}/up"));
                topic.push('/');
                topic.push_str(level);
            }
            Ok(Some(Target::Up { device, topic }))
        }
        b"down" if segments.next().is_none() => {
            method(Code::GET, "use GET (with Observe to follow it)")?;
            Ok(Some(Target::Down { device }))
        }
        _ => Ok(None),
    }
}

/// `POST /devices/{id}/up[/…]`: a block, or the whole body, published.
#[allow(clippy::too_many_arguments)]
fn post_up(
    core: &Rc<Core>,
    rt: &Rc<CoapListenerRt>,
    peer: SocketAddr,
    request: &Message<'_>,
    session: &CoapSession,
    topic: Option<String>,
    buf: Option<&Rc<PoolBuf>>,
    read_end: Option<Instant>,
) {
    let header = request.header();
    let fed = rt
        .exchanges
        .borrow_mut()
        .bodies
        .feed(rt.now_ms(), &peer, request);
    let (payload, block) = match fed {
        Err(e) => {
            answer_error(core, rt, peer, &e);
            return;
        }
        Ok(Block1Outcome::Continue { block }) => {
            let mut answer = MessageBuilder::response(&header, Code::CONTINUE, rt.next_non_id());
            let _ = answer.block(OptionNumber::BLOCK1, block);
            respond(core, rt, peer, &header, &answer);
            return;
        }
        Ok(Block1Outcome::Whole { block }) => (in_place(core, request.payload, buf), block),
        Ok(Block1Outcome::Complete { body, block }) => (copied(core, &body), Some(block)),
    };
    let topic: Rc<str> = match topic {
        Some(topic) => topic.into(),
        None => Rc::clone(&session.up_topic),
    };
    core.coap.publishes.inc();
    core.publish_read(
        BusMessage {
            topic,
            payload,
            qos: 0,
            retain: false,
            origin: Origin {
                listener: Some(Rc::clone(&rt.name)),
                device: Some(Rc::clone(&session.device)),
                session: 0,
            },
            hops: 0,
            props: None,
        },
        read_end,
    );
    let mut answer = MessageBuilder::response(&header, Code::CHANGED, rt.next_non_id());
    if let Some(block) = block {
        let _ = answer.block(OptionNumber::BLOCK1, block);
    }
    respond(core, rt, peer, &header, &answer);
}

/// The payload as a slice of the pool buffer it was read into, or a copy
/// when it is not in one.
fn in_place(core: &Core, payload: &[u8], buf: Option<&Rc<PoolBuf>>) -> Payload {
    let Some(buf) = buf else {
        return copied(core, payload);
    };
    let base = buf.filled().as_ptr() as usize;
    let start = (payload.as_ptr() as usize).wrapping_sub(base);
    if start
        .checked_add(payload.len())
        .is_some_and(|end| end <= buf.len())
    {
        Payload::new(Rc::clone(buf), start..start + payload.len())
    } else {
        copied(core, payload)
    }
}

/// A copy of `bytes` in a pool buffer when one is free, else on the heap.
fn copied(core: &Core, bytes: &[u8]) -> Payload {
    core.pool
        .try_acquire(bytes.len().max(1))
        .and_then(|mut buf| buf.extend_from_slice(bytes).then_some(buf))
        .map_or_else(|| Payload::heap(bytes), Payload::whole)
}

/// `GET /devices/{id}/down`: observe, stop observing, or read the latest
/// downlink payload (a block of it).
fn get_down(
    core: &Rc<Core>,
    rt: &Rc<CoapListenerRt>,
    peer: SocketAddr,
    request: &Message<'_>,
    session: &CoapSession,
) {
    let block2 = match request.block2() {
        Ok(block2) => block2,
        Err(e) => {
            answer_error(core, rt, peer, &e);
            return;
        }
    };
    // A later block of a body is fetched without touching the observation.
    let fetch = block2.is_some_and(|b| b.num() > 0);
    let observe = if fetch {
        None
    } else {
        request.observe_request()
    };
    let token = request.token;
    let (observe_value, body) = match observe {
        Some(ObserveRequest::Register) => {
            let szx = block2.map_or(MAX_SZX, |b| b.szx().min(MAX_SZX));
            match notify::register(core, rt, peer, token, szx, session) {
                Ok(value) => (Some(value), session.latest()),
                Err(e) => {
                    core.coap.drops.inc();
                    if let Some(more) = rt.notify_log.allow() {
                        warn!(listener = %rt.name, %peer, device = %session.device, suppressed = more, "coap observer refused ({e}); answered without Observe");
                    }
                    (None, session.latest())
                }
            }
        }
        Some(ObserveRequest::Deregister) => {
            notify::deregister(core, rt, peer, token);
            (None, session.latest())
        }
        None if fetch => (
            None,
            notify::transfer_body(rt, peer, &session.device).or_else(|| session.latest()),
        ),
        None => {
            notify::deregister(core, rt, peer, token);
            (None, session.latest())
        }
    };
    let served = respond_body(core, rt, peer, request, observe_value, body.as_ref());
    if fetch && served.is_some_and(|b| !b.more()) {
        notify::transfer_done(core, rt, peer);
    }
}

/// Answers 2.05 with `latest` (empty without one): whole, or the block the
/// request asks for (Block2, Size2 with block 0), with its ETag. The
/// Block2 option sent, if any.
fn respond_body(
    core: &Core,
    rt: &CoapListenerRt,
    peer: SocketAddr,
    request: &Message<'_>,
    observe: Option<u32>,
    latest: Option<&Latest>,
) -> Option<BlockOption> {
    let header = request.header();
    let body = latest.map_or(&[][..], |l| l.payload.as_slice());
    let slice = match block2_response(request, body, MAX_SZX) {
        Ok(slice) => slice,
        Err(e) => {
            answer_error(core, rt, peer, &e);
            return None;
        }
    };
    let etag = latest.map(|l| l.etag.to_be_bytes());
    let mut answer = MessageBuilder::response(&header, Code::CONTENT, rt.next_non_id());
    if let Some(value) = observe {
        let _ = answer.observe(value);
    }
    if let Some(etag) = &etag {
        let _ = answer.option(OptionNumber::ETAG, etag);
    }
    if let Some(block) = slice.block {
        let _ = answer.block(OptionNumber::BLOCK2, block);
        if block.num() == 0 {
            let size = u32::try_from(body.len()).unwrap_or(u32::MAX);
            let _ = answer.option_uint(OptionNumber::SIZE2, size);
        }
    }
    answer.payload(slice.payload);
    respond(core, rt, peer, &header, &answer);
    slice.block
}

/// `GET /.well-known/core`.
fn well_known(core: &Core, rt: &CoapListenerRt, peer: SocketAddr, request: &Message<'_>) {
    const LINKS: [Link<'static>; 2] = [
        Link {
            target: "/devices/{id}/up",
            rt: Some("shoal.device.up"),
            interface: None,
            ct: None,
            obs: false,
            title: Some("POST: published on devices/{id}/up[/subtopic]"),
        },
        Link {
            target: "/devices/{id}/down",
            rt: Some("shoal.device.down"),
            interface: None,
            ct: None,
            obs: true,
            title: Some("GET with Observe: messages on devices/{id}/down[/...]"),
        },
    ];
    let header = request.header();
    let mut body = Vec::with_capacity(256);
    let wanted = LINKS.iter().filter(|link| {
        request
            .uri_query()
            .filter(|item| item.name != b"secret")
            .all(|item| link.matches(&item))
    });
    encode_link_format(&mut body, wanted);
    let slice = match block2_response(request, &body, MAX_SZX) {
        Ok(slice) => slice,
        Err(e) => {
            answer_error(core, rt, peer, &e);
            return;
        }
    };
    let mut answer = MessageBuilder::response(&header, Code::CONTENT, rt.next_non_id());
    let _ = answer.content_format(ContentFormat::LINK_FORMAT);
    if let Some(block) = slice.block {
        let _ = answer.block(OptionNumber::BLOCK2, block);
    }
    answer.payload(slice.payload);
    respond(core, rt, peer, &header, &answer);
}

/// Sends an answer to a request; one to a CON is recorded for its
/// duplicates.
fn respond(
    core: &Core,
    rt: &CoapListenerRt,
    peer: SocketAddr,
    request: &Header,
    answer: &MessageBuilder<'_>,
) {
    let mut out = rt.take_scratch();
    answer.encode(&mut out);
    send_recorded(core, rt, peer, request, &out);
    rt.put_scratch(out);
}

fn send_recorded(core: &Core, rt: &CoapListenerRt, peer: SocketAddr, request: &Header, out: &[u8]) {
    rt.send(core, peer, out);
    if request.mtype == MessageType::Confirmable {
        rt.exchanges
            .borrow_mut()
            .dedup
            .record_response(&peer, request.message_id, out);
    }
}

/// Answers a refused request with `code` and a diagnostic payload;
/// counted and logged at a limited rate.
pub(super) fn respond_code(
    core: &Core,
    rt: &CoapListenerRt,
    peer: SocketAddr,
    request: &Header,
    code: Code,
    diagnostic: &str,
) {
    core.coap.errors.inc();
    if let Some(more) = rt.bad_log.allow() {
        warn!(listener = %rt.name, %peer, %code, suppressed = more, "coap request refused: {diagnostic}");
    }
    let mut answer = MessageBuilder::response(request, code, rt.next_non_id());
    answer.payload(diagnostic.as_bytes());
    respond(core, rt, peer, request, &answer);
}

/// Answers (or not) a message the codec refused, as RFC 7252 wants it;
/// counted and logged at a limited rate.
fn answer_error(core: &Core, rt: &CoapListenerRt, peer: SocketAddr, error: &CoapError) {
    core.coap.errors.inc();
    if let Some(more) = rt.bad_log.allow() {
        warn!(listener = %rt.name, %peer, suppressed = more, "coap message refused: {error}");
    }
    let mut out = rt.take_scratch();
    if error.write_answer(&mut out, rt.next_non_id()) {
        match error.header() {
            Some(header) => send_recorded(core, rt, peer, header, &out),
            None => {
                rt.send(core, peer, &out);
            }
        }
    }
    rt.put_scratch(out);
}

/// Counts and logs a message that is not a request where one was due.
fn reject(core: &Core, rt: &CoapListenerRt, peer: SocketAddr, why: &str) {
    core.coap.errors.inc();
    if let Some(more) = rt.bad_log.allow() {
        warn!(listener = %rt.name, %peer, suppressed = more, "coap message rejected: {why}");
    }
}
