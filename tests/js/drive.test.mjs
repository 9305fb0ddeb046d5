// The Worker's request loop in JavaScript (src/edge/js/drive.js) against a scripted driver: what
// it hands back for each outcome, and the core's deadline as one timer kept from step to step.
// Virtual time (node:test's mock timers): no test waits on the wall clock.
import { test, mock } from "node:test";
import assert from "node:assert/strict";
import { drive } from "../../src/edge/js/drive.js";

/**
 * A driver whose steps are `script`: each entry is what the next call returns (a Promise, a
 * Response, undefined) and the deadline it gives (`wait`, ms; negative: none). Records calls.
 */
function scripted(script) {
  const calls = [];
  let i = 0;
  const next = (name, args) => {
    calls.push([name, ...args]);
    const s = script[i++];
    if (s === undefined) throw new Error(`no step left for ${name}`);
    current = s;
    return s.next;
  };
  let current;
  return {
    calls,
    step: () => next("step", []),
    settle: (v) => next("settle", [v]),
    answered: (r, status, headers) => next("answered", [r, status, headers]),
    fail: (e) => next("fail", [e]),
    timeout: () => next("timeout", []),
    wait_ms: () => current.wait ?? -1,
    slow: () => {
      calls.push(["slow"]);
      return Promise.resolve("from the Rust loop");
    },
    free: () => calls.push(["free"]),
  };
}

const done = () => new Response("ok");
/** Lets every pending promise reaction run. */
const flush = async () => {
  for (let i = 0; i < 10; i++) await Promise.resolve();
};

test("a Response ends the loop and frees the driver", async () => {
  const r = done();
  const d = scripted([{ next: r }]);
  assert.equal(await drive(d), r);
  assert.deepEqual(d.calls, [["step"], ["free"]]);
});

test("each outcome is handed back as what it is: bytes, an answer's head, a value, an error", async () => {
  const upstream = new Response("{}", { status: 201, headers: { "x-a": "1" } });
  const error = new Error("refused");
  const d = scripted([
    { next: Promise.resolve(new ArrayBuffer(3)) },
    { next: Promise.resolve(upstream) },
    { next: Promise.resolve({ done: false, value: "chunk" }) },
    { next: Promise.reject(error) },
    { next: done() },
  ]);
  await drive(d);
  assert.equal(d.calls[1][0], "settle");
  assert.ok(d.calls[1][1] instanceof Uint8Array);
  assert.equal(d.calls[1][1].length, 3);
  assert.equal(d.calls[2][0], "answered");
  assert.equal(d.calls[2][1], upstream);
  assert.equal(d.calls[2][2], 201);
  assert.ok(d.calls[2][3].split("\n").includes("x-a:1"), d.calls[2][3]);
  assert.deepEqual(d.calls[3], ["settle", { done: false, value: "chunk" }]);
  assert.deepEqual(d.calls[4], ["fail", error]);
});

test("undefined hands the request to the Rust loop", async () => {
  const d = scripted([{ next: Promise.resolve(new ArrayBuffer(0)) }, { next: undefined }]);
  assert.equal(await drive(d), "from the Rust loop");
  assert.deepEqual(d.calls.map((c) => c[0]), ["step", "settle", "slow"]);
});

test("anything else is thrown, never returned as a response", async () => {
  const d = scripted([{ next: 42 }]);
  await assert.rejects(drive(d), (e) => e === 42);
});

test("the deadline comes first: timeout, and the loop goes on", async (t) => {
  t.mock.timers.enable({ apis: ["setTimeout", "Date"], now: 1_000 });
  const never = new Promise(() => {});
  const d = scripted([{ next: never, wait: 30 }, { next: done() }]);
  const out = drive(d);
  await flush();
  t.mock.timers.tick(29);
  await flush();
  assert.deepEqual(d.calls.map((c) => c[0]), ["step"]);
  t.mock.timers.tick(1);
  await out;
  assert.deepEqual(d.calls.map((c) => c[0]), ["step", "timeout", "free"]);
});

test("an earlier deadline's timer is kept for a later one, and when it fires the wait goes on", async (t) => {
  t.mock.timers.enable({ apis: ["setTimeout", "Date"], now: 1_000 });
  let answer;
  const late = new Promise((resolve) => (answer = resolve));
  const d = scripted([
    { next: Promise.resolve(new ArrayBuffer(0)), wait: 50 },
    { next: late, wait: 200 },
    { next: done() },
  ]);
  const out = drive(d);
  await flush();
  // The first timer (for +50) fires while the second step waits (until +200): no timeout.
  t.mock.timers.tick(60);
  await flush();
  assert.deepEqual(d.calls.map((c) => c[0]), ["step", "settle"]);
  t.mock.timers.tick(40);
  answer("head");
  await out;
  assert.deepEqual(d.calls.map((c) => c[0]), ["step", "settle", "settle", "free"]);
  assert.equal(d.calls[2][1], "head");
});

test("a later deadline's timer is replaced by an earlier one", async (t) => {
  t.mock.timers.enable({ apis: ["setTimeout", "Date"], now: 1_000 });
  const never = new Promise(() => {});
  const d = scripted([
    { next: Promise.resolve(new ArrayBuffer(0)), wait: 500 },
    { next: never, wait: 20 },
    { next: done() },
  ]);
  const out = drive(d);
  await flush();
  t.mock.timers.tick(20);
  await out;
  assert.deepEqual(d.calls.map((c) => c[0]), ["step", "settle", "timeout", "free"]);
});

test("a rejection after the deadline passed is not left unhandled", async (t) => {
  t.mock.timers.enable({ apis: ["setTimeout", "Date"], now: 1_000 });
  const unhandled = [];
  const onUnhandled = (e) => unhandled.push(e);
  process.on("unhandledRejection", onUnhandled);
  let abort;
  const call = new Promise((_, reject) => (abort = reject));
  const d = scripted([{ next: call, wait: 10 }, { next: done() }]);
  const out = drive(d);
  await flush();
  t.mock.timers.tick(10);
  await out;
  abort(new Error("aborted"));
  await flush();
  await new Promise((resolve) => setImmediate(resolve));
  process.off("unhandledRejection", onUnhandled);
  assert.deepEqual(unhandled, []);
});
