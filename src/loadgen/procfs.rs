//! What the load generator reads about processes (Linux /proc). (Raising the open-files
//! limit is the shell's: [`crate::shell::raise_nofile_limit`].)

use std::time::Duration;

/// CPU time (user + system) and resident memory of a process at one moment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcSample {
    /// utime + stime.
    pub cpu: Duration,
    /// VmRSS in KiB.
    pub rss_kib: u64,
}

/// Clock ticks per second of /proc/PID/stat times (`getconf CLK_TCK`).
pub fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as u64 } else { 100 }
}

/// utime + stime from the text of /proc/PID/stat (fields 14 and 15, counted after the
/// parenthesised command name, which may contain spaces).
pub fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // rest starts with " state ppid ...": state is field 3, so utime (14) is index 11.
    let mut fields = rest.split_ascii_whitespace();
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// VmRSS in KiB from the text of /proc/PID/status.
pub fn parse_status_rss_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_ascii_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Samples process `pid` ("self" for this process).
pub fn sample(pid: &str) -> std::io::Result<ProcSample> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let ticks = parse_stat_cpu_ticks(&stat).ok_or_else(|| bad("unparsable /proc/PID/stat"))?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss_kib = parse_status_rss_kib(&status).ok_or_else(|| bad("no VmRSS"))?;
    let tck = clock_ticks();
    Ok(ProcSample {
        cpu: Duration::from_nanos(ticks.saturating_mul(1_000_000_000) / tck),
        rss_kib,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_spaces_in_the_name() {
        let stat = "1234 (blvm stratum) S 1 1234 1234 0 -1 4194560 500 0 0 0 250 17 0 0 20 0 3 0 \
                    100 1000000 300 18446744073709551615";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(267));
    }

    #[test]
    fn parses_rss() {
        let status = "Name:\tx\nVmPeak:\t  1000 kB\nVmRSS:\t    4242 kB\nThreads:\t3\n";
        assert_eq!(parse_status_rss_kib(status), Some(4242));
    }

    #[test]
    fn samples_self() {
        let s = sample("self").unwrap();
        assert!(s.rss_kib > 0);
    }
}
