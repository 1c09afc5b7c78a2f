//! `http-post`, one runtime thread: its keep-alive connections from connect
//! to totals.
//!
//! ```text
//! setup:  connect every connection (ThreadRun::open_all) ─ wait for the start
//! writer: until the end of the window: wait for room (< --pipeline in
//!         flight) and, paced, for the next due time; write every request
//!         due that fits as one buffer, their stamps queued in order
//! reader: read, cut responses (response::parse_response), pop the oldest
//!         stamp per answer, count its status and time it; wake the writer
//! end:    wait (<= drain) for the answers in flight, cancel the read;
//!         what is still queued is unanswered
//! ```
//!
//! The queue of stamps holds at most --pipeline entries per connection.

use std::{
    cell::{Cell, RefCell},
    collections::VecDeque,
    future::poll_fn,
    net::SocketAddr,
    rc::Rc,
    task::{Poll, Waker},
};

use monoio::{
    buf::IoBufMut as _,
    io::{
        AsyncWriteRentExt as _, CancelHandle, CancelableAsyncReadRent as _, Canceller,
        Splitable as _,
    },
    net::{
        tcp::{TcpOwnedReadHalf, TcpOwnedWriteHalf},
        TcpStream,
    },
};

use super::response::{parse_response, MAX_BODY_BYTES, MAX_HEAD_BYTES};
use crate::{
    clock::{duration_ns, monotonic_ns, until_ns},
    net::{connect_from, error_kind_name},
    pacer::Pacer,
    request_run::{driver::ThreadRun, ClientError, RequestSchedule, ThreadTally},
};

/// First receive buffer of a connection (grows to fit one response).
const RECV_BYTES: usize = 16 * 1024;
/// Filler byte of request bodies.
const BODY_BYTE: u8 = b'x';

/// What every connection of a run sends.
#[derive(Debug, Clone)]
pub(super) struct HttpPlan {
    pub(super) target: SocketAddr,
    /// With `{id}` for the device id.
    pub(super) path: String,
    pub(super) secret: Option<String>,
    pub(super) payload_bytes: usize,
    pub(super) pipeline: usize,
}

impl HttpPlan {
    /// One request of device `device_id`, head and body.
    fn request(&self, device_id: &str) -> Vec<u8> {
        let path = self.path.replace("{id}", device_id);
        let mut request = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n",
            self.target, self.payload_bytes
        );
        if let Some(secret) = &self.secret {
            request.push_str(&format!("Authorization: Bearer {secret}\r\n"));
        }
        request.push_str("\r\n");
        let mut bytes = request.into_bytes();
        bytes.resize(bytes.len() + self.payload_bytes, BODY_BYTE);
        bytes
    }
}

/// What the connections of a thread share.
struct ThreadCtx {
    plan: HttpPlan,
    schedule: RequestSchedule,
    pacer: Rc<Pacer>,
    tally: ThreadTally,
}

/// One connection's state, shared by its writer and reader.
#[derive(Default)]
struct ConnState {
    /// Stamps of the requests written and not yet answered, oldest first.
    in_flight: RefCell<VecDeque<u64>>,
    /// The connection cannot carry requests any more (closed, failed).
    ended: Cell<bool>,
    /// The writer is done and cancels the read: its end is no failure.
    stopping: Cell<bool>,
    writer: Cell<Option<Waker>>,
}

impl ConnState {
    fn wake_writer(&self) {
        if let Some(waker) = self.writer.take() {
            waker.wake();
        }
    }

    fn in_flight(&self) -> usize {
        self.in_flight.borrow().len()
    }

    /// Waits until `ready` holds (checked whenever the reader wakes the
    /// writer) or `deadline_ns` passes; true if it held.
    async fn wait_until(&self, deadline_ns: u64, ready: impl Fn(&Self) -> bool) -> bool {
        let condition = poll_fn(|cx| {
            if ready(self) {
                Poll::Ready(())
            } else {
                self.writer.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        });
        monoio::time::timeout(until_ns(deadline_ns), condition)
            .await
            .is_ok()
    }
}

pub(super) async fn run_thread(plan: HttpPlan, mut run: ThreadRun) {
    let pacer = match Pacer::new(duration_ns(run.pacing_resolution)) {
        Ok(pacer) => pacer,
        Err(e) => {
            run.failed(format!("cannot create a timerfd: {e}"));
            return;
        }
    };
    let (target, timeout) = (plan.target, run.connect_timeout);
    let (conns, summary) = run
        .open_all(move |spec| async move {
            let result = connect_from(spec.source, target, timeout)
                .await
                .map_err(|e| ClientError::io(&e));
            (spec, result)
        })
        .await;
    let Some(clock) = run.connected(summary).await else {
        return;
    };
    let ctx = Rc::new(ThreadCtx {
        plan,
        schedule: run.schedule,
        pacer: Rc::clone(&pacer),
        tally: ThreadTally::new(clock),
    });
    let pacer_driver = monoio::spawn(Rc::clone(&pacer).drive());
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|(spec, stream)| {
            let first_ns = clock.start_ns + ctx.schedule.phase_ns(spec.index);
            let request = ctx.plan.request(&spec.device_id);
            monoio::spawn(run_conn(
                stream,
                request,
                first_ns,
                spec.device_id,
                Rc::clone(&ctx),
            ))
        })
        .collect();
    for task in tasks {
        task.await;
    }
    pacer.stop();
    pacer_driver.await;
    run.done(&ctx.tally);
}

async fn run_conn(
    stream: TcpStream,
    request: Vec<u8>,
    first_ns: u64,
    device_id: String,
    ctx: Rc<ThreadCtx>,
) {
    let st = Rc::new(ConnState::default());
    let (read_half, write_half) = stream.into_split();
    let canceller = Canceller::new();
    let reader = monoio::spawn(read_responses(
        read_half,
        Rc::clone(&st),
        Rc::clone(&ctx),
        canceller.handle(),
        device_id.clone(),
    ));
    let _write_half = write_requests(write_half, &st, &ctx, &request, first_ns, &device_id).await;
    let drain_end_ns = ctx.tally.clock().drain_end_ns;
    st.wait_until(drain_end_ns, |s| s.ended.get() || s.in_flight() == 0)
        .await;
    st.stopping.set(true);
    canceller.cancel();
    reader.await;
    let unanswered = st.in_flight() as u64;
    ctx.tally.update(|c| c.unanswered += unanswered);
}

/// Writes requests until the end of the window; gives the write half back
/// so that the connection stays open while the last answers come.
async fn write_requests(
    mut stream: TcpOwnedWriteHalf,
    st: &ConnState,
    ctx: &ThreadCtx,
    request: &[u8],
    first_ns: u64,
    device_id: &str,
) -> TcpOwnedWriteHalf {
    let clock = *ctx.tally.clock();
    let schedule = ctx.schedule;
    let depth = ctx.plan.pipeline.max(1);
    let mut out = Vec::with_capacity(request.len() * depth);
    let mut seq = 0u64;
    ctx.pacer.sleep_until(first_ns).await;
    loop {
        let now = monotonic_ns();
        if st.ended.get() || now >= clock.end_ns {
            break;
        }
        let mut due = u64::MAX;
        if schedule.paced() {
            let next_ns = schedule.due_ns(first_ns, seq);
            if next_ns >= clock.end_ns {
                break;
            }
            if next_ns > now {
                ctx.pacer.sleep_until(next_ns).await;
                continue;
            }
            due = schedule.due_by(first_ns, now).saturating_sub(seq).max(1);
        }
        let in_flight = st.in_flight();
        if in_flight >= depth {
            let room = st
                .wait_until(clock.end_ns, |s| s.ended.get() || s.in_flight() < depth)
                .await;
            if !room {
                break;
            }
            continue;
        }
        let count = ((depth - in_flight) as u64).min(due);
        let written_ns = monotonic_ns();
        out.clear();
        {
            let mut stamps = st.in_flight.borrow_mut();
            for i in 0..count {
                let stamp = if schedule.paced() {
                    schedule.due_ns(first_ns, seq + i)
                } else {
                    written_ns
                };
                stamps.push_back(stamp);
                ctx.tally.sent(1, stamp);
                out.extend_from_slice(request);
            }
        }
        seq += count;
        let (written, buf) = stream.write_all(out).await;
        out = buf;
        if let Err(e) = written {
            if !st.ended.replace(true) {
                ctx.tally
                    .run_error(&ClientError::io(&e), &format!("writing for {device_id}"));
            }
            break;
        }
    }
    stream
}

/// Reads the answers in order until the connection ends or the writer
/// cancels the read.
async fn read_responses(
    mut stream: TcpOwnedReadHalf,
    st: Rc<ConnState>,
    ctx: Rc<ThreadCtx>,
    cancel: CancelHandle,
    device_id: String,
) {
    let fail = |kind: &str, detail: String| {
        if !st.stopping.get() && !st.ended.get() {
            ctx.tally.run_error(
                &ClientError::new(kind, detail),
                &format!("connection of {device_id}"),
            );
        }
        st.ended.set(true);
        st.wake_writer();
    };
    let mut buf: Vec<u8> = Vec::with_capacity(RECV_BYTES);
    loop {
        let mut start = 0;
        loop {
            let unread = buf.get(start..).unwrap_or_default();
            let head = match parse_response(unread) {
                Ok(Some(head)) if head.total_bytes() <= unread.len() => head,
                Ok(_) => break,
                Err(e) => {
                    ctx.tally.update(|c| c.malformed += 1);
                    fail("MalformedResponse", e);
                    return;
                }
            };
            start += head.total_bytes();
            if head.status < 200 {
                continue;
            }
            let now = monotonic_ns();
            let stamp = st.in_flight.borrow_mut().pop_front();
            match stamp {
                Some(stamp) => {
                    ctx.tally
                        .answered(stamp, now, head.status, (200..300).contains(&head.status));
                }
                None => ctx.tally.update(|c| c.unmatched += 1),
            }
            st.wake_writer();
            if head.close {
                fail(
                    "ClosedByServer",
                    format!("answered {} with Connection: close", head.status),
                );
                return;
            }
        }
        buf.drain(..start);
        if buf.len() == buf.capacity() {
            if buf.capacity() >= MAX_HEAD_BYTES + MAX_BODY_BYTES {
                fail("ResponseTooLarge", format!("{} bytes buffered", buf.len()));
                return;
            }
            buf.reserve(buf.capacity());
        }
        let (filled, capacity) = (buf.len(), buf.capacity());
        let (read, slice) = stream
            .cancelable_read(buf.slice_mut(filled..capacity), cancel.clone())
            .await;
        buf = slice.into_inner();
        match read {
            Ok(0) => {
                fail(
                    "ClosedByServer",
                    "the server closed the connection".to_owned(),
                );
                return;
            }
            Ok(_) => {}
            Err(e) => {
                fail(&error_kind_name(&e), e.to_string());
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_carry_the_device_and_the_body() {
        let plan = HttpPlan {
            target: "127.0.0.1:8080".parse().unwrap(),
            path: "/v1/devices/{id}/messages".to_owned(),
            secret: Some("s3".to_owned()),
            payload_bytes: 5,
            pipeline: 1,
        };
        let request = String::from_utf8(plan.request("dev-7")).unwrap();
        assert_eq!(
            request,
            "POST /v1/devices/dev-7/messages HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\
             Content-Type: application/octet-stream\r\nContent-Length: 5\r\n\
             Authorization: Bearer s3\r\n\r\nxxxxx"
        );
        let bare = HttpPlan {
            secret: None,
            payload_bytes: 0,
            path: "/".to_owned(),
            ..plan
        };
        assert!(String::from_utf8(bare.request("d"))
            .unwrap()
            .ends_with("Content-Length: 0\r\n\r\n"));
    }
}
