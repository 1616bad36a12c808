//! A real blvm-node regtest node for the JSON-RPC backend tests: tools/regtest-node run as a
//! child process on 127.0.0.1 (built here with cargo the first time: several minutes; cargo
//! skips it when fresh). Include it with `#[path = "common/regtest_node.rs"] mod regtest_node;`.
//!
//! The node keeps its chain in its data directory (redb), so [`RegtestNode::stop`] followed by
//! [`RegtestNode::restart`] brings the same chain back on the same ports.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bitcoin::block::Header;
use bitcoin::hashes::Hash;
use bitcoin::script::Builder;
use bitcoin::{
    Amount, Block, OutPoint, ScriptBuf, Sequence, Target, Transaction, TxIn, TxMerkleNode, TxOut,
    Witness, absolute, transaction,
};
use blvm_stratum_v2::node::BlockTemplate;
use blvm_stratum_v2::node::rpc::{RpcAuth, RpcClient, RpcConfig};
use serde_json::{Value, json};

/// Bound on building tools/regtest-node (cold: several minutes on a busy machine).
pub const BUILD_TIMEOUT: Duration = Duration::from_secs(40 * 60);
/// Bound on tools/regtest-node/prepare.sh (may download blvm-node's crate, ~MBs).
pub const PREPARE_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// Bound on the node answering RPC after its start.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound on the node exiting after a signal (blvm-node drains and flushes on SIGTERM).
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// BIP 173's regtest P2WPKH test vector.
pub const REGTEST_ADDRESS: &str = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080";

/// Builds tools/regtest-node once per test binary; returns its executable.
pub fn regtest_node_binary() -> PathBuf {
    static BUILT: Mutex<Option<PathBuf>> = Mutex::new(None);
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(p) = built.as_ref() {
        return p.clone();
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/regtest-node");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let started = Instant::now();
    // First the patched blvm-node its Cargo.toml's [patch.crates-io] points at (prepare.sh:
    // unpacks and patches tools/regtest-node/vendor/, a no-op when done; MODULES.md says why).
    let mut prepare = Command::new("bash")
        .arg(dir.join("prepare.sh"))
        .stdin(Stdio::null())
        .stdout(Stdio::from(std::io::stderr()))
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run tools/regtest-node/prepare.sh");
    let status = loop {
        if let Some(s) = prepare.try_wait().expect("wait for prepare.sh") {
            break s;
        }
        if started.elapsed() > PREPARE_TIMEOUT {
            let _ = prepare.kill();
            let _ = prepare.wait();
            panic!("tools/regtest-node/prepare.sh took more than {PREPARE_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "tools/regtest-node/prepare.sh failed");
    let mut child = Command::new(cargo)
        .args(["build", "--release", "--manifest-path"])
        .arg(dir.join("Cargo.toml"))
        // Its own target dir, not ours: its build must not wait for our build's lock.
        .env_remove("CARGO_TARGET_DIR")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run cargo build for tools/regtest-node");
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for cargo") {
            break s;
        }
        if started.elapsed() > BUILD_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("building tools/regtest-node took more than {BUILD_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(status.success(), "building tools/regtest-node failed");
    eprintln!(
        "tools/regtest-node built (or fresh) in {:?}",
        started.elapsed()
    );
    let bin = dir.join("target/release/regtest-node");
    assert!(bin.exists(), "{} missing", bin.display());
    *built = Some(bin.clone());
    bin
}

/// A port free on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

/// How to stop the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// SIGTERM: blvm-node's own handler stops it gracefully (flushes its store).
    Term,
    /// SIGKILL: gone at once, nothing flushed.
    Kill,
}

/// A blvm-node regtest node in a child process, killed on drop.
pub struct RegtestNode {
    child: Option<Child>,
    bin: PathBuf,
    pub rpc_port: u16,
    p2p_port: u16,
    auth_arg: String,
    pub datadir: tempfile::TempDir,
    pub auth: RpcAuth,
    /// Starts so far (the log of start n is `node-n.log`).
    starts: u32,
    /// More regtest-node arguments (module host mode: --modules-dir ...).
    extra_args: Vec<std::ffi::OsString>,
}

impl RegtestNode {
    /// Starts a node with cookie auth (`user_password: None`) or user/password auth, and
    /// waits until its RPC answers.
    pub async fn start(user_password: Option<(&str, &str)>) -> RegtestNode {
        Self::start_with_args(user_password, Vec::new()).await
    }

    /// [`RegtestNode::start`] with more regtest-node arguments (`{rpc_port}` in them is
    /// replaced by the node's RPC port).
    pub async fn start_with_args(
        user_password: Option<(&str, &str)>,
        extra_args: Vec<std::ffi::OsString>,
    ) -> RegtestNode {
        let bin = tokio::task::spawn_blocking(regtest_node_binary)
            .await
            .expect("build task");
        let datadir = tempfile::tempdir().expect("temp dir");
        let (auth_arg, auth) = match user_password {
            None => (
                "cookie".to_owned(),
                RpcAuth::CookieFile(datadir.path().join(".cookie")),
            ),
            Some((u, p)) => (
                format!("{u}:{p}"),
                RpcAuth::UserPassword {
                    user: u.into(),
                    password: p.into(),
                },
            ),
        };
        let mut node = RegtestNode {
            child: None,
            bin,
            rpc_port: free_port(),
            p2p_port: free_port(),
            auth_arg,
            datadir,
            auth,
            starts: 0,
            extra_args,
        };
        node.spawn().await;
        node
    }

    /// Starts the process (again) on the same data directory and ports; returns once it
    /// serves a template.
    async fn spawn(&mut self) {
        assert!(self.child.is_none(), "the node is running");
        self.starts += 1;
        let log = std::fs::File::create(self.log_path()).expect("log file");
        let child = Command::new(&self.bin)
            .args(["--rpc-port", &self.rpc_port.to_string()])
            .args(["--p2p-port", &self.p2p_port.to_string()])
            .arg("--datadir")
            .arg(self.datadir.path())
            .args(["--auth", &self.auth_arg])
            .args(self.extra_args.iter().map(|a| {
                // `{rpc_port}` in an argument is the node's RPC port (chosen at start).
                a.to_string_lossy()
                    .replace("{rpc_port}", &self.rpc_port.to_string())
            }))
            // The node's warnings in its log file (for failure messages), unless asked otherwise.
            .env(
                "REGTEST_NODE_LOG",
                std::env::var("REGTEST_NODE_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("start regtest-node");
        self.child = Some(child);
        let started = Instant::now();
        let client = RpcClient::new(self.rpc_config());
        // Ready when it gives a template: blvm-node answers RPC (getblockcount: 0) a moment
        // before it has anchored its chain at genesis.
        let mut seen = Vec::new();
        loop {
            match client
                .call("getblocktemplate", json!([{"rules": ["segwit"]}]))
                .await
            {
                Ok(_) => break,
                Err(e) if started.elapsed() > START_TIMEOUT => {
                    panic!("node RPC not up in {START_TIMEOUT:?}: {e}\n{}", self.log())
                }
                Err(e) => {
                    let e = e.to_string();
                    if !e.contains("connect") && !seen.contains(&e) {
                        eprintln!("node starting: {e}");
                        seen.push(e);
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        eprintln!(
            "blvm-node (start {}) serves templates {:?} after start",
            self.starts,
            started.elapsed()
        );
    }

    /// The node process's id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Stops the process with `how` and waits for it to exit.
    pub async fn stop(&mut self, how: Stop) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let signal = match how {
            Stop::Term => libc::SIGTERM,
            Stop::Kill => libc::SIGKILL,
        };
        // SAFETY: kill(2) on our own child's pid (not yet reaped), with a valid signal number.
        let rc = unsafe { libc::kill(child.id() as libc::pid_t, signal) };
        assert_eq!(rc, 0, "kill({how:?}) failed");
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait().expect("wait for the node") {
                eprintln!(
                    "blvm-node stopped by {how:?} in {:?}: {status}",
                    started.elapsed()
                );
                return;
            }
            if started.elapsed() > STOP_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the node did not exit within {STOP_TIMEOUT:?} of {how:?}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Starts the stopped node again on the same data directory and ports.
    pub async fn restart(&mut self) {
        self.spawn().await;
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.rpc_port)
    }

    pub fn rpc_config(&self) -> RpcConfig {
        RpcConfig::new(&self.url(), self.auth.clone()).expect("valid url")
    }

    fn log_path(&self) -> PathBuf {
        self.datadir
            .path()
            .join(format!("node-{}.log", self.starts))
    }

    /// The log of the current (or last) start.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }
}

impl Drop for RegtestNode {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub async fn call(client: &RpcClient, method: &str, params: Value) -> Value {
    client
        .call(method, params.clone())
        .await
        .unwrap_or_else(|e| panic!("{method} {params}: {e}"))
}

pub async fn block_count(client: &RpcClient) -> u64 {
    call(client, "getblockcount", json!([]))
        .await
        .as_u64()
        .expect("getblockcount is a number")
}

pub async fn best_hash(client: &RpcClient) -> String {
    call(client, "getbestblockhash", json!([]))
        .await
        .as_str()
        .expect("getbestblockhash is a string")
        .to_owned()
}

/// The hash of the node's main-chain block at `height`.
pub async fn hash_at(client: &RpcClient, height: u64) -> String {
    call(client, "getblockhash", json!([height]))
        .await
        .as_str()
        .expect("getblockhash is a string")
        .to_owned()
}

/// A coinbase-only block on `t` paying `value`, with `height_push` as BIP34 height, solved.
pub fn solved_block(
    t: &BlockTemplate,
    height_push: i64,
    value: Amount,
    mangle: impl Fn(&mut Header),
) -> Block {
    let coinbase = Transaction {
        version: transaction::Version::TWO,
        lock_time: absolute::LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint::null(),
            script_sig: Builder::new()
                .push_int(height_push)
                .push_slice(b"/test/")
                .into_script(),
            sequence: Sequence::MAX,
            witness: Witness::new(),
        }],
        output: vec![TxOut {
            value,
            script_pubkey: ScriptBuf::new_op_return([]),
        }],
    };
    assert!(t.transactions.is_empty(), "empty mempool expected");
    let mut block = Block {
        header: Header {
            version: t.version,
            prev_blockhash: t.prev_hash,
            merkle_root: TxMerkleNode::all_zeros(),
            time: t.cur_time.max(t.min_time),
            bits: t.bits,
            nonce: 0,
        },
        txdata: vec![coinbase],
    };
    block.header.merkle_root = block.compute_merkle_root().expect("one transaction");
    mangle(&mut block.header);
    // Regtest's target: about every other nonce solves it.
    let target = Target::from_compact(t.bits);
    while block.header.validate_pow(target).is_err() {
        block.header.nonce = block
            .header
            .nonce
            .checked_add(1)
            .expect("a nonce solves it");
    }
    block
}
