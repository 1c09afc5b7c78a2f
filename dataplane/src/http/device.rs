//! The device API of HTTP listeners.
//!
//! - `POST /v1/devices/{id}/messages[/{subtopic}]`: the body (up to the
//!   listener's `max_frame_bytes`, `Content-Length` or chunked) is published
//!   on `devices/{id}/up[/{subtopic}]`; answered 202 with the topic.
//! - `GET /v1/devices/{id}/messages?wait=30s&max=10`: the messages sent to
//!   `devices/{id}/down[/…]` since the last poll, waiting up to `wait`
//!   (at most `max_poll_wait`) for one; 200 with
//!   `{"messages":[{"topic":…,"payload":…}]}` (`payload_base64` instead of
//!   `payload` for a payload that is not UTF-8), or 204 when none came.
//!
//! Credentials: `Authorization: Bearer {secret}`, or Basic with the device
//! id as user name and the secret as password. On `device_secret`
//! listeners they are required and checked against the registry (once per
//! connection for the same device and secret); on `none` listeners any
//! device id is taken as given.

use std::rc::Rc;
use std::time::{Duration, Instant};

use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};
use futures_lite::AsyncWriteExt;
use glommio::net::TcpStream;
use shoal_protocols::config::{validate_device_id, ListenerAuth};
use shoal_protocols::control::SecretDigest;
use shoal_protocols::http1::{Body, ChunkedDecoder, RequestHead};

use super::json;
use super::mailbox::{self, PollRefused};
use shoal_protocols::websocket::{check_upgrade, write_accept};

use super::{
    handshake_refusal, log_refusal, parse_wait, percent_decode, query_param, read_more, HttpConn,
    HttpListenerRt, ReadStop, Response, Session,
};
use crate::auth::{authenticate, AuthFailure, Credentials};
use crate::core::Core;
use crate::message::{Message, Origin};
use crate::pool::Payload;

/// The prefix of the device API.
const PREFIX: &str = "/v1/devices/";
/// Most messages one poll answers with.
const MAX_BATCH: usize = 100;
/// Messages one poll answers with when it does not say.
const DEFAULT_BATCH: usize = 10;
/// `wait` when a poll does not say.
const DEFAULT_WAIT: Duration = Duration::from_secs(30);

/// A device proven on this connection: later requests with the same
/// credentials are not checked again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Proven {
    device: Rc<str>,
    digest: SecretDigest,
}

/// What the device asks.
#[derive(Debug)]
enum Kind {
    Publish {
        topic: String,
        body: Body,
        expect_continue: bool,
    },
    Poll {
        wait: Duration,
        max: usize,
    },
    /// A WebSocket upgrade; `accept` is the 101 answer to write.
    Socket {
        accept: Vec<u8>,
    },
}

/// A device API request, its head taken apart.
#[derive(Debug)]
pub(crate) struct Request {
    device: Rc<str>,
    kind: Kind,
    /// `Err`: the Authorization header could not be read.
    credentials: Result<Option<Credentials>, &'static str>,
    pub(crate) keep_alive: bool,
}

/// `None` when the path is not the device API's; else the request, or the
/// answer that refuses it.
pub(crate) fn parse(
    rt: &HttpListenerRt,
    head: &RequestHead<'_>,
) -> Option<Result<Request, Response>> {
    let rest = head.path_only().strip_prefix(PREFIX)?;
    Some(parse_device(rt, head, rest))
}

fn parse_device(
    rt: &HttpListenerRt,
    head: &RequestHead<'_>,
    rest: &str,
) -> Result<Request, Response> {
    let bad = |message: &str| Response::error(400, message);
    let (raw_id, rest) = rest
        .split_once('/')
        .ok_or_else(|| Response::error(404, "no such resource"))?;
    let device = percent_decode(raw_id)
        .ok_or_else(|| bad("the device id is not valid percent-encoded UTF-8"))?;
    validate_device_id(&device).map_err(|e| bad(&format!("device id: {e}")))?;
    let (resource, subtopic) = match rest.split_once('/') {
        Some((resource, subtopic)) => (resource, Some(subtopic)),
        None => (rest, None),
    };
    let keep_alive = head.keep_alive();
    if resource == "ws" && subtopic.is_none() {
        if head.method != "GET" {
            return Err(
                Response::error(405, "a device's WebSocket is opened with GET")
                    .header("Allow", "GET"),
            );
        }
        let upgrade = check_upgrade(head).map_err(|e| handshake_refusal(&e))?;
        let mut accept = Vec::with_capacity(160);
        write_accept(&mut accept, &upgrade, None);
        let device: Rc<str> = device.into();
        let credentials = match credentials(head, &device) {
            Ok(None) => query_secret(head, &device),
            other => other,
        };
        return Ok(Request {
            device,
            kind: Kind::Socket { accept },
            credentials,
            keep_alive: false,
        });
    }
    if resource != "messages" {
        return Err(Response::error(404, "no such resource"));
    }
    let kind = match head.method {
        "POST" => {
            let mut topic = format!("devices/{device}/up");
            if let Some(subtopic) = subtopic {
                for level in subtopic.split('/') {
                    let level = percent_decode(level)
                        .ok_or_else(|| bad("the subtopic is not valid percent-encoded UTF-8"))?;
                    if level.is_empty() || level.contains(['+', '#', '\0']) {
                        return Err(bad(
                            "subtopic levels must be non-empty and hold no '+', '#' or NUL",
                        ));
                    }
                    topic.push('/');
                    topic.push_str(&level);
                }
            }
            let max_body = u64::from(rt.spec.config.max_frame_bytes);
            let body = head
                .body(max_body)
                .map_err(|e| Response::error(e.status(), &e.to_string()).closing())?;
            let expect_continue = head
                .header("expect")
                .is_some_and(|v| v.eq_ignore_ascii_case(b"100-continue"));
            Kind::Publish {
                topic,
                body,
                expect_continue,
            }
        }
        "GET" if subtopic.is_none() => {
            let query = head.query();
            let wait = match query_param(query, "wait") {
                Some(text) => parse_wait(&text)
                    .ok_or_else(|| bad("wait must be a duration such as 30s or 500ms"))?,
                None => DEFAULT_WAIT,
            };
            let max = match query_param(query, "max") {
                Some(text) => match text.parse::<usize>() {
                    Ok(n) if (1..=MAX_BATCH).contains(&n) => n,
                    _ => return Err(bad(&format!("max must be between 1 and {MAX_BATCH}"))),
                },
                None => DEFAULT_BATCH,
            };
            Kind::Poll { wait, max }
        }
        "GET" => {
            return Err(Response::error(
                404,
                "downlink messages are polled at /v1/devices/{id}/messages",
            ))
        }
        _ => {
            let allow = if subtopic.is_some() {
                "POST"
            } else {
                "GET, POST"
            };
            return Err(
                Response::error(405, "use POST to publish, GET to poll").header("Allow", allow)
            );
        }
    };
    let device: Rc<str> = device.into();
    let credentials = credentials(head, &device);
    Ok(Request {
        device,
        kind,
        credentials,
        keep_alive,
    })
}

/// The credentials of the Authorization header, if any.
fn credentials(head: &RequestHead<'_>, device: &str) -> Result<Option<Credentials>, &'static str> {
    let Some(value) = head.header("authorization") else {
        return Ok(None);
    };
    let value = std::str::from_utf8(value).map_err(|_| "the Authorization header is not UTF-8")?;
    let (scheme, token) = value
        .trim()
        .split_once(' ')
        .ok_or("the Authorization header has no scheme")?;
    let token = token.trim();
    let secret = if scheme.eq_ignore_ascii_case("bearer") {
        token.to_owned()
    } else if scheme.eq_ignore_ascii_case("basic") {
        let decoded = BASE64
            .decode(token)
            .map_err(|_| "the Basic credentials are not base64")?;
        let decoded =
            String::from_utf8(decoded).map_err(|_| "the Basic credentials are not UTF-8")?;
        let (user, password) = decoded
            .split_once(':')
            .ok_or("the Basic credentials have no ':'")?;
        if user != device {
            return Err("the Basic user name must be the device id of the path");
        }
        password.to_owned()
    } else {
        return Err("use the Bearer or Basic scheme");
    };
    if secret.is_empty() {
        return Err("the secret is empty");
    }
    Ok(Some(Credentials {
        device: device.into(),
        digest: SecretDigest::of(device, secret.as_bytes()),
    }))
}

/// The secret of a `?secret=` query: browsers cannot set headers on a
/// WebSocket, so a device's socket may carry it there.
fn query_secret(head: &RequestHead<'_>, device: &str) -> Result<Option<Credentials>, &'static str> {
    match query_param(head.query(), "secret") {
        None => Ok(None),
        Some(secret) if secret.is_empty() => Err("the secret is empty"),
        Some(secret) => Ok(Some(Credentials {
            device: device.into(),
            digest: SecretDigest::of(device, secret.as_bytes()),
        })),
    }
}

impl Request {
    /// Whether it opens the device's WebSocket.
    pub(super) fn is_socket(&self) -> bool {
        matches!(self.kind, Kind::Socket { .. })
    }
}

/// Checks a WebSocket request's credentials: the device and the 101
/// answer to write, or the refusal.
pub(super) async fn admit_socket(
    core: &Rc<Core>,
    rt: &Rc<HttpListenerRt>,
    session: &mut Session,
    request: Request,
) -> Result<(Rc<str>, Vec<u8>), Response> {
    check(core, rt, session, &request).await?;
    match request.kind {
        Kind::Socket { accept } => Ok((request.device, accept)),
        Kind::Publish { .. } | Kind::Poll { .. } => {
            Err(Response::error(500, "not a WebSocket request"))
        }
    }
}

/// Serves one device API request (its head already consumed from the
/// session's buffer).
pub(super) async fn handle(
    core: &Rc<Core>,
    rt: &Rc<HttpListenerRt>,
    conn: &HttpConn,
    stream: &mut TcpStream,
    session: &mut Session,
    request: Request,
    body_deadline: Instant,
) -> Response {
    let has_body = matches!(&request.kind, Kind::Publish { body, .. } if *body != Body::None);
    if let Err(response) = check(core, rt, session, &request).await {
        return if has_body {
            response.closing()
        } else {
            response
        };
    }
    match request.kind {
        Kind::Publish {
            topic,
            body,
            expect_continue,
        } => {
            if expect_continue
                && has_body
                && session.buf.is_empty()
                && stream
                    .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                    .await
                    .is_err()
            {
                return Response::empty(400).closing();
            }
            let payload = match read_body(
                core,
                conn,
                stream,
                session,
                body,
                u64::from(rt.spec.config.max_frame_bytes),
                body_deadline,
            )
            .await
            {
                Ok(payload) => payload,
                Err(response) => return response,
            };
            publish(core, rt, &request.device, topic, &payload)
        }
        Kind::Socket { .. } => Response::error(400, "a device's WebSocket needs an upgrade"),
        Kind::Poll { wait, max } => {
            let wait = wait.min(core.settings.borrow().http.max_poll_wait);
            match mailbox::poll(core, &request.device, wait, max).await {
                Ok(items) if items.is_empty() => Response::empty(204),
                Ok(items) => {
                    let mut body = Vec::with_capacity(
                        16 + items
                            .iter()
                            .map(|i| 32 + i.topic.len() + i.payload.len())
                            .sum::<usize>(),
                    );
                    body.extend_from_slice(b"{\"messages\":[");
                    for (i, item) in items.iter().enumerate() {
                        if i > 0 {
                            body.push(b',');
                        }
                        json::push_message(&mut body, &item.topic, &item.payload);
                    }
                    body.extend_from_slice(b"]}");
                    core.stats.messages_out.add(items.len() as u64);
                    Response::new(200, "application/json", body)
                }
                Err(PollRefused::Busy) => {
                    Response::error(503, "too many downlink polls or mailboxes; retry later")
                        .header("Retry-After", "1")
                }
            }
        }
    }
}

/// Checks the request's credentials as the listener requires.
async fn check(
    core: &Core,
    rt: &HttpListenerRt,
    session: &mut Session,
    request: &Request,
) -> Result<(), Response> {
    let unauthorized = |message: &str| {
        Response::error(401, message).header(
            "WWW-Authenticate",
            "Bearer realm=\"shoal\", Basic realm=\"shoal\"",
        )
    };
    let credentials = match &request.credentials {
        Ok(c) => c,
        Err(why) => return Err(unauthorized(why)),
    };
    if rt.auth != ListenerAuth::DeviceSecret {
        return Ok(());
    }
    let Some(credentials) = credentials else {
        return Err(unauthorized(
            "this listener needs the device's secret (Authorization: Bearer {secret})",
        ));
    };
    let proven = Proven {
        device: Rc::clone(&credentials.device),
        digest: credentials.digest,
    };
    if session.proven.as_ref() == Some(&proven) {
        return Ok(());
    }
    match authenticate(core, credentials).await {
        Ok(_product) => {
            session.proven = Some(proven);
            Ok(())
        }
        Err(failure) => {
            core.stats.auth_failures.inc();
            log_refusal(
                rt,
                &format!("HTTP device {} refused: {failure}", credentials.device),
            );
            match failure {
                AuthFailure::Busy | AuthFailure::NoAnswer => Err(Response::error(
                    503,
                    "the registry could not answer; retry later",
                )
                .header("Retry-After", "1")),
                AuthFailure::Refused(_) | AuthFailure::Malformed(_) => {
                    Err(unauthorized("unknown device or wrong secret"))
                }
            }
        }
    }
}

/// Reads the request body into one buffer.
async fn read_body(
    core: &Core,
    conn: &HttpConn,
    stream: &mut TcpStream,
    session: &mut Session,
    body: Body,
    max_body: u64,
    deadline: Instant,
) -> Result<Vec<u8>, Response> {
    let timed_out = || Response::error(408, "the request body took too long").closing();
    match body {
        Body::None => Ok(Vec::new()),
        Body::Length(n) => {
            let n = usize::try_from(n).unwrap_or(usize::MAX);
            while session.buf.len() < n {
                match read_more(stream, &mut session.buf, deadline, conn, core).await {
                    Ok(_) | Err(ReadStop::Ending) => {}
                    Err(ReadStop::TimedOut) => return Err(timed_out()),
                    Err(ReadStop::Closed) => return Err(Response::empty(400).closing()),
                }
            }
            Ok(session.buf.drain(..n).collect())
        }
        Body::Chunked => {
            let mut decoder = ChunkedDecoder::new(max_body);
            let mut out = Vec::new();
            loop {
                match decoder.decode(&session.buf, &mut out) {
                    Ok(progress) => {
                        session.buf.drain(..progress.consumed);
                        if progress.done {
                            return Ok(out);
                        }
                    }
                    Err(e) => return Err(Response::error(e.status(), &e.to_string()).closing()),
                }
                match read_more(stream, &mut session.buf, deadline, conn, core).await {
                    Ok(_) | Err(ReadStop::Ending) => {}
                    Err(ReadStop::TimedOut) => return Err(timed_out()),
                    Err(ReadStop::Closed) => return Err(Response::empty(400).closing()),
                }
            }
        }
    }
}

/// Publishes a device's message and answers 202.
fn publish(
    core: &Core,
    rt: &HttpListenerRt,
    device: &Rc<str>,
    topic: String,
    payload: &[u8],
) -> Response {
    let body = serde_json::json!({ "topic": &topic }).to_string();
    core.http.device_messages.inc();
    publish_message(core, rt, device, topic.into(), payload, core.read_clock());
    Response::new(202, "application/json", body.into_bytes())
}

/// Publishes what a device sent on this listener (copied into a pool
/// buffer when one is free).
pub(super) fn publish_message(
    core: &Core,
    rt: &HttpListenerRt,
    device: &Rc<str>,
    topic: Rc<str>,
    payload: &[u8],
    read_end: Option<Instant>,
) {
    let pooled = core
        .pool
        .try_acquire(payload.len().max(1))
        .and_then(|mut buf| buf.extend_from_slice(payload).then_some(buf));
    let payload = match pooled {
        Some(buf) => Payload::whole(buf),
        None => Payload::heap(payload),
    };
    core.publish_read(
        Message {
            topic,
            payload,
            qos: 0,
            retain: false,
            origin: Origin {
                listener: Some(Rc::clone(&rt.name)),
                device: Some(Rc::clone(device)),
                session: 0,
            },
            hops: 0,
            props: None,
        },
        read_end,
    );
}
