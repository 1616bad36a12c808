//! Solo and donate channels paid in their own coinbase (issue 15, item 4), through the real
//! pool with clients built from SRI's crates on the embedded chain: `sri/solo/ADDRESS/w`
//! (extended and standard) and `sri/donate/10/ADDRESS/w` channels mine blocks while a pool
//! channel mines too; every block is accepted by the chain, read back from the pool's block
//! files and checked with rust-bitcoin (merkle root, witness commitment, who the coinbase
//! pays); the ledger afterwards records the solo blocks as paid in their coinbase, leaves their
//! shares out of every PPLNS window and moves no balance for them.

#[path = "common/pool.rs"]
mod pool;
#[path = "common/sri_client.rs"]
mod sri_client;

use std::collections::BTreeMap;
use std::time::Duration;

use bitcoin::hashes::Hash;
use bitcoin::{Address, Block, BlockHash, Network, ScriptBuf};
use blvm_stratum_v2::ledger::{Ledger, ShareRange, SqliteLedger};
use blvm_stratum_v2::node::regtest::{EmbeddedChain, SYNTHETIC_FEE};
use sri_client::{Miner, network_target};

/// Who a test miner mines for.
struct TestMiner {
    miner: Miner,
    channel: u32,
    /// The ledger user its blocks are recorded under.
    ledger_user: String,
}

fn regtest_address(n: u8) -> Address {
    Address::p2wsh(&ScriptBuf::from_bytes(vec![0x51, n]), Network::Regtest)
}

/// Mines one block on `m`'s channel and waits for its acknowledgement.
async fn mine_block(m: &mut TestMiner) -> BlockHash {
    let ch = m.miner.channel(m.channel);
    let target = network_target(ch.prev.expect("a tip").nbits);
    let share = m.miner.find_share(m.channel, |h| target.is_met_by(h));
    let reply = tokio::time::timeout(Duration::from_secs(10), m.miner.submit(&share))
        .await
        .expect("answered in time")
        .expect("connection up");
    assert!(reply.is_ok(), "{}: {reply:?}", m.ledger_user);
    BlockHash::from_byte_array(share.hash)
}

/// Reads `m`'s messages until its channel's tip is `tip`.
async fn follow_tip(m: &mut TestMiner, tip: BlockHash) {
    let want = tip.to_byte_array();
    let channel = m.channel;
    tokio::time::timeout(Duration::from_secs(10), async {
        while m.miner.channel(channel).prev.map(|p| p.prev_hash) != Some(want) {
            m.miner.recv().await.expect("connection up");
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{} did not get the new tip", m.ledger_user));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn solo_and_donate_blocks_pay_their_address_in_their_own_coinbase() {
    let dir = tempfile::tempdir().unwrap();
    let pool_address = regtest_address(0);
    let (solo_a, solo_b, donor) = (regtest_address(1), regtest_address(2), regtest_address(3));
    let data_dir = dir.path().to_path_buf();
    let pool_script = format!("addr({pool_address})");
    let pool = pool::TestPool::start_with(pool::REGTEST, 10, move |o| {
        o.data_dir = Some(data_dir);
        o.coinbase_reward_script = Some(pool_script);
        // A window far wider than the network's difficulty: every pool block's window reaches
        // back over the solo channels' shares, which it must not count.
        o.pplns_window_multiple = Some(1e9);
    })
    .await;
    let mut miners = Vec::new();
    for (extended, identity, ledger_user) in [
        (true, "alice.rig".to_owned(), "alice".to_owned()),
        (
            true,
            format!("sri/solo/{solo_a}/ext"),
            format!("sri/solo/{solo_a}"),
        ),
        (
            false,
            format!("sri/solo/{solo_b}/std"),
            format!("sri/solo/{solo_b}"),
        ),
        (
            true,
            format!("sri/donate/10/{donor}/w"),
            format!("sri/donate/10/{donor}"),
        ),
    ] {
        let mut miner = Miner::ready(pool.addr, &pool.key, 0).await.unwrap();
        let channel = miner
            .open(extended, &identity)
            .await
            .unwrap_or_else(|e| panic!("{identity}: {e}"));
        miners.push(TestMiner {
            miner,
            channel,
            ledger_user,
        });
    }
    // A pool channel of the same connection as a standard solo channel: the pool's group jobs
    // must not reach the solo channel, and its own jobs not the group.
    miners[2]
        .miner
        .open(false, "bob.std")
        .await
        .expect("a pool standard channel next to a solo one");

    // Rounds: each miner finds a block in turn, every miner follows the new tip.
    let mut found: BTreeMap<BlockHash, String> = BTreeMap::new();
    for _round in 0..3 {
        for i in 0..miners.len() {
            let hash = mine_block(&mut miners[i]).await;
            found.insert(hash, miners[i].ledger_user.clone());
            // The block goes to the node after its file is written: wait for the chain.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while pool.node.tip() != hash {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the chain did not take {hash} of {}",
                    miners[i].ledger_user
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            for m in &mut miners {
                follow_tip(m, hash).await;
            }
        }
    }
    pool.stop().await;

    // Every block, as the pool submitted it, decoded and checked with rust-bitcoin.
    let submitted = dir.path().join("blocks").join("submitted");
    let mut outputs_by_user: BTreeMap<String, u64> = BTreeMap::new();
    for (hash, user) in &found {
        let hex = std::fs::read_to_string(submitted.join(format!("{hash}.hex")))
            .unwrap_or_else(|e| panic!("block file of {hash}: {e}"));
        let block: Block = bitcoin::consensus::encode::deserialize_hex(hex.trim()).unwrap();
        assert_eq!(block.block_hash(), *hash);
        assert!(block.check_merkle_root(), "{hash}: merkle root");
        assert!(
            block.check_witness_commitment(),
            "{hash}: witness commitment"
        );
        let height = block.bip34_block_height().unwrap_or_default() as u32;
        let coinbase = &block.txdata[0];
        let reward =
            EmbeddedChain::subsidy(height) + SYNTHETIC_FEE * (block.txdata.len() as u64 - 1);
        let paid: Vec<(ScriptBuf, u64)> = coinbase
            .output
            .iter()
            .filter(|o| o.value.to_sat() > 0)
            .map(|o| (o.script_pubkey.clone(), o.value.to_sat()))
            .collect();
        let expected: Vec<(ScriptBuf, u64)> = if user == "alice" {
            vec![(pool_address.script_pubkey(), reward)]
        } else if user.starts_with("sri/solo/") {
            let address = if user.ends_with(&solo_a.to_string()) {
                &solo_a
            } else {
                &solo_b
            };
            vec![(address.script_pubkey(), reward)]
        } else {
            // 10% to the pool, rounded down; the rest to the address.
            let to_pool = reward / 10;
            vec![
                (donor.script_pubkey(), reward - to_pool),
                (pool_address.script_pubkey(), to_pool),
            ]
        };
        assert_eq!(paid, expected, "{hash} found by {user}");
        // The witness commitment is the last output, paying nothing.
        assert!(coinbase.output.last().unwrap().script_pubkey.is_op_return());
        *outputs_by_user.entry(user.clone()).or_default() += paid[0].1;
    }
    assert_eq!(outputs_by_user.len(), 4, "every miner found blocks");

    // The ledger: every block recorded and accepted, solo and donate blocks settled as paid
    // in their coinbase, pool blocks over windows without the solo channels' shares, and
    // balances only from the pool's blocks.
    let mut ledger = SqliteLedger::open(dir.path().join("ledger.sqlite3")).unwrap();
    let mut pool_paid: BTreeMap<String, u64> = BTreeMap::new();
    let mut solo_shares_seen = 0;
    for (hash, user) in &found {
        let stored = ledger.block(*hash).unwrap().expect("block recorded");
        assert!(stored.status.was_accepted(), "{hash}: {:?}", stored.status);
        assert_eq!(&stored.block.user, user);
        let c = ledger.payouts(*hash).unwrap().expect("settled");
        let paid: u64 = c.payouts.iter().map(|p| p.amount_sat).sum();
        assert_eq!(paid + c.fee_sat, stored.block.reward_sat, "{c:?}");
        if user == "alice" {
            assert_eq!(c.scheme, "pplns");
            for p in &c.payouts {
                assert!(!p.user.starts_with("sri/"), "{c:?}");
                assert!(
                    ![&solo_a, &solo_b, &donor]
                        .iter()
                        .any(|a| a.to_string() == p.user),
                    "a solo channel in a window: {c:?}"
                );
                *pool_paid.entry(p.user.clone()).or_default() += p.amount_sat;
            }
            let window = ledger
                .shares(&ShareRange::Ids {
                    from_id: c.first_share_id,
                    to_id: c.last_share_id,
                    limit: 100_000,
                })
                .unwrap();
            solo_shares_seen += window
                .iter()
                .filter(|s| s.record.user.starts_with("sri/"))
                .count();
        } else {
            assert_eq!(c.scheme, "coinbase", "{c:?}");
            assert_eq!(c.payouts.len(), 1);
            assert_eq!(c.first_share_id, c.last_share_id);
            let reward = stored.block.reward_sat;
            if user.starts_with("sri/donate/10/") {
                assert_eq!(c.payouts[0].user, donor.to_string());
                assert_eq!(c.fee_sat, reward / 10);
            } else {
                assert_eq!(c.fee_sat, 0);
                assert!(user.ends_with(&c.payouts[0].user), "{c:?}");
            }
        }
    }
    // The pool's windows reached over solo shares (mined in between) without counting them.
    assert!(solo_shares_seen > 0, "solo shares lay inside pool windows");
    eprintln!(
        "{} blocks; {solo_shares_seen} solo shares inside pool windows",
        found.len()
    );
    let balances: BTreeMap<String, u64> = ledger
        .balances()
        .unwrap()
        .into_iter()
        .filter(|b| b.earned_sat > 0)
        .map(|b| (b.user, b.earned_sat))
        .collect();
    assert_eq!(
        balances, pool_paid,
        "balances move only for the pool's blocks"
    );

    // `ledger payouts HASH` explains a block paid in its coinbase.
    let (solo_hash, _) = found
        .iter()
        .find(|(_, u)| u.starts_with("sri/donate/"))
        .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_blvm-stratum-v2"))
        .arg("--data-dir")
        .arg(dir.path())
        .args(["ledger", "payouts", &solo_hash.to_string()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("Scheme coinbase"), "{text}");
    assert!(text.contains("Recorded: equal"), "{text}");
}
