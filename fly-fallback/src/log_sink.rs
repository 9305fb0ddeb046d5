//! Request log lines leave the async workers through a bounded channel to one writer thread,
//! which batches them into stdout. A slow reader of stdout (Fly's log shipper) then delays only
//! that thread, and a busy gateway makes one write per batch rather than one per request.
//! When the queue is full, senders wait: lines are never dropped.

use std::io::{BufWriter, Write};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::OnceLock;
use std::time::Duration;

enum Msg {
    Line(String),
    Flush(SyncSender<()>),
}

static SINK: OnceLock<SyncSender<Msg>> = OnceLock::new();
const QUEUE: usize = 16 * 1024;

/// Starts the writer thread; lines written before this go straight to stdout.
pub fn start() {
    let (tx, rx) = sync_channel::<Msg>(QUEUE);
    let spawned = std::thread::Builder::new()
        .name("log-writer".into())
        .spawn(move || run(rx));
    if spawned.is_ok() {
        let _ = SINK.set(tx);
    }
}

fn run(rx: Receiver<Msg>) {
    let mut out = BufWriter::with_capacity(64 * 1024, std::io::stdout());
    while let Ok(msg) = rx.recv() {
        let mut next = Some(msg);
        // Take everything already queued before flushing: one write for the batch.
        while let Some(msg) = next {
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
        let _ = out.flush();
    }
}

/// Queues one line (which must end with a newline).
pub fn write(line: String) {
    match SINK.get() {
        Some(tx) => match tx.try_send(Msg::Line(line)) {
            Ok(()) => {}
            Err(TrySendError::Full(msg)) => {
                let _ = tx.send(msg);
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

/// Waits (at most `within`) until every queued line has been written; used before exiting.
pub fn flush(within: Duration) {
    let Some(tx) = SINK.get() else {
        return;
    };
    let (ack_tx, ack_rx) = sync_channel(1);
    if tx.send(Msg::Flush(ack_tx)).is_ok() {
        let _ = ack_rx.recv_timeout(within);
    }
}
