//! Mining Protocol messages (spec chapter 05, ids and channel_msg bits from chapter 08).

use crate::wire::message::sv2_messages;
use crate::wire::types::{B0_32, B0_64K, B0_255, Seq0_64K, Seq0_255, Str0_255, U256};

/// SetupConnection flag: the client needs standard jobs (05 §5.3.1).
pub const REQUIRES_STANDARD_JOBS: u32 = 1 << 0;
/// SetupConnection flag: the client will send SetCustomMiningJob.
pub const REQUIRES_WORK_SELECTION: u32 = 1 << 1;
/// SetupConnection flag: the client needs version rolling.
pub const REQUIRES_VERSION_ROLLING: u32 = 1 << 2;
/// SetupConnection.Success flag: the server accepts no change to the version field.
pub const REQUIRES_FIXED_VERSION: u32 = 1 << 0;
/// SetupConnection.Success flag: the server accepts no standard channel.
pub const REQUIRES_EXTENDED_CHANNELS: u32 = 1 << 1;

sv2_messages! {
    /// Client -> Server: open a standard channel (05 §5.3.2).
    OpenStandardMiningChannel<'a> = (0x0000, 0x10, false) {
        /// Connection-wide unique id to pair the response.
        request_id: u32,
        /// Who is mining, e.g. "pool-user.worker1".
        user_identity: Str0_255<'a>,
        /// Expected hashrate in h/s.
        nominal_hash_rate: f32,
        /// Largest target the device accepts.
        max_target: U256,
    }

    /// Server -> Client: the standard channel is open (05 §5.3.3).
    OpenStandardMiningChannelSuccess<'a> = (0x0000, 0x11, false) {
        /// From the request.
        request_id: u32,
        /// The new channel.
        channel_id: u32,
        /// Initial share target.
        target: U256,
        /// Extranonce prefix for extended jobs sent to the group.
        extranonce_prefix: B0_32<'a>,
        /// Group the channel belongs to.
        group_channel_id: u32,
    }

    /// Server -> Client: a channel could not be opened (05 §5.3.6).
    OpenMiningChannelError<'a> = (0x0000, 0x12, false) {
        /// From the request.
        request_id: u32,
        /// Why, e.g. "max-target-out-of-range".
        error_code: Str0_255<'a>,
    }

    /// Client -> Server: open an extended channel (05 §5.3.4).
    OpenExtendedMiningChannel<'a> = (0x0000, 0x13, false) {
        /// Connection-wide unique id to pair the response.
        request_id: u32,
        /// Who is mining.
        user_identity: Str0_255<'a>,
        /// Expected hashrate in h/s.
        nominal_hash_rate: f32,
        /// Largest target the device accepts.
        max_target: U256,
        /// Extranonce bytes the client needs at least.
        min_extranonce_size: u16,
    }

    /// Server -> Client: the extended channel is open (05 §5.3.5).
    OpenExtendedMiningChannelSuccess<'a> = (0x0000, 0x14, false) {
        /// From the request.
        request_id: u32,
        /// The new channel.
        channel_id: u32,
        /// Initial share target.
        target: U256,
        /// Extranonce bytes the client rolls.
        extranonce_size: u16,
        /// Extranonce bytes fixed by the server, before the client's.
        extranonce_prefix: B0_32<'a>,
        /// Group the channel belongs to.
        group_channel_id: u32,
    }

    /// Server -> Client: a job for a standard channel (05 §5.3.15).
    NewMiningJob = (0x0000, 0x15, true) {
        /// A standard channel.
        channel_id: u32,
        /// Job id, unique among the channel's valid jobs.
        job_id: u32,
        /// None for a future job; otherwise the job is active now.
        min_ntime: Option<u32>,
        /// Header version.
        version: u32,
        /// Merkle root computed by the server.
        merkle_root: U256,
    }

    /// Client -> Server: the channel's hashrate or maximum target changed (05 §5.3.7).
    UpdateChannel = (0x0000, 0x16, true) {
        /// The channel.
        channel_id: u32,
        /// Expected hashrate in h/s.
        nominal_hash_rate: f32,
        /// Largest target the device accepts.
        maximum_target: U256,
    }

    /// Server -> Client: an UpdateChannel was invalid (05 §5.3.8).
    UpdateChannelError<'a> = (0x0000, 0x17, true) {
        /// The channel.
        channel_id: u32,
        /// Why, e.g. "invalid-channel-id".
        error_code: Str0_255<'a>,
    }

    /// Either way: the channel ends (05 §5.3.9).
    CloseChannel<'a> = (0x0000, 0x18, true) {
        /// The channel (or group channel).
        channel_id: u32,
        /// Why the channel is closed.
        reason_code: Str0_255<'a>,
    }

    /// Server -> Client: a new extranonce prefix for the channel's next jobs (05 §5.3.10).
    SetExtranoncePrefix<'a> = (0x0000, 0x19, true) {
        /// The channel.
        channel_id: u32,
        /// The new prefix.
        extranonce_prefix: B0_32<'a>,
    }

    /// Client -> Server: a share on a standard channel (05 §5.3.11).
    SubmitSharesStandard = (0x0000, 0x1a, true) {
        /// The channel.
        channel_id: u32,
        /// Sequential id of the submission within the channel.
        sequence_number: u32,
        /// The job.
        job_id: u32,
        /// Header nonce.
        nonce: u32,
        /// Header nTime.
        ntime: u32,
        /// Full header nVersion.
        version: u32,
    }

    /// Client -> Server: a share on an extended channel (05 §5.3.12).
    SubmitSharesExtended<'a> = (0x0000, 0x1b, true) {
        /// The channel.
        channel_id: u32,
        /// Sequential id of the submission within the channel.
        sequence_number: u32,
        /// The job.
        job_id: u32,
        /// Header nonce.
        nonce: u32,
        /// Header nTime.
        ntime: u32,
        /// Full header nVersion.
        version: u32,
        /// The client's extranonce, of the negotiated size.
        extranonce: B0_32<'a>,
    }

    /// Server -> Client: a batch of accepted shares (05 §5.3.13).
    SubmitSharesSuccess = (0x0000, 0x1c, true) {
        /// The channel.
        channel_id: u32,
        /// Most recent sequence number accepted.
        last_sequence_number: u32,
        /// Submissions accepted in this batch.
        new_submits_accepted_count: u32,
        /// Sum of the difficulty of the shares in this batch.
        new_shares_sum: u64,
    }

    /// Server -> Client: one rejected share (05 §5.3.14).
    SubmitSharesError<'a> = (0x0000, 0x1d, true) {
        /// The channel.
        channel_id: u32,
        /// The rejected submission.
        sequence_number: u32,
        /// Why, e.g. "difficulty-too-low".
        error_code: Str0_255<'a>,
    }

    /// Server -> Client: a job for an extended or group channel (05 §5.3.16).
    NewExtendedMiningJob<'a> = (0x0000, 0x1f, true) {
        /// Extended channel, or group channel for a broadcast.
        channel_id: u32,
        /// Job id, unique among the channel's valid jobs.
        job_id: u32,
        /// None for a future job; otherwise the job is active now.
        min_ntime: Option<u32>,
        /// Header version.
        version: u32,
        /// Whether the BIP320 bits may be rolled.
        version_rolling_allowed: bool,
        /// Merkle path, deepest first.
        merkle_path: Seq0_255<'a, U256>,
        /// Coinbase bytes before the extranonce (BIP141 data stripped).
        coinbase_tx_prefix: B0_64K<'a>,
        /// Coinbase bytes after the extranonce (BIP141 data stripped).
        coinbase_tx_suffix: B0_64K<'a>,
    }

    /// Server -> Client: a new block to build on, activating a future job (05 §5.3.17).
    SetNewPrevHash = (0x0000, 0x20, true) {
        /// Channel or group channel.
        channel_id: u32,
        /// The future job to mine now.
        job_id: u32,
        /// Previous block hash, header field.
        prev_hash: U256,
        /// Smallest nTime allowed.
        min_ntime: u32,
        /// Header nBits.
        nbits: u32,
    }

    /// Server -> Client: a new maximum share target (05 §5.3.21).
    SetTarget = (0x0000, 0x21, true) {
        /// Channel or group channel.
        channel_id: u32,
        /// Largest hash a share may have.
        maximum_target: U256,
    }

    /// Client -> Server: a job the client declared (05 §5.3.18).
    SetCustomMiningJob<'a> = (0x0000, 0x22, true) {
        /// Extended channel.
        channel_id: u32,
        /// Pairs the response.
        request_id: u32,
        /// Token from the Job Declarator Server.
        mining_job_token: B0_255<'a>,
        /// Header version.
        version: u32,
        /// Previous block hash.
        prev_hash: U256,
        /// Smallest nTime allowed.
        min_ntime: u32,
        /// Header nBits.
        nbits: u32,
        /// Coinbase version.
        coinbase_tx_version: u32,
        /// Up to 8 bytes that start the coinbase script.
        coinbase_prefix: B0_255<'a>,
        /// Coinbase input nSequence.
        coinbase_tx_input_n_sequence: u32,
        /// CompactSize-prefixed coinbase outputs.
        coinbase_tx_outputs: B0_64K<'a>,
        /// Coinbase locktime.
        coinbase_tx_locktime: u32,
        /// Merkle path, deepest first.
        merkle_path: Seq0_255<'a, U256>,
    }

    /// Server -> Client: the custom job is accepted (05 §5.3.19).
    SetCustomMiningJobSuccess = (0x0000, 0x23, true) {
        /// Extended channel.
        channel_id: u32,
        /// From the request.
        request_id: u32,
        /// The server's id for the job.
        job_id: u32,
    }

    /// Server -> Client: the custom job is refused (05 §5.3.20).
    SetCustomMiningJobError<'a> = (0x0000, 0x24, true) {
        /// Extended channel.
        channel_id: u32,
        /// From the request.
        request_id: u32,
        /// Why, e.g. "invalid-mining-job-token".
        error_code: Str0_255<'a>,
    }

    /// Server -> Client: the channels that belong to a group channel (05 §5.3.22).
    SetGroupChannel<'a> = (0x0000, 0x25, false) {
        /// The group channel.
        group_channel_id: u32,
        /// Channels in the group.
        channel_ids: Seq0_64K<'a, u32>,
    }
}
