//! Sans-IO wire formats and protocol state machines for Shoal.
//!
//! Invariant: nothing in this crate performs I/O, reads a clock, or depends on
//! an async runtime. Decoders borrow the caller's buffer and report how much
//! they consumed; encoders write into a buffer they are handed. Peer input
//! never panics: `unwrap`, `expect`, slice indexing and `panic!` are denied
//! outside tests.
//!
//! ```
//! use shoal_protocols::framing::{Decoded, Framer, FramingConfig};
//! let framer = Framer::new(&FramingConfig::default(), 1024).unwrap();
//! let mut wire = Vec::new();
//! framer.encode_into(b"hello", &mut wire).unwrap();
//! match framer.decode(&wire).unwrap() {
//!     Decoded::Frame { frame, consumed } => {
//!         assert_eq!(&wire[frame.payload], b"hello");
//!         assert_eq!(consumed, wire.len());
//!     }
//!     Decoded::Incomplete => unreachable!(),
//! }
//! ```
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )
)]

pub mod amf0;
pub mod coap;
pub mod config;
pub mod control;
pub mod figures;
pub mod flv;
pub mod framing;
pub mod http1;
pub mod mqtt;
pub mod rtmp;
pub mod topic;
pub mod websocket;
