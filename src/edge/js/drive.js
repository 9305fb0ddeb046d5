// A request's loop, in JavaScript: the Rust `Driver` (src/edge/driver.rs) says what to await and
// is handed each outcome in one synchronous call, which also gives the next thing to await.
// Awaiting here rather than in Rust spares each wait wasm-bindgen's `JsFuture` (two closures),
// a microtask to wake the Rust task and a poll of its future.

const TIMEOUT = Symbol("timeout");

const toBytes = (buffer) => new Uint8Array(buffer);

/** The whole body of a request or response, as bytes. */
export function bytes(of) {
  return of.arrayBuffer().then(toBytes);
}

/**
 * Runs `driver` to its response. Each step gives a `Promise` to await (raced against the core's
 * deadline), the `Response`, or `undefined` when the Rust loop takes over (`driver.slow()`).
 * The deadline is one timer, kept from step to step while it still holds: a timer armed for an
 * earlier deadline stays, and when it fires before the deadline the wait goes on.
 */
export async function drive(driver) {
  let timer;
  let timerAt = 0;
  let fired;
  const arm = (at) => {
    if (timer !== undefined && timerAt > at) {
      clearTimeout(timer);
      timer = undefined;
    }
    if (timer === undefined) {
      timerAt = at;
      fired = new Promise((resolve) => {
        timer = setTimeout(() => {
          timer = undefined;
          resolve(TIMEOUT);
        }, Math.max(0, at - Date.now()));
      });
    }
    return fired;
  };
  try {
    let next = driver.step();
    for (;;) {
      if (next instanceof Response) {
        driver.free();
        return next;
      }
      if (next === undefined) return driver.slow();
      if (!(next instanceof Promise)) throw next;
      const ms = driver.wait_ms();
      let out;
      try {
        if (ms < 0) {
          out = await next;
        } else {
          const at = Date.now() + ms;
          do {
            out = await Promise.race([next, arm(at)]);
          } while (out === TIMEOUT && Date.now() < at);
        }
      } catch (error) {
        next = driver.fail(error);
        continue;
      }
      next = out === TIMEOUT ? driver.timeout() : driver.settle(out);
    }
  } finally {
    if (timer !== undefined) clearTimeout(timer);
  }
}
