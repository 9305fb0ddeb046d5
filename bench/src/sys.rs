//! What the kernel tells about processes and the machine: resident memory (VmRSS), CPU time,
//! and the description of the machine for the report.

use std::collections::HashMap;
use std::fs;
use std::process::Command;

use serde::{Deserialize, Serialize};

/// The process and all its descendants.
pub fn process_tree(root: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(dir) = fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if let Some(ppid) = stat_fields(pid).and_then(|f| f.get(1).and_then(|p| p.parse().ok()))
            {
                children.entry(ppid).or_default().push(pid);
            }
        }
    }
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        if let Some(c) = children.get(&out[i]) {
            out.extend(c);
        }
        i += 1;
    }
    out
}

/// Fields of /proc/PID/stat after the command name: [0] = state, [1] = ppid, ... [11] = utime,
/// [12] = stime.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &s[s.rfind(')')? + 1..];
    Some(after.split_whitespace().map(str::to_string).collect())
}

/// VmRSS of one process, in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// VmRSS of the process and its descendants, in KiB.
pub fn tree_rss_kib(root: u32) -> Option<u64> {
    let total: u64 = process_tree(root).into_iter().filter_map(rss_kib).sum();
    (total > 0).then_some(total)
}

/// User + system CPU seconds used so far by the process and its live descendants.
pub fn tree_cpu_seconds(root: u32) -> f64 {
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    process_tree(root)
        .into_iter()
        .filter_map(stat_fields)
        .map(|f| {
            let n = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
            (n(11) + n(12)) / tick
        })
        .sum()
}

/// Raises this process's open-file limit to the hard limit (children inherit it).
pub fn raise_nofile() -> u64 {
    unsafe {
        let mut l = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0 {
            l.rlim_cur = l.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &l);
            return l.rlim_cur;
        }
    }
    0
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Machine {
    pub cores: usize,
    pub cpu_model: String,
    pub memory: String,
    pub kernel: String,
    pub os: String,
    pub versions: Vec<(String, String)>,
    pub date: String,
}

pub fn command_output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    let text = String::from_utf8_lossy(if out.stdout.is_empty() {
        &out.stderr
    } else {
        &out.stdout
    })
    .trim()
    .to_string();
    (out.status.success() && !text.is_empty()).then_some(text)
}

pub fn machine(versions: Vec<(String, String)>) -> Machine {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .map(|kib| format!("{:.1} GiB", kib / 1024.0 / 1024.0))
        .unwrap_or_else(|| "unknown".into());
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let os = fs::read_to_string("/etc/os-release")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|s| s.trim_matches('"').to_string())
        .unwrap_or_default();
    Machine {
        cores: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        cpu_model,
        memory,
        kernel,
        os,
        versions,
        date: command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_default(),
    }
}

/// System-wide CPU time, and this process tree's (the bench, the mock, the targets), at one
/// moment: to tell how much of the machine other processes took during a measurement.
#[derive(Debug, Clone, Copy)]
pub struct CpuSnapshot {
    busy: f64,
    steal: f64,
    ours: f64,
    at: std::time::Instant,
}

pub fn cpu_snapshot() -> CpuSnapshot {
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let stat = fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap_or(0.0))
        .collect();
    let g = |i: usize| f.get(i).copied().unwrap_or(0.0) / tick;
    // user nice system idle iowait irq softirq steal. Interrupt time, and the ksoftirqd
    // threads, are mostly the loopback traffic of the measurement itself: not counted.
    CpuSnapshot {
        busy: g(0) + g(1) + g(2) - softirq_threads_seconds(tick),
        steal: g(7),
        ours: tree_cpu_seconds(std::process::id()),
        at: std::time::Instant::now(),
    }
}

fn softirq_threads_seconds(tick: f64) -> f64 {
    let Ok(dir) = fs::read_dir("/proc") else {
        return 0.0;
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()))
        .filter_map(|pid| {
            let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            if !s.contains("(ksoftirqd/") {
                return None;
            }
            let f: Vec<&str> = s[s.rfind(')')? + 1..].split_whitespace().collect();
            let n = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
            Some((n(11) + n(12)) / tick)
        })
        .sum()
}

/// Cores' worth of CPU used by other processes (and stolen by the hypervisor) between two
/// snapshots.
pub fn foreign_cores(a: &CpuSnapshot, b: &CpuSnapshot) -> f64 {
    let dt = b.at.duration_since(a.at).as_secs_f64().max(1e-3);
    let foreign = (b.busy - a.busy) - (b.ours - a.ours);
    ((foreign + (b.steal - a.steal)) / dt).max(0.0)
}
