//! What the load generator reads from Linux's `/proc`: a process's CPU time
//! (`/proc/<pid>/stat`), resident memory now and at its peak (`/proc/<pid>/status` `VmRSS`,
//! `VmHWM`), the machine's idle time (`/proc/stat`), its CPU model, and the open-file limit,
//! which it raises with `prlimit(1)` (the workspace forbids `unsafe`, so no `setrlimit` call).

use std::process::Command;

/// Clock ticks per second of `/proc/<pid>/stat` times (`getconf CLK_TCK`; 100 on every Linux
/// this runs on, used if `getconf` fails).
pub(crate) fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

/// User plus system CPU time of process `pid`, seconds (threads included, children not).
///
/// Errors with a message when the process does not exist or the file does not parse.
pub(crate) fn cpu_secs(pid: u32, ticks: f64) -> Result<f64, String> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    parse_stat_cpu(&text)
        .map(|t| t as f64 / ticks)
        .ok_or_else(|| format!("{path}: unexpected format"))
}

/// `utime + stime` (clock ticks) from the text of `/proc/<pid>/stat`. The command name (field
/// 2) may contain spaces and parentheses, so fields are counted after its last `)`.
pub(crate) fn parse_stat_cpu(text: &str) -> Option<u64> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14, stime 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Resident memory of a process, KiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Memory {
    /// `VmRSS`: resident now.
    pub(crate) rss_kib: u64,
    /// `VmHWM`: peak resident since the process started.
    pub(crate) hwm_kib: u64,
}

/// `VmRSS` and `VmHWM` of process `pid`.
pub(crate) fn memory(pid: u32) -> Result<Memory, String> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    parse_status_memory(&text).ok_or_else(|| format!("{path}: no VmRSS/VmHWM"))
}

/// `VmRSS` and `VmHWM` (KiB) from the text of `/proc/<pid>/status`.
pub(crate) fn parse_status_memory(text: &str) -> Option<Memory> {
    let field = |name: &str| -> Option<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    };
    Some(Memory {
        rss_kib: field("VmRSS:")?,
        hwm_kib: field("VmHWM:")?,
    })
}

/// Voluntary plus involuntary context switches of every thread of process `pid` (summed over
/// `/proc/<pid>/task/*/status`; threads that already exited are not counted). 0 if unreadable.
pub(crate) fn context_switches(pid: u32) -> u64 {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    dir.filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("status")).ok())
        .map(|text| {
            text.lines()
                .filter(|l| {
                    l.starts_with("voluntary_ctxt_switches:")
                        || l.starts_with("nonvoluntary_ctxt_switches:")
                })
                .filter_map(|l| l.split(':').nth(1)?.trim().parse::<u64>().ok())
                .sum::<u64>()
        })
        .sum()
}

/// Busy and total jiffies of the whole machine (first line of `/proc/stat`).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct MachineTimes {
    idle: u64,
    total: u64,
}

impl MachineTimes {
    /// Reads `/proc/stat` now (zeros if unreadable).
    pub(crate) fn now() -> Self {
        std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|t| {
                let line = t.lines().next()?;
                let v: Vec<u64> = line
                    .split_whitespace()
                    .skip(1)
                    .filter_map(|f| f.parse().ok())
                    .collect();
                // user nice system idle iowait irq softirq steal ...
                let idle = v.get(3)? + v.get(4).copied().unwrap_or(0);
                Some(Self {
                    idle,
                    total: v.iter().take(8).sum(),
                })
            })
            .unwrap_or_default()
    }

    /// Share of the machine's CPU time that was idle between `earlier` and `self`, percent.
    pub(crate) fn idle_percent_since(&self, earlier: &Self) -> f64 {
        let total = self.total.saturating_sub(earlier.total);
        if total == 0 {
            return 0.0;
        }
        100.0 * self.idle.saturating_sub(earlier.idle) as f64 / total as f64
    }
}

/// `model name` of the first CPU in `/proc/cpuinfo`.
pub(crate) fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

/// Soft and hard `RLIMIT_NOFILE` of this process (from `/proc/self/limits`).
pub(crate) fn nofile_limits() -> Result<(u64, u64), String> {
    let text = std::fs::read_to_string("/proc/self/limits")
        .map_err(|e| format!("/proc/self/limits: {e}"))?;
    let line = text
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .ok_or("/proc/self/limits: no 'Max open files' line")?;
    let v: Vec<&str> = line
        .trim_start_matches("Max open files")
        .split_whitespace()
        .collect();
    let parse = |s: Option<&&str>| -> u64 {
        match s {
            Some(&"unlimited") => u64::MAX,
            Some(v) => v.parse().unwrap_or(0),
            None => 0,
        }
    };
    Ok((parse(v.first()), parse(v.get(1))))
}

/// Makes sure this process may open `need` files: raises the soft limit to the hard limit with
/// `prlimit --pid <self>` when it is lower than `need`.
///
/// Errors with an explanation (and the remedy) when even the hard limit is below `need`, or the
/// soft limit could not be raised.
pub(crate) fn ensure_nofile(need: u64) -> Result<(), String> {
    let (soft, hard) = nofile_limits()?;
    if soft >= need {
        return Ok(());
    }
    if hard < need {
        return Err(format!(
            "this process may open at most {hard} files (hard RLIMIT_NOFILE) but needs {need}: \
             use more --processes (each holds --connections / --processes sockets) or raise the \
             hard limit"
        ));
    }
    let target = if hard == u64::MAX {
        "unlimited".to_owned()
    } else {
        hard.to_string()
    };
    let status = Command::new("prlimit")
        .arg("--pid")
        .arg(std::process::id().to_string())
        .arg(format!("--nofile={target}:{target}"))
        .status();
    let (soft, _) = nofile_limits()?;
    if soft >= need {
        return Ok(());
    }
    Err(format!(
        "soft RLIMIT_NOFILE is {soft}, need {need}; raising it with prlimit(1) failed ({}): run \
         under `ulimit -n {need}`",
        match status {
            Ok(s) => s.to_string(),
            Err(e) => e.to_string(),
        }
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn stat_with_spaces_in_the_name() {
        let text = "1234 (tokio (rt) worker) S 1 1234 1234 0 -1 4194560 500 0 0 0 250 125 0 0 20 0 3 0 100 0 0";
        assert_eq!(parse_stat_cpu(text), Some(375));
    }

    #[test]
    fn status_memory() {
        let text = "Name:\tpool_sv2\nVmHWM:\t  204800 kB\nVmRSS:\t  102400 kB\nThreads:\t3\n";
        assert_eq!(
            parse_status_memory(text),
            Some(Memory {
                rss_kib: 102_400,
                hwm_kib: 204_800
            })
        );
        assert_eq!(parse_status_memory("Name: x\n"), None);
    }

    #[test]
    fn reads_own_process() {
        let pid = std::process::id();
        assert!(cpu_secs(pid, clock_ticks()).is_ok());
        let m = memory(pid).unwrap();
        assert!(m.rss_kib > 0 && m.hwm_kib >= m.rss_kib);
        let (soft, hard) = nofile_limits().unwrap();
        assert!(soft > 0 && hard >= soft);
        assert!(context_switches(pid) > 0);
    }
}
