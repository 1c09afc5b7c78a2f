//! A fake control plane for tests: a Unix socket in a temp dir that says
//! hello and answers requests with a closure, recording what it was asked.

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::mpsc::{channel, Receiver};
use std::thread::JoinHandle;
use std::time::Duration;

use shoal_protocols::control::{
    wire, CliRequest, CliResponse, FrameBuffer, Hello, HelloReply, PeerRole, PROTOCOL_VERSION,
};

use crate::client::ControlClient;
use crate::socket::{ResolvedSocket, SocketSource};
use crate::testdir::TestDir;

/// A running fake control plane, serving one connection.
#[derive(Debug)]
pub(crate) struct FakePlane {
    _dir: TestDir,
    /// Its socket.
    pub(crate) socket: ResolvedSocket,
    hellos: Receiver<Hello>,
    requests: Receiver<CliRequest>,
    thread: Option<JoinHandle<()>>,
}

/// The welcome a well-behaved control plane sends.
pub(crate) fn welcome() -> HelloReply {
    HelloReply::Welcome {
        protocol_version: PROTOCOL_VERSION,
        node: "cp-node".into(),
        software_version: "9.9.9".into(),
    }
}

impl FakePlane {
    /// Answers the hello with `reply`, then every request with `answer`.
    pub(crate) fn start(
        reply: HelloReply,
        mut answer: impl FnMut(&CliRequest) -> CliResponse + Send + 'static,
    ) -> Self {
        let dir = TestDir::new("fake-plane");
        let path: PathBuf = dir.path().join("control.sock");
        let listener = UnixListener::bind(&path).expect("bind the fake socket");
        let (hello_tx, hellos) = channel();
        let (request_tx, requests) = channel();
        let thread = std::thread::spawn(move || {
            let Ok((mut stream, _)) = listener.accept() else {
                return;
            };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let Ok(mut writer) = stream.try_clone() else {
                return;
            };
            let mut frames = FrameBuffer::new(wire::DEFAULT_MAX_FRAME_BYTES);
            let mut chunk = vec![0u8; 64 * 1024];
            let mut read = |frames: &mut FrameBuffer| match stream.read(&mut chunk) {
                Ok(0) | Err(_) => false,
                Ok(n) => {
                    frames.extend(&chunk[..n]);
                    true
                }
            };
            let hello: Hello = loop {
                if let Some(h) = frames.next_message().expect("a hello") {
                    break h;
                }
                if !read(&mut frames) {
                    return;
                }
            };
            let refused = matches!(reply, HelloReply::Refused { .. });
            let _ = hello_tx.send(hello);
            let _ = writer.write_all(&wire::encode_to_vec(&reply).unwrap());
            if refused {
                return;
            }
            loop {
                let request: CliRequest = loop {
                    if let Some(r) = frames.next_message().expect("a request") {
                        break r;
                    }
                    if !read(&mut frames) {
                        return;
                    }
                };
                let response = answer(&request);
                let _ = request_tx.send(request);
                let _ = writer.write_all(&wire::encode_to_vec(&response).unwrap());
            }
        });
        Self {
            _dir: dir,
            socket: ResolvedSocket {
                path,
                source: SocketSource::Flag,
            },
            hellos,
            requests,
            thread: Some(thread),
        }
    }

    /// Connects a real client.
    pub(crate) fn connect(&self) -> ControlClient {
        ControlClient::connect(&self.socket).expect("the fake control plane welcomes")
    }

    /// The hello it got.
    pub(crate) fn hello(&self) -> Hello {
        self.hellos
            .recv_timeout(Duration::from_secs(5))
            .expect("a hello arrived")
    }

    /// Every request it answered so far (after the client is dropped, all).
    pub(crate) fn requests(&self) -> Vec<CliRequest> {
        self.requests.try_iter().collect()
    }

    /// Waits for the server thread (after the client is dropped).
    pub(crate) fn join(mut self) -> Vec<CliRequest> {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.requests()
    }
}

/// The role every hello from shoalctl carries.
pub(crate) fn is_cli(hello: &Hello) -> bool {
    hello.role == PeerRole::Cli && hello.protocol_version == PROTOCOL_VERSION
}
