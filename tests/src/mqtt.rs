//! Real MQTT clients against the data plane's broker: `mosquitto_pub` runs,
//! `mosquitto_sub` processes whose messages are parsed as they come, and
//! a driven Python client ([`MqttClient`], `tests/scripts/mqtt_client.py`:
//! paho-mqtt, or raw packets over TCP or WebSocket) that takes one command
//! at a time and reports what the broker answered.
//!
//! Every wait is bounded: helpers panic with what they were waiting for,
//! and every client process is killed on drop.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::config::{Config, Listener};
use crate::log::Log;
use crate::process::{spawn_captured, Dataplane, RunOutput};
use crate::stats::Stats;
use crate::WAIT;

/// The Python that has paho-mqtt 1.6 and websockets (Debian's packages).
pub const PYTHON: &str = "/usr/bin/python3";

/// How long a client process may live at most (the script's own bound).
const CLIENT_MAX_SECONDS: u32 = 90;

/// How long a one-shot `mosquitto_pub` run may take.
const PUB_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the capture threads get to read the last output of a program
/// that has exited.
const OUTPUT_DRAIN: Duration = Duration::from_secs(2);

/// MQTT protocol version of a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MqttVersion {
    /// 3.1.1 (protocol level 4).
    V311,
    /// 5.0.
    V5,
}

impl MqttVersion {
    /// Both, oldest first.
    pub const BOTH: [Self; 2] = [Self::V311, Self::V5];

    /// `mosquitto_pub -V ...`.
    pub fn mosquitto(self) -> &'static str {
        match self {
            Self::V311 => "mqttv311",
            Self::V5 => "mqttv5",
        }
    }

    fn script(self) -> &'static str {
        match self {
            Self::V311 => "311",
            Self::V5 => "5",
        }
    }
}

/// A data plane config with one MQTT listener, `mqtt` on `@port0@`.
pub fn mqtt_config() -> Config {
    Config::new().listener(Listener::mqtt("mqtt", 0))
}

/// `[runtime.mqtt]` with `key = value` lines (values in TOML), for
/// [`Config::raw_toml`].
pub fn mqtt_settings(settings: &[(&str, &str)]) -> String {
    let mut toml = String::from("[runtime.mqtt]\n");
    for (key, value) in settings {
        toml.push_str(&format!("{key} = {value}\n"));
    }
    toml
}

/// A script of `tests/scripts/`.
pub fn script_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join(name)
}

/// Runs `program` with `args` to its end, `stdin` written to it, killing
/// it after `timeout`.
pub fn run_program(
    program: impl AsRef<OsStr>,
    args: &[impl AsRef<OsStr>],
    stdin: &[u8],
    timeout: Duration,
) -> RunOutput {
    let program = program.as_ref();
    let tag = PathBuf::from(program)
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let (mut child, stderr, stdout) =
        spawn_captured(Command::new(program).args(args), Stdio::piped(), &tag);
    let mut input = child.stdin.take().expect("piped stdin");
    let text = stdin.to_vec();
    // Written from a thread: a program that exits without reading all of
    // it must not block the test.
    let writer = thread::spawn(move || {
        let _ = input.write_all(&text);
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let args: Vec<_> = args.iter().map(|a| a.as_ref().to_string_lossy()).collect();
            panic!("{tag} {args:?} did not exit within {timeout:?}");
        }
        thread::sleep(Duration::from_millis(10));
    };
    let _ = writer.join();
    for log in [&stderr, &stdout] {
        let _ = log.wait_until(OUTPUT_DRAIN, |_| None::<()>);
    }
    RunOutput {
        status,
        stdout: stdout.text(),
        stderr: stderr.text(),
    }
}

/// `mosquitto_pub -h 127.0.0.1 -p PORT -V VERSION ARGS` to its end
/// (`stdin` feeds `-l` / `-s`).
pub fn mosquitto_pub(port: u16, version: MqttVersion, args: &[&str], stdin: &[u8]) -> RunOutput {
    let port = port.to_string();
    let mut all = vec!["-h", "127.0.0.1", "-p", &port, "-V", version.mosquitto()];
    all.extend_from_slice(args);
    run_program("mosquitto_pub", &all, stdin, PUB_TIMEOUT)
}

/// [`mosquitto_pub`] that must succeed.
pub fn publish(port: u16, version: MqttVersion, args: &[&str]) {
    let out = mosquitto_pub(port, version, args, b"");
    out.assert_exit_code(0);
}

/// Publishes `lines`, one message each (`mosquitto_pub -l`), at `qos` on
/// `topic`; must succeed.
pub fn publish_lines(port: u16, version: MqttVersion, topic: &str, qos: u8, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    let qos = qos.to_string();
    let out = mosquitto_pub(
        port,
        version,
        &["-t", topic, "-q", &qos, "-l"],
        text.as_bytes(),
    );
    out.assert_exit_code(0);
}

// ----- mosquitto_sub -----------------------------------------------------

/// One message a `mosquitto_sub` printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubMessage {
    /// The retain flag as delivered.
    pub retain: bool,
    /// The QoS as delivered.
    pub qos: u8,
    /// Its topic.
    pub topic: String,
    /// Its payload (UTF-8).
    pub payload: String,
}

#[derive(Debug, Default)]
struct SubState {
    messages: Vec<SubMessage>,
    /// SUBACKs received.
    subscribed: usize,
    /// Lines that are not messages (debug output, errors).
    other: Vec<String>,
    closed: bool,
}

/// A `mosquitto_sub` process (`-d`, messages printed as
/// `MSG RETAIN QOS TOPIC PAYLOAD`, run under `stdbuf -oL`), killed on
/// drop.
#[derive(Debug)]
pub struct MosquittoSub {
    child: Child,
    state: Arc<(Mutex<SubState>, Condvar)>,
    stderr: Log,
    status: Option<ExitStatus>,
    /// What the test calls it.
    pub name: String,
}

/// How a [`MosquittoSub`] is started.
#[derive(Debug, Clone)]
pub struct SubOptions {
    version: MqttVersion,
    qos: u8,
    args: Vec<String>,
    quiet: bool,
}

impl SubOptions {
    /// `version`, subscriptions at QoS 2.
    pub fn new(version: MqttVersion) -> Self {
        Self {
            version,
            qos: 2,
            args: Vec::new(),
            quiet: false,
        }
    }

    /// The QoS of its subscriptions.
    pub fn qos(mut self, qos: u8) -> Self {
        self.qos = qos;
        self
    }

    /// More `mosquitto_sub` arguments (`-i ID`, `--will-topic T`, ...).
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|a| (*a).to_owned()));
        self
    }

    /// Messages are kept but not echoed to the test's output (loads).
    pub fn quiet(mut self) -> Self {
        self.quiet = true;
        self
    }
}

impl MosquittoSub {
    /// Starts `mosquitto_sub` on `port` for `topics` and waits for its
    /// SUBACK.
    pub fn start(name: &str, port: u16, topics: &[&str], options: &SubOptions) -> Self {
        let sub = Self::spawn(name, port, topics, options);
        sub.wait_subscribed(WAIT);
        sub
    }

    /// Starts `mosquitto_sub` without waiting for anything.
    pub fn spawn(name: &str, port: u16, topics: &[&str], options: &SubOptions) -> Self {
        // Line-buffered: mosquitto_sub flushes its stdout only after a
        // message, and the SUBACK line must be seen before any.
        let mut command = Command::new("stdbuf");
        command
            .args(["-oL", "mosquitto_sub"])
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(["-V", options.version.mosquitto()])
            .args(["-q", &options.qos.to_string()])
            .args(["-d", "-F", "MSG %r %q %t %p"])
            .args(&options.args);
        for topic in topics {
            command.args(["-t", topic]);
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start mosquitto_sub: {e}"));
        let tag = format!("{name} {}", child.id());
        let stderr = Log::capture(
            child.stderr.take().expect("piped stderr"),
            format!("{tag} stderr"),
        );
        let state = Arc::new((Mutex::new(SubState::default()), Condvar::new()));
        let stdout = child.stdout.take().expect("piped stdout");
        let writer = Arc::clone(&state);
        let quiet = options.quiet;
        thread::Builder::new()
            .name(format!("capture {tag}"))
            .spawn(move || read_sub_output(stdout, &writer, &tag, quiet))
            .expect("start a capture thread");
        Self {
            child,
            state,
            stderr,
            status: None,
            name: name.to_owned(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, SubState> {
        self.state.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wait<T>(
        &self,
        timeout: Duration,
        mut select: impl FnMut(&SubState) -> Option<T>,
    ) -> Result<T, String> {
        let deadline = Instant::now() + timeout;
        let mut state = self.lock();
        loop {
            if let Some(found) = select(&state) {
                return Ok(found);
            }
            if state.closed {
                return Err(format!(
                    "{} ended its output; it said:\n{}\n{}",
                    self.name,
                    state.other.join("\n"),
                    self.stderr.text()
                ));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "timed out after {timeout:?}; {} had {} messages",
                    self.name,
                    state.messages.len()
                ));
            }
            state = self
                .state
                .1
                .wait_timeout(state, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Waits for its SUBACK.
    pub fn wait_subscribed(&self, timeout: Duration) {
        if let Err(why) = self.wait(timeout, |s| (s.subscribed > 0).then_some(())) {
            panic!("{}: no SUBACK: {why}", self.name);
        }
    }

    /// Every message so far.
    pub fn messages(&self) -> Vec<SubMessage> {
        self.lock().messages.clone()
    }

    /// Waits until it has `count` messages; returns them all.
    pub fn wait_messages(&self, count: usize, timeout: Duration) -> Vec<SubMessage> {
        self.wait(timeout, |s| {
            (s.messages.len() >= count).then(|| s.messages.clone())
        })
        .unwrap_or_else(|why| {
            panic!(
                "{}: wanted {count} messages: {why}; got {}",
                self.name,
                summary(&self.messages())
            )
        })
    }

    /// Waits until `done` holds for the messages so far; returns them.
    pub fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&[SubMessage]) -> bool,
    ) -> Vec<SubMessage> {
        self.wait(timeout, |s| done(&s.messages).then(|| s.messages.clone()))
            .unwrap_or_else(|why| {
                let got = self.messages();
                panic!(
                    "{}: never {what}: {why}; got {} messages",
                    self.name,
                    got.len()
                )
            })
    }

    /// Waits for a message with `payload`; returns every message so far.
    pub fn wait_payload(&self, payload: &str, timeout: Duration) -> Vec<SubMessage> {
        self.wait(timeout, |s| {
            s.messages
                .iter()
                .any(|m| m.payload == payload)
                .then(|| s.messages.clone())
        })
        .unwrap_or_else(|why| {
            panic!(
                "{}: no message {payload:?}: {why}; got {}",
                self.name,
                summary(&self.messages())
            )
        })
    }

    /// `kill -9`, and reaped.
    pub fn kill9(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            self.status = self.child.wait().ok();
        }
    }

    /// Waits for it to exit on its own.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.status {
                return status;
            }
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                self.status = Some(status);
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {timeout:?}",
                self.name
            );
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for MosquittoSub {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn read_sub_output(
    from: impl std::io::Read,
    state: &(Mutex<SubState>, Condvar),
    tag: &str,
    quiet: bool,
) {
    let mut reader = BufReader::new(from);
    let mut raw = Vec::new();
    loop {
        raw.clear();
        match reader.read_until(b'\n', &mut raw) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let line = String::from_utf8_lossy(&raw).trim_end().to_owned();
        let message = parse_sub_line(&line);
        if !quiet || message.is_none() {
            eprintln!("[{tag}] {line}");
        }
        let mut s = state.0.lock().unwrap_or_else(|e| e.into_inner());
        match message {
            Some(m) => s.messages.push(m),
            None => {
                if line.starts_with("Subscribed (mid:") {
                    s.subscribed += 1;
                }
                s.other.push(line);
            }
        }
        drop(s);
        state.1.notify_all();
    }
    state.0.lock().unwrap_or_else(|e| e.into_inner()).closed = true;
    state.1.notify_all();
}

/// Messages for a failure message: all of them when few, else the count
/// per sender (see [`by_sender`]) with the first and last few.
fn summary(messages: &[SubMessage]) -> String {
    if messages.len() <= 20 {
        return format!("{messages:?}");
    }
    let counts: BTreeMap<String, usize> = by_sender(messages.iter().map(|m| m.payload.as_str()))
        .into_iter()
        .map(|(sender, seqs)| (sender, seqs.len()))
        .collect();
    format!(
        "{} messages, per sender {counts:?}; first {:?}; last {:?}",
        messages.len(),
        &messages[..5],
        &messages[messages.len() - 5..]
    )
}

fn parse_sub_line(line: &str) -> Option<SubMessage> {
    let rest = line.strip_prefix("MSG ")?;
    let mut parts = rest.splitn(4, ' ');
    let retain = parts.next()? == "1";
    let qos = parts.next()?.parse().ok()?;
    let topic = parts.next()?.to_owned();
    let payload = parts.next().unwrap_or("").to_owned();
    Some(SubMessage {
        retain,
        qos,
        topic,
        payload,
    })
}

// ----- the driven Python client -----------------------------------------

/// Which client library `mqtt_client.py` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// paho-mqtt 1.6.
    Paho,
    /// The raw packets of `mqttwire.py`.
    Raw,
}

/// How the client reaches the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// MQTT on TCP (an `mqtt` listener).
    Tcp,
    /// MQTT in WebSocket frames at `/mqtt` (an `http` listener).
    WebSocket,
}

/// A CONNECT to send.
#[derive(Debug, Clone)]
pub struct Connect {
    fields: serde_json::Map<String, Value>,
}

impl Connect {
    /// Client id `id`, clean session / clean start.
    pub fn new(id: &str) -> Self {
        let mut fields = serde_json::Map::new();
        fields.insert("cmd".into(), json!("connect"));
        fields.insert("id".into(), json!(id));
        fields.insert("clean".into(), json!(true));
        Self { fields }
    }

    /// Clean session / clean start off: the session is resumed.
    pub fn resume(mut self) -> Self {
        self.fields.insert("clean".into(), json!(false));
        self
    }

    /// Session Expiry Interval (5.0), seconds.
    pub fn expiry(mut self, secs: u32) -> Self {
        self.fields.insert("expiry".into(), json!(secs));
        self
    }

    /// User name and password.
    pub fn login(mut self, username: &str, password: &str) -> Self {
        self.fields.insert("username".into(), json!(username));
        self.fields.insert("password".into(), json!(password));
        self
    }

    /// A will on `topic` with `payload`, QoS 1, delayed `delay_secs` (5.0).
    pub fn will(mut self, topic: &str, payload: &str, delay_secs: u32) -> Self {
        self.fields.insert(
            "will".into(),
            json!({ "topic": topic, "payload": payload, "qos": 1, "delay": delay_secs }),
        );
        self
    }
}

/// The broker's CONNACK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnAck {
    /// Return code (3.1.1) or reason code (5.0).
    pub code: u8,
    /// Session Present.
    pub session_present: bool,
}

/// A message a [`MqttClient`] received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// Its topic.
    pub topic: String,
    /// Its payload (UTF-8).
    pub payload: String,
    /// The QoS as delivered.
    pub qos: u8,
    /// The retain flag as delivered.
    pub retain: bool,
}

/// One `tests/scripts/mqtt_client.py` process: one MQTT client driven one
/// command at a time. Killed on drop.
#[derive(Debug)]
pub struct MqttClient {
    child: Child,
    stdin: Option<ChildStdin>,
    events: Log,
    stderr: Log,
    /// Event lines already taken, by index.
    taken: Vec<bool>,
    /// What the test calls it.
    pub name: String,
}

impl MqttClient {
    /// A paho client over TCP.
    pub fn paho(name: &str, port: u16, version: MqttVersion) -> Self {
        Self::start(name, Backend::Paho, Transport::Tcp, port, version)
    }

    /// A raw-packet client over TCP.
    pub fn raw(name: &str, port: u16, version: MqttVersion) -> Self {
        Self::start(name, Backend::Raw, Transport::Tcp, port, version)
    }

    /// Starts the script and waits for it to be ready.
    pub fn start(
        name: &str,
        backend: Backend,
        transport: Transport,
        port: u16,
        version: MqttVersion,
    ) -> Self {
        let script = script_path("mqtt_client.py");
        let mut command = Command::new(PYTHON);
        command
            .arg(&script)
            .args([
                "--backend",
                match backend {
                    Backend::Paho => "paho",
                    Backend::Raw => "raw",
                },
            ])
            .args(["--port", &port.to_string()])
            .args(["--version", version.script()])
            .args([
                "--transport",
                match transport {
                    Transport::Tcp => "tcp",
                    Transport::WebSocket => "websockets",
                },
            ])
            .args(["--max-seconds", &CLIENT_MAX_SECONDS.to_string()]);
        let (mut child, stderr, events) = spawn_captured(&mut command, Stdio::piped(), name);
        let stdin = child.stdin.take();
        let mut client = Self {
            child,
            stdin,
            events,
            stderr,
            taken: Vec::new(),
            name: name.to_owned(),
        };
        client.take(&["ready"], WAIT);
        client
    }

    /// Sends one command.
    pub fn send(&mut self, command: &Value) {
        let line = format!("{command}\n");
        let stdin = self.stdin.as_mut().expect("the client's stdin is open");
        if let Err(e) = stdin.write_all(line.as_bytes()) {
            panic!(
                "{}: write a command: {e}; stderr:\n{}",
                self.name,
                self.stderr.text()
            );
        }
    }

    /// The first event not taken yet whose kind is one of `kinds`, taken;
    /// `None` when none came within `timeout`.
    pub fn try_take(&mut self, kinds: &[&str], timeout: Duration) -> Option<Value> {
        let taken = &mut self.taken;
        let found = self.events.wait_until(timeout, |lines| {
            lines.iter().enumerate().find_map(|(i, line)| {
                if taken.get(i).copied().unwrap_or(false) {
                    return None;
                }
                let event: Value = serde_json::from_str(&line.text).ok()?;
                let kind = event.get("event")?.as_str()?;
                kinds.contains(&kind).then_some((i, event))
            })
        });
        let (i, event) = found.ok()?;
        if taken.len() <= i {
            taken.resize(i + 1, false);
        }
        taken[i] = true;
        Some(event)
    }

    /// [`MqttClient::try_take`] that must find one.
    pub fn take(&mut self, kinds: &[&str], timeout: Duration) -> Value {
        self.try_take(kinds, timeout).unwrap_or_else(|| {
            panic!(
                "{}: no {kinds:?} event within {timeout:?}; events:\n{}\nstderr:\n{}",
                self.name,
                self.events.text(),
                self.stderr.text()
            )
        })
    }

    /// Sends CONNECT; returns the CONNACK, or what went wrong instead.
    pub fn try_connect(&mut self, connect: &Connect) -> Result<ConnAck, String> {
        self.send(&Value::Object(connect.fields.clone()));
        let event = self.take(&["connack", "connect_error", "closed"], WAIT);
        match event["event"].as_str() {
            Some("connack") => Ok(ConnAck {
                code: u8::try_from(event["code"].as_u64().unwrap_or(255)).unwrap_or(255),
                session_present: event["session_present"].as_bool().unwrap_or(false),
            }),
            _ => Err(event.to_string()),
        }
    }

    /// Connects; the CONNACK must accept.
    pub fn connect(&mut self, connect: &Connect) -> ConnAck {
        let ack = self
            .try_connect(connect)
            .unwrap_or_else(|e| panic!("{}: connect: {e}", self.name));
        assert_eq!(ack.code, 0, "{}: CONNACK refused: {ack:?}", self.name);
        ack
    }

    /// Subscribes to `filters` in one SUBSCRIBE; returns the SUBACK's codes.
    pub fn subscribe(&mut self, filters: &[(&str, u8)]) -> Vec<u8> {
        self.send(&json!({ "cmd": "subscribe", "filters": filters }));
        let event = self.take(&["suback"], WAIT);
        event["codes"]
            .as_array()
            .map(|codes| {
                codes
                    .iter()
                    .map(|c| u8::try_from(c.as_u64().unwrap_or(255)).unwrap_or(255))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Publishes and waits for the end of its flow (QoS 0: written);
    /// returns the reason code of the acknowledgement (0 for success).
    pub fn publish(&mut self, topic: &str, payload: &str, qos: u8) -> u8 {
        self.send(&json!({ "cmd": "publish", "topic": topic, "payload": payload, "qos": qos }));
        let event = self.take(&["published"], WAIT);
        u8::try_from(event["code"].as_u64().unwrap_or(255)).unwrap_or(255)
    }

    /// Publishes a payload of `size` bytes without waiting.
    pub fn publish_size(&mut self, topic: &str, size: usize, qos: u8) {
        self.send(&json!({ "cmd": "publish", "topic": topic, "size": size, "qos": qos }));
    }

    /// The next message, taken.
    pub fn next_message(&mut self, timeout: Duration) -> Received {
        let event = self.take(&["message"], timeout);
        received(&event)
    }

    /// The next message if one comes within `timeout`.
    pub fn try_next_message(&mut self, timeout: Duration) -> Option<Received> {
        self.try_take(&["message"], timeout).map(|e| received(&e))
    }

    /// `n` messages, taken.
    pub fn messages(&mut self, n: usize, timeout: Duration) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        (0..n)
            .map(|i| {
                let left = deadline.saturating_duration_since(Instant::now());
                self.try_take(&["message"], left)
                    .map(|e| received(&e))
                    .unwrap_or_else(|| {
                        panic!(
                            "{}: got {i} of {n} messages within {timeout:?}; events:\n{}",
                            self.name,
                            self.events.text()
                        )
                    })
            })
            .collect()
    }

    /// Clean DISCONNECT; waits for the connection to end.
    pub fn disconnect(&mut self) {
        self.send(&json!({ "cmd": "disconnect" }));
        self.take(&["closed"], WAIT);
    }

    /// Waits for the broker to end the connection: the reason code of its
    /// DISCONNECT (5.0), or `None` when it only closed.
    pub fn wait_closed_by_server(&mut self, timeout: Duration) -> Option<u8> {
        let event = self.take(&["server_disconnect", "closed"], timeout);
        if event["event"] == "server_disconnect" {
            self.take(&["closed"], timeout);
            return event["code"].as_u64().and_then(|c| u8::try_from(c).ok());
        }
        None
    }

    /// `kill -9`, and reaped.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for MqttClient {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn received(event: &Value) -> Received {
    Received {
        topic: event["topic"].as_str().unwrap_or_default().to_owned(),
        payload: event["payload"].as_str().unwrap_or_default().to_owned(),
        qos: u8::try_from(event["qos"].as_u64().unwrap_or(255)).unwrap_or(255),
        retain: event["retain"].as_bool().unwrap_or(false),
    }
}

// ----- where connections and sessions are -------------------------------

/// A per-core figure from `stats`.
pub fn per_core(stats: &Stats, name: &str) -> Vec<u64> {
    stats.cores.iter().map(|c| c.get(name)).collect()
}

/// Waits for stats in which `name` sums to `total`; returns the figure of
/// every core.
pub fn wait_per_core(dp: &Dataplane, name: &str, total: u64) -> Vec<u64> {
    let stats = dp.wait_for_stats(&format!("{name} = {total}"), WAIT, |s| s.sum(name) == total);
    per_core(&stats, name)
}

/// The only core on which `name` is not 0 (waiting for `name` to sum to 1).
pub fn core_with_one(dp: &Dataplane, name: &str) -> usize {
    let figures = wait_per_core(dp, name, 1);
    figures
        .iter()
        .position(|n| *n == 1)
        .unwrap_or_else(|| panic!("no core has {name} = 1: {figures:?}"))
}

/// Payloads by the prefix before their last `-`, with the number after it:
/// `p3-17` → `("p3", 17)`.
pub fn by_sender<'a>(payloads: impl IntoIterator<Item = &'a str>) -> BTreeMap<String, Vec<u32>> {
    let mut out: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for payload in payloads {
        if let Some((sender, seq)) = payload.rsplit_once('-') {
            if let Ok(seq) = seq.parse() {
                out.entry(sender.to_owned()).or_default().push(seq);
            }
        }
    }
    out
}
