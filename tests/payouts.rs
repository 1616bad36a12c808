//! Payouts anyone can recompute (issue 15, items 4 to 6): blocks settled over MemoryLedger and
//! SqliteLedger; the recomputation test (every paid block's window exported as CSV, every
//! payout recomputed from the file alone, the same numbers as recorded); the `ledger` command
//! line run as a process on a real ledger file; the ways to cheat the arithmetic (a share
//! counted twice, shares outside the window, a second settlement, a recorded computation that
//! is not the shares') failing; pruning keeping every window; and the open-channel check over
//! the wire with a client built from SRI's crates.

#[path = "common/pool.rs"]
mod pool;
#[path = "common/postgres.rs"]
mod postgres;
#[path = "common/sri_client.rs"]
mod sri_client;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use bitcoin::hashes::{Hash, sha256d};
use bitcoin::{Address, BlockHash, CompactTarget, Network, ScriptBuf, Target};
use blvm_stratum_v2::ledger::export::{ExportFormat, read_shares, write_shares};
use blvm_stratum_v2::ledger::{
    BlockStatus, FoundBlockRecord, Ledger, LedgerBatch, MemoryLedger, Payout, PayoutComputation,
    PayoutTerms, PostgresLedger, ShareRange, ShareRecord, SqliteLedger, StoredShare,
};
use blvm_stratum_v2::payout::pplns::{self, SplitError, SplitTerms, WindowShare};
use blvm_stratum_v2::payout::{
    DONATION_USER, PayoutPolicy, PayoutScheme, prune_before, same_numbers, settle_block,
};

/// nBits of network difficulty 1: a window of 2 (the default multiple) over shares of
/// difficulty 0.01 to 0.2 holds about 20 shares.
const BITS: u32 = 0x1d00_ffff;
const REWARD: u64 = 312_500_000 + 123_457;
const USERS: [&str; 5] = ["alice", "bob", "carol", DONATION_USER, "dave"];

fn hash(n: u64) -> BlockHash {
    BlockHash::from_raw_hash(sha256d::Hash::hash(&n.to_le_bytes()))
}

fn share(n: u64) -> ShareRecord {
    // Difficulties with many significant bits, so nothing rounds by luck.
    let difficulty = 0.01 + ((n * 7919) % 190) as f64 / 1000.0 + n as f64 * 1e-9;
    ShareRecord {
        time_ms: 1_000_000 + n * 1000,
        user: USERS[(n * n % 5) as usize].into(),
        worker: format!("rig{}", n % 3).into(),
        connection_id: n % 4 + 1,
        channel_id: (n % 2) as u32 + 1,
        job_id: n as u32,
        target: Target::from_le_bytes(blvm_stratum_v2::block::target::target_of_difficulty(
            difficulty,
        )),
        difficulty,
        hash: hash(n),
    }
}

fn found(n: u64, reward: u64) -> FoundBlockRecord {
    FoundBlockRecord {
        hash: hash(n),
        height: 100 + n as u32,
        time_ms: 1_000_000 + n * 1000,
        reward_sat: reward,
        bits: CompactTarget::from_consensus(BITS),
        user: share(n).user.to_string(),
        worker: share(n).worker.to_string(),
        coinbase_payouts: None,
        payout_terms: None,
    }
}

/// Shares 1..=300 in batches of 10; blocks at every 37th share, every third one rejected, one
/// left pending. Returns the blocks accepted.
fn history(ledger: &mut dyn Ledger) -> Vec<BlockHash> {
    history_under(ledger, None)
}

/// [`history`], its blocks recorded with `terms`.
fn history_under(ledger: &mut dyn Ledger, terms: Option<PayoutTerms>) -> Vec<BlockHash> {
    let mut accepted = Vec::new();
    for batch_start in (1..=300).step_by(10) {
        let mut batch = LedgerBatch::default();
        for n in batch_start..batch_start + 10 {
            batch.shares.push(share(n));
            if n % 37 == 0 {
                batch.blocks.push(FoundBlockRecord {
                    payout_terms: terms.clone(),
                    ..found(n, REWARD + n)
                });
            }
        }
        ledger.append(&batch).unwrap();
    }
    for (i, n) in (1..=300u64).filter(|n| n % 37 == 0).enumerate() {
        let status = match i % 3 {
            _ if n == 296 => continue, // pending
            2 => BlockStatus::Rejected("bad-txns".into()),
            _ => BlockStatus::Accepted,
        };
        if status == BlockStatus::Accepted {
            accepted.push(hash(n));
        }
        ledger.set_block_status(hash(n), &status).unwrap();
    }
    accepted
}

fn policy() -> PayoutPolicy {
    PayoutPolicy {
        fee_percent: 1.5,
        ..PayoutPolicy::default()
    }
}

/// Settles every block of the history; checks the sums and that a second settlement writes
/// nothing. Returns the computations.
fn settle_all(ledger: &mut dyn Ledger, policy: &PayoutPolicy) -> Vec<PayoutComputation> {
    let accepted = history(ledger);
    assert!(accepted.len() >= 4);
    let mut out = Vec::new();
    for n in (1..=300u64).filter(|n| n % 37 == 0) {
        let settled = settle_block(ledger, hash(n), policy, 5_000_000).unwrap();
        assert_eq!(
            settled.is_some(),
            accepted.contains(&hash(n)),
            "block at {n}"
        );
        let Some(c) = settled else { continue };
        let paid: u64 = c.payouts.iter().map(|p| p.amount_sat).sum();
        assert_eq!(paid + c.fee_sat, REWARD + n, "block at {n}");
        assert_eq!(c.last_share_id, n);
        // The window is exactly N: the multiple x difficulty 1 (the ledger holds enough from
        // block 2 on).
        if c.scheme == "pplns" && c.first_share_id > 1 {
            assert!(
                (c.counted_difficulty - policy.window_multiple).abs() < 1e-12,
                "{c:?}"
            );
        }
        assert!(c.payouts.iter().all(|p| p.user != DONATION_USER));
        out.push(c);
    }
    let balances = ledger.balances().unwrap();
    // A second settlement returns the recorded one and moves no balance.
    for c in &out {
        let again = settle_block(ledger, c.block_hash, policy, 9_000_000).unwrap();
        assert_eq!(again.as_ref(), Some(c));
    }
    assert_eq!(ledger.balances().unwrap(), balances);
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    for p in out.iter().flat_map(|c| &c.payouts) {
        *expected.entry(p.user.clone()).or_default() += p.amount_sat;
    }
    let got: BTreeMap<String, u64> = balances
        .into_iter()
        .map(|b| (b.user, b.earned_sat))
        .collect();
    assert_eq!(got, expected);
    out
}

/// Exports a paid block's window as CSV, as `ledger export --block` does.
fn export_window(ledger: &mut dyn Ledger, c: &PayoutComputation, path: &Path) {
    let shares = ledger
        .shares(&ShareRange::Ids {
            from_id: c.first_share_id,
            to_id: c.last_share_id,
            limit: usize::MAX,
        })
        .unwrap();
    write_shares(
        &shares,
        ExportFormat::Csv,
        std::fs::File::create(path).unwrap(),
    )
    .unwrap();
}

/// What a miner computes from an export alone: the shares in the file, the block's hash,
/// reward and nBits, and the pool's published policy. Nothing from the ledger.
#[derive(Debug, PartialEq)]
struct Recomputed {
    fee_sat: u64,
    payouts: BTreeMap<String, u64>,
}

fn recompute_from_export(
    shares: &[StoredShare],
    block: BlockHash,
    reward_sat: u64,
    bits: u32,
    policy: &PayoutPolicy,
) -> Result<Recomputed, SplitError> {
    let finding = shares
        .iter()
        .find(|s| s.record.hash == block)
        .expect("the block's share is in its window");
    let solo =
        policy.scheme == PayoutScheme::Solo || policy.solo_users.contains(&*finding.record.user);
    let network_difficulty =
        Target::from_compact(CompactTarget::from_consensus(bits)).difficulty_float();
    let terms = SplitTerms {
        // Solo: all of the reward less the fee to the finder, whatever its share's weight.
        window_difficulty: if solo {
            f64::MAX
        } else {
            network_difficulty * policy.window_multiple
        },
        reward_sat,
        fee_ppm: pplns::fee_ppm(policy.fee_percent),
    };
    let counted = shares
        .iter()
        .filter(|s| {
            if solo {
                s.id == finding.id
            } else {
                s.id <= finding.id && !policy.solo_users.contains(&*s.record.user)
            }
        })
        .map(WindowShare::from);
    let split = pplns::split(counted, &terms)?;
    Ok(Recomputed {
        fee_sat: split.fee_sat,
        payouts: split
            .users
            .into_iter()
            .map(|u| (u.user, u.amount_sat))
            .collect(),
    })
}

fn recorded(c: &PayoutComputation) -> Recomputed {
    Recomputed {
        fee_sat: c.fee_sat,
        payouts: c
            .payouts
            .iter()
            .map(|p| (p.user.clone(), p.amount_sat))
            .collect(),
    }
}

fn read_csv(path: &Path) -> Vec<StoredShare> {
    read_shares(std::fs::File::open(path).unwrap(), ExportFormat::Csv).unwrap()
}

#[test]
fn memory_and_sqlite_settle_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let mut memory = MemoryLedger::new();
    let mut sqlite = SqliteLedger::open(dir.path().join("ledger.sqlite3")).unwrap();
    let a = settle_all(&mut memory, &policy());
    let b = settle_all(&mut sqlite, &policy());
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert!(same_numbers(x, y), "{x:?}\n{y:?}");
    }
    assert_eq!(memory.balances().unwrap(), sqlite.balances().unwrap());
}

/// PostgreSQL settles like the reference, and the command line reads it by URL.
#[test]
fn postgres_settles_the_same_and_the_command_line_reads_it() {
    let pg = postgres::TempPostgres::start();
    let url = pg.fresh_database();
    let reference = settle_all(&mut MemoryLedger::new(), &policy());
    let computations = {
        let mut ledger = PostgresLedger::connect(&url).unwrap();
        let computations = settle_all(&mut ledger, &policy());
        for c in &computations {
            // Every window recomputed from its export (from PostgreSQL this time).
            let shares = ledger
                .shares(&ShareRange::Ids {
                    from_id: c.first_share_id,
                    to_id: c.last_share_id,
                    limit: usize::MAX,
                })
                .unwrap();
            let mut csv = Vec::new();
            write_shares(&shares, ExportFormat::Csv, &mut csv).unwrap();
            let block = ledger.block(c.block_hash).unwrap().unwrap().block;
            let from_file = read_shares(&csv[..], ExportFormat::Csv).unwrap();
            let again =
                recompute_from_export(&from_file, c.block_hash, block.reward_sat, BITS, &policy())
                    .unwrap();
            assert_eq!(again, recorded(c));
        }
        computations
    };
    assert_eq!(computations.len(), reference.len());
    for (x, y) in reference.iter().zip(&computations) {
        assert!(same_numbers(x, y), "{x:?}\n{y:?}");
    }
    let dir = tempfile::tempdir().unwrap();
    let hash = computations[0].block_hash.to_string();
    let out = bin()
        .args(["--pool-fee-percent", "1.5", "--data-dir"])
        .arg(dir.path())
        .args(["ledger", "--ledger", &url, "payouts", &hash])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("Recorded: equal to this computation."),
        "{text}"
    );
}

/// The recomputation test: every paid block's window, exported, gives the recorded numbers.
#[test]
fn every_payout_is_recomputed_from_its_export_alone() {
    let dir = tempfile::tempdir().unwrap();
    for backend in ["memory", "sqlite"] {
        let mut ledger: Box<dyn Ledger> = match backend {
            "memory" => Box::new(MemoryLedger::new()),
            _ => Box::new(SqliteLedger::open(dir.path().join("ledger.sqlite3")).unwrap()),
        };
        let computations = settle_all(ledger.as_mut(), &policy());
        for c in &computations {
            let path = dir.path().join(format!("{backend}-{}.csv", c.block_hash));
            export_window(ledger.as_mut(), c, &path);
            let block = ledger.block(c.block_hash).unwrap().unwrap().block;
            let again = recompute_from_export(
                &read_csv(&path),
                c.block_hash,
                block.reward_sat,
                block.bits.to_consensus(),
                &policy(),
            )
            .unwrap();
            assert_eq!(again, recorded(c), "{backend} {}", c.block_hash);
        }
    }
}

/// Accepted blocks whose settlement never ran (the process ended between the verdict and the
/// settlement) are settled by the maintenance, once, with the same numbers.
#[test]
fn blocks_left_unsettled_are_settled_later_once() {
    use blvm_stratum_v2::payout::settle_unsettled;
    let mut settled_at_once = MemoryLedger::new();
    let expected = settle_all(&mut settled_at_once, &policy());
    let mut ledger = MemoryLedger::new();
    history(&mut ledger);
    let (settled, failed) = settle_unsettled(&mut ledger, &policy(), 5_000_000).unwrap();
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(settled, expected.len());
    for c in &expected {
        assert_eq!(ledger.payouts(c.block_hash).unwrap().as_ref(), Some(c));
    }
    assert_eq!(
        settle_unsettled(&mut ledger, &policy(), 6_000_000)
            .unwrap()
            .0,
        0
    );
    assert_eq!(
        ledger.balances().unwrap(),
        settled_at_once.balances().unwrap()
    );
}

#[test]
fn cheating_the_arithmetic_fails() {
    let mut ledger = MemoryLedger::new();
    let computations = settle_all(&mut ledger, &policy());
    let c = &computations[1];
    let block = ledger.block(c.block_hash).unwrap().unwrap().block;
    let window = ledger
        .shares(&ShareRange::Ids {
            from_id: c.first_share_id,
            to_id: c.last_share_id,
            limit: usize::MAX,
        })
        .unwrap();
    let recompute = |shares: &[StoredShare]| {
        recompute_from_export(shares, c.block_hash, block.reward_sat, BITS, &policy())
    };
    assert_eq!(recompute(&window).unwrap(), recorded(c));

    // A user's share counted twice: refused.
    let mut twice = window.clone();
    twice.push(window[window.len() / 2].clone());
    assert!(matches!(
        recompute(&twice),
        Err(SplitError::DuplicateShare { .. })
    ));

    // Shares outside the window change nothing: older ones (the window is full), newer ones
    // (after the block's own share).
    let mut outside = window.clone();
    let mut older = window[0].clone();
    older.id = c.first_share_id - 1;
    older.record.user = "mallory".into();
    older.record.difficulty = 1e6;
    outside.push(older);
    let mut newer = window[0].clone();
    newer.id = c.last_share_id + 1;
    newer.record.user = "mallory".into();
    newer.record.difficulty = 1e6;
    outside.insert(0, newer);
    assert_eq!(recompute(&outside).unwrap(), recorded(c));

    // A share's difficulty raised in the data: the numbers no longer match the record.
    let mut inflated = window.clone();
    let last = inflated.len() - 1;
    inflated[last].record.difficulty *= 4.0;
    assert_ne!(recompute(&inflated).unwrap(), recorded(c));

    // A second settlement, even with another policy, writes nothing.
    let greedy = PayoutPolicy {
        fee_percent: 50.0,
        ..policy()
    };
    let again = settle_block(&mut ledger, c.block_hash, &greedy, 1).unwrap();
    assert_eq!(again.as_ref(), Some(c));

    // A recorded computation that is not the shares' is told apart.
    let mut forged = c.clone();
    forged.payouts[0].amount_sat += 1;
    forged.fee_sat -= 1;
    assert!(!same_numbers(&forged, c));
}

/// `[users.bob] scheme = "solo"`: bob's blocks pay bob alone, his shares are in no window (the
/// windows reach further back to stay N), and every payout is still recomputed from its
/// export.
#[test]
fn solo_users_are_paid_alone_and_left_out_of_windows() {
    let dir = tempfile::tempdir().unwrap();
    let p = PayoutPolicy {
        solo_users: ["bob".to_owned()].into(),
        ..policy()
    };
    let mut ledger = SqliteLedger::open(dir.path().join("ledger.sqlite3")).unwrap();
    let computations = settle_all(&mut ledger, &p);
    let (solo, pooled): (Vec<_>, Vec<_>) = computations.iter().partition(|c| c.scheme == "solo");
    assert_eq!(solo.len(), 2, "blocks 74 and 259 are bob's");
    for c in &solo {
        assert_eq!(c.payouts.len(), 1);
        assert_eq!(c.payouts[0].user, "bob");
        assert_eq!(c.first_share_id, c.last_share_id);
    }
    for c in &pooled {
        assert!(c.payouts.iter().all(|p| p.user != "bob"), "{c:?}");
    }
    for c in &computations {
        let path = dir.path().join(format!("{}.csv", c.block_hash));
        export_window(&mut ledger, c, &path);
        let block = ledger.block(c.block_hash).unwrap().unwrap().block;
        let again =
            recompute_from_export(&read_csv(&path), c.block_hash, block.reward_sat, BITS, &p)
                .unwrap();
        assert_eq!(again, recorded(c), "{}", c.scheme);
    }
}

/// An operator changes the fee, the window and the solo accounts and restarts: the blocks
/// found before are settled (here after the restart, as a block whose settlement the stop
/// interrupted is) by the terms recorded with them, the numbers they would have had under the
/// old configuration, and recompute from an export under those terms; a block recorded
/// without terms (an older program) by the configuration of the day.
#[test]
fn blocks_are_settled_by_the_terms_they_were_found_under() {
    let then = PayoutPolicy {
        fee_percent: 2.5,
        window_multiple: 1.5,
        solo_users: ["bob".to_owned()].into(),
        ..PayoutPolicy::default()
    };
    let now = PayoutPolicy {
        fee_percent: 7.0,
        window_multiple: 3.0,
        ..policy()
    };
    let expected = settle_all(&mut MemoryLedger::new(), &then);
    let dir = tempfile::tempdir().unwrap();
    let mut ledger = SqliteLedger::open(dir.path().join("ledger.sqlite3")).unwrap();
    history_under(&mut ledger, Some(then.terms()));
    let mut settled = 0;
    for e in &expected {
        assert_eq!(
            ledger
                .block(e.block_hash)
                .unwrap()
                .unwrap()
                .block
                .payout_terms,
            Some(then.terms())
        );
        let c = settle_block(&mut ledger, e.block_hash, &now, 1)
            .unwrap()
            .unwrap();
        assert!(same_numbers(&c, e), "{c:?} against {e:?}");
        let path = dir.path().join(format!("{}.csv", c.block_hash));
        export_window(&mut ledger, &c, &path);
        let again =
            recompute_from_export(&read_csv(&path), c.block_hash, c.reward_sat, BITS, &then)
                .unwrap();
        assert_eq!(again, recorded(&c));
        settled += 1;
    }
    assert!(
        expected.iter().any(|c| c.scheme == "solo") && expected.iter().any(|c| c.fee_sat > 0),
        "bob's blocks solo under the old terms: {expected:?}"
    );
    assert!(settled >= 4);
    // Without recorded terms: today's configuration.
    let mut older = MemoryLedger::new();
    history(&mut older);
    let today = settle_all(&mut MemoryLedger::new(), &now);
    for e in &today {
        let c = settle_block(&mut older, e.block_hash, &now, 1)
            .unwrap()
            .unwrap();
        assert!(same_numbers(&c, e), "{c:?} against {e:?}");
    }
    assert!(today.iter().all(|c| c.scheme == "pplns"));
}

#[test]
fn solo_scheme_pays_the_finder() {
    let mut ledger = MemoryLedger::new();
    let solo = PayoutPolicy {
        scheme: PayoutScheme::Solo,
        fee_percent: 2.0,
        ..PayoutPolicy::default()
    };
    history(&mut ledger);
    let c = settle_block(&mut ledger, hash(37), &solo, 1)
        .unwrap()
        .unwrap();
    let fee = (REWARD + 37) * 2 / 100;
    assert_eq!(c.scheme, "solo");
    assert_eq!(c.fee_sat, fee);
    assert_eq!(
        c.payouts,
        [Payout {
            user: share(37).user.to_string(),
            amount_sat: REWARD + 37 - fee,
            difficulty: c.payouts[0].difficulty,
        }]
    );
}

#[test]
fn pruning_keeps_every_window_a_payout_needs() {
    let mut ledger = MemoryLedger::new();
    let p = PayoutPolicy {
        retention_secs: 0,
        ..policy()
    };
    // Every accepted block settled; block 296 is pending: its window must stay. Nothing is
    // within the retention.
    settle_all(&mut ledger, &p);
    let pruned = prune_before(
        &mut ledger,
        &p,
        CompactTarget::from_consensus(BITS),
        u64::MAX,
    )
    .unwrap();
    assert!(pruned > 200, "{pruned}");
    assert!(ledger.share_by_hash(hash(296)).unwrap().is_some());
    ledger
        .set_block_status(hash(296), &BlockStatus::Accepted)
        .unwrap();
    let c = settle_block(&mut ledger, hash(296), &p, 1)
        .unwrap()
        .unwrap();
    assert!((c.counted_difficulty - 2.0).abs() < 1e-12);
    // Within the retention nothing goes.
    let mut fresh = MemoryLedger::new();
    history(&mut fresh);
    let kept = prune_before(
        &mut fresh,
        &policy(),
        CompactTarget::from_consensus(BITS),
        2_000_000,
    )
    .unwrap();
    assert_eq!(kept, 0);
}

/// `address` with its last character changed: its checksum fails.
fn typo(address: &str) -> String {
    let (head, last) = address.split_at(address.len() - 1);
    format!("{head}{}", if last == "q" { "p" } else { "q" })
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_blvm-stratum-v2"))
}

/// The `ledger` command line on a real SQLite file: export a block's window, explain its
/// payouts (equal to the recorded ones), balances; a forged record is called out (exit 3).
#[test]
fn the_ledger_command_line_on_a_real_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ledger.sqlite3");
    let computations = {
        let mut ledger = SqliteLedger::open(&file).unwrap();
        settle_all(&mut ledger, &policy())
    };
    let c = &computations[2];
    let csv = dir.path().join("window.csv");
    let run = |args: &[&str]| {
        let out = bin()
            .args(["--pool-fee-percent", "1.5", "--data-dir"])
            .arg(dir.path())
            .arg("ledger")
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let hash = c.block_hash.to_string();
    let (code, _, err) = run(&[
        "--ledger",
        file.to_str().unwrap(),
        "export",
        "--block",
        &hash,
        "--out",
        csv.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "{err}");
    let block = SqliteLedger::open(&file)
        .unwrap()
        .block(c.block_hash)
        .unwrap()
        .unwrap()
        .block;
    let again = recompute_from_export(
        &read_csv(&csv),
        c.block_hash,
        block.reward_sat,
        BITS,
        &policy(),
    )
    .unwrap();
    assert_eq!(again, recorded(c));

    let (code, out, err) = run(&["payouts", &hash]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("Recorded: equal to this computation."),
        "{out}"
    );
    assert!(
        out.contains(&format!("ids {}..={}", c.first_share_id, c.last_share_id)),
        "{out}"
    );
    for p in &c.payouts {
        assert!(out.contains(&format!("{} sat", p.amount_sat)), "{out}");
        assert!(out.contains(&p.user), "{out}");
    }
    assert!(
        out.contains(&format!("= {} sat (the reward)", c.reward_sat)),
        "{out}"
    );

    let (code, out, err) = run(&["balances"]);
    assert_eq!(code, Some(0), "{err}");
    let total: u64 = computations
        .iter()
        .flat_map(|c| &c.payouts)
        .map(|p| p.amount_sat)
        .sum();
    assert!(out.contains(&format!("total\t{total}\t")), "{out}");

    // JSON export of a time range reads back to the ledger's shares.
    let json = dir.path().join("range.json");
    let (code, _, err) = run(&[
        "export",
        "--from-ms",
        "1010000",
        "--to-ms",
        "1020000",
        "--format",
        "json",
        "--out",
        json.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "{err}");
    let shares = read_shares(std::fs::File::open(&json).unwrap(), ExportFormat::Json).unwrap();
    assert_eq!(
        shares.iter().map(|s| s.id).collect::<Vec<_>>(),
        (10..20).collect::<Vec<_>>()
    );
    assert_eq!(shares[0].record, share(10));

    // No ledger where the configuration says: an error, and no file created.
    let empty = tempfile::tempdir().unwrap();
    let (code, _, err) = run_with_fee(empty.path(), "1", &["balances"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("no ledger at"), "{err}");
    assert!(!empty.path().join("ledger.sqlite3").exists());

    // A block whose recorded payouts are not its shares' (here: settled with another fee) is
    // called out.
    let (code, out, _) = run_with_fee(dir.path(), "7", &["payouts", &hash]);
    assert_eq!(code, Some(3), "{out}");
    assert!(out.contains("Recorded: DIFFERENT"), "{out}");
}

/// A `ledger` command whose output cannot be written (a full disk: /dev/full) fails with the
/// reason (exit 2, as for any other error) instead of exiting 0 with its output lost: the
/// JSON export to a file, whose buffered writer was dropped unflushed (the error with it),
/// and `balances`, `instances` and `payouts` on standard output, which ignored their write
/// errors (`payouts` panicked).
#[test]
fn a_ledger_command_whose_output_cannot_be_written_fails() {
    let dir = tempfile::tempdir().unwrap();
    let computations = {
        let mut ledger = SqliteLedger::open(dir.path().join("ledger.sqlite3")).unwrap();
        settle_all(&mut ledger, &policy())
    };
    let hash = computations[2].block_hash.to_string();
    let run = |args: &[&str], stdout: std::process::Stdio| {
        let out = bin()
            .args(["--pool-fee-percent", "1.5", "--data-dir"])
            .arg(dir.path())
            .arg("ledger")
            .args(args)
            .stdout(stdout)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let full = || {
        std::process::Stdio::from(
            std::fs::OpenOptions::new()
                .write(true)
                .open("/dev/full")
                .expect("/dev/full"),
        )
    };
    const FULL: &str = "No space left on device";
    // Ten shares: less than the writer's buffer holds, so nothing is written before the end.
    let range = ["--from-ms", "1010000", "--to-ms", "1020000"];
    for format in ["json", "csv"] {
        let args = [
            &["export", "--format", format, "--out", "/dev/full"][..],
            &range,
        ]
        .concat();
        let (code, err) = run(&args, std::process::Stdio::null());
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(
            err.contains("/dev/full") && err.contains(FULL),
            "{args:?}: {err}"
        );
        let args = [&["export", "--format", format][..], &range].concat();
        let (code, err) = run(&args, full());
        assert_eq!(code, Some(2), "{args:?} > /dev/full: {err}");
        assert!(err.contains(FULL), "{args:?} > /dev/full: {err}");
    }
    for args in [&["balances"][..], &["instances"], &["payouts", &hash]] {
        let (code, err) = run(args, full());
        assert_eq!(code, Some(2), "{args:?} > /dev/full: {err}");
        assert!(err.contains(FULL), "{args:?} > /dev/full: {err}");
    }
    // Written where it can be, each of them succeeds.
    for args in [&["balances"][..], &["instances"], &["payouts", &hash]] {
        let (code, err) = run(args, std::process::Stdio::null());
        assert_eq!(code, Some(0), "{args:?}: {err}");
    }
}

fn run_with_fee(data_dir: &Path, fee: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let out = bin()
        .args(["--pool-fee-percent", fee, "--data-dir"])
        .arg(data_dir)
        .arg("ledger")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Over the wire: a payout address of another network or a malformed one, or a name with a
/// control character, is refused with `unknown-user` (in the solo forms too); accounts, addresses of the node's network, full
/// donations and the solo forms (`sri/solo/ADDRESS/w`, `sri/donate/PERCENT/ADDRESS/w`,
/// extended and standard) open.
#[tokio::test]
async fn open_channel_checks_the_payout_address() {
    let pool = pool::TestPool::start(pool::RARE_BLOCKS, 10).await;
    let regtest = Address::p2wsh(&ScriptBuf::new(), Network::Regtest).to_string();
    let main = Address::p2wsh(&ScriptBuf::new(), Network::Bitcoin).to_string();
    let mut miner = sri_client::Miner::ready(pool.addr, &pool.key, 0)
        .await
        .unwrap();
    let refused = |r: std::io::Result<u32>| r.err().map(|e| e.to_string()).unwrap_or_default();
    for (extended, identity, code) in [
        (true, format!("{main}.rig1"), "unknown-user"),
        (false, format!("{}.rig", typo(&regtest)), "unknown-user"),
        (true, "sri/solo/nothing/w".to_owned(), "unknown-user"),
        (true, "sri/mine".to_owned(), "unknown-user"),
        (true, format!("sri/solo/{main}/w"), "unknown-user"),
        (
            false,
            format!("sri/donate/10/{}/w", typo(&regtest)),
            "unknown-user",
        ),
        // A control character: a name the ledger could not keep (PostgreSQL's text holds no
        // NUL).
        (true, "alice.\0".to_owned(), "unknown-user"),
        (false, "bob\u{1b}.rig".to_owned(), "unknown-user"),
    ] {
        let why = refused(miner.open(extended, &identity).await);
        assert!(
            why.contains(&format!("open refused: {code}")),
            "{identity}: {why}"
        );
    }
    for (extended, identity) in [
        (true, format!("{regtest}.rig1")),
        (false, regtest.clone()),
        (true, "alice.rig1".to_owned()),
        (true, "sri/donate/w".to_owned()),
        (true, format!("sri/solo/{regtest}/w")),
        (false, format!("sri/solo/{regtest}/w")),
        (false, format!("sri/donate/10/{regtest}/w")),
    ] {
        // A connection each: the pool's later jobs for one channel would come between
        // another's opening messages.
        let mut miner = sri_client::Miner::ready(pool.addr, &pool.key, 0)
            .await
            .unwrap();
        miner
            .open(extended, &identity)
            .await
            .unwrap_or_else(|e| panic!("{identity}: {e}"));
    }
    pool.stop().await;
}

/// Runs the real pool (embedded chain, blocks every ~65,000 hashes, shares of difficulty
/// 1e-6: a window of twice the network difficulty holds about 30 shares) with its default
/// SQLite ledger and `options`, one CPU miner per user for 8 s, then stops it. Returns the
/// data directory (the ledger is `ledger.sqlite3` in it), the pool's payout policy and the
/// shares each miner saw acknowledged.
async fn mine_through_the_pool(
    options: blvm_stratum_v2::config::PoolOptions,
    users: &[String],
) -> (tempfile::TempDir, PayoutPolicy, Vec<u64>) {
    use std::sync::Arc;
    use std::time::Duration;

    use blvm_stratum_v2::client::{ChannelKind, MinerOptions, run_miner};
    use blvm_stratum_v2::config::{PoolConfig, PoolOptions};
    use blvm_stratum_v2::node::regtest::{ChainConfig, EmbeddedNode};
    use blvm_stratum_v2::server::StratumV2Server;

    const CHAIN_BITS: u32 = 0x1f00_ffff;
    let dir = tempfile::tempdir().unwrap();
    let config = PoolConfig::resolve(
        &PoolOptions {
            listen_addr: Some("127.0.0.1:0".into()),
            data_dir: Some(dir.path().to_path_buf()),
            min_difficulty: Some(1e-6),
            max_difficulty: Some(1e-6),
            chain_bits: Some(CHAIN_BITS),
            share_rate_multiple: Some(1e9),
            ..options
        },
        "test",
    )
    .expect("config");
    let policy = config.payout.clone();
    let node = Arc::new(EmbeddedNode::new(ChainConfig {
        bits: CHAIN_BITS,
        synthetic_transactions: 2,
        block_interval_secs: 0,
    }));
    let server = StratumV2Server::new(config, node).expect("server");
    let url = server.start().await.expect("started").to_string();
    let miners: Vec<_> = users
        .iter()
        .map(|user| {
            let opts = MinerOptions {
                url: url.clone(),
                authority_pubkey: server.authority_public_key().to_owned(),
                threads: 1,
                channel: ChannelKind::Extended,
                user: user.clone(),
                duration: Some(Duration::from_secs(8)),
                ..MinerOptions::default()
            };
            tokio::spawn(run_miner(opts, std::future::pending::<()>()))
        })
        .collect();
    let mut acknowledged = Vec::new();
    for m in miners {
        let report = tokio::time::timeout(Duration::from_secs(60), m)
            .await
            .expect("miner finished in time")
            .unwrap()
            .expect("miner ran");
        assert!(report.shares_accepted > 0, "{report:?}");
        acknowledged.push(report.shares_accepted);
    }
    tokio::time::timeout(Duration::from_secs(30), server.stop())
        .await
        .expect("stops in time")
        .expect("stops");
    (dir, policy, acknowledged)
}

/// The whole path through the real pool: two miners (a regtest address and a `[users]`-less
/// account) mine on the embedded chain with the default SQLite ledger; every block the node
/// accepts is settled by the pool itself (its reward split over its window, the fee to the
/// pool), exactly once; each window exported and recomputed from the file alone gives the
/// recorded numbers, and `ledger payouts HASH` (a separate process) agrees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_settles_the_blocks_it_finds_and_the_export_recomputes_them() {
    let alice = Address::p2wpkh(
        &bitcoin::CompressedPublicKey::from_slice(&[2; 33]).unwrap(),
        Network::Regtest,
    )
    .to_string();
    let (dir, policy, _) = mine_through_the_pool(
        Default::default(),
        &[format!("{alice}.rig1"), "bob.rig2".to_owned()],
    )
    .await;

    let file = dir.path().join("ledger.sqlite3");
    let mut ledger = SqliteLedger::open(&file).unwrap();
    let blocks = ledger.blocks(1000).unwrap();
    let accepted: Vec<_> = blocks.iter().filter(|b| b.status.was_accepted()).collect();
    assert!(accepted.len() >= 2, "blocks: {blocks:?}");
    let mut users_paid = std::collections::BTreeSet::new();
    let mut earned: BTreeMap<String, u64> = BTreeMap::new();
    for b in &accepted {
        let hash = b.block.hash;
        let c = ledger
            .payouts(hash)
            .unwrap()
            .unwrap_or_else(|| panic!("accepted block {hash} was settled by the pool"));
        let paid: u64 = c.payouts.iter().map(|p| p.amount_sat).sum();
        assert_eq!(paid + c.fee_sat, b.block.reward_sat, "{c:?}");
        assert!(c.fee_sat > 0, "the default 1% fee");
        for p in &c.payouts {
            users_paid.insert(p.user.clone());
            *earned.entry(p.user.clone()).or_default() += p.amount_sat;
        }
        let path = dir.path().join(format!("{hash}.csv"));
        export_window(&mut ledger, &c, &path);
        let again = recompute_from_export(
            &read_csv(&path),
            hash,
            b.block.reward_sat,
            b.block.bits.to_consensus(),
            &policy,
        )
        .unwrap();
        assert_eq!(again, recorded(&c), "block {hash}");
        let out = bin()
            .arg("--data-dir")
            .arg(dir.path())
            .args(["ledger", "payouts", &hash.to_string()])
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // The block was written with the terms it was found under: after a restart with
        // another fee (and window), `ledger payouts` still explains it by its own terms.
        assert_eq!(b.block.payout_terms, Some(policy.terms()), "block {hash}");
        let (code, out, err) = {
            let out = bin()
                .args(["--pool-fee-percent", "7", "--pplns-window-multiple", "0.5"])
                .arg("--data-dir")
                .arg(dir.path())
                .args(["ledger", "payouts", &hash.to_string()])
                .output()
                .unwrap();
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        };
        assert_eq!(code, Some(0), "{out}{err}");
        assert!(
            out.contains(
                "Terms recorded with the block when it was found: scheme pplns, window 2 x"
            ) && out.contains("fee 1%")
                && out.contains("Recorded: equal to this computation."),
            "{out}"
        );
    }
    // Both miners' shares were in windows; balances are the sum of the payouts.
    assert!(
        users_paid.contains(&alice) && users_paid.contains("bob"),
        "{users_paid:?}"
    );
    let balances: BTreeMap<String, u64> = ledger
        .balances()
        .unwrap()
        .into_iter()
        .map(|b| (b.user, b.earned_sat))
        .collect();
    let statuses: Vec<_> = blocks
        .iter()
        .map(|b| {
            (
                b.block.height,
                b.block.hash,
                b.status.clone(),
                ledger.payouts(b.block.hash).unwrap().is_some(),
            )
        })
        .collect();
    assert_eq!(balances, earned, "blocks: {statuses:?}");
    // Blocks the node did not accept (none expected here, but never paid if any).
    for b in blocks.iter().filter(|b| !b.status.was_accepted()) {
        assert!(ledger.payouts(b.block.hash).unwrap().is_none(), "{b:?}");
    }
}

/// Bounded through the real pool: with no retention, the pool prunes on new tips what no
/// window needs; what is left still holds the newest block's window, and its payouts still
/// recompute from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_prunes_what_no_window_needs() {
    let (dir, policy, acknowledged) = mine_through_the_pool(
        blvm_stratum_v2::config::PoolOptions {
            ledger_retention_secs: Some(0),
            ..Default::default()
        },
        &["carol.rig".to_owned()],
    )
    .await;
    let acknowledged = acknowledged[0];

    let mut ledger = SqliteLedger::open(dir.path().join("ledger.sqlite3")).unwrap();
    let rows = ledger
        .shares(&ShareRange::Ids {
            from_id: 0,
            to_id: u64::MAX,
            limit: usize::MAX,
        })
        .unwrap();
    let accepted: Vec<_> = ledger
        .blocks(1000)
        .unwrap()
        .into_iter()
        .filter(|b| b.status.was_accepted())
        .collect();
    assert!(accepted.len() >= 3, "{} blocks", accepted.len());
    assert!(
        (rows.len() as u64) < acknowledged,
        "{} rows kept of {} acknowledged: nothing pruned",
        rows.len(),
        acknowledged
    );
    // Every share ever stored had an id; the ids left are the newest ones, in one run.
    assert_eq!(
        rows.last().unwrap().id,
        ledger.last_share_id().unwrap(),
        "the newest share is kept"
    );
    let newest = &accepted[0];
    let c = ledger.payouts(newest.block.hash).unwrap().expect("settled");
    if rows.first().unwrap().id <= c.first_share_id {
        let path = dir.path().join("newest.csv");
        export_window(&mut ledger, &c, &path);
        let again = recompute_from_export(
            &read_csv(&path),
            newest.block.hash,
            newest.block.reward_sat,
            newest.block.bits.to_consensus(),
            &policy,
        )
        .unwrap();
        assert_eq!(again, recorded(&c));
    }
}

/// What a miner recomputes for a block whose coinbase paid the window, from the window's
/// export and the terms recorded with the block (S, the window's size, the fee, the dust
/// threshold, the cap; the block's reward), with nothing of the pool's code but the published
/// split: the users paid (in the coinbase's order) and the pool's rest.
fn recompute_coinbase_from_export(
    shares: &[StoredShare],
    terms: &blvm_stratum_v2::ledger::CoinbasePayouts,
    reward_sat: u64,
    addresses: &BTreeMap<String, ScriptBuf>,
) -> (Vec<(String, u64)>, u64) {
    let counted = shares
        .iter()
        // Channels paid in their own coinbase are in no window (full donations are).
        .filter(|s| {
            s.id <= terms.last_share_id
                && !s.record.user.starts_with("sri/solo/")
                && !s.record.user.starts_with("sri/donate/")
        })
        .map(WindowShare::from);
    let split = pplns::split(
        counted,
        &SplitTerms {
            window_difficulty: terms.window_difficulty,
            reward_sat,
            fee_ppm: terms.fee_ppm,
        },
    )
    .unwrap();
    let mut paid: Vec<(String, u64)> = split
        .users
        .iter()
        .filter(|u| {
            addresses.get(&u.user).is_some_and(|script| {
                u.amount_sat >= terms.dust_sat.max(script.minimal_non_dust().to_sat())
            })
        })
        .map(|u| (u.user.clone(), u.amount_sat))
        .collect();
    paid.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    paid.truncate(terms.max_outputs as usize);
    let to_users: u64 = paid.iter().map(|(_, a)| a).sum();
    (paid, reward_sat - to_users)
}

/// Payouts in the coinbase through the real pool (`coinbase_payouts = true`): three miners on
/// the embedded chain, an address user, an account with a `[users]` address and an account
/// without one. Every accepted block mined on work that paid the window has a coinbase paying
/// the users with an address exactly what a recomputation from the window's export gives (the
/// one without an address never, its part to the pool), passes rust-bitcoin's block checks,
/// is settled once as `coinbase-pplns` moving no balance, and `ledger payouts` agrees; the
/// blocks mined before the first window was read are settled by PPLNS into balances.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_pays_the_window_in_the_coinbase() {
    use bitcoin::consensus::encode::deserialize_hex;
    use blvm_stratum_v2::config::{PoolOptions, UserAccountOptions};

    let alice = Address::p2wsh(&ScriptBuf::from_bytes(vec![0x51, 1]), Network::Regtest);
    let carol = Address::p2wsh(&ScriptBuf::from_bytes(vec![0x51, 3]), Network::Regtest);
    let options = PoolOptions {
        coinbase_payouts: Some(true),
        coinbase_payout_dust_sat: Some(1_000),
        template_refresh_secs: Some(1),
        users: Some(
            [(
                "carol".to_owned(),
                UserAccountOptions {
                    address: carol.to_string(),
                    scheme: None,
                },
            )]
            .into(),
        ),
        ..Default::default()
    };
    let (dir, policy, _) = mine_through_the_pool(
        options,
        &[
            format!("{alice}.rig1"),
            "carol.rig2".to_owned(),
            "dave.rig3".to_owned(),
        ],
    )
    .await;
    assert!(policy.coinbase_payouts.is_some());
    let addresses: BTreeMap<String, ScriptBuf> = [
        (alice.to_string(), alice.script_pubkey()),
        ("carol".to_owned(), carol.script_pubkey()),
    ]
    .into();
    // The command line reads the same configuration (the [users] table, the options).
    let config = dir.path().join("pool.toml");
    std::fs::write(
        &config,
        format!("coinbase_payouts = true\n[users.carol]\naddress = \"{carol}\"\n"),
    )
    .unwrap();

    let mut ledger = SqliteLedger::open(dir.path().join("ledger.sqlite3")).unwrap();
    let blocks = ledger.blocks(1000).unwrap();
    let accepted: Vec<_> = blocks.iter().filter(|b| b.status.was_accepted()).collect();
    let mut in_coinbase = 0;
    let mut paid_users = std::collections::BTreeSet::new();
    let mut dave_went_to_the_pool = false;
    let mut earned: BTreeMap<String, u64> = BTreeMap::new();
    for b in &accepted {
        let hash = b.block.hash;
        let c = ledger.payouts(hash).unwrap().expect("settled by the pool");
        let paid_total: u64 = c.payouts.iter().map(|p| p.amount_sat).sum();
        assert_eq!(paid_total + c.fee_sat, b.block.reward_sat, "{c:?}");
        // Settled once: a second settlement returns the record and writes nothing.
        assert_eq!(
            settle_block(&mut ledger, hash, &policy, 1)
                .unwrap()
                .as_ref(),
            Some(&c)
        );
        let Some(terms) = &b.block.coinbase_payouts else {
            // Mined before the first window was read: PPLNS into balances.
            assert_eq!(c.scheme, "pplns", "{c:?}");
            for p in &c.payouts {
                *earned.entry(p.user.clone()).or_default() += p.amount_sat;
            }
            continue;
        };
        in_coinbase += 1;
        assert_eq!(c.scheme, "coinbase-pplns");
        assert_eq!(c.fee_sat, terms.pool_sat);
        assert_eq!(c.payouts, terms.payouts);
        assert_eq!(c.last_share_id, terms.last_share_id);
        assert!(c.payouts.iter().all(|p| p.user != "dave"), "{c:?}");
        // From the window's export alone: the same outputs.
        let path = dir.path().join(format!("{hash}.csv"));
        export_window(&mut ledger, &c, &path);
        let window = read_csv(&path);
        let (users, to_pool) =
            recompute_coinbase_from_export(&window, terms, b.block.reward_sat, &addresses);
        let recorded: Vec<(String, u64)> = c
            .payouts
            .iter()
            .map(|p| (p.user.clone(), p.amount_sat))
            .collect();
        assert_eq!((&users, to_pool), (&recorded, c.fee_sat), "block {hash}");
        if window
            .iter()
            .any(|s| &*s.record.user == "dave" && s.id >= c.first_share_id)
        {
            dave_went_to_the_pool = true;
        }
        // The block as submitted: its coinbase pays exactly that, and it is a valid block.
        let file = dir.path().join(format!("blocks/submitted/{hash}.hex"));
        let block: bitcoin::Block =
            deserialize_hex(std::fs::read_to_string(&file).unwrap().trim()).unwrap();
        assert_eq!(block.block_hash(), hash);
        assert!(block.check_merkle_root(), "merkle root");
        assert!(block.check_witness_commitment(), "witness commitment");
        assert!(block.header.validate_pow(block.header.target()).is_ok());
        // BIP34 (heights up to 16 are OP_N, which rust-bitcoin's reader leaves out).
        assert_eq!(
            blvm_stratum_v2::mining::coinbase::bip34_height(&block),
            Some(b.block.height)
        );
        let outputs = &block.txdata[0].output;
        for (o, (user, amount)) in outputs.iter().zip(&users) {
            assert_eq!(o.value.to_sat(), *amount);
            assert_eq!(&o.script_pubkey, &addresses[user]);
            paid_users.insert(user.clone());
        }
        if to_pool > 0 {
            assert_eq!(outputs[users.len()].value.to_sat(), to_pool);
            assert!(
                !addresses
                    .values()
                    .any(|s| s == &outputs[users.len()].script_pubkey)
            );
        }
        let total: u64 = outputs.iter().map(|o| o.value.to_sat()).sum();
        assert_eq!(total, b.block.reward_sat);
        assert!(block.weight().to_wu() <= 4_000_000);
        // `ledger payouts` explains it step by step and agrees with the record.
        let out = bin()
            .arg("--config")
            .arg(&config)
            .arg("--data-dir")
            .arg(dir.path())
            .args(["ledger", "payouts", &hash.to_string()])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            text.contains("coinbase-pplns") && text.contains("No balance moves"),
            "{text}"
        );
    }
    assert!(
        in_coinbase >= 1,
        "no accepted block paid the window: {accepted:?}"
    );
    eprintln!(
        "{} accepted blocks, {in_coinbase} paid the window in their coinbase",
        accepted.len()
    );
    assert!(
        paid_users.len() == 2,
        "both users with an address were paid: {paid_users:?}"
    );
    assert!(dave_went_to_the_pool, "dave's shares were in a window");
    // Balances: only the PPLNS blocks' payouts; the coinbase paid the rest.
    let balances: BTreeMap<String, u64> = ledger
        .balances()
        .unwrap()
        .into_iter()
        .map(|b| (b.user, b.earned_sat))
        .collect();
    assert_eq!(balances, earned);
}

/// A block whose coinbase paid the window, accepted but not settled when the pool stopped:
/// after a restart (the SQLite file reopened) it is settled from what the block recorded
/// (`coinbase-pplns`, the users its coinbase paid, the pool's rest as the fee), once, moving no
/// balance; and the recomputation from the ledger's shares (what `ledger payouts` shows) gives
/// the same numbers.
#[test]
fn a_block_paying_the_window_is_settled_from_its_record_after_a_restart() {
    use blvm_stratum_v2::ledger::CoinbasePayouts;
    use blvm_stratum_v2::payout::settle::{coinbase_pplns_payouts, compute_payouts, window_shares};
    use blvm_stratum_v2::payout::{CoinbasePayoutTerms, read_window, settle_unsettled};

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite3");
    let address = |n: u8| Address::p2wsh(&ScriptBuf::from_bytes(vec![0x51, n]), Network::Regtest);
    let policy = PayoutPolicy {
        accounts: [
            ("alice".to_owned(), address(1).as_unchecked().clone()),
            ("bob".to_owned(), address(2).as_unchecked().clone()),
        ]
        .into(),
        coinbase_payouts: Some(CoinbasePayoutTerms {
            dust_sat: 1_000,
            max_outputs: 1,
        }),
        ..policy()
    };
    let bits = CompactTarget::from_consensus(BITS);
    let finding = 101;
    let paid = {
        let mut ledger = SqliteLedger::open(&path).unwrap();
        ledger
            .append(&LedgerBatch {
                shares: (1..=100).map(share).collect(),
                ..LedgerBatch::default()
            })
            .unwrap();
        // What the pool's work paid: the window read now (S = 100), the template's reward.
        let window = read_window(&mut ledger, &policy, bits).unwrap();
        assert_eq!(window.last_share_id, 100);
        let shares = ledger
            .shares(&ShareRange::Ids {
                from_id: 0,
                to_id: 100,
                limit: usize::MAX,
            })
            .unwrap();
        let terms = CoinbasePayouts {
            window_difficulty: window.window_difficulty,
            counted_difficulty: 0.0,
            first_share_id: 0,
            last_share_id: 100,
            fee_ppm: pplns::fee_ppm(policy.fee_percent),
            dust_sat: 1_000,
            max_outputs: 1,
            payouts: Vec::new(),
            pool_sat: 0,
        };
        let (split, paid) = coinbase_pplns_payouts(&shares, &terms, REWARD, &policy).unwrap();
        // The cap of one: the larger of alice and bob; carol and dave have no address.
        assert_eq!(paid.payouts.len(), 1, "{paid:?}");
        assert!(["alice", "bob"].contains(&paid.payouts[0].user.as_str()));
        assert!(split.users.len() >= 3);
        assert_eq!(
            paid.pool_sat + paid.payouts[0].amount_sat,
            REWARD,
            "the rest to the pool"
        );
        ledger
            .append(&LedgerBatch {
                shares: vec![share(finding)],
                blocks: vec![FoundBlockRecord {
                    coinbase_payouts: Some(paid.clone()),
                    ..found(finding, REWARD)
                }],
                ..LedgerBatch::default()
            })
            .unwrap();
        ledger
            .set_block_status(hash(finding), &BlockStatus::Accepted)
            .unwrap();
        paid
    };
    // The restart.
    let mut ledger = SqliteLedger::open(&path).unwrap();
    let stored = ledger.block(hash(finding)).unwrap().unwrap();
    assert_eq!(stored.block.coinbase_payouts.as_ref(), Some(&paid));
    let (settled, failed) = settle_unsettled(&mut ledger, &policy, 7).unwrap();
    assert_eq!((settled, failed.len()), (1, 0));
    let c = ledger.payouts(hash(finding)).unwrap().unwrap();
    assert_eq!(c.scheme, "coinbase-pplns");
    assert_eq!(c.payouts, paid.payouts);
    assert_eq!(c.fee_sat, paid.pool_sat);
    assert_eq!(
        (c.first_share_id, c.last_share_id),
        (paid.first_share_id, 100)
    );
    assert!(ledger.balances().unwrap().is_empty(), "no balance moves");
    assert_eq!(settle_unsettled(&mut ledger, &policy, 8).unwrap().0, 0);
    // Recomputed from the ledger's shares: the same numbers.
    let finding_share = ledger.share_by_hash(hash(finding)).unwrap().unwrap();
    let shares = window_shares(&mut ledger, &stored.block, &finding_share, &policy).unwrap();
    let (_, again) = compute_payouts(&stored.block, finding, &shares, &policy, 0).unwrap();
    assert!(same_numbers(&again, &c), "{again:?} vs {c:?}");
}
