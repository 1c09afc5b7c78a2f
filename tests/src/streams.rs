//! Live streams with real tools: an `ffmpeg` encoder that publishes over
//! RTMP, `ffmpeg`/`ffprobe` viewers over HTTP-FLV and RTMP that decode
//! every frame, `curl` for the HTTP side, a Python `websockets` client for
//! WebSocket-FLV (`tests/scripts/ws_flv_client.py`), and a raw TCP viewer
//! that never reads ([`SlowViewer`]).
//!
//! Every tool runs as a [`Program`]: its exit is noted (with the moment)
//! by a watcher thread, it is killed when it outlives its bound or is
//! dropped, and every wait on it is bounded.

use std::io::{self, Read, Write};
use std::mem::size_of;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::config::{Config, Listener};
use crate::log::Log;
use crate::mqtt::{script_path, PYTHON};
use crate::process::Dataplane;

/// The longest any tool of the suite may run before it is killed.
const TOOL_MAX: Duration = Duration::from_secs(60);

/// How long the capture threads get to read the last output of a tool
/// that has exited.
const OUTPUT_DRAIN: Duration = Duration::from_secs(2);

/// `SO_RCVBUF` of a [`SlowViewer`].
const SLOW_RCVBUF_BYTES: libc::c_int = 4096;

/// The MSS a [`SlowViewer`] announces. On loopback the MSS is ~64 KiB,
/// and the data plane's send buffer autotunes to megabytes that would
/// hold half a minute of a test stream; a small MSS keeps that buffer to
/// ~100 KB, so the viewer's queue in the data plane fills within seconds.
const SLOW_MSS_BYTES: libc::c_int = 536;

/// A data plane config with the listeners `rtmp` on `@port0@` and `http`
/// on `@port1@`, both `auth = "none"`.
pub fn stream_config() -> Config {
    Config::new()
        .listener(Listener::rtmp("rtmp", 0))
        .listener(Listener::http("http", 1))
}

/// `[runtime.streams]` with `key = value` lines (values in TOML), for
/// [`Config::raw_toml`].
pub fn stream_settings(settings: &[(&str, &str)]) -> String {
    let mut toml = String::from("[runtime.streams]\n");
    for (key, value) in settings {
        toml.push_str(&format!("{key} = {value}\n"));
    }
    toml
}

/// Where stream `app/name` is published and played on a data plane with
/// RTMP on `@port0@` and HTTP on `@port1@` (see [`stream_config`]).
#[derive(Debug, Clone)]
pub struct StreamAddr {
    /// The RTMP listener's port.
    pub rtmp_port: u16,
    /// The HTTP listener's port.
    pub http_port: u16,
    /// `app/name`.
    pub name: String,
}

impl StreamAddr {
    /// Stream `name` (`app/name`) on `dp`.
    pub fn of(dp: &Dataplane, name: &str) -> Self {
        Self {
            rtmp_port: dp.port(0),
            http_port: dp.port(1),
            name: name.to_owned(),
        }
    }

    /// `rtmp://127.0.0.1:PORT/app/name`.
    pub fn rtmp(&self) -> String {
        format!("rtmp://127.0.0.1:{}/{}", self.rtmp_port, self.name)
    }

    /// `/app/name.flv`.
    pub fn path(&self) -> String {
        format!("/{}.flv", self.name)
    }

    /// `http://127.0.0.1:PORT/app/name.flv`.
    pub fn http(&self) -> String {
        format!("http://127.0.0.1:{}{}", self.http_port, self.path())
    }

    /// `ws://127.0.0.1:PORT/app/name.flv`.
    pub fn ws(&self) -> String {
        format!("ws://127.0.0.1:{}{}", self.http_port, self.path())
    }
}

// ----- programs ------------------------------------------------------------

#[derive(Debug, Default)]
struct ProgramState {
    /// Its exit status and when the watcher saw it.
    exit: Option<(ExitStatus, Instant)>,
    stdout: Vec<u8>,
    stdout_closed: bool,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<ProgramState>,
    changed: Condvar,
    kill: AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, ProgramState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What a finished [`Program`] did.
#[derive(Debug, Clone)]
pub struct Finished {
    /// What the test calls it.
    pub name: String,
    /// Its exit status.
    pub status: ExitStatus,
    /// When it was seen to exit (within a few milliseconds).
    pub at: Instant,
    /// Its stdout.
    pub stdout: String,
    /// Its stderr.
    pub stderr: String,
}

impl Finished {
    /// Asserts exit code 0 and nothing on stderr (the tools run with
    /// `-v error`: any line there is an error).
    pub fn assert_clean(&self) {
        assert!(
            self.status.success() && self.stderr.trim().is_empty(),
            "{}: {}, stderr:\n{}",
            self.name,
            self.status,
            self.stderr
        );
    }
}

/// A tool running in the background; killed after its bound or on drop.
#[derive(Debug)]
pub struct Program {
    /// What the test calls it.
    pub name: String,
    shared: Arc<Shared>,
    stderr: Log,
}

impl Program {
    /// Starts `program` with `args`, stdin closed; its stderr is echoed
    /// to the test's output as `name`, its stdout is kept.
    pub fn spawn(name: &str, program: &str, args: &[String]) -> Self {
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {program}: {e}"));
        let tag = format!("{name} {}", child.id());
        eprintln!("[{tag}] {program} {}", args.join(" "));
        let stderr = Log::capture(child.stderr.take().expect("piped stderr"), tag.clone());
        let shared = Arc::new(Shared::default());
        let mut stdout = child.stdout.take().expect("piped stdout");
        let writer = Arc::clone(&shared);
        thread::Builder::new()
            .name(format!("stdout {tag}"))
            .spawn(move || {
                let mut chunk = [0u8; 16 * 1024];
                loop {
                    match stdout.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => writer.lock().stdout.extend_from_slice(&chunk[..n]),
                    }
                }
                writer.lock().stdout_closed = true;
                writer.changed.notify_all();
            })
            .expect("start a capture thread");
        let watcher = Arc::clone(&shared);
        thread::Builder::new()
            .name(format!("watch {tag}"))
            .spawn(move || watch(child, &watcher, TOOL_MAX))
            .expect("start a watcher thread");
        Self {
            name: name.to_owned(),
            shared,
            stderr,
        }
    }

    /// Whether it has exited.
    pub fn has_exited(&self) -> bool {
        self.shared.lock().exit.is_some()
    }

    /// Its stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.text()
    }

    /// Waits up to `timeout` for it to exit; returns what it did. Panics
    /// (after killing it) when it does not exit in time.
    pub fn wait(&self, timeout: Duration) -> Finished {
        let deadline = Instant::now() + timeout;
        let mut state = self.shared.lock();
        loop {
            if let Some((_, at)) = state.exit {
                if state.stdout_closed || at.elapsed() > OUTPUT_DRAIN {
                    break;
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                drop(state);
                self.kill();
                panic!(
                    "{} did not exit within {timeout:?}; stderr:\n{}",
                    self.name,
                    self.stderr()
                );
            }
            state = self
                .shared
                .changed
                .wait_timeout(state, left.min(Duration::from_millis(100)))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        let (status, at) = state.exit.expect("exited");
        let stdout = String::from_utf8_lossy(&state.stdout).into_owned();
        drop(state);
        let _ = self.stderr.wait_until(OUTPUT_DRAIN, |_| None::<()>);
        Finished {
            name: self.name.clone(),
            status,
            at,
            stdout,
            stderr: self.stderr(),
        }
    }

    /// Kills it (if it still runs).
    pub fn kill(&self) {
        self.shared.kill.store(true, Ordering::Relaxed);
    }
}

impl Drop for Program {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Owns the child: notes its exit, or kills it when asked or after `max`.
fn watch(mut child: Child, shared: &Shared, max: Duration) {
    let deadline = Instant::now() + max;
    let status = loop {
        if shared.kill.load(Ordering::Relaxed) || Instant::now() >= deadline {
            let _ = child.kill();
            break child.wait();
        }
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) => thread::sleep(Duration::from_millis(5)),
            Err(e) => break Err(e),
        }
    };
    let at = Instant::now();
    let status = status.unwrap_or_else(|e| panic!("wait for a tool: {e}"));
    shared.lock().exit = Some((status, at));
    shared.changed.notify_all();
}

// ----- the encoder ---------------------------------------------------------

/// `ffmpeg` publishing `seconds` of a 320x240 25 fps test picture (H.264,
/// a keyframe every second) and a 440 Hz tone (AAC) in real time (`-re`)
/// to `url` (`rtmp://...`).
pub fn publish_stream(name: &str, url: &str, seconds: u32) -> Program {
    let args = [
        "-hide_banner",
        "-nostdin",
        "-v",
        "error",
        "-re",
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=320x240:rate=25",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=44100",
        "-t",
        &seconds.to_string(),
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-tune",
        "zerolatency",
        "-g",
        "25",
        "-c:a",
        "aac",
        "-f",
        "flv",
        url,
    ];
    Program::spawn(name, "ffmpeg", &owned(&args))
}

fn owned(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| (*a).to_owned()).collect()
}

// ----- viewers that decode -------------------------------------------------

/// How a [`Viewer`] reads a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViewerTool {
    /// `ffmpeg -i URL`, listing every packet (`-c copy -f framecrc`) and
    /// decoding every frame (`-f null`) in one run.
    Ffmpeg,
    /// `ffprobe -show_streams -show_frames`: every frame decoded.
    Ffprobe,
}

/// What a viewer got.
#[derive(Debug, Clone, Default)]
pub struct Playback {
    /// `(codec_type, codec_name)` of each stream.
    pub streams: Vec<(String, String)>,
    /// Video frames (or packets) in the order they came.
    pub video_frames: usize,
    /// Audio frames (or packets).
    pub audio_frames: usize,
    /// Whether the first video frame is a keyframe.
    pub first_video_key: Option<bool>,
    /// Its picture type (ffprobe only).
    pub first_video_pict: Option<String>,
}

impl Playback {
    /// Whether a stream of `codec_type` (`video`, `audio`) was found.
    pub fn has(&self, codec_type: &str) -> bool {
        self.streams.iter().any(|(t, _)| t == codec_type)
    }
}

/// An `ffmpeg` or `ffprobe` process reading a stream until it ends.
#[derive(Debug)]
pub struct Viewer {
    /// The process.
    pub program: Program,
    tool: ViewerTool,
}

impl Viewer {
    /// Starts `tool` on `url` (`http://...flv` or `rtmp://...`).
    pub fn start(name: &str, tool: ViewerTool, url: &str) -> Self {
        let args: &[&str] = match tool {
            ViewerTool::Ffmpeg => &[
                "-hide_banner",
                "-nostdin",
                "-v",
                "error",
                "-i",
                url,
                "-map",
                "0",
                "-c",
                "copy",
                "-f",
                "framecrc",
                "pipe:1",
                "-map",
                "0",
                "-f",
                "null",
                "-",
            ],
            ViewerTool::Ffprobe => &[
                "-v",
                "error",
                "-show_streams",
                "-show_frames",
                "-show_entries",
                "stream=index,codec_type,codec_name:frame=media_type,key_frame,pict_type",
                "-of",
                "json=compact=1",
                url,
            ],
        };
        let program = match tool {
            ViewerTool::Ffmpeg => "ffmpeg",
            ViewerTool::Ffprobe => "ffprobe",
        };
        Self {
            program: Program::spawn(name, program, &owned(args)),
            tool,
        }
    }

    /// Waits for it to end; asserts a clean run (exit 0, nothing on
    /// stderr) and returns what it got.
    pub fn finish(&self, timeout: Duration) -> (Finished, Playback) {
        let finished = self.program.wait(timeout);
        finished.assert_clean();
        let playback = match self.tool {
            ViewerTool::Ffmpeg => parse_framecrc(&finished.stdout),
            ViewerTool::Ffprobe => parse_probe(&finished.stdout),
        };
        eprintln!("{}: {playback:?}", self.program.name);
        (finished, playback)
    }

    /// [`finish`](Self::finish), and asserts that the viewer got audio and
    /// video, at least `min_video_frames` video frames, and a keyframe
    /// first (an I picture, where the tool says).
    pub fn finish_valid(&self, timeout: Duration, min_video_frames: usize) -> Finished {
        let (finished, got) = self.finish(timeout);
        let name = &self.program.name;
        assert!(got.has("video") && got.has("audio"), "{name}: {got:?}");
        assert!(
            got.video_frames >= min_video_frames && got.audio_frames > 0,
            "{name}: wanted at least {min_video_frames} video frames: {got:?}"
        );
        assert_eq!(got.first_video_key, Some(true), "{name}: {got:?}");
        if self.tool == ViewerTool::Ffprobe {
            assert_eq!(
                got.first_video_pict.as_deref(),
                Some("I"),
                "{name}: {got:?}"
            );
        }
        finished
    }
}

/// `framecrc` of a `-c copy` output: `#media_type N: video` and
/// `#codec_id N: h264` lines, then `N, dts, pts, duration, size, crc[,
/// F=0x0]` per packet (the flags only when it is not a keyframe).
fn parse_framecrc(text: &str) -> Playback {
    let mut types: Vec<(String, String, String)> = Vec::new();
    let mut got = Playback::default();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix('#') {
            let Some((key, value)) = rest.split_once(':') else {
                continue;
            };
            let Some((key, index)) = key.split_once(' ') else {
                continue;
            };
            let entry = match types.iter_mut().find(|(i, _, _)| i == index) {
                Some(entry) => entry,
                None => {
                    types.push((index.to_owned(), String::new(), String::new()));
                    types.last_mut().expect("just pushed")
                }
            };
            match key {
                "media_type" => entry.1 = value.trim().to_owned(),
                "codec_id" => entry.2 = value.trim().to_owned(),
                _ => {}
            }
            continue;
        }
        let Some((index, _)) = line.split_once(',') else {
            continue;
        };
        match types.iter().find(|(i, _, _)| i == index.trim()) {
            Some((_, t, _)) if t == "video" => {
                if got.video_frames == 0 {
                    got.first_video_key = Some(!line.contains("F=0x"));
                }
                got.video_frames += 1;
            }
            Some((_, t, _)) if t == "audio" => got.audio_frames += 1,
            _ => {}
        }
    }
    got.streams = types.into_iter().map(|(_, t, c)| (t, c)).collect();
    got
}

/// `ffprobe -of json` with `streams` and `frames`.
fn parse_probe(text: &str) -> Playback {
    let json: Value = serde_json::from_str(text)
        .unwrap_or_else(|e| panic!("ffprobe printed no JSON ({e}): {text}"));
    let mut got = Playback::default();
    for s in json["streams"].as_array().into_iter().flatten() {
        let field = |k: &str| s[k].as_str().unwrap_or_default().to_owned();
        got.streams.push((field("codec_type"), field("codec_name")));
    }
    for f in json["frames"].as_array().into_iter().flatten() {
        match f["media_type"].as_str() {
            Some("video") => {
                if got.video_frames == 0 {
                    got.first_video_key = Some(f["key_frame"].as_u64() == Some(1));
                    got.first_video_pict = f["pict_type"].as_str().map(str::to_owned);
                }
                got.video_frames += 1;
            }
            Some("audio") => got.audio_frames += 1,
            _ => {}
        }
    }
    got
}

// ----- HTTP and WebSocket --------------------------------------------------

/// `curl` reading `url` to its end: the response head (`-D -`) on
/// stdout, the body discarded. curl exits 0 only when a chunked body ends
/// with its terminating chunk.
pub fn curl_viewer(name: &str, url: &str) -> Program {
    Program::spawn(
        name,
        "curl",
        &owned(&["-sS", "-N", "-D", "-", "-o", "/dev/null", url]),
    )
}

/// The status code of a `GET url` (curl, to its end).
pub fn http_status(url: &str) -> u16 {
    let finished = Program::spawn(
        "curl",
        "curl",
        &owned(&["-sS", "-o", "/dev/null", "-w", "%{http_code}", url]),
    )
    .wait(Duration::from_secs(10));
    finished
        .stdout
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("curl said no status: {finished:?}"))
}

/// The header `name` of a response head (as `curl -D -` prints it).
pub fn response_header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
}

/// `tests/scripts/ws_flv_client.py` on `url`: reads until the server
/// closes, or closes itself after `tags` tags.
pub fn ws_flv_client(name: &str, url: &str, tags: Option<u32>) -> Program {
    let script = script_path("ws_flv_client.py");
    let mut args = vec![
        script.to_string_lossy().into_owned(),
        "--url".to_owned(),
        url.to_owned(),
    ];
    if let Some(n) = tags {
        args.extend(["--tags".to_owned(), n.to_string()]);
    }
    Program::spawn(name, PYTHON, &args)
}

/// The JSON summary a finished `ws_flv_client.py` printed; asserts that
/// it exited 0 and found nothing wrong with the FLV.
pub fn ws_flv_summary(finished: &Finished) -> Value {
    let line = finished.stdout.lines().last().unwrap_or_default();
    let summary: Value = serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("{}: no JSON ({e}): {finished:?}", finished.name));
    assert!(finished.status.success(), "{}: {summary}", finished.name);
    assert_eq!(summary["errors"], serde_json::json!([]), "{summary}");
    summary
}

// ----- a viewer that never reads -------------------------------------------

/// How a [`SlowViewer`]'s connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlowEnd {
    /// A clean end of the byte stream (FIN).
    Eof,
    /// A reset.
    Reset,
}

/// A raw TCP viewer that sends `GET /app/name.flv` with a tiny receive
/// buffer and MSS, then reads nothing until told to.
#[derive(Debug)]
pub struct SlowViewer {
    stream: TcpStream,
    /// Its address, as the data plane logs it (`peer=`).
    pub local: SocketAddr,
}

impl SlowViewer {
    /// Connects to `127.0.0.1:port` and sends the request for `path`.
    pub fn request(port: u16, path: &str) -> Self {
        let fd = small_window_socket().expect("a socket with a small window");
        connect(&fd, SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)).expect("connect");
        let mut stream = TcpStream::from(fd);
        let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .expect("send the request");
        let local = stream.local_addr().expect("local address");
        Self { stream, local }
    }

    /// Reads everything until the connection ends (within `timeout`).
    pub fn read_to_end(&mut self, timeout: Duration) -> (Vec<u8>, SlowEnd) {
        let deadline = Instant::now() + timeout;
        let mut got = Vec::new();
        let mut chunk = [0u8; 64 * 1024];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "the connection did not end within {timeout:?} ({} bytes read)",
                got.len()
            );
            self.stream
                .set_read_timeout(Some(left))
                .expect("set a read timeout");
            match self.stream.read(&mut chunk) {
                Ok(0) => return (got, SlowEnd::Eof),
                Ok(n) => got.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                    return (got, SlowEnd::Reset)
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => panic!("read ({} bytes so far): {e}", got.len()),
            }
        }
    }
}

/// An IPv4 TCP socket with [`SLOW_RCVBUF_BYTES`] and [`SLOW_MSS_BYTES`]
/// set before it connects (they shape the handshake).
fn small_window_socket() -> io::Result<OwnedFd> {
    // SAFETY: socket(2) takes no pointers; it returns a new descriptor or -1.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` was just opened and nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    set_int_option(&fd, libc::SOL_SOCKET, libc::SO_RCVBUF, SLOW_RCVBUF_BYTES)?;
    set_int_option(&fd, libc::IPPROTO_TCP, libc::TCP_MAXSEG, SLOW_MSS_BYTES)?;
    Ok(fd)
}

fn set_int_option(
    fd: &OwnedFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: the pointer and length describe `value`, which lives across
    // the call; `fd` is an open socket.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            std::ptr::addr_of!(value).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn connect(fd: &OwnedFd, addr: SocketAddrV4) -> io::Result<()> {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*addr.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: the pointer and length describe `sin`, a complete
    // sockaddr_in that lives across the call; `fd` is an open socket.
    let rc = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            std::ptr::addr_of!(sin).cast(),
            size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framecrc_of_a_copied_stream_counts_packets_and_sees_the_first_key() {
        // As ffmpeg 5.1 prints it for an FLV of H.264 and AAC.
        let text = "#extradata 0:       37, 0xdb490b0d\n\
                    #tb 0: 1/1000\n\
                    #media_type 0: video\n\
                    #codec_id 0: h264\n\
                    #tb 1: 1/1000\n\
                    #media_type 1: audio\n\
                    #codec_id 1: aac\n\
                    1,          0,          0,       23,      258, 0x2c5b786a\n\
                    0,         23,         23,       40,     8936, 0xe1e3414b\n\
                    1,         23,         23,       23,      258, 0x8057765e\n\
                    0,         63,         63,       40,     2609, 0xfa890a90, F=0x0\n";
        let got = parse_framecrc(text);
        assert_eq!(
            got.streams,
            [
                ("video".into(), "h264".into()),
                ("audio".into(), "aac".into())
            ]
        );
        assert_eq!((got.video_frames, got.audio_frames), (2, 2));
        assert_eq!(got.first_video_key, Some(true));
        let later = text.replace(", 0xe1e3414b", ", 0xe1e3414b, F=0x0");
        assert_eq!(parse_framecrc(&later).first_video_key, Some(false));
    }

    #[test]
    fn probe_json_gives_streams_and_the_first_video_frame() {
        let text = r#"{ "frames": [
            { "media_type": "audio", "key_frame": 1 },
            { "media_type": "video", "key_frame": 1, "pict_type": "I" },
            { "media_type": "video", "key_frame": 0, "pict_type": "P" } ],
          "streams": [ { "index": 0, "codec_name": "h264", "codec_type": "video" },
            { "index": 1, "codec_name": "aac", "codec_type": "audio" } ] }"#;
        let got = parse_probe(text);
        assert!(got.has("video") && got.has("audio"));
        assert_eq!((got.video_frames, got.audio_frames), (2, 1));
        assert_eq!(got.first_video_key, Some(true));
        assert_eq!(got.first_video_pict.as_deref(), Some("I"));
    }

    #[test]
    fn response_headers_are_found_by_any_case() {
        let head = "HTTP/1.1 200 OK\r\ncontent-type: video/x-flv\r\nTransfer-Encoding: chunked\r\n";
        assert_eq!(response_header(head, "Content-Type"), Some("video/x-flv"));
        assert_eq!(response_header(head, "transfer-encoding"), Some("chunked"));
        assert_eq!(response_header(head, "Connection"), None);
    }
}
