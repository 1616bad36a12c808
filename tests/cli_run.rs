//! The binary as an operator runs it: with no subcommand it starts the pool on the embedded
//! regtest chain, prints where it listens and the authority key, and stops cleanly (exit 0)
//! on SIGTERM and on SIGINT.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn run_and_signal(signal: libc::c_int) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_blvm-stratum-v2"))
        .args(["--listen-addr", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("pool starts");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut listening = None;
    let mut key = None;
    while listening.is_none() || key.is_none() {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the pool prints its address and key");
        if let Some(rest) = line.strip_prefix("blvm-stratum-v2 listening on ") {
            listening = rest.split_whitespace().next().map(str::to_owned);
        }
        if let Some(k) = line.strip_prefix("authority public key: ") {
            key = Some(k.to_owned());
        }
    }
    let addr = listening.expect("address");
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");
    assert!(
        std::net::TcpStream::connect(&addr).is_ok(),
        "the pool accepts connections"
    );
    blvm_stratum_v2::noise::keys::decode_public_key(key.as_deref().unwrap_or_default())
        .expect("the printed key is a valid authority public key");
    assert!(dir.path().join("authority_secret_key").exists());

    // SAFETY: kill(2) on our own child's pid, with a valid signal number.
    let rc = unsafe { libc::kill(child.id() as libc::pid_t, signal) };
    assert_eq!(rc, 0);
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the pool did not stop after the signal");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
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
