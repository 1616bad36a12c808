//! A throwaway PostgreSQL server for the ledger's tests and benchmarks
//! (`#[path = "common/postgres.rs"] mod postgres;`): `initdb` in a temporary directory, the
//! server on 127.0.0.1 with an ephemeral port (its unix socket in the same directory), trust
//! authentication, a fresh database; stopped (`pg_ctl stop -m immediate`) and removed on drop.
//! As root it runs as `nobody` (PostgreSQL refuses root), the directory chowned to it.
//! The binaries come from /usr/lib/postgresql/*/bin (Debian's layout; .ci/run installs the
//! package) or the PATH. It panics, loudly, when it cannot start: no test is skipped for want
//! of PostgreSQL.
#![allow(dead_code)]

// Its own copy of the installer, so a test can include this helper alone or with the others.
#[allow(clippy::duplicate_mod)]
#[path = "debian_package.rs"]
mod debian_package;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// A running throwaway server.
pub struct TempPostgres {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    /// The user the server runs as when we are root.
    run_as: Option<&'static str>,
    fsync: bool,
    running: bool,
}

/// Databases made by [`TempPostgres::fresh_database`].
static NEXT_DATABASE: AtomicU32 = AtomicU32::new(1);

/// The directory of `initdb`, `pg_ctl` and `postgres`: the newest Debian version, else PATH.
/// On a machine without PostgreSQL, Debian's package is installed first (as `.ci/run` does),
/// so that the README's `cargo test` needs nothing installed by hand.
fn bin_dir() -> PathBuf {
    find_bin_dir().unwrap_or_else(|| {
        debian_package::ensure("postgresql", || find_bin_dir().is_some());
        find_bin_dir().unwrap_or_else(|| {
            panic!(
                "PostgreSQL is not installed (no initdb under /usr/lib/postgresql/*/bin or in \
                 PATH) and installing Debian's postgresql did not provide it: run .ci/run, or \
                 apt-get install postgresql"
            )
        })
    })
}

fn find_bin_dir() -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    found.sort();
    if let Some((_, bin)) = found.pop() {
        return Some(bin);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .find(|dir| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file())
}

fn ephemeral_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("an ephemeral port")
        .port()
}

impl TempPostgres {
    /// A fresh cluster and server with fsync off (tests: the pool's durability is under test,
    /// not the database's; a `pg_ctl stop -m immediate` loses nothing committed either way).
    pub fn start() -> Self {
        Self::start_with(false)
    }

    /// A fresh cluster and server that fsyncs its commits (benchmarks: a real commit's cost).
    pub fn start_durable() -> Self {
        Self::start_with(true)
    }

    fn start_with(fsync: bool) -> Self {
        let bin = bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("ledger-pg-")
            .tempdir()
            .expect("a temporary directory");
        let run_as = debian_package::is_root().then_some("nobody");
        if run_as.is_some() {
            use std::os::unix::fs::PermissionsExt;
            // nobody must reach and own its data directory.
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
                .expect("chmod the temporary directory");
            let status = Command::new("chown")
                .args(["-R", "nobody"])
                .arg(dir.path())
                .status()
                .expect("run chown");
            assert!(status.success(), "chown nobody {}", dir.path().display());
        }
        let mut pg = TempPostgres {
            bin,
            dir,
            port: ephemeral_port(),
            run_as,
            fsync,
            running: false,
        };
        pg.run(
            "initdb",
            &[
                "-D",
                &pg.data_dir(),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
        );
        pg.start_again();
        pg.create_database("ledger");
        pg
    }

    fn data_dir(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Runs one of the server's programs (as `nobody` when root) and panics, with its output,
    /// if it fails.
    fn run(&self, program: &str, args: &[&str]) {
        let program = self.bin.join(program);
        let mut command = match self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&program);
                c
            }
            None => Command::new(&program),
        };
        let output = command
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
        assert!(
            output.status.success(),
            "{} {args:?} failed: {}\n{}\n{}",
            program.display(),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
        );
    }

    /// Starts the server (again, after [`TempPostgres::stop`]) on the same port and waits
    /// until it accepts connections.
    pub fn start_again(&mut self) {
        assert!(!self.running, "already running");
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync={} -c max_connections=50",
            self.port,
            self.socket_dir().display(),
            if self.fsync { "on" } else { "off" },
        );
        let log = self.dir.path().join("server.log").display().to_string();
        let data = self.data_dir();
        self.run(
            "pg_ctl",
            &[
                "-D", &data, "-l", &log, "-o", &options, "-w", "-t", "60", "start",
            ],
        );
        self.running = true;
    }

    /// Stops the server at once (`-m immediate`: like a crash; committed data stays).
    pub fn stop(&mut self) {
        if self.running {
            let data = self.data_dir();
            self.run("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"]);
            self.running = false;
        }
    }

    /// The server's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of the test database `ledger`.
    pub fn url(&self) -> String {
        self.url_of("ledger")
    }

    /// The URL of database `name` on this server.
    pub fn url_of(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    fn create_database(&self, name: &str) {
        let mut client = ::postgres::Client::connect(&self.url_of("postgres"), ::postgres::NoTls)
            .expect("connect to the throwaway server");
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("create a database");
    }

    /// A new empty database on this server; its URL.
    pub fn fresh_database(&self) -> String {
        let name = format!("ledger_{}", NEXT_DATABASE.fetch_add(1, Ordering::Relaxed));
        self.create_database(&name);
        self.url_of(&name)
    }

    /// Bytes the named table takes with its indexes and TOAST (`pg_total_relation_size`).
    pub fn total_relation_size(&self, url: &str, table: &str) -> i64 {
        let mut client = ::postgres::Client::connect(url, ::postgres::NoTls).expect("connect");
        client
            .query_one(
                "SELECT pg_total_relation_size($1::text::regclass)",
                &[&table],
            )
            .expect("pg_total_relation_size")
            .get(0)
    }
}

impl Drop for TempPostgres {
    fn drop(&mut self) {
        if self.running {
            let data = self.data_dir();
            let program = self.bin.join("pg_ctl");
            let mut command = match self.run_as {
                Some(user) => {
                    let mut c = Command::new("runuser");
                    c.args(["-u", user, "--"]).arg(&program);
                    c
                }
                None => Command::new(&program),
            };
            // Best effort: a panic in drop would hide the test's own failure.
            let _ = command
                .args(["-D", &data, "-m", "immediate", "-w", "stop"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}
