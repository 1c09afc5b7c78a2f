//! Unit tests of the CoAP module: byte vectors from RFC 7252 and from
//! libcoap's `coap-client`, every error path and its answer, and the state
//! machines under simulated time.

use super::*;

mod block;
mod codec;
mod options;
mod state;

/// Bytes of a hex string (whitespace ignored).
fn hex(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text
        .bytes()
        .filter(|byte| !byte.is_ascii_whitespace())
        .collect();
    digits
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
        .collect()
}

/// Decodes `wire`, checks that it encodes back to the same bytes, returns it.
fn decoded(wire: &[u8]) -> Message<'_> {
    let message = decode(wire).unwrap_or_else(|e| panic!("{e}: {wire:02x?}"));
    let mut again = Vec::new();
    encode_message(&message, &mut again);
    assert_eq!(again, wire, "re-encoding differs");
    message
}

fn decode_err(wire: &[u8]) -> CoapError {
    decode(wire).unwrap_err()
}

/// The answer an error writes, if any.
fn answer_of(error: &CoapError) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    error.write_answer(&mut out, 0xBEEF).then_some(out)
}

/// What `coap-client` (libcoap 4.3.1, `coap-client-notls`) sent to a UDP
/// listener on 127.0.0.1, captured once.
mod libcoap {
    /// `coap-client -m post -e hello 'coap://127.0.0.1:56831/devices/d1/up?secret=s3cr3t'`
    pub(super) const POST_QUERY: &str = "41025a9b0172ddff47646576696365730264310275704d00\
        7365637265743d733363723374ff68656c6c6f";
    /// `coap-client -b 64 coap://127.0.0.1:56832/devices/d1/down`, against a
    /// server sending a 150-byte body in 64-byte blocks: the three requests.
    pub(super) const BLOCK_GET: [&str; 3] = [
        "4101c8950172de00476465766963657302643104646f776ec102",
        "4701c8960200000000000272de00476465766963657302643104646f776ec112",
        "4701c8970300000000000272de00476465766963657302643104646f776ec122",
    ];
    /// `coap-client -s 1 coap://127.0.0.1:56833/devices/d1/down` (observe).
    pub(super) const OBSERVE_GET: &str = "4101c50e016012de01476465766963657302643104646f776e";
    /// `coap-client -m post -b 16 -f FILE 'coap://127.0.0.1:56835/devices/d1/up?secret=s3cr3t'`
    /// with a 40-byte file of `x`: three Block1 requests (Size1 40 and a
    /// Request-Tag in each; the token changes after the first).
    pub(super) const BLOCK1_POST: [&str; 3] = [
        "4102cbac0172de0347646576696365730264310275704d007365637265743d733363723374\
         c108d11428d4dbcb6b52dbff78787878787878787878787878787878",
        "4702cbad0200000000000372de0347646576696365730264310275704d007365637265743d\
         733363723374c118d11428d4dbcb6b52dbff78787878787878787878787878787878",
        "4702cbae0300000000000372de0347646576696365730264310275704d007365637265743d\
         733363723374c120d11428d4dbcb6b52dbff7878787878787878",
    ];
}
