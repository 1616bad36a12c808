//! Module mode against a real blvm-node regtest node (tools/regtest-node in module host mode):
//! the node itself starts our binary from a modules directory (module.toml + the binary, as the
//! README says to install it), hands it its `[modules.blvm-stratum-v2]` keys as
//! MODULE_CONFIG_*, and the pool takes templates and submits blocks over the node's IPC socket.
//!
//! - our CPU miner mines through the pool; the node accepts the blocks (getblockcount grows by
//!   as many as the pool submitted, its best block is one of ours);
//! - blocks mined elsewhere (`generatetoaddress`) reach every channel as a future job and
//!   SetNewPrevHash, through the node's BlockMined event; the delays are printed
//!   (`cargo test --test node_module -- --nocapture`).
//!
//! blvm-node 0.1.83 serves its module socket one connection at a time, so no spawned module
//! gets a working session from a stock node; tools/regtest-node builds the node with the
//! one-function fix in tools/regtest-node/patches/ (see tools/regtest-node/MODULES.md).

#[path = "common/regtest_node.rs"]
mod regtest_node;
#[path = "common/sri_client.rs"]
mod sri_client;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bitcoin::BlockHash;
use bitcoin::hashes::Hash;
use blvm_stratum_v2::client::{ChannelKind, MinerOptions, StopReason, run_miner};
use blvm_stratum_v2::node::rpc::RpcClient;
use parsers_sv2::{AnyMessageOwned, MiningOwned};
use regtest_node::{REGTEST_ADDRESS, RegtestNode, best_hash, block_count, call};
use serde_json::json;
use sri_client::Miner;

/// The modules directory the node loads from: `<dir>/blvm-stratum-v2/{module.toml, binary}`.
fn modules_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let module = dir.path().join("blvm-stratum-v2");
    std::fs::create_dir_all(&module).expect("module dir");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::copy(root.join("module.toml"), module.join("module.toml")).expect("module.toml");
    // A copy, not a link: the node refuses a binary whose real path is outside its modules dir.
    std::fs::copy(
        env!("CARGO_BIN_EXE_blvm-stratum-v2"),
        module.join("blvm-stratum-v2"),
    )
    .expect("binary");
    dir
}

/// Waits for the module's log (its stdout and stderr, in its data dir; appended to by every
/// instance) to say where instance number `instance` (1, 2 ...) listens and under which key.
async fn pool_started(log: &Path, node: &RegtestNode, instance: usize) -> (SocketAddr, String) {
    let started = Instant::now();
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let addr = text
            .lines()
            .filter_map(|l| l.split("listening on ").nth(1))
            .nth(instance - 1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|a| a.parse().ok());
        let key = text
            .lines()
            .find_map(|l| l.strip_prefix("authority public key: "))
            .map(str::to_owned);
        if let (Some(addr), Some(key)) = (addr, key)
            && text.matches("connected to blvm-node").count() >= instance
        {
            return (addr, key);
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the module did not start within 60 s\nmodule log:\n{text}\nnode log:\n{}",
            node.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn hashes_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| {
                    e.file_name()
                        .to_str()
                        .and_then(|n| n.strip_suffix(".hex"))
                        .map(str::to_owned)
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_runs_the_pool_as_its_module_and_accepts_its_blocks() {
    tokio::time::timeout(Duration::from_secs(45 * 60), module_mode(false))
        .await
        .expect("test finished in time");
}

/// With the node's JSON-RPC also configured in the module's section (blocks the socket does
/// not take go to `submitblock`; a stock blvm-node 0.1.83's IPC SubmitBlock cannot connect
/// blocks).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn module_mode_with_json_rpc_for_blocks() {
    tokio::time::timeout(Duration::from_secs(45 * 60), module_mode(true))
        .await
        .expect("test finished in time");
}

async fn module_mode(with_rpc: bool) {
    let modules = modules_dir();
    let mut args: Vec<std::ffi::OsString> = vec!["--modules-dir".into(), modules.path().into()];
    let mut config = vec![
        // An ephemeral port (read back from the log), on 127.0.0.1: the default is 0.0.0.0:3333.
        "listen_addr=127.0.0.1:0".to_owned(),
        "enabled=true".to_owned(),
        "pool_signature=/module-test/".to_owned(),
    ];
    if with_rpc {
        config.extend([
            "rpc_url=http://127.0.0.1:{rpc_port}".to_owned(),
            "rpc_user=pool".to_owned(),
            "rpc_password=s3cret".to_owned(),
        ]);
    }
    for kv in config {
        args.push("--module-config".into());
        args.push(kv.into());
    }
    let node = RegtestNode::start_with_args(Some(("pool", "s3cret")), args).await;
    let data: PathBuf = node.datadir.path().join("modules/data/blvm-stratum-v2");
    let (addr, key) = pool_started(&data.join("blvm-stratum-v2.log"), &node, 1).await;
    assert!(
        addr.ip().is_loopback(),
        "listen_addr came from MODULE_CONFIG_LISTEN_ADDR: {addr}"
    );
    let rpc = RpcClient::new(node.rpc_config());
    let height_before = block_count(&rpc).await;

    // 1. Our miner mines through the module; the node accepts the blocks.
    let opts = MinerOptions {
        url: addr.to_string(),
        authority_pubkey: key.clone(),
        threads: 1,
        channel: ChannelKind::Extended,
        user: "module-miner".into(),
        nominal_hash_rate: 0.0,
        max_shares: Some(10),
        duration: Some(Duration::from_secs(90)),
        ..MinerOptions::default()
    };
    let report = tokio::time::timeout(
        Duration::from_secs(150),
        run_miner(opts, std::future::pending::<()>()),
    )
    .await
    .expect("miner finished in time")
    .expect("miner ran");
    eprintln!("miner: {report:?}");
    assert_eq!(report.stop, StopReason::MaxShares, "{report:?}");
    // Let the submitter finish.
    let submitted = {
        let started = Instant::now();
        loop {
            let pending = hashes_in(&data.join("blocks/pending"));
            if pending.is_empty() || started.elapsed() > Duration::from_secs(20) {
                break hashes_in(&data.join("blocks/submitted"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let rejected = hashes_in(&data.join("blocks/rejected"));
    let height = block_count(&rpc).await;
    let best = best_hash(&rpc).await;
    eprintln!(
        "node: height {height_before} -> {height}, best {best}; the pool submitted {} blocks, {} \
         refused",
        submitted.len(),
        rejected.len()
    );
    assert!(
        rejected.is_empty(),
        "the node refused {rejected:?}; the node's log says:\n{}\nthe pool's log says:\n{}",
        node.log()
            .lines()
            .filter(|l| {
                let l = l.to_ascii_lowercase();
                l.contains("warn")
                    || l.contains("error")
                    || l.contains("invalid")
                    || l.contains("reject")
            })
            .take(40)
            .collect::<Vec<_>>()
            .join("\n"),
        std::fs::read_to_string(data.join("blvm-stratum-v2.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR") || l.contains("reject"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(!submitted.is_empty(), "no block found in 10 shares");
    assert_eq!(height - height_before, submitted.len() as u64);
    assert!(
        submitted.contains(&best),
        "best {best} not one of {submitted:?}"
    );

    // 2. Blocks mined elsewhere reach every channel through the node's events.
    let mut miners = Vec::new();
    for (i, extended) in [true, false, true, false].into_iter().enumerate() {
        let flags = if extended {
            0
        } else {
            sri_client::REQUIRES_STANDARD_JOBS
        };
        let mut m = Miner::ready(addr, &key, flags).await.expect("setup");
        m.open(extended, &format!("watch.{i}"))
            .await
            .expect("channel");
        miners.push(m);
    }
    // When the node first reports each tip: an observer asking getbestblockhash every
    // millisecond on its own connection (generatetoaddress answers well after the block is in).
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
    let observer_client = RpcClient::new(node.rpc_config());
    let observer = tokio::spawn(async move {
        let mut last = String::new();
        loop {
            if let Ok(serde_json::Value::String(tip)) =
                observer_client.call("getbestblockhash", json!([])).await
                && tip != last
            {
                last = tip.clone();
                if seen_tx.send((tip, Instant::now())).is_err() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
    let mut delays = Vec::new();
    for round in 0..10 {
        while seen.try_recv().is_ok() {}
        let mined = call(&rpc, "generatetoaddress", json!([1, REGTEST_ADDRESS])).await;
        let tip: BlockHash = mined[0]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("generatetoaddress gave {mined}"));
        let want = tip.to_byte_array();
        let mut last_arrival = None;
        for (i, m) in miners.iter_mut().enumerate() {
            let mut future = std::collections::HashSet::new();
            loop {
                let msg = tokio::time::timeout(Duration::from_secs(10), m.recv())
                    .await
                    .unwrap_or_else(|_| panic!("round {round}: client {i} got no new tip in 10 s"))
                    .expect("client connected");
                match msg {
                    AnyMessageOwned::Mining(MiningOwned::NewExtendedMiningJob(j))
                        if j.is_future() =>
                    {
                        future.insert(j.job_id);
                    }
                    AnyMessageOwned::Mining(MiningOwned::NewMiningJob(j)) if j.is_future() => {
                        future.insert(j.job_id);
                    }
                    AnyMessageOwned::Mining(MiningOwned::SetNewPrevHash(p))
                        if p.prev_hash.to_array() == want =>
                    {
                        assert!(
                            future.contains(&p.job_id),
                            "round {round}: SetNewPrevHash without its future job first"
                        );
                        // The client task reads as messages come; this is when it got it.
                        let at = Instant::now();
                        last_arrival = Some(last_arrival.map_or(at, |l: Instant| l.max(at)));
                        break;
                    }
                    _ => {}
                }
            }
        }
        let accepted = loop {
            let (hash, at) = tokio::time::timeout(Duration::from_secs(5), seen.recv())
                .await
                .expect("the observer sees the tip")
                .expect("observer alive");
            if hash == tip.to_string() {
                break at;
            }
        };
        let last = last_arrival.expect("four channels");
        delays.push(last.saturating_duration_since(accepted));
    }
    observer.abort();
    delays.sort();
    eprintln!(
        "module mode: node reports a tip mined elsewhere -> future job + SetNewPrevHash on all 4 \
         channels: median {:?}, max {:?} over {} rounds",
        delays[delays.len() / 2],
        delays[delays.len() - 1],
        delays.len()
    );
    assert_eq!(best_hash(&rpc).await, tip_hex(&rpc).await);

    // 3. What the pool publishes reaches the node's other subscribers (checked after the
    // mining above, on the work the next tip brings and on shares of a fresh miner).
    let mut watcher =
        Watcher::connect(&node.datadir.path().join("modules/sockets/node.sock")).await;
    call(&rpc, "generatetoaddress", json!([1, REGTEST_ADDRESS])).await;
    let opts = MinerOptions {
        url: addr.to_string(),
        authority_pubkey: key.clone(),
        threads: 1,
        channel: ChannelKind::Standard,
        user: "module-watcher".into(),
        nominal_hash_rate: 0.0,
        max_shares: Some(3),
        duration: Some(Duration::from_secs(60)),
        ..MinerOptions::default()
    };
    run_miner(opts, std::future::pending::<()>())
        .await
        .expect("second miner ran");
    let (jobs, shares) = watcher.count_until(1, 3, Duration::from_secs(10)).await;
    eprintln!("a second subscriber got {jobs} MiningJobCreated and {shares} ShareSubmitted events");
    assert!(
        jobs >= 1,
        "no MiningJobCreated reached the node's subscribers"
    );
    assert!(
        shares >= 3,
        "{shares} ShareSubmitted for 3 accepted shares\n{}",
        diagnostics(&node, &data)
    );

    // 4. The module follows its blocks in the node's chain over the socket (GetChainInfo,
    // GetBlockByHeight; issue 15): its newest block taken out of the best chain
    // (`invalidateblock`, then blocks on its parent) is `orphaned` in its ledger.
    let ours = hashes_in(&data.join("blocks/submitted"));
    let mut newest: Option<(u64, String)> = None;
    for h in 1..=block_count(&rpc).await {
        let hash = regtest_node::hash_at(&rpc, h).await;
        if ours.contains(&hash) {
            newest = Some((h, hash));
        }
    }
    let (height, gone) = newest.expect("a block of the pool in the chain");
    call(&rpc, "invalidateblock", json!([gone])).await;
    call(&rpc, "generatetoaddress", json!([3, REGTEST_ADDRESS])).await;
    assert_ne!(regtest_node::hash_at(&rpc, height).await, gone);
    let gone: BlockHash = gone.parse().unwrap();
    let started = Instant::now();
    loop {
        use blvm_stratum_v2::ledger::{BlockStatus, Ledger, SqliteLedger};
        let status = SqliteLedger::open(data.join("ledger.sqlite3"))
            .unwrap()
            .block(gone)
            .unwrap()
            .map(|b| b.status);
        if status == Some(BlockStatus::Orphaned) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{gone} (height {height}) not orphaned in the module's ledger: {status:?}\n{}",
            diagnostics(&node, &data)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("the module's block {gone} at {height}, reorganised out, is orphaned in its ledger");

    // The module kept under the node's request limit (past it, blvm-node closes the module's
    // connection and what was in flight on it is lost).
    assert!(
        !node.log().contains("Rate limit exceeded"),
        "the node rate-limited the module\n{}",
        diagnostics(&node, &data)
    );
}

/// What the node and the module logged, for a failure message: the node's warnings and errors
/// and the module's last lines.
fn diagnostics(node: &RegtestNode, data: &Path) -> String {
    let node_lines: Vec<String> = node
        .log()
        .lines()
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            ["warn", "error", "invalid", "reject", "dropped", "rate"]
                .iter()
                .any(|w| l.contains(w))
        })
        .map(str::to_owned)
        .collect();
    let module = std::fs::read_to_string(data.join("blvm-stratum-v2.log")).unwrap_or_default();
    let module_lines: Vec<&str> = module.lines().collect();
    format!(
        "the node's log (warnings, errors):\n{}\nthe module's log (last 80 lines):\n{}",
        node_lines[node_lines.len().saturating_sub(40)..].join("\n"),
        module_lines[module_lines.len().saturating_sub(80)..].join("\n")
    )
}

/// The node frozen (SIGSTOP) while our miner mines: the block in flight cannot be submitted and
/// waits in the module's `blocks/pending`. The node is then killed (SIGKILL, its modules are not
/// stopped): the module notices its node is gone and stops by itself, freeing its port. The node
/// starts again on the same chain, starts a new instance of the module, and that one submits
/// the waiting block: no found block is lost, and mining resumes on the node's tip.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_mining_loses_no_block_of_its_module() {
    tokio::time::timeout(Duration::from_secs(45 * 60), node_killed())
        .await
        .expect("test finished in time");
}

async fn node_killed() {
    let modules = modules_dir();
    let args: Vec<std::ffi::OsString> = vec![
        "--modules-dir".into(),
        modules.path().into(),
        "--module-config".into(),
        "listen_addr=127.0.0.1:0".into(),
    ];
    let mut node = RegtestNode::start_with_args(None, args).await;
    let data: PathBuf = node.datadir.path().join("modules/data/blvm-stratum-v2");
    let log = data.join("blvm-stratum-v2.log");
    let (addr, key) = pool_started(&log, &node, 1).await;
    let rpc = RpcClient::new(node.rpc_config());

    let miner = |user: &'static str| MinerOptions {
        url: addr.to_string(),
        authority_pubkey: key.clone(),
        threads: 1,
        channel: ChannelKind::Extended,
        user: user.into(),
        nominal_hash_rate: 0.0,
        max_shares: None,
        duration: Some(Duration::from_secs(60)),
        ..MinerOptions::default()
    };
    let mining = tokio::spawn(run_miner(miner("before"), std::future::pending::<()>()));
    // Mining goes on: some blocks accepted.
    let started = Instant::now();
    while block_count(&rpc).await < 3 {
        assert!(started.elapsed() < Duration::from_secs(60), "no blocks");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Freeze the node: the next block found cannot be submitted.
    let height_frozen = block_count(&rpc).await;
    let pid = node.pid().expect("node runs") as libc::pid_t;
    // SAFETY: kill(2) on our own child's pid, with a valid signal number.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    let frozen_at = Instant::now();
    let pending = loop {
        // Still pending half a second later: stuck at the frozen node (a block found just
        // before the freeze may have been taken in the meantime).
        let p = hashes_in(&data.join("blocks/pending"));
        tokio::time::sleep(Duration::from_millis(500)).await;
        let still: Vec<String> = hashes_in(&data.join("blocks/pending"))
            .into_iter()
            .filter(|h| p.contains(h))
            .collect();
        if !still.is_empty() {
            break still;
        }
        assert!(
            frozen_at.elapsed() < Duration::from_secs(30),
            "no block found while the node was frozen"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    eprintln!("found while the node was frozen: {pending:?}");
    node.stop(regtest_node::Stop::Kill).await;
    // The module stops by itself, and its miner is let go.
    let started = Instant::now();
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("is gone; stopping") && text.contains("stopped") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the module did not stop after its node was killed:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let report = mining.await.expect("miner task");
    eprintln!("miner before the kill: {report:?}");
    assert_eq!(
        hashes_in(&data.join("blocks/pending")),
        pending,
        "the waiting block is still on disk"
    );

    // The node again, on the same chain: a new instance of the module submits the block.
    node.restart().await;
    let started = Instant::now();
    loop {
        let left = hashes_in(&data.join("blocks/pending"));
        if left.is_empty() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "still pending after the restart: {left:?}\nmodule log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for hash in &pending {
        assert!(
            hashes_in(&data.join("blocks/submitted")).contains(hash),
            "{hash} not accepted: rejected {:?}",
            hashes_in(&data.join("blocks/rejected"))
        );
    }
    // In the chain (the node may connect a block a moment after it said yes), or stale: a
    // sibling of a block of ours the node had taken just before it froze. (The pool had no
    // template on that block yet, and after 10 s it takes shares on the solved tip again
    // rather than leave its miners idle through an outage; the node accepts a stale
    // sibling, off its chain: "inconclusive", tools/regtest-node's patch, fix 7.)
    let parent_of = |hash: &str| -> BlockHash {
        let hex =
            std::fs::read_to_string(data.join("blocks/submitted").join(format!("{hash}.hex")))
                .expect("block file");
        let block: bitcoin::Block =
            bitcoin::consensus::encode::deserialize_hex(hex.trim()).expect("a block");
        block.header.prev_blockhash
    };
    let started = Instant::now();
    let (height, chain) = loop {
        let height = block_count(&rpc).await;
        let mut chain = Vec::new();
        for h in 1..=height {
            chain.push(regtest_node::hash_at(&rpc, h).await);
        }
        let ours: Vec<&String> = chain
            .iter()
            .filter(|h| hashes_in(&data.join("blocks/submitted")).contains(h))
            .collect();
        let settled = pending.iter().all(|p| {
            chain.contains(p) || {
                let stale = ours.iter().any(|o| *o != p && parent_of(o) == parent_of(p));
                if stale {
                    eprintln!("{p}: stale, a sibling of our block in the chain");
                }
                stale
            }
        });
        if settled {
            break (height, chain);
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{pending:?} not in the node's chain (height {height}, {height_frozen} at the \
             freeze): {chain:?}; submitted {:?}",
            hashes_in(&data.join("blocks/submitted"))
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let _ = chain;
    eprintln!(
        "after the restart: height {height} (at the freeze: {height_frozen}), the waiting block \
         is settled"
    );

    // Mining resumes on the node's tip through the new instance.
    let (addr2, key2) = pool_started(&log, &node, 2).await;
    assert_eq!(key2, key, "the same authority key (in DATA_DIR)");
    let opts = MinerOptions {
        url: addr2.to_string(),
        authority_pubkey: key2,
        max_shares: Some(4),
        ..miner("after")
    };
    let report = tokio::time::timeout(
        Duration::from_secs(120),
        run_miner(opts, std::future::pending::<()>()),
    )
    .await
    .expect("miner finished in time")
    .expect("miner ran");
    assert_eq!(report.stop, StopReason::MaxShares, "{report:?}");
    // Its last block may still be on its way to the node.
    let started = Instant::now();
    while !hashes_in(&data.join("blocks/pending")).is_empty()
        && started.elapsed() < Duration::from_secs(20)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after = block_count(&rpc).await;
    assert!(
        after > height,
        "mining resumed: {height} -> {after}; {report:?}; pending {:?}, submitted {:?}\n{}",
        hashes_in(&data.join("blocks/pending")),
        hashes_in(&data.join("blocks/submitted")),
        diagnostics(&node, &data)
    );
    let best = best_hash(&rpc).await;
    assert!(
        hashes_in(&data.join("blocks/submitted")).contains(&best),
        "the tip {best} is the pool's"
    );
}

async fn tip_hex(rpc: &RpcClient) -> String {
    let h = block_count(rpc).await;
    regtest_node::hash_at(rpc, h).await
}

/// Another connection to the node's module socket, subscribed to what a pool module publishes:
/// MiningJobCreated (EventPayload variant 15) and ShareSubmitted (16).
struct Watcher {
    stream: tokio::net::UnixStream,
}

impl Watcher {
    async fn connect(socket: &Path) -> Watcher {
        use blvm_stratum_v2::node::module::protocol::{EventType, Request, encode_request};
        let stream = tokio::net::UnixStream::connect(socket)
            .await
            .expect("node socket");
        let mut w = Watcher { stream };
        w.send(&encode_request(
            1,
            &Request::Handshake {
                module_id: "watcher".into(),
                module_name: "watcher".into(),
                version: "0".into(),
            },
        ))
        .await;
        w.send(&encode_request(
            2,
            &Request::SubscribeEvents(vec![EventType::MiningJobCreated, EventType::ShareSubmitted]),
        ))
        .await;
        // Subscribed once the node says so.
        loop {
            use blvm_stratum_v2::node::module::protocol::{Incoming, decode_incoming};
            match decode_incoming(&w.read().await) {
                Ok(Incoming::Response {
                    correlation_id: 2, ..
                }) => break,
                _ => continue,
            }
        }
        w
    }

    async fn read(&mut self) -> Vec<u8> {
        use tokio::io::AsyncReadExt;
        let mut len = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(10), self.stream.read_exact(&mut len))
            .await
            .expect("the node answers")
            .expect("read");
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
        self.stream.read_exact(&mut body).await.expect("frame");
        body
    }

    async fn send(&mut self, body: &[u8]) {
        use tokio::io::AsyncWriteExt;
        let mut frame = (body.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(body);
        self.stream.write_all(&frame).await.expect("write");
    }

    /// Counts (jobs, shares) until at least `jobs` and `shares` came or `within` passed.
    async fn count_until(
        &mut self,
        jobs: usize,
        shares: usize,
        within: Duration,
    ) -> (usize, usize) {
        use blvm_stratum_v2::node::module::protocol::{Incoming, NodeEventMsg, decode_incoming};
        use tokio::io::AsyncReadExt;
        let (mut j, mut s) = (0, 0);
        let deadline = tokio::time::Instant::now() + within;
        while j < jobs || s < shares {
            let mut len = [0u8; 4];
            let read = tokio::time::timeout_at(deadline, self.stream.read_exact(&mut len)).await;
            if !matches!(read, Ok(Ok(_))) {
                break;
            }
            let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
            self.stream.read_exact(&mut body).await.expect("frame");
            match decode_incoming(&body) {
                Ok(Incoming::Event(NodeEventMsg::Other(15))) => j += 1,
                Ok(Incoming::Event(NodeEventMsg::Other(16))) => s += 1,
                _ => {}
            }
        }
        (j, s)
    }
}
