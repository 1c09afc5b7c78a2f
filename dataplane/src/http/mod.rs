//! HTTP/1.1 listeners: the device API, the data plane's own figures and
//! health, live streams, and WebSocket upgrades.
//!
//! | request | answer |
//! |---|---|
//! | `POST /v1/devices/{id}/messages[/{subtopic}]` | publishes the body on `devices/{id}/up[/{subtopic}]` (202) |
//! | `GET /v1/devices/{id}/messages?wait=30s&max=10` | the device's downlink messages (200), none within `wait` (204) |
//! | `GET /metrics` | every core's figures, Prometheus text format |
//! | `GET /healthz`, `GET /readyz` | liveness (every core posts figures) and readiness (config applied) |
//! | `GET /{app}/{name}.flv` | a live stream, HTTP-FLV (or WebSocket-FLV with an upgrade) |
//! | `GET /mqtt` + upgrade | MQTT over WebSocket, subprotocol `mqtt` |
//!
//! A connection serves requests one after the other (keep-alive; pipelined
//! requests wait their turn in the read buffer). Each request is bounded:
//! its head in bytes and header lines ([`HeadLimits`]) and in time
//! (`head_timeout` from its first byte), its body by the listener's
//! `max_frame_bytes` and `body_timeout`; a kept-alive connection idle for
//! `keep_alive_timeout` is closed. A refused request gets a JSON error with
//! the right status; when its framing is in doubt the connection closes.
//!
//! ```text
//! accept ─▶ read head ─▶ route ─┬─ device API / metrics / health ─▶ respond ─▶ next request
//!                               └─ .flv, /mqtt ─▶ the stream or MQTT task takes the socket
//! ```

mod device;
pub(crate) mod json;
mod mailbox;
mod metrics;
mod ws_device;

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::future::FutureExt;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use shoal_protocols::http1::{
    parse_request_head, reason_phrase, write_response_head, Decoded, HeadLimits, RequestHead,
};
use shoal_protocols::websocket::{check_upgrade, write_accept};
use tracing::{debug, warn};

use crate::core::{CloseReason, Connection, Core};
use crate::listener::ListenerSpec;
use crate::mqtt::{self, MqttListenerRt};
use crate::signal::Kick;
use crate::stream;

pub(crate) use mailbox::{on_mesh, run_mailboxes, HttpState, MailItem};

/// The path of MQTT over WebSocket.
const MQTT_PATH: &str = "/mqtt";

/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 4096;

/// An HTTP listener as one core runs it.
pub(crate) type HttpListenerRt = MqttListenerRt;

/// Binds the listener's socket on this core.
pub(crate) fn bind(spec: &Arc<ListenerSpec>) -> Result<(TcpListener, Rc<HttpListenerRt>), String> {
    mqtt::bind(spec)
}

/// Accepts until the core stops or the listener is removed.
pub(crate) async fn run_listener(core: Rc<Core>, rt: Rc<HttpListenerRt>, listener: TcpListener) {
    mqtt::accept_loop(core, rt, listener, serve).await;
}

/// A response about to be written.
#[derive(Debug)]
pub(crate) struct Response {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    /// Close the connection after it (the request's framing is in doubt,
    /// or its body was not read).
    close: bool,
    /// Answering HEAD: the head of the GET answer, without its body.
    head_only: bool,
}

impl Response {
    pub(crate) fn new(status: u16, content_type: &'static str, body: Vec<u8>) -> Self {
        Self {
            status,
            headers: vec![("Content-Type", content_type.to_owned())],
            body,
            close: false,
            head_only: false,
        }
    }

    /// A JSON error body `{"error": message, "status": status}`.
    pub(crate) fn error(status: u16, message: &str) -> Self {
        let body = serde_json::json!({ "error": message, "status": status }).to_string();
        Self::new(status, "application/json", body.into_bytes())
    }

    /// No body.
    pub(crate) fn empty(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            close: false,
            head_only: false,
        }
    }

    pub(crate) fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub(crate) fn closing(mut self) -> Self {
        self.close = true;
        self
    }

    fn write(&self, out: &mut Vec<u8>, keep_alive: bool) {
        let mut headers: Vec<(&str, &str)> =
            self.headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        if !keep_alive || self.close {
            headers.push(("Connection", "close"));
        }
        let length = (self.status >= 200 && self.status != 204 && self.status != 304)
            .then_some(self.body.len() as u64);
        write_response_head(
            out,
            self.status,
            reason_phrase(self.status),
            &headers,
            length,
        );
        if !self.head_only {
            out.extend_from_slice(&self.body);
        }
    }
}

/// The core's handle on an HTTP connection between requests.
#[derive(Debug, Default)]
pub(super) struct HttpConn {
    /// Set when the core asks the connection to end (drain, removal).
    ending: Cell<bool>,
    kick: Kick,
}

impl Connection for HttpConn {
    fn close(&self, _reason: CloseReason) {
        self.ending.set(true);
        self.kick.kick();
    }

    fn begin_drain(&self) {
        self.ending.set(true);
        self.kick.kick();
    }
}

/// What a connection keeps across its requests.
#[derive(Debug)]
pub(crate) struct Session {
    /// Bytes read and not yet used (the start of the next request).
    buf: Vec<u8>,
    /// The device whose credentials this connection proved last, and
    /// their digest: a device's next request with the same credentials is
    /// not checked again.
    pub(crate) proven: Option<device::Proven>,
}

/// How a connection ended, or who takes it over.
#[derive(Debug)]
enum End {
    /// Closed after a response or by the client.
    Done,
    /// An error worth a log line.
    Failed(String),
    /// A live-stream viewer (the head is still at the start of the buffer).
    Flv(String),
    /// MQTT over WebSocket (the head is still at the start of the buffer).
    Mqtt,
    /// A device's WebSocket, admitted: the 101 answer to write.
    DeviceSocket { device: Rc<str>, accept: Vec<u8> },
}

/// Serves one connection: requests until it closes, or hands it over.
async fn serve(core: Rc<Core>, rt: Rc<HttpListenerRt>, mut stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let conn = Rc::new(HttpConn::default());
    let id = core.add_conn(Rc::clone(&rt.name), Rc::clone(&conn) as Rc<dyn Connection>);
    let mut session = Session {
        buf: Vec::with_capacity(READ_CHUNK),
        proven: None,
    };
    let end = run(&core, &rt, &conn, &mut stream, &mut session).await;
    core.remove_conn(id);
    match end {
        End::Done => {}
        End::Failed(why) => debug!(listener = %rt.name, %peer, "HTTP connection ended: {why}"),
        End::Flv(name) => {
            if let Err(refusal) = stream::admit_play(&core, rt.auth, &name).await {
                let response = Response::error(refusal.status, &refusal.message).closing();
                respond(&core, &mut stream, &response, false).await;
                let _ = stream.close().await;
                release(&rt);
                return;
            }
            if let Ok(Decoded::Frame { frame: head, .. }) =
                parse_request_head(&session.buf, &HeadLimits::default())
            {
                // WebSocket-FLV: the 101 answer to write first.
                let accept = head
                    .has_token("Upgrade", "websocket")
                    .then(|| check_upgrade(&head).ok())
                    .flatten()
                    .map(|upgrade| {
                        let mut accept = Vec::with_capacity(160);
                        write_accept(&mut accept, &upgrade, None);
                        accept
                    });
                // The viewer's task counts the connection from here on,
                // and holds only what playing needs.
                core.stats.accepted.dec();
                glommio::spawn_local(stream::serve_flv(core, rt, stream, peer, name, accept))
                    .detach();
                return;
            }
        }
        End::Mqtt => {
            if let Ok(Decoded::Frame {
                frame: head,
                consumed,
            }) = parse_request_head(&session.buf, &HeadLimits::default())
            {
                let mut accept = Vec::new();
                if let Ok(upgrade) = check_upgrade(&head) {
                    write_accept(&mut accept, &upgrade, Some("mqtt"));
                }
                if !accept.is_empty() && write_upgrade(&core, &mut stream, &accept).await {
                    core.stats.accepted.dec();
                    let leftover = session.buf.get(consumed..).unwrap_or_default().to_vec();
                    glommio::spawn_local(mqtt::serve_websocket(core, rt, stream, peer, leftover))
                        .detach();
                    return;
                }
            }
        }
        End::DeviceSocket { device, accept } => {
            if write_upgrade(&core, &mut stream, &accept).await {
                core.stats.accepted.dec();
                let leftover = std::mem::take(&mut session.buf);
                glommio::spawn_local(ws_device::serve(core, rt, stream, peer, device, leftover))
                    .detach();
                return;
            }
        }
    }
    let _ = stream.close().await;
    release(&rt);
}

/// Writes a 101 answer, bounded by the write stall timeout (the
/// connection has left the table: a client that does not read must not
/// hold it); false when it did not go out.
async fn write_upgrade(core: &Core, stream: &mut TcpStream, accept: &[u8]) -> bool {
    let stall = core.settings.borrow().write_stall_timeout;
    let write = async { stream.write_all(accept).await.is_ok() };
    let timeout = async {
        glommio::timer::sleep(stall).await;
        false
    };
    write.or(timeout).await
}

/// The connection ended without being handed over.
fn release(rt: &HttpListenerRt) {
    rt.spec.open.fetch_sub(1, Ordering::Relaxed);
}

/// Why reading stopped.
pub(super) enum ReadStop {
    /// The client closed (or reset) the connection.
    Closed,
    /// The deadline passed.
    TimedOut,
    /// The core asked the connection to end.
    Ending,
}

/// Reads more bytes into `buf` before `deadline`.
pub(super) async fn read_more(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    deadline: Instant,
    conn: &HttpConn,
    core: &Core,
) -> Result<usize, ReadStop> {
    let mut chunk = [0u8; READ_CHUNK];
    let read = async {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => Err(ReadStop::Closed),
            Ok(n) => Ok(n),
        }
    };
    let timeout = async {
        glommio::timer::sleep(deadline.saturating_duration_since(Instant::now())).await;
        Err(ReadStop::TimedOut)
    };
    let ending = async {
        while !conn.ending.get() {
            conn.kick.kicked().await;
        }
        Err(ReadStop::Ending)
    };
    let n = read.or(timeout).or(ending).await?;
    buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
    core.stats.bytes_in.add(n as u64);
    Ok(n)
}

/// Serves requests until the connection ends or is handed over.
async fn run(
    core: &Rc<Core>,
    rt: &Rc<HttpListenerRt>,
    conn: &HttpConn,
    stream: &mut TcpStream,
    session: &mut Session,
) -> End {
    let limits = HeadLimits::default();
    loop {
        let settings = core.settings.borrow().http.clone();
        // The head: idle up to keep_alive_timeout, then head_timeout from
        // its first byte.
        let mut deadline = Instant::now() + settings.keep_alive_timeout;
        let mut started = !session.buf.is_empty();
        if started {
            deadline = Instant::now() + settings.head_timeout;
        }
        let consumed = loop {
            match parse_request_head(&session.buf, &limits) {
                Ok(Decoded::Frame { consumed, .. }) => break consumed,
                Ok(Decoded::Incomplete) => {}
                Err(e) => {
                    let response = Response::error(e.status(), &e.to_string()).closing();
                    respond(core, stream, &response, false).await;
                    return End::Failed(format!("bad request head: {e}"));
                }
            }
            if conn.ending.get() && !started {
                return End::Done;
            }
            match read_more(stream, &mut session.buf, deadline, conn, core).await {
                Ok(_) if !started => {
                    started = true;
                    deadline = Instant::now() + settings.head_timeout;
                }
                Ok(_) => {}
                Err(ReadStop::Closed) => return End::Done,
                Err(ReadStop::Ending) if !started => return End::Done,
                Err(ReadStop::Ending) => {}
                Err(ReadStop::TimedOut) if !started => return End::Done,
                Err(ReadStop::TimedOut) => {
                    let response = Response::error(408, "the request head took too long").closing();
                    respond(core, stream, &response, false).await;
                    return End::Failed("request head timed out".into());
                }
            }
        };
        let route = {
            let Ok(Decoded::Frame { frame: head, .. }) = parse_request_head(&session.buf, &limits)
            else {
                return End::Failed("request head vanished".into());
            };
            route(rt, &head)
        };
        let (response, keep_alive) = match route {
            Route::Flv(name) => return End::Flv(name),
            Route::Mqtt => return End::Mqtt,
            Route::Refused(response) => (response, false),
            Route::Answer {
                response,
                keep_alive,
            } => {
                session.buf.drain(..consumed);
                (response, keep_alive)
            }
            Route::Own {
                own,
                head_only,
                keep_alive,
            } => {
                session.buf.drain(..consumed);
                let mut response = own_resource(core, own);
                response.head_only = head_only;
                (response, keep_alive)
            }
            Route::Device(request) if request.is_socket() => {
                session.buf.drain(..consumed);
                match device::admit_socket(core, rt, session, request).await {
                    Ok((device, accept)) => return End::DeviceSocket { device, accept },
                    Err(response) => (response.closing(), false),
                }
            }
            Route::Device(request) => {
                session.buf.drain(..consumed);
                let keep_alive = request.keep_alive;
                let body_deadline = Instant::now() + settings.body_timeout;
                let response =
                    device::handle(core, rt, conn, stream, session, request, body_deadline).await;
                (response, keep_alive)
            }
        };
        let keep_alive = keep_alive && !response.close && !conn.ending.get();
        if !respond(core, stream, &response, keep_alive).await {
            return End::Done;
        }
        if !keep_alive {
            return End::Done;
        }
    }
}

/// `/metrics`, `/healthz` or `/readyz`, from the figures board (this
/// core's own figures fresh).
fn own_resource(core: &Core, own: Own) -> Response {
    let board = &core.board;
    let mut posts = board.read();
    match own {
        Own::Metrics => {
            let fresh = crate::board::CorePost {
                figures: core.figures(),
                http: core.http.figures(),
                coap: core.coap.figures(),
                webhook: core.stats.webhook.figures(),
                latency: posts
                    .get(core.index)
                    .and_then(|p| p.as_ref())
                    .map(|(_, p)| p.latency.clone())
                    .unwrap_or_default(),
            };
            if let Some(slot) = posts.get_mut(core.index) {
                *slot = Some((Duration::ZERO, Arc::new(fresh)));
            }
            let process = metrics::ProcessFigures {
                uptime: board.uptime(),
                rss_bytes: board.rss_bytes(),
                ready: board.is_ready(),
            };
            Response::new(
                200,
                metrics::CONTENT_TYPE,
                metrics::render(process, &posts).into_bytes(),
            )
        }
        Own::Health => {
            let stalled: Vec<usize> = posts
                .iter()
                .enumerate()
                .filter(|(i, p)| {
                    *i != core.index
                        && p.as_ref()
                            .is_none_or(|(age, _)| *age > crate::board::STALE_AFTER)
                })
                .map(|(i, _)| i)
                .collect();
            if stalled.is_empty() {
                let body = serde_json::json!({ "status": "ok", "cores": board.cores() });
                Response::new(200, "application/json", body.to_string().into_bytes())
            } else {
                let body = serde_json::json!({
                    "status": "stalled",
                    "stalled_cores": stalled,
                    "error": "some cores have not posted their figures recently",
                });
                Response::new(503, "application/json", body.to_string().into_bytes())
            }
        }
        Own::Ready => {
            if board.is_ready() && !core.stopping.is_raised() {
                let body = serde_json::json!({ "status": "ready" });
                Response::new(200, "application/json", body.to_string().into_bytes())
            } else {
                let why = if core.stopping.is_raised() {
                    "stopping"
                } else {
                    "starting"
                };
                let body = serde_json::json!({ "status": why, "error": format!("the data plane is {why}") });
                Response::new(503, "application/json", body.to_string().into_bytes())
            }
        }
    }
}

/// Writes `response`; false when the connection broke.
async fn respond(
    core: &Core,
    stream: &mut TcpStream,
    response: &Response,
    keep_alive: bool,
) -> bool {
    let http = &core.http;
    http.requests.inc();
    match response.status {
        400..=499 => http.client_errors.inc(),
        500..=599 => http.server_errors.inc(),
        _ => {}
    }
    let mut out = Vec::with_capacity(256 + response.body.len());
    response.write(&mut out, keep_alive);
    core.stats.bytes_out.add(out.len() as u64);
    stream.write_all(&out).await.is_ok()
}

/// The data plane's own resources.
#[derive(Debug, Clone, Copy)]
enum Own {
    Metrics,
    Health,
    Ready,
}

/// What a request head asks for.
enum Route {
    /// Answered from the head alone.
    Answer {
        response: Response,
        keep_alive: bool,
    },
    /// Refused; the connection closes after the answer.
    Refused(Response),
    /// A device API request (may have a body).
    Device(device::Request),
    /// The data plane's own figures or health.
    Own {
        own: Own,
        head_only: bool,
        keep_alive: bool,
    },
    /// A live-stream viewer.
    Flv(String),
    /// MQTT over WebSocket.
    Mqtt,
}

fn route(rt: &HttpListenerRt, head: &RequestHead<'_>) -> Route {
    let path = head.path_only();
    let keep_alive = head.keep_alive();
    if let Some(name) = stream::flv_stream_path(path) {
        if head.method != "GET" {
            return Route::Refused(
                Response::error(405, "a stream is played with GET").header("Allow", "GET"),
            );
        }
        if head.has_token("Upgrade", "websocket") {
            if let Err(e) = check_upgrade(head) {
                return Route::Refused(handshake_refusal(&e));
            }
        }
        return Route::Flv(name);
    }
    if path == MQTT_PATH {
        return match check_upgrade(head) {
            Ok(upgrade) if upgrade.offers("mqtt") => Route::Mqtt,
            Ok(_) => Route::Refused(Response::error(
                400,
                "MQTT over WebSocket needs the subprotocol `mqtt`",
            )),
            Err(e) => Route::Refused(handshake_refusal(&e)),
        };
    }
    if let Some(request) = device::parse(rt, head) {
        return match request {
            Ok(request) => Route::Device(request),
            Err(response) => Route::Answer {
                response,
                keep_alive,
            },
        };
    }
    let answer = |response| Route::Answer {
        response,
        keep_alive,
    };
    let own = match path {
        "/metrics" => Some(Own::Metrics),
        "/healthz" => Some(Own::Health),
        "/readyz" => Some(Own::Ready),
        _ => None,
    };
    match (head.method, own) {
        ("GET" | "HEAD", Some(own)) => Route::Own {
            own,
            head_only: head.method == "HEAD",
            keep_alive,
        },
        (_, Some(_)) => answer(Response::error(405, "use GET").header("Allow", "GET, HEAD")),
        _ => answer(Response::error(404, "no such resource")),
    }
}

pub(super) fn handshake_refusal(e: &shoal_protocols::websocket::HandshakeError) -> Response {
    Response::error(e.status(), &e.to_string()).closing()
}

/// Logs a refused request at most once per limiter period.
pub(crate) fn log_refusal(rt: &HttpListenerRt, what: &str) {
    if let Some(more) = rt.error_log.allow() {
        warn!(listener = %rt.name, suppressed = more, "{what}");
    }
}

/// The duration a client asked for in `?wait=`: `30`, `30s`, `500ms`, `1m`.
pub(crate) fn parse_wait(text: &str) -> Option<Duration> {
    if let Ok(secs) = text.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    humantime::parse_duration(text).ok()
}

/// `Some(value)` of `name` in a query string (`a=1&b=2`), percent-decoded.
pub(crate) fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .find(|(key, _)| *key == name)
        .and_then(|(_, value)| percent_decode(value))
}

/// Decodes `%XX` escapes (and `+` as a space is NOT applied: paths and
/// the values Shoal reads never carry form encoding). `None` for a bad
/// escape or a result that is not UTF-8.
pub(crate) fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_and_escapes() {
        assert_eq!(
            query_param(Some("wait=30s&max=5"), "max").as_deref(),
            Some("5")
        );
        assert_eq!(
            query_param(Some("wait=30s&max=5"), "wait").as_deref(),
            Some("30s")
        );
        assert_eq!(
            query_param(Some("a=%2Fb%20c"), "a").as_deref(),
            Some("/b c")
        );
        assert_eq!(query_param(Some("flag"), "flag").as_deref(), Some(""));
        assert_eq!(query_param(Some("a=%zz"), "a"), None);
        assert_eq!(query_param(None, "a"), None);
        assert_eq!(percent_decode("%E2%82%AC"), Some("€".to_owned()));
        assert_eq!(percent_decode("%FF"), None);
        assert_eq!(percent_decode("%4"), None);
    }

    #[test]
    fn waits() {
        assert_eq!(parse_wait("30"), Some(Duration::from_secs(30)));
        assert_eq!(parse_wait("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_wait("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_wait("soon"), None);
    }

    #[test]
    fn responses_carry_length_and_connection() {
        let mut out = Vec::new();
        Response::error(404, "no such resource").write(&mut out, true);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 404 Not Found\r\n"), "{text}");
        assert!(text.contains("Content-Type: application/json\r\n"));
        assert!(!text.contains("Connection: close"));
        assert!(text.ends_with("{\"error\":\"no such resource\",\"status\":404}"));
        let mut out = Vec::new();
        Response::empty(204).write(&mut out, false);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text, "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
    }
}
