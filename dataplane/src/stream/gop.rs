//! The GOP cache of one stream on one core: what a new viewer is sent
//! first so that it shows a picture at once.

use std::rc::Rc;

use super::tag::{MediaTag, TagRole};

/// Metadata, sequence headers, and the tags since the last keyframe
/// (bounded in bytes: a GOP that outgrows the bound is not kept, and a
/// new viewer waits for the next keyframe).
#[derive(Debug, Default)]
pub(crate) struct GopCache {
    metadata: Option<Rc<MediaTag>>,
    video_header: Option<Rc<MediaTag>>,
    audio_header: Option<Rc<MediaTag>>,
    /// Starts with a keyframe, or is empty.
    gop: Vec<Rc<MediaTag>>,
    gop_bytes: usize,
    /// The current GOP outgrew the bound: nothing kept until the next
    /// keyframe.
    overflowed: bool,
    /// A video tag was seen: viewers start on keyframes (an audio-only
    /// stream starts anywhere).
    has_video: bool,
}

impl GopCache {
    /// Takes `tag` in; `limit_bytes` bounds the GOP.
    pub(crate) fn push(&mut self, tag: &Rc<MediaTag>, limit_bytes: usize) {
        match tag.role {
            TagRole::Metadata => self.metadata = Some(Rc::clone(tag)),
            TagRole::VideoHeader => {
                self.has_video = true;
                self.video_header = Some(Rc::clone(tag));
            }
            TagRole::AudioHeader => self.audio_header = Some(Rc::clone(tag)),
            TagRole::Keyframe => {
                self.has_video = true;
                self.gop.clear();
                self.gop_bytes = 0;
                self.overflowed = false;
                self.keep(tag, limit_bytes);
            }
            TagRole::Video | TagRole::Audio | TagRole::Script => {
                if tag.role == TagRole::Video {
                    self.has_video = true;
                }
                if !self.gop.is_empty() && !self.overflowed {
                    self.keep(tag, limit_bytes);
                }
            }
        }
    }

    fn keep(&mut self, tag: &Rc<MediaTag>, limit_bytes: usize) {
        if self.gop_bytes + tag.len() > limit_bytes {
            self.gop.clear();
            self.gop_bytes = 0;
            self.overflowed = true;
            return;
        }
        self.gop_bytes += tag.len();
        self.gop.push(Rc::clone(tag));
    }

    /// Whether a viewer may start at `tag` (after the headers).
    pub(crate) fn is_start_point(&self, tag: &MediaTag) -> bool {
        match tag.role {
            TagRole::Keyframe => true,
            TagRole::Audio => !self.has_video,
            _ => false,
        }
    }

    /// The headers a new viewer gets first, in order.
    pub(crate) fn headers(&self) -> impl Iterator<Item = &Rc<MediaTag>> {
        self.metadata
            .iter()
            .chain(self.video_header.iter())
            .chain(self.audio_header.iter())
    }

    /// The cached GOP (starting on a keyframe), empty when there is none.
    pub(crate) fn gop(&self) -> &[Rc<MediaTag>] {
        &self.gop
    }

    /// Whether the stream has video (so far).
    pub(crate) fn has_video(&self) -> bool {
        self.has_video
    }

    /// Whether it has an audio track (so far).
    pub(crate) fn has_audio(&self) -> bool {
        self.audio_header.is_some()
    }

    /// Bytes the cache holds.
    pub(crate) fn bytes(&self) -> usize {
        self.gop_bytes + self.headers().map(|t| t.len()).sum::<usize>()
    }
}
