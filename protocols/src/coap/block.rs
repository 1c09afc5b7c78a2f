//! Block-wise transfers (RFC 7959): the Block1/Block2 option value, a
//! Block1 reassembler for request bodies, a Block2 slicer for response
//! bodies.

use std::collections::HashMap;
use std::hash::Hash;

use super::message::Message;
use super::option::{decode_uint, OptionNumber};
use super::{CoapError, EXCHANGE_LIFETIME_MS};

/// Largest SZX that is a block size (6: 1024 bytes; 7 is reserved).
pub const MAX_SZX: u8 = 6;

/// A Block1 or Block2 option value: block number, "more" flag and size
/// exponent (block size = 2^(SZX + 4), 16 to 1024 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockOption {
    num: u32,
    more: bool,
    szx: u8,
}

impl BlockOption {
    /// Largest block number (20 bits).
    pub const MAX_NUM: u32 = (1 << 20) - 1;

    /// A block option; `None` for a number over [`MAX_NUM`](Self::MAX_NUM)
    /// or an SZX over [`MAX_SZX`].
    pub fn new(num: u32, more: bool, szx: u8) -> Option<Self> {
        (num <= Self::MAX_NUM && szx <= MAX_SZX).then_some(Self { num, more, szx })
    }

    /// Decodes an option value (0 to 3 bytes); `None` for a longer one. SZX
    /// 7 is returned as is: [`Message::block1`] and [`Message::block2`]
    /// refuse it.
    pub fn decode(value: &[u8]) -> Option<Self> {
        if value.len() > 3 {
            return None;
        }
        let raw = decode_uint(value)?;
        Some(Self {
            num: raw >> 4,
            more: raw & 0x8 != 0,
            szx: (raw & 0x7) as u8,
        })
    }

    /// The unsigned-integer option value (`NUM << 4 | M << 3 | SZX`).
    pub fn value(self) -> u32 {
        self.num << 4 | u32::from(self.more) << 3 | u32::from(self.szx)
    }

    /// The block number.
    pub fn num(self) -> u32 {
        self.num
    }

    /// Whether more blocks follow.
    pub fn more(self) -> bool {
        self.more
    }

    /// The size exponent (0-6, or 7 from a peer before it is refused).
    pub fn szx(self) -> u8 {
        self.szx
    }

    /// The block size in bytes: 16 << SZX.
    pub fn size(self) -> usize {
        16 << self.szx
    }

    /// Where the block starts in the body: NUM × size.
    pub fn offset(self) -> u64 {
        u64::from(self.num) * self.size() as u64
    }

    /// The SZX of a block size (16, 32, ... 1024), `None` for other sizes.
    pub fn szx_for_size(size: usize) -> Option<u8> {
        (0..=MAX_SZX).find(|szx| 16usize << szx == size)
    }
}

/// One block of a response body, what [`Block2Slice::of`] cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block2Slice<'b> {
    /// The Block2 option to send, `None` when the whole body goes in one
    /// response and the client did not ask for blocks.
    pub block: Option<BlockOption>,
    /// The bytes to send as payload.
    pub payload: &'b [u8],
}

impl<'b> Block2Slice<'b> {
    /// Cuts the block a client asked for out of `body`.
    ///
    /// The block size is the client's (`requested`) or `max_szx`, whichever
    /// is smaller; when Shoal's is smaller, the client's NUM is converted so
    /// that the block starts at the same byte (RFC 7959 §2.4). Without a
    /// request Block2, a body that fits in one block of `max_szx` is sent
    /// whole, a larger one as block 0. `None` when the block starts past the
    /// end of the body (answer 4.02 Bad Option).
    pub fn of(body: &'b [u8], requested: Option<BlockOption>, max_szx: u8) -> Option<Self> {
        let max_szx = max_szx.min(MAX_SZX);
        let (offset, szx) = match requested {
            None if body.len() <= 16 << max_szx => {
                return Some(Self {
                    block: None,
                    payload: body,
                })
            }
            None => (0, max_szx),
            Some(block) => (block.offset(), block.szx.min(max_szx)),
        };
        let size = 16u64 << szx;
        let len = body.len() as u64;
        if offset > len || (offset == len && offset > 0) {
            return None;
        }
        let end = (offset + size).min(len);
        let payload = body.get(offset as usize..end as usize)?;
        let block = BlockOption::new(u32::try_from(offset / size).ok()?, end < len, szx)?;
        Some(Self {
            block: Some(block),
            payload,
        })
    }
}

/// The block of `body` that `request` asks for with its Block2 option (see
/// [`Block2Slice::of`]). Errors: a bad Block2 (4.02, or 4.00 for SZX 7), a
/// block past the end of the body ([`CoapError::BlockOutOfRange`], 4.02).
pub fn block2_response<'b>(
    request: &Message<'_>,
    body: &'b [u8],
    max_szx: u8,
) -> Result<Block2Slice<'b>, CoapError> {
    let requested = request.block2()?;
    Block2Slice::of(body, requested, max_szx).ok_or(CoapError::BlockOutOfRange {
        header: request.header(),
        num: requested.map_or(0, BlockOption::num),
    })
}

impl Message<'_> {
    /// A 64-bit digest (FNV-1a) of what identifies a block-wise request
    /// body besides the peer: the method and the Uri-Host, Uri-Port,
    /// Uri-Path, Uri-Query and Request-Tag options. Clients may change the
    /// token from block to block (libcoap does), so the token is not part
    /// of it.
    pub fn block1_transfer_id(&self) -> u64 {
        const PRIME: u64 = 0x0000_0100_0000_01B3;
        let mut hash: u64 = 0xCBF2_9CE4_8422_2325;
        let mut mix = |bytes: &[u8]| {
            for &byte in bytes {
                hash ^= u64::from(byte);
                hash = hash.wrapping_mul(PRIME);
            }
        };
        mix(&[self.code.0]);
        for option in self.options() {
            if matches!(
                option.number,
                OptionNumber::URI_HOST
                    | OptionNumber::URI_PORT
                    | OptionNumber::URI_PATH
                    | OptionNumber::URI_QUERY
                    | OptionNumber::REQUEST_TAG
            ) {
                mix(&option.number.0.to_be_bytes());
                mix(&(option.value.len() as u16).to_be_bytes());
                mix(option.value);
            }
        }
        hash
    }
}

/// Limits of a [`Block1Reassembler`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block1Config {
    /// Largest request body (default 64 KiB); more is refused with 4.13 and
    /// a Size1 option carrying this limit.
    pub max_body_bytes: usize,
    /// Most transfers open at once (default 256); a new one beyond it is
    /// refused with 5.03 (the open ones are kept).
    pub max_transfers: usize,
    /// Most transfers open at once per peer (default 4), same policy.
    pub max_transfers_per_peer: usize,
    /// A transfer with no block for this long is dropped (default
    /// EXCHANGE_LIFETIME, 247 s); its next block gets 4.08.
    pub transfer_timeout_ms: u64,
    /// Largest block size Shoal takes, as an SZX (default 6, 1024 bytes): a
    /// smaller one is asked for in the 2.31 answers.
    pub max_szx: u8,
}

impl Default for Block1Config {
    fn default() -> Self {
        Self {
            max_body_bytes: 64 * 1024,
            max_transfers: 256,
            max_transfers_per_peer: 4,
            transfer_timeout_ms: EXCHANGE_LIFETIME_MS,
            max_szx: MAX_SZX,
        }
    }
}

/// Counters of a [`Block1Reassembler`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Block1Figures {
    /// Transfers open now.
    pub active: usize,
    /// Body bytes buffered now.
    pub buffered_bytes: usize,
    /// Transfers started (block 0 with more to come).
    pub started: u64,
    /// Transfers whose last block arrived.
    pub completed: u64,
    /// Transfers replaced by a new block 0 before they completed.
    pub restarted: u64,
    /// Transfers dropped by the timeout.
    pub expired: u64,
    /// Blocks answered with 4.08 (no transfer, or not the next block).
    pub incomplete: u64,
    /// Requests refused with 4.13.
    pub too_large: u64,
    /// Transfers refused with 5.03 (table or peer share full).
    pub refused_busy: u64,
}

/// What [`Block1Reassembler::feed`] made of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Block1Outcome {
    /// The request's own payload is the whole body: it had no Block1, or a
    /// Block1 0 without "more". Handle it; echo `block` (if any) in the
    /// response.
    Whole {
        /// The Block1 option to echo in the final response.
        block: Option<BlockOption>,
    },
    /// A block was stored: answer 2.31 Continue with this Block1 option.
    Continue {
        /// The Block1 option of the 2.31 answer (the request's NUM, M set,
        /// Shoal's SZX if smaller).
        block: BlockOption,
    },
    /// The last block arrived: `body` is the whole request body. Handle it
    /// and echo `block` in the response.
    Complete {
        /// The reassembled body (moved out of the reassembler, no copy).
        body: Vec<u8>,
        /// The Block1 option to echo in the final response (M clear).
        block: BlockOption,
    },
}

#[derive(Debug)]
struct Transfer {
    body: Vec<u8>,
    /// Where the last block stored started (a repeat of it is answered again).
    last_offset: usize,
    last_more: bool,
    last_seen_ms: u64,
}

/// Reassembles request bodies sent block-wise with Block1 (RFC 7959 §2.3,
/// §2.5), per peer and request (see [`Message::block1_transfer_id`]).
///
/// Blocks must come in order. Block 0 starts (or restarts) a transfer; a
/// later block with no open transfer, or not starting where the body ends,
/// is refused with [`CoapError::RequestEntityIncomplete`] (4.08) and the
/// transfer is dropped — except a repeat of the last block, which is
/// answered again. A block with "more" must be exactly its size
/// ([`CoapError::BlockSizeMismatch`], 4.00). A body over the limit, or a
/// Size1 announcing one, is refused with
/// [`CoapError::RequestEntityTooLarge`] (4.13 with Size1). The table is
/// bounded (globally and per peer, refusal with 5.03) and idle transfers
/// expire ([`expire`](Self::expire)).
#[derive(Debug)]
pub struct Block1Reassembler<P> {
    config: Block1Config,
    transfers: HashMap<(P, u64), Transfer>,
    figures: Block1Figures,
}

impl<P: Eq + Hash + Clone> Block1Reassembler<P> {
    /// An empty reassembler.
    pub fn new(config: Block1Config) -> Self {
        Self {
            config,
            transfers: HashMap::new(),
            figures: Block1Figures::default(),
        }
    }

    /// The limits in force.
    pub fn config(&self) -> &Block1Config {
        &self.config
    }

    /// Counters and gauges.
    pub fn figures(&self) -> Block1Figures {
        Block1Figures {
            active: self.transfers.len(),
            ..self.figures
        }
    }

    /// Takes a request from `peer` at `now_ms`. See [`Block1Outcome`] for
    /// the answers; every error names its answer ([`CoapError::reaction`]).
    pub fn feed(
        &mut self,
        now_ms: u64,
        peer: &P,
        request: &Message<'_>,
    ) -> Result<Block1Outcome, CoapError> {
        let header = request.header();
        let block = request.block1()?;
        let key = (peer.clone(), request.block1_transfer_id());
        let too_large = CoapError::RequestEntityTooLarge {
            header,
            limit: self.config.max_body_bytes,
        };
        let announced = request.size1().map_or(0, |size| size as usize);
        if announced > self.config.max_body_bytes
            || request.payload.len() > self.config.max_body_bytes
        {
            self.drop_transfer(&key);
            self.figures.too_large += 1;
            return Err(too_large);
        }
        let Some(block) = block else {
            return Ok(Block1Outcome::Whole { block: None });
        };
        let payload = request.payload;
        if payload.len() > block.size() || (block.more && payload.len() != block.size()) {
            self.drop_transfer(&key);
            return Err(CoapError::BlockSizeMismatch {
                header,
                size: block.size(),
                len: payload.len(),
            });
        }
        let answer_szx = block.szx.min(self.config.max_szx.min(MAX_SZX));
        let continue_block = BlockOption {
            num: block.num,
            more: true,
            szx: answer_szx,
        };

        if block.num == 0 {
            if self.drop_transfer(&key) {
                self.figures.restarted += 1;
            }
            if !block.more {
                return Ok(Block1Outcome::Whole { block: Some(block) });
            }
            self.expire(now_ms);
            let of_peer = self.transfers.keys().filter(|(p, _)| p == peer).count();
            if self.transfers.len() >= self.config.max_transfers
                || of_peer >= self.config.max_transfers_per_peer
            {
                self.figures.refused_busy += 1;
                return Err(CoapError::TransfersFull {
                    header,
                    limit: self.config.max_transfers,
                });
            }
            self.figures.started += 1;
            self.figures.buffered_bytes += payload.len();
            self.transfers.insert(
                key,
                Transfer {
                    body: payload.to_vec(),
                    last_offset: 0,
                    last_more: true,
                    last_seen_ms: now_ms,
                },
            );
            return Ok(Block1Outcome::Continue {
                block: continue_block,
            });
        }

        let offset = block.offset();
        let timeout = self.config.transfer_timeout_ms;
        let incomplete = CoapError::RequestEntityIncomplete {
            header,
            offset,
            expected: None,
        };
        let Some(transfer) = self.transfers.get_mut(&key) else {
            self.figures.incomplete += 1;
            return Err(incomplete);
        };
        let body_len = transfer.body.len();
        if now_ms.saturating_sub(transfer.last_seen_ms) > timeout {
            self.drop_transfer(&key);
            self.figures.expired += 1;
            self.figures.incomplete += 1;
            return Err(incomplete);
        }
        if offset != body_len as u64 {
            let repeat = offset == transfer.last_offset as u64
                && transfer.last_offset + payload.len() == body_len
                && block.more == transfer.last_more;
            if repeat {
                transfer.last_seen_ms = now_ms;
                return Ok(Block1Outcome::Continue {
                    block: continue_block,
                });
            }
            self.drop_transfer(&key);
            self.figures.incomplete += 1;
            return Err(CoapError::RequestEntityIncomplete {
                header,
                offset,
                expected: Some(body_len as u64),
            });
        }
        if body_len + payload.len() > self.config.max_body_bytes {
            self.drop_transfer(&key);
            self.figures.too_large += 1;
            return Err(too_large);
        }
        transfer.body.extend_from_slice(payload);
        transfer.last_offset = body_len;
        transfer.last_more = block.more;
        transfer.last_seen_ms = now_ms;
        self.figures.buffered_bytes += payload.len();
        if block.more {
            return Ok(Block1Outcome::Continue {
                block: continue_block,
            });
        }
        let body = self
            .transfers
            .remove(&key)
            .map(|transfer| transfer.body)
            .unwrap_or_default();
        self.figures.buffered_bytes = self.figures.buffered_bytes.saturating_sub(body.len());
        self.figures.completed += 1;
        Ok(Block1Outcome::Complete {
            body,
            block: BlockOption {
                num: block.num,
                more: false,
                szx: block.szx,
            },
        })
    }

    /// Drops the transfers idle for longer than the timeout; returns how
    /// many. Call it now and then (every second is plenty).
    pub fn expire(&mut self, now_ms: u64) -> usize {
        let timeout = self.config.transfer_timeout_ms;
        let before = self.transfers.len();
        let mut freed = 0;
        self.transfers.retain(|_, transfer| {
            let keep = now_ms.saturating_sub(transfer.last_seen_ms) <= timeout;
            if !keep {
                freed += transfer.body.len();
            }
            keep
        });
        let expired = before - self.transfers.len();
        self.figures.expired += expired as u64;
        self.figures.buffered_bytes = self.figures.buffered_bytes.saturating_sub(freed);
        expired
    }

    /// Drops every transfer of `peer` (it went away); returns how many.
    pub fn remove_peer(&mut self, peer: &P) -> usize {
        let before = self.transfers.len();
        let mut freed = 0;
        self.transfers.retain(|(p, _), transfer| {
            let keep = p != peer;
            if !keep {
                freed += transfer.body.len();
            }
            keep
        });
        self.figures.buffered_bytes = self.figures.buffered_bytes.saturating_sub(freed);
        before - self.transfers.len()
    }

    fn drop_transfer(&mut self, key: &(P, u64)) -> bool {
        match self.transfers.remove(key) {
            Some(transfer) => {
                self.figures.buffered_bytes = self
                    .figures
                    .buffered_bytes
                    .saturating_sub(transfer.body.len());
                true
            }
            None => false,
        }
    }
}
