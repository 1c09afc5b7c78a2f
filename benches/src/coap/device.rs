//! `coap`, one runtime thread: its devices from the first ping to totals.
//!
//! ```text
//! setup:    per device: UDP socket bound to its source address, connected
//!           to the target; ping (Empty CON) ─ RST ─ wait for the start
//! sender:   until the end of the window: (paced: wait until due) new
//!           message id and token, send, wait for the answer; CON: resend
//!           at each timeout (2-3 s, doubling), give up after
//!           MAX_RETRANSMIT; NON: give up after --non-timeout
//! receiver: decode each datagram; the answer to the outstanding request
//!           (ACK with its message id and token, RST with its message id,
//!           CON/NON response with its token) wakes the sender; a separate
//!           CON response is ACKed; anything else is counted as unmatched
//! ```
//!
//! One request is outstanding per device (NSTART 1), so the device's state
//! is two cells, not a table.

use std::{
    cell::Cell,
    future::poll_fn,
    net::{Ipv4Addr, SocketAddr},
    rc::Rc,
    task::{Poll, Waker},
    time::Duration,
};

use monoio::{
    io::{CancelHandle, Canceller},
    net::udp::UdpSocket,
};
use shoal_protocols::coap::{
    decode, encode_empty, encode_reset, Code, ContentFormat, MessageBuilder, MessageType,
    RetransmitConfig, Token, MAX_RETRANSMIT,
};

use crate::{
    clock::{duration_ns, monotonic_ns, until_ns},
    net::error_kind_name,
    pacer::Pacer,
    request_run::{
        driver::ThreadRun, ClientError, ClientSpec, Jitter, RequestSchedule, ThreadTally,
    },
};

/// The status a reset is counted under (no CoAP code is 0.00 in an answer).
pub(super) const RESET_STATUS: u16 = 0;
/// Receive buffer per device: one datagram.
const RECV_BYTES: usize = 1500;
/// Bytes of a request token.
const TOKEN_BYTES: usize = 4;

/// What every device of a run sends.
#[derive(Debug, Clone)]
pub(super) struct CoapPlan {
    pub(super) target: SocketAddr,
    pub(super) payload_bytes: usize,
    /// CON (true) or NON requests.
    pub(super) confirmable: bool,
    pub(super) non_timeout: Duration,
    pub(super) secret: Option<String>,
}

/// What the devices of a thread share.
struct ThreadCtx {
    plan: CoapPlan,
    schedule: RequestSchedule,
    retransmit: RetransmitConfig,
    pacer: Rc<Pacer>,
    tally: ThreadTally,
    payload: Vec<u8>,
}

/// The request a device waits for an answer to.
#[derive(Debug, Clone, Copy)]
struct Outstanding {
    message_id: u16,
    token: Token,
    confirmable: bool,
}

/// What answered it.
#[derive(Debug, Clone, Copy)]
struct Answer {
    /// Class × 100 + detail, or [`RESET_STATUS`].
    status: u16,
    at_ns: u64,
}

/// One device's state, shared by its sender and receiver.
#[derive(Default)]
struct DeviceState {
    outstanding: Cell<Option<Outstanding>>,
    /// An Empty ACK came: the answer follows separately, no retransmission.
    acknowledged: Cell<bool>,
    answer: Cell<Option<Answer>>,
    /// The socket failed.
    ended: Cell<bool>,
    /// The sender is done and cancels the receive: its end is no failure.
    stopping: Cell<bool>,
    sender: Cell<Option<Waker>>,
}

impl DeviceState {
    fn wake_sender(&self) {
        if let Some(waker) = self.sender.take() {
            waker.wake();
        }
    }

    /// Waits for an answer (or the end of the socket) until `deadline_ns`;
    /// true if one came.
    async fn wait_answer(&self, deadline_ns: u64) -> bool {
        let answered = poll_fn(|cx| {
            if self.answer.get().is_some() || self.ended.get() {
                Poll::Ready(())
            } else {
                self.sender.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        });
        monoio::time::timeout(until_ns(deadline_ns), answered)
            .await
            .is_ok()
    }
}

fn code_status(code: Code) -> u16 {
    u16::from(code.class()) * 100 + u16::from(code.detail())
}

/// Opens one device's socket and checks the server with a ping.
async fn open_device(
    source: Option<Ipv4Addr>,
    target: SocketAddr,
    timeout: Duration,
    ping_id: u16,
) -> Result<UdpSocket, ClientError> {
    let io = |e: std::io::Error| ClientError::io(&e);
    let local = SocketAddr::from((source.unwrap_or(Ipv4Addr::UNSPECIFIED), 0));
    let std_socket = std::net::UdpSocket::bind(local).map_err(io)?;
    std_socket.connect(target).map_err(io)?;
    let socket = UdpSocket::from_std(std_socket).map_err(io)?;
    let mut ping = Vec::with_capacity(4);
    encode_empty(&mut ping, MessageType::Confirmable, ping_id);
    let (sent, _) = socket.send(ping).await;
    sent.map_err(io)?;
    let deadline_ns = monotonic_ns() + duration_ns(timeout);
    let mut buf = Vec::with_capacity(RECV_BYTES);
    loop {
        let received = monoio::time::timeout(until_ns(deadline_ns), socket.recv(buf)).await;
        let Ok((read, back)) = received else {
            return Err(ClientError::new(
                "PingTimedOut",
                format!("no answer to a CoAP ping within {timeout:?}"),
            ));
        };
        buf = back;
        read.map_err(io)?;
        match decode(&buf) {
            Ok(m) if m.mtype == MessageType::Reset && m.message_id == ping_id => return Ok(socket),
            Ok(_) => {}
            Err(e) => {
                return Err(ClientError::new(
                    "BadPong",
                    format!("bad answer to a ping: {e}"),
                ))
            }
        }
    }
}

pub(super) async fn run_thread(plan: CoapPlan, mut run: ThreadRun) {
    let pacer = match Pacer::new(duration_ns(run.pacing_resolution)) {
        Ok(pacer) => pacer,
        Err(e) => {
            run.failed(format!("cannot create a timerfd: {e}"));
            return;
        }
    };
    let (target, timeout) = (plan.target, run.connect_timeout);
    let (devices, summary) = run
        .open_all(move |spec| async move {
            let ping_id = Jitter::new(spec.index).next_u64() as u16;
            let result = open_device(spec.source, target, timeout, ping_id).await;
            (spec, result)
        })
        .await;
    let Some(clock) = run.connected(summary).await else {
        return;
    };
    let ctx = Rc::new(ThreadCtx {
        payload: vec![b'x'; plan.payload_bytes],
        plan,
        schedule: run.schedule,
        retransmit: RetransmitConfig::default(),
        pacer: Rc::clone(&pacer),
        tally: ThreadTally::new(clock),
    });
    let pacer_driver = monoio::spawn(Rc::clone(&pacer).drive());
    let tasks: Vec<_> = devices
        .into_iter()
        .map(|(spec, socket)| monoio::spawn(run_device(spec, socket, Rc::clone(&ctx))))
        .collect();
    for task in tasks {
        task.await;
    }
    pacer.stop();
    pacer_driver.await;
    run.done(&ctx.tally);
}

async fn run_device(spec: ClientSpec, socket: UdpSocket, ctx: Rc<ThreadCtx>) {
    let socket = Rc::new(socket);
    let st = Rc::new(DeviceState::default());
    let canceller = Canceller::new();
    let receiver = monoio::spawn(receive(
        Rc::clone(&socket),
        Rc::clone(&st),
        Rc::clone(&ctx),
        canceller.handle(),
        spec.device_id.clone(),
    ));
    send_requests(&socket, &st, &ctx, &spec).await;
    st.stopping.set(true);
    canceller.cancel();
    receiver.await;
}

/// Sends one request at a time until the end of the window.
async fn send_requests(socket: &UdpSocket, st: &DeviceState, ctx: &ThreadCtx, spec: &ClientSpec) {
    let clock = *ctx.tally.clock();
    let schedule = ctx.schedule;
    let plan = &ctx.plan;
    let mut jitter =
        Jitter::new(spec.index ^ monotonic_ns() ^ (u64::from(std::process::id()) << 32));
    let mut message_id = jitter.next_u64() as u16;
    let mut token_counter = jitter.next_u64();
    let path = format!("/devices/{}/up", spec.device_id);
    let query = plan
        .secret
        .as_ref()
        .map(|secret| format!("secret={secret}"));
    let mtype = if plan.confirmable {
        MessageType::Confirmable
    } else {
        MessageType::NonConfirmable
    };
    let mut out = Vec::with_capacity(64 + plan.payload_bytes);
    let first_ns = clock.start_ns + schedule.phase_ns(spec.index);
    let mut seq = 0u64;
    ctx.pacer.sleep_until(first_ns).await;
    loop {
        let now = monotonic_ns();
        if st.ended.get() || now >= clock.end_ns {
            break;
        }
        let stamp = if schedule.paced() {
            let due_ns = schedule.due_ns(first_ns, seq);
            if due_ns >= clock.end_ns {
                break;
            }
            if due_ns > now {
                ctx.pacer.sleep_until(due_ns).await;
                continue;
            }
            due_ns
        } else {
            now
        };
        message_id = message_id.wrapping_add(1);
        token_counter = token_counter.wrapping_add(1);
        let token = Token::from_u64(token_counter, TOKEN_BYTES);
        let mut request = MessageBuilder::new(mtype, Code::POST, message_id, token);
        let built = request
            .uri_path(&path)
            .and_then(|r| r.content_format(ContentFormat::OCTET_STREAM))
            .and_then(|r| match &query {
                Some(query) => r.uri_query(query),
                None => Ok(r),
            });
        if let Err(e) = built {
            ctx.tally.run_error(
                &ClientError::new("BadRequest", e.to_string()),
                &spec.device_id,
            );
            st.ended.set(true);
            break;
        }
        request.payload(&ctx.payload);
        out.clear();
        request.encode(&mut out);
        st.answer.set(None);
        st.acknowledged.set(false);
        st.outstanding.set(Some(Outstanding {
            message_id,
            token,
            confirmable: plan.confirmable,
        }));
        seq += 1;
        ctx.tally.sent(1, stamp);
        let Some(back) = transmit(socket, st, ctx, out, &spec.device_id).await else {
            ctx.tally.update(|c| c.unanswered += 1);
            break;
        };
        out = back;
        let answered = if plan.confirmable {
            let (answered, back) = await_ack(socket, st, ctx, out, &spec.device_id).await;
            out = back;
            answered
        } else {
            let deadline_ns =
                (monotonic_ns() + duration_ns(plan.non_timeout)).min(clock.drain_end_ns);
            let answered = st.wait_answer(deadline_ns).await;
            if !answered && monotonic_ns() < clock.drain_end_ns {
                ctx.tally.update(|c| c.timeouts += 1);
                Some(false)
            } else {
                Some(answered)
            }
        };
        st.outstanding.set(None);
        match (answered, st.answer.take()) {
            (_, Some(answer)) => {
                if answer.status == RESET_STATUS {
                    ctx.tally.update(|c| c.resets += 1);
                }
                let success = answer.status / 100 == 2;
                ctx.tally
                    .answered(stamp, answer.at_ns, answer.status, success);
            }
            // Given up (counted as a timeout).
            (Some(false), None) => {}
            // The run ended first, or the socket failed.
            _ => {
                ctx.tally.update(|c| c.unanswered += 1);
                break;
            }
        }
    }
}

/// Sends `out` once; `None` (counted) if the socket failed.
async fn transmit(
    socket: &UdpSocket,
    st: &DeviceState,
    ctx: &ThreadCtx,
    out: Vec<u8>,
    device_id: &str,
) -> Option<Vec<u8>> {
    let (sent, back) = socket.send(out).await;
    match sent {
        Ok(_) => Some(back),
        Err(e) => {
            if !st.ended.replace(true) {
                ctx.tally
                    .run_error(&ClientError::io(&e), &format!("sending for {device_id}"));
            }
            None
        }
    }
}

/// Waits for the answer to the CON in `out`, retransmitting it (RFC 7252
/// §4.2). `Some(true)`: answered; `Some(false)`: given up after
/// MAX_RETRANSMIT (counted); `None`: the run or the socket ended first.
async fn await_ack(
    socket: &UdpSocket,
    st: &DeviceState,
    ctx: &ThreadCtx,
    mut out: Vec<u8>,
    device_id: &str,
) -> (Option<bool>, Vec<u8>) {
    let drain_end_ns = ctx.tally.clock().drain_end_ns;
    let fraction = Jitter::new(monotonic_ns()).fraction();
    let mut timeout_ms = ctx.retransmit.initial_timeout_ms(fraction);
    let mut retransmissions = 0u8;
    let mut sent_ns = monotonic_ns();
    loop {
        let deadline_ns = if st.acknowledged.get() {
            drain_end_ns
        } else {
            (sent_ns + timeout_ms * 1_000_000).min(drain_end_ns)
        };
        if st.wait_answer(deadline_ns).await {
            return (
                if st.answer.get().is_some() {
                    Some(true)
                } else {
                    None
                },
                out,
            );
        }
        if st.acknowledged.get() && monotonic_ns() < drain_end_ns {
            // Woken by the Empty ACK: wait for the separate response.
            continue;
        }
        if monotonic_ns() >= drain_end_ns {
            return (None, out);
        }
        if retransmissions >= MAX_RETRANSMIT {
            ctx.tally.update(|c| c.timeouts += 1);
            return (Some(false), out);
        }
        retransmissions += 1;
        timeout_ms *= 2;
        ctx.tally.update(|c| c.retransmissions += 1);
        sent_ns = monotonic_ns();
        match transmit(socket, st, ctx, out, device_id).await {
            Some(back) => out = back,
            None => return (None, Vec::new()),
        }
    }
}

/// Receives the device's datagrams until the sender cancels the receive or
/// the socket fails.
async fn receive(
    socket: Rc<UdpSocket>,
    st: Rc<DeviceState>,
    ctx: Rc<ThreadCtx>,
    cancel: CancelHandle,
    device_id: String,
) {
    let mut buf = Vec::with_capacity(RECV_BYTES);
    let mut reply = Vec::with_capacity(8);
    loop {
        let (read, back) = socket.cancelable_recv(buf, cancel.clone()).await;
        buf = back;
        if let Err(e) = read {
            if !st.stopping.get() && !st.ended.replace(true) {
                ctx.tally.run_error(
                    &ClientError::new(error_kind_name(&e), e.to_string()),
                    &format!("receiving for {device_id}"),
                );
            }
            st.wake_sender();
            return;
        }
        let at_ns = monotonic_ns();
        let Ok(message) = decode(&buf) else {
            ctx.tally.update(|c| c.malformed += 1);
            continue;
        };
        let waiting = st.outstanding.get().filter(|_| st.answer.get().is_none());
        let mut matched = None;
        reply.clear();
        match (message.mtype, waiting) {
            (MessageType::Acknowledgement, Some(w))
                if w.confirmable && message.message_id == w.message_id =>
            {
                if message.code.is_empty() {
                    st.acknowledged.set(true);
                    st.wake_sender();
                } else if message.token == w.token {
                    matched = Some(code_status(message.code));
                } else {
                    ctx.tally.update(|c| c.malformed += 1);
                }
            }
            (MessageType::Reset, Some(w)) if message.message_id == w.message_id => {
                matched = Some(RESET_STATUS);
            }
            (MessageType::Confirmable | MessageType::NonConfirmable, Some(w))
                if message.code.is_response() && message.token == w.token =>
            {
                if message.mtype == MessageType::Confirmable {
                    encode_empty(&mut reply, MessageType::Acknowledgement, message.message_id);
                }
                matched = Some(code_status(message.code));
            }
            (MessageType::Confirmable, _) => {
                // A separate answer nobody waits for (RFC 7252 §4.2).
                encode_reset(&mut reply, message.message_id);
                ctx.tally.update(|c| c.unmatched += 1);
            }
            _ => ctx.tally.update(|c| c.unmatched += 1),
        }
        if let Some(status) = matched {
            st.answer.set(Some(Answer { status, at_ns }));
            st.wake_sender();
        }
        if !reply.is_empty() {
            let (sent, back) = socket.send(std::mem::take(&mut reply)).await;
            reply = back;
            if let Err(e) = sent {
                ctx.tally
                    .run_error(&ClientError::io(&e), &format!("answering for {device_id}"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        assert_eq!(code_status(Code::CHANGED), 204);
        assert_eq!(code_status(Code::UNAUTHORIZED), 401);
        assert_eq!(code_status(Code::SERVICE_UNAVAILABLE), 503);
    }

    #[test]
    fn a_request_as_the_device_sends_it() {
        let token = Token::from_u64(0x0102_0304, TOKEN_BYTES);
        let mut request = MessageBuilder::new(MessageType::Confirmable, Code::POST, 0x1234, token);
        request
            .uri_path("/devices/bench-3/up")
            .unwrap()
            .content_format(ContentFormat::OCTET_STREAM)
            .unwrap()
            .uri_query("secret=s")
            .unwrap();
        request.payload(b"xx");
        let mut out = Vec::new();
        request.encode(&mut out);
        let m = decode(&out).unwrap();
        assert_eq!(
            (m.mtype, m.code, m.message_id),
            (MessageType::Confirmable, Code::POST, 0x1234)
        );
        assert_eq!(m.token.as_bytes(), [1, 2, 3, 4]);
        assert!(m.uri_path_is(&["devices", "bench-3", "up"]));
        assert_eq!(m.query_value("secret"), Some(&b"s"[..]));
        assert_eq!(m.payload, b"xx");
        // The piggybacked answer the server sends back matches it.
        let mut ack = Vec::new();
        MessageBuilder::response(&m.header(), Code::CHANGED, 0).encode(&mut ack);
        let a = decode(&ack).unwrap();
        assert_eq!(
            (a.mtype, a.message_id, a.token),
            (MessageType::Acknowledgement, 0x1234, token)
        );
    }
}
