//! Debian's HAProxy as the tests run it (`#[path = "common/haproxy.rs"] mod haproxy;`): a
//! child process in the foreground (`-db`, no daemon) on a configuration generated into a
//! temporary directory, in TCP mode, one frontend on 127.0.0.1 with an ephemeral port per
//! [`Route`], each balancing over one or more pool servers that get the PROXY protocol v2
//! (`send-proxy-v2`) and health checks that send it too (`check check-send-proxy`: a
//! PROXY v2 LOCAL header, then close). Ready once its runtime API says every frontend is
//! open; killed on drop, and with the test process if it dies without dropping it. Its
//! runtime API (the admin socket in the same directory) answers
//! [`Haproxy::command`], e.g. `show servers state` to wait for a server to go down or up.
//!
//! The binary is /usr/sbin/haproxy (Debian's package; .ci/run installs it, and so does the
//! first test that misses it) or `haproxy` in the PATH; if it cannot be had the test panics,
//! loudly: no test is skipped for want of it.
#![allow(dead_code)]

// Its own copy of the installer, so a test can include this helper alone or with the others.
#[allow(clippy::duplicate_mod)]
#[path = "debian_package.rs"]
mod debian_package;

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long HAProxy may take to accept on every frontend.
const READY_WITHIN: Duration = Duration::from_secs(20);

/// One frontend and the pool servers behind it.
#[derive(Debug, Clone)]
pub struct Route {
    /// The frontend's and backend's name (letters, digits, `_`).
    pub name: String,
    /// The pool servers (each gets the PROXY v2 header and health checks).
    pub servers: Vec<SocketAddr>,
}

impl Route {
    /// `name` balancing over `servers`.
    pub fn new(name: &str, servers: &[SocketAddr]) -> Route {
        Route {
            name: name.to_owned(),
            servers: servers.to_vec(),
        }
    }
}

/// How HAProxy balances and checks (the defaults suit a failover test: a dead server is out
/// within about a second, a connection to it is retried on another).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Time between two health checks of a server (`inter`).
    pub check_interval: Duration,
    /// Failed checks before a server is down (`fall`).
    pub fall: u32,
    /// Passed checks before a server is up again (`rise`).
    pub rise: u32,
    /// `balance` algorithm (`roundrobin`, `leastconn`, `source`).
    pub balance: &'static str,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            check_interval: Duration::from_millis(500),
            fall: 2,
            rise: 1,
            balance: "roundrobin",
        }
    }
}

/// A running HAProxy.
pub struct Haproxy {
    child: Child,
    /// Keeps alive the thread HAProxy was started from (see [`spawn_tied`]); dropped last.
    keeper: Option<std::sync::mpsc::Sender<()>>,
    dir: tempfile::TempDir,
    /// Each route's name and frontend address, in the order given.
    frontends: Vec<(String, SocketAddr)>,
}

/// The HAProxy binary: Debian's, else the PATH's. On a machine without it, Debian's package is
/// installed first (as `.ci/run` does), so that `cargo test` needs nothing installed by hand.
fn binary() -> PathBuf {
    find_binary().unwrap_or_else(|| {
        debian_package::ensure("haproxy", || find_binary().is_some());
        find_binary().unwrap_or_else(|| {
            panic!(
                "HAProxy is not installed (no /usr/sbin/haproxy, none in PATH) and installing \
                 Debian's haproxy did not provide it: run .ci/run, or apt-get install haproxy"
            )
        })
    })
}

fn find_binary() -> Option<PathBuf> {
    let debian = Path::new("/usr/sbin/haproxy");
    if debian.exists() {
        return Some(debian.to_path_buf());
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("haproxy"))
            .find(|p| p.exists())
    })
}

/// A port free on 127.0.0.1 now (HAProxy binds it a moment later; [`Haproxy::start`]
/// retries if another process took it meanwhile).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("an ephemeral port")
        .port()
}

/// The configuration for `routes` with `settings`, frontends on `ports`.
fn config(routes: &[Route], ports: &[u16], settings: &Settings, dir: &Path) -> String {
    let inter = settings.check_interval.as_millis();
    let mut c = String::new();
    let _ = write!(
        c,
        "global\n\
         \x20   maxconn 4096\n\
         \x20   log stderr format raw local0 info\n\
         \x20   stats socket {admin} mode 600 level admin\n\
         \n\
         defaults\n\
         \x20   mode tcp\n\
         \x20   log global\n\
         \x20   option tcplog\n\
         \x20   option redispatch\n\
         \x20   retries 3\n\
         \x20   timeout connect 2s\n\
         \x20   timeout client 1h\n\
         \x20   timeout server 1h\n\
         \x20   timeout check 2s\n\
         \n",
        admin = dir.join("admin.sock").display()
    );
    for (route, port) in routes.iter().zip(ports) {
        let name = &route.name;
        let _ = write!(
            c,
            "frontend {name}\n\
             \x20   bind 127.0.0.1:{port}\n\
             \x20   default_backend {name}_pool\n\
             \n\
             backend {name}_pool\n\
             \x20   balance {balance}\n",
            balance = settings.balance
        );
        for (i, server) in route.servers.iter().enumerate() {
            let _ = writeln!(
                c,
                "    server {name}{i} {server} check send-proxy-v2 check-send-proxy \
                 inter {inter}ms fall {fall} rise {rise}",
                fall = settings.fall,
                rise = settings.rise
            );
        }
        c.push('\n');
    }
    c
}

impl Haproxy {
    /// HAProxy in front of `routes`, with the default [`Settings`].
    pub fn start(routes: &[Route]) -> Haproxy {
        Self::start_with(routes, &Settings::default())
    }

    /// HAProxy in front of `routes`; waits until every frontend accepts (panics with its log
    /// if it does not).
    pub fn start_with(routes: &[Route], settings: &Settings) -> Haproxy {
        assert!(!routes.is_empty(), "HAProxy needs at least one route");
        let bin = binary();
        let mut last_log = String::new();
        // A port picked free may be taken before HAProxy binds it: a few tries.
        for _ in 0..3 {
            let dir = tempfile::tempdir().expect("temp dir for HAProxy");
            let ports: Vec<u16> = routes.iter().map(|_| free_port()).collect();
            let cfg = dir.path().join("haproxy.cfg");
            std::fs::write(&cfg, config(routes, &ports, settings, dir.path()))
                .expect("HAProxy config");
            let log = dir.path().join("haproxy.log");
            let mut command = Command::new(&bin);
            command
                .arg("-db")
                .arg("-f")
                .arg(&cfg)
                .stdin(Stdio::null())
                .stdout(std::fs::File::create(&log).expect("HAProxy log"))
                .stderr(std::fs::File::create(dir.path().join("haproxy.err")).expect("log"));
            let (child, keeper) = spawn_tied(command)
                .unwrap_or_else(|e| panic!("{} does not start: {e}", bin.display()));
            let frontends = routes
                .iter()
                .zip(&ports)
                .map(|(r, p)| (r.name.clone(), SocketAddr::from(([127, 0, 0, 1], *p))))
                .collect();
            let mut proxy = Haproxy {
                child,
                keeper: Some(keeper),
                dir,
                frontends,
            };
            if proxy.wait_ready() {
                return proxy;
            }
            last_log = proxy.log();
        }
        panic!("HAProxy did not start; its log:\n{last_log}");
    }

    /// Whether every frontend is open within [`READY_WITHIN`] (false: HAProxy exited). Asked
    /// of the runtime API, not by connecting: a connection to a frontend would be proxied to
    /// a pool server and end there as a failed connection, in the counts the tests check.
    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if let Some(stat) = self.try_command("show stat")
                && self.frontends.iter().all(|(name, _)| {
                    stat.lines().any(|l| {
                        l.starts_with(&format!("{name},FRONTEND,")) && l.contains(",OPEN,")
                    })
                })
            {
                return true;
            }
            assert!(
                Instant::now() < deadline,
                "HAProxy's frontends are not open; its log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The frontend of route `name`.
    pub fn frontend(&self, name: &str) -> SocketAddr {
        self.frontends
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| *a)
            .unwrap_or_else(|| panic!("no route {name}"))
    }

    /// Its log so far (stdout and stderr: connections, checks, server state changes).
    pub fn log(&self) -> String {
        let read = |f: &str| std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default();
        format!("{}{}", read("haproxy.log"), read("haproxy.err"))
    }

    /// The generated configuration.
    pub fn config(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("haproxy.cfg")).unwrap_or_default()
    }

    /// A runtime API command's answer (`show servers state`, `show stat`,
    /// `disable server B/S` ...).
    pub fn command(&self, command: &str) -> String {
        self.try_command(command)
            .unwrap_or_else(|| panic!("HAProxy's admin socket; log:\n{}", self.log()))
    }

    /// [`Self::command`], `None` while the admin socket is not there yet.
    fn try_command(&self, command: &str) -> Option<String> {
        let path = self.dir.path().join("admin.sock");
        let mut s = std::os::unix::net::UnixStream::connect(path).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        s.write_all(format!("{command}\n").as_bytes()).ok()?;
        let mut answer = String::new();
        s.read_to_string(&mut answer).ok()?;
        Some(answer)
    }

    /// Each server's name and whether HAProxy has it up (`show servers state`).
    pub fn servers_up(&self) -> Vec<(String, bool)> {
        // Columns: be_id be_name srv_id srv_name srv_addr srv_op_state ... (op_state 2: up).
        self.command("show servers state")
            .lines()
            .filter(|l| !l.starts_with('#') && l.split_whitespace().count() > 5)
            .map(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                (cols[3].to_owned(), cols[5] == "2")
            })
            .collect()
    }

    /// Waits until server `name` (route name plus its index: `sv20`) is up (`true`) or
    /// down, within `within`.
    pub fn wait_server(&self, name: &str, up: bool, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            if self
                .servers_up()
                .iter()
                .any(|(n, is_up)| n == name && *is_up == up)
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "HAProxy's server {name} not {} within {within:?}: {:?}; log:\n{}",
                if up { "up" } else { "down" },
                self.servers_up(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        self.keeper.take();
    }
}

/// Starts `command` from a thread of its own that lives until the returned sender is dropped,
/// with the child set to be killed when that thread ends (`PR_SET_PDEATHSIG`, which follows
/// the thread that forked, not the process): a test process that dies without running `Drop`
/// (killed by a timeout, an abort) takes HAProxy and the ports it holds with it, while a
/// [`Haproxy`] moved between threads keeps it.
fn spawn_tied(mut command: Command) -> std::io::Result<(Child, std::sync::mpsc::Sender<()>)> {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the child between fork and exec and only calls prctl(2),
    // which is async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let (spawned_tx, spawned) = std::sync::mpsc::channel();
    let (keeper, kept) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        let _ = spawned_tx.send(command.spawn());
        // Until the keeper is dropped (or the process ends).
        let _ = kept.recv();
    });
    let child = spawned
        .recv()
        .map_err(|_| std::io::Error::other("the spawning thread died"))??;
    Ok((child, keeper))
}

/// A TCP connection to `addr` from source address `source` (127.0.0.2 and up stand for
/// distinct miners on one machine), bounded to 10 s.
pub async fn connect_from(source: IpAddr, addr: SocketAddr) -> tokio::net::TcpStream {
    let socket = match source {
        IpAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
        IpAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
    }
    .expect("socket");
    socket
        .bind(SocketAddr::new(source, 0))
        .unwrap_or_else(|e| panic!("bind {source}: {e}"));
    tokio::time::timeout(Duration::from_secs(10), socket.connect(addr))
        .await
        .unwrap_or_else(|_| panic!("connect {source} -> {addr}: timed out"))
        .unwrap_or_else(|e| panic!("connect {source} -> {addr}: {e}"))
}
