//! The command line of `probe`, parsed by hand like `cost-report`'s (a dozen flags, and the
//! same `--flag value` / `--flag=value` spellings and messages across subcommands), and the
//! client key, which comes from the environment or a file, never from the command line.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const USAGE: &str = "\
usage: fly-fallback probe --url URL --model MODEL [OPTIONS]

Measures the gateway's latency as a client sees it: for each model, each pinned region and each
mode (plain and streamed), N chat completions, then a table of the time to first token and the
total time (p50, p90, min, max, in milliseconds) and of the upstream that answered.

The client key is read from the GATEWAY_KEY environment variable or from --key-file, never from
the command line (other users of the machine can read a command line in `ps`).

options:
  --url URL              the gateway, e.g. http://127.0.0.1:8080 or https://gw.example.com
                         (a trailing /v1 is accepted)
  --model M[,M...]       a model to call (repeatable, or comma-separated); required
  --region R[,R...]      pin the first choice with `x-gateway-region: R` (an upstream's name or
                         region; repeatable); `auto` is a row without a pin (the gateway's own
                         choice). Default: auto only
  -n, --calls N          calls per model, region and mode (default 5)
  --mode MODE            plain, stream or both (default both)
  --prompt TEXT          the user message (default: a short request for a one-line answer)
  --max-tokens N         `max_tokens` of each request (default 16; 0 sends none, for models
                         that want `max_completion_tokens` instead)
  --timeout-secs S       the longest one call may take, connecting included (default 60)
  --concurrency C        calls in flight at once (default 1: one after the other)
  --key-file PATH        read the client key from the first line of PATH instead of GATEWAY_KEY
  --json                 print one JSON document (every figure and sample) instead of the table
  --chart PATH           also draw a PNG: TTFT and total p50 per row, with min-max whiskers
  -h, --help             print this help

what is measured (every call: `temperature: 1`, `cache-control: no-store`, so the gateway's
response cache is neither read nor written and the time is the upstream's):
  ttft    plain: until the first byte of the response body; stream: until the first event
          with content (text, a tool call, reasoning) has arrived whole
  total   until the end of the response body
  Calls are interleaved (each round calls every row once), so a slow minute affects every row
  alike. Connections are kept alive between calls, as an SDK client keeps them; a first
  request to GET /v1/gateway/status checks the key and learns the upstreams' regions.
  A call fails on a transport error, a timeout, a status other than 2xx, a body that is not
  JSON (plain) or a stream with an error event, no content or no `data: [DONE]`; failures are
  counted per row and left out of the figures. Percentiles are nearest-rank: p50 of 5 calls is
  the 3rd fastest, p90 the slowest.

exit status: 0 every call succeeded, 1 the gateway could not be probed (unreachable, key
refused, every call failed, chart not drawn), 2 bad arguments or no key, 3 some calls failed,
130 interrupted (the calls made so far are reported).

example:
  GATEWAY_KEY=... fly-fallback probe --url https://gw.example.com \\
    --model gpt-4.1,deepseek-v3.2 --region us-east --region ap-northeast -n 5 --chart probe.png
";

/// The default user message: short, and asking for a short answer.
pub const DEFAULT_PROMPT: &str = "Reply with one short sentence about the sea.";

const MAX_CALLS: u32 = 10_000;
const MAX_TOTAL_CALLS: u64 = 100_000;
const MAX_CONCURRENCY: usize = 64;
const MAX_TIMEOUT_SECS: u64 = 3_600;
const MAX_PROMPT_BYTES: usize = 1 << 20;

/// Plain (one JSON answer) or streamed (server-sent events).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Mode {
    Plain,
    Stream,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Plain => "plain",
            Mode::Stream => "stream",
        }
    }
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// The gateway's base URL: scheme, authority and any path prefix, without `/v1` or a
    /// trailing `/`.
    pub url: String,
    pub models: Vec<String>,
    /// `None`: no pin (the gateway's own choice).
    pub regions: Vec<Option<String>>,
    pub calls: u32,
    pub modes: Vec<Mode>,
    pub prompt: String,
    /// 0: no `max_tokens` sent.
    pub max_tokens: u32,
    pub timeout: Duration,
    pub concurrency: usize,
    pub key_file: Option<PathBuf>,
    pub json: bool,
    pub chart: Option<PathBuf>,
}

/// The outcome of parsing: run, or print the help.
#[derive(Debug, PartialEq)]
pub enum Parsed {
    Run(Box<Options>),
    Help,
}

fn text(flag: &str, v: OsString) -> Result<String, String> {
    v.into_string()
        .map_err(|_| format!("{flag}: the value is not valid UTF-8"))
}

/// Appends the comma-separated names of `v` to `list`, once each, in order.
fn push_names(flag: &str, v: &str, list: &mut Vec<String>) -> Result<(), String> {
    let names: Vec<&str> = v.split(',').map(str::trim).collect();
    if names.iter().any(|n| n.is_empty()) {
        return Err(format!("{flag}: '{v}' has an empty name"));
    }
    for n in names {
        if n.chars().any(char::is_control) {
            return Err(format!("{flag}: a name with control characters"));
        }
        if !list.iter().any(|x| x == n) {
            list.push(n.to_string());
        }
    }
    Ok(())
}

fn number<T: std::str::FromStr + PartialOrd + std::fmt::Display>(
    flag: &str,
    v: &str,
    min: T,
    max: T,
) -> Result<T, String> {
    match v.trim().parse::<T>() {
        Ok(n) if n >= min && n <= max => Ok(n),
        _ => Err(format!(
            "{flag}: '{v}' is not a whole number from {min} to {max}"
        )),
    }
}

/// Parses the arguments after `probe`. `Err` is a message for standard error (exit 2).
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Parsed, String> {
    let mut url = None;
    let mut models = Vec::new();
    let mut regions = Vec::new();
    let mut calls = 5;
    let mut modes = vec![Mode::Plain, Mode::Stream];
    let mut prompt = DEFAULT_PROMPT.to_string();
    let mut max_tokens = 16;
    let mut timeout_secs = 60;
    let mut concurrency = 1;
    let mut key_file = None;
    let mut json = false;
    let mut chart = None;

    let mut args = args.into_iter().enumerate();
    while let Some((i, arg)) = args.next() {
        let arg = text("argument", arg)?;
        if !arg.starts_with('-') || arg == "-" {
            // Not echoed: a key pasted where it does not belong would end up in a terminal's
            // scrollback or a CI log.
            return Err(format!(
                "unexpected argument #{} (probe takes only options; the key goes in GATEWAY_KEY \
                 or --key-file)",
                i + 1
            ));
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
                    Some((_, v)) => text(&flag, v),
                    None => Err(format!("{flag} needs a value")),
                },
            }
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(Parsed::Help),
            "--json" if inline.is_some() => return Err(format!("{flag} takes no value")),
            "--json" => json = true,
            "--key" | "--api-key" | "--token" => {
                return Err(format!(
                    "{flag}: the key is never taken from the command line (other users can \
                     read it in `ps`): set GATEWAY_KEY or use --key-file PATH"
                ));
            }
            "--url" => url = Some(base_url(&value(inline)?)?),
            "--model" | "-m" => push_names(&flag, &value(inline)?, &mut models)?,
            "--region" | "-r" => {
                let mut names = Vec::new();
                push_names(&flag, &value(inline)?, &mut names)?;
                for n in names {
                    let r = (!n.eq_ignore_ascii_case("auto")).then_some(n);
                    if !regions.contains(&r) {
                        regions.push(r);
                    }
                }
            }
            "-n" | "--calls" => calls = number(&flag, &value(inline)?, 1, MAX_CALLS)?,
            "--mode" => {
                modes = match value(inline)?.trim() {
                    "plain" => vec![Mode::Plain],
                    "stream" => vec![Mode::Stream],
                    "both" => vec![Mode::Plain, Mode::Stream],
                    other => return Err(format!("--mode: '{other}' is not plain, stream or both")),
                }
            }
            "--prompt" => {
                let p = value(inline)?;
                if p.trim().is_empty() {
                    return Err("--prompt needs a non-empty value".into());
                }
                if p.len() > MAX_PROMPT_BYTES {
                    return Err(format!("--prompt is over {MAX_PROMPT_BYTES} bytes"));
                }
                prompt = p;
            }
            "--max-tokens" => max_tokens = number(&flag, &value(inline)?, 0, 1_000_000)?,
            "--timeout-secs" => {
                timeout_secs = number(&flag, &value(inline)?, 1, MAX_TIMEOUT_SECS)?;
            }
            "--concurrency" => concurrency = number(&flag, &value(inline)?, 1, MAX_CONCURRENCY)?,
            "--key-file" => key_file = Some(PathBuf::from(non_empty(&flag, value(inline)?)?)),
            "--chart" => chart = Some(PathBuf::from(non_empty(&flag, value(inline)?)?)),
            _ => return Err(format!("unknown option '{flag}'")),
        }
    }
    let Some(url) = url else {
        return Err("--url is required (the gateway, e.g. http://127.0.0.1:8080)".into());
    };
    if models.is_empty() {
        return Err("--model is required (one or more models to call)".into());
    }
    if regions.is_empty() {
        regions.push(None);
    }
    let rows = (models.len() as u64)
        .saturating_mul(regions.len() as u64)
        .saturating_mul(modes.len() as u64);
    if rows.saturating_mul(u64::from(calls)) > MAX_TOTAL_CALLS {
        return Err(format!(
            "{rows} rows × {calls} calls is over {MAX_TOTAL_CALLS} calls in one run"
        ));
    }
    Ok(Parsed::Run(Box::new(Options {
        url,
        models,
        regions,
        calls,
        modes,
        prompt,
        max_tokens,
        timeout: Duration::from_secs(timeout_secs),
        concurrency,
        key_file,
        json,
        chart,
    })))
}

fn non_empty(flag: &str, v: String) -> Result<String, String> {
    if v.trim().is_empty() {
        Err(format!("{flag} needs a non-empty value"))
    } else {
        Ok(v)
    }
}

/// The gateway's base URL from `--url`: http or https with a host, no query; a trailing `/`
/// or `/v1` (an SDK's `base_url`) removed, so `{base}/v1/...` is every endpoint.
pub fn base_url(raw: &str) -> Result<String, String> {
    let raw = raw.trim();
    let uri: http::Uri = raw
        .parse()
        .map_err(|_| format!("--url: '{raw}' is not a URL"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => {
            return Err(format!(
                "--url: '{raw}' must start with http:// or https://"
            ))
        }
    }
    let Some(authority) = uri.authority() else {
        return Err(format!("--url: '{raw}' has no host"));
    };
    if authority.host().is_empty() {
        return Err(format!("--url: '{raw}' has no host"));
    }
    if authority.as_str().contains('@') {
        return Err("--url: credentials in the URL are not accepted (use GATEWAY_KEY)".into());
    }
    if uri.query().is_some() || raw.contains('#') {
        return Err(format!("--url: '{raw}' must not have a query or fragment"));
    }
    let mut path = uri.path().trim_end_matches('/');
    path = path.strip_suffix("/v1").unwrap_or(path);
    let scheme = uri.scheme_str().unwrap_or("http");
    Ok(format!("{scheme}://{authority}{path}"))
}

/// Where the key was read from, for messages.
#[derive(Debug, Clone, PartialEq)]
pub enum KeySource {
    Env,
    File(PathBuf),
}

impl std::fmt::Display for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySource::Env => write!(f, "GATEWAY_KEY"),
            KeySource::File(p) => write!(f, "{}", p.display()),
        }
    }
}

/// The environment variable holding the client key.
pub const KEY_ENV: &str = "GATEWAY_KEY";

/// The client key: the first line of `--key-file`, else `GATEWAY_KEY`. `Err` is a message for
/// standard error (exit 2); it never contains the key.
pub fn client_key(
    key_file: Option<&Path>,
    env: Option<OsString>,
) -> Result<(String, KeySource), String> {
    let (raw, source) = match key_file {
        Some(path) => {
            let bytes = std::fs::read(path)
                .map_err(|e| format!("--key-file: cannot read {}: {e}", path.display()))?;
            let first = bytes.split(|b| *b == b'\n').next().unwrap_or_default();
            let first = first.strip_suffix(b"\r").unwrap_or(first);
            let s = std::str::from_utf8(first)
                .map_err(|_| format!("{}: the key is not UTF-8 text", path.display()))?;
            (s.to_string(), KeySource::File(path.to_path_buf()))
        }
        None => match env {
            Some(v) => (
                v.into_string()
                    .map_err(|_| format!("{KEY_ENV}: the key is not UTF-8 text"))?,
                KeySource::Env,
            ),
            None => {
                return Err(format!(
                    "no client key: set {KEY_ENV} or give --key-file PATH (the key is never \
                     taken from the command line)"
                ))
            }
        },
    };
    let key = raw.trim();
    if key.is_empty() {
        return Err(format!("{source}: the key is empty"));
    }
    if key.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "{source}: the key contains spaces or control characters"
        ));
    }
    Ok((key.to_string(), source))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Options, String> {
        match parse(args.iter().map(OsString::from))? {
            Parsed::Run(o) => Ok(*o),
            Parsed::Help => Err("help".into()),
        }
    }

    #[test]
    fn defaults() {
        let o = run(&["--url", "http://127.0.0.1:8080", "--model", "m"]).unwrap();
        assert_eq!(o.url, "http://127.0.0.1:8080");
        assert_eq!(o.models, ["m"]);
        assert_eq!(o.regions, [None]);
        assert_eq!(o.calls, 5);
        assert_eq!(o.modes, [Mode::Plain, Mode::Stream]);
        assert_eq!(o.prompt, DEFAULT_PROMPT);
        assert_eq!(o.max_tokens, 16);
        assert_eq!(o.timeout, Duration::from_secs(60));
        assert_eq!(o.concurrency, 1);
        assert!(!o.json && o.chart.is_none() && o.key_file.is_none());
    }

    #[test]
    fn lists_repeat_or_split_on_commas_once_each() {
        let o = run(&[
            "--url=https://gw.example.com/v1/",
            "--model",
            "a, b",
            "-m",
            "c",
            "--model=a",
            "--region",
            "eu,auto",
            "-r",
            "us",
            "--region=EU",
            "--region",
            "AUTO",
            "-n",
            "3",
            "--mode",
            "stream",
            "--prompt",
            "Hi",
            "--max-tokens=0",
            "--timeout-secs",
            "5",
            "--concurrency=4",
            "--key-file",
            "k.txt",
            "--json",
            "--chart",
            "out.png",
        ])
        .unwrap();
        assert_eq!(o.url, "https://gw.example.com");
        assert_eq!(o.models, ["a", "b", "c"]);
        // Names compare exactly ("EU" is another row) except `auto`, in any case.
        assert_eq!(
            o.regions,
            [
                Some("eu".into()),
                None,
                Some("us".into()),
                Some("EU".into())
            ]
        );
        assert_eq!((o.calls, o.max_tokens, o.concurrency), (3, 0, 4));
        assert_eq!(o.modes, [Mode::Stream]);
        assert_eq!(o.prompt, "Hi");
        assert_eq!(o.timeout, Duration::from_secs(5));
        assert_eq!(o.key_file, Some(PathBuf::from("k.txt")));
        assert!(o.json);
        assert_eq!(o.chart, Some(PathBuf::from("out.png")));
    }

    #[test]
    fn urls_keep_their_prefix_and_lose_v1() {
        for (raw, want) in [
            ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
            ("http://127.0.0.1:8080/", "http://127.0.0.1:8080"),
            ("http://127.0.0.1:8080/v1", "http://127.0.0.1:8080"),
            ("https://h.example/gw/v1/", "https://h.example/gw"),
            ("https://h.example/gw", "https://h.example/gw"),
        ] {
            assert_eq!(base_url(raw).as_deref(), Ok(want), "{raw}");
        }
        for bad in [
            "127.0.0.1:8080",
            "ftp://h.example",
            "http://",
            "http://user:pw@h.example",
            "http://h.example/?a=1",
            "not a url",
        ] {
            assert!(base_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn help_wins() {
        assert_eq!(
            parse(["--json", "-h"].map(OsString::from)),
            Ok(Parsed::Help)
        );
        assert_eq!(parse(["--help"].map(OsString::from)), Ok(Parsed::Help));
    }

    #[test]
    fn bad_arguments_are_refused_with_a_reason() {
        let base = ["--url", "http://h:1", "--model", "m"];
        for (extra, needle) in [
            (&["--nope"][..], "unknown option '--nope'"),
            (&["-n"][..], "needs a value"),
            (&["-n", "0"][..], "from 1 to 10000"),
            (&["-n", "five"][..], "not a whole number"),
            (&["--mode", "fast"][..], "plain, stream or both"),
            (&["--concurrency", "65"][..], "from 1 to 64"),
            (&["--timeout-secs", "0"][..], "from 1"),
            (&["--json=yes"][..], "takes no value"),
            (&["--model", "a,,b"][..], "empty name"),
            (&["--prompt", " "][..], "non-empty"),
            (&["--chart", ""][..], "non-empty"),
            (
                &["-n", "10000", "--model", "a,b,c,d,e,f"][..],
                "over 100000 calls",
            ),
        ] {
            let mut args = base.to_vec();
            args.extend_from_slice(extra);
            let err = run(&args).unwrap_err();
            assert!(err.contains(needle), "{extra:?}: {err}");
        }
        assert!(run(&["--model", "m"])
            .unwrap_err()
            .contains("--url is required"));
        assert!(run(&["--url", "http://h:1"])
            .unwrap_err()
            .contains("--model is required"));
    }

    #[test]
    fn a_key_on_the_command_line_is_refused_and_not_echoed() {
        for args in [
            &["--url", "http://h:1", "--model", "m", "--key", "sk-secret"][..],
            &["--url", "http://h:1", "--model", "m", "--key=sk-secret"][..],
            &["--url", "http://h:1", "--model", "m", "sk-secret"][..],
        ] {
            let err = run(args).unwrap_err();
            assert!(err.contains("GATEWAY_KEY"), "{args:?}: {err}");
            assert!(!err.contains("sk-secret"), "{args:?}: {err}");
        }
    }

    #[test]
    fn the_key_comes_from_the_file_first_then_the_environment() {
        let dir = std::env::temp_dir().join(format!("probe-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("key");
        std::fs::write(&file, "from-file\r\nsecond line\n").unwrap();
        let env = Some(OsString::from("from-env"));
        assert_eq!(
            client_key(Some(&file), env.clone()).unwrap(),
            ("from-file".to_string(), KeySource::File(file.clone()))
        );
        assert_eq!(
            client_key(None, Some(OsString::from(" from-env\n"))).unwrap(),
            ("from-env".to_string(), KeySource::Env)
        );
        assert!(client_key(None, None).unwrap_err().contains("GATEWAY_KEY"));
        assert!(client_key(None, Some(OsString::from("")))
            .unwrap_err()
            .contains("empty"));
        let err = client_key(None, Some(OsString::from("two words"))).unwrap_err();
        assert!(
            err.contains("spaces") && !err.contains("two words"),
            "{err}"
        );
        let missing = dir.join("missing");
        assert!(client_key(Some(&missing), env)
            .unwrap_err()
            .contains("cannot read"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
