//! RTMP tests: spec byte vectors of the chunk stream and messages (annotated
//! field by field), the handshake (simple and digest, with digests checked
//! independently of the code under test), and in-memory client/server pairs.

mod chunk;
mod handshake;
mod message;
mod pair;
mod sessions;
