//! Installs a Debian package a test needs when it is missing (PostgreSQL, HAProxy, Chromium), so
//! `cargo test` on a fresh Debian machine runs every test instead of skipping one: `apt-get
//! update` and `apt-get install -y --no-install-recommends PACKAGE` as root or through `sudo -n`,
//! with no standard input. Test binaries running at the same time queue on an exclusive lock of
//! one file per package, and the ones after the first find it installed. Included by the
//! helpers that need it with `#[path = "debian_package.rs"] mod debian_package;`.
#![allow(dead_code)]

use std::process::{Command, Stdio};

/// Makes sure `installed()` holds, installing `package` if it does not; the caller checks
/// afterwards (a failed install is printed, not a panic here).
pub fn ensure(package: &str, installed: impl Fn() -> bool) {
    if installed() {
        return;
    }
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(std::env::temp_dir().join(format!("blvm-stratum-v2-install-{package}.lock")))
        .expect("lock file for installing a package");
    // An exclusive lock held until `lock` is closed (File::lock needs Rust 1.89; the MSRV is
    // 1.88).
    // SAFETY: flock(2) on a descriptor this function owns for the call's duration.
    let rc = unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) };
    assert_eq!(rc, 0, "lock for installing {package}");
    if installed() {
        return;
    }
    let sudo: &[&str] = if is_root() { &[] } else { &["sudo", "-n"] };
    for args in [
        &["apt-get", "update"][..],
        &[
            "apt-get",
            "install",
            "-y",
            "--no-install-recommends",
            package,
        ][..],
    ] {
        let mut command: Vec<&str> = sudo.to_vec();
        command.extend_from_slice(args);
        eprintln!("{package} is missing: running {}", command.join(" "));
        let status = Command::new(command[0])
            .args(&command[1..])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .status();
        if !matches!(status, Ok(s) if s.success()) {
            eprintln!("`{}` failed: {status:?}", command.join(" "));
        }
    }
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid(2) has no preconditions.
    unsafe { libc::geteuid() == 0 }
}
