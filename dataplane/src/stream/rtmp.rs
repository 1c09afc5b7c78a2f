//! RTMP connections: encoders that publish a stream, and players.
//!
//! The protocol is [`shoal_protocols::rtmp::ServerSession`]; this task
//! moves its bytes, answers its publish and play requests from the stream
//! rules and the hub, packs each media message once into a tag for the
//! hub, and, for a player, lets the hub write tags to the socket after the
//! session's own output (one write half, [`Viewer`]).

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_lite::future::FutureExt;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use shoal_protocols::flv::TagKind;
use shoal_protocols::rtmp::{
    ChunkLimits, MediaKind, MediaMessage, ServerConfig, ServerEvent, ServerSession,
};
use tracing::{debug, info, warn};

use super::hub::{LocalStream, PublishRefusal, Publisher};
use super::tag::MediaTag;
use super::viewer::{Viewer, ViewerEnd, ViewerProto};
use crate::core::{CloseReason, Connection, Core};
use crate::mqtt::MqttListenerRt;
use crate::outq::recv_nonblocking;
use crate::signal::LocalSignal;
use crate::writer::FlushEnd;

/// Time a new connection has to finish the handshake and `connect`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Bytes of the first read of a wake-up (players send little); a
/// publisher's further bytes are read into a larger buffer at once.
const FIRST_READ_BYTES: usize = 512;

/// Bytes read at once while a publisher sends.
const READ_CHUNK_BYTES: usize = 16 * 1024;

/// Reads before the task lets the core's other tasks run.
const READS_PER_YIELD: u32 = 16;

/// Why a connection ended.
#[derive(Debug)]
enum End {
    PeerClosed,
    Io(std::io::Error),
    Protocol(String),
    Timeout,
    Kicked,
    Viewer(ViewerEnd),
    Stalled,
}

/// What the connection publishes or plays.
struct Role {
    peer: SocketAddr,
    publishing: Option<(u32, Rc<LocalStream>, Rc<LocalSignal>)>,
    playing: Option<(u32, String)>,
}

/// Serves one RTMP connection to its end.
pub(crate) async fn serve(
    core: Rc<Core>,
    rt: Rc<MqttListenerRt>,
    mut stream: TcpStream,
    peer: SocketAddr,
) {
    let settings = core.settings.borrow().streams.clone();
    let config = ServerConfig {
        chunk_size: settings.rtmp_chunk_bytes,
        chunk_limits: ChunkLimits {
            max_message_bytes: settings.max_tag_bytes,
            max_buffered_bytes: settings.max_tag_bytes as usize * 2,
            ..ChunkLimits::default()
        },
        ..ServerConfig::default()
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let seed = now.as_nanos() as u64 ^ (u64::from(peer.port()) << 32) ^ core.index as u64;
    let mut session = ServerSession::new(config, now.as_millis() as u32, seed);
    let viewer = Viewer::new(
        &core,
        ViewerProto::Rtmp {
            stream_id: 0,
            chunk_bytes: settings.rtmp_chunk_bytes,
        },
        stream.as_raw_fd(),
    );
    let id = core.add_conn(
        Rc::clone(&rt.name),
        Rc::clone(&viewer) as Rc<dyn Connection>,
    );
    let mut role = Role {
        peer,
        publishing: None,
        playing: None,
    };
    let end = run(&core, &rt, &mut stream, &mut session, &viewer, &mut role).await;
    // Clean up what it published or played.
    if let Some((_, local, _)) = role.publishing.take() {
        core.streams.stop_publishing(&core, &local);
    }
    if let Some((stream_id, name)) = role.playing.take() {
        core.streams.remove_viewer(&core, &name, &viewer);
        if matches!(end, End::Viewer(ViewerEnd::Unpublished)) && viewer.writer.is_open() {
            // The stream ended: tell the player, then close.
            let _ = session.send_unpublish_notify(stream_id);
            write_output(&mut session, &viewer);
            let _ = viewer.writer.flush(&core, &mut stream, || None).await;
        }
    }
    viewer.writer.clear();
    core.remove_conn(id);
    rt.spec.open.fetch_sub(1, Ordering::Relaxed);
    match &end {
        End::PeerClosed | End::Viewer(ViewerEnd::Unpublished | ViewerEnd::Closed) => {
            debug!(listener = %rt.name, %peer, ?end, "rtmp connection ended");
        }
        End::Protocol(why) => {
            core.stats.frame_errors.inc();
            if let Some(more) = rt.error_log.allow() {
                warn!(listener = %rt.name, %peer, suppressed = more, "rtmp connection closed: {why}");
            }
        }
        End::Io(e) => debug!(listener = %rt.name, %peer, "rtmp connection failed: {e}"),
        _ => info!(listener = %rt.name, %peer, ?end, "rtmp connection closed"),
    }
    let _ = stream.close().await;
}

enum Wake {
    Read(std::io::Result<usize>),
    Kicked,
    Timer,
}

async fn run(
    core: &Rc<Core>,
    rt: &MqttListenerRt,
    stream: &mut TcpStream,
    session: &mut ServerSession,
    viewer: &Rc<Viewer>,
    role: &mut Role,
) -> End {
    let connect_deadline = Instant::now() + CONNECT_TIMEOUT;
    let mut idle_deadline = Instant::now() + rt.idle_timeout;
    let mut carry: Vec<u8> = Vec::new();
    let mut reads = 0u32;
    loop {
        if let Some(end) = viewer.ended() {
            return End::Viewer(end);
        }
        if role
            .publishing
            .as_ref()
            .is_some_and(|(_, _, kicked)| kicked.is_raised())
        {
            return End::Kicked;
        }
        if !viewer.writer.is_empty() {
            let closing = || viewer.ended().map(|_| CloseReason::Shutdown);
            match viewer.writer.flush(core, stream, closing).await {
                Ok(()) | Err(FlushEnd::Closed(_)) => {}
                Err(FlushEnd::Stalled) => {
                    core.stats.slow_closes.inc();
                    return End::Stalled;
                }
                Err(FlushEnd::Io(e)) => return End::Io(e),
            }
            continue;
        }
        // A publisher must not read more than the pool can take.
        if role.publishing.is_some() {
            drop(core.pool.acquire(READ_CHUNK_BYTES).await);
        }
        let deadline = if !session.is_connected() {
            Some(connect_deadline)
        } else if role.playing.is_some() {
            // Players say nothing while they play.
            None
        } else {
            Some(idle_deadline)
        };
        let kicked_publisher = role.publishing.as_ref().map(|(_, _, k)| Rc::clone(k));
        let mut first = [0u8; FIRST_READ_BYTES];
        let wake = {
            let readable = async { Wake::Read(stream.read(&mut first).await) };
            let kicked = async {
                viewer.writer.kick.kicked().await;
                Wake::Kicked
            };
            let kick_publisher = async {
                match &kicked_publisher {
                    Some(k) => k.wait().await,
                    None => std::future::pending::<()>().await,
                }
                Wake::Kicked
            };
            let timer = async {
                match deadline {
                    Some(d) => {
                        glommio::timer::sleep(d.saturating_duration_since(Instant::now())).await;
                    }
                    None => std::future::pending::<()>().await,
                }
                Wake::Timer
            };
            readable.or(kicked).or(kick_publisher).or(timer).await
        };
        let n = match wake {
            Wake::Kicked => continue,
            Wake::Timer => {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return End::Timeout;
                }
                continue;
            }
            Wake::Read(Err(e)) => return End::Io(e),
            Wake::Read(Ok(0)) => return End::PeerClosed,
            Wake::Read(Ok(n)) => n,
        };
        idle_deadline = Instant::now() + rt.idle_timeout;
        carry.extend_from_slice(first.get(..n).unwrap_or_default());
        if n == FIRST_READ_BYTES {
            // More may be waiting: take it without another wake-up.
            let at = carry.len();
            carry.resize(at + READ_CHUNK_BYTES, 0);
            let got =
                match recv_nonblocking(stream.as_raw_fd(), carry.get_mut(at..).unwrap_or_default())
                {
                    Ok(Some(0)) => {
                        carry.truncate(at);
                        return End::PeerClosed;
                    }
                    Ok(Some(got)) => got,
                    Ok(None) => 0,
                    Err(e) => return End::Io(e),
                };
            carry.truncate(at + got);
        }
        core.stats.bytes_in.add(carry.len() as u64);
        // Feed the session; stop at each event to answer it (answers may
        // wait: a publish claim asks the stream's owner core).
        loop {
            core.begin_batch();
            let fed = feed(core, session, role, &mut carry);
            write_output(session, viewer);
            core.end_batch();
            match fed {
                Ok(None) => break,
                Ok(Some(event)) => {
                    if let Err(end) = answer(core, rt, session, viewer, role, event).await {
                        return end;
                    }
                    write_output(session, viewer);
                }
                Err(end) => return end,
            }
        }
        if carry.is_empty() && carry.capacity() > FIRST_READ_BYTES {
            // A player sends next to nothing once it plays: the room a
            // handshake or a burst took is given back.
            carry = Vec::new();
        }
        reads += 1;
        if reads >= READS_PER_YIELD {
            reads = 0;
            futures_lite::future::yield_now().await;
        }
    }
}

/// Hands `carry` to the session until it takes no more or raises an
/// event; publishes the media it returns. Keeps the unconsumed bytes.
fn feed(
    core: &Core,
    session: &mut ServerSession,
    role: &Role,
    carry: &mut Vec<u8>,
) -> Result<Option<ServerEvent>, End> {
    let mut at = 0;
    let outcome = loop {
        if let Some(event) = session.poll_event() {
            break Ok(Some(event));
        }
        let input = carry.get(at..).unwrap_or_default();
        if input.is_empty() {
            break Ok(None);
        }
        let progress = match session.handle_input(input) {
            Ok(p) => p,
            Err(e) => break Err(End::Protocol(e.to_string())),
        };
        let consumed = progress.consumed;
        let had_media = progress.media.is_some();
        if let Some(media) = progress.media {
            publish_media(core, role, &media);
        }
        at += consumed;
        if consumed == 0 && !had_media {
            break Ok(None);
        }
    };
    carry.drain(..at.min(carry.len()));
    outcome
}

/// Packs a publisher's media message once and gives it to the hub.
fn publish_media(core: &Core, role: &Role, media: &MediaMessage<'_>) {
    let Some((stream_id, local, _)) = &role.publishing else {
        return;
    };
    if media.stream_id != *stream_id {
        return;
    }
    let kind = match media.kind {
        MediaKind::Audio => TagKind::Audio,
        MediaKind::Video => TagKind::Video,
        MediaKind::Data => TagKind::Script,
    };
    let tag = MediaTag::pack(&core.pool, kind, media.timestamp, media.payload);
    core.streams.publish(core, local, tag);
}

/// Writes what the session has to say.
fn write_output(session: &mut ServerSession, viewer: &Viewer) {
    let out = session.pending_output();
    let n = out.len();
    if n > 0 {
        viewer.write_raw(out);
        session.consume_output(n);
    }
}

/// `app/name` of a publish or play request, if it is well formed.
fn stream_name(app: &str, name: &str) -> Option<String> {
    let full = format!("{app}/{name}");
    shoal_protocols::config::validate_stream_rule_name(&full).ok()?;
    (name != "*").then_some(full)
}

/// The value of `key` in a query string.
fn query_value<'q>(query: &'q str, key: &str) -> Option<&'q str> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

/// Answers a publish or play request (or notes the end of one).
async fn answer(
    core: &Rc<Core>,
    rt: &MqttListenerRt,
    session: &mut ServerSession,
    viewer: &Rc<Viewer>,
    role: &mut Role,
    event: ServerEvent,
) -> Result<(), End> {
    use shoal_protocols::rtmp::status;
    let protocol = |e: shoal_protocols::rtmp::RtmpError| End::Protocol(e.to_string());
    match event {
        ServerEvent::Connect { app, tc_url, .. } => {
            debug!(listener = %rt.name, %app, %tc_url, "rtmp connect");
        }
        ServerEvent::Publish {
            stream_id,
            app,
            name,
            query,
            ..
        } => {
            let refuse = |session: &mut ServerSession, code: &str, why: String| {
                core.stats.stream_publish_refused.inc();
                if let Some(more) = rt.error_log.allow() {
                    warn!(listener = %rt.name, stream = %format!("{app}/{name}"), suppressed = more, "publish refused: {why}");
                }
                session
                    .reject_publish(stream_id, code, &why)
                    .map_err(protocol)
            };
            if role.publishing.is_some() || role.playing.is_some() {
                return refuse(
                    session,
                    status::PUBLISH_BAD_NAME,
                    "this connection already publishes or plays".into(),
                );
            }
            let Some(full) = stream_name(&app, &name) else {
                return refuse(
                    session,
                    status::PUBLISH_BAD_NAME,
                    format!("{app}/{name} is not a stream name (app/name)"),
                );
            };
            if let Err(why) = core
                .streams
                .may_publish(&full, query_value(&query, "key"), rt.auth)
            {
                return refuse(session, "NetStream.Publish.Unauthorized", why);
            }
            match core.streams.claim(core, &full).await {
                Ok(()) => {}
                Err(PublishRefusal::InUse) => {
                    return refuse(
                        session,
                        status::PUBLISH_BAD_NAME,
                        format!("{full} already has a publisher"),
                    )
                }
                Err(PublishRefusal::TooMany) => {
                    return refuse(
                        session,
                        "NetStream.Publish.Failed",
                        "max_streams streams are live".into(),
                    )
                }
                Err(PublishRefusal::NoAnswer) => {
                    return refuse(
                        session,
                        "NetStream.Publish.Failed",
                        "the stream's owner core did not answer".into(),
                    )
                }
            }
            if let Err(e) = session.accept_publish(stream_id) {
                core.streams.release(core, &full);
                return Err(protocol(e));
            }
            let publisher = publisher(role.peer);
            let kicked = Rc::clone(&publisher.kicked);
            let local = core.streams.start_publishing(core, &full, publisher);
            role.publishing = Some((stream_id, local, kicked));
            info!(listener = %rt.name, stream = %full, "publisher started");
        }
        ServerEvent::Play {
            stream_id,
            app,
            name,
            ..
        } => {
            let refuse = |session: &mut ServerSession, code: &str, why: String| {
                core.stats.stream_play_refused.inc();
                debug!(listener = %rt.name, stream = %format!("{app}/{name}"), "play refused: {why}");
                session.reject_play(stream_id, code, &why).map_err(protocol)
            };
            if role.publishing.is_some() || role.playing.is_some() {
                return refuse(
                    session,
                    status::PLAY_FAILED,
                    "this connection already publishes or plays".into(),
                );
            }
            let Some(full) = stream_name(&app, &name) else {
                return refuse(
                    session,
                    status::PLAY_STREAM_NOT_FOUND,
                    format!("{app}/{name} is not a stream name (app/name)"),
                );
            };
            if let Err(why) = core.streams.may_play(&full, rt.auth) {
                return refuse(session, status::PLAY_FAILED, why);
            }
            let wait = core.settings.borrow().streams.play_wait;
            if !core.streams.wait_live(&full, wait).await {
                return refuse(
                    session,
                    status::PLAY_STREAM_NOT_FOUND,
                    format!("{full} has no publisher"),
                );
            }
            session.accept_play(stream_id).map_err(protocol)?;
            // The status messages go before the first tag.
            write_output(session, viewer);
            viewer.set_proto(ViewerProto::Rtmp {
                stream_id,
                chunk_bytes: session.out_chunk_size(),
            });
            if !core.streams.add_viewer(core, &full, viewer) {
                viewer.end(ViewerEnd::Unpublished);
            }
            role.playing = Some((stream_id, full));
        }
        ServerEvent::Unpublish { stream_id } => {
            if role
                .publishing
                .as_ref()
                .is_some_and(|(id, _, _)| *id == stream_id)
            {
                if let Some((_, local, _)) = role.publishing.take() {
                    core.streams.stop_publishing(core, &local);
                }
            }
        }
        ServerEvent::CloseStream { stream_id } => {
            if role
                .playing
                .as_ref()
                .is_some_and(|(id, _)| *id == stream_id)
            {
                if let Some((_, name)) = role.playing.take() {
                    core.streams.remove_viewer(core, &name, viewer);
                }
            }
        }
    }
    Ok(())
}

fn publisher(peer: SocketAddr) -> Publisher {
    Publisher {
        peer,
        since: Instant::now(),
        kicked: Rc::new(LocalSignal::default()),
        video_codec: Default::default(),
        audio_codec: Default::default(),
        width: Default::default(),
        height: Default::default(),
    }
}
