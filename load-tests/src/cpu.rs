//! CPU time of another process (the server under test), read from
//! `/proc/<pid>/stat` around each measured step so a run can report the
//! server's CPU cost per request (`--server-pid`).
//!
//! The figure covers every thread the process ever had, including threads
//! that exited during the step, because the kernel folds a dead thread's
//! time into its process.

use std::time::Duration;

use anyhow::{Context, Result};

/// Clock ticks per second of `utime`/`stime` in `/proc/<pid>/stat`
/// (`USER_HZ`). The kernel fixes it at 100 for user space on every
/// architecture Sluice builds for, whatever the kernel's own tick rate.
const USER_HZ: u64 = 100;

/// User + system CPU time consumed so far by process `pid`.
pub fn process_cpu(pid: u32) -> Result<Duration> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_stat(&stat).with_context(|| format!("parsing {path}"))
}

/// Parses utime + stime from the text of `/proc/<pid>/stat`. The command
/// name (field 2) is in parentheses and may itself hold spaces or `)`, so
/// fields are counted from the last `)`.
fn parse_stat(stat: &str) -> Result<Duration> {
    let after = stat
        .rfind(')')
        .and_then(|i| stat.get(i + 1..))
        .context("no `)` after the command name")?;
    // After the name: field 3 (state) is index 0, so utime (14) is index 11
    // and stime (15) index 12.
    let mut fields = after.split_whitespace().skip(11);
    let mut tick = || -> Result<u64> {
        let f = fields.next().context("too few fields")?;
        f.parse()
            .with_context(|| format!("field {f:?} is not a tick count"))
    };
    let ticks = tick()? + tick()?;
    Ok(Duration::from_millis(ticks * 1000 / USER_HZ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_utime_and_stime() {
        let stat =
            "4242 (tokio (x) 1) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 75 0 0 20 0 9 0 100 0 0";
        assert_eq!(parse_stat(stat).unwrap(), Duration::from_millis(3250));
        assert!(parse_stat("4242 (x) S 1 2").is_err());
        assert!(parse_stat("no parenthesis").is_err());
    }

    #[test]
    fn reads_this_process() {
        if cfg!(target_os = "linux") {
            process_cpu(std::process::id()).unwrap();
        }
    }
}
