//! The Worker's Analytics Engine data point: the facts of the request's log line, in the
//! dataset's `indexes`/`blobs`/`doubles` form.
//!
//! A dataset has no column names: a query names `index1`, `blob1..blob20`, `double1..double20`.
//! So the positions are a fixed schema, [`SCHEMA`], written once here; the mapping, the tests
//! and the README's table all read it. A new field goes at the next free position: moving one
//! would mix two meanings in a column of the data already written. All 20 blobs are taken;
//! doubles 17 to 20 are free.
//!
//! What a column holds:
//! - `index1`: the client key's id (`""` without one): Analytics Engine samples per index, so a
//!   busy key cannot crowd the others out of a query's sample.
//! - a blob: the log line's value as text (a flag as `"true"`/`"false"`), `""` where the log
//!   line has none (a flag the log line leaves out when false is then `""`, not `"false"`).
//! - a double: the log line's number (`cost_usd` and `saved_usd` as USD in an `f64`; the exact
//!   decimal stays in the log line), `0` where the log line has none.
//!
//! Limits (Workers Analytics Engine, per data point): one index of at most 96 bytes, at most 20
//! blobs totalling at most 16 KB, at most 20 doubles. The index is cut to [`INDEX_MAX_BYTES`]
//! and each blob to [`BLOB_MAX_BYTES`], on a character boundary, so 20 blobs take at most 5,120
//! bytes (within even the limit before June 2025). Only free text can be that long (a path, a
//! client's model name); ids, codes and names are far shorter. A double that is not finite is
//! `0`.

use crate::log::RequestLog;

/// The index's limit.
pub const INDEX_MAX_BYTES: usize = 96;
/// Each blob's share of the blobs' limit, kept to 5,120 bytes for 20 of them.
pub const BLOB_MAX_BYTES: usize = 256;
const _: () = assert!(BLOB_MAX_BYTES * 20 <= 16 * 1000);

/// One data point: the fields of the object `writeDataPoint` takes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DataPoint {
    pub indexes: Vec<String>,
    pub blobs: Vec<String>,
    pub doubles: Vec<f64>,
}

/// Where a log field goes, and how to read it from the record. Positions count from 1, as the
/// dataset's column names do.
#[derive(Clone, Copy)]
pub enum Column {
    Index(fn(&RequestLog) -> Option<&str>),
    Blob(u8, fn(&RequestLog) -> Option<&str>),
    Double(u8, fn(&RequestLog) -> Option<f64>),
}

impl Column {
    /// The dataset's name for the column: `index1`, `blob3`, `double12`.
    pub fn name(&self) -> String {
        match self {
            Column::Index(_) => "index1".into(),
            Column::Blob(n, _) => format!("blob{n}"),
            Column::Double(n, _) => format!("double{n}"),
        }
    }
}

/// One column of the schema: the log line's field it carries (`a.b` for a nested one; a name
/// the log line lacks is derived from it, see [`OMITTED`]) and where it goes.
pub struct Field {
    pub name: &'static str,
    pub column: Column,
}

const fn field(name: &'static str, column: Column) -> Field {
    Field { name, column }
}

fn text(v: &Option<String>) -> Option<&str> {
    v.as_deref()
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "true"
    } else {
        "false"
    }
}

/// A flag the log line writes only when set.
fn set(b: bool) -> Option<&'static str> {
    b.then_some("true")
}

fn count(n: Option<u64>) -> Option<f64> {
    n.map(|n| n as f64)
}

/// How many attempts went to another upstream than the attempt before (a failover; a tier
/// moving to its next model on the same upstream is not one).
fn failovers(l: &RequestLog) -> usize {
    let after = l.attempts.iter().skip(1);
    l.attempts
        .iter()
        .zip(after)
        .filter(|(a, b)| a.upstream != b.upstream)
        .count()
}

/// The data point's schema: every column, in no particular order (the positions say where).
pub const SCHEMA: &[Field] = &[
    field("key_id", Column::Index(|l| text(&l.key_id))),
    field("request_id", Column::Blob(1, |l| Some(&l.request_id))),
    field("path", Column::Blob(2, |l| Some(&l.path))),
    field("method", Column::Blob(3, |l| Some(&l.method))),
    field(
        "requested_model",
        Column::Blob(4, |l| text(&l.requested_model)),
    ),
    field("model", Column::Blob(5, |l| text(&l.model))),
    field("selection", Column::Blob(6, |l| text(&l.selection))),
    field("upstream", Column::Blob(7, |l| text(&l.upstream))),
    field("region", Column::Blob(8, |l| text(&l.region))),
    field("cache", Column::Blob(9, |l| l.cache)),
    field("error_code", Column::Blob(10, |l| text(&l.error_code))),
    field("upstream_error", Column::Blob(11, |l| l.upstream_error)),
    field(
        "client_location.country",
        Column::Blob(12, |l| text(&l.client_location.country)),
    ),
    field(
        "client_location.colo",
        Column::Blob(13, |l| text(&l.client_location.colo)),
    ),
    field("stream", Column::Blob(14, |l| Some(yes_no(l.stream)))),
    field(
        "stream_complete",
        Column::Blob(15, |l| l.stream_complete.map(yes_no)),
    ),
    field("over_budget", Column::Blob(16, |l| set(l.over_budget))),
    field("unpriced", Column::Blob(17, |l| set(l.unpriced))),
    field(
        "cost_estimated",
        Column::Blob(18, |l| l.cost_estimated.map(yes_no)),
    ),
    field("limiter_error", Column::Blob(19, |l| set(l.limiter_error))),
    field("limited", Column::Blob(20, |l| l.limited)),
    field("status", Column::Double(1, |l| Some(f64::from(l.status)))),
    field("total_ms", Column::Double(2, |l| Some(l.total_ms))),
    field("upstream_ms", Column::Double(3, |l| l.upstream_ms)),
    field("ttft_ms", Column::Double(4, |l| l.ttft_ms)),
    field("overhead_ms", Column::Double(5, |l| l.overhead_ms)),
    field("bytes_in", Column::Double(6, |l| count(Some(l.bytes_in)))),
    field("bytes_out", Column::Double(7, |l| count(Some(l.bytes_out)))),
    field(
        "prompt_tokens",
        Column::Double(8, |l| count(l.prompt_tokens)),
    ),
    field(
        "cached_tokens",
        Column::Double(9, |l| count(l.cached_tokens)),
    ),
    field(
        "cache_write_tokens",
        Column::Double(10, |l| count(l.cache_write_tokens)),
    ),
    field(
        "completion_tokens",
        Column::Double(11, |l| count(l.completion_tokens)),
    ),
    field(
        "reasoning_tokens",
        Column::Double(12, |l| count(l.reasoning_tokens)),
    ),
    field(
        "cost_usd",
        Column::Double(13, |l| l.cost_usd.map(|m| m.as_f64())),
    ),
    field(
        "saved_usd",
        Column::Double(14, |l| l.saved_usd.map(|m| m.as_f64())),
    ),
    field(
        "attempt_count",
        Column::Double(15, |l| Some(l.attempts.len() as f64)),
    ),
    field(
        "failover_count",
        Column::Double(16, |l| Some(failovers(l) as f64)),
    ),
];

/// The log line's fields that no column carries as such, and why. With [`SCHEMA`] it names
/// every field of the log line (a unit test holds them to it).
pub const OMITTED: &[(&str, &str)] = &[
    ("time", "every data point has its own timestamp"),
    (
        "runtime",
        "always `worker`: only the Worker writes data points",
    ),
    (
        "attempts",
        "each attempt's detail stays in the log line; attempt_count and failover_count sum it up",
    ),
    (
        "error_detail",
        "free text for whoever reads the log line; error_code is its kind",
    ),
    (
        "client_location.continent",
        "follows from client_location.country",
    ),
    (
        "client_location.latitude",
        "a client's coordinates are more than a dataset needs (country and colo place it)",
    ),
    (
        "client_location.longitude",
        "a client's coordinates are more than a dataset needs (country and colo place it)",
    ),
];

/// How many columns of each kind the schema uses: (blobs, doubles).
const fn widths() -> (usize, usize) {
    let (mut blobs, mut doubles, mut rest) = (0, 0, SCHEMA);
    while let [f, tail @ ..] = rest {
        match f.column {
            Column::Blob(n, _) if n as usize > blobs => blobs = n as usize,
            Column::Double(n, _) if n as usize > doubles => doubles = n as usize,
            _ => {}
        }
        rest = tail;
    }
    (blobs, doubles)
}

const WIDTHS: (usize, usize) = widths();

/// `s` cut to at most `max` bytes, on a character boundary.
fn clip(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default().to_string()
}

/// The request's data point, per [`SCHEMA`].
pub fn data_point(log: &RequestLog) -> DataPoint {
    let mut p = DataPoint {
        indexes: vec![String::new()],
        blobs: vec![String::new(); WIDTHS.0],
        doubles: vec![0.0; WIDTHS.1],
    };
    for f in SCHEMA {
        match f.column {
            Column::Index(get) => {
                if let (Some(slot), Some(v)) = (p.indexes.first_mut(), get(log)) {
                    *slot = clip(v, INDEX_MAX_BYTES);
                }
            }
            Column::Blob(n, get) => {
                let slot = p.blobs.get_mut(usize::from(n).wrapping_sub(1));
                if let (Some(slot), Some(v)) = (slot, get(log)) {
                    *slot = clip(v, BLOB_MAX_BYTES);
                }
            }
            Column::Double(n, get) => {
                let slot = p.doubles.get_mut(usize::from(n).wrapping_sub(1));
                if let (Some(slot), Some(v)) = (slot, get(log)) {
                    *slot = if v.is_finite() { v } else { 0.0 };
                }
            }
        }
    }
    p
}

#[cfg(test)]
mod tests;
