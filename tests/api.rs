//! The product API (src/api.rs) on the embedded regtest chain: every facade method of the
//! pool, real shares found by brute force and checked by the chain, refused shares, bounded
//! clean-up, and the server's `handle_message` keeping bounded, registered, up-to-date
//! sessions.

#[path = "common/endpoint.rs"]
mod endpoint;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bitcoin::block::Header;
use bitcoin::hashes::Hash;
use bitcoin::{Block, BlockHash, Target};
use blvm_stratum_v2::api::{
    BlockTemplateGenerator, EndpointError, JobInfo, NodeEvent, ShareData, StratumV2Error,
    StratumV2Message, StratumV2Pool, StratumV2Server, TlvDecoder, TlvEncoder, messages,
};
use blvm_stratum_v2::config::{PoolConfig, PoolOptions};
use blvm_stratum_v2::mining::session::SOLVED_TIP_MS;
use blvm_stratum_v2::mining::{MiningConfig, Work};
use blvm_stratum_v2::node::NodeApi;
use blvm_stratum_v2::node::regtest::{ChainConfig, EmbeddedChain, EmbeddedNode, HISTORY_HEIGHT};
use blvm_stratum_v2::wire::mining::OpenStandardMiningChannel;
use blvm_stratum_v2::wire::{Frame, Message, Str0_255, WireError};
use endpoint::{frame_of, setup_and_open, share_from_opening};

fn now_s() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as u32
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// The chain's next template as a whole block (what a node's template would be).
fn template_block(chain: &mut EmbeddedChain) -> Block {
    let cfg = MiningConfig::default().coinbase;
    let work = Work::new(0, chain.template(now_s()), &cfg).unwrap();
    work.assemble_block(&[0; 32], &[], work.version, work.cur_time, 0)
}

/// A pool on the chain's next template with miner `m1` and its channel 7 at difficulty 1.
fn pool_with_channel(chain: &mut EmbeddedChain) -> (StratumV2Pool, Target, JobInfo) {
    let mut pool = StratumV2Pool::new();
    let (job_id, receivers) = pool.set_template(template_block(chain)).unwrap();
    assert!(receivers.is_empty(), "no miner yet");
    pool.register_miner("m1".into());
    let target = pool.open_channel("m1", 7, 1).unwrap();
    assert_eq!(target, pool.calculate_channel_target(1).unwrap());
    let miner = pool.miner_connection("m1").unwrap();
    let channel = &miner.channels[&7];
    assert_eq!(channel.current_job_id, Some(job_id));
    assert_eq!((channel.target, channel.min_difficulty), (target, 1));
    let job = channel.jobs[&job_id].clone();
    (pool, target, job)
}

fn share(job: &JobInfo, nonce: u32) -> ShareData {
    ShareData {
        channel_id: 7,
        job_id: job.job_id,
        nonce,
        version: job.version,
        ntime: job.timestamp as u32,
        merkle_root: job.merkle_root,
    }
}

/// The first nonce from `start` whose header meets (`meets`) or misses the network target.
fn find(pool: &StratumV2Pool, job: &JobInfo, start: u32, meets: bool) -> ShareData {
    let network = Target::from_compact(job.bits);
    (start..)
        .map(|n| share(job, n))
        .find(|s| pool.validate_share(s, job, &network) == meets)
        .unwrap()
}

fn header_of(s: &ShareData, job: &JobInfo) -> Header {
    Header {
        version: s.version,
        prev_blockhash: job.prev_hash,
        merkle_root: s.merkle_root,
        time: s.ntime,
        bits: job.bits,
        nonce: s.nonce,
    }
}

#[test]
fn a_share_found_by_brute_force_is_a_valid_share_and_a_block_the_chain_accepts() {
    let mut chain = EmbeddedChain::new(ChainConfig::default());
    let (mut pool, target, job) = pool_with_channel(&mut chain);
    let s = find(&pool, &job, 0, true);
    assert_eq!(pool.handle_share("m1", s).unwrap(), (true, true));
    // The hash the facade computes is the header's.
    let hash = pool.calculate_block_hash(&header_of(&s, &job));
    assert!(Target::from_compact(job.bits).is_met_by(hash));
    // On regtest the channel's difficulty-1 target is harder than the network's: a block is
    // never refused, but the share alone does not meet the channel target.
    assert_eq!(
        pool.validate_share(&s, &job, &target),
        target.is_met_by(hash)
    );
    assert!(pool.found_recently(hash));
    let stats = pool.miner_connection("m1").unwrap().stats;
    assert_eq!((stats.accepted_shares, stats.blocks_found), (1, 1));
    let pool_stats = pool.get_pool_stats();
    assert_eq!(
        (
            pool_stats.miner_count,
            pool_stats.accepted_shares,
            pool_stats.blocks_found
        ),
        (1, 1, 1)
    );
    // The queued block is whole and valid: the chain takes it.
    let submission = pool.found_blocks_mut().poll_submission(now_ms()).unwrap();
    assert_eq!(submission.hash, hash);
    assert_eq!(chain.submit_block(&submission.block, now_s()), Ok(hash));
}

#[test]
fn a_share_below_the_channel_target_is_refused_and_counted() {
    let mut chain = EmbeddedChain::new(ChainConfig::default());
    let (mut pool, target, job) = pool_with_channel(&mut chain);
    let s = find(&pool, &job, 0, false);
    assert!(!pool.validate_share(&s, &job, &target));
    assert_eq!(pool.handle_share("m1", s).unwrap(), (false, false));
    let stats = pool.miner_connection("m1").unwrap().stats;
    assert_eq!((stats.accepted_shares, stats.rejected_shares), (0, 1));
    assert_eq!(stats.rejected_by_reason.get("difficulty-too-low"), Some(&1));
}

#[test]
fn a_duplicate_is_refused() {
    let mut chain = EmbeddedChain::new(ChainConfig::default());
    let (mut pool, _, job) = pool_with_channel(&mut chain);
    let s = find(&pool, &job, 0, true);
    assert_eq!(pool.handle_share("m1", s).unwrap(), (true, true));
    // At once: the tip the block solved is stale.
    assert_eq!(pool.handle_share("m1", s).unwrap(), (false, false));
    // Once that lapses (the node did not take the block), the same share is a duplicate.
    let later = now_ms() + SOLVED_TIP_MS + 1;
    let triple = (s.version.to_consensus() as u32, s.ntime, s.nonce);
    let root = s.merkle_root.to_byte_array();
    assert_eq!(
        pool.endpoint_share("m1", 7, s.job_id, triple, &root, later),
        Ok((false, false))
    );
    let stats = pool.miner_connection("m1").unwrap().stats;
    assert_eq!(stats.rejected_by_reason.get("stale-share"), Some(&1));
    assert_eq!(stats.rejected_by_reason.get("duplicate-share"), Some(&1));
}

#[test]
fn calls_on_unknown_miners_channels_and_roots_fail_typed() {
    let mut chain = EmbeddedChain::new(ChainConfig::default());
    let (mut pool, _, job) = pool_with_channel(&mut chain);
    let s = share(&job, 1);
    assert!(matches!(
        pool.handle_share("nobody", s),
        Err(StratumV2Error::PoolError(EndpointError::UnknownMiner(_)))
    ));
    assert!(matches!(
        pool.handle_share("m1", ShareData { channel_id: 8, ..s }),
        Err(StratumV2Error::PoolError(EndpointError::UnknownChannel(8)))
    ));
    let wrong_root = ShareData {
        merkle_root: bitcoin::TxMerkleNode::all_zeros(),
        ..s
    };
    assert!(matches!(
        pool.handle_share("m1", wrong_root),
        Err(StratumV2Error::PoolError(EndpointError::MerkleRootMismatch))
    ));
    assert!(matches!(
        pool.open_channel("m1", 7, 1),
        Err(StratumV2Error::PoolError(EndpointError::ChannelExists(7)))
    ));
    assert!(matches!(
        pool.open_channel("m1", 9, 0),
        Err(StratumV2Error::PoolError(EndpointError::ZeroDifficulty))
    ));
    assert!(matches!(
        pool.open_channel("nobody", 1, 1),
        Err(StratumV2Error::PoolError(EndpointError::UnknownMiner(_)))
    ));
    // A job the miner never had is refused like one from the wire.
    let unknown_job = ShareData { job_id: 999, ..s };
    assert_eq!(
        pool.handle_share("m1", unknown_job).unwrap(),
        (false, false)
    );
    let stats = pool.miner_connection("m1").unwrap().stats;
    assert_eq!(stats.rejected_by_reason.get("invalid-job-id"), Some(&1));
    assert!(matches!(
        pool.calculate_channel_target(0),
        Err(StratumV2Error::PoolError(EndpointError::ZeroDifficulty))
    ));
}

#[test]
fn hashes_compare_as_numbers_and_targets_follow_difficulty() {
    let pool = StratumV2Pool::new();
    let mut low = [0u8; 32];
    low[0] = 0xff; // least significant byte
    let mut high = [0u8; 32];
    high[31] = 0x01; // most significant byte
    let (low, high) = (
        BlockHash::from_byte_array(low),
        BlockHash::from_byte_array(high),
    );
    assert!(pool.hash_less_than_or_equal(&low, &high));
    assert!(!pool.hash_less_than_or_equal(&high, &low));
    assert!(pool.hash_less_than_or_equal(&high, &high));
    let one = pool.calculate_channel_target(1).unwrap();
    let two = pool.calculate_channel_target(2).unwrap();
    assert_eq!(one, Target::MAX_ATTAINABLE_MAINNET);
    assert!(two < one);
}

#[test]
fn a_new_template_reaches_every_channel_and_old_jobs_are_forgotten() {
    let mut chain = EmbeddedChain::new(ChainConfig::default());
    let (mut pool, _, first) = pool_with_channel(&mut chain);
    let max_jobs = MiningConfig::default().max_jobs;
    let mut last = first.job_id;
    for tip in 1..=(max_jobs as u8 + 3) {
        let mut block = template_block(&mut chain);
        block.header.prev_blockhash = BlockHash::from_byte_array([tip; 32]);
        let (job_id, receivers) = pool.set_template(block).unwrap();
        assert!(job_id > last);
        last = job_id;
        assert_eq!(receivers, [("m1".to_owned(), 7)]);
        pool.register_miner("m1".into()); // a call: the miner catches up
    }
    pool.cleanup_old_jobs();
    let channel = &pool.miner_connection("m1").unwrap().channels[&7];
    assert_eq!(channel.current_job_id, Some(last));
    assert_eq!(channel.jobs.len(), max_jobs);
    assert!(!channel.jobs.contains_key(&first.job_id));
    // A share on the first job is now refused (unknown to the miner).
    assert_eq!(
        pool.handle_share("m1", share(&first, 0)).unwrap(),
        (false, false)
    );
    // A block without a BIP34 coinbase height is no template.
    let mut bad = template_block(&mut chain);
    bad.txdata.clear();
    assert!(matches!(
        pool.set_template(bad),
        Err(StratumV2Error::InvalidTemplate(_))
    ));
}

#[test]
fn miners_are_bounded_least_recently_used_first_and_idle_ones_forgotten() {
    let mut pool = StratumV2Pool::new();
    pool.configure_endpoints(Arc::new(MiningConfig::default()), 3);
    for e in ["a", "b", "c"] {
        pool.register_miner(e.into());
    }
    pool.register_miner("a".into()); // a is used again: b is now the least recent
    pool.register_miner("d".into());
    let kept: Vec<bool> = ["a", "b", "c", "d"]
        .iter()
        .map(|e| pool.miner_connection(e).is_some())
        .collect();
    assert_eq!(kept, [true, false, true, true]);
    assert_eq!(pool.endpoint_miners().len(), 3);
    // The evicted miner's record is disconnected, not counted as connected.
    assert_eq!(pool.get_pool_stats().miner_count, 3);
    assert_eq!(pool.miners().count(), 4);
    // Everyone idle for 0 s: all forgotten, records included.
    pool.cleanup_disconnected_miners(0);
    assert!(pool.endpoint_miners().is_empty());
    assert_eq!(pool.miners().count(), 0);
    assert_eq!(pool.get_pool_stats().miner_count, 0);
}

#[test]
fn tlv_fields_follow_the_specification() {
    let mut enc = TlvEncoder::new();
    let a = enc.encode(0x0002, 0x01, b"worker1").unwrap();
    assert_eq!(
        a,
        [
            0x02, 0x00, 0x01, 0x07, 0x00, b'w', b'o', b'r', b'k', b'e', b'r', b'1'
        ]
    );
    let b = enc.encode(0x0003, 0x02, &[9]).unwrap();
    assert!(matches!(
        enc.encode(0x0001, 0x01, &[]),
        Err(WireError::TlvOutOfOrder { .. })
    ));
    let mut dec = TlvDecoder::new([a.clone(), b].concat());
    let first = dec.decode().unwrap().unwrap();
    assert_eq!(
        (
            first.extension_type,
            first.field_type,
            first.value.as_slice()
        ),
        (2, 1, &b"worker1"[..])
    );
    assert_eq!(dec.decode().unwrap().unwrap().value, [9]);
    assert_eq!(dec.decode().unwrap(), None);
    assert_eq!(TlvDecoder::decode_raw(&a).unwrap(), first);
    assert!(matches!(
        TlvDecoder::decode_raw(&a[..8]),
        Err(WireError::TlvTruncated { .. })
    ));
}

#[test]
fn messages_round_trip_through_the_seed_trait() {
    let open = messages::OpenMiningChannelMessage {
        request_id: 3,
        user_identity: Str0_255::new("alice").unwrap(),
        nominal_hash_rate: 1e9,
        max_target: [0xff; 32],
    };
    assert_eq!(open.message_type(), 0x10);
    let bytes = open.to_bytes().unwrap();
    let back = messages::OpenMiningChannelMessage::from_bytes(&bytes).unwrap();
    assert_eq!(back, open);
    assert!(matches!(
        messages::OpenMiningChannelMessage::from_bytes(&bytes[..3]),
        Err(StratumV2Error::ProtocolError(_))
    ));
}

#[tokio::test]
async fn the_template_generator_gives_a_block_the_pool_takes() {
    let node = Arc::new(EmbeddedNode::new(ChainConfig::default()));
    let generator = BlockTemplateGenerator::new(node.clone());
    let block = generator.generate_template().await.unwrap();
    // The first height above the node's history (11) is pushed as OP_11 (rust-bitcoin's
    // reader wants a data push): the core's reader.
    assert_eq!(
        blvm_stratum_v2::block::coinbase::bip34_height(&block),
        Some(HISTORY_HEIGHT + 1)
    );
    assert!(block.check_merkle_root());
    let mut pool = StratumV2Pool::new();
    let (job_id, _) = pool.set_template(block.clone()).unwrap();
    let work = pool.current_work().unwrap();
    assert_eq!((work.id, work.height), (job_id, HISTORY_HEIGHT + 1));
    assert_eq!(work.prev_hash, block.header.prev_blockhash);
}

// ----- the server's handle_message -----

/// Names of the reply's frames, and the prev hash of its SetNewPrevHash, if any.
fn read_reply(reply: &[u8]) -> (Vec<&'static str>, Option<[u8; 32]>) {
    let mut names = Vec::new();
    let mut prev = None;
    let mut rest = reply;
    while let Some((frame, used)) = Frame::parse(rest, 1 << 24).unwrap() {
        let (m, _) = frame.message().unwrap();
        if let Message::SetNewPrevHash(p) = &m {
            prev = Some(p.prev_hash);
        }
        names.push(m.name());
        rest = &rest[used..];
    }
    assert!(rest.is_empty());
    (names, prev)
}

async fn started_server(dir: &std::path::Path) -> (StratumV2Server, Arc<EmbeddedNode>) {
    let options = PoolOptions {
        listen_addr: Some("127.0.0.1:0".into()),
        data_dir: Some(dir.to_path_buf()),
        ..PoolOptions::default()
    };
    let config = PoolConfig::resolve(&options, "test").unwrap();
    let node = Arc::new(EmbeddedNode::new(ChainConfig::default()));
    let api: Arc<dyn NodeApi> = node.clone();
    let server = StratumV2Server::new(config, api).unwrap();
    server.start().await.unwrap();
    (server, node)
}

#[tokio::test]
async fn handle_message_records_under_a_registered_miner_and_brings_new_work() {
    let dir = tempfile::tempdir().unwrap();
    let (server, node) = started_server(dir.path()).await;
    let reply = server
        .handle_message(setup_and_open("ipc"), "ipc-1".into())
        .await
        .unwrap();
    let (names, first_prev) = read_reply(&reply);
    assert_eq!(
        names,
        [
            "SetupConnectionSuccess",
            "OpenStandardMiningChannelSuccess",
            "NewMiningJob",
            "SetNewPrevHash"
        ]
    );
    let pool = server.get_pool();
    let id = pool
        .read()
        .unwrap()
        .endpoint_miners()
        .get("ipc-1")
        .unwrap()
        .id;
    {
        let pool = pool.read().unwrap();
        let record = pool.miner(id).expect("registered");
        assert_eq!((record.vendor.as_str(), record.channels), ("ipc-miner", 1));
    }
    let stats = server.get_pool_stats().await;
    assert_eq!((stats.miner_count, stats.channel_count), (1, 1));

    // A block on the node, then the node's event: new work on a new tip.
    let generator = BlockTemplateGenerator::new(node.clone());
    let mut block = generator.generate_template().await.unwrap();
    let target = block.header.target();
    while !target.is_met_by(block.block_hash()) {
        block.header.nonce += 1;
    }
    let new_tip = block.block_hash();
    node.submit_block(block).await.unwrap();
    server.handle_event(NodeEvent::BlockMined).await.unwrap();
    // The session made before it gets the new job with its next message.
    let reply = server
        .handle_message(Vec::new(), "ipc-1".into())
        .await
        .unwrap();
    let (names, prev) = read_reply(&reply);
    assert_eq!(names, ["NewMiningJob", "SetNewPrevHash"]);
    assert_eq!(prev, Some(new_tip.to_byte_array()));
    assert_ne!(prev, first_prev);
    // Only once.
    let reply = server
        .handle_message(Vec::new(), "ipc-1".into())
        .await
        .unwrap();
    assert!(reply.is_empty());
    server.stop().await.unwrap();
}

#[tokio::test]
async fn handle_message_keeps_a_bounded_number_of_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _node) = started_server(dir.path()).await;
    let pool = server.get_pool();
    pool.write()
        .unwrap()
        .configure_endpoints(Arc::new(MiningConfig::default()), 2);
    for e in ["x", "y", "x", "z"] {
        let reply = server.handle_message(Vec::new(), e.into()).await.unwrap();
        // Before setup a session sends nothing, even with work.
        assert!(reply.is_empty());
    }
    {
        let pool = pool.read().unwrap();
        let miners = pool.endpoint_miners();
        assert_eq!(miners.len(), 2);
        assert!(miners.get("x").is_some() && miners.get("z").is_some());
        assert!(miners.get("y").is_none(), "the least recently used went");
    }
    // Bytes a session cannot take end it: its state goes too.
    let err = server
        .handle_message(frame_of(&open_before_setup()), "x".into())
        .await
        .unwrap_err();
    assert!(matches!(err, StratumV2Error::ProtocolError(_)));
    assert!(pool.read().unwrap().endpoint_miners().get("x").is_none());
    // A truncated frame is refused without ending the session.
    let bytes = setup_and_open("ipc");
    let err = server
        .handle_message(bytes[..4].to_vec(), "z".into())
        .await
        .unwrap_err();
    assert!(matches!(err, StratumV2Error::ProtocolError(_)));
    server.stop().await.unwrap();
}

fn open_before_setup() -> OpenStandardMiningChannel<'static> {
    OpenStandardMiningChannel {
        request_id: 1,
        user_identity: Str0_255::new("early").unwrap(),
        nominal_hash_rate: 0.0,
        max_target: [0xff; 32],
    }
}

#[test]
fn the_server_is_built_from_the_module_environment_the_node_gives() {
    use blvm_stratum_v2::node::module::ModuleEnv;
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_string_lossy().into_owned();
    let env = |extra: (&str, &str)| {
        ModuleEnv::from_vars(
            [
                ("MODULE_ID", "stratum-1"),
                ("SOCKET_PATH", "/nonexistent/node.sock"),
                ("DATA_DIR", data_dir.as_str()),
                ("MODULE_CONFIG_LISTEN_ADDR", "127.0.0.1:0"),
                extra,
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned())),
        )
        .unwrap()
    };
    let node: Arc<dyn NodeApi> = Arc::new(EmbeddedNode::new(ChainConfig::default()));
    let server = StratumV2Server::from_module_env(&env(("X", "y")), node.clone()).unwrap();
    assert!(!server.authority_public_key().is_empty());
    let bad = env(("MODULE_CONFIG_LISTEN_ADDR", "not an address"));
    assert!(matches!(
        StratumV2Server::from_module_env(&bad, node),
        Err(StratumV2Error::ModuleError(_))
    ));
}

/// A block found through the pool of a running server (`get_pool()`, then `handle_share`) is
/// saved and submitted at once, like a block found on a connection: it ends in
/// `blocks/submitted`, accepted by the node.
#[tokio::test]
async fn a_block_found_through_a_running_servers_pool_is_saved_and_submitted() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _node) = started_server(dir.path()).await;
    let pool = server.get_pool();
    let hash = {
        let mut pool = pool.write().unwrap();
        pool.register_miner("api-miner".into());
        pool.open_channel("api-miner", 7, 1).unwrap();
        let miner = pool.miner_connection("api-miner").unwrap();
        let channel = &miner.channels[&7];
        let job = channel.jobs[&channel.current_job_id.unwrap()].clone();
        let s = find(&pool, &job, 0, true);
        assert_eq!(pool.handle_share("api-miner", s).unwrap(), (true, true));
        pool.calculate_block_hash(&header_of(&s, &job))
    };
    let submitted = dir
        .path()
        .join("blocks")
        .join("submitted")
        .join(format!("{hash}.hex"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !submitted.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "block {hash} not in blocks/submitted within 10 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    server.stop().await.unwrap();
}

/// With the share ledger (on by default), `handle_message` returns a reply that acknowledges
/// a share only once the share is committed: the reply carries SubmitShares.Success and the
/// share is in the ledger, under the endpoint's miner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handle_message_acknowledges_a_share_only_once_it_is_in_the_ledger() {
    use blvm_stratum_v2::ledger::{Ledger, ShareRange, SqliteLedger};

    let dir = tempfile::tempdir().unwrap();
    let options = PoolOptions {
        listen_addr: Some("127.0.0.1:0".into()),
        data_dir: Some(dir.path().to_path_buf()),
        min_difficulty: Some(1e-9),
        max_difficulty: Some(1e-9),
        ..PoolOptions::default()
    };
    let config = PoolConfig::resolve(&options, "test").unwrap();
    let node = Arc::new(EmbeddedNode::new(ChainConfig {
        block_interval_secs: 0,
        ..ChainConfig::default()
    }));
    let server = StratumV2Server::new(config, node).unwrap();
    server.start().await.unwrap();
    let reply = server
        .handle_message(setup_and_open("ipc"), "ipc-1".into())
        .await
        .unwrap();
    let (share, hash) = share_from_opening(&reply, 7);
    let reply = server
        .handle_message(frame_of(&share), "ipc-1".into())
        .await
        .unwrap();
    let (names, _) = read_reply(&reply);
    assert!(names.contains(&"SubmitSharesSuccess"), "{names:?}");
    server.stop().await.unwrap();
    let mut ledger = SqliteLedger::open(dir.path().join("ledger.sqlite3")).unwrap();
    let shares = ledger
        .shares(&ShareRange::Ids {
            from_id: 0,
            to_id: u64::MAX,
            limit: 10,
        })
        .unwrap();
    assert_eq!(shares.len(), 1, "{shares:?}");
    assert_eq!(&*shares[0].record.user, "ipc");
    assert_eq!(shares[0].record.hash, hash);
    // An endpoint miner's id (2^63 and up) is stored as it is.
    assert!(shares[0].record.connection_id >= 1 << 63);
}
