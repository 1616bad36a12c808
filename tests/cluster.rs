//! Several pool instances behind HAProxy on one PostgreSQL ledger (issue 18, item 6), for
//! real on this machine: a throwaway PostgreSQL, the real blvm-node regtest node over JSON-RPC
//! (tools/regtest-node), three pool processes on 127.0.0.1 (distinct ports and server_ids, one
//! authority key file, the PROXY protocol from HAProxy), Debian's HAProxy in TCP mode with
//! health checks in front of them, and the load generator's SV2 connections (`reconnect`)
//! through HAProxy. Then one instance is killed with SIGKILL (a replacement with its
//! server_id is refused while its claim is live), and the other two are restarted one after
//! the other (SIGTERM: drain, exit 0, start again on the same port); the killed one comes back
//! last on its own data directory (its claim taken over, its pending blocks submitted).
//!
//! Checked: after each step the miners are back and their shares accepted (the ledger grows);
//! every share any connection saw acknowledged is in the ledger, none twice; no block is left
//! pending; every block the node accepted has exactly one payout computation, its payouts
//! recomputed from `ledger export --block` alone are the recorded ones, and `ledger balances`
//! is their sum; the node's chain grew by the pool's accepted blocks only; a block the node
//! refused (`not connected`) is paid nothing. On regtest every share is a block, so races are
//! common: an instance hears of the others' blocks at its next poll of the node (50 ms here),
//! and mines on its own block meanwhile; a block whose parent is no longer the node's tip
//! (another instance's block of the same height came first) is kept off its chain
//! (`inconclusive`, as Bitcoin Core answers), so it is accepted, settled, and out of the chain
//! (orphaned once an instance looks). Both are counted and printed, not hidden.

#[path = "common/binary.rs"]
mod binary;
#[path = "common/haproxy.rs"]
mod haproxy;
#[path = "common/postgres.rs"]
mod postgres;
#[path = "common/regtest_node.rs"]
mod regtest_node;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use binary::PoolProcess;
use bitcoin::{BlockHash, CompactTarget, Target};
use blvm_stratum_v2::ledger::export::{ExportFormat, read_shares};
use blvm_stratum_v2::ledger::{BlockStatus, Ledger, PostgresLedger, ShareRange};
use blvm_stratum_v2::loadgen::{self, LoadgenOptions, LoadgenReport};
use blvm_stratum_v2::node::rpc::RpcClient;
use blvm_stratum_v2::payout::pplns::{self, SplitTerms, WindowShare};
use haproxy::{Haproxy, Route, Settings};
use postgres::TempPostgres;
use regtest_node::{RegtestNode, call, free_port};
use serde_json::json;

const INSTANCES: usize = 3;
/// The PPLNS window: on the regtest node every share (difficulty 1e-6) is a block (network
/// difficulty about 4.7e-10), so the default window (twice the network difficulty) would be
/// a part of the finding share alone; this one spans about 20 shares, of every instance.
const WINDOW_MULTIPLE: f64 = 43_000.0;
const FEE_PERCENT: f64 = 1.0;
/// The load: per user, connections at a steady rate (every share is a block here: a few a
/// second keep the node and the settlements busy, not drowned).
const CONNECTIONS_PER_USER: usize = 3;
const SHARES_PER_SEC: f64 = 0.3;
const LOAD: Duration = Duration::from_secs(120);
/// Shares the ledger must gain after each step: the miners are back and accepted.
const PROGRESS: i64 = 10;
const STEP_WITHIN: Duration = Duration::from_secs(30);

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_blvm-stratum-v2"))
}

/// One pool instance's command line.
struct Instance {
    dir: PathBuf,
    port: u16,
    args: Vec<String>,
}

impl Instance {
    fn start(&self) -> PoolProcess {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        PoolProcess::start(&self.dir, &args)
    }
}

fn shares_in(db: &mut ::postgres::Client) -> i64 {
    // A commit's shares are one row of share_packs (schema 5), with their count.
    db.query_one(
        "SELECT COALESCE(SUM(count), 0)::bigint FROM share_packs",
        &[],
    )
    .unwrap()
    .get(0)
}

/// Waits until the ledger holds `by` more shares than `from`: the miners mine and are
/// acknowledged (a share is acknowledged only once committed). On a timeout, the pools' and
/// HAProxy's warnings say why.
fn wait_progress(
    db: &mut ::postgres::Client,
    from: i64,
    by: i64,
    what: &str,
    pools: &[PoolProcess],
    lb: &Haproxy,
) -> i64 {
    let deadline = Instant::now() + STEP_WITHIN;
    loop {
        let now = shares_in(db);
        if now >= from + by {
            return now;
        }
        if Instant::now() > deadline {
            let logs: Vec<String> = pools
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    let log = p.log();
                    let lines: Vec<&str> = log.lines().collect();
                    format!(
                        "instance {}:\n{}",
                        i + 1,
                        lines[lines.len().saturating_sub(40)..].join("\n")
                    )
                })
                .collect();
            panic!(
                "{what}: the ledger went from {from} to {now} shares in {STEP_WITHIN:?}; \
                 HAProxy: {:?}\n{}",
                lb.servers_up(),
                logs.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn run_load(url: String, key: String, user: &str) -> std::thread::JoinHandle<LoadgenReport> {
    let user = user.to_owned();
    std::thread::spawn(move || {
        loadgen::run(LoadgenOptions {
            url,
            authority_pubkey: key,
            connections: CONNECTIONS_PER_USER,
            rate: SHARES_PER_SEC,
            window: 1,
            duration: LOAD,
            hold: Duration::from_millis(200),
            grace: Duration::from_secs(5),
            setup_timeout: Duration::from_secs(30),
            threads: 1,
            user,
            reconnect: true,
            ..LoadgenOptions::default()
        })
        .expect("the load generator ran")
    })
}

/// A block's payouts from its exported window alone (the README's five steps): the shares
/// up to the block's own, newest first, filling `WINDOW_MULTIPLE` x its network difficulty.
fn recompute(
    export: &Path,
    block: BlockHash,
    reward_sat: u64,
    bits: CompactTarget,
) -> (u64, BTreeMap<String, u64>) {
    let shares = read_shares(std::fs::File::open(export).unwrap(), ExportFormat::Csv).unwrap();
    let finding = shares
        .iter()
        .find(|s| s.record.hash == block)
        .unwrap_or_else(|| panic!("block {block}'s share is in its export"));
    let terms = SplitTerms {
        window_difficulty: Target::from_compact(bits).difficulty_float() * WINDOW_MULTIPLE,
        reward_sat,
        fee_ppm: pplns::fee_ppm(FEE_PERCENT),
    };
    let split = pplns::split(
        shares
            .iter()
            .filter(|s| s.id <= finding.id)
            .map(WindowShare::from),
        &terms,
    )
    .unwrap();
    (
        split.fee_sat,
        split
            .users
            .into_iter()
            .map(|u| (u.user, u.amount_sat))
            .collect(),
    )
}

#[test]
fn three_instances_behind_haproxy_survive_a_kill_and_a_rolling_restart() {
    let started = Instant::now();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let pg = TempPostgres::start();
    let url = pg.fresh_database();
    let node = runtime.block_on(RegtestNode::start(Some(("pool", "cluster-secret"))));
    let rpc = RpcClient::new(node.rpc_config());
    let height_before = runtime
        .block_on(call(&rpc, "getblockcount", json!([])))
        .as_u64()
        .unwrap();

    // One authority key for every instance, as `keygen` writes it.
    let shared = tempfile::tempdir().unwrap();
    let key_file = shared.path().join("authority_secret_key");
    let keypair = blvm_stratum_v2::noise::keys::generate_authority_keypair(&mut rand::thread_rng());
    blvm_stratum_v2::noise::keys::write_secret_key_file(&key_file, &keypair).unwrap();
    let key = blvm_stratum_v2::noise::keys::encode_public_key(&keypair.x_only_public_key().0);

    let dirs: Vec<tempfile::TempDir> = (0..INSTANCES)
        .map(|_| tempfile::tempdir().unwrap())
        .collect();
    let args = |server_id: usize, port: u16| -> Vec<String> {
        [
            "--listen-addr",
            &format!("127.0.0.1:{port}"),
            "--sv1-listen-addr",
            "off",
            "--http-enabled",
            "false",
            "--server-id",
            &server_id.to_string(),
            "--instance-heartbeat-secs",
            "1",
            "--ledger-url",
            &url,
            "--authority-key-path",
            &key_file.display().to_string(),
            "--proxy-protocol-from",
            "127.0.0.1/32",
            "--backend",
            "rpc",
            "--rpc-url",
            &node.url(),
            "--rpc-user",
            "pool",
            "--rpc-password",
            "cluster-secret",
            "--rpc-poll-interval-ms",
            "50",
            "--min-difficulty",
            "1e-6",
            "--max-difficulty",
            "1e-6",
            "--pplns-window-multiple",
            &WINDOW_MULTIPLE.to_string(),
            "--pool-fee-percent",
            &FEE_PERCENT.to_string(),
        ]
        .map(String::from)
        .to_vec()
    };
    let instances: Vec<Instance> = dirs
        .iter()
        .enumerate()
        .map(|(i, dir)| {
            let port = free_port();
            Instance {
                dir: dir.path().to_path_buf(),
                port,
                args: args(i + 1, port),
            }
        })
        .collect();
    let mut pools: Vec<PoolProcess> = instances.iter().map(Instance::start).collect();
    for pool in &pools {
        assert_eq!(pool.key, key, "one key file, one public key");
    }
    let servers: Vec<std::net::SocketAddr> = instances
        .iter()
        .map(|i| ([127, 0, 0, 1], i.port).into())
        .collect();
    let lb = Haproxy::start_with(
        &[Route::new("sv2", &servers)],
        &Settings {
            balance: "roundrobin",
            ..Settings::default()
        },
    );
    let front = lb.frontend("sv2").to_string();
    let mut db = ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();

    let loads = [
        run_load(front.clone(), key.clone(), "alice"),
        run_load(front.clone(), key.clone(), "bob"),
    ];
    let mut count = wait_progress(&mut db, 0, 2 * PROGRESS, "warm-up", &pools, &lb);
    let mut steps = vec![format!(
        "warm-up: {count} shares in the ledger at {:?}",
        started.elapsed()
    )];
    eprintln!("{}", steps.last().unwrap());

    // Step 1: SIGKILL of instance 1 (server_id 1). Its claim is still live: a replacement
    // with its server_id elsewhere is refused, naming it.
    pools[0].signal(libc::SIGKILL);
    pools[0].wait_exit(Duration::from_secs(10));
    let at_kill = shares_in(&mut db);
    let elsewhere = tempfile::tempdir().unwrap();
    let refused = bin()
        .arg("--data-dir")
        .arg(elsewhere.path())
        .args(args(1, free_port()))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success(),
        "a held server_id started: {stderr}"
    );
    assert!(
        stderr.contains("server_id 1 is held by a live instance")
            && stderr.contains(&format!("127.0.0.1:{}", instances[0].port)),
        "{stderr}"
    );
    lb.wait_server("sv20", false, Duration::from_secs(10));
    count = wait_progress(&mut db, at_kill, PROGRESS, "after the SIGKILL", &pools, &lb);
    steps.push(format!(
        "SIGKILL of instance 1 at {at_kill} shares; a replacement with server_id 1 refused; \
         {count} shares at {:?}",
        started.elapsed()
    ));
    eprintln!("{}", steps.last().unwrap());

    // Step 2: a rolling restart of instances 2 and 3: SIGTERM (drain, exit 0), start again
    // on the same port and data directory, back in HAProxy, shares accepted.
    for i in 1..INSTANCES {
        pools[i].signal(libc::SIGTERM);
        let status = pools[i].wait_exit(Duration::from_secs(30));
        assert!(status.success(), "instance {} exited {status:?}", i + 1);
        let at_stop = shares_in(&mut db);
        pools[i] = instances[i].start();
        lb.wait_server(&format!("sv2{i}"), true, Duration::from_secs(15));
        count = wait_progress(&mut db, at_stop, PROGRESS, "after a restart", &pools, &lb);
        steps.push(format!(
            "instance {} drained (exit 0) at {at_stop} shares and restarted; {count} shares at \
             {:?}",
            i + 1,
            started.elapsed()
        ));
        eprintln!("{}", steps.last().unwrap());
    }

    // The killed instance comes back on its own data directory: the same instance, its claim
    // taken over at once, its pending blocks submitted.
    let at_back = shares_in(&mut db);
    pools[0] = instances[0].start();
    lb.wait_server("sv20", true, Duration::from_secs(15));
    count = wait_progress(
        &mut db,
        at_back,
        PROGRESS,
        "after the killed one came back",
        &pools,
        &lb,
    );
    steps.push(format!(
        "instance 1 back at {at_back} shares; {count} shares"
    ));

    let reports: [LoadgenReport; 2] = loads.map(|l| l.join().expect("load generator"));
    for pool in &mut pools {
        pool.signal(libc::SIGTERM);
    }
    for (i, pool) in pools.iter_mut().enumerate() {
        let status = pool.wait_exit(Duration::from_secs(30));
        assert!(status.success(), "instance {} exited {status:?}", i + 1);
    }
    drop(lb);

    // Every acknowledged share is in the ledger, and no share is in it twice.
    let mut ledger = PostgresLedger::connect(&url).unwrap();
    let all = ledger.shares(&ShareRange::ALL).unwrap();
    assert_eq!(all.len() as i64, shares_in(&mut db), "every pack read back");
    let mut stored: HashMap<String, i64> = HashMap::new();
    for s in &all {
        *stored
            .entry(format!("{}.{}", s.record.user, s.record.worker))
            .or_default() += 1;
    }
    let distinct: std::collections::HashSet<BlockHash> =
        all.iter().map(|s| s.record.hash).collect();
    assert_eq!(all.len(), distinct.len(), "a share stored twice");
    let mut acked_total = 0;
    let mut reconnects = 0;
    for report in &reports {
        reconnects += report.reconnects;
        assert_eq!(report.acked_by_channel.len(), CONNECTIONS_PER_USER);
        for (identity, acked) in &report.acked_by_channel {
            let in_ledger = stored.get(identity).copied().unwrap_or(0) as u64;
            assert!(*acked > 0, "{identity} was acknowledged shares");
            assert!(
                in_ledger >= *acked,
                "{identity}: {acked} acknowledged, {in_ledger} in the ledger"
            );
            acked_total += acked;
        }
    }
    assert!(
        reconnects >= 2,
        "the miners of the killed and drained instances reconnected: {reconnects}"
    );

    // Every block in the ledger: accepted by the node, in its chain, paid exactly once, its
    // payouts recomputed from its export alone.
    let blocks = ledger.blocks(100_000).unwrap();
    assert!(!blocks.is_empty(), "blocks were found");
    let computations: i64 = db
        .query_one("SELECT count(*) FROM payout_computations", &[])
        .unwrap()
        .get(0);
    let exports = tempfile::tempdir().unwrap();
    let mut earned: BTreeMap<String, u64> = BTreeMap::new();
    let mut statuses: BTreeMap<String, usize> = BTreeMap::new();
    for b in &blocks {
        *statuses.entry(format!("{:?}", b.status)).or_default() += 1;
    }
    let mut lost_races = 0;
    let mut reorganised_out = 0;
    for b in &blocks {
        let hash = b.block.hash;
        match &b.status {
            // Accepted: in the node's chain now, or kept off it (its parent was no longer the
            // tip: another instance's block of its height came first; `orphaned` once an
            // instance saw it); computed once either way, and an orphaned block's payouts
            // count in no balance.
            BlockStatus::Accepted | BlockStatus::Mature | BlockStatus::Orphaned => {
                let at_height =
                    runtime.block_on(call(&rpc, "getblockhash", json!([b.block.height])));
                if at_height.as_str() != Some(hash.to_string().as_str()) {
                    reorganised_out += 1;
                }
            }
            // Built on a block the node kept off its chain (an instance mines on its own
            // block until its next poll of the node), which the node does not store: its
            // parent is unknown there (Bitcoin Core's `prev-blk-not-found`); or not
            // connected. The node keeps another, one of ours (checked below: the chain grew
            // by the pool's accepted blocks only); this one is paid nothing.
            BlockStatus::Rejected(reason) => {
                assert!(
                    reason.contains("not connected") || reason.contains("not a stored header"),
                    "block {hash}: {reason}"
                );
                assert!(ledger.payouts(hash).unwrap().is_none(), "{hash} paid");
                lost_races += 1;
                continue;
            }
            BlockStatus::Pending => panic!("block {hash} still pending: {statuses:?}"),
        }
        let c = ledger
            .payouts(hash)
            .unwrap()
            .unwrap_or_else(|| panic!("block {hash} was paid"));
        let path = exports.path().join(format!("{hash}.csv"));
        let out = bin()
            .args(["--ledger-url", &url])
            .args(["ledger", "export", "--block", &hash.to_string(), "--out"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (fee, payouts) = recompute(&path, hash, b.block.reward_sat, b.block.bits);
        let recorded: BTreeMap<String, u64> = c
            .payouts
            .iter()
            .map(|p| (p.user.clone(), p.amount_sat))
            .collect();
        assert_eq!((fee, &payouts), (c.fee_sat, &recorded), "block {hash}");
        if b.status != BlockStatus::Orphaned {
            for (user, sat) in payouts {
                *earned.entry(user).or_default() += sat;
            }
        }
    }
    let accepted = blocks.len() - lost_races;
    assert!(accepted > 0, "{statuses:?}");
    assert_eq!(
        computations as usize, accepted,
        "one computation per accepted block"
    );
    let out = bin()
        .args(["--ledger-url", &url, "ledger", "balances"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let balances: BTreeMap<String, u64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with("total"))
        .map(|l| {
            let mut cols = l.split('\t');
            (
                cols.next().unwrap().to_owned(),
                cols.next().unwrap().parse().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        balances, earned,
        "ledger balances is the sum of the recomputed payouts"
    );
    assert!(
        balances.contains_key("alice") && balances.contains_key("bob"),
        "{balances:?}"
    );
    let height_after = runtime
        .block_on(call(&rpc, "getblockcount", json!([])))
        .as_u64()
        .unwrap();
    assert_eq!(
        height_after - height_before,
        (accepted - reorganised_out) as u64,
        "the node's chain grew by the pool's accepted blocks"
    );
    for height in height_before + 1..=height_after {
        let hash: BlockHash = runtime
            .block_on(call(&rpc, "getblockhash", json!([height])))
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            blocks.iter().any(|b| b.block.hash == hash
                && matches!(b.status, BlockStatus::Accepted | BlockStatus::Mature)),
            "the node's block {hash} at {height} is an accepted block of the pool"
        );
    }
    // Every instance released its claim at its clean stop.
    assert!(ledger.instances().unwrap().is_empty());
    eprintln!(
        "cluster: {} in {:?}; {acked_total} shares acknowledged, {} in the ledger, {reconnects} \
         reconnects, {} blocks found: {accepted} accepted and paid once ({reorganised_out} \
         of them out of the node's chain: another instance's block of the same height \
         first), {lost_races} refused (built on such a block, or not connected)",
        steps.join("; "),
        started.elapsed(),
        stored.values().sum::<i64>(),
        blocks.len()
    );
}
