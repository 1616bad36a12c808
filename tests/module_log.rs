//! The module's log file is capped by size (issue 14, item 6): written far past its cap, the
//! log and its one rotated predecessor each stay within the cap, nothing else is created, and
//! the newest lines are in the current file.

use std::io::Write;

use blvm_stratum_v2::shell::rotating_log::RotatingLog;

#[test]
fn writing_past_the_cap_keeps_two_bounded_files() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("blvm-stratum-v2.log");
    const CAP: u64 = 64 * 1024;
    let log = RotatingLog::open(&path, CAP, false).expect("open");
    let line = format!("{}\n", "x".repeat(99));
    let mut written = 0u64;
    for i in 0..20_000u32 {
        let mut w = log.writer();
        let text = format!("{i:08} {line}");
        w.write_all(text.as_bytes()).expect("write");
        written += text.len() as u64;
    }
    assert!(written > 20 * CAP, "{written} bytes written");
    let current = std::fs::metadata(&path).expect("log").len();
    let rotated = std::fs::metadata(dir.path().join("blvm-stratum-v2.log.1"))
        .expect("rotated log")
        .len();
    assert!(current <= CAP && rotated <= CAP, "{current} + {rotated}");
    assert!(rotated > CAP - 200, "the rotated file was full: {rotated}");
    let files = std::fs::read_dir(dir.path()).expect("dir").count();
    assert_eq!(files, 2, "the log and one rotated file");
    let text = std::fs::read_to_string(&path).expect("read");
    assert!(
        text.ends_with(&format!("00019999 {line}")),
        "newest line last"
    );
    assert!(text.lines().all(|l| l.len() == 108), "whole lines only");

    // A lower cap takes effect at the next write; reopening appends to what is there.
    log.set_max_bytes(4096);
    log.writer().write_all(line.as_bytes()).expect("write");
    log.writer().write_all(line.as_bytes()).expect("write");
    assert!(std::fs::metadata(&path).expect("log").len() <= 4096);
    drop(log);
    let before = std::fs::metadata(&path).expect("log").len();
    let again = RotatingLog::open(&path, 4096, false).expect("reopen");
    again.writer().write_all(b"x\n").expect("write");
    assert_eq!(std::fs::metadata(&path).expect("log").len(), before + 2);
}
