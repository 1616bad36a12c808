//! The `blvm-stratum-v2` command line: run the pool (the default), create an authority key,
//! mine on a pool with the CPU miner, load it, or serve templates to other pools.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use blvm_stratum_v2::client::{
    Backoff, ChannelKind, MinerOptions, NtimePolicy, run_miner, run_miner_reconnecting,
};
use blvm_stratum_v2::config::{Backend, DEFAULT_LOG_MAX_BYTES, PoolConfig, PoolOptions};
use blvm_stratum_v2::node::NodeApi;
use blvm_stratum_v2::node::module::{ModuleEnv, ModuleNode};
use blvm_stratum_v2::node::regtest::EmbeddedNode;
use blvm_stratum_v2::node::rpc::RpcNode;
use blvm_stratum_v2::noise::keys;
use blvm_stratum_v2::server::{DataDirLockError, StratumV2Error, StratumV2Server};
use blvm_stratum_v2::shell::rotating_log::RotatingLog;
use clap::{Parser, Subcommand};
use tracing::{error, info, warn};

/// Stratum V2 mining-pool server.
///
/// With no subcommand it runs the pool: by default on a built-in regtest chain, listening on
/// 0.0.0.0:3333, with an authority key created in the data directory on first start. Options
/// come from --config FILE (top-level keys or a [modules.blvm-stratum-v2] section) and the
/// flags below, which override the file. Logs go to stderr; set RUST_LOG (e.g. debug) for more.
///
/// Secrets: a flag's value is visible to every local user (ps, /proc/PID/cmdline). Give the
/// authority secret key as a file (--authority-key-path, mode 0600) or in
/// BLVM_STRATUM_V2_AUTHORITY_SECRET_KEY, and the RPC password as --rpc-password-file or in
/// BLVM_STRATUM_V2_RPC_PASSWORD. Secret files are refused if they are symbolic links, owned by
/// another user, or accessible by group or others.
#[derive(Parser)]
#[command(version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,

    /// TOML configuration file.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,

    #[command(flatten)]
    options: PoolOptions,
}

#[derive(Subcommand)]
enum Command {
    /// Run the pool (the default when no subcommand is given).
    Run,
    /// Create a new pool authority key and print its public key for miners.
    ///
    /// The secret key file (mode 0600, SRI key-utils text form) is never overwritten:
    /// replacing it would change the pool's identity for every configured miner.
    Keygen {
        /// Where to write the secret key.
        #[arg(long, default_value = keys::SECRET_KEY_FILE_NAME)]
        out: PathBuf,
    },
    /// A CPU Stratum V2 miner: connects, hashes, submits shares, follows new work.
    Miner(MinerArgs),
    /// Load generator: many encrypted SV2 connections submitting shares to a running pool.
    ///
    /// Run the pool with an easy target on a chain where blocks are rare, e.g.
    /// `--min-difficulty 1e-12 --max-difficulty 1e-12 --chain-bits 0x1d00ffff`.
    Loadgen(LoadgenArgs),
    /// A Template Distribution Protocol server (SV2 Template Provider) on an embedded regtest
    /// chain, for other pools (e.g. SRI's pool_sv2) to mine the same kind of templates.
    TemplateProvider(TemplateProviderArgs),
    /// The share ledger: export shares, explain a block's payouts, show balances. Reads the
    /// same configuration as the pool to find it (`ledger_url`, else DATA_DIR/ledger.sqlite3).
    Ledger(LedgerArgs),
}

/// Options of `ledger` (issue 15, payouts).
#[derive(clap::Args)]
struct LedgerArgs {
    /// The ledger: an SQLite file or a postgres:// URL (default: the configuration's
    /// `ledger_url`, else DATA_DIR/ledger.sqlite3).
    #[arg(long, value_name = "LOCATION")]
    ledger: Option<String>,
    #[command(subcommand)]
    command: LedgerCommand,
}

#[derive(Subcommand)]
enum LedgerCommand {
    /// Shares as CSV or JSON: of a time range, or of a block's PPLNS window.
    Export {
        /// First time, inclusive (ms since the Unix epoch).
        #[arg(long, value_name = "MS", conflicts_with = "block")]
        from_ms: Option<u64>,
        /// Last time, exclusive (ms since the Unix epoch).
        #[arg(long, value_name = "MS", conflicts_with = "block")]
        to_ms: Option<u64>,
        /// The window of this block (the shares its payouts were computed from).
        #[arg(long, value_name = "HASH")]
        block: Option<bitcoin::BlockHash>,
        /// csv or json.
        #[arg(long, value_enum, default_value_t = FormatArg::Csv)]
        format: FormatArg,
        /// Write here instead of standard output.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// A block's payouts computed from the shares, step by step, and whether they equal the
    /// recorded ones (exit status 3 if they do not).
    Payouts {
        /// The block.
        hash: bitcoin::BlockHash,
    },
    /// Every user's balance.
    Balances,
    /// The pool instances sharing this ledger (issue 18): each server_id held, by whom (host,
    /// addresses, data directory), since when and its last heartbeat.
    Instances,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum FormatArg {
    Csv,
    Json,
}

/// Options of the template provider.
#[derive(clap::Args)]
struct TemplateProviderArgs {
    /// Address clients (pools) connect to.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:8442")]
    listen_addr: std::net::SocketAddr,
    /// Directory of the authority key (created on first start) and of the solved blocks
    /// until the node answers (`blocks/pending`, then `blocks/submitted` or `blocks/rejected`).
    #[arg(
        long,
        value_name = "DIR",
        default_value = "blvm-template-provider-data"
    )]
    data_dir: PathBuf,
    /// Embedded chain: fixed nBits of every block (hex with 0x, or decimal).
    #[arg(long, value_name = "BITS", default_value = "0x207fffff", value_parser = parse_bits)]
    chain_bits: u32,
    /// Embedded chain: synthetic transactions per template.
    #[arg(long, value_name = "N", default_value_t = 0)]
    chain_synthetic_transactions: usize,
}

fn parse_bits(s: &str) -> Result<u32, String> {
    let r = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => s.parse(),
    };
    r.map_err(|e| format!("{s}: {e}"))
}

/// Options of the load generator.
#[derive(clap::Args)]
struct LoadgenArgs {
    /// Pool address.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:3333")]
    url: String,
    /// The pool's authority public key (printed by the pool at start); not used with --sv1.
    #[arg(long, value_name = "KEY", required_unless_present = "sv1")]
    authority_pubkey: Option<String>,
    /// Speak Stratum V1 (the pool's SV1 port, e.g. 3334) instead of SV2.
    #[arg(long)]
    sv1: bool,
    /// Connections, each with one extended channel.
    #[arg(long, default_value_t = 1000)]
    connections: usize,
    /// Shares per second per connection; 0: the next share as soon as the previous is
    /// acknowledged (see --window).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// With --rate 0: shares in flight per connection.
    #[arg(long, default_value_t = 1)]
    window: usize,
    /// Seconds of load after setup (0: connect, hold idle, close).
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    duration: f64,
    /// Seconds the connections stay idle after setup before the load (memory is read then).
    #[arg(long, value_name = "SECS", default_value_t = 1.0)]
    hold: f64,
    /// Seconds to wait for the last acknowledgements.
    #[arg(long, value_name = "SECS", default_value_t = 2.0)]
    grace: f64,
    /// Connections in setup at the same time.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    connect_concurrency: usize,
    /// Setup deadline of each connection, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    setup_timeout: f64,
    /// Worker threads of the load generator.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// The pool's process id: report its CPU time and memory (from /proc).
    #[arg(long, value_name = "PID")]
    server_pid: Option<u32>,
    /// Also write the report as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Connect again when the pool asks (Reconnect) or a connection drops during the load,
    /// with backoff, as real miners do; without it such a connection ends as an error.
    #[arg(long)]
    reconnect: bool,
}

/// Options of the CPU miner.
#[derive(clap::Args)]
struct MinerArgs {
    /// Pool address.
    #[arg(long, value_name = "HOST:PORT")]
    url: String,
    /// The pool's authority public key (printed by the pool at start); not used with --sv1.
    #[arg(long, value_name = "KEY", required_unless_present = "sv1")]
    authority_pubkey: Option<String>,
    /// Speak Stratum V1 (plaintext JSON-RPC, e.g. the pool's port 3334) instead of SV2.
    #[arg(long)]
    sv1: bool,
    /// Hashing threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Channel kind.
    #[arg(long, value_enum, default_value_t = ChannelArg::Extended)]
    channel: ChannelArg,
    /// user_identity of the channel.
    #[arg(long, default_value = "blvm-cpu-miner")]
    user: String,
    /// Announced hashrate in h/s (0: the pool's easiest target).
    #[arg(long, default_value_t = 0.0)]
    nominal_hash_rate: f32,
    /// Stop after this many accepted shares.
    #[arg(long)]
    max_shares: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long, value_name = "SECS")]
    duration: Option<u64>,
    /// Header nTime = this miner's clock + SECS, set once per job (as devices that use their
    /// own clock do; SRI's mining_device: 60). Default: the job's min_ntime.
    #[arg(long, value_name = "SECS", allow_negative_numbers = true)]
    ntime_offset: Option<i32>,
    /// Never roll nTime within a job: once a job's nonce space is spent, wait for the next.
    #[arg(long)]
    no_ntime_roll: bool,
    /// Stop when the pool asks to reconnect or the connection drops, instead of connecting
    /// again (with a backoff of 1 s doubling to 30 s after failures).
    #[arg(long)]
    no_reconnect: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ChannelArg {
    Standard,
    Extended,
}

fn main() -> ExitCode {
    // Who started us, read before anything else: a node that dies while we load our
    // configuration is still noticed.
    // SAFETY: getppid has no preconditions and cannot fail.
    let parent = unsafe { libc::getppid() };
    let cli = Cli::parse();
    let mut module_log = None;
    if matches!(cli.command, None | Some(Command::Run))
        && let Some(env) = ModuleEnv::from_env()
    {
        module_log = log_to_data_dir(&env);
        fit_address_space_limit();
    }
    init_logging(module_log.clone());
    if let Some(log) = module_log {
        let _ = MODULE_LOG.set(log);
    }
    match cli.command {
        None | Some(Command::Run) => run(cli.config, cli.options, parent),
        Some(Command::Keygen { out }) => keygen(&out),
        Some(Command::Miner(args)) => miner(args),
        Some(Command::Loadgen(args)) => loadgen(args),
        Some(Command::TemplateProvider(args)) => template_provider(args),
        Some(Command::Ledger(args)) => ledger_command(cli.config, cli.options, args),
    }
}

/// `ledger ...`: opens the ledger the configuration names and runs the command on it.
fn ledger_command(config_path: Option<PathBuf>, flags: PoolOptions, args: LedgerArgs) -> ExitCode {
    use blvm_stratum_v2::ledger::{LedgerLocation, open};
    let config = match load_config(config_path, flags) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let location = match args.ledger.as_deref().map(LedgerLocation::parse) {
        Some(Ok(l)) => l,
        Some(Err(e)) => {
            eprintln!("error: --ledger: {e}");
            return ExitCode::from(2);
        }
        // The pool's own: `ledger_url` of the configuration (or --ledger-url), else the
        // data directory's file.
        None => match config
            .ledger
            .as_ref()
            .map(|l| LedgerLocation::parse(&l.url))
        {
            Some(Ok(l)) => l,
            Some(Err(e)) => {
                eprintln!("error: ledger_url: {e}");
                return ExitCode::from(2);
            }
            None => LedgerLocation::Sqlite(config.data_dir.join("ledger.sqlite3")),
        },
    };
    // Reading must not create an empty ledger where the pool keeps none.
    if let LedgerLocation::Sqlite(path) = &location
        && !path.exists()
    {
        eprintln!("error: no ledger at {}", path.display());
        return ExitCode::from(2);
    }
    let mut ledger = match open(&location) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {}: {e}", location.redacted());
            return ExitCode::from(2);
        }
    };
    match run_ledger_command(ledger.as_mut(), &config.payout, args.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// Runs a `ledger` command on any ledger.
fn run_ledger_command(
    ledger: &mut dyn blvm_stratum_v2::ledger::Ledger,
    policy: &blvm_stratum_v2::payout::PayoutPolicy,
    command: LedgerCommand,
) -> Result<ExitCode, String> {
    use blvm_stratum_v2::ledger::ShareRange;
    use blvm_stratum_v2::ledger::export::{ExportFormat, write_shares};
    use blvm_stratum_v2::payout::explain::explain_payouts;
    use blvm_stratum_v2::payout::settle;
    use std::io::Write;

    /// A block's window: the shares its computation used (recorded, or computed now).
    fn block_window(
        ledger: &mut dyn blvm_stratum_v2::ledger::Ledger,
        policy: &blvm_stratum_v2::payout::PayoutPolicy,
        hash: bitcoin::BlockHash,
    ) -> Result<
        (
            blvm_stratum_v2::ledger::StoredBlock,
            blvm_stratum_v2::ledger::StoredShare,
            Vec<blvm_stratum_v2::ledger::StoredShare>,
        ),
        String,
    > {
        let e = |e: blvm_stratum_v2::ledger::LedgerError| e.to_string();
        let stored = ledger
            .block(hash)
            .map_err(e)?
            .ok_or_else(|| format!("no block {hash} in the ledger"))?;
        let finding = ledger
            .share_by_hash(hash)
            .map_err(e)?
            .ok_or_else(|| format!("block {hash}: its share is not in the ledger (pruned?)"))?;
        let shares = settle::window_shares(ledger, &stored.block, &finding, policy).map_err(e)?;
        Ok((stored, finding, shares))
    }

    let e = |e: blvm_stratum_v2::ledger::LedgerError| e.to_string();
    // Output that cannot be written (a full disk, a closed pipe) fails the command.
    let stdout_error = |e: std::io::Error| format!("standard output: {e}");
    match command {
        LedgerCommand::Export {
            from_ms,
            to_ms,
            block,
            format,
            out,
        } => {
            let shares = match block {
                Some(hash) => {
                    let (first, last) = match ledger.payouts(hash).map_err(e)? {
                        Some(c) => (c.first_share_id, c.last_share_id),
                        None => {
                            let (stored, finding, shares) = block_window(ledger, policy, hash)?;
                            let (split, _) = settle::compute_payouts(
                                &stored.block,
                                finding.id,
                                &shares,
                                policy,
                                0,
                            )
                            .map_err(|e| e.to_string())?;
                            (split.first_share_id, split.last_share_id)
                        }
                    };
                    ledger
                        .shares(&ShareRange::Ids {
                            from_id: first,
                            to_id: last,
                            limit: usize::MAX,
                        })
                        .map_err(e)?
                }
                None => ledger
                    .shares(&ShareRange::Time {
                        from_ms: from_ms.unwrap_or(0),
                        to_ms: to_ms.unwrap_or(u64::MAX),
                        limit: usize::MAX,
                    })
                    .map_err(e)?,
            };
            let format = match format {
                FormatArg::Csv => ExportFormat::Csv,
                FormatArg::Json => ExportFormat::Json,
            };
            // `write_shares` flushes: the buffered writer's last bytes are written (or their
            // error returned) before it is dropped.
            let written = match &out {
                Some(path) => std::fs::File::create(path)
                    .map_err(|err| format!("{}: {err}", path.display()))
                    .and_then(|f| {
                        write_shares(&shares, format, std::io::BufWriter::new(f))
                            .map_err(|e| format!("{}: {e}", path.display()))
                    }),
                None => write_shares(&shares, format, std::io::stdout().lock())
                    .map_err(|e| format!("standard output: {e}")),
            };
            written?;
            if out.is_some() {
                eprintln!("{} shares exported", shares.len());
            }
            Ok(ExitCode::SUCCESS)
        }
        LedgerCommand::Payouts { hash } => {
            let (stored, finding, shares) = block_window(ledger, policy, hash)?;
            let recorded = ledger.payouts(hash).map_err(e)?;
            let explained = explain_payouts(&stored, &finding, &shares, policy, recorded.as_ref())
                .map_err(|e| e.to_string())?;
            let mut out = std::io::stdout().lock();
            out.write_all(explained.text.as_bytes())
                .and_then(|()| out.flush())
                .map_err(stdout_error)?;
            Ok(match explained.matches_recorded {
                Some(false) => ExitCode::from(3),
                _ => ExitCode::SUCCESS,
            })
        }
        LedgerCommand::Balances => {
            let balances = ledger.balances().map_err(e)?;
            let mut out = std::io::stdout().lock();
            let (mut total, mut immature) = (0u64, 0u64);
            // Columns: user, earned (what the user's blocks still in the best chain paid it),
            // immature (the part of it from blocks with fewer than 100 confirmations: not
            // spendable yet), payout address.
            for b in &balances {
                let address = policy
                    .accounts
                    .get(&b.user)
                    .map(|a| a.clone().assume_checked().to_string())
                    .unwrap_or_default();
                total += b.earned_sat;
                immature += b.immature_sat;
                writeln!(
                    out,
                    "{}\t{}\t{}\t{}",
                    b.user, b.earned_sat, b.immature_sat, address
                )
                .map_err(stdout_error)?;
            }
            writeln!(
                out,
                "total\t{total}\t{immature}\t({} users)",
                balances.len()
            )
            .and_then(|()| out.flush())
            .map_err(stdout_error)?;
            Ok(ExitCode::SUCCESS)
        }
        LedgerCommand::Instances => {
            let rows = ledger.instances().map_err(e)?;
            let mut out = std::io::stdout().lock();
            writeln!(
                out,
                "server_id\thost\taddresses\tdata_dir\tstarted_ms\theartbeat_ms"
            )
            .map_err(stdout_error)?;
            for r in &rows {
                writeln!(
                    out,
                    "{}\t{}\t{}\t{}\t{}\t{}",
                    r.server_id, r.host, r.addresses, r.data_dir, r.started_ms, r.heartbeat_ms
                )
                .map_err(stdout_error)?;
            }
            out.flush().map_err(stdout_error)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn template_provider(args: TemplateProviderArgs) -> ExitCode {
    use blvm_stratum_v2::node::regtest::ChainConfig;
    use blvm_stratum_v2::template_provider::{TemplateProvider, TemplateProviderConfig};
    let config = TemplateProviderConfig {
        listen_addr: args.listen_addr,
        data_dir: args.data_dir,
        ..Default::default()
    };
    let node = Arc::new(EmbeddedNode::new(ChainConfig {
        bits: args.chain_bits,
        synthetic_transactions: args.chain_synthetic_transactions,
        block_interval_secs: 0,
    }));
    let tp = match TemplateProvider::new(config, node) {
        Ok(tp) => tp,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    runtime.block_on(async move {
        let stopping = stop_signal();
        let addr = match tp.start().await {
            Ok(a) => a,
            Err(e) => {
                error!("{e}");
                return ExitCode::FAILURE;
            }
        };
        println!("blvm-stratum-v2 template provider listening on {addr} (embedded regtest chain, bits {:#010x})", args.chain_bits);
        println!("authority public key: {}", tp.authority_public_key());
        stopping.await;
        tp.stop().await;
        ExitCode::SUCCESS
    })
}

fn loadgen(args: LoadgenArgs) -> ExitCode {
    let secs = |s: f64| std::time::Duration::from_secs_f64(s.clamp(0.0, 1e6));
    let opts = blvm_stratum_v2::loadgen::LoadgenOptions {
        url: args.url,
        authority_pubkey: args.authority_pubkey.unwrap_or_default(),
        sv1: args.sv1,
        connections: args.connections,
        rate: args.rate,
        window: args.window,
        duration: secs(args.duration),
        hold: secs(args.hold),
        grace: secs(args.grace),
        connect_concurrency: args.connect_concurrency,
        setup_timeout: secs(args.setup_timeout),
        threads: args.threads,
        server_pid: args.server_pid,
        reconnect: args.reconnect,
        ..Default::default()
    };
    let report = match blvm_stratum_v2::loadgen::run(opts) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    print!("{}", report.to_text());
    if let Some(path) = &args.json
        && let Err(e) = std::fs::write(path, report.to_json())
    {
        eprintln!("error: cannot write {}: {e}", path.display());
        return ExitCode::FAILURE;
    }
    if report.error_count() > 0 || report.ready == 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn miner(args: MinerArgs) -> ExitCode {
    let opts = MinerOptions {
        url: args.url,
        authority_pubkey: args.authority_pubkey.unwrap_or_default(),
        sv1: args.sv1,
        threads: args.threads,
        channel: match args.channel {
            ChannelArg::Standard => ChannelKind::Standard,
            ChannelArg::Extended => ChannelKind::Extended,
        },
        user: args.user,
        nominal_hash_rate: args.nominal_hash_rate,
        max_shares: args.max_shares,
        duration: args.duration.map(std::time::Duration::from_secs),
        ntime: NtimePolicy {
            clock_offset_secs: args.ntime_offset,
            roll: !args.no_ntime_roll,
        },
    };
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    let print = |report: &blvm_stratum_v2::client::MinerReport, connections: u64| {
        println!(
            "stopped ({:?}): {} shares accepted, {} rejected, {} jobs, {} prev hashes, {:.0} h/s, {} connection(s)",
            report.stop,
            report.shares_accepted,
            report.shares_rejected.values().sum::<u64>(),
            report.jobs_received,
            report.prev_hashes_received,
            report.hashes as f64 / report.elapsed.as_secs_f64().max(1e-9),
            connections
        );
    };
    let result = if args.no_reconnect {
        runtime
            .block_on(async { run_miner(opts, stop_signal()).await })
            .map(|report| print(&report, 1))
    } else {
        runtime
            .block_on(async {
                run_miner_reconnecting(opts, Backoff::default(), stop_signal()).await
            })
            .map(|r| print(&r.total, r.connections))
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// The module's log file, once open: its cap is set from the configuration, read after it.
static MODULE_LOG: std::sync::OnceLock<Arc<RotatingLog>> = std::sync::OnceLock::new();

/// Started by blvm-node, our stdout and stderr are pipes the node never reads: once full,
/// every log line would block the pool. They go to DATA_DIR/blvm-stratum-v2.log instead,
/// rotated at log_max_bytes (the default until the configuration is read).
fn log_to_data_dir(env: &ModuleEnv) -> Option<Arc<RotatingLog>> {
    let dir = env.data_dir.as_ref()?;
    let path = dir.join("blvm-stratum-v2.log");
    let log = std::fs::create_dir_all(dir)
        .and_then(|()| RotatingLog::open(&path, DEFAULT_LOG_MAX_BYTES, true));
    match log {
        Ok(log) => Some(log),
        Err(e) => {
            eprintln!("cannot open {}: {e}; logging to stderr", path.display());
            None
        }
    }
}

/// blvm-node caps a module's address space (512 MiB by default). glibc reserves 64 MiB of it
/// for every malloc arena, up to eight per core, so on a large machine the pool could run out of
/// address space with little memory in use: under such a cap, two arenas are enough.
fn fit_address_space_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    let capped = unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut lim) } == 0
        && lim.rlim_cur != libc::RLIM_INFINITY;
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if capped {
        // SAFETY: mallopt only sets an allocator parameter.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
    let _ = capped;
}

/// Logs to stderr, or (started by blvm-node) to the module's rotated log file.
fn init_logging(module_log: Option<Arc<RotatingLog>>) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = match module_log {
        Some(log) => builder
            .with_writer(move || log.writer())
            .with_ansi(false)
            .try_init(),
        None => builder
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
    };
}

fn keygen(out: &std::path::Path) -> ExitCode {
    let key = keys::generate_authority_keypair(&mut rand::thread_rng());
    if let Err(e) = keys::write_secret_key_file(out, &key) {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    eprintln!("wrote authority secret key to {}", out.display());
    println!("{}", keys::encode_public_key(&key.x_only_public_key().0));
    ExitCode::SUCCESS
}

/// Resolves the configuration: defaults, then the file (or, started by blvm-node as a module,
/// DATA_DIR/config.toml and the node's `[modules.blvm-stratum-v2]` section), then the flags.
fn load_config(path: Option<PathBuf>, flags: PoolOptions) -> Result<PoolConfig, String> {
    let (file, source) = match (&path, ModuleEnv::from_env()) {
        (Some(p), _) => (
            PoolOptions::from_file(p).map_err(|e| e.to_string())?,
            p.display().to_string(),
        ),
        (None, Some(env)) => {
            let (o, skipped) = PoolOptions::from_module_env(&env).map_err(|e| e.to_string())?;
            if !skipped.is_empty() {
                info!(keys = ?skipped, "module config keys that are not ours, ignored");
            }
            (o, "[modules.blvm-stratum-v2]".to_owned())
        }
        (None, None) => (PoolOptions::default(), "command line".to_owned()),
    };
    // Secrets from the environment and from secret files (checked: owner, mode, no symlink).
    let options = file
        .overlay(&flags)
        .with_secrets(|name| std::env::var(name).ok())
        .map_err(|e| e.to_string())?;
    PoolConfig::resolve(&options, &source).map_err(|e| e.to_string())
}

fn run(config_path: Option<PathBuf>, flags: PoolOptions, parent: libc::pid_t) -> ExitCode {
    let config = match load_config(config_path, flags) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(log) = MODULE_LOG.get() {
        log.set_max_bytes(config.log_max_bytes);
    }
    if !config.enabled {
        eprintln!("blvm-stratum-v2 is disabled in its configuration (enabled = false)");
        return ExitCode::SUCCESS;
    }
    // Started by blvm-node, whatever the backend (a module may use the node's JSON-RPC).
    let started_by_node = ModuleEnv::from_env().is_some();
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    runtime.block_on(async move {
        // A stop request, or (started by blvm-node) the node gone without stopping us: a
        // SIGKILLed or crashed node starts a new instance of the module when it comes back,
        // which needs our port and data directory (found blocks are on disk; it submits them).
        let signal = stop_signal();
        let mut stop = std::pin::pin!(async move {
            if started_by_node {
                tokio::select! {
                    _ = signal => {}
                    _ = parent_gone(parent) => warn!("blvm-node, which started this module, is gone; stopping"),
                }
            } else {
                signal.await
            }
        });
        let (node, backend): (Arc<dyn NodeApi>, &str) = match &config.backend {
            Backend::Embedded(chain) => (
                Arc::new(EmbeddedNode::new(chain.clone())),
                "embedded regtest chain",
            ),
            Backend::Rpc(rpc) => (Arc::new(RpcNode::new(rpc.clone())), "node JSON-RPC"),
            Backend::Module(m) => (
                Arc::new(ModuleNode::new(m.clone())),
                "blvm-node module socket",
            ),
        };
        // Where acknowledged shares go, as operators may show it (no password).
        let ledger = match &config.ledger {
            Some(l) => blvm_stratum_v2::ledger::LedgerLocation::parse(&l.url)
                .map(|location| location.redacted())
                .unwrap_or_else(|e| e.to_string()),
            None => "off (shares are acknowledged without being recorded)".into(),
        };
        let http_settings = config.http.clone();
        let sv1_on_sv2_port = config.sv1_on_sv2_port;
        // Started by blvm-node, a data directory another pool holds is the module's previous
        // instance, still stopping after its node was killed and started again: waited for,
        // as the node is (a module that exits is not started again). Run by hand, a held
        // directory fails the start.
        let built = tokio::select! {
            r = build_server(config, node, started_by_node) => r,
            _ = &mut stop => {
                info!("stopped while the data directory was held");
                return ExitCode::SUCCESS;
            }
        };
        let server = match built {
            Ok(s) => s,
            Err(e) => {
                error!("{e}");
                return ExitCode::FAILURE;
            }
        };
        // The start waits for the node's first template, as long as it takes.
        let started = tokio::select! {
            r = server.start() => r,
            _ = &mut stop => {
                info!("stopped before the first template came");
                return ExitCode::SUCCESS;
            }
        };
        let addr = match started {
            Ok(a) => a,
            Err(e) => {
                error!("{e}");
                return ExitCode::FAILURE;
            }
        };
        let key = server.authority_public_key().to_owned();
        let port = addr.port();
        println!("blvm-stratum-v2 listening on {addr} ({backend})");
        if let Some(sv1) = server.sv1_local_addr().await {
            println!("Stratum V1 miners: stratum+tcp://{sv1}");
        }
        if sv1_on_sv2_port {
            println!("Stratum V1 miners also on the SV2 port: stratum+tcp://{addr}");
        }
        println!("authority public key: {key}");
        println!("share ledger: {ledger}");
        println!(
            "mine on it: cargo run --release -- miner --url 127.0.0.1:{port} --authority-pubkey {key}"
        );
        // Issue 16: the HTTP server; if it cannot start, the pool mines on without it.
        let http = match http_settings {
            Some(settings) => {
                match blvm_stratum_v2::http::HttpServer::start(settings, server.observer()).await {
                    Ok(h) => {
                        let a = h.local_addr();
                        println!("HTTP dashboard on http://{a}/ (metrics: http://{a}/metrics, API: http://{a}/api/v1/pool)");
                        Some(h)
                    }
                    Err(e) => {
                        error!("HTTP server not started: {e}; mining goes on without it");
                        println!("HTTP server not started ({e}); mining goes on");
                        None
                    }
                }
            }
            None => {
                println!("HTTP server off");
                None
            }
        };
        // A signal, or the pool asking to stop (issue 18: an admin drain, or its server_id
        // taken over by another live instance, which is a failure).
        let failed = tokio::select! {
            _ = stop => false,
            why = server.stop_requested() => why.is_failure(),
        };
        if let Some(h) = http {
            h.stop().await;
        }
        match server.stop().await {
            Ok(()) if failed => ExitCode::FAILURE,
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                error!("{e}");
                ExitCode::FAILURE
            }
        }
    })
}

/// Builds the pool server; with `wait_for_data_dir`, a data directory another pool process
/// holds is tried again every 250 ms until it is free (said in the log now and then).
async fn build_server(
    config: PoolConfig,
    node: Arc<dyn NodeApi>,
    wait_for_data_dir: bool,
) -> Result<StratumV2Server, StratumV2Error> {
    let mut tries = 0u32;
    loop {
        match StratumV2Server::new(config.clone(), node.clone()) {
            Err(StratumV2Error::DataDir(held @ DataDirLockError::Held { .. }))
                if wait_for_data_dir =>
            {
                if tries == 0 || tries.is_power_of_two() {
                    warn!("{held}; waiting for it to stop");
                }
                tries += 1;
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
            other => return other,
        }
    }
}

/// Resolves once `parent`, the process that started us, has gone (we were re-parented).
async fn parent_gone(parent: libc::pid_t) {
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(250));
    loop {
        tick.tick().await;
        // SAFETY: getppid has no preconditions and cannot fail.
        if unsafe { libc::getppid() } != parent {
            return;
        }
    }
}

/// The multi-threaded tokio runtime the pool and the miner run on.
fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => Some(r),
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            None
        }
    }
}

/// SIGINT and SIGTERM, caught from the moment this is built: built before the pool says it is
/// listening, so a signal sent right after that line is never the default (fatal) action.
fn stop_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        async move {
            match (term, int) {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = int.recv() => {}
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
