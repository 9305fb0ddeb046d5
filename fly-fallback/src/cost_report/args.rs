//! The command line of `cost-report`, parsed by hand (a dozen flags do not need a crate).

use std::ffi::OsString;
use std::path::PathBuf;

use super::what_if::{parse_spec, WhatIfSpec};

pub const USAGE: &str = "\
usage: fly-fallback cost-report [OPTIONS] [FILE...]

Reads the gateway's JSON log lines (one per request) and reports requests, tokens and spend:
totals, spend by model, key, upstream and day, cache savings, and what the same traffic would
have cost on other models. Reads standard input when no FILE (or '-') is given.

options:
  --json                 print the report as one JSON document (money as decimal strings)
  --chart PATH           also draw a PNG bar chart: spend as routed vs each what-if
  --what-if SPEC         add a scenario (repeatable):
                           model=NAME            all the traffic on NAME
                           mix=M:PCT,M:PCT,...   the traffic split by percent shares (sum 100)
                         (all on gpt-4.1, claude-sonnet-4-5, gemini-2.5-flash and
                         deepseek-v3.2 are always shown)
  --what-if-tokens N     price N tokens instead of reading logs (needs --one-price)
  --one-price            price every token at the model's input price (the design's arithmetic)
  --baseline MODEL       compare the what-ifs with all on MODEL (default: as routed; with
                         --what-if-tokens: gpt-4.1)
  --config FILE          a GATEWAY_CONFIG document whose `prices` override the built-in table
                         (default: the GATEWAY_CONFIG environment variable, when set)
  -h, --help             print this help

exit status: 0 done, 1 a file could not be read or the chart not drawn, 2 bad arguments.

example (the design's claim, checked):
  fly-fallback cost-report --what-if-tokens 1000000 --one-price \\
    --what-if mix=gpt-4.1:5,claude-sonnet-4-5:10,gemini-2.5-flash:35,deepseek-v3.2:50
";

/// What the command line asks for.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Options {
    /// Log files; `-` is standard input. Empty: standard input.
    pub files: Vec<String>,
    pub json: bool,
    pub chart: Option<PathBuf>,
    pub what_if: Vec<WhatIfSpec>,
    pub what_if_tokens: Option<u64>,
    pub one_price: bool,
    pub baseline: Option<String>,
    pub config: Option<PathBuf>,
}

/// The outcome of parsing: run, or print the help.
#[derive(Debug, PartialEq)]
pub enum Parsed {
    Run(Options),
    Help,
}

fn text(flag: &str, v: OsString) -> Result<String, String> {
    v.into_string()
        .map_err(|_| format!("{flag}: the value is not valid UTF-8"))
}

/// Parses the arguments after `cost-report`. `Err` is a message for standard error (exit 2).
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Parsed, String> {
    let mut o = Options::default();
    let mut args = args.into_iter();
    let mut only_files = false;
    while let Some(arg) = args.next() {
        let arg = text("argument", arg)?;
        if only_files || arg == "-" || !arg.starts_with('-') {
            o.files.push(arg);
            continue;
        }
        if arg == "--" {
            only_files = true;
            continue;
        }
        // `--flag=value` or `--flag value`.
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = |inline: Option<String>| -> Result<String, String> {
            match inline {
                Some(v) => Ok(v),
                None => match args.next() {
                    Some(v) => text(&flag, v),
                    None => Err(format!("{flag} needs a value")),
                },
            }
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(Parsed::Help),
            "--json" | "--one-price" if inline.is_some() => {
                return Err(format!("{flag} takes no value"));
            }
            "--json" => o.json = true,
            "--one-price" => o.one_price = true,
            "--chart" => o.chart = Some(PathBuf::from(non_empty(&flag, value(inline)?)?)),
            "--config" => o.config = Some(PathBuf::from(non_empty(&flag, value(inline)?)?)),
            "--baseline" => o.baseline = Some(non_empty(&flag, value(inline)?)?),
            "--what-if" => o.what_if.push(parse_spec(&value(inline)?)?),
            "--what-if-tokens" => {
                let v = value(inline)?;
                let n = parse_count(&v)
                    .filter(|n| *n > 0)
                    .ok_or_else(|| format!("--what-if-tokens: '{v}' is not a positive number"))?;
                o.what_if_tokens = Some(n);
            }
            _ => return Err(format!("unknown option '{flag}'")),
        }
    }
    if o.what_if_tokens.is_some() {
        if !o.one_price {
            return Err(
                "--what-if-tokens needs --one-price: the N tokens are priced at each model's \
                 single (input) price"
                    .into(),
            );
        }
        if !o.files.is_empty() {
            return Err("--what-if-tokens prices N tokens instead of logs: give no FILE".into());
        }
    }
    if o.files.iter().filter(|f| *f == "-").count() > 1 {
        return Err("standard input ('-') can be read only once".into());
    }
    Ok(Parsed::Run(o))
}

fn non_empty(flag: &str, v: String) -> Result<String, String> {
    if v.trim().is_empty() {
        Err(format!("{flag} needs a non-empty value"))
    } else {
        Ok(v)
    }
}

/// A token count: digits, with `_` or `,` allowed as separators (`1_000_000`, `1,000,000`).
fn parse_count(s: &str) -> Option<u64> {
    let digits: String = s
        .trim()
        .chars()
        .filter(|c| *c != '_' && *c != ',')
        .collect();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cost_report::what_if::Mix;

    fn run(args: &[&str]) -> Result<Options, String> {
        match parse(args.iter().map(OsString::from))? {
            Parsed::Run(o) => Ok(o),
            Parsed::Help => Err("help".into()),
        }
    }

    #[test]
    fn files_flags_and_values_in_both_spellings() {
        let o = run(&[
            "a.log",
            "--json",
            "--chart",
            "out.png",
            "-",
            "--what-if=model=gpt-4o",
            "--what-if",
            "mix=gpt-4.1:50,deepseek-v3.2:50",
            "--baseline=gpt-4.1",
            "--config",
            "c.json",
        ])
        .unwrap();
        assert_eq!(o.files, ["a.log", "-"]);
        assert!(o.json && !o.one_price);
        assert_eq!(o.chart, Some(PathBuf::from("out.png")));
        assert_eq!(o.config, Some(PathBuf::from("c.json")));
        assert_eq!(o.baseline.as_deref(), Some("gpt-4.1"));
        assert_eq!(
            o.what_if,
            [
                WhatIfSpec::Model("gpt-4o".into()),
                WhatIfSpec::Mix(Mix {
                    spec: "gpt-4.1:50,deepseek-v3.2:50".into(),
                    shares: vec![("gpt-4.1".into(), 5000), ("deepseek-v3.2".into(), 5000)],
                })
            ]
        );
    }

    #[test]
    fn the_designs_scenario_parses() {
        let o = run(&["--what-if-tokens", "1_000_000", "--one-price"]).unwrap();
        assert_eq!((o.what_if_tokens, o.one_price), (Some(1_000_000), true));
        assert!(o.files.is_empty());
    }

    #[test]
    fn help_wins() {
        assert_eq!(
            parse(["--json", "--help"].map(OsString::from)),
            Ok(Parsed::Help)
        );
        assert_eq!(parse(["-h"].map(OsString::from)), Ok(Parsed::Help));
    }

    #[test]
    fn bad_arguments_are_refused_with_a_reason() {
        for (args, needle) in [
            (&["--nope"][..], "unknown option"),
            (&["--chart"][..], "needs a value"),
            (&["--json=1"][..], "takes no value"),
            (&["--what-if-tokens", "1000"][..], "needs --one-price"),
            (&["--what-if-tokens", "0", "--one-price"][..], "positive"),
            (&["--what-if-tokens", "1e6", "--one-price"][..], "positive"),
            (
                &["--what-if-tokens=5", "--one-price", "a.log"][..],
                "no FILE",
            ),
            (&["--what-if", "mix=gpt-4.1:50"][..], "100"),
            (&["--what-if", "speed=fast"][..], "model=NAME"),
            (&["-", "-"][..], "once"),
            (&["--baseline", ""][..], "non-empty"),
        ] {
            let err = run(args).unwrap_err();
            assert!(err.contains(needle), "{args:?}: {err}");
        }
    }

    #[test]
    fn after_a_double_dash_everything_is_a_file() {
        let o = run(&["--", "--json"]).unwrap();
        assert_eq!(o.files, ["--json"]);
        assert!(!o.json);
    }
}
