//! An endpoint miner as the tests drive it (`#[path = "common/endpoint.rs"] mod endpoint;`):
//! the product API's miners behind the node's IPC, `StratumV2Server::handle_message`, sent
//! plaintext frames. Its opening (SetupConnection with standard jobs, then an
//! OpenStandardMiningChannel) and a share found from the reply to it, the header hashed by
//! rust-bitcoin.
#![allow(dead_code)]

use bitcoin::block::{Header, Version};
use bitcoin::hashes::Hash;
use bitcoin::{BlockHash, CompactTarget, Target, TxMerkleNode};
use blvm_stratum_v2::wire::common::SetupConnection;
use blvm_stratum_v2::wire::mining::{
    OpenStandardMiningChannel, REQUIRES_STANDARD_JOBS, SubmitSharesStandard,
};
use blvm_stratum_v2::wire::{Frame, Message, Str0_255, Sv2Message, encode_frame};

/// `m` as one frame.
pub fn frame_of<'a, M: Sv2Message<'a>>(m: &M) -> Vec<u8> {
    let mut out = Vec::new();
    encode_frame(m, &mut out).unwrap();
    out
}

/// SetupConnection (standard jobs) and an OpenStandardMiningChannel for `user_identity`, as
/// one message's bytes.
pub fn setup_and_open(user_identity: &str) -> Vec<u8> {
    let setup = SetupConnection {
        protocol: 0,
        min_version: 2,
        max_version: 2,
        flags: REQUIRES_STANDARD_JOBS,
        endpoint_host: Str0_255::default(),
        endpoint_port: 0,
        vendor: Str0_255::new("ipc-miner").unwrap(),
        hardware_version: Str0_255::default(),
        firmware: Str0_255::default(),
        device_id: Str0_255::default(),
    };
    let open = OpenStandardMiningChannel {
        request_id: 1,
        user_identity: Str0_255::new(user_identity).unwrap(),
        nominal_hash_rate: 0.0,
        max_target: [0xff; 32],
    };
    [frame_of(&setup), frame_of(&open)].concat()
}

/// A share numbered `sequence_number` that meets the channel's target, on the job and prev
/// hash the reply to [`setup_and_open`] carries, and its header's hash.
pub fn share_from_opening(reply: &[u8], sequence_number: u32) -> (SubmitSharesStandard, BlockHash) {
    let (mut channel, mut job, mut prev) = (None, None, None);
    let mut rest = reply;
    while let Some((frame, used)) = Frame::parse(rest, 1 << 24).unwrap() {
        match frame.message().unwrap().0 {
            Message::OpenStandardMiningChannelSuccess(o) => {
                channel = Some((o.channel_id, Target::from_le_bytes(o.target)))
            }
            Message::NewMiningJob(j) => job = Some(j),
            Message::SetNewPrevHash(p) => prev = Some(p),
            _ => {}
        }
        rest = &rest[used..];
    }
    let ((channel_id, target), job, prev) = (
        channel.expect("the channel opened"),
        job.expect("a job"),
        prev.expect("its prev hash"),
    );
    let mut header = Header {
        version: Version::from_consensus(job.version as i32),
        prev_blockhash: BlockHash::from_byte_array(prev.prev_hash),
        merkle_root: TxMerkleNode::from_byte_array(job.merkle_root),
        time: prev.min_ntime,
        bits: CompactTarget::from_consensus(prev.nbits),
        nonce: 0,
    };
    while !target.is_met_by(header.block_hash()) {
        header.nonce += 1;
    }
    let share = SubmitSharesStandard {
        channel_id,
        sequence_number,
        job_id: job.job_id,
        nonce: header.nonce,
        ntime: header.time,
        version: job.version,
    };
    (share, header.block_hash())
}
