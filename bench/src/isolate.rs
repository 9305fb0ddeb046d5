//! The isolate's own memory with many streams open, for the targets on workerd.
//!
//! Cloudflare's limit is 128 MB per isolate: the JavaScript heap, the array buffers' backing
//! stores and the wasm linear memory. The bench sees workerd's whole process, whose RSS also
//! holds the runtime, its allocators' slack and every connection's buffers, so the goal needs
//! the isolate's figures: `bench/profile-worker.mjs --hold N` reads them off the V8 inspector
//! of a workerd of its own serving the same bundle (the bench's workerd runs without an
//! inspector, which would change what its other figures measure).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How to measure one bundle's isolate.
#[derive(Debug, Clone)]
pub struct Probe {
    /// Node 22 or later (the script needs its global WebSocket).
    pub node: PathBuf,
    pub script: PathBuf,
    pub dist: PathBuf,
    pub workerd: PathBuf,
    pub mock: PathBuf,
}

/// The isolate with the streams open (bytes), as the script's last line gives it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IsolateMemory {
    pub streams: usize,
    /// Streams that had delivered their first event when the figures were read.
    pub open: usize,
    pub js_heap_used: Option<u64>,
    pub array_buffers: Option<u64>,
    pub wasm_memory: Option<u64>,
    pub workerd_rss_mib: Option<f64>,
}

impl IsolateMemory {
    /// What counts against the isolate's limit; `None` without the heap figure.
    pub fn total(&self) -> Option<u64> {
        Some(self.js_heap_used? + self.array_buffers.unwrap_or(0) + self.wasm_memory.unwrap_or(0))
    }
}

/// Runs the script on `streams` held streams; its own workerd and mock end with it.
pub async fn measure(p: &Probe, streams: usize, within: Duration) -> Result<IsolateMemory, String> {
    for f in [&p.node, &p.script, &p.workerd, &p.mock] {
        if !f.exists() {
            return Err(format!("{} is missing", f.display()));
        }
    }
    let child = tokio::process::Command::new(&p.node)
        .arg(&p.script)
        .args(["--hold", &streams.to_string()])
        .arg("--dist")
        .arg(&p.dist)
        .arg("--workerd")
        .arg(&p.workerd)
        .arg("--mock")
        .arg(&p.mock)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("{}: {e}", p.node.display()))?;
    // The script waits up to 60 s for the streams' first events, then reads the figures.
    let out = tokio::time::timeout(within + Duration::from_secs(60), child.wait_with_output())
        .await
        .map_err(|_| "bench/profile-worker.mjs --hold timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: String = stderr
            .lines()
            .last()
            .unwrap_or_default()
            .chars()
            .take(300)
            .collect();
        return Err(format!("profile-worker.mjs --hold: {}: {tail}", out.status));
    }
    parse(&stdout)
}

/// The figures from the script's last JSON line.
fn parse(stdout: &str) -> Result<IsolateMemory, String> {
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .ok_or("profile-worker.mjs --hold printed no figures")?;
    serde_json::from_str(line).map_err(|e| format!("profile-worker.mjs --hold: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_isolates_figures_are_read_from_the_scripts_last_json_line() {
        let out = "1000 of 1000 streams open (first event seen)\n\
                   JS heap used: 11.5 -> 9.0 MiB\n\
                   {\"streams\":1000,\"open\":1000,\"js_heap_used\":9389820,\"array_buffers\":11084957,\
                   \"wasm_memory\":5033164,\"js_heap_used_before\":1,\"wasm_memory_before\":null,\
                   \"workerd_rss_before_mib\":111.2,\"workerd_rss_mib\":213.7}\n";
        let m = parse(out).expect("figures");
        assert_eq!(m.streams, 1000);
        assert_eq!(m.open, 1000);
        assert_eq!(m.total(), Some(9_389_820 + 11_084_957 + 5_033_164));
        assert_eq!(m.workerd_rss_mib, Some(213.7));
    }

    #[test]
    fn a_bundle_without_wasm_counts_its_heap_and_buffers_and_no_heap_figure_means_no_total() {
        let js = parse(
            r#"{"streams":2,"open":2,"js_heap_used":100,"array_buffers":20,"wasm_memory":null}"#,
        )
        .expect("figures");
        assert_eq!(js.total(), Some(120));
        let none = parse(r#"{"streams":2,"open":0,"js_heap_used":null}"#).expect("figures");
        assert_eq!(none.total(), None);
    }

    #[test]
    fn output_without_figures_is_an_error_not_zero() {
        assert!(parse("wasm memory: no prototype\n").is_err());
        assert!(parse("{not json\n").is_err());
    }

    #[tokio::test]
    async fn a_missing_node_is_reported_before_anything_runs() {
        let p = Probe {
            node: "/nonexistent/node".into(),
            script: "bench/profile-worker.mjs".into(),
            dist: "dist".into(),
            workerd: "workerd".into(),
            mock: "mock-upstream".into(),
        };
        let e = measure(&p, 1, Duration::from_secs(1)).await.unwrap_err();
        assert!(e.contains("/nonexistent/node is missing"), "{e}");
    }
}
