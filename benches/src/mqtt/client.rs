//! The MQTT client side of the generator, on monoio, with the codec of
//! `shoal_protocols::mqtt` (no second codec): the handshake (CONNECT →
//! CONNACK), SUBSCRIBE → SUBACK, a receive buffer that cuts packets out of
//! a byte stream, pre-encoded PUBLISH templates, and the probe a publisher
//! puts at the start of every payload.
//!
//! Probe (the first [`PROBE_BYTES`] of a payload, the rest is filler):
//!
//! ```text
//! offset 0   u64 BE  send time, CLOCK_MONOTONIC ns (scheduled time when paced)
//! offset 8   u64 BE  sequence number, 0-based, per publisher
//! offset 16  u32 BE  publisher index, 0-based, run-wide
//! offset 20  "SHMQ"  marker (anything else is counted as malformed)
//! ```

use std::{
    fmt, io,
    net::{Ipv4Addr, SocketAddr},
    time::Duration,
};

use monoio::{
    buf::IoBufMut as _,
    io::{AsyncReadRent, AsyncWriteRentExt as _, CancelHandle, CancelableAsyncReadRent},
    net::TcpStream,
};
use shoal_protocols::mqtt::{
    decode, encode, read_fixed_header, Ack, Connect, Decoded, Disconnect, MqttError, Packet,
    Properties, Publish, QoS, ReasonCode, Subscribe, SubscriptionOptions, Version,
};

use crate::net::{connect_from, error_kind_name};

/// Largest packet the generator accepts from a server.
pub(crate) const MAX_PACKET_BYTES: u32 = 1 << 20;
/// Bytes of the probe at the start of every payload.
pub(crate) const PROBE_BYTES: usize = 24;
const PROBE_MARKER: [u8; 4] = *b"SHMQ";
const FILLER_BYTE: u8 = 0x5a;

/// Why a client connection failed, by kind (counted) and in words (the first
/// one is shown).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClientError {
    pub(crate) kind: String,
    pub(crate) detail: String,
}

impl ClientError {
    pub(crate) fn new(kind: &str, detail: impl Into<String>) -> Self {
        Self {
            kind: kind.to_owned(),
            detail: detail.into(),
        }
    }
}

impl crate::tally::CountedError for ClientError {
    fn kind_name(&self) -> String {
        self.kind.clone()
    }

    fn detail(&self) -> String {
        self.detail.clone()
    }
}

impl From<io::Error> for ClientError {
    fn from(error: io::Error) -> Self {
        Self {
            kind: error_kind_name(&error),
            detail: error.to_string(),
        }
    }
}

impl From<MqttError> for ClientError {
    fn from(error: MqttError) -> Self {
        Self::new(
            "MalformedPacket",
            format!("undecodable packet from the server: {error}"),
        )
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.detail, self.kind)
    }
}

/// Receive buffer that cuts MQTT packets out of a byte stream.
///
/// Bytes `[start, buf.len())` are received but not yet decoded. Before each
/// read the buffer is compacted and grown so that the packet in progress
/// fits (up to [`MAX_PACKET_BYTES`]).
#[derive(Debug)]
pub(crate) struct PacketReader {
    version: Version,
    buf: Vec<u8>,
    start: usize,
    /// Size of the packet at `start` when it is known to be larger than what
    /// is buffered.
    pending_packet_bytes: usize,
}

impl PacketReader {
    pub(crate) fn new(version: Version, capacity_bytes: usize) -> Self {
        Self {
            version,
            buf: Vec::with_capacity(capacity_bytes.max(16)),
            start: 0,
            pending_packet_bytes: 0,
        }
    }

    /// Bytes received and not decoded yet.
    pub(crate) fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Hands out the buffer for the next read (the spare room is never
    /// empty); give it back with [`Self::finish_read`].
    pub(crate) fn begin_read(&mut self) -> Vec<u8> {
        let buffered = self.buffered();
        let needed = self.pending_packet_bytes.max(1);
        if self.start > 0 && self.buf.capacity() - self.start < needed.max(buffered + 1) {
            self.buf.copy_within(self.start.., 0);
            self.buf.truncate(buffered);
            self.start = 0;
        }
        if self.buf.capacity() - self.start < needed {
            self.buf.reserve(needed - self.buf.len());
        }
        if self.buf.len() == self.buf.capacity() {
            self.buf.reserve(1);
        }
        std::mem::take(&mut self.buf)
    }

    /// Takes the buffer back after a read appended bytes to it.
    pub(crate) fn finish_read(&mut self, buf: Vec<u8>) {
        self.buf = buf;
    }

    /// One read from `stream` into the buffer; `Ok(0)` at the end of the stream.
    pub(crate) async fn read_from<R: AsyncReadRent>(
        &mut self,
        stream: &mut R,
    ) -> io::Result<usize> {
        let buf = self.begin_read();
        let (filled, capacity) = (buf.len(), buf.capacity());
        let (read, buf) = stream.read(buf.slice_mut(filled..capacity)).await;
        self.finish_read(buf.into_inner());
        read
    }

    /// One read that `cancel` can end (`ECANCELED`); `Ok(0)` at the end
    /// of the stream.
    pub(crate) async fn read_cancelable<R: CancelableAsyncReadRent>(
        &mut self,
        stream: &mut R,
        cancel: CancelHandle,
    ) -> io::Result<usize> {
        let buf = self.begin_read();
        let (filled, capacity) = (buf.len(), buf.capacity());
        let (read, buf) = stream
            .cancelable_read(buf.slice_mut(filled..capacity), cancel)
            .await;
        self.finish_read(buf.into_inner());
        read
    }

    /// The next whole packet, if one is buffered.
    pub(crate) fn next_packet(&mut self) -> Result<Option<Packet<'_>>, MqttError> {
        let unread = self.buf.get(self.start..).unwrap_or_default();
        match decode(unread, self.version, MAX_PACKET_BYTES)? {
            Decoded::Frame { frame, consumed } => {
                self.start += consumed;
                self.pending_packet_bytes = 0;
                Ok(Some(frame))
            }
            Decoded::Incomplete => {
                self.pending_packet_bytes = match read_fixed_header(unread, MAX_PACKET_BYTES)? {
                    Decoded::Frame { frame, .. } => frame.total_len(),
                    Decoded::Incomplete => 0,
                };
                Ok(None)
            }
        }
    }

    /// Stands in for one read in tests: copies what fits, returns how many bytes.
    #[cfg(test)]
    fn push(&mut self, bytes: &[u8]) -> usize {
        let mut buf = self.begin_read();
        let room = buf.capacity() - buf.len();
        assert!(room > 0, "begin_read left no room");
        let n = room.min(bytes.len());
        buf.extend_from_slice(&bytes[..n]);
        self.finish_read(buf);
        n
    }
}

/// Appends the wire bytes of a packet the generator sends.
pub(crate) fn append_packet(packet: &Packet<'_>, version: Version, out: &mut Vec<u8>) {
    // Every packet built here is valid (non-empty filters, ids > 0, sizes
    // well below the limits), so encoding cannot fail.
    if let Err(e) = encode(packet, version, out) {
        unreachable!("the generator built an invalid packet: {e}");
    }
}

/// Appends a PUBACK for `packet_id`.
pub(crate) fn append_puback(packet_id: u16, version: Version, out: &mut Vec<u8>) {
    append_packet(
        &Packet::PubAck(Ack {
            packet_id,
            code: ReasonCode::Success,
            properties: Properties::default(),
        }),
        version,
        out,
    );
}

/// The bytes of a normal DISCONNECT.
pub(crate) fn disconnect_bytes(version: Version) -> Vec<u8> {
    let mut out = Vec::with_capacity(4);
    append_packet(
        &Packet::Disconnect(Disconnect::default()),
        version,
        &mut out,
    );
    out
}

/// How a client introduces itself.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Hello<'a> {
    pub(crate) version: Version,
    pub(crate) client_id: &'a str,
    pub(crate) keep_alive_secs: u16,
}

/// Reads until one whole packet is buffered and hands it to `take`.
async fn read_packet<T>(
    stream: &mut TcpStream,
    reader: &mut PacketReader,
    what: &str,
    mut take: impl FnMut(Packet<'_>) -> Result<T, ClientError>,
) -> Result<T, ClientError> {
    loop {
        if let Some(packet) = reader.next_packet()? {
            return take(packet);
        }
        if reader.read_from(stream).await? == 0 {
            return Err(ClientError::new(
                "ClosedByServer",
                format!("the server closed the connection before its {what}"),
            ));
        }
    }
}

/// Connects (from `source`, if given), sends CONNECT (clean start) and waits
/// for a CONNACK that accepts it, all within `timeout`.
pub(crate) async fn connect_client(
    source: Option<Ipv4Addr>,
    target: SocketAddr,
    hello: Hello<'_>,
    timeout: Duration,
    recv_buffer_bytes: usize,
) -> Result<(TcpStream, PacketReader), ClientError> {
    let handshake = async {
        let mut stream = connect_from(source, target, timeout).await?;
        let mut connect = Vec::with_capacity(32 + hello.client_id.len());
        append_packet(
            &Packet::Connect(Connect {
                version: hello.version,
                clean_start: true,
                keep_alive_secs: hello.keep_alive_secs,
                client_id: hello.client_id,
                will: None,
                username: None,
                password: None,
                properties: Properties::default(),
            }),
            hello.version,
            &mut connect,
        );
        let (written, _) = stream.write_all(connect).await;
        written?;
        let mut reader = PacketReader::new(hello.version, recv_buffer_bytes);
        read_packet(&mut stream, &mut reader, "CONNACK", |packet| match packet {
            Packet::ConnAck(ack) if ack.code == ReasonCode::Success => Ok(()),
            Packet::ConnAck(ack) => Err(ClientError::new(
                "ConnAckRefused",
                format!("CONNACK refused the connection: {:?}", ack.code),
            )),
            other => Err(ClientError::new(
                "ProtocolError",
                format!("expected CONNACK, got {:?}", other.packet_type()),
            )),
        })
        .await?;
        Ok::<_, ClientError>((stream, reader))
    };
    match monoio::time::timeout(timeout, handshake).await {
        Ok(result) => result,
        Err(_) => Err(ClientError::new(
            "TimedOut",
            format!("no CONNACK within {timeout:?}"),
        )),
    }
}

/// Subscribes to `filter` at `qos` and waits (within `timeout`) for a SUBACK
/// that grants it.
pub(crate) async fn subscribe(
    stream: &mut TcpStream,
    reader: &mut PacketReader,
    version: Version,
    filter: &str,
    qos: QoS,
    timeout: Duration,
) -> Result<(), ClientError> {
    const PACKET_ID: u16 = 1;
    let mut bytes = Vec::with_capacity(16 + filter.len());
    append_packet(
        &Packet::Subscribe(Subscribe {
            packet_id: PACKET_ID,
            filters: vec![(
                filter,
                SubscriptionOptions {
                    qos,
                    ..SubscriptionOptions::default()
                },
            )],
            properties: Properties::default(),
        }),
        version,
        &mut bytes,
    );
    let exchange = async {
        let (written, _) = stream.write_all(bytes).await;
        written?;
        read_packet(stream, reader, "SUBACK", |packet| match packet {
            Packet::SubAck(ack) if ack.packet_id == PACKET_ID => match ack.codes.first() {
                Some(code) if !code.is_error() => Ok(()),
                code => Err(ClientError::new(
                    "SubAckRefused",
                    format!("SUBACK refused {filter:?}: {code:?}"),
                )),
            },
            other => Err(ClientError::new(
                "ProtocolError",
                format!("expected SUBACK, got {:?}", other.packet_type()),
            )),
        })
        .await
    };
    match monoio::time::timeout(timeout, exchange).await {
        Ok(result) => result,
        Err(_) => Err(ClientError::new(
            "TimedOut",
            format!("no SUBACK within {timeout:?}"),
        )),
    }
}

/// What a probe says about its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Probe {
    pub(crate) sent_ns: u64,
    pub(crate) seq: u64,
    pub(crate) publisher: u32,
}

impl Probe {
    fn write(&self, out: &mut [u8]) {
        out[0..8].copy_from_slice(&self.sent_ns.to_be_bytes());
        out[8..16].copy_from_slice(&self.seq.to_be_bytes());
        out[16..20].copy_from_slice(&self.publisher.to_be_bytes());
        out[20..24].copy_from_slice(&PROBE_MARKER);
    }

    /// The probe at the start of `payload`; `None` if it is too short or
    /// not one of ours.
    pub(crate) fn parse(payload: &[u8]) -> Option<Self> {
        let (sent, rest) = payload.split_first_chunk::<8>()?;
        let (seq, rest) = rest.split_first_chunk::<8>()?;
        let (publisher, rest) = rest.split_first_chunk::<4>()?;
        let (marker, _) = rest.split_first_chunk::<4>()?;
        (*marker == PROBE_MARKER).then(|| Self {
            sent_ns: u64::from_be_bytes(*sent),
            seq: u64::from_be_bytes(*seq),
            publisher: u32::from_be_bytes(*publisher),
        })
    }
}

/// One pre-encoded PUBLISH; appending a copy only rewrites the probe and
/// (QoS 1) the packet identifier.
#[derive(Debug, Clone)]
pub(crate) struct PublishTemplate {
    bytes: Vec<u8>,
    payload_at: usize,
    packet_id_at: Option<usize>,
}

impl PublishTemplate {
    /// `payload_bytes` must be at least [`PROBE_BYTES`].
    pub(crate) fn new(
        topic: &str,
        qos: QoS,
        payload_bytes: usize,
        version: Version,
    ) -> Result<Self, String> {
        if payload_bytes < PROBE_BYTES {
            return Err(format!(
                "a payload needs at least {PROBE_BYTES} bytes for the probe"
            ));
        }
        let payload = vec![FILLER_BYTE; payload_bytes];
        let with_id = qos != QoS::AtMostOnce;
        let mut bytes = Vec::new();
        encode(
            &Packet::Publish(Publish {
                dup: false,
                qos,
                retain: false,
                topic,
                packet_id: with_id.then_some(1),
                properties: Properties::default(),
                payload: &payload,
            }),
            version,
            &mut bytes,
        )
        .map_err(|e| format!("cannot encode a PUBLISH to {topic:?}: {e}"))?;
        let header_len = match read_fixed_header(&bytes, u32::MAX) {
            Ok(Decoded::Frame { frame, .. }) => frame.header_len,
            _ => return Err("cannot read back the PUBLISH just encoded".to_owned()),
        };
        // Variable header: topic (2-byte length + bytes), then the packet
        // identifier when QoS > 0, then (5.0) the properties.
        let packet_id_at = with_id.then_some(header_len + 2 + topic.len());
        Ok(Self {
            payload_at: bytes.len() - payload_bytes,
            bytes,
            packet_id_at,
        })
    }

    /// Bytes of one PUBLISH on the wire.
    pub(crate) fn packet_bytes(&self) -> usize {
        self.bytes.len()
    }

    /// Appends one PUBLISH carrying `probe` (and `packet_id` at QoS 1) to `out`.
    pub(crate) fn append(&self, out: &mut Vec<u8>, probe: &Probe, packet_id: u16) {
        let base = out.len();
        out.extend_from_slice(&self.bytes);
        let payload_at = base + self.payload_at;
        probe.write(&mut out[payload_at..payload_at + PROBE_BYTES]);
        if let Some(at) = self.packet_id_at {
            out[base + at..base + at + 2].copy_from_slice(&packet_id.to_be_bytes());
        }
    }
}

/// The packet identifier of message `seq` of a QoS 1 publisher: 1..=65535,
/// cycling (a window is far smaller than 65535, so ids never collide).
pub(crate) fn packet_id_of(seq: u64) -> u16 {
    (seq % 65_535) as u16 + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(reader: &mut PacketReader) -> Vec<String> {
        let mut got = Vec::new();
        while let Some(packet) = reader.next_packet().unwrap() {
            got.push(match packet {
                Packet::Publish(p) => {
                    let probe = Probe::parse(p.payload).unwrap();
                    format!(
                        "{} {} {:?} {}",
                        p.topic,
                        probe.seq,
                        p.packet_id,
                        p.payload.len()
                    )
                }
                other => format!("{:?}", other.packet_type()),
            });
        }
        got
    }

    #[test]
    fn template_round_trips_through_the_codec() {
        for version in [Version::V311, Version::V5] {
            for (qos, payload) in [(QoS::AtMostOnce, 64), (QoS::AtLeastOnce, 1024)] {
                let template =
                    PublishTemplate::new("bench/1/in/2/3", qos, payload, version).unwrap();
                let mut stream = Vec::new();
                for seq in 0..3u64 {
                    let probe = Probe {
                        sent_ns: 1_000 + seq,
                        seq,
                        publisher: 3,
                    };
                    template.append(&mut stream, &probe, packet_id_of(seq + 70_000));
                }
                append_puback(9, version, &mut stream);
                assert_eq!(stream.len(), 3 * template.packet_bytes() + 4);
                // Reads of every size, and a buffer smaller than one packet.
                for chunk in [1, 7, 100, 5000] {
                    let mut reader = PacketReader::new(version, 16);
                    let mut got = Vec::new();
                    for mut piece in stream.chunks(chunk) {
                        while !piece.is_empty() {
                            piece = &piece[reader.push(piece)..];
                            got.extend(decode_all(&mut reader));
                        }
                    }
                    let id =
                        |seq: u64| (qos == QoS::AtLeastOnce).then(|| packet_id_of(seq + 70_000));
                    assert_eq!(
                        got,
                        [
                            format!("bench/1/in/2/3 0 {:?} {payload}", id(0)),
                            format!("bench/1/in/2/3 1 {:?} {payload}", id(1)),
                            format!("bench/1/in/2/3 2 {:?} {payload}", id(2)),
                            "PubAck".to_owned(),
                        ],
                        "{version:?} {qos:?} reads of {chunk}"
                    );
                }
            }
        }
    }

    #[test]
    fn probe_parse() {
        let probe = Probe {
            sent_ns: 0x0102_0304_0506_0708,
            seq: 42,
            publisher: 7,
        };
        let mut payload = vec![0u8; 30];
        probe.write(&mut payload);
        assert_eq!(Probe::parse(&payload), Some(probe));
        assert_eq!(Probe::parse(&payload[..23]), None);
        payload[21] = b'X';
        assert_eq!(Probe::parse(&payload), None);
        assert!(PublishTemplate::new("t", QoS::AtMostOnce, 23, Version::V311).is_err());
    }

    #[test]
    fn packet_ids_cycle_and_skip_zero() {
        assert_eq!(packet_id_of(0), 1);
        assert_eq!(packet_id_of(65_534), 65_535);
        assert_eq!(packet_id_of(65_535), 1);
    }

    #[test]
    fn disconnect_is_two_bytes() {
        assert_eq!(disconnect_bytes(Version::V311), [0xe0, 0x00]);
    }
}
