//! Durable before acknowledged (issue 15): a session in durable mode queues each
//! SubmitShares.Success behind a hold on the last share it covers (the shell writes it once
//! the share ledger has committed that share), and refuses valid shares with
//! `ledger-unavailable` while the ledger cannot write (a block still goes out, and is
//! acknowledged once stored). Then the pool over TCP with a ledger (nothing acknowledged that
//! is not stored, a ledger that cannot write, a connection whose output waits too long), and
//! `kill -9` under load.

use std::sync::Arc;

#[path = "common/binary.rs"]
mod binary;
#[path = "common/endpoint.rs"]
mod endpoint;
#[path = "common/postgres.rs"]
mod postgres;

use bitcoin::hashes::{Hash, sha256d};
use bitcoin::{BlockHash, Target, Txid};
use blvm_stratum_v2::mining::merkle::fold_merkle_path;
use blvm_stratum_v2::mining::{
    ExtranonceAllocator, LedgerStatus, MiningConfig, Session, SessionEvent, ShareRejection, Work,
};
use blvm_stratum_v2::node::regtest::{ChainConfig, EmbeddedChain};
use blvm_stratum_v2::wire::common::SetupConnection;
use blvm_stratum_v2::wire::mining::*;
use blvm_stratum_v2::wire::{B0_32, Frame, Message, Str0_255, Sv2Message, U256, encode_frame};

const NOW_S: u32 = 1_800_000_000;
const NOW_MS: u64 = NOW_S as u64 * 1000;

fn frame<'a, M: Sv2Message<'a>>(m: &M) -> Vec<u8> {
    let mut out = Vec::new();
    encode_frame(m, &mut out).expect("encodable");
    out
}

fn feed(s: &mut Session, bytes: &[u8], now_ms: u64) {
    let f = Frame::parse_exact(bytes).expect("one frame");
    s.handle_frame(&f, now_ms).expect("handled");
}

/// What a session sent: acknowledgements (channel, last sequence number, count) and errors,
/// each with the share number it waits for (the holds in force at it; 0: none).
#[derive(Debug, Default)]
struct Out {
    acks: Vec<(u32, u32, u32)>,
    ack_waits: Vec<u64>,
    errors: Vec<String>,
    error_waits: Vec<u64>,
}

fn take(s: &mut Session) -> Out {
    let out = std::mem::take(s.output());
    let mut seen = Out::default();
    for (i, m) in out.messages().enumerate() {
        let waits = out
            .holds()
            .iter()
            .filter(|(at, _)| *at <= i)
            .map(|(_, n)| *n)
            .max()
            .unwrap_or(0);
        let f = Frame::parse_exact(m).expect("valid output");
        match f.message().expect("known").0 {
            Message::SubmitSharesSuccess(a) => {
                seen.acks.push((
                    a.channel_id,
                    a.last_sequence_number,
                    a.new_submits_accepted_count,
                ));
                seen.ack_waits.push(waits);
            }
            Message::SubmitSharesError(e) => {
                seen.errors.push(e.error_code.to_string());
                seen.error_waits.push(waits);
            }
            _ => {}
        }
    }
    seen
}

fn acks(out: &Out) -> Vec<(u32, u32, u32)> {
    out.acks.clone()
}

fn errors(out: &Out) -> Vec<String> {
    out.errors.clone()
}

struct Job {
    channel_id: u32,
    job_id: u32,
    version: u32,
    prev_hash: U256,
    nbits: u32,
    min_ntime: u32,
    path: Vec<U256>,
    prefix: Vec<u8>,
    suffix: Vec<u8>,
    extranonce_prefix: Vec<u8>,
    extranonce_size: usize,
    target: Target,
}

impl Job {
    fn hash(&self, extranonce: &[u8], nonce: u32) -> BlockHash {
        let mut cb = self.prefix.clone();
        cb.extend_from_slice(&self.extranonce_prefix);
        cb.extend_from_slice(extranonce);
        cb.extend_from_slice(&self.suffix);
        let txid = Txid::from_raw_hash(sha256d::Hash::hash(&cb));
        let root = fold_merkle_path(txid, &self.path);
        let mut h = Vec::with_capacity(80);
        h.extend_from_slice(&self.version.to_le_bytes());
        h.extend_from_slice(&self.prev_hash);
        h.extend_from_slice(root.as_byte_array());
        h.extend_from_slice(&self.min_ntime.to_le_bytes());
        h.extend_from_slice(&self.nbits.to_le_bytes());
        h.extend_from_slice(&nonce.to_le_bytes());
        BlockHash::from_byte_array(sha256d::Hash::hash(&h).to_byte_array())
    }

    /// A nonce from `start` whose hash meets `target` and, with `block`, the network's or not.
    fn nonce(&self, en: &[u8], target: Target, network: Target, block: bool, start: u32) -> u32 {
        (start..)
            .find(|&n| {
                let h = self.hash(en, n);
                target.is_met_by(h) && network.is_met_by(h) == block
            })
            .expect("a nonce")
    }

    fn share(&self, seq: u32, en: &[u8], nonce: u32) -> Vec<u8> {
        frame(&SubmitSharesExtended {
            channel_id: self.channel_id,
            sequence_number: seq,
            job_id: self.job_id,
            nonce,
            ntime: self.min_ntime,
            version: self.version,
            extranonce: B0_32::new(en).unwrap(),
        })
    }
}

/// A durable session with one extended channel on `chain`, acknowledging each `batch` shares.
fn durable_session(chain: ChainConfig, batch: u32) -> (Session, Job, Arc<Work>) {
    session_with(chain, batch, true)
}

/// [`durable_session`], or without a ledger (`durable` false).
fn session_with(chain: ChainConfig, batch: u32, durable: bool) -> (Session, Job, Arc<Work>) {
    let mut chain = EmbeddedChain::new(chain);
    let config = Arc::new(MiningConfig {
        min_difficulty: 1e-9,
        max_difficulty: 1e-9,
        share_batch_size: batch,
        share_rate_multiple: 1e9,
        durable_acks: durable,
        ..MiningConfig::default()
    });
    let work = Work::new(1, chain.template(NOW_S), &config.coinbase).unwrap();
    let mut s = Session::new(config, Arc::new(ExtranonceAllocator::new()))
        .with_ledger_status(LedgerStatus::new());
    s.on_work(&work, NOW_MS);
    feed(
        &mut s,
        &frame(&SetupConnection {
            protocol: 0,
            min_version: 2,
            max_version: 2,
            flags: 0,
            endpoint_host: Str0_255::new("127.0.0.1").unwrap(),
            endpoint_port: 3333,
            vendor: Str0_255::new("test").unwrap(),
            hardware_version: Str0_255::default(),
            firmware: Str0_255::default(),
            device_id: Str0_255::default(),
        }),
        NOW_MS,
    );
    feed(
        &mut s,
        &frame(&OpenExtendedMiningChannel {
            request_id: 1,
            user_identity: Str0_255::new("alice.rig1").unwrap(),
            nominal_hash_rate: 0.0,
            max_target: [0xff; 32],
            min_extranonce_size: 8,
        }),
        NOW_MS,
    );
    let (mut ch, mut job) = (None, None);
    let out = std::mem::take(s.output());
    let mut rest = &out[..];
    while let Some((f, used)) = Frame::parse(rest, 1 << 24).expect("valid output") {
        rest = &rest[used..];
        match f.message().expect("known").0 {
            Message::OpenExtendedMiningChannelSuccess(m) => {
                ch = Some((
                    m.channel_id,
                    Target::from_le_bytes(m.target),
                    m.extranonce_prefix.to_vec(),
                    m.extranonce_size as usize,
                ))
            }
            Message::NewExtendedMiningJob(m) => {
                job = Some((
                    m.job_id,
                    m.version,
                    m.merkle_path.to_vec(),
                    m.coinbase_tx_prefix.to_vec(),
                    m.coinbase_tx_suffix.to_vec(),
                ))
            }
            Message::SetNewPrevHash(p) => {
                let (channel_id, target, extranonce_prefix, extranonce_size) = ch.take().unwrap();
                let (job_id, version, path, prefix, suffix) = job.take().unwrap();
                let _ = s.drain_events().count();
                return (
                    s,
                    Job {
                        channel_id,
                        job_id,
                        version,
                        prev_hash: p.prev_hash,
                        nbits: p.nbits,
                        min_ntime: p.min_ntime,
                        path,
                        prefix,
                        suffix,
                        extranonce_prefix,
                        extranonce_size,
                        target,
                    },
                    work,
                );
            }
            _ => {}
        }
    }
    panic!("no job");
}

fn hard_chain() -> ChainConfig {
    ChainConfig {
        bits: 0x1d00ffff,
        synthetic_transactions: 3,
        block_interval_secs: 0,
    }
}

/// Submits `n` valid non-block shares from sequence number `first`; returns the session's
/// output after them.
fn submit(s: &mut Session, job: &Job, net: Target, first: u32, n: u32, now_ms: u64) -> Out {
    let en = vec![7u8; job.extranonce_size];
    let mut nonce = first * 1_000;
    for seq in first..first + n {
        nonce = job.nonce(&en, job.target, net, false, nonce);
        feed(s, &job.share(seq, &en, nonce), now_ms);
        nonce += 1;
    }
    take(s)
}

#[test]
fn every_acknowledgement_waits_behind_a_hold_on_its_last_share() {
    let (mut s, job, work) = durable_session(hard_chain(), 1);
    let out = submit(&mut s, &job, work.network_target, 1, 5, NOW_MS);
    assert_eq!(
        acks(&out),
        (1..=5).map(|n| (job.channel_id, n, 1)).collect::<Vec<_>>()
    );
    assert_eq!(
        out.ack_waits,
        [1, 2, 3, 4, 5],
        "each waits for the ledger's commit of its share"
    );
    let numbers: Vec<u64> = s
        .drain_events()
        .filter_map(|e| match e {
            SessionEvent::ShareAccepted {
                share_number,
                user_identity,
                job_id,
                target,
                ..
            } => {
                assert_eq!(&*user_identity, "alice.rig1");
                assert_eq!(job_id, job.job_id);
                assert_eq!(target, job.target);
                Some(share_number)
            }
            _ => None,
        })
        .collect();
    assert_eq!(numbers, [1, 2, 3, 4, 5]);
    // Without a ledger nothing is held.
    let (mut s, job, work) = session_with(hard_chain(), 1, false);
    let out = submit(&mut s, &job, work.network_target, 1, 2, NOW_MS);
    assert_eq!(out.ack_waits, [0, 0]);
}

#[test]
fn a_full_batch_waits_for_its_last_share_and_a_due_batch_too() {
    let (mut s, job, work) = durable_session(hard_chain(), 3);
    let out = submit(&mut s, &job, work.network_target, 1, 4, NOW_MS);
    assert_eq!(acks(&out), [(job.channel_id, 3, 3)]);
    assert_eq!(out.ack_waits, [3], "the batch covers shares 1 to 3");
    // The fourth share's batch is due after a second: made then, behind its hold.
    s.on_tick(NOW_MS + 1_000);
    let out = take(&mut s);
    assert_eq!(acks(&out), [(job.channel_id, 4, 1)]);
    assert_eq!(out.ack_waits, [4]);
}

#[test]
fn shares_are_refused_while_the_ledger_is_down_and_held_ones_wait() {
    let (mut s, job, work) = durable_session(hard_chain(), 1);
    let status = s.ledger_status().clone();
    let out = submit(&mut s, &job, work.network_target, 1, 2, NOW_MS);
    assert_eq!(out.ack_waits, [1, 2]);
    status.set_available(false);
    let out = submit(&mut s, &job, work.network_target, 3, 2, NOW_MS);
    assert_eq!(errors(&out), ["ledger-unavailable", "ledger-unavailable"]);
    assert_eq!(
        out.error_waits,
        [0, 0],
        "a refusal holds nothing of its own"
    );
    assert_eq!(acks(&out), []);
    let refused: Vec<ShareRejection> = s
        .drain_events()
        .filter_map(|e| match e {
            SessionEvent::ShareRejected {
                reason,
                user_identity,
                ..
            } => {
                assert_eq!(user_identity.as_deref(), Some("alice.rig1"));
                Some(reason)
            }
            _ => None,
        })
        .collect();
    assert_eq!(refused, [ShareRejection::LedgerUnavailable; 2]);
    assert_eq!(s.last_share_number(), 2, "refused shares are not numbered");
    // The writes come back: mining goes on, numbered from where it was, and the refused
    // shares, sent again, are taken (refused, they were never counted as seen).
    status.set_available(true);
    let out = submit(&mut s, &job, work.network_target, 3, 2, NOW_MS);
    assert_eq!(errors(&out), Vec::<String>::new());
    assert_eq!(acks(&out), [(job.channel_id, 3, 1), (job.channel_id, 4, 1)]);
    assert_eq!(out.ack_waits, [3, 4]);
    let out = submit(&mut s, &job, work.network_target, 5, 1, NOW_MS);
    assert_eq!(errors(&out), Vec::<String>::new());
    assert_eq!(acks(&out), [(job.channel_id, 5, 1)]);
    assert_eq!(out.ack_waits, [5]);
}

#[test]
fn a_block_found_while_the_ledger_is_down_is_emitted_and_held_not_refused() {
    // Regtest difficulty: about half of all hashes are blocks.
    let chain = ChainConfig {
        synthetic_transactions: 3,
        block_interval_secs: 0,
        ..ChainConfig::default()
    };
    let (mut s, job, work) = durable_session(chain, 1);
    s.set_ledger_available(false);
    let en = vec![9u8; job.extranonce_size];
    let nonce = job.nonce(&en, job.target, work.network_target, true, 0);
    feed(&mut s, &job.share(1, &en, nonce), NOW_MS);
    let out = take(&mut s);
    assert_eq!(errors(&out), Vec::<String>::new());
    assert_eq!(acks(&out), [(job.channel_id, 1, 1)]);
    assert_eq!(out.ack_waits, [1], "acknowledged once the ledger stores it");
    let events: Vec<SessionEvent> = s.drain_events().collect();
    assert!(
        matches!(events[0], SessionEvent::BlockFound(_)),
        "{events:?}"
    );
    assert!(matches!(
        events[1],
        SessionEvent::ShareAccepted {
            share_number: 1,
            ..
        }
    ));
}

// ---------------------------------------------------------------------------------------------
// The pool over TCP with a ledger.

mod pool_with_ledger {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use bitcoin::BlockHash;
    use blvm_stratum_v2::client::{ChannelKind, MinerOptions, MinerReport, run_miner};
    use blvm_stratum_v2::config::{PoolConfig, PoolOptions};
    use blvm_stratum_v2::ledger::{
        Balance, BlockStatus, Ledger, LedgerBatch, LedgerError, MemoryLedger, PayoutComputation,
        RejectedCount, ShareRange, StoredBlock, StoredShare,
    };
    use blvm_stratum_v2::node::NodeApi;
    use blvm_stratum_v2::node::regtest::{ChainConfig, EmbeddedNode};
    use blvm_stratum_v2::server::StratumV2Server;

    /// A memory ledger the test keeps a handle on: to read it while the pool runs, and to
    /// make its writes fail (a database gone down).
    #[derive(Clone, Default)]
    pub struct SharedLedger(pub Arc<Mutex<MemoryLedger>>);

    impl SharedLedger {
        fn with<T>(&self, f: impl FnOnce(&mut MemoryLedger) -> T) -> T {
            f(&mut self.0.lock().unwrap())
        }
    }

    impl Ledger for SharedLedger {
        fn append(&mut self, batch: &LedgerBatch) -> Result<(), LedgerError> {
            self.with(|l| l.append(batch))
        }
        fn set_block_status(&mut self, h: BlockHash, s: &BlockStatus) -> Result<bool, LedgerError> {
            self.with(|l| l.set_block_status(h, s))
        }
        fn block(&mut self, h: BlockHash) -> Result<Option<StoredBlock>, LedgerError> {
            self.with(|l| l.block(h))
        }
        fn blocks(&mut self, n: usize) -> Result<Vec<StoredBlock>, LedgerError> {
            self.with(|l| l.blocks(n))
        }
        fn share_by_hash(&mut self, h: BlockHash) -> Result<Option<StoredShare>, LedgerError> {
            self.with(|l| l.share_by_hash(h))
        }
        fn shares(&mut self, r: &ShareRange) -> Result<Vec<StoredShare>, LedgerError> {
            self.with(|l| l.shares(r))
        }
        fn last_share_id(&mut self) -> Result<u64, LedgerError> {
            self.with(|l| l.last_share_id())
        }
        fn record_payouts(&mut self, c: &PayoutComputation) -> Result<bool, LedgerError> {
            self.with(|l| l.record_payouts(c))
        }
        fn payouts(&mut self, h: BlockHash) -> Result<Option<PayoutComputation>, LedgerError> {
            self.with(|l| l.payouts(h))
        }
        fn balances(&mut self) -> Result<Vec<Balance>, LedgerError> {
            self.with(|l| l.balances())
        }
        fn blocks_to_confirm(&mut self, min: u32) -> Result<Vec<StoredBlock>, LedgerError> {
            self.with(|l| l.blocks_to_confirm(min))
        }
        fn rejected(&mut self) -> Result<Vec<RejectedCount>, LedgerError> {
            self.with(|l| l.rejected())
        }
        fn prune(&mut self, b: u64, k: u64) -> Result<u64, LedgerError> {
            self.with(|l| l.prune(b, k))
        }
        fn claim_server_id(
            &mut self,
            claim: &blvm_stratum_v2::ledger::InstanceClaim,
            now_ms: u64,
        ) -> Result<blvm_stratum_v2::ledger::ClaimOutcome, LedgerError> {
            self.with(|l| l.claim_server_id(claim, now_ms))
        }
        fn heartbeat(&mut self, id: u16, instance: u64, now_ms: u64) -> Result<bool, LedgerError> {
            self.with(|l| l.heartbeat(id, instance, now_ms))
        }
        fn release_server_id(&mut self, id: u16, instance: u64) -> Result<(), LedgerError> {
            self.with(|l| l.release_server_id(id, instance))
        }
        fn instances(
            &mut self,
        ) -> Result<Vec<blvm_stratum_v2::ledger::InstanceRecord>, LedgerError> {
            self.with(|l| l.instances())
        }
    }

    fn all_shares(l: &mut dyn Ledger) -> Vec<StoredShare> {
        l.shares(&ShareRange::ALL).unwrap()
    }

    /// A ledger that stays down: a connection whose acknowledgements have waited
    /// `ledger_hold_limit_secs` is closed, with nothing acknowledged; the miner's next
    /// connection, with nothing held, has its shares refused `ledger-unavailable` at once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_connection_whose_output_waits_too_long_is_closed() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = SharedLedger::default();
        ledger.with(|l| l.fail_writes = true);
        let node: Arc<dyn NodeApi> = Arc::new(EmbeddedNode::new(ChainConfig {
            bits: 0x1d00_ffff,
            synthetic_transactions: 3,
            block_interval_secs: 0,
        }));
        let cfg = config_with(dir.path(), 0x1d00_ffff, |o| {
            o.ledger_hold_limit_secs = Some(1)
        });
        let server = StratumV2Server::with_ledger(
            cfg,
            node,
            Box::new(ledger.clone()),
            Box::new(|_, _| Ok(())),
        )
        .expect("server");
        let url = server.start().await.expect("start").to_string();
        let opts = |secs| MinerOptions {
            url: url.clone(),
            authority_pubkey: server.authority_public_key().to_owned(),
            threads: 1,
            channel: ChannelKind::Extended,
            user: "carol".into(),
            duration: Some(Duration::from_secs(secs)),
            ..MinerOptions::default()
        };
        let started = std::time::Instant::now();
        let first = tokio::time::timeout(
            Duration::from_secs(30),
            run_miner(opts(20), std::future::pending::<()>()),
        )
        .await
        .expect("the pool closed it in time");
        let waited = started.elapsed();
        assert!(
            matches!(first, Err(blvm_stratum_v2::client::MinerError::Closed)),
            "{first:?}"
        );
        assert!(
            waited >= Duration::from_secs(1) && waited < Duration::from_secs(15),
            "closed after {waited:?}"
        );
        let second = tokio::time::timeout(
            Duration::from_secs(30),
            run_miner(opts(2), std::future::pending::<()>()),
        )
        .await
        .expect("in time")
        .expect("the second connection stays open");
        assert_eq!(second.shares_accepted, 0, "{second:?}");
        assert!(
            second
                .shares_rejected
                .get("ledger-unavailable")
                .is_some_and(|n| *n > 0),
            "refusals reach the miner at once: {second:?}"
        );
        assert_eq!(ledger.clone().last_share_id().unwrap(), 0, "nothing stored");
        // The ledger writes again: what the first connection had accepted is stored (never
        // acknowledged, which is allowed: only the converse is not).
        ledger.with(|l| l.fail_writes = false);
        tokio::time::timeout(Duration::from_secs(15), server.stop())
            .await
            .expect("stops in time")
            .expect("stops");
        println!("closed after {waited:?}");
    }

    fn config(dir: &std::path::Path, bits: u32) -> PoolConfig {
        config_with(dir, bits, |_| {})
    }

    fn config_with(
        dir: &std::path::Path,
        bits: u32,
        more: impl FnOnce(&mut PoolOptions),
    ) -> PoolConfig {
        let mut options = PoolOptions {
            listen_addr: Some("127.0.0.1:0".into()),
            data_dir: Some(dir.to_path_buf()),
            min_difficulty: Some(1e-6),
            max_difficulty: Some(1e-6),
            chain_bits: Some(bits),
            share_rate_multiple: Some(10_000.0),
            ..PoolOptions::default()
        };
        more(&mut options);
        PoolConfig::resolve(&options, "test").expect("config")
    }

    async fn mine(
        server: &StratumV2Server,
        user: &str,
        shares: Option<u64>,
        secs: u64,
    ) -> MinerReport {
        let opts = MinerOptions {
            url: server.start().await.expect("started").to_string(),
            authority_pubkey: server.authority_public_key().to_owned(),
            threads: 1,
            channel: ChannelKind::Extended,
            user: user.into(),
            max_shares: shares,
            duration: Some(Duration::from_secs(secs)),
            ..MinerOptions::default()
        };
        tokio::time::timeout(
            Duration::from_secs(secs + 30),
            run_miner(opts, std::future::pending::<()>()),
        )
        .await
        .expect("miner finished in time")
        .expect("miner ran")
    }

    /// Every acknowledged share is a row with its user, worker, channel, job, target and hash;
    /// the blocks found are rows with the node's verdict.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_acknowledged_share_and_found_block_is_in_the_ledger() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = SharedLedger::default();
        let node = Arc::new(EmbeddedNode::new(ChainConfig {
            synthetic_transactions: 3,
            block_interval_secs: 0,
            ..ChainConfig::default()
        }));
        let api: Arc<dyn NodeApi> = node.clone();
        let server = StratumV2Server::with_ledger(
            config(dir.path(), 0x207f_ffff),
            api,
            Box::new(ledger.clone()),
            Box::new(|_, _| Ok(())),
        )
        .expect("server");
        server.start().await.expect("start");
        let report = mine(&server, "alice.rig1", Some(12), 60).await;
        assert!(report.shares_accepted >= 12, "{report:?}");
        tokio::time::timeout(Duration::from_secs(15), server.stop())
            .await
            .expect("stops in time")
            .expect("stops");
        let mut l = ledger.clone();
        let shares = all_shares(&mut l);
        assert!(
            shares.len() as u64 >= report.shares_accepted,
            "{} rows for {} acknowledged",
            shares.len(),
            report.shares_accepted
        );
        for s in &shares {
            assert_eq!((&*s.record.user, &*s.record.worker), ("alice", "rig1"));
            assert_eq!(
                s.record.channel_id, shares[0].record.channel_id,
                "one channel"
            );
            assert!(s.record.channel_id > 0);
            assert!(s.record.job_id > 0);
            assert!(s.record.target.is_met_by(s.record.hash), "{s:?}");
            assert!(s.record.difficulty > 0.0);
        }
        // About every other share is a block on regtest: each is a row with the verdict.
        let blocks = l.blocks(100).unwrap();
        assert!(!blocks.is_empty());
        for b in &blocks {
            assert!(
                l.share_by_hash(b.block.hash).unwrap().is_some(),
                "its share is stored"
            );
            assert_eq!(b.block.user, "alice");
            assert!(b.block.reward_sat > 0);
        }
        let accepted = blocks.iter().filter(|b| b.status.was_accepted()).count();
        assert!(accepted >= 1, "{blocks:?}");
    }

    /// An endpoint (a miner behind the node's IPC, `handle_message`) has each share
    /// acknowledged in the reply to the call that sent it, once committed, even with share
    /// batching configured: a later call's reply (here a CloseChannel's, which flushes the
    /// batch) acknowledged a share the ledger had not stored while the earlier call still
    /// waited for it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_endpoint_share_is_acknowledged_only_in_its_own_calls_reply() {
        use blvm_stratum_v2::wire::mining::CloseChannel;
        use blvm_stratum_v2::wire::{Frame, Message, Str0_255};

        use super::endpoint::{frame_of, setup_and_open, share_from_opening};

        fn frames(reply: &[u8]) -> Vec<Message<'_>> {
            let mut out = Vec::new();
            let mut rest = reply;
            while let Some((frame, used)) = Frame::parse(rest, 1 << 24).unwrap() {
                out.push(frame.message().unwrap().0);
                rest = &rest[used..];
            }
            out
        }
        let dir = tempfile::tempdir().unwrap();
        let ledger = SharedLedger::default();
        let node = Arc::new(EmbeddedNode::new(ChainConfig {
            bits: 0x1d00_ffff,
            synthetic_transactions: 3,
            block_interval_secs: 0,
        }));
        let api: Arc<dyn NodeApi> = node.clone();
        let cfg = config_with(dir.path(), 0x1d00_ffff, |o| o.share_batch_size = Some(3));
        let server = Arc::new(
            StratumV2Server::with_ledger(
                cfg,
                api,
                Box::new(ledger.clone()),
                Box::new(|_, _| Ok(())),
            )
            .expect("server"),
        );
        server.start().await.expect("start");
        let opened = server
            .handle_message(setup_and_open("alice.ipc"), "ipc".into())
            .await
            .unwrap();
        let (share, _) = share_from_opening(&opened, 1);
        let channel = share.channel_id;
        // The ledger cannot write: the share's call waits for its commit.
        ledger.with(|l| l.fail_writes = true);
        let call = tokio::spawn({
            let (server, share) = (server.clone(), frame_of(&share));
            async move { server.handle_message(share, "ipc".into()).await }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        let close = CloseChannel {
            channel_id: channel,
            reason_code: Str0_255::new("done").unwrap(),
        };
        let closed = server
            .handle_message(frame_of(&close), "ipc".into())
            .await
            .unwrap();
        assert!(
            !frames(&closed)
                .iter()
                .any(|m| matches!(m, Message::SubmitSharesSuccess(_))),
            "a share not stored acknowledged in another call's reply"
        );
        ledger.with(|l| l.fail_writes = false);
        let reply = call.await.unwrap().expect("stored, then acknowledged");
        assert!(
            frames(&reply)
                .iter()
                .any(|m| matches!(m, Message::SubmitSharesSuccess(_)))
        );
        let stored = all_shares(&mut ledger.clone());
        assert_eq!(stored.len(), 1);
        tokio::time::timeout(Duration::from_secs(15), server.stop())
            .await
            .expect("stops in time")
            .expect("stops");
    }

    /// A miner named with a NUL, which PostgreSQL's text cannot hold, stops nobody: its
    /// channel is refused (were it open, its first share, accepted or rejected, would put
    /// the name in a commit that fails every time it is retried: no share of anyone would be
    /// acknowledged again), and another miner's shares are committed and acknowledged.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_name_postgresql_cannot_store_stops_nobody() {
        // Off the runtime: the test's PostgreSQL client blocks.
        let database = tokio::task::spawn_blocking(super::postgres::TempPostgres::start)
            .await
            .expect("PostgreSQL started");
        let dir = tempfile::tempdir().unwrap();
        let url = database.url();
        let cfg = config_with(dir.path(), 0x1d00_ffff, |o| o.ledger_url = Some(url));
        let node = Arc::new(EmbeddedNode::new(ChainConfig {
            bits: 0x1d00_ffff,
            synthetic_transactions: 3,
            block_interval_secs: 0,
        }));
        let api: Arc<dyn NodeApi> = node.clone();
        let server = StratumV2Server::new(cfg, api).expect("server");
        server.start().await.expect("start");
        for name in ["mallory.\0", "mallory\0.rig"] {
            let opts = MinerOptions {
                url: server.start().await.expect("started").to_string(),
                authority_pubkey: server.authority_public_key().to_owned(),
                threads: 1,
                channel: ChannelKind::Extended,
                user: name.into(),
                max_shares: Some(2),
                duration: Some(Duration::from_secs(3)),
                ..MinerOptions::default()
            };
            let refused = tokio::time::timeout(
                Duration::from_secs(30),
                run_miner(opts, std::future::pending::<()>()),
            )
            .await
            .expect("miner finished in time");
            let why = refused.err().map(|e| e.to_string()).unwrap_or_default();
            assert!(why.contains("unknown-user"), "{name:?}: {why}");
        }
        let report = mine(&server, "alice.rig1", Some(5), 30).await;
        assert!(report.shares_accepted >= 5, "{report:?}");
        tokio::time::timeout(Duration::from_secs(15), server.stop())
            .await
            .expect("stops in time")
            .expect("stops");
        let url = database.url();
        let shares = tokio::task::spawn_blocking(move || {
            all_shares(&mut blvm_stratum_v2::ledger::PostgresLedger::connect(&url).unwrap())
        })
        .await
        .unwrap();
        assert!(shares.len() as u64 >= report.shares_accepted);
        assert!(shares.iter().all(|s| &*s.record.user == "alice"));
    }

    /// A ledger that cannot write: shares are refused `ledger-unavailable` and nothing is
    /// acknowledged that is not stored; once it writes again, the held shares are acknowledged
    /// and mining resumes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_ledger_that_cannot_write_stops_acknowledgements_until_it_can() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = SharedLedger::default();
        ledger.with(|l| l.fail_writes = true);
        let node = Arc::new(EmbeddedNode::new(ChainConfig {
            bits: 0x1d00_ffff,
            synthetic_transactions: 3,
            block_interval_secs: 0,
        }));
        let api: Arc<dyn NodeApi> = node.clone();
        let server = StratumV2Server::with_ledger(
            config(dir.path(), 0x1d00_ffff),
            api,
            Box::new(ledger.clone()),
            Box::new(|_, _| Ok(())),
        )
        .expect("server");
        server.start().await.expect("start");
        let writes_back = {
            let ledger = ledger.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(1_500)).await;
                // Nothing stored yet, whatever the miner sent.
                let stored = ledger.clone().last_share_id().unwrap();
                ledger.with(|l| l.fail_writes = false);
                stored
            })
        };
        let report = mine(&server, "bob", None, 4).await;
        assert_eq!(writes_back.await.unwrap(), 0);
        let refused = report
            .shares_rejected
            .get("ledger-unavailable")
            .copied()
            .unwrap_or(0);
        assert!(refused > 0, "{report:?}");
        assert!(report.shares_accepted > 0, "mining resumed: {report:?}");
        tokio::time::timeout(Duration::from_secs(15), server.stop())
            .await
            .expect("stops in time")
            .expect("stops");
        let mut l = ledger.clone();
        let rows = all_shares(&mut l).len() as u64;
        assert!(
            rows >= report.shares_accepted,
            "{rows} rows for {} acknowledged",
            report.shares_accepted
        );
        let counted: u64 = l
            .rejected()
            .unwrap()
            .iter()
            .filter(|r| r.reason == "ledger-unavailable" && r.user == "bob")
            .map(|r| r.count)
            .sum();
        assert_eq!(counted, refused, "refusals counted per user and reason");
    }
}

// ---------------------------------------------------------------------------------------------
// kill -9 under load.

mod kill_nine {
    use std::collections::HashMap;
    use std::time::Duration;

    use super::binary::PoolProcess;

    use blvm_stratum_v2::ledger::{Ledger, ShareRange, SqliteLedger};
    use blvm_stratum_v2::loadgen::{self, LoadgenOptions};

    /// Starts the pool binary on the ledger at `ledger_url`, loads it with many connections at
    /// full rate (a unique worker each), kills it with SIGKILL mid-load, then checks with
    /// `open` (the ledger after the crash) that every channel has at least as many rows as the
    /// load generator saw acknowledged. Returns (acknowledged, rows) for the report.
    pub fn kill_9_loses_no_acknowledged_share(
        ledger_url: &str,
        open: impl FnOnce() -> Box<dyn Ledger>,
    ) -> (u64, u64) {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut pool = PoolProcess::start(
            dir.path(),
            &[
                "--listen-addr",
                "127.0.0.1:0",
                "--ledger-url",
                ledger_url,
                "--min-difficulty",
                "1e-12",
                "--max-difficulty",
                "1e-12",
                "--chain-bits",
                "0x1d00ffff",
                "--share-rate-multiple",
                "1000000000",
            ],
        );
        let (url, authority_pubkey) = (pool.addr.clone(), pool.key.clone());
        let load = std::thread::spawn(move || {
            loadgen::run(LoadgenOptions {
                url,
                authority_pubkey,
                connections: 100,
                rate: 0.0,
                window: 4,
                duration: Duration::from_secs(4),
                hold: Duration::from_millis(100),
                grace: Duration::from_secs(1),
                setup_timeout: Duration::from_secs(30),
                threads: 1,
                user: "kill".into(),
                ..LoadgenOptions::default()
            })
            .expect("load generator ran")
        });
        // Mid-load: setup of 100 connections takes well under a second here.
        std::thread::sleep(Duration::from_millis(2_500));
        pool.signal(libc::SIGKILL);
        let _ = pool.child.wait();
        let report = load.join().expect("load generator");
        let acknowledged: u64 = report.acked_by_channel.iter().map(|(_, n)| n).sum();
        assert!(
            acknowledged > 0,
            "load before the kill: {}",
            report.to_text()
        );
        let mut ledger = open();
        let rows = ledger
            .shares(&ShareRange::ALL)
            .expect("the ledger reads after the crash");
        let mut by_worker: HashMap<String, u64> = HashMap::new();
        for s in &rows {
            assert_eq!(&*s.record.user, "kill");
            *by_worker.entry(s.record.worker.to_string()).or_default() += 1;
        }
        for (identity, acked) in &report.acked_by_channel {
            let worker = identity.split_once('.').map_or("", |(_, w)| w);
            let stored = by_worker.get(worker).copied().unwrap_or(0);
            assert!(
                stored >= *acked,
                "{identity}: {acked} acknowledged, {stored} in the ledger"
            );
        }
        (acknowledged, rows.len() as u64)
    }

    #[test]
    fn kill_9_under_load_loses_no_acknowledged_share_sqlite() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("ledger.sqlite3");
        let url = path.to_string_lossy().into_owned();
        let (acked, rows) = kill_9_loses_no_acknowledged_share(&url, || {
            Box::new(SqliteLedger::open(&path).expect("the ledger opens after the crash"))
        });
        println!("kill -9 (SQLite): {acked} shares acknowledged, {rows} rows");
    }

    #[test]
    fn kill_9_under_load_loses_no_acknowledged_share_postgres() {
        let server = super::postgres::TempPostgres::start();
        let url = server.fresh_database();
        let (acked, rows) = kill_9_loses_no_acknowledged_share(&url, || {
            Box::new(
                blvm_stratum_v2::ledger::PostgresLedger::connect(&url)
                    .expect("the ledger opens after the crash"),
            )
        });
        println!("kill -9 (PostgreSQL): {acked} shares acknowledged, {rows} rows");
    }
}
