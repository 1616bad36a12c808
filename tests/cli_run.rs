//! The binary as an operator runs it: with no subcommand it starts the pool on the embedded
//! regtest chain, prints where it listens (SV2, and SV1 on its own port) and the authority
//! key, and stops cleanly (exit 0) on SIGTERM and on SIGINT.

#[path = "common/binary.rs"]
mod binary;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use binary::PoolProcess;

fn run_and_signal(signal: libc::c_int) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut pool = PoolProcess::start(dir.path(), &["--listen-addr", "127.0.0.1:0"]);
    assert!(pool.addr.starts_with("127.0.0.1:"), "{}", pool.addr);
    assert!(
        std::net::TcpStream::connect(&pool.addr).is_ok(),
        "the pool accepts connections"
    );
    blvm_stratum_v2::noise::keys::decode_public_key(&pool.key)
        .expect("the printed key is a valid authority public key");
    assert!(dir.path().join("authority_secret_key").exists());
    // The SV1 port, printed before the key, answers an SV1 miner's mining.subscribe.
    let sv1 = pool
        .seen
        .iter()
        .find_map(|l| l.strip_prefix("Stratum V1 miners: stratum+tcp://"))
        .unwrap_or_else(|| panic!("no Stratum V1 line in {:?}", pool.seen))
        .to_owned();
    assert!(sv1.starts_with("127.0.0.1:") && sv1 != pool.addr, "{sv1}");
    let mut miner = std::net::TcpStream::connect(&sv1).expect("the SV1 port accepts");
    miner
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    miner
        .write_all(b"{\"id\":1,\"method\":\"mining.subscribe\",\"params\":[]}\n")
        .unwrap();
    let mut answer = String::new();
    BufReader::new(miner)
        .read_line(&mut answer)
        .expect("an answer");
    assert!(
        answer.contains("\"id\":1") && answer.contains("\"error\":null"),
        "{answer}"
    );

    pool.signal(signal);
    let status = pool.wait_exit(Duration::from_secs(15));
    assert!(status.success(), "exit status {status:?}");
}

#[test]
fn pool_runs_by_default_and_stops_cleanly_on_sigterm() {
    run_and_signal(libc::SIGTERM);
}

#[test]
fn pool_stops_cleanly_on_sigint() {
    run_and_signal(libc::SIGINT);
}

/// Started by blvm-node (its environment: MODULE_ID, SOCKET_PATH, DATA_DIR, MODULE_CONFIG_*),
/// the pool logs to DATA_DIR (the node never reads a module's pipes), waits for the node's
/// socket as long as it takes, and stops by itself when the node that started it is gone
/// (killed without stopping its modules), so that the node's next start can run the module
/// again on the same port.
#[test]
fn as_a_module_it_logs_to_its_data_dir_and_stops_when_the_node_is_gone() {
    module_run_and_node_gone(&[]);
}

/// The same with `backend = "rpc"` in the module's section (a stock blvm-node 0.1.83, whose
/// module socket cannot serve a module): the node still owns the process.
#[test]
fn as_a_module_on_json_rpc_it_also_stops_when_the_node_is_gone() {
    module_run_and_node_gone(&[
        ("MODULE_CONFIG_BACKEND", "rpc"),
        ("MODULE_CONFIG_RPC_URL", "http://127.0.0.1:9"),
        ("MODULE_CONFIG_RPC_USER", "u"),
        ("MODULE_CONFIG_RPC_PASSWORD", "p"),
    ]);
}

/// Starts the pool as blvm-node starts a module, from a "node" (a shell that starts the pool,
/// prints its pid, and waits): the node and the pool's pid.
fn start_module(
    dir: &std::path::Path,
    data: &std::path::Path,
    extra_env: &[(&str, &str)],
) -> (std::process::Child, libc::pid_t) {
    let mut node = Command::new("sh")
        .args([
            "-c",
            "\"$POOL\" </dev/null >/dev/null 2>&1 & echo $!; exec sleep 60",
        ])
        .env("POOL", env!("CARGO_BIN_EXE_blvm-stratum-v2"))
        .env("MODULE_NAME", "blvm-stratum-v2")
        .env("MODULE_ID", "blvm-stratum-v2_test")
        .env("SOCKET_PATH", dir.join("absent.sock"))
        .env("DATA_DIR", data)
        .env("MODULE_CONFIG_LISTEN_ADDR", "127.0.0.1:0")
        .env("MODULE_CONFIG_VERSION", "0.1.0")
        .envs(extra_env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("shell starts");
    let mut line = String::new();
    BufReader::new(node.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("pid line");
    (node, line.trim().parse().expect("pid"))
}

/// Whether process `pid` still runs (not gone, not a zombie nobody has reaped yet).
fn runs(pid: libc::pid_t) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rsplit(')')
        .next()
        .and_then(|r| r.split_whitespace().next());
    !matches!(state, None | Some("Z") | Some("X"))
}

/// Waits until `what` holds, at most `within`; panics with `why()` if it does not.
fn wait_until(within: Duration, mut what: impl FnMut() -> bool, why: impl Fn() -> String) {
    let deadline = Instant::now() + within;
    while !what() {
        assert!(Instant::now() < deadline, "{}", why());
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn module_run_and_node_gone(extra_env: &[(&str, &str)]) {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let (mut node, pid) = start_module(dir.path(), &data, extra_env);

    let log = data.join("blvm-stratum-v2.log");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("waiting for the node") {
            assert!(
                text.contains("module config keys that are not ours"),
                "{text}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "no wait in the log:\n{text}");
        std::thread::sleep(Duration::from_millis(50));
    }
    // It waits for the node as long as it takes, rather than exit (the node would not start
    // it again).
    std::thread::sleep(Duration::from_secs(3));
    let alive = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    assert!(!alive.is_empty(), "the pool gave up waiting for the node");

    // Kill the "node" outright: the pool is re-parented and must stop by itself.
    node.kill().expect("kill the shell");
    let _ = node.wait();
    wait_until(
        Duration::from_secs(15),
        || !runs(pid),
        || "the pool still runs 15 s after its node died".into(),
    );
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(text.contains("is gone; stopping"), "{text}");
}

/// A node killed and started again before its module's previous instance finished stopping
/// starts a new instance on the same data directory while the old one still holds it: the new
/// one waits (as it waits for the node: the node would not start it again if it exited),
/// opening nothing there but its log, and runs once the old one has left.
#[test]
fn as_a_module_it_waits_for_its_previous_instance_to_leave_the_data_directory() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let log = data.join("blvm-stratum-v2.log");
    let text = || std::fs::read_to_string(&log).unwrap_or_default();
    let lock_holder = || {
        std::fs::read_to_string(data.join("pool.lock"))
            .ok()
            .and_then(|t| t.trim().parse::<libc::pid_t>().ok())
    };
    let (mut old_node, old) = start_module(dir.path(), &data, &[]);
    wait_until(
        Duration::from_secs(30),
        || lock_holder() == Some(old) && text().contains("waiting for the node"),
        || {
            format!(
                "the first instance does not hold the directory:\n{}",
                text()
            )
        },
    );

    let (mut new_node, new) = start_module(dir.path(), &data, &[]);
    wait_until(
        Duration::from_secs(30),
        || text().contains(&format!("(pid {old}); waiting for it to stop")),
        || format!("the new instance does not say it waits:\n{}", text()),
    );
    std::thread::sleep(Duration::from_secs(1));
    assert!(runs(new), "the new instance gave up:\n{}", text());
    assert_eq!(lock_holder(), Some(old));

    old_node.kill().expect("kill the first node");
    let _ = old_node.wait();
    wait_until(
        Duration::from_secs(15),
        || !runs(old) && lock_holder() == Some(new),
        || {
            format!(
                "the new instance did not take the directory over:\n{}",
                text()
            )
        },
    );
    assert!(runs(new));

    new_node.kill().expect("kill the second node");
    let _ = new_node.wait();
    wait_until(
        Duration::from_secs(15),
        || !runs(new),
        || {
            format!(
                "the new instance still runs after its node died:\n{}",
                text()
            )
        },
    );
}
