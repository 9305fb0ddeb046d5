//! `fly-fallback cost-report`: what the gateway's traffic cost, read from its JSON log lines,
//! and what the same traffic would have cost on other models or model mixes.
//!
//! ```text
//! fly-fallback cost-report [FILES...] [--json] [--chart out.png] [--what-if SPEC]...
//!                          [--what-if-tokens N --one-price] [--baseline MODEL] [--config FILE]
//! ```
//!
//! It reads standard input when no file (or `-`) is given, and prints requests, tokens and
//! spend: totals, spend by model, key, upstream and day (by spend, with shares), cache
//! savings, unpriced and estimated-cost requests, then the WHAT-IF section: the same requests
//! (their own prompt, cached, completion and reasoning tokens) all on each of the design's
//! models (gpt-4.1, claude-sonnet-4-5, gemini-2.5-flash, deepseek-v3.2, and any
//! `--what-if model=NAME`), and split across models by the shares of any
//! `--what-if mix=M:PCT,...`, each share at its model's own rates, with the arithmetic shown.
//! `--json` prints the same report as one JSON document (money as exact decimal strings);
//! `--chart out.png` draws it as bars. Money is summed exactly in [`Money`](gateway_core::pricing::Money) (integer
//! picodollars); floats are used only to place the bars of the chart.
//!
//! Prices are the built-in table, with the `prices` of `--config FILE` (or of the
//! `GATEWAY_CONFIG` variable) over it, as the gateway applies them.
//!
//! # The design's claim, checked
//!
//! The design said 1M tokens on gpt-4.1 cost $8,000 and its mix (5% gpt-4.1, 10%
//! claude-sonnet-4-5, 35% gemini-2.5-flash, 50% deepseek-v3.2) saves 87%. At its one price per
//! model (the input prices $8, $15, $2.50 and $0.42 per million tokens):
//!
//! ```text
//! fly-fallback cost-report --what-if-tokens 1000000 --one-price \
//!     --what-if mix=gpt-4.1:5,claude-sonnet-4-5:10,gemini-2.5-flash:35,deepseek-v3.2:50
//! ```
//!
//! prints all on gpt-4.1: $8, and the mix: 0.05×8 + 0.10×15 + 0.35×2.5 + 0.50×0.42 = $2.985
//! per million tokens, a saving of (8 - 2.985) / 8 = 62.69%, not 87%.
//!
//! Exit status: 0 done (skipped lines are counted and reported, not fatal), 1 a file could not
//! be read or the chart not drawn, 2 bad arguments (or a bad `prices` document).

mod args;
pub(crate) mod chart;
mod num;
mod read;
mod report;
mod table;
mod what_if;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{BufReader, Write};

use gateway_core::pricing::{PriceConfig, PriceTable};

use args::{Options, Parsed, USAGE};
use read::InputStats;
use report::{Report, Tally};
use what_if::{Baseline, WhatIf, DESIGN_BASELINE};

const NAME: &str = "fly-fallback cost-report";

/// A failure: its exit status and message.
type Failure = (i32, String);

/// Runs the subcommand with the arguments after `cost-report`; returns the exit status.
pub fn run(args: impl IntoIterator<Item = OsString>) -> i32 {
    match try_run(args) {
        Ok(()) => 0,
        Err((code, message)) => {
            eprintln!("{NAME}: {message}");
            if code == 2 {
                eprintln!("(see {NAME} --help)");
            }
            code
        }
    }
}

fn try_run(args: impl IntoIterator<Item = OsString>) -> Result<(), Failure> {
    let opts = match args::parse(args).map_err(|m| (2, m))? {
        Parsed::Help => {
            out(USAGE);
            return Ok(());
        }
        Parsed::Run(o) => o,
    };
    let table = prices(&opts)?;
    let baseline = match (&opts.baseline, opts.what_if_tokens) {
        (Some(m), _) => Baseline::Model(m.clone()),
        (None, Some(_)) => Baseline::Model(DESIGN_BASELINE.into()),
        (None, None) => Baseline::Routed,
    };
    let mut what_if =
        WhatIf::new(&table, &opts.what_if, baseline, opts.one_price).map_err(|m| (2, m))?;

    let report = match opts.what_if_tokens {
        Some(n) => {
            what_if.add_tokens(n);
            report::tokens_report(&what_if)
        }
        None => read_logs(&opts, what_if)?,
    };

    if opts.json {
        let json = serde_json::to_string_pretty(&report)
            .map_err(|e| (1, format!("cannot write the JSON report: {e}")))?;
        out(&format!("{json}\n"));
    } else {
        out(&table::render(&report));
    }
    if let Some(path) = &opts.chart {
        let (w, h) = chart::draw(&report, path).map_err(|m| (1, m))?;
        eprintln!("{NAME}: chart written to {} ({w}×{h})", path.display());
    }
    Ok(())
}

/// Writes to standard output; a closed pipe (`| head`) is not an error worth a panic.
fn out(s: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(s.as_bytes());
    let _ = stdout.flush();
}

fn read_logs(opts: &Options, what_if: WhatIf) -> Result<Report, Failure> {
    let mut tally = Tally::new(what_if);
    let mut stats = InputStats::default();
    let stdin_only = ["-".to_string()];
    let files: &[String] = if opts.files.is_empty() {
        &stdin_only
    } else {
        &opts.files
    };
    for name in files {
        let result = if name == "-" {
            read::read_lines("stdin", std::io::stdin().lock(), &mut stats, |r| {
                tally.add(r)
            })
        } else {
            let file =
                std::fs::File::open(name).map_err(|e| (1, format!("cannot read {name}: {e}")))?;
            read::read_lines(
                name,
                BufReader::with_capacity(1 << 16, file),
                &mut stats,
                |r| tally.add(r),
            )
        };
        result.map_err(|e| (1, format!("cannot read {name}: {e}")))?;
    }
    if stats.skipped() > 0 {
        eprintln!(
            "{NAME}: skipped {} line(s): {} not JSON, {} not a request record{}",
            stats.skipped(),
            stats.not_json,
            stats.not_request,
            stats
                .examples
                .first()
                .map(|e| format!(" (first: {e})"))
                .unwrap_or_default()
        );
    }
    if stats.requests == 0 {
        eprintln!("{NAME}: no request records found");
    }
    Ok(tally.finish(&stats))
}

/// The price table: built in, with the configuration's `prices` over it.
fn prices(opts: &Options) -> Result<PriceTable, Failure> {
    let (raw, from) = match &opts.config {
        Some(path) => (
            std::fs::read_to_string(path)
                .map_err(|e| (1, format!("cannot read {}: {e}", path.display())))?,
            path.display().to_string(),
        ),
        None => match std::env::var("GATEWAY_CONFIG") {
            Ok(v) if !v.trim().is_empty() => (v, "GATEWAY_CONFIG".to_string()),
            _ => return Ok(PriceTable::builtin()),
        },
    };
    prices_from(&raw).map_err(|m| (2, format!("{from}: {m}")))
}

fn prices_from(raw: &str) -> Result<PriceTable, String> {
    let doc: serde_json::Value =
        serde_json::from_str(raw).map_err(|e| format!("not a JSON document: {e}"))?;
    let Some(prices) = doc.get("prices") else {
        return Ok(PriceTable::builtin());
    };
    let overrides: BTreeMap<String, PriceConfig> =
        serde_json::from_value(prices.clone()).map_err(|e| format!("prices: {e}"))?;
    PriceTable::with_overrides(&overrides).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_prices_replace_the_builtin_ones() {
        let t = prices_from(r#"{"prices":{"gpt-4.1":{"input":2,"output":8}},"cache":{}}"#).unwrap();
        assert_eq!(t.get("gpt-4.1").unwrap().base.input, 2_000_000);
        let t = prices_from(r#"{"models":[]}"#).unwrap();
        assert_eq!(t.get("gpt-4.1").unwrap().base.input, 8_000_000);
        assert!(prices_from("{").unwrap_err().contains("not a JSON"));
        assert!(prices_from(r#"{"prices":{"m":{"input":-1,"output":1}}}"#).is_err());
        assert!(prices_from(r#"{"prices":{"m":{"inptu":1,"output":1}}}"#).is_err());
    }
}
