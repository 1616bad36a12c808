//! The `blvm-stratum-v2` command line: the pool server (to come) and its key tooling.

use std::path::PathBuf;
use std::process::ExitCode;

use blvm_stratum_v2::noise::keys;
use clap::{CommandFactory, Parser, Subcommand};

/// Stratum V2 mining-pool server.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Create a new pool authority key and print its public key for miners.
    ///
    /// The secret key file (mode 0600, SRI key-utils text form) is never overwritten:
    /// replacing it would change the pool's identity for every configured miner.
    Keygen {
        /// Where to write the secret key.
        #[arg(long, default_value = keys::SECRET_KEY_FILE_NAME)]
        out: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        None => {
            // No server yet: show what exists.
            let _ = Cli::command().print_help();
            ExitCode::SUCCESS
        }
        Some(Command::Keygen { out }) => keygen(&out),
    }
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
