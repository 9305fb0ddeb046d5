// bench/perf-report.mjs on a small `perf script` output written as perf writes it.
import assert from "node:assert/strict";
import { test } from "node:test";
import { analyse, codeName, compare, format, kindOf, parseSamples, pauses } from "./perf-report.mjs";

const MAP = "/tmp/perf-100.map";
const WD = "/repo/node_modules/@cloudflare/workerd-linux-64/bin/workerd";
const sample = (time, frames, tid = 100) =>
  `workerd ${tid} ${time.toFixed(6)}:     250000 cpu-clock: \n` +
  frames.map(([sym, dso]) => `\t    55a6b8848c3d ${sym}+0x17d (${dso})`).join("\n") +
  "\n\n";

// Line 3 of the bundle is wasm-bindgen's import of `send`.
const BUNDLE = ["function a() {}", "var x = {", '  }, "__wbg_ok"), __wbg_send_812157b894e80297: /* @__PURE__ */ __name(function(e) {'];

const TEXT =
  // wasm, called from the bundle's JavaScript
  sample(1.0, [
    ["JS:gateway_core::exchange::Exchange::start::h04bcb8aaa0f4e464-184-turbofan", MAP],
    ["JS:+'we file:///bundle/index.js:62:18", MAP],
    ["Builtins_JSEntry", WD],
  ]) +
  // workerd's fetch, asked for by the import on line 3
  sample(1.00025, [
    ["workerd::api::fetchImpl", WD],
    ["Builtins_CallApiCallbackOptimizedNoProfiling", WD],
    ["JS:' file:///bundle/index.js:3:107", MAP],
    ["JS:gateway_core::exchange::Exchange::poll_action::h0000000000000000-12-liftoff", MAP],
  ]) +
  // a collection, and workerd destroying a Headers after it
  sample(1.0005, [
    ["workerd::api::Headers::~Headers", WD],
    ["workerd::jsg::HeapTracer::HeapTracer(v8::Isolate*)::$_1::__invoke", WD],
    ["v8::internal::Heap::CallGCEpilogueCallbacks", WD],
    ["v8::internal::Heap::CollectGarbage", WD],
  ]) +
  sample(1.00075, [
    ["v8::internal::Scavenger::Process", WD],
    ["v8::internal::Heap::Scavenge", WD],
    ["v8::internal::Heap::CollectGarbage", WD],
  ]) +
  // the kernel, with no Worker code on the stack; then a collection after a gap of 10 ms
  sample(1.001, [["tcp_sendmsg", "[kernel.kallsyms]"]]) +
  sample(1.011, [["v8::internal::Heap::CollectGarbage", WD]]) +
  // another thread
  sample(1.0112, [["v8::internal::Heap::CollectGarbage", WD]], 101);

test("perf script's samples are read with their thread, time and frames, the leaf first", () => {
  const samples = parseSamples(TEXT);
  assert.equal(samples.length, 7);
  assert.equal(samples[0].tid, "100");
  assert.equal(samples[0].time, 1.0);
  assert.deepEqual(samples[0].frames[0], {
    sym: "JS:gateway_core::exchange::Exchange::start::h04bcb8aaa0f4e464-184-turbofan",
    dso: MAP,
  });
  assert.equal(samples[1].frames.length, 4);
});

test("a sample's kind is its own frame's: wasm, the bundle's JavaScript, workerd, V8's collector, the kernel", () => {
  const [wasm, fetch, epilogue, scavenge, kernel] = parseSamples(TEXT);
  assert.equal(kindOf(wasm.frames[0]), "wasm (Rust)");
  assert.equal(kindOf(wasm.frames[1]), "JavaScript (bundle)");
  assert.match(kindOf(fetch.frames[0]), /^workerd/);
  assert.equal(kindOf(fetch.frames[1]), "V8 builtins and interpreter");
  assert.match(kindOf(epilogue.frames[0]), /^workerd/);
  assert.equal(kindOf(scavenge.frames[0]), "V8 garbage collector");
  assert.equal(kindOf(kernel.frames[0]), "kernel");
});

test("the Worker's code is named: a wasm function without its hash, an import of wasm-bindgen from the bundle's line", () => {
  const [wasm, fetch] = parseSamples(TEXT);
  assert.equal(codeName(wasm.frames[0], BUNDLE), "wasm gateway_core::exchange::Exchange::start");
  assert.equal(codeName(wasm.frames[1], BUNDLE), "js we:62");
  assert.equal(codeName(fetch.frames[2], BUNDLE), "import __wbg_send");
  assert.equal(codeName(fetch.frames[2]), "js (anonymous):3");
});

test("each sample is charged to the nearest Worker code on its stack, and the epilogue to what it destroyed", () => {
  const a = analyse(parseSamples(TEXT), { bundleLines: BUNDLE });
  const share = (rows, key) => rows.find(([k]) => k === key)?.[1];
  assert.equal(share(a.byCode, "wasm (all of the Rust)"), 1 / 7);
  assert.equal(share(a.byCode, "import __wbg_send"), 1 / 7);
  assert.equal(share(a.byCode, "(no Worker code on the stack)"), 5 / 7);
  assert.equal(a.gc, 4 / 7);
  assert.equal(a.epilogue, 1 / 7);
  assert.deepEqual(a.destroyed, [["workerd::api::Headers::~Headers", 1 / 7]]);
});

test("a pause is consecutive samples of the busiest thread in the collector, no more than 2 ms apart", () => {
  const p = pauses(parseSamples(TEXT));
  assert.equal(p.length, 2);
  assert.equal(p[0].samples, 2);
  assert.ok(Math.abs(p[0].ms - 0.25) < 1e-6);
  assert.equal(p[1].samples, 1);
});

test("the report gives µs per request when told the CPU per request", () => {
  const text = format(analyse(parseSamples(TEXT), { bundleLines: BUNDLE }), { perUs: 700 });
  assert.match(text, /7 samples, 700 µs of workerd's CPU per request/);
  assert.match(text, /14\.3 %\s+100 µs {2}import __wbg_send/);
  assert.match(text, /longest collections on the isolate's thread: 0\.3 ms, 0\.0 ms/);
});

test("two saved reports compare side by side, the bundle's functions matched without their line", () => {
  const loop = (line) =>
    TEXT +
    sample(1.02, [
      ["workerd::api::setTimeout", WD],
      [`JS:+'we file:///bundle/index.js:${line}:18`, MAP],
    ]);
  const a = { ...analyse(parseSamples(loop(62)), { bundleLines: BUNDLE }), perUs: 800 };
  const b = { ...analyse(parseSamples(loop(64)), { bundleLines: BUNDLE }), perUs: 400 };
  // As --save writes them and --compare reads them.
  const text = compare(JSON.parse(JSON.stringify(a)), JSON.parse(JSON.stringify(b)));
  assert.match(text, /A: 8 samples, 800 µs per request; B: 8 samples, 400 µs per request/);
  assert.match(text, /12\.5 %\s+100 µs\s+12\.5 %\s+50 µs {2}js we$/m);
  assert.match(text, /12\.5 %\s+100 µs\s+12\.5 %\s+50 µs {2}import __wbg_send$/m);
  assert.match(text, /garbage collection: A 50\.0 % \(epilogue 12\.5 %\), B 50\.0 %/);
});

test("a function found on one side only shows a dash on the other", () => {
  const a = analyse(parseSamples(TEXT), { bundleLines: BUNDLE });
  const b = analyse(parseSamples(TEXT), { bundleLines: [] });
  const text = compare(a, b);
  assert.match(text, /14\.3 %\s+– {2}import __wbg_send$/m);
  assert.match(text, /–\s+14\.3 % {2}js \(anonymous\)$/m);
});

test("JIT code without a name (V8's perf map missing) is reported as such, not as the Worker's", () => {
  const text = sample(1.0, [["[unknown]", MAP], ["Builtins_JSEntry", WD]]) + TEXT;
  const report = format(analyse(parseSamples(text), { bundleLines: BUNDLE }));
  assert.match(report, /warning: 13 % of the samples are JIT code without a name/);
  assert.doesNotMatch(format(analyse(parseSamples(TEXT), { bundleLines: BUNDLE })), /warning/);
});
