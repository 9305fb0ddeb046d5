// A request's loop, in JavaScript: the Rust `Driver` (src/edge/driver.rs) says what to await and
// is handed each outcome in one synchronous call, which also gives the next thing to await.
// Awaiting here rather than in Rust spares each wait wasm-bindgen's `JsFuture` (two closures),
// a microtask to wake the Rust task and a poll of its future.

import { headerText } from "./io.js";

const TIMEOUT = Symbol("timeout");

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
      if (out === TIMEOUT) next = driver.timeout();
      // The head read here: one call into wasm with it rather than three out of wasm for it.
      else if (out instanceof Response) next = driver.answered(out, out.status, headerText(out.headers));
      else if (out instanceof ArrayBuffer) next = driver.settle(new Uint8Array(out));
      else next = driver.settle(out);
    }
  } finally {
    if (timer !== undefined) clearTimeout(timer);
  }
}
