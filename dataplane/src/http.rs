//! HTTP/1.1 listeners: WebSocket upgrades at `/mqtt` (MQTT over
//! WebSocket, subprotocol `mqtt`); live streams at `/{app}/{name}.flv`
//! (HTTP-FLV, or WebSocket-FLV with an upgrade); anything else is answered
//! with a JSON error and the connection closes.
//!
//! A request head is read with a bound on its size and on the time it may
//! take (a client that trickles its head is closed).

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::future::FutureExt;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use shoal_protocols::http1::{parse_request_head, write_response_head, Decoded, HeadLimits};
use shoal_protocols::websocket::{check_upgrade, write_accept};

use crate::core::Core;
use crate::listener::ListenerSpec;
use crate::mqtt::{self, MqttListenerRt};
use crate::stream;

/// Time a client has to send its whole request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// The path of MQTT over WebSocket.
const MQTT_PATH: &str = "/mqtt";

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

/// Reads one request head and answers it.
async fn serve(core: Rc<Core>, rt: Rc<HttpListenerRt>, mut stream: TcpStream, peer: SocketAddr) {
    let limits = HeadLimits::default();
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    let read_head = async {
        let mut chunk = [0u8; 2048];
        loop {
            match parse_request_head(&buf, &limits) {
                Ok(Decoded::Frame { consumed, .. }) => return Ok(Some(consumed)),
                Ok(Decoded::Incomplete) => {}
                Err(e) => return Err(e.status()),
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return Ok(None),
                Ok(n) => buf.extend_from_slice(chunk.get(..n).unwrap_or_default()),
            }
        }
    };
    let timeout = async {
        glommio::timer::sleep(HEAD_TIMEOUT).await;
        Err(408)
    };
    let outcome = read_head.or(timeout).await;
    core.stats.bytes_in.add(buf.len() as u64);
    let consumed = match outcome {
        Ok(Some(consumed)) => consumed,
        Ok(None) => {
            release(&rt);
            return;
        }
        Err(status) => {
            respond_error(&mut stream, status, "the request head was refused").await;
            release(&rt);
            return;
        }
    };
    // Live streams.
    if let Ok(Decoded::Frame { frame: head, .. }) = parse_request_head(&buf, &limits) {
        if let Some(name) = stream::flv_stream_path(head.path_only()) {
            if head.method != "GET" {
                respond_error(&mut stream, 405, "a stream is played with GET").await;
                release(&rt);
                return;
            }
            let upgrade = if head.has_token("Upgrade", "websocket") {
                match check_upgrade(&head) {
                    Ok(u) => Some(u),
                    Err(e) => {
                        let mut out = Vec::new();
                        e.write_refusal(&mut out);
                        let _ = stream.write_all(&out).await;
                        let _ = stream.close().await;
                        release(&rt);
                        return;
                    }
                }
            } else {
                None
            };
            if let Err(refusal) = stream::admit_play(&core, rt.auth, &name).await {
                respond_error(&mut stream, refusal.status, &refusal.message).await;
                release(&rt);
                return;
            }
            stream::serve_flv(core, rt, stream, peer, name, upgrade.as_ref()).await;
            return;
        }
    }
    let mut response = Vec::new();
    let upgraded = match parse_request_head(&buf, &limits) {
        Ok(Decoded::Frame { frame: head, .. }) if head.path_only() == MQTT_PATH => {
            match check_upgrade(&head) {
                Ok(upgrade) if upgrade.offers("mqtt") => {
                    write_accept(&mut response, &upgrade, Some("mqtt"));
                    true
                }
                Ok(_) => {
                    error_body(
                        &mut response,
                        400,
                        "MQTT over WebSocket needs the subprotocol `mqtt`",
                    );
                    false
                }
                Err(e) => {
                    e.write_refusal(&mut response);
                    false
                }
            }
        }
        Ok(Decoded::Frame { .. }) => {
            error_body(&mut response, 404, "no such resource");
            false
        }
        _ => {
            error_body(&mut response, 400, "bad request");
            false
        }
    };
    if stream.write_all(&response).await.is_err() {
        release(&rt);
        return;
    }
    if !upgraded {
        let _ = stream.close().await;
        release(&rt);
        return;
    }
    let leftover = buf.get(consumed..).unwrap_or_default().to_vec();
    mqtt::serve_websocket(core, rt, stream, peer, leftover).await;
}

/// The connection ended before it became a WebSocket.
fn release(rt: &HttpListenerRt) {
    rt.spec.open.fetch_sub(1, Ordering::Relaxed);
}

fn error_body(out: &mut Vec<u8>, status: u16, message: &str) {
    let body = serde_json::json!({ "error": message, "status": status }).to_string();
    write_response_head(
        out,
        status,
        shoal_protocols::http1::reason_phrase(status),
        &[
            ("Content-Type", "application/json"),
            ("Connection", "close"),
        ],
        Some(body.len() as u64),
    );
    out.extend_from_slice(body.as_bytes());
}

async fn respond_error(stream: &mut TcpStream, status: u16, message: &str) {
    let mut out = Vec::new();
    error_body(&mut out, status, message);
    let _ = stream.write_all(&out).await;
    let _ = stream.close().await;
}
