//! Block options, the Block2 slicer and the Block1 reassembler.

use super::*;

#[test]
fn block_option_values() {
    for (value, num, more, szx) in [
        (&[][..], 0u32, false, 0u8),
        (&[0x02], 0, false, 2),
        (&[0x12], 1, false, 2),
        (&[0x0e], 0, true, 6),
        (&[0x01, 0x08], 16, true, 0),
        (&[0xff, 0xff, 0xf6], BlockOption::MAX_NUM, false, 6),
    ] {
        let block = BlockOption::decode(value).unwrap();
        assert_eq!(
            (block.num(), block.more(), block.szx()),
            (num, more, szx),
            "{value:02x?}"
        );
        assert_eq!(encode_uint(block.value()).as_slice(), value);
        assert_eq!(BlockOption::new(num, more, szx), Some(block));
    }
    assert_eq!(BlockOption::decode(&[0, 0, 0, 2]), None);
    assert_eq!(BlockOption::new(BlockOption::MAX_NUM + 1, false, 0), None);
    assert_eq!(BlockOption::new(0, false, 7), None);
    let block = BlockOption::new(3, true, 2).unwrap();
    assert_eq!((block.size(), block.offset()), (64, 192));
    assert_eq!(BlockOption::szx_for_size(16), Some(0));
    assert_eq!(BlockOption::szx_for_size(1024), Some(6));
    assert_eq!(BlockOption::szx_for_size(2048), None);
    assert_eq!(BlockOption::szx_for_size(100), None);
}

#[test]
fn reserved_szx_and_long_block_values() {
    // GET with Block2 SZX 7: 4.00 for a request.
    let wire = [0x41, 0x01, 0x00, 0x09, 0x33, 0xd1, 0x0a, 0x07];
    let message = decoded(&wire);
    let error = message.block2().unwrap_err();
    assert_eq!(
        error,
        CoapError::ReservedBlockSize {
            header: message.header(),
            option: OptionNumber::BLOCK2
        }
    );
    assert_eq!(error.reaction(), Reaction::Respond(Code::BAD_REQUEST));
    assert_eq!(answer_of(&error), Some(vec![0x61, 0x80, 0x00, 0x09, 0x33]));
    // A 4-byte Block1: a bad critical option, 4.02.
    let wire = [0x40, 0x02, 0x00, 0x09, 0xd4, 0x0e, 0, 0, 0, 0];
    let message = decoded(&wire);
    assert_eq!(
        message.block1().unwrap_err().reaction(),
        Reaction::Respond(Code::BAD_OPTION)
    );
    assert!(message.check_options().is_err());
}

const BODY: &[u8; 150] =
    b"abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwx\
yzabcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrst";

/// A slice as (block as (num, more, szx), payload).
type Sliced = (Option<(u32, bool, u8)>, &'static [u8]);

fn slice(requested: Option<(u32, u8)>, max_szx: u8) -> Option<Sliced> {
    let requested = requested.map(|(num, szx)| BlockOption::new(num, false, szx).unwrap());
    Block2Slice::of(BODY, requested, max_szx).map(|slice| {
        (
            slice.block.map(|b| (b.num(), b.more(), b.szx())),
            slice.payload,
        )
    })
}

#[test]
fn block2_slices() {
    // What libcoap asked for with -b 64: three blocks of 64 bytes.
    assert_eq!(
        slice(Some((0, 2)), 6),
        Some((Some((0, true, 2)), &BODY[..64]))
    );
    assert_eq!(
        slice(Some((1, 2)), 6),
        Some((Some((1, true, 2)), &BODY[64..128]))
    );
    assert_eq!(
        slice(Some((2, 2)), 6),
        Some((Some((2, false, 2)), &BODY[128..]))
    );
    assert_eq!(slice(Some((3, 2)), 6), None);
    // The client asks for 1024-byte blocks, Shoal sends 32: same start.
    assert_eq!(
        slice(Some((0, 6)), 1),
        Some((Some((0, true, 1)), &BODY[..32]))
    );
    // Block 1 of 64 bytes asked with Shoal at 32: starts at byte 64, block 2.
    assert_eq!(
        slice(Some((1, 2)), 1),
        Some((Some((2, true, 1)), &BODY[64..96]))
    );
    // The client's smaller size is honoured.
    assert_eq!(
        slice(Some((4, 0)), 6),
        Some((Some((4, true, 0)), &BODY[64..80]))
    );
    // No Block2 in the request: whole body if it fits, else block 0.
    assert_eq!(slice(None, 6), Some((None, &BODY[..])));
    assert_eq!(slice(None, 3), Some((Some((0, true, 3)), &BODY[..128])));
    // Max SZX above 6 counts as 6.
    assert_eq!(slice(None, 7), Some((None, &BODY[..])));
    // An empty body: block 0 is empty and last; block 1 does not exist.
    let first = BlockOption::new(0, false, 2);
    assert_eq!(
        Block2Slice::of(b"", first, 6),
        Some(Block2Slice {
            block: Some(BlockOption::new(0, false, 2).unwrap()),
            payload: b""
        })
    );
    assert_eq!(Block2Slice::of(b"", BlockOption::new(1, false, 2), 6), None);
    // A body of exactly two blocks: block 1 is the last.
    let body = [7u8; 128];
    let last = Block2Slice::of(&body, BlockOption::new(1, false, 2), 6).unwrap();
    assert!(!last.block.unwrap().more());
    assert_eq!(
        Block2Slice::of(&body, BlockOption::new(2, false, 2), 6),
        None
    );
}

#[test]
fn block2_response_to_libcoap() {
    for (num, text) in libcoap::BLOCK_GET.iter().enumerate() {
        let wire = hex(text);
        let request = decode(&wire).unwrap();
        let slice = block2_response(&request, BODY, MAX_SZX).unwrap();
        assert_eq!(slice.block.unwrap().num(), num as u32);
        let mut out = Vec::new();
        let mut response = MessageBuilder::response(&request.header(), Code::CONTENT, 0);
        response
            .block(OptionNumber::BLOCK2, slice.block.unwrap())
            .unwrap()
            .payload(slice.payload);
        response.encode(&mut out);
        let back = decoded(&out);
        assert_eq!(back.token, request.token);
        assert_eq!(back.block2().unwrap(), slice.block);
    }
    // Past the end: 4.02.
    let mut wire = Vec::new();
    let mut request = MessageBuilder::new(MessageType::Confirmable, Code::GET, 3, Token::EMPTY);
    request
        .block(OptionNumber::BLOCK2, BlockOption::new(9, false, 2).unwrap())
        .unwrap();
    request.encode(&mut wire);
    let error = block2_response(&decode(&wire).unwrap(), BODY, 6).unwrap_err();
    assert!(matches!(error, CoapError::BlockOutOfRange { num: 9, .. }));
    assert_eq!(error.reaction(), Reaction::Respond(Code::BAD_OPTION));
}

// --- Block1 -------------------------------------------------------------------

/// A block-wise POST of `payload` at block `num`, with a token that changes
/// from block to block (as libcoap does).
fn block1_post(
    num: u32,
    more: bool,
    szx: u8,
    payload: &[u8],
    extra: &[(OptionNumber, &[u8])],
) -> Vec<u8> {
    let token = Token::from_u64(u64::from(num) + 1, 2);
    let mut builder = MessageBuilder::new(MessageType::Confirmable, Code::POST, num as u16, token);
    builder.uri_path("devices/d1/up").unwrap();
    builder
        .block(
            OptionNumber::BLOCK1,
            BlockOption::new(num, more, szx).unwrap(),
        )
        .unwrap();
    for (number, value) in extra {
        builder.option(*number, value).unwrap();
    }
    builder.payload(payload);
    let mut wire = Vec::new();
    builder.encode(&mut wire);
    wire
}

fn feed(
    bodies: &mut Block1Reassembler<u32>,
    now_ms: u64,
    peer: u32,
    wire: &[u8],
) -> Result<Block1Outcome, CoapError> {
    bodies.feed(now_ms, &peer, &decode(wire).unwrap())
}

fn continue_block(num: u32, szx: u8) -> Result<Block1Outcome, CoapError> {
    Ok(Block1Outcome::Continue {
        block: BlockOption::new(num, true, szx).unwrap(),
    })
}

#[test]
fn block1_from_libcoap() {
    let mut bodies = Block1Reassembler::new(Block1Config::default());
    let wires: Vec<Vec<u8>> = libcoap::BLOCK1_POST.iter().map(|text| hex(text)).collect();
    let ids: Vec<u64> = wires
        .iter()
        .map(|w| decode(w).unwrap().block1_transfer_id())
        .collect();
    assert!(
        ids.iter().all(|&id| id == ids[0]),
        "the token is not part of the transfer"
    );
    for wire in &wires {
        assert_eq!(decoded(wire).size1(), Some(40));
        assert_eq!(decoded(wire).check_options(), Ok(()));
    }
    assert_eq!(feed(&mut bodies, 0, 1, &wires[0]), continue_block(0, 0));
    assert_eq!(bodies.figures().buffered_bytes, 16);
    assert_eq!(feed(&mut bodies, 10, 1, &wires[1]), continue_block(1, 0));
    assert_eq!(
        feed(&mut bodies, 20, 1, &wires[2]),
        Ok(Block1Outcome::Complete {
            body: vec![b'x'; 40],
            block: BlockOption::new(2, false, 0).unwrap()
        })
    );
    let figures = bodies.figures();
    assert_eq!(
        (
            figures.active,
            figures.buffered_bytes,
            figures.started,
            figures.completed
        ),
        (0, 0, 1, 1)
    );
    // A 2.31 answer to the first block.
    let request = decode(&wires[0]).unwrap();
    let mut out = Vec::new();
    let mut answer = MessageBuilder::response(&request.header(), Code::CONTINUE, 0);
    answer
        .block(OptionNumber::BLOCK1, BlockOption::new(0, true, 0).unwrap())
        .unwrap();
    answer.encode(&mut out);
    assert_eq!(out, [0x61, 0x5f, 0xcb, 0xac, 0x01, 0xd1, 0x0e, 0x08]);
}

#[test]
fn block1_whole_and_single_block() {
    let mut bodies = Block1Reassembler::new(Block1Config::default());
    let plain = hex(libcoap::POST_QUERY);
    assert_eq!(
        feed(&mut bodies, 0, 1, &plain),
        Ok(Block1Outcome::Whole { block: None })
    );
    let single = block1_post(0, false, 2, b"short", &[]);
    assert_eq!(
        feed(&mut bodies, 0, 1, &single),
        Ok(Block1Outcome::Whole {
            block: BlockOption::new(0, false, 2)
        })
    );
    assert_eq!(bodies.figures().active, 0);
}

#[test]
fn block1_out_of_order_restart_and_repeat() {
    let mut bodies = Block1Reassembler::new(Block1Config::default());
    let block = |num: u32, more: bool| {
        block1_post(
            num,
            more,
            0,
            &[num as u8; 16][..if more { 16 } else { 5 }],
            &[],
        )
    };
    // A later block with no transfer: 4.08.
    let error = feed(&mut bodies, 0, 1, &block(1, true)).unwrap_err();
    assert!(matches!(
        error,
        CoapError::RequestEntityIncomplete {
            offset: 16,
            expected: None,
            ..
        }
    ));
    assert_eq!(
        error.reaction(),
        Reaction::Respond(Code::REQUEST_ENTITY_INCOMPLETE)
    );

    assert_eq!(
        feed(&mut bodies, 0, 1, &block(0, true)),
        continue_block(0, 0)
    );
    assert_eq!(
        feed(&mut bodies, 0, 1, &block(1, true)),
        continue_block(1, 0)
    );
    // The same block again (a retry with a new message id): answered again,
    // not appended.
    assert_eq!(
        feed(&mut bodies, 0, 1, &block(1, true)),
        continue_block(1, 0)
    );
    assert_eq!(bodies.figures().buffered_bytes, 32);
    // Block 0 again: the transfer restarts.
    assert_eq!(
        feed(&mut bodies, 0, 1, &block(0, true)),
        continue_block(0, 0)
    );
    assert_eq!(bodies.figures().restarted, 1);
    assert_eq!(bodies.figures().buffered_bytes, 16);
    // A gap: 4.08, and the transfer is dropped.
    let error = feed(&mut bodies, 0, 1, &block(2, true)).unwrap_err();
    assert!(matches!(
        error,
        CoapError::RequestEntityIncomplete {
            offset: 32,
            expected: Some(16),
            ..
        }
    ));
    assert_eq!(bodies.figures().active, 0);
    assert!(feed(&mut bodies, 0, 1, &block(1, true)).is_err());
    assert_eq!(bodies.figures().incomplete, 3);
    // Another peer's transfer with the same path is another transfer.
    assert_eq!(
        feed(&mut bodies, 0, 1, &block(0, true)),
        continue_block(0, 0)
    );
    assert!(feed(&mut bodies, 0, 2, &block(1, true)).is_err());
    assert_eq!(
        feed(&mut bodies, 0, 1, &block(1, true)),
        continue_block(1, 0)
    );
    let Ok(Block1Outcome::Complete { body, .. }) = feed(&mut bodies, 0, 1, &block(2, false)) else {
        panic!("not complete")
    };
    assert_eq!(body.len(), 37);
}

#[test]
fn block1_size_limits() {
    let config = Block1Config {
        max_body_bytes: 40,
        ..Block1Config::default()
    };
    let mut bodies = Block1Reassembler::new(config);
    // Size1 announcing more than the limit: 4.13 with Size1 = the limit.
    let announced = block1_post(0, true, 0, &[0; 16], &[(OptionNumber::SIZE1, &[41])]);
    let error = feed(&mut bodies, 0, 1, &announced).unwrap_err();
    assert_eq!(
        error.reaction(),
        Reaction::Respond(Code::REQUEST_ENTITY_TOO_LARGE)
    );
    let answer = answer_of(&error).unwrap();
    let answer = decoded(&answer);
    assert_eq!(answer.code, Code::REQUEST_ENTITY_TOO_LARGE);
    assert_eq!(answer.size1(), Some(40));
    // A body growing past the limit.
    for num in 0..2 {
        assert_eq!(
            feed(&mut bodies, 0, 1, &block1_post(num, true, 0, &[0; 16], &[])),
            continue_block(num, 0)
        );
    }
    let error = feed(&mut bodies, 0, 1, &block1_post(2, true, 0, &[0; 16], &[])).unwrap_err();
    assert!(matches!(
        error,
        CoapError::RequestEntityTooLarge { limit: 40, .. }
    ));
    assert_eq!(bodies.figures().active, 0);
    assert_eq!(bodies.figures().too_large, 2);
    // Payload sizes must match the block size while more follow.
    let short = block1_post(0, true, 0, &[0; 15], &[]);
    let error = feed(&mut bodies, 0, 1, &short).unwrap_err();
    assert!(matches!(
        error,
        CoapError::BlockSizeMismatch {
            size: 16,
            len: 15,
            ..
        }
    ));
    assert_eq!(error.reaction(), Reaction::Respond(Code::BAD_REQUEST));
    let long_last = block1_post(0, false, 0, &[0; 17], &[]);
    assert!(matches!(
        feed(&mut bodies, 0, 1, &long_last),
        Err(CoapError::BlockSizeMismatch { .. })
    ));
}

#[test]
fn block1_smaller_server_blocks() {
    // The client sends 128-byte blocks, Shoal asks for 32 (RFC 7959 §2.3):
    // the first block is kept whole, the next starts at byte 128 = block 4.
    let config = Block1Config {
        max_szx: 1,
        ..Block1Config::default()
    };
    let mut bodies = Block1Reassembler::new(config);
    assert_eq!(
        feed(&mut bodies, 0, 1, &block1_post(0, true, 3, &[1; 128], &[])),
        continue_block(0, 1)
    );
    assert_eq!(
        feed(&mut bodies, 0, 1, &block1_post(4, true, 1, &[2; 32], &[])),
        continue_block(4, 1)
    );
    let Ok(Block1Outcome::Complete { body, block }) =
        feed(&mut bodies, 0, 1, &block1_post(5, false, 1, &[3; 3], &[]))
    else {
        panic!("not complete")
    };
    assert_eq!(body.len(), 163);
    assert_eq!((block.num(), block.more(), block.szx()), (5, false, 1));
}

#[test]
fn block1_table_bounds_and_expiry() {
    let config = Block1Config {
        max_transfers: 3,
        max_transfers_per_peer: 2,
        transfer_timeout_ms: 1_000,
        ..Block1Config::default()
    };
    let mut bodies = Block1Reassembler::new(config);
    let start = |path: &str| {
        let mut builder =
            MessageBuilder::new(MessageType::Confirmable, Code::POST, 1, Token::EMPTY);
        builder.uri_path(path).unwrap();
        builder
            .block(OptionNumber::BLOCK1, BlockOption::new(0, true, 0).unwrap())
            .unwrap();
        builder.payload(&[0; 16]);
        let mut wire = Vec::new();
        builder.encode(&mut wire);
        wire
    };
    assert!(feed(&mut bodies, 0, 1, &start("a")).is_ok());
    assert!(feed(&mut bodies, 0, 1, &start("b")).is_ok());
    // The peer's share is full: 5.03.
    let error = feed(&mut bodies, 0, 1, &start("c")).unwrap_err();
    assert_eq!(
        error.reaction(),
        Reaction::Respond(Code::SERVICE_UNAVAILABLE)
    );
    assert!(feed(&mut bodies, 0, 2, &start("a")).is_ok());
    // The table is full.
    assert!(matches!(
        feed(&mut bodies, 0, 3, &start("a")),
        Err(CoapError::TransfersFull { limit: 3, .. })
    ));
    assert_eq!(bodies.figures().refused_busy, 2);
    assert_eq!(bodies.figures().buffered_bytes, 48);
    // Idle transfers expire, making room.
    assert_eq!(bodies.expire(1_000), 0);
    assert!(feed(&mut bodies, 1_001, 3, &start("a")).is_ok());
    assert_eq!(bodies.figures().expired, 3);
    assert_eq!(bodies.figures().active, 1);
    assert_eq!(bodies.figures().buffered_bytes, 16);
    // A transfer that timed out answers its next block with 4.08.
    let next = block1_post(1, true, 0, &[0; 16], &[]);
    let mut bodies = Block1Reassembler::new(config);
    assert!(feed(&mut bodies, 0, 1, &block1_post(0, true, 0, &[0; 16], &[])).is_ok());
    assert!(matches!(
        feed(&mut bodies, 1_001, 1, &next),
        Err(CoapError::RequestEntityIncomplete { .. })
    ));
    assert_eq!(bodies.remove_peer(&1), 0);
    assert!(feed(&mut bodies, 0, 1, &block1_post(0, true, 0, &[0; 16], &[])).is_ok());
    assert_eq!(bodies.remove_peer(&1), 1);
    assert_eq!(bodies.figures().buffered_bytes, 0);
}
