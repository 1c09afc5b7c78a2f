//! Devices and upstreams made of std sockets: a length-framed TCP device,
//! pairs of them, UDP helpers, and a TCP server decoding forwarded frames.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use crate::process::Dataplane;
use crate::{INTEREST_SETTLE, WAIT};

/// How a connection ended, as the client saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// An orderly end of stream (FIN).
    Eof,
    /// A reset or another error.
    Reset,
}

/// A raw TCP device speaking the 2-byte big-endian length framing.
#[derive(Debug)]
pub struct TcpDevice {
    stream: TcpStream,
    /// Bytes read but not yet returned as frames.
    pending: Vec<u8>,
    /// Its device id, if it logged in.
    pub id: String,
}

/// Encodes one frame: 2-byte big-endian length, then the payload.
pub fn length_frame(payload: &[u8]) -> Vec<u8> {
    let len = u16::try_from(payload.len()).expect("payload fits a 2-byte length");
    let mut out = Vec::with_capacity(payload.len() + 2);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Takes the first whole length frame off the front of `pending` and
/// returns its payload; `None` while the frame is incomplete.
fn take_length_frame(pending: &mut Vec<u8>) -> Option<Vec<u8>> {
    let header = pending.get(..2)?;
    let len = usize::from(u16::from_be_bytes([header[0], header[1]]));
    let frame = pending.get(2..2 + len)?.to_vec();
    pending.drain(..2 + len);
    Some(frame)
}

/// Whether a socket call failed only because its timeout ran out or a
/// signal interrupted it, so that it may simply be tried again.
fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

impl TcpDevice {
    /// Connects and sends `id` as the login frame.
    pub fn connect(addr: SocketAddr, id: &str) -> Self {
        let mut device = Self::connect_raw(addr);
        device.send(id.as_bytes());
        device.id = id.to_owned();
        device
    }

    /// Connects to the data plane's first listener (`@port0@`), logs in as
    /// `id` and waits for its `device online` line.
    pub fn login(dp: &Dataplane, id: &str) -> Self {
        let device = Self::connect(dp.addr(0), id);
        dp.device_core(id, WAIT);
        device
    }

    /// Connects without sending anything.
    pub fn connect_raw(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        stream.set_nodelay(true).expect("set TCP_NODELAY");
        stream
            .set_write_timeout(Some(Duration::from_secs(5)))
            .expect("set a write timeout");
        Self {
            stream,
            pending: Vec::new(),
            id: String::new(),
        }
    }

    /// Its local address (what the data plane logs as `peer=`).
    pub fn local_addr(&self) -> SocketAddr {
        self.stream.local_addr().expect("local addr")
    }

    /// Sends one length-framed payload.
    pub fn send(&mut self, payload: &[u8]) {
        self.send_raw(&length_frame(payload));
    }

    /// Sends bytes as they are.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        if let Err(e) = self.try_send_raw(bytes) {
            panic!("device {:?}: write: {e}", self.id);
        }
    }

    /// Sends bytes as they are, reporting failure.
    pub fn try_send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Reads more bytes into `pending` until `deadline`: `Ok(0)` at end of
    /// stream, `Err(TimedOut)` when the time is up.
    fn fill(&mut self, deadline: Instant) -> io::Result<usize> {
        let mut chunk = [0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::ErrorKind::TimedOut.into());
            }
            self.stream.set_read_timeout(Some(left))?;
            match self.stream.read(&mut chunk) {
                Ok(n) => {
                    self.pending.extend_from_slice(&chunk[..n]);
                    return Ok(n);
                }
                Err(e) if is_transient(&e) => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// The next frame's payload, or `None` when none came within `timeout`.
    /// Panics when the connection ends.
    pub fn try_recv_frame(&mut self, timeout: Duration) -> Option<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(frame) = take_length_frame(&mut self.pending) {
                return Some(frame);
            }
            match self.fill(deadline) {
                Ok(0) => panic!(
                    "device {:?}: connection closed while waiting for a frame",
                    self.id
                ),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::TimedOut => return None,
                Err(e) => panic!("device {:?}: read: {e}", self.id),
            }
        }
    }

    /// The next frame's payload; panics when none comes within `timeout`.
    pub fn recv_frame(&mut self, timeout: Duration) -> Vec<u8> {
        self.try_recv_frame(timeout)
            .unwrap_or_else(|| panic!("device {:?}: no frame within {timeout:?}", self.id))
    }

    /// The bytes read so far but not yet returned, or the next ones to
    /// arrive within `timeout` (for framings other than the length field).
    pub fn recv_bytes(&mut self, timeout: Duration) -> Vec<u8> {
        if self.pending.is_empty() {
            match self.fill(Instant::now() + timeout) {
                Ok(0) => panic!(
                    "device {:?}: connection closed while waiting for bytes",
                    self.id
                ),
                Ok(_) => {}
                Err(e) => panic!("device {:?}: no bytes within {timeout:?}: {e}", self.id),
            }
        }
        std::mem::take(&mut self.pending)
    }

    /// Sends `payload` and asserts that the same comes back (through an
    /// echo route) within [`WAIT`].
    pub fn assert_echo(&mut self, payload: &[u8]) {
        self.send(payload);
        assert_eq!(
            self.recv_frame(WAIT),
            payload,
            "device {:?}: another echo",
            self.id
        );
    }

    /// Asserts that no frame arrives within `wait`.
    pub fn expect_no_frame(&mut self, wait: Duration) {
        if let Some(frame) = self.try_recv_frame(wait) {
            panic!(
                "device {:?}: unexpected frame {:?}",
                self.id,
                String::from_utf8_lossy(&frame)
            );
        }
    }

    /// Waits for the server to end the connection (reading and discarding
    /// whatever comes before); panics if it stays open for `timeout`.
    pub fn expect_closed(&mut self, timeout: Duration) -> Closed {
        let deadline = Instant::now() + timeout;
        loop {
            match self.fill(deadline) {
                Ok(0) => return Closed::Eof,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                    panic!("device {:?}: still open after {timeout:?}", self.id)
                }
                Err(_) => return Closed::Reset,
            }
        }
    }

    /// Waits for an orderly end of stream with no data before it.
    pub fn expect_eof(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        match self.fill(deadline) {
            Ok(0) => {}
            Ok(_) => panic!(
                "device {:?}: data instead of end of stream: {:?}",
                self.id,
                String::from_utf8_lossy(&self.pending)
            ),
            Err(e) => panic!(
                "device {:?}: no end of stream within {timeout:?}: {e}",
                self.id
            ),
        }
    }

    /// Half-closes: no more bytes from this side.
    pub fn shutdown_write(&self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }
}

/// Connects devices `ids` and waits for each one's `device online` line;
/// returns them with the core each landed on.
pub fn connect_devices(
    dp: &Dataplane,
    addr: SocketAddr,
    ids: &[impl AsRef<str>],
) -> Vec<(TcpDevice, usize)> {
    let devices: Vec<TcpDevice> = ids
        .iter()
        .map(|id| TcpDevice::connect(addr, id.as_ref()))
        .collect();
    devices
        .into_iter()
        .map(|d| {
            let core = dp.device_core(&d.id, WAIT);
            (d, core)
        })
        .collect()
}

/// A device `NAME` and its receiver `NAME-rx`, to which the
/// [`Route::pair`](crate::Route::pair) route delivers its uplink.
#[derive(Debug)]
pub struct DevicePair {
    /// `NAME`.
    pub sender: TcpDevice,
    /// The core `sender` landed on.
    pub sender_core: usize,
    /// `NAME-rx`.
    pub receiver: TcpDevice,
    /// The core `receiver` landed on.
    pub receiver_core: usize,
}

impl DevicePair {
    /// Whether its two devices landed on different cores, so that its
    /// messages cross the mesh.
    pub fn crosses_cores(&self) -> bool {
        self.sender_core != self.receiver_core
    }
}

/// Connects a [`DevicePair`] for each of `names` to the first listener
/// (`@port0@`), each sender before its receiver, waits for them to come
/// online and lets their subscriptions settle.
pub fn connect_pairs(dp: &Dataplane, names: &[impl AsRef<str>]) -> Vec<DevicePair> {
    let ids: Vec<String> = names
        .iter()
        .flat_map(|name| [name.as_ref().to_owned(), format!("{}-rx", name.as_ref())])
        .collect();
    let mut devices = connect_devices(dp, dp.addr(0), &ids).into_iter();
    let mut pairs = Vec::with_capacity(names.len());
    while let (Some((sender, sender_core)), Some((receiver, receiver_core))) =
        (devices.next(), devices.next())
    {
        pairs.push(DevicePair {
            sender,
            sender_core,
            receiver,
            receiver_core,
        });
    }
    thread::sleep(INTEREST_SETTLE);
    pairs
}

/// A UDP socket on loopback with an ephemeral port.
pub fn udp_socket() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").expect("bind a udp socket")
}

/// One datagram and its sender, or `None` when none came within `timeout`.
pub fn udp_recv(socket: &UdpSocket, timeout: Duration) -> Option<(Vec<u8>, SocketAddr)> {
    let deadline = Instant::now() + timeout;
    let mut buf = vec![0u8; 65536];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        socket
            .set_read_timeout(Some(left))
            .expect("set a read timeout");
        match socket.recv_from(&mut buf) {
            Ok((n, from)) => return Some((buf[..n].to_vec(), from)),
            Err(e) if is_transient(&e) => {}
            Err(e) => panic!("udp receive: {e}"),
        }
    }
}

// ----- upstreams -------------------------------------------------------

/// A TCP server standing for a forward route's upstream: accepts any
/// number of connections and decodes 2-byte big-endian length frames from
/// each. Stops its threads on drop.
#[derive(Debug)]
pub struct FrameSink {
    addr: SocketAddr,
    frames: mpsc::Receiver<Vec<u8>>,
    connections: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl FrameSink {
    /// Listens on an ephemeral loopback port.
    pub fn start() -> Self {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// Listens on `addr`.
    pub fn start_on(addr: SocketAddr) -> Self {
        let listener =
            TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind the sink on {addr}: {e}"));
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let addr = listener.local_addr().expect("sink addr");
        let (tx, frames) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(AtomicU64::new(0));
        let (stop_accept, count) = (Arc::clone(&stop), Arc::clone(&connections));
        thread::spawn(move || {
            while !stop_accept.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        count.fetch_add(1, Ordering::Relaxed);
                        let (tx, stop) = (tx.clone(), Arc::clone(&stop_accept));
                        thread::spawn(move || read_frames(stream, &tx, &stop));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Self {
            addr,
            frames,
            connections,
            stop,
        }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    /// The next frame's payload, or `None` within `timeout`.
    pub fn recv(&self, timeout: Duration) -> Option<Vec<u8>> {
        self.frames.recv_timeout(timeout).ok()
    }
}

impl Drop for FrameSink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn read_frames(mut stream: TcpStream, tx: &mpsc::Sender<Vec<u8>>, stop: &AtomicBool) {
    let _ = stream.set_read_timeout(Some(Duration::from_millis(50)));
    let mut pending = Vec::new();
    let mut chunk = [0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        match stream.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => pending.extend_from_slice(&chunk[..n]),
            Err(e) if is_transient(&e) => {}
            Err(_) => return,
        }
        while let Some(frame) = take_length_frame(&mut pending) {
            if tx.send(frame).is_err() {
                return;
            }
        }
    }
}
