//! Command-line entry point of the blvm-stratum-v2 pool.

use clap::Parser;

/// A Stratum V2 mining-pool server.
///
/// The pool server itself is not built yet: this release ships the Stratum V2 wire codec.
/// Running it prints this help.
#[derive(Debug, Parser)]
#[command(name = "blvm-stratum-v2", version)]
struct Cli {}

fn main() {
    let _cli = Cli::parse();
    let mut cmd = <Cli as clap::CommandFactory>::command();
    // Printing help can only fail if stdout is closed; there is nothing left to do then.
    let _ = cmd.print_long_help();
}
