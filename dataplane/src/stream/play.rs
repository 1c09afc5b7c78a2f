//! Viewers on the HTTP listener: `GET /{app}/{name}.flv` as a chunked FLV
//! body (HTTP-FLV), or, with a WebSocket upgrade on the same path, FLV in
//! binary frames (WebSocket-FLV).

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::Duration;

use futures_lite::future::FutureExt;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use shoal_protocols::config::ListenerAuth;
use shoal_protocols::http1::{reason_phrase, write_response_head};
use shoal_protocols::websocket::{
    decode_frame, encode_close, unmask, CloseCode, Decoded, Opcode, Role,
};
use tracing::{debug, info};

use super::viewer::{Viewer, ViewerEnd, ViewerProto};
use crate::core::{CloseReason, Connection, Core};
use crate::mqtt::MqttListenerRt;
use crate::outq::Segment;
use crate::writer::FlushEnd;

/// Bytes read at once from a viewer (it sends little: WebSocket control
/// frames at most).
const VIEWER_READ_BYTES: usize = 256;

/// How long the end of a viewer's stream (the last chunk, a close frame)
/// may take to go out before the connection is closed anyway.
const TAIL_FLUSH_BOUND: Duration = Duration::from_secs(1);

/// `/{app}/{name}.flv` → `app/name`.
pub(crate) fn flv_stream_path(path: &str) -> Option<String> {
    let rest = path.strip_prefix('/')?.strip_suffix(".flv")?;
    let (app, name) = rest.split_once('/')?;
    if app.is_empty() || name.is_empty() || name.contains('/') {
        return None;
    }
    Some(format!("{app}/{name}"))
}

/// Why a play request was refused: the HTTP status and what to say.
#[derive(Debug)]
pub(crate) struct PlayRefusal {
    pub(crate) status: u16,
    pub(crate) message: String,
}

/// Checks the rules and waits (up to `play_wait`) for the stream's
/// publisher.
pub(crate) async fn admit_play(
    core: &Core,
    auth: ListenerAuth,
    stream: &str,
) -> Result<(), PlayRefusal> {
    if let Err(message) = core.streams.may_play(stream, auth) {
        core.stats.stream_play_refused.inc();
        return Err(PlayRefusal {
            status: 403,
            message,
        });
    }
    let wait = core.settings.borrow().streams.play_wait;
    if !core.streams.wait_live(stream, wait).await {
        core.stats.stream_play_refused.inc();
        return Err(PlayRefusal {
            status: 404,
            message: format!("stream {stream} has no publisher"),
        });
    }
    Ok(())
}

/// Serves one HTTP-FLV or WebSocket-FLV viewer of `stream` (admitted)
/// until the stream or the connection ends.
pub(crate) async fn serve_flv(
    core: Rc<Core>,
    rt: Rc<MqttListenerRt>,
    mut stream: TcpStream,
    peer: SocketAddr,
    name: String,
    accept: Option<Vec<u8>>,
) {
    let websocket = accept.is_some();
    let proto = if websocket {
        ViewerProto::WsFlv
    } else {
        ViewerProto::HttpFlv
    };
    let viewer = Viewer::new(&core, proto, stream.as_raw_fd());
    let head = accept.unwrap_or_else(|| {
        let mut head = Vec::with_capacity(256);
        write_response_head(
            &mut head,
            200,
            reason_phrase(200),
            &[
                ("Content-Type", "video/x-flv"),
                ("Transfer-Encoding", "chunked"),
                ("Cache-Control", "no-cache"),
                ("Access-Control-Allow-Origin", "*"),
                ("Connection", "close"),
            ],
            None,
        );
        head
    });
    viewer.write_raw(&head);
    drop(head);
    let id = core.add_conn(
        Rc::clone(&rt.name),
        Rc::clone(&viewer) as Rc<dyn Connection>,
    );
    let kind = if websocket {
        "websocket-flv"
    } else {
        "http-flv"
    };
    if core.streams.add_viewer(&core, &name, &viewer) {
        info!(listener = %rt.name, %peer, stream = %name, kind, "viewer started");
    } else {
        viewer.end(ViewerEnd::Unpublished);
    }
    let end = run_viewer(&core, &viewer, &mut stream).await;
    core.streams.remove_viewer(&core, &name, &viewer);
    // The end of the stream: an empty chunk, or a close frame.
    let mut tail = Vec::new();
    match (proto, end) {
        (ViewerProto::HttpFlv, ViewerEnd::Unpublished | ViewerEnd::Shutdown) => {
            tail.extend_from_slice(b"0\r\n\r\n");
        }
        (ViewerProto::WsFlv, ViewerEnd::Unpublished) => {
            encode_close(&mut tail, CloseCode(1000), "stream ended");
        }
        (ViewerProto::WsFlv, ViewerEnd::Shutdown) => {
            encode_close(&mut tail, CloseCode(1001), "going away");
        }
        (ViewerProto::WsFlv, ViewerEnd::TooSlow) => {
            encode_close(&mut tail, CloseCode(1008), "viewer too slow");
        }
        _ => {}
    }
    // A WebSocket viewer that closed (or sent a bad frame) is owed the
    // close frame already queued behind its gathered tags.
    let owed = proto == ViewerProto::WsFlv && end == ViewerEnd::Closed && !viewer.writer.is_empty();
    if (owed || !tail.is_empty()) && viewer.writer.is_open() {
        if !tail.is_empty() {
            viewer.write_raw(&tail);
        }
        let flush = async {
            let _ = viewer.writer.flush(&core, &mut stream, || None).await;
        };
        let bound = async {
            glommio::timer::sleep(TAIL_FLUSH_BOUND).await;
        };
        flush.or(bound).await;
    }
    viewer.writer.clear();
    core.remove_conn(id);
    rt.spec
        .open
        .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    debug!(listener = %rt.name, %peer, stream = %name, kind, ?end, skipped = viewer.skipped.get(), "viewer ended");
    let _ = stream.close().await;
}

/// Writes the viewer's queue out as it fills; reads what the viewer sends
/// (to see it leave, and WebSocket control frames). Returns why it ended.
async fn run_viewer(core: &Core, viewer: &Rc<Viewer>, stream: &mut TcpStream) -> ViewerEnd {
    let mut inbox: Vec<u8> = Vec::new();
    loop {
        if let Some(end) = viewer.ended() {
            return end;
        }
        if !viewer.writer.is_open() {
            return ViewerEnd::Closed;
        }
        if !viewer.writer.is_empty() {
            let closing = || viewer.ended().map(|_| CloseReason::Shutdown);
            match viewer.writer.flush(core, stream, closing).await {
                Ok(()) => {}
                Err(FlushEnd::Closed(_)) => continue,
                Err(FlushEnd::Stalled) => {
                    core.stats.slow_closes.inc();
                    viewer.end(ViewerEnd::TooSlow);
                    continue;
                }
                Err(FlushEnd::Io(_)) => return ViewerEnd::Closed,
            }
            continue;
        }
        let mut buf = [0u8; VIEWER_READ_BYTES];
        let readable = async { Some(stream.read(&mut buf).await) };
        let kicked = async {
            viewer.writer.kick.kicked().await;
            None
        };
        match readable.or(kicked).await {
            None => {}
            Some(Ok(0)) | Some(Err(_)) => return ViewerEnd::Closed,
            Some(Ok(n)) => {
                core.stats.bytes_in.add(n as u64);
                if viewer.proto() == ViewerProto::WsFlv {
                    inbox.extend_from_slice(buf.get(..n).unwrap_or_default());
                    if let Some(end) = websocket_input(viewer, &mut inbox) {
                        return end;
                    }
                }
                // An HTTP-FLV viewer has nothing more to say: its bytes
                // are ignored.
            }
        }
    }
}

/// Handles the frames a WebSocket-FLV viewer sent: pings are answered,
/// a close ends it, data frames are ignored. Bad framing ends it.
fn websocket_input(viewer: &Viewer, inbox: &mut Vec<u8>) -> Option<ViewerEnd> {
    loop {
        let (frame, consumed) = match decode_frame(inbox, Role::Server, VIEWER_READ_BYTES as u64) {
            Ok(Decoded::Frame { frame, consumed }) => (frame, consumed),
            Ok(Decoded::Incomplete) => {
                if inbox.len() > 2 * VIEWER_READ_BYTES {
                    return Some(ViewerEnd::Closed);
                }
                return None;
            }
            Err(e) => {
                let mut out = Vec::new();
                encode_close(&mut out, CloseCode(e.close_code()), "bad frame");
                viewer.write_raw(&out);
                return Some(ViewerEnd::Closed);
            }
        };
        let mut payload = inbox
            .get(frame.payload.clone())
            .unwrap_or_default()
            .to_vec();
        if let Some(mask) = frame.mask {
            unmask(&mut payload, mask);
        }
        inbox.drain(..consumed);
        match frame.opcode {
            Opcode::Ping => {
                let mut out = Vec::new();
                shoal_protocols::websocket::encode_frame(
                    &mut out,
                    true,
                    Opcode::Pong,
                    &payload,
                    None,
                );
                viewer.write_raw(&out);
            }
            Opcode::Close => {
                let mut out = Vec::new();
                encode_close(&mut out, CloseCode(1000), "");
                viewer.write_raw(&out);
                return Some(ViewerEnd::Closed);
            }
            _ => {}
        }
    }
}

impl Connection for Viewer {
    fn close(&self, _reason: CloseReason) {
        self.end(ViewerEnd::Shutdown);
    }

    fn begin_drain(&self) {
        self.end(ViewerEnd::Shutdown);
    }
}

impl Viewer {
    /// Queues protocol bytes (response head, control frames) ahead of
    /// whatever follows, past the queue's bound if need be.
    pub(crate) fn write_raw(&self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let segment = if bytes.len() <= crate::outq::MAX_INLINE_BYTES {
            Segment::inline(bytes)
        } else {
            Segment::Payload(crate::pool::Payload::heap(bytes))
        };
        self.send_segments(std::slice::from_ref(&segment), true);
    }
}
