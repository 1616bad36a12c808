//! A real blvm-node regtest node, in-process, for blvm-stratum-v2's integration tests.
//!
//! ```text
//! regtest-node --rpc-port PORT --p2p-port PORT [--datadir DIR] [--auth cookie|none|USER:PASSWORD]
//!              [--default-rpc-limits]
//!              [--modules-dir DIR [--module NAME]... [--module-config KEY=VALUE]...]
//! ```
//!
//! RPC and P2P listen on 127.0.0.1. With `--auth cookie` (the default) the node writes
//! `DIR/.cookie` (`__cookie__:<hex>`); with `USER:PASSWORD` it takes HTTP Basic auth with that
//! pair; with `none` it takes anything. The node is isolated (no outbound peers, no 30 s wait
//! for peers) and its RPC rate limits are raised so a pool polling every 200 ms is never
//! throttled (`--default-rpc-limits` keeps blvm-node's own). It prints what it listens on, then runs until killed.
//! `--modules-dir` turns blvm-node's module system on (module_host.rs, MODULES.md).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use blvm_node::config::{NodeConfig, RpcAuthConfig, RpcConfig};
use blvm_node::node::Node;
use blvm_node::ProtocolVersion;

mod module_host;

/// Rate limits high enough never to throttle a test (blvm-node's defaults: burst 50, 5 requests
/// a second, 10 new connections per IP per minute).
const HIGH_LIMIT: u32 = 100_000;

enum Auth {
    Cookie,
    None,
    UserPassword(String, String),
}

struct Args {
    rpc_port: u16,
    p2p_port: u16,
    datadir: Option<PathBuf>,
    auth: Auth,
    default_rpc_limits: bool,
    modules: module_host::ModuleArgs,
}

const USAGE: &str = "usage: regtest-node --rpc-port PORT --p2p-port PORT [--datadir DIR] \
                     [--auth cookie|none|USER:PASSWORD] [--default-rpc-limits] \
                     [--modules-dir DIR [--module NAME]... [--module-config KEY=VALUE]...]";

fn parse_args() -> Result<Args, String> {
    let mut rpc_port = None;
    let mut p2p_port = None;
    let mut datadir = None;
    let mut auth = Auth::Cookie;
    let mut default_rpc_limits = false;
    let mut modules = module_host::ModuleArgs::default();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        if modules.parse_flag(&flag, &mut value)? {
            continue;
        }
        match flag.as_str() {
            "--rpc-port" => {
                rpc_port = Some(value()?.parse().map_err(|e| format!("--rpc-port: {e}"))?)
            }
            "--p2p-port" => {
                p2p_port = Some(value()?.parse().map_err(|e| format!("--p2p-port: {e}"))?)
            }
            "--datadir" => datadir = Some(PathBuf::from(value()?)),
            "--auth" => {
                auth = match value()?.as_str() {
                    "cookie" => Auth::Cookie,
                    "none" => Auth::None,
                    pair => match pair.split_once(':') {
                        Some((u, p)) if !u.is_empty() && !p.is_empty() => {
                            Auth::UserPassword(u.to_owned(), p.to_owned())
                        }
                        _ => {
                            return Err(format!(
                                "--auth: `{pair}` is not cookie, none or USER:PASSWORD"
                            ))
                        }
                    },
                }
            }
            "--default-rpc-limits" => default_rpc_limits = true,
            "-h" | "--help" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument `{other}`\n{USAGE}")),
        }
    }
    modules.check()?;
    Ok(Args {
        rpc_port: rpc_port.ok_or_else(|| format!("--rpc-port is required\n{USAGE}"))?,
        p2p_port: p2p_port.ok_or_else(|| format!("--p2p-port is required\n{USAGE}"))?,
        datadir,
        auth,
        default_rpc_limits,
        modules,
    })
}

fn node_config(auth: &Auth, default_limits: bool) -> NodeConfig {
    let limit = |high: u32, default: u32| if default_limits { default } else { high };
    let rpc = RpcConfig {
        // Cookie mode is blvm-node's "auth disabled but rate limited" mode: it writes the
        // cookie only when this is true.
        rate_limit_when_auth_disabled: matches!(auth, Auth::Cookie),
        ip_rate_limit_burst: limit(HIGH_LIMIT, 50),
        ip_rate_limit_rate: limit(HIGH_LIMIT, 5),
        max_connections_per_ip_per_minute: limit(HIGH_LIMIT, 10),
        ..RpcConfig::default()
    };
    let rpc_auth = match auth {
        Auth::UserPassword(user, password) => Some(RpcAuthConfig {
            required: true,
            username: Some(user.clone()),
            password: Some(password.clone()),
            rate_limit_burst: limit(HIGH_LIMIT, 100),
            rate_limit_rate: limit(HIGH_LIMIT, 10),
            rate_limit_when_auth_disabled: false,
            ip_rate_limit_burst: limit(HIGH_LIMIT, 50),
            ip_rate_limit_rate: limit(HIGH_LIMIT, 5),
            ..RpcAuthConfig::default()
        }),
        Auth::Cookie | Auth::None => None,
    };
    NodeConfig {
        rpc: Some(rpc),
        rpc_auth,
        ..NodeConfig::default()
    }
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    // blvm-node's tracing to stderr, only on request (a harness that pipes stderr without reading
    // it must not fill the pipe): REGTEST_NODE_LOG=<filter>, e.g. `info` or `blvm_node::module=debug`.
    if let Ok(filter) = std::env::var("REGTEST_NODE_LOG") {
        blvm_node::utils::init_logging(Some(&filter));
    }
    // An isolated node: no outbound peer discovery, no 30 s wait for peers before modules.
    std::env::set_var("BLVM_SERVE_ONLY", "1");
    std::env::set_var("BLVM_IBD_PEER_HEIGHT_WAIT_MS", "0");

    let datadir = args.datadir.unwrap_or_else(|| {
        std::env::temp_dir().join(format!("blvm-regtest-node-{}", std::process::id()))
    });
    if let Err(e) = std::fs::create_dir_all(&datadir) {
        eprintln!("cannot create {}: {e}", datadir.display());
        return ExitCode::FAILURE;
    }
    let rpc_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, args.rpc_port));
    let p2p_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, args.p2p_port));

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut config = node_config(&args.auth, args.default_rpc_limits);
    let datadir = match args.modules.apply(&mut config, datadir) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let datadir_text = datadir.display().to_string();
    let result = runtime.block_on(async move {
        let node = Node::new(
            &datadir_text,
            p2p_addr,
            rpc_addr,
            Some(ProtocolVersion::Regtest),
        )
        .and_then(|n| n.with_config(config.clone()));
        let mut node = match node {
            Ok(n) => n,
            Err(e) => return Err(format!("cannot create the node: {e}")),
        };
        if args.modules.enabled() {
            node = node
                .with_modules_from_config(&config)
                .map_err(|e| format!("cannot enable modules: {e}"))?;
        }
        println!("rpc {rpc_addr}");
        println!("p2p {p2p_addr}");
        println!("datadir {datadir_text}");
        if matches!(args.auth, Auth::Cookie) {
            println!("cookie {datadir_text}/.cookie");
        }
        args.modules.print(&datadir);
        node.start().await.map_err(|e| format!("node stopped: {e}"))
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
