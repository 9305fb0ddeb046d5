// The relay of a streamed upstream body to the client, driven from JavaScript.
//
// Every chunk is handed on in the same turn it arrives, and shown to the core synchronously
// (`tap.chunk`, one call into wasm). Nothing waits on wasm's futures executor: with a Rust
// `Stream` behind `Response::from_stream`, each chunk cost a promise per pull, a microtask per
// wake-up, two copies across the boundary and about three times the CPU of this loop (the
// figures are in bench/README.md, "Where the Worker's time goes").

// workers-rs reports a read cut short by the platform this way and ends the body normally.
const ABORTED = "Error: aborted";
const CUT = "the upstream's response was cut off";

/** The reader of a body (the loop reads the first chunks with it before answering). */
export function getReader(body) {
  return body.getReader();
}

/** One read: `{ done, value }`. */
export function read(reader) {
  return reader.read();
}

/**
 * The client's body: `prefix` (what the core read before answering, if anything), then every
 * chunk from `reader` (after `pending`, a read already in progress, if any), then the core's tail.
 * `filter`: the core may change chunks (`tap.chunk` returns what to send instead); otherwise a
 * chunk goes out before the core sees it.
 */
export function relay(reader, pending, prefix, tap, filter) {
  let ended = false;
  let freed = false;
  let timer;
  let controller;

  const free = () => {
    if (!freed) {
      freed = true;
      tap.free();
    }
  };
  const disarm = () => {
    if (timer !== undefined) {
      clearTimeout(timer);
      timer = undefined;
    }
  };
  // The end the core decided (its tail, and whether to error the body so the client sees it).
  const finish = () => {
    ended = true;
    disarm();
    const tail = tap.take_tail();
    if (tail !== undefined && tail.length > 0) controller.enqueue(tail);
    const abort = tap.aborted();
    free();
    if (abort) controller.error(new Error(CUT));
    else controller.close();
  };
  const end = (failed) => {
    if (ended) return;
    tap.end(failed);
    finish();
  };
  // The core's idle deadline: one timer at a time, re-armed only when it fires.
  const arm = () => {
    if (timer !== undefined || ended) return;
    const ms = tap.idle_ms();
    if (ms >= 0) timer = setTimeout(idle, ms);
  };
  const idle = () => {
    timer = undefined;
    if (ended) return;
    if (tap.timeout()) {
      finish();
      reader.cancel().catch(() => {});
    } else {
      arm();
    }
  };

  return new ReadableStream(
    {
      start(c) {
        controller = c;
        if (prefix !== undefined && prefix.length > 0) c.enqueue(prefix);
      },
      async pull(c) {
        arm();
        // Until something goes out: a filtered chunk may hold nothing yet, and a pull that
        // enqueues nothing is not called again.
        for (;;) {
          let r;
          try {
            const next = pending ?? reader.read();
            pending = undefined;
            r = await next;
          } catch (e) {
            end(String(e) !== ABORTED);
            return;
          }
          if (ended) return;
          if (r.done) {
            end(false);
            return;
          }
          const chunk = r.value;
          if (!filter) {
            c.enqueue(chunk);
            tap.chunk(chunk);
            return;
          }
          const out = tap.chunk(chunk);
          if (out === undefined) {
            c.enqueue(chunk);
            return;
          }
          if (out.length > 0) {
            c.enqueue(out);
            return;
          }
        }
      },
      cancel(reason) {
        // The client went away: the core finishes the exchange as such when the tap is freed.
        ended = true;
        disarm();
        free();
        return reader.cancel(reason).catch(() => {});
      },
    },
    { highWaterMark: 0 },
  );
}
