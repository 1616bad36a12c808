//! One pool per data directory: a second pool on a directory another pool holds is refused at
//! once, naming the directory, before it touches anything there (its found blocks, its ledger
//! file, its claim in the registry of instances, where the same host and directory again is
//! taken for the same instance restarted); once the first has stopped, the directory is free.
//! In one process (the typed error, the release at stop) and as an operator runs two
//! processes (the second exits 1 and says why).

#[path = "common/binary.rs"]
mod binary;

use std::sync::Arc;
use std::time::{Duration, Instant};

use blvm_stratum_v2::config::{PoolConfig, PoolOptions};
use blvm_stratum_v2::node::regtest::{ChainConfig, EmbeddedNode};
use blvm_stratum_v2::server::{DataDirLockError, StratumV2Error, StratumV2Server};

use binary::PoolProcess;

fn server_on(dir: &std::path::Path) -> Result<StratumV2Server, StratumV2Error> {
    let config = PoolConfig::resolve(
        &PoolOptions {
            listen_addr: Some("127.0.0.1:0".into()),
            sv1_listen_addr: Some("off".into()),
            http_enabled: Some(false),
            data_dir: Some(dir.to_path_buf()),
            ..PoolOptions::default()
        },
        "test",
    )
    .expect("config");
    StratumV2Server::new(config, Arc::new(EmbeddedNode::new(ChainConfig::default())))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_pool_on_a_held_data_directory_is_refused_until_the_first_stops() {
    let parent = tempfile::tempdir().unwrap();
    // Not there yet: the first pool makes it, then locks it.
    let dir = parent.path().join("data");
    let first = server_on(&dir).expect("the first pool on a new directory");
    first.start().await.expect("the first starts");
    let lock = dir.join("pool.lock");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&lock).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "the lock file is the pool's own");

    match server_on(&dir) {
        Err(StratumV2Error::DataDir(DataDirLockError::Held { dir: held, pid })) => {
            assert_eq!(held, std::fs::canonicalize(&dir).unwrap());
            assert_eq!(pid, Some(std::process::id()), "the holder's pid is named");
        }
        other => panic!("a held data directory gave {:?}", other.map(|_| ())),
    }
    let refused = server_on(&dir).err().expect("still held").to_string();
    assert!(
        refused.contains("another pool process holds") && refused.contains(&*dir.to_string_lossy()),
        "{refused}"
    );

    first.stop().await.expect("stopped");
    let second = server_on(&dir).expect("the directory is free once its pool stopped");
    second.start().await.expect("the second starts");
    second.stop().await.unwrap();
    drop(second);
    // A pool dropped without a stop lets the directory go too.
    drop(server_on(&dir).expect("free again"));
    server_on(&dir).expect("free after a drop");
}

/// Two processes, as an operator would start them by mistake (or a supervisor restarting a
/// pool that has not exited yet): the second exits 1 at once, saying which directory is held;
/// the first runs on.
#[test]
fn a_second_pool_process_on_the_same_data_directory_exits_with_the_reason() {
    let dir = tempfile::tempdir().expect("temp dir");
    let args = [
        "--listen-addr",
        "127.0.0.1:0",
        "--sv1-listen-addr",
        "off",
        "--http-enabled",
        "false",
    ];
    let mut first = PoolProcess::start(dir.path(), &args);
    let log = tempfile::NamedTempFile::new().expect("log file");
    let mut second = std::process::Command::new(env!("CARGO_BIN_EXE_blvm-stratum-v2"))
        .arg("--data-dir")
        .arg(dir.path())
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log.reopen().expect("log file"))
        .spawn()
        .expect("the second runs");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = second.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = second.kill();
            let _ = second.wait();
            panic!(
                "the second pool runs on the held directory; its log:\n{}",
                std::fs::read_to_string(log.path()).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = std::fs::read_to_string(log.path()).unwrap_or_default();
    assert_eq!(status.code(), Some(1), "{stderr}");
    let canonical = std::fs::canonicalize(dir.path()).unwrap();
    assert!(
        stderr.contains(&format!(
            "another pool process holds {}",
            canonical.display()
        )),
        "{stderr}"
    );
    assert!(
        std::net::TcpStream::connect(&first.addr).is_ok(),
        "the first pool still serves"
    );
    first.signal(libc::SIGTERM);
    assert!(first.wait_exit(Duration::from_secs(15)).success());
}
