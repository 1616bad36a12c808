//! The pool's binary as the tests run it: the operator's command line with a data directory,
//! its stdout read on a thread, its log (stderr) in `pool.log` of the data directory, and the
//! address and authority key taken from the lines it prints at start. A pool still running
//! when the value is dropped is killed.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

/// How long a pool may take to print its address and key (a debug build on a busy machine).
const START_WITHIN: Duration = Duration::from_secs(60);

/// A running pool process.
pub struct PoolProcess {
    pub child: Child,
    /// Where it listens for SV2 miners (`host:port`).
    pub addr: String,
    /// Its authority public key.
    pub key: String,
    /// Every stdout line read so far, in order.
    pub seen: Vec<String>,
    /// Its stdout lines not read yet.
    pub lines: Receiver<String>,
    log: PathBuf,
}

impl PoolProcess {
    /// Starts the pool with `--data-dir dir` and `args`, and waits until it has printed its
    /// address and key (panics with its log if it does not).
    pub fn start(dir: &Path, args: &[&str]) -> PoolProcess {
        let log = dir.join("pool.log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_blvm-stratum-v2"))
            .arg("--data-dir")
            .arg(dir)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("pool starts");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut pool = PoolProcess {
            child,
            addr: String::new(),
            key: String::new(),
            seen: Vec::new(),
            lines,
            log,
        };
        while pool.addr.is_empty() || pool.key.is_empty() {
            let line = pool.next_line(START_WITHIN, "its address and key");
            if let Some(rest) = line.strip_prefix("blvm-stratum-v2 listening on ") {
                pool.addr = rest.split_whitespace().next().unwrap_or_default().into();
            }
            if let Some(k) = line.strip_prefix("authority public key: ") {
                pool.key = k.to_owned();
            }
        }
        pool
    }

    /// The next stdout line (also kept in `seen`); panics with the log after `within`.
    pub fn next_line(&mut self, within: Duration, what: &str) -> String {
        let line = self.lines.recv_timeout(within).unwrap_or_else(|e| {
            panic!(
                "the pool did not print {what} ({e}); its log:\n{}",
                self.log()
            )
        });
        self.seen.push(line.clone());
        line
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends it `signal` (SIGTERM, SIGINT, SIGKILL).
    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill(2) on our own child's pid, with a valid signal number.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
        assert_eq!(rc, 0, "kill({signal})");
    }

    /// Waits for it to exit, at most `within` (then kills it and panics with its log).
    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("the pool did not exit in time; its log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for PoolProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
