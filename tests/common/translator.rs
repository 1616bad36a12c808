//! SRI's SV1→SV2 translator proxy (`translator_sv2` from crates.io, the one SV1 farms put in
//! front of an SV2 pool) as a child process, for the interop tests: installed once into the
//! target dir with `cargo install --locked` at a pinned version (cold: several minutes; then
//! found there), started with a TOML config of the test's own on 127.0.0.1, its log (stdout
//! and stderr) in a file of its temp dir, printed when the test fails, killed on drop.
//! Include it with `#[path = "common/translator.rs"] mod translator;`.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The translator's version the tests run (crates.io's newest when pinned).
pub const TRANSLATOR_VERSION: &str = "0.6.0";
/// Bound on `cargo install` (cold: a few hundred crates on a busy machine).
pub const INSTALL_TIMEOUT: Duration = Duration::from_secs(40 * 60);
/// Bound on the translator listening for SV1 miners after its start.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Extension 0x0002, worker-specific hashrate tracking.
pub const WORKER_HASHRATE_TRACKING: u16 = 0x0002;

/// Where the pinned translator is installed: `<target dir>/tools` (its `bin/` and cargo's
/// `.crates.toml`), so `cargo clean` removes it and no other checkout's build shares it.
fn install_root() -> PathBuf {
    // <target dir>/<profile>/blvm-stratum-v2: the target dir is two levels up.
    Path::new(env!("CARGO_BIN_EXE_blvm-stratum-v2"))
        .parent()
        .and_then(Path::parent)
        .expect("the pool binary lies in <target dir>/<profile>/")
        .join("tools")
}

/// Whether `bin` runs and says it is the pinned version (`translator_sv2 0.6.0`).
fn is_pinned_version(bin: &Path) -> bool {
    Command::new(bin)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|o| {
            o.status.success()
                && String::from_utf8_lossy(&o.stdout).trim()
                    == format!("translator_sv2 {TRANSLATOR_VERSION}")
        })
}

/// The pinned translator's executable: found under [`install_root`], or installed there first
/// (once per test binary; cargo's own lock on the root serializes concurrent installs).
pub fn translator_binary() -> PathBuf {
    static FOUND: Mutex<Option<PathBuf>> = Mutex::new(None);
    let mut found = FOUND.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(p) = found.as_ref() {
        return p.clone();
    }
    let root = install_root();
    let bin = root.join("bin/translator_sv2");
    if !is_pinned_version(&bin) {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let started = Instant::now();
        let mut child = Command::new(cargo)
            .args(["install", "--locked", "translator_sv2", "--version"])
            .arg(TRANSLATOR_VERSION)
            .arg("--root")
            .arg(&root)
            // cargo's own temporary build dir (~1 GB, removed once installed), not our target
            // dir: not its lock, and no release artifacts of the translator's left in it.
            .env_remove("CARGO_TARGET_DIR")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("run cargo install translator_sv2");
        let status = loop {
            if let Some(s) = child.try_wait().expect("wait for cargo") {
                break s;
            }
            if started.elapsed() > INSTALL_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                panic!("installing translator_sv2 took more than {INSTALL_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        assert!(status.success(), "cargo install translator_sv2 failed");
        eprintln!(
            "translator_sv2 {TRANSLATOR_VERSION} installed in {:?}",
            started.elapsed()
        );
        assert!(
            is_pinned_version(&bin),
            "{} is not translator_sv2 {TRANSLATOR_VERSION}",
            bin.display()
        );
    }
    *found = Some(bin.clone());
    bin
}

/// How the translator is set up (the keys of its TOML config the tests vary).
pub struct TranslatorConfig<'a> {
    /// The pool's SV2 address.
    pub upstream: SocketAddr,
    /// The pool's authority public key (base58check, as the pool prints it).
    pub authority_pubkey: &'a str,
    /// The user the translator opens its channels as (`user.translator-proxy` for the one
    /// aggregated channel, `user.minerN` for a channel per SV1 miner).
    pub user_identity: &'a str,
    /// One upstream channel for every SV1 miner, or one each.
    pub aggregate_channels: bool,
    /// Extensions it can use if the pool requires them (0.6.0 asks for none of these itself).
    pub supported_extensions: &'a [u16],
    /// Extensions it asks the pool for with RequestExtensions (it sends none when empty, and
    /// gives up on a pool that refuses one).
    pub required_extensions: &'a [u16],
    /// Its downstream vardiff: `false` gives the SV1 miners the pool's channel target.
    pub enable_vardiff: bool,
    /// The hashrate it announces per SV1 miner (and, with vardiff, starts them at).
    pub min_individual_miner_hashrate: f64,
}

/// The translator's TOML config (the format of its `config-examples/`).
fn config_toml(c: &TranslatorConfig, downstream_port: u16) -> String {
    let list = |extensions: &[u16]| {
        extensions
            .iter()
            .map(|e| format!("{e:#06x}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        r#"downstream_address = "127.0.0.1"
downstream_port = {downstream_port}
max_supported_version = 2
min_supported_version = 2
downstream_extranonce2_size = 4
verify_payout = false
aggregate_channels = {aggregate}
supported_extensions = [{supported}]
required_extensions = [{required}]

[downstream_difficulty_config]
min_individual_miner_hashrate = {hashrate:?}
shares_per_minute = 60.0
enable_vardiff = {vardiff}
job_keepalive_interval_secs = 60

[[upstreams]]
address = "{address}"
port = {port}
authority_pubkey = "{key}"
user_identity = "{user}"
"#,
        aggregate = c.aggregate_channels,
        supported = list(c.supported_extensions),
        required = list(c.required_extensions),
        hashrate = c.min_individual_miner_hashrate,
        vardiff = c.enable_vardiff,
        address = c.upstream.ip(),
        port = c.upstream.port(),
        key = c.authority_pubkey,
        user = c.user_identity,
    )
}

/// A running translator; killed on drop, its log printed then if the test is failing.
pub struct Translator {
    child: Child,
    /// Where SV1 miners connect.
    pub sv1_addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Translator {
    /// Starts the pinned translator with `config` and waits (at most [`START_TIMEOUT`]) until it
    /// accepts SV1 connections (panics with its log if it exits or does not).
    pub fn start(config: &TranslatorConfig) -> Translator {
        let bin = translator_binary();
        let dir = tempfile::tempdir().expect("temp dir");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let config_path = dir.path().join("tproxy.toml");
        std::fs::write(&config_path, config_toml(config, port)).expect("write its config");
        let log = std::fs::File::create(dir.path().join("tproxy.log")).expect("log file");
        let child = Command::new(bin)
            .arg("--config")
            .arg(&config_path)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("translator_sv2 starts");
        let mut translator = Translator {
            child,
            sv1_addr: SocketAddr::from(([127, 0, 0, 1], port)),
            dir,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        while TcpStream::connect(translator.sv1_addr).is_err() {
            if let Some(status) = translator.child.try_wait().expect("wait") {
                panic!(
                    "translator_sv2 exited ({status}); its log:\n{}",
                    translator.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "translator_sv2 did not listen in {START_TIMEOUT:?}; its log:\n{}",
                translator.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        translator
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("tproxy.log")).unwrap_or_default()
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Translator {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!("translator_sv2's log:\n{}", self.log());
        }
    }
}
