//! Live streams: RTMP publishers, and viewers over HTTP-FLV, WebSocket-FLV
//! and RTMP play.
//!
//! ```text
//! RTMP publish ─▶ rtmp::serve ─▶ MediaTag::pack (the one copy) ─▶ StreamHub::publish
//!    ├─▶ GOP cache of the origin core ─▶ Viewer::offer (each viewer here)
//!    └─▶ MeshMsg::StreamTag, once per core with viewers ─▶ its GOP cache ─▶ its viewers
//! Viewer: bounded queue of shared tags (the connection's write half);
//!    behind → skip to the next keyframe; behind past max_viewer_lag → end.
//! ```
//!
//! Bounds: `[runtime.streams]` — a viewer's queue in bytes and in media
//! time, how long it may lag, the GOP cache's bytes, the largest tag, the
//! number of live streams. Every skip and disconnect is counted.

mod gop;
mod hub;
mod play;
mod rtmp;
mod tag;
mod viewer;

pub(crate) use hub::StreamHub;
pub(crate) use play::{admit_play, flv_stream_path, serve_flv};
pub(crate) use rtmp::serve as serve_rtmp;
pub(crate) use tag::CrossTag;
