//! Feeds arbitrary bytes to the control-protocol readers: every message
//! type a peer can send on either socket, through `wire::decode` and
//! through a `FrameBuffer` fed in two pieces. A frame must not take more
//! than it was given, and whatever decodes must encode and decode back to
//! the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;
use serde::Serialize;
use shoal_protocols::control::{
    wire, CliRequest, CliResponse, FrameBuffer, FromDataPlane, Hello, HelloReply, ToDataPlane,
};
use shoal_protocols::framing::Decoded;

const LIMIT: u32 = 1 << 16;

fn check<T: Serialize + DeserializeOwned + PartialEq + core::fmt::Debug>(data: &[u8]) {
    if let Ok(Decoded::Frame { frame, consumed }) = wire::decode::<T>(data, LIMIT) {
        assert!(consumed <= data.len());
        let again = wire::encode_to_vec(&frame).expect("a decoded message encodes");
        match wire::decode::<T>(&again, u32::MAX) {
            Ok(Decoded::Frame { frame: back, .. }) => assert_eq!(back, frame),
            other => panic!("re-encoded message does not decode: {other:?}"),
        }
    }
    let split = data.len() / 2;
    let mut buffer = FrameBuffer::new(LIMIT);
    buffer.extend(&data[..split]);
    let _ = buffer.next_message::<T>();
    buffer.extend(&data[split..]);
    while let Ok(Some(_)) = buffer.next_message::<T>() {}
}

fuzz_target!(|data: &[u8]| {
    let _ = Hello::peek_protocol_version(data);
    check::<Hello>(data);
    check::<HelloReply>(data);
    check::<ToDataPlane>(data);
    check::<FromDataPlane>(data);
    check::<CliRequest>(data);
    check::<CliResponse>(data);
});
