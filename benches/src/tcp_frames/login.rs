//! Opening device connections: connect (optionally from a source address),
//! then send the login frame. Setup runs in bounded batches per thread so the
//! server's listen backlog is not flooded.

use std::{
    future::Future,
    io,
    net::{Ipv4Addr, SocketAddr},
    time::Duration,
};

use monoio::{io::AsyncWriteRentExt as _, net::TcpStream};

use crate::{net::connect_from, wire::device_framer};

/// Where one connection comes from and who it logs in as.
#[derive(Debug, Clone)]
pub(crate) struct DeviceConn {
    pub(crate) device_id: String,
    pub(crate) source: Option<Ipv4Addr>,
}

impl DeviceConn {
    /// A short description for error messages.
    pub(crate) fn describe(&self, target: SocketAddr) -> String {
        match self.source {
            Some(source) => format!("{} ({source} -> {target})", self.device_id),
            None => format!("{} (-> {target})", self.device_id),
        }
    }
}

/// Connects and sends the login frame (payload = device id). The server
/// acknowledges nothing, so success means "written to the socket".
pub(crate) async fn connect_and_login(
    conn: &DeviceConn,
    target: SocketAddr,
    connect_timeout: Duration,
) -> io::Result<TcpStream> {
    let mut login = Vec::with_capacity(conn.device_id.len() + 2);
    device_framer()
        .encode_into(conn.device_id.as_bytes(), &mut login)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut stream = connect_from(conn.source, target, connect_timeout).await?;
    let (written, _) = stream.write_all(login).await;
    written?;
    Ok(stream)
}

/// Runs `setup` for every item, at most `concurrency` at a time, and returns
/// the results in order.
pub(crate) async fn in_batches<S, O, F, Fut>(items: Vec<S>, concurrency: usize, setup: F) -> Vec<O>
where
    F: Fn(S) -> Fut,
    Fut: Future<Output = O> + 'static,
    O: 'static,
{
    let mut results = Vec::with_capacity(items.len());
    let mut items = items.into_iter().peekable();
    while items.peek().is_some() {
        let batch: Vec<_> = items
            .by_ref()
            .take(concurrency.max(1))
            .map(|item| monoio::spawn(setup(item)))
            .collect();
        for task in batch {
            results.push(task.await);
        }
    }
    results
}
