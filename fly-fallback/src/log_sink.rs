//! Request log lines leave the async workers through a bounded channel to one writer thread,
//! which batches them into stdout. A slow reader of stdout (Fly's log shipper) then delays only
//! that thread, and a busy gateway makes one write per batch rather than one per request.
//!
//! After each batch the writer naps a few milliseconds before it looks again, so that under load
//! the lines of that time wait for it in the queue: a request then only queues its line, instead
//! of waking the writer with a system call (and a hand-off to another thread) every time. An
//! idle writer waits on the queue, so a quiet gateway's lines still go out at once.
//!
//! When the queue is full (stdout stalled), a line is dropped and counted rather than block a
//! worker: one stuck log shipper must not stop the gateway. Once output flows again, one line
//! says how many were dropped. `LOG_LOSSLESS=true` makes workers wait instead (never drop).

use std::io::{BufWriter, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

enum Msg {
    Line(String),
    Flush(SyncSender<()>),
}

static SINK: OnceLock<SyncSender<Msg>> = OnceLock::new();
static DROPPED: AtomicU64 = AtomicU64::new(0);
/// Every line dropped since the start (for `/metrics`; `DROPPED` is reset when reported).
static DROPPED_TOTAL: AtomicU64 = AtomicU64::new(0);
static LOSSLESS: AtomicBool = AtomicBool::new(false);
pub const DEFAULT_QUEUE: usize = 16 * 1024;
/// The writer's nap after a batch: how late a line may be written under load.
const NAP: Duration = Duration::from_millis(5);

/// Starts the writer thread; lines written before this go straight to stdout. `queue` lines may
/// wait for it; `lossless` makes writers wait for room instead of dropping.
pub fn start(queue: usize, lossless: bool) {
    LOSSLESS.store(lossless, Ordering::Relaxed);
    let capacity = queue.max(1);
    let (tx, rx) = sync_channel::<Msg>(capacity);
    let spawned = std::thread::Builder::new()
        .name("log-writer".into())
        .spawn(move || run(rx, capacity));
    if spawned.is_ok() {
        let _ = SINK.set(tx);
    }
}

fn run(rx: Receiver<Msg>, capacity: usize) {
    let mut out = BufWriter::with_capacity(64 * 1024, std::io::stdout());
    while let Ok(msg) = rx.recv() {
        let mut next = Some(msg);
        let mut batch = 0usize;
        // Take everything already queued before flushing: one write for the batch.
        while let Some(msg) = next {
            batch += 1;
            match msg {
                Msg::Line(line) => {
                    let _ = out.write_all(line.as_bytes());
                }
                Msg::Flush(ack) => {
                    let _ = out.flush();
                    let _ = ack.send(());
                }
            }
            next = rx.try_recv().ok();
        }
        let dropped = DROPPED.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            let time = gateway_core::log::format_time(crate::clock::now().unix.as_millis());
            let _ = writeln!(
                out,
                "{{\"time\":\"{time}\",\"event\":\"log_lines_dropped\",\"count\":{dropped}}}"
            );
        }
        let _ = out.flush();
        // No nap when the queue was filling up (a small `LOG_QUEUE_LINES`, or a flood of lines):
        // lines would be dropped meanwhile.
        if batch < capacity / 2 {
            std::thread::sleep(NAP);
        }
    }
}

/// Queues one line (which must end with a newline).
pub fn write(line: String) {
    match SINK.get() {
        Some(tx) => match tx.try_send(Msg::Line(line)) {
            Ok(()) => {}
            Err(TrySendError::Full(msg)) => {
                if LOSSLESS.load(Ordering::Relaxed) {
                    let _ = tx.send(msg);
                } else {
                    DROPPED.fetch_add(1, Ordering::Relaxed);
                    DROPPED_TOTAL.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(TrySendError::Disconnected(Msg::Line(line))) => write_directly(&line),
            Err(TrySendError::Disconnected(_)) => {}
        },
        None => write_directly(&line),
    }
}

fn write_directly(line: &str) {
    let _ = std::io::stdout().lock().write_all(line.as_bytes());
}

/// Lines dropped since the start.
pub fn dropped_total() -> u64 {
    DROPPED_TOTAL.load(Ordering::Relaxed)
}

/// Lines dropped and not yet reported.
#[cfg(test)]
fn dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// Waits (at most `within`) until every queued line has been written; used before exiting.
/// A stalled stdout cannot hold the exit past `within`.
pub fn flush(within: Duration) {
    let Some(tx) = SINK.get() else {
        return;
    };
    let deadline = Instant::now() + within;
    let (ack_tx, ack_rx) = sync_channel(1);
    let mut msg = Msg::Flush(ack_tx);
    loop {
        match tx.try_send(msg) {
            Ok(()) => break,
            Err(TrySendError::Full(m)) if Instant::now() < deadline => {
                msg = m;
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(_) => return,
        }
    }
    let _ = ack_rx.recv_timeout(deadline.saturating_duration_since(Instant::now()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_blocking() {
        // No writer thread: a queue of one that nobody empties.
        let (tx, _rx) = sync_channel::<Msg>(1);
        let _ = SINK.set(tx);
        let start = Instant::now();
        for _ in 0..100 {
            write("line\n".into());
        }
        assert!(start.elapsed() < Duration::from_secs(1), "a writer blocked");
        assert_eq!(dropped(), 99);
    }
}
