//! The product API (the seed's API.md) as a thin facade over the same core the server runs:
//! the mining [`Session`](crate::mining::Session), the pool object [`StratumV2Pool`], the
//! pool's [`Work`] and the node's [`NodeApi`]. Nothing here decides anything the core does not
//! decide for a miner on a socket: a share handed to [`StratumV2Pool::handle_share`] is
//! encoded as the SubmitSharesStandard frame a miner would send and validated by a real
//! session.
//!
//! Where the seed's sketch cannot be kept as written, the facade says so on the item; in short:
//! - types follow rust-bitcoin where the seed says `Hash`, `Block`, `BlockHeader`: a target is
//!   a [`Target`], a block hash a [`BlockHash`], a header a [`Header`], a merkle root a
//!   [`TxMerkleNode`], nBits a [`CompactTarget`], a version a [`Version`];
//! - job ids are the pool-wide work ids (`u64`), which never repeat;
//! - [`ShareData`] carries `ntime` (a header cannot be hashed without it) and [`JobInfo`] the
//!   channel's `merkle_root` and `version` (what NewMiningJob gives a standard channel);
//! - the server is built from our configuration, `StratumV2Server::new(PoolConfig, node)`,
//!   or from the module environment the node gives us ([`StratumV2Server::from_module_env`],
//!   the seed's `new(&ModuleContext, node_api)`); it is not `async` (nothing in it waits);
//!   `start` returns the bound address; `handle_event` takes a [`NodeEvent`];
//! - the pool lock is a `std::sync::RwLock` (no `.await` on it); `set_template` returns a
//!   `Result` (a block without a BIP34 height cannot be a template);
//! - TLV is the specification's (03 §3.4.3), not the seed's `[length][tag][length][payload]`
//!   sketch: see [`TlvEncoder`];
//! - messages are our zero-copy wire types, not serde structs: see [`StratumV2Message`].
//!
//! # Examples
//!
//! The seed's three examples, on the embedded regtest chain.
//!
//! Server initialization (the seed's `ModuleContext` is our [`PoolConfig`] here; a node
//! starting us as a module uses [`StratumV2Server::from_module_env`]):
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//!
//! use blvm_stratum_v2::api::StratumV2Server;
//! use blvm_stratum_v2::config::{PoolConfig, PoolOptions};
//! use blvm_stratum_v2::node::regtest::{ChainConfig, EmbeddedNode};
//!
//! # let dir = tempfile::tempdir()?;
//! let options = PoolOptions {
//!     listen_addr: Some("127.0.0.1:0".into()),
//!     data_dir: Some(dir.path().to_path_buf()),
//!     ..PoolOptions::default()
//! };
//! let config = PoolConfig::resolve(&options, "example")?;
//! let node_api = Arc::new(EmbeddedNode::new(ChainConfig::default()));
//! let server = StratumV2Server::new(config, node_api)?;
//! let address = server.start().await?;
//! println!("listening on {address}");
//! # server.stop().await?;
//! # Ok(())
//! # }
//! ```
//!
//! Processing shares (the seed's `merkle_root: [0u8; 32]` becomes the channel's root for the
//! job, and the share names its `ntime`):
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # use std::sync::Arc;
//! # use blvm_stratum_v2::config::{PoolConfig, PoolOptions};
//! # use blvm_stratum_v2::node::regtest::{ChainConfig, EmbeddedNode};
//! use blvm_stratum_v2::api::{ShareData, StratumV2Server};
//! # let dir = tempfile::tempdir()?;
//! # let options = PoolOptions {
//! #     listen_addr: Some("127.0.0.1:0".into()),
//! #     data_dir: Some(dir.path().to_path_buf()),
//! #     ..PoolOptions::default()
//! # };
//! # let config = PoolConfig::resolve(&options, "example")?;
//! # let server = StratumV2Server::new(config, Arc::new(EmbeddedNode::new(ChainConfig::default())))?;
//! # server.start().await?;
//!
//! let pool = server.get_pool();
//! let mut pool = pool.write().unwrap();
//! pool.register_miner("miner-1".into());
//! pool.open_channel("miner-1", 1, 1)?;
//! let miner = pool.miner_connection("miner-1").unwrap();
//! let channel = &miner.channels[&1];
//! let job = &channel.jobs[&channel.current_job_id.unwrap()];
//!
//! let share = ShareData {
//!     channel_id: 1,
//!     job_id: job.job_id,
//!     nonce: 12345,
//!     version: job.version,
//!     ntime: job.timestamp as u32,
//!     merkle_root: job.merkle_root,
//! };
//! let (is_valid, is_block) = pool.handle_share("miner-1", share)?;
//!
//! if is_block {
//!     // Valid block found: recorded and queued for submission.
//! }
//! # drop(pool);
//! # server.stop().await?;
//! # Ok(())
//! # }
//! ```
//!
//! Getting statistics:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # use std::sync::Arc;
//! # use blvm_stratum_v2::api::StratumV2Server;
//! # use blvm_stratum_v2::config::{PoolConfig, PoolOptions};
//! # use blvm_stratum_v2::node::regtest::{ChainConfig, EmbeddedNode};
//! # let dir = tempfile::tempdir()?;
//! # let options = PoolOptions {
//! #     listen_addr: Some("127.0.0.1:0".into()),
//! #     data_dir: Some(dir.path().to_path_buf()),
//! #     ..PoolOptions::default()
//! # };
//! # let config = PoolConfig::resolve(&options, "example")?;
//! # let server = StratumV2Server::new(config, Arc::new(EmbeddedNode::new(ChainConfig::default())))?;
//! let stats = server.get_pool_stats().await;
//! println!(
//!     "Miners: {}, Shares: {}/{}",
//!     stats.miner_count, stats.accepted_shares, stats.total_shares
//! );
//! # Ok(())
//! # }
//! ```

use std::collections::HashMap;
use std::sync::Arc;

use bitcoin::block::{Header, Version};
use bitcoin::hashes::Hash;
use bitcoin::{Amount, Block, BlockHash, CompactTarget, Target, TxMerkleNode};

pub use crate::config::PoolConfig;
pub use crate::mining::pool::EndpointError;
pub use crate::mining::{MinerStats, PoolStats, StratumV2Pool, Work};
pub use crate::node::NodeApi;
pub use crate::server::{NodeEvent, StratumV2Error, StratumV2Server};
pub use crate::wire::WireError;

use crate::block::BlockTemplate;
use crate::block::coinbase::{CoinbaseConfig, bip34_height};
use crate::block::target::target_of_difficulty;
use crate::config::PoolOptions;
use crate::mining::MiningConfig;
use crate::node::module::ModuleEnv;
use crate::server::now_ms;
use crate::wire::{Sv2Message, Tlv};

// ----- the seed's data structures -----

/// A submitted share (seed name). `ntime` is ours: a header cannot be hashed without it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShareData {
    /// The channel, as opened with [`StratumV2Pool::open_channel`].
    pub channel_id: u32,
    /// The job: a pool-wide work id ([`JobInfo::job_id`]).
    pub job_id: u64,
    /// Header nonce.
    pub nonce: u32,
    /// Header version (BIP320 bits may be rolled).
    pub version: Version,
    /// Header time.
    pub ntime: u32,
    /// The channel's merkle root for the job ([`JobInfo::merkle_root`]).
    pub merkle_root: TxMerkleNode,
}

/// A job as one channel sees it (seed name; `merkle_root` and `version` are what a standard
/// channel's NewMiningJob gives it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobInfo {
    /// Pool-wide work id.
    pub job_id: u64,
    /// The block it builds on.
    pub prev_hash: BlockHash,
    /// Network target.
    pub bits: CompactTarget,
    /// The job's time (seconds since the Unix epoch).
    pub timestamp: u64,
    /// Header version.
    pub version: Version,
    /// The channel's merkle root for this job.
    pub merkle_root: TxMerkleNode,
}

/// A mining channel (seed name).
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelInfo {
    /// The id the caller opened it with.
    pub channel_id: u32,
    /// Its share target.
    pub target: Target,
    /// The newest job.
    pub current_job_id: Option<u64>,
    /// The difficulty it was opened with.
    pub min_difficulty: u32,
    /// Jobs remembered.
    pub max_jobs: u32,
    /// Its jobs by id.
    pub jobs: HashMap<u64, JobInfo>,
}

/// A miner driven through the pool facade (seed name), a snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct MinerConnection {
    /// Its endpoint.
    pub endpoint: String,
    /// Its channels by id.
    pub channels: HashMap<u32, ChannelInfo>,
    /// Its counters.
    pub stats: MinerStats,
}

// ----- the server -----

impl StratumV2Server {
    /// The seed's `new(&ModuleContext, node_api)`: the server configured as blvm-node starts
    /// the pool as a module (DATA_DIR/config.toml, then the `MODULE_CONFIG_*` values).
    pub fn from_module_env(
        env: &ModuleEnv,
        node_api: Arc<dyn NodeApi>,
    ) -> Result<Self, StratumV2Error> {
        let (options, _unknown_keys) = PoolOptions::from_module_env(env)
            .map_err(|e| StratumV2Error::ModuleError(Box::new(e)))?;
        let config = PoolConfig::resolve(&options, "module environment")
            .map_err(|e| StratumV2Error::ModuleError(Box::new(e)))?;
        Self::new(config, node_api)
    }
}

// ----- the pool -----

impl StratumV2Pool {
    /// Registers a miner at `endpoint` (seed name): a session of its own, registered in the
    /// statistics. At most [`EndpointMiners::capacity`](crate::mining::pool::EndpointMiners)
    /// are kept; the least recently used is forgotten to make room.
    pub fn register_miner(&mut self, endpoint: String) {
        self.connect_endpoint(&endpoint, now_ms());
    }

    /// Opens channel `channel_id` of the miner at `endpoint` with shares of at least
    /// `min_difficulty` (seed name); returns the channel target, which is
    /// [`calculate_channel_target`](Self::calculate_channel_target)`(min_difficulty)`.
    pub fn open_channel(
        &mut self,
        endpoint: &str,
        channel_id: u32,
        min_difficulty: u32,
    ) -> Result<Target, StratumV2Error> {
        Ok(self.open_endpoint_channel(endpoint, channel_id, min_difficulty, now_ms())?)
    }

    /// Offers a block template to the pool (seed name): it becomes the work if the pool's one
    /// rule takes it (a new tip, or more fees on the same tip); returns the current job id and
    /// every `(endpoint, channel_id)` that gets it (each miner's session is brought to it
    /// before its next call). The template's coinbase gives the height (BIP34) and the value;
    /// the pool writes its own coinbase.
    pub fn set_template(
        &mut self,
        template: Block,
    ) -> Result<(u64, Vec<(String, u32)>), StratumV2Error> {
        let template = template_of_block(&template)?;
        let coinbase = self.endpoint_miners().config().coinbase.clone();
        self.offer_template(template, &coinbase)
            .map_err(|e| StratumV2Error::ConfigError(e.to_string()))?;
        let job_id = self.current_work().map_or(0, |w| w.id);
        let receivers = self
            .endpoint_miners()
            .iter()
            .flat_map(|(endpoint, m)| m.channels.iter().map(|c| (endpoint.clone(), c.channel_id)))
            .collect();
        Ok((job_id, receivers))
    }

    /// A share of the miner at `endpoint` (seed name): validated by its session exactly like
    /// a SubmitSharesStandard from the wire (channel, job, stale tip, nTime, version, target,
    /// duplicates); returns `(is_valid_share, is_valid_block)`. A share meeting the network
    /// target is a block (even below a channel target harder than the network's), recorded
    /// and queued in [`found_blocks_mut`](Self::found_blocks_mut).
    pub fn handle_share(
        &mut self,
        endpoint: &str,
        share: ShareData,
    ) -> Result<(bool, bool), StratumV2Error> {
        Ok(self.endpoint_share(
            endpoint,
            share.channel_id,
            share.job_id,
            (
                share.version.to_consensus() as u32,
                share.ntime,
                share.nonce,
            ),
            share.merkle_root.as_byte_array(),
            now_ms(),
        )?)
    }

    /// Forgets jobs beyond `max_jobs` of every miner (seed name; sessions also do it as
    /// jobs arrive).
    pub fn cleanup_old_jobs(&mut self) {
        self.cleanup_endpoint_jobs();
    }

    /// Forgets miners with no activity for `timeout_seconds` (seed name), and the statistics
    /// of miners disconnected that long.
    pub fn cleanup_disconnected_miners(&mut self, timeout_seconds: u64) {
        self.forget_idle_endpoints(timeout_seconds.saturating_mul(1000), now_ms());
    }

    /// Whether the header the share and the job make meets `target` (seed name): the
    /// proof-of-work check alone, without the session's rules (stale, duplicate, nTime).
    pub fn validate_share(&self, share: &ShareData, job_info: &JobInfo, target: &Target) -> bool {
        let header = Header {
            version: share.version,
            prev_blockhash: job_info.prev_hash,
            merkle_root: share.merkle_root,
            time: share.ntime,
            bits: job_info.bits,
            nonce: share.nonce,
        };
        target.is_met_by(self.calculate_block_hash(&header))
    }

    /// The share target of `min_difficulty` (seed name; difficulty 1 is the target of nBits
    /// 0x1d00ffff).
    pub fn calculate_channel_target(&self, min_difficulty: u32) -> Result<Target, StratumV2Error> {
        if min_difficulty == 0 {
            return Err(StratumV2Error::PoolError(EndpointError::ZeroDifficulty));
        }
        Ok(Target::from_le_bytes(target_of_difficulty(f64::from(
            min_difficulty,
        ))))
    }

    /// The header's hash, double SHA-256 of its consensus encoding (seed name).
    pub fn calculate_block_hash(&self, header: &Header) -> BlockHash {
        header.block_hash()
    }

    /// Whether `hash1 <= hash2` as 256-bit numbers, the way proof of work reads a hash (seed
    /// name; the hex of `to_string` is that number big-endian).
    pub fn hash_less_than_or_equal(&self, hash1: &BlockHash, hash2: &BlockHash) -> bool {
        Target::from_le_bytes(hash1.to_byte_array()) <= Target::from_le_bytes(hash2.to_byte_array())
    }

    /// The miner at `endpoint` as the seed's [`MinerConnection`].
    pub fn miner_connection(&self, endpoint: &str) -> Option<MinerConnection> {
        let m = self.endpoint_miners().get(endpoint)?;
        let max_jobs = self.endpoint_miners().config().max_jobs;
        let session_channels = m.session.channels();
        let channels = m
            .channels
            .iter()
            .filter_map(|c| {
                let s = session_channels
                    .iter()
                    .find(|s| s.channel_id == c.session_channel_id)?;
                let jobs = m
                    .jobs
                    .iter()
                    .map(|j| {
                        let root = j.work.merkle_root(&s.extranonce_prefix, &[]);
                        let info = JobInfo {
                            job_id: j.work_id,
                            prev_hash: j.work.prev_hash,
                            bits: CompactTarget::from_consensus(j.work.nbits),
                            timestamp: u64::from(j.work.cur_time),
                            version: Version::from_consensus(j.work.version as i32),
                            merkle_root: root,
                        };
                        (j.work_id, info)
                    })
                    .collect();
                let info = ChannelInfo {
                    channel_id: c.channel_id,
                    target: s.target,
                    current_job_id: m.jobs.back().map(|j| j.work_id),
                    min_difficulty: c.min_difficulty,
                    max_jobs: u32::try_from(max_jobs).unwrap_or(u32::MAX),
                    jobs,
                };
                Some((c.channel_id, info))
            })
            .collect();
        let stats = self
            .miner(m.id)
            .map(|r| r.stats.clone())
            .unwrap_or_default();
        Some(MinerConnection {
            endpoint: endpoint.to_owned(),
            channels,
            stats,
        })
    }
}

/// A block as a template: its header, its transactions after the coinbase, the coinbase's
/// BIP34 height and value.
fn template_of_block(block: &Block) -> Result<BlockTemplate, StratumV2Error> {
    let coinbase = block
        .txdata
        .first()
        .filter(|tx| tx.is_coinbase())
        .ok_or(StratumV2Error::InvalidTemplate("no coinbase transaction"))?;
    let height = bip34_height(block).ok_or(StratumV2Error::InvalidTemplate(
        "no BIP34 height in the coinbase",
    ))?;
    let coinbase_value = coinbase
        .output
        .iter()
        .try_fold(Amount::ZERO, |sum, o| sum.checked_add(o.value))
        .ok_or(StratumV2Error::InvalidTemplate("coinbase value overflows"))?;
    Ok(BlockTemplate {
        version: block.header.version,
        prev_hash: block.header.prev_blockhash,
        bits: block.header.bits,
        height,
        min_time: block.header.time,
        cur_time: block.header.time,
        coinbase_value,
        transactions: block.txdata[1..].to_vec(),
        // A block says nothing of its transactions' fees.
        transaction_costs: Vec::new(),
    })
}

// ----- the template generator -----

/// Block templates from the node, as whole blocks (seed name).
pub struct BlockTemplateGenerator {
    node_api: Arc<dyn NodeApi>,
    coinbase: CoinbaseConfig,
}

impl BlockTemplateGenerator {
    /// A generator asking `node_api` (seed name); the coinbase is the pool's default one.
    pub fn new(node_api: Arc<dyn NodeApi>) -> Self {
        BlockTemplateGenerator {
            node_api,
            coinbase: MiningConfig::default().coinbase,
        }
    }

    /// The node's template for the next block as a block (seed name): a coinbase paying the
    /// template's value with its BIP34 height and a zero extranonce, the template's
    /// transactions, nonce 0.
    pub async fn generate_template(&self) -> Result<Block, StratumV2Error> {
        let template = self.node_api.get_block_template().await?;
        let work = Work::new(0, template, &self.coinbase)
            .map_err(|e| StratumV2Error::ConfigError(e.to_string()))?;
        let extranonce = vec![0u8; self.coinbase.extranonce_len];
        Ok(work.assemble_block(&extranonce, &[], work.version, work.cur_time, 0))
    }
}

// ----- TLV -----

/// One TLV field with its value owned (what [`TlvDecoder`] yields).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlvField {
    /// The extension that defines the field.
    pub extension_type: u16,
    /// The field within the extension.
    pub field_type: u8,
    /// Its value.
    pub value: Vec<u8>,
}

/// Encodes TLV fields (seed name) as the specification defines them (03 §3.4.3): Type
/// (extension_type U16, field_type U8), Length (U16), Value, little-endian, in
/// non-decreasing extension_type order, placed after a message's own fields. The seed's sketch
/// (`[4-byte length][2-byte tag][4-byte length][payload]`, a whole message per TLV) differs;
/// the specification wins, as miners in the field speak it. Built on
/// [`wire::TlvEncoder`](crate::wire::TlvEncoder), which frames use.
#[derive(Debug, Clone, Default)]
pub struct TlvEncoder {
    previous: Option<u16>,
}

impl TlvEncoder {
    /// An encoder with no field yet (seed name).
    pub fn new() -> Self {
        Self::default()
    }

    /// The bytes of one field (seed name; the seed's `tag` is the spec's two-part Type). Fails
    /// on a value longer than a U16 length or an extension_type below the previous field's.
    pub fn encode(
        &mut self,
        extension_type: u16,
        field_type: u8,
        payload: &[u8],
    ) -> Result<Vec<u8>, WireError> {
        if let Some(previous) = self.previous
            && extension_type < previous
        {
            return Err(WireError::TlvOutOfOrder {
                previous,
                found: extension_type,
            });
        }
        let mut fields = crate::wire::TlvEncoder::new();
        fields.push(extension_type, field_type, payload)?;
        let mut out = Vec::with_capacity(fields.encoded_len());
        fields.write(&mut out);
        self.previous = Some(extension_type);
        Ok(out)
    }
}

/// Decodes TLV fields (seed name), the specification's encoding (see [`TlvEncoder`]).
#[derive(Debug, Clone)]
pub struct TlvDecoder {
    data: Vec<u8>,
    position: usize,
    previous: u16,
}

impl TlvDecoder {
    /// A decoder of the fields in `data` (seed name).
    pub fn new(data: Vec<u8>) -> Self {
        TlvDecoder {
            data,
            position: 0,
            previous: 0,
        }
    }

    /// The next field, or `None` after the last (seed name). Fails on a truncated field or one
    /// out of extension_type order.
    pub fn decode(&mut self) -> Result<Option<TlvField>, WireError> {
        let rest = &self.data[self.position..];
        if rest.is_empty() {
            return Ok(None);
        }
        let (field, after) = Tlv::parse(rest)?;
        if field.extension_type < self.previous {
            return Err(WireError::TlvOutOfOrder {
                previous: self.previous,
                found: field.extension_type,
            });
        }
        self.previous = field.extension_type;
        self.position = self.data.len() - after.len();
        Ok(Some(owned(field)))
    }

    /// The first field of `data` (seed name).
    pub fn decode_raw(data: &[u8]) -> Result<TlvField, WireError> {
        Tlv::parse(data).map(|(field, _)| owned(field))
    }
}

fn owned(field: Tlv<'_>) -> TlvField {
    TlvField {
        extension_type: field.extension_type,
        field_type: field.field_type,
        value: field.value.to_vec(),
    }
}

// ----- messages -----

/// The seed's message trait, on every message of ours.
///
/// No `Serialize`/`Deserialize` bound as in the seed: the wire encoding is the specification's
/// binary one (03 §3.1), which our types encode and decode themselves without copying
/// ([`Sv2Message`]); a serde encoding would be a second, wrong wire format. Decoding borrows
/// from the bytes (strings and byte fields point into them), hence `from_bytes(&'a [u8])`.
pub trait StratumV2Message<'a>: Sized {
    /// The message type (the frame's msg_type).
    fn message_type(&self) -> u16;
    /// The payload in the specification's encoding (no frame header).
    fn to_bytes(&self) -> Result<Vec<u8>, StratumV2Error>;
    /// The message at the start of a payload; bytes after it are TLV fields of negotiated
    /// extensions (03 §3.4.3), read with [`TlvDecoder`].
    fn from_bytes(data: &'a [u8]) -> Result<Self, StratumV2Error>;
}

impl<'a, M: Sv2Message<'a>> StratumV2Message<'a> for M {
    fn message_type(&self) -> u16 {
        u16::from(M::MSG_TYPE)
    }

    fn to_bytes(&self) -> Result<Vec<u8>, StratumV2Error> {
        let mut out = Vec::with_capacity(self.payload_len());
        self.encode_payload(&mut out);
        Ok(out)
    }

    fn from_bytes(data: &'a [u8]) -> Result<Self, StratumV2Error> {
        M::decode_prefix(data)
            .map(|(m, _tlv)| m)
            .map_err(|e| StratumV2Error::ProtocolError(e.to_string()))
    }
}

/// The seed's message names for ours.
pub mod messages {
    pub use crate::wire::common::{
        SetupConnection as SetupConnectionMessage,
        SetupConnectionError as SetupConnectionErrorMessage,
        SetupConnectionSuccess as SetupConnectionSuccessMessage,
    };
    pub use crate::wire::mining::{
        NewMiningJob as NewMiningJobMessage,
        OpenMiningChannelError as OpenMiningChannelErrorMessage,
        OpenStandardMiningChannel as OpenMiningChannelMessage,
        OpenStandardMiningChannelSuccess as OpenMiningChannelSuccessMessage,
        SetNewPrevHash as SetNewPrevHashMessage, SubmitSharesError as SubmitSharesErrorMessage,
        SubmitSharesStandard as SubmitSharesMessage,
        SubmitSharesSuccess as SubmitSharesSuccessMessage,
    };
}
