// Reads `perf script` output for workerd (recorded with `perf record -g` while V8 wrote a perf
// map: `--perf-basic-prof`) and says where workerd's CPU time went, without the V8 inspector,
// which changes what it measures (bench/README.md, "Without the inspector"):
//
//   - by kind of code: the Worker's wasm, its JavaScript, V8, workerd itself, the kernel;
//   - by the Worker's code that asked for it: each sample goes to the nearest frame of the
//     bundle's JavaScript or wasm on its stack, so a platform call (`fetch`, `new Response`,
//     `console.log`) is charged with everything workerd did inside it;
//   - garbage collection: its share, what workerd destroyed after it (its epilogue), and the
//     longest pauses on the isolate's thread.
//
//   perf script -i perf.data | node bench/perf-report.mjs [--bundle DIST/index.js] [--per-us N] [--save F.json]
//   node bench/perf-report.mjs --compare A.json B.json      # two saved reports side by side
//
// `--bundle` names wasm-bindgen's imports (`import __wbg_send`) from the bundle's source;
// `--per-us N` (workerd's CPU per request) prints each share as µs per request as well;
// `--save` writes the figures as JSON, for `--compare` (a change's before and after).
// `bench/perf-worker.sh` records and runs this.
import fs from "node:fs";
import readline from "node:readline";
import { fileURLToPath } from "node:url";

/**
 * Reads `perf script`'s output a line at a time (it runs to hundreds of MB): `samples` are
 * `{ tid, time (s), frames: [{ sym, dso }] }`, the leaf first.
 */
export class SampleReader {
  samples = [];
  #current;

  line(line) {
    if (line.trim() === "") {
      this.#current = undefined;
    } else if (!/^\s/.test(line)) {
      // "workerd 23040 86387.163256:     250000 cpu-clock: " (the command may hold spaces)
      const m = /\s(\d+)(?:\/(\d+))?\s+(\d+\.\d+):/.exec(line);
      this.#current = m ? { tid: m[2] ?? m[1], time: Number(m[3]), frames: [] } : undefined;
      if (this.#current) this.samples.push(this.#current);
    } else {
      const f = /^\s+[0-9a-f]+\s+(.*?)(?:\+0x[0-9a-f]+)?\s+\(([^)]*)\)\s*$/.exec(line);
      if (this.#current && f) this.#current.frames.push({ sym: f[1], dso: f[2] });
    }
  }
}

/** The samples in `text` (a whole `perf script` output). */
export function parseSamples(text) {
  const reader = new SampleReader();
  for (const line of text.split("\n")) reader.line(line);
  return reader.samples;
}

const isJit = (f) => f.dso.includes("perf-") && f.dso.endsWith(".map");
// V8's perf map names a wasm function `JS:<name>-<index>-<tier>`, and JavaScript
// `JS:<marks><name> <url>:<line>:<column>`.
const WASM = /-\d+-(turbofan|liftoff)$/;
const isWasm = (f) => isJit(f) && WASM.test(f.sym) && !/wasm-to-js|js-to-wasm/.test(f.sym);
const isBundleJs = (f) => isJit(f) && f.sym.includes("file:///bundle/");
/** A JIT frame of the Worker's own code: the bundle's JavaScript or its wasm. */
const isWorkerCode = (f) => isWasm(f) || isBundleJs(f);

/** The kind of code a sample's leaf frame is. */
export function kindOf(frame) {
  if (!frame) return "unknown";
  const { sym, dso } = frame;
  if (dso.includes("kernel")) return "kernel";
  if (isWasm(frame)) return "wasm (Rust)";
  if (isBundleJs(frame)) return "JavaScript (bundle)";
  if (isJit(frame)) return "V8 stubs and other JIT code (the runtime's JavaScript)";
  if (/libc|libm|vdso/.test(dso)) return "libc";
  if (/tcmalloc|^TCMalloc/.test(sym)) return "malloc";
  if (/^Builtins_/.test(sym)) return "V8 builtins and interpreter";
  if (/^v8::internal::(Heap|Scaveng|MarkCompact|Sweep|Concurrent|Minor|TracedHandles|GlobalHandles)|^cppgc::/.test(sym)) return "V8 garbage collector";
  if (/^v8::|^_ZN2v8/.test(sym)) return "V8 runtime";
  return "workerd (its C++ and Rust: HTTP, I/O, API objects)";
}

/** A name for the Worker's code in `frame`: the wasm function, or the bundle function (an import of wasm-bindgen's named from the bundle's source line). */
export function codeName(frame, bundleLines) {
  const sym = frame.sym.replace(/^JS:[*+~^']*/, "");
  const at = /^(\S*?)\s*file:\/\/\/bundle\/[^:]+:(\d+):\d+/.exec(sym);
  if (!at) {
    return `wasm ${sym.replace(/::h[0-9a-f]{16}/g, "").replace(/-\d+-(turbofan|liftoff|maglev|sparkplug)$/, "")}`;
  }
  const [, name, line] = at;
  const source = bundleLines?.[Number(line) - 1] ?? "";
  const imported = /(__wbg_[A-Za-z0-9_]+?)(?:_[0-9a-f]{16})?:/.exec(source);
  if (imported && (name === "" || name === "'")) return `import ${imported[1]}`;
  return `js ${name.replace(/^'/, "") || "(anonymous)"}:${line}`;
}

const GC = /Heap::CollectGarbage|Heap::Scavenge|MarkCompactCollector|MinorMarkSweep|IncrementalMarking::Step/;

/** The report's figures: shares (0..1) by kind, by the Worker's code, and of the collector. */
export function analyse(samples, { bundleLines } = {}) {
  const byKind = new Map();
  const byCode = new Map();
  const destroyed = new Map();
  let gc = 0;
  let epilogue = 0;
  let unnamed = 0;
  const add = (map, key) => map.set(key, (map.get(key) ?? 0) + 1);
  for (const s of samples) {
    add(byKind, kindOf(s.frames[0]));
    if (s.frames[0] && isJit(s.frames[0]) && s.frames[0].sym === "[unknown]") unnamed++;
    const code = s.frames.find(isWorkerCode);
    add(byCode, code ? (isWasm(code) ? "wasm (all of the Rust)" : codeName(code, bundleLines)) : "(no Worker code on the stack)");
    if (s.frames.some((f) => GC.test(f.sym))) gc++;
    const e = s.frames.findIndex((f) => f.sym.includes("CallGCEpilogueCallbacks"));
    if (e >= 0) {
      epilogue++;
      const tracer = s.frames.findIndex((f) => f.sym.includes("HeapTracer::HeapTracer"));
      const below = s.frames[Math.max(0, (tracer >= 0 ? tracer : e) - 1)];
      add(destroyed, below.sym.replace(/\(.*$/, ""));
    }
  }
  const n = samples.length || 1;
  const shares = (map) => [...map].map(([k, v]) => [k, v / n]).sort((a, b) => b[1] - a[1]);
  return {
    samples: samples.length,
    unnamedJit: unnamed / n,
    byKind: shares(byKind),
    byCode: shares(byCode),
    gc: gc / n,
    epilogue: epilogue / n,
    destroyed: shares(destroyed),
    pauses: pauses(samples),
  };
}

/**
 * The isolate's longest runs of garbage collection: consecutive samples of its busiest thread
 * inside the collector, no more than 2 ms apart. `[{ ms, samples }]`, longest first.
 */
export function pauses(samples, limit = 5) {
  const counts = new Map();
  for (const s of samples) counts.set(s.tid, (counts.get(s.tid) ?? 0) + 1);
  const main = [...counts].sort((a, b) => b[1] - a[1])[0]?.[0];
  const runs = [];
  let run;
  for (const s of samples) {
    if (s.tid !== main) continue;
    const inGc = s.frames.some((f) => GC.test(f.sym));
    if (inGc && run && s.time - run.end <= 0.002) {
      run.end = s.time;
      run.samples++;
    } else if (inGc) {
      run = { start: s.time, end: s.time, samples: 1 };
      runs.push(run);
    } else {
      run = undefined;
    }
  }
  return runs
    .map((r) => ({ ms: (r.end - r.start) * 1000, samples: r.samples }))
    .sort((a, b) => b.ms - a.ms)
    .slice(0, limit);
}

/** The figures as text; `perUs`: workerd's CPU per request, for µs per request. */
export function format(a, { perUs, top = 20 } = {}) {
  const row = ([k, share]) =>
    `${(share * 100).toFixed(1).padStart(6)} %${perUs ? `${(share * perUs).toFixed(0).padStart(7)} µs` : ""}  ${k}`;
  const lines = [`${a.samples} samples${perUs ? `, ${perUs} µs of workerd's CPU per request` : ""}`, ""];
  if (a.unnamedJit > 0.01) {
    lines.splice(1, 0, `warning: ${(a.unnamedJit * 100).toFixed(0)} % of the samples are JIT code without a name: was V8's perf map (/tmp/perf-<pid>.map) written and kept?`);
  }
  lines.push("by kind of code (the sample's own frame):", ...a.byKind.map(row), "");
  lines.push("by the Worker's code that asked for it (the nearest frame of the bundle's JavaScript or wasm):");
  lines.push(...a.byCode.slice(0, top).map(row), "");
  lines.push(
    `garbage collection: ${(a.gc * 100).toFixed(1)} %, of which workerd destroying what the collector freed (its epilogue) ${(a.epilogue * 100).toFixed(1)} %:`,
  );
  lines.push(...a.destroyed.slice(0, 6).map(row));
  lines.push(`longest collections on the isolate's thread: ${a.pauses.map((p) => `${p.ms.toFixed(1)} ms`).join(", ") || "none"}`);
  return lines.join("\n");
}

/**
 * Two reports side by side (each as `--save` wrote it: the figures, and `perUs` if known), by
 * kind of code and by the Worker's code; the bundle's functions are matched by name without
 * their line, which moves from one build to the next.
 */
export function compare(a, b, { top = 25 } = {}) {
  const merge = (rows) => {
    const m = new Map();
    for (const [k, v] of rows) {
      const key = k.replace(/^(js [^:]+):\d+$/, "$1");
      m.set(key, (m.get(key) ?? 0) + v);
    }
    return m;
  };
  const cell = (share, perUs) =>
    share === undefined
      ? "–".padStart(perUs ? 17 : 8)
      : `${(share * 100).toFixed(1).padStart(6)} %${perUs ? `${(share * perUs).toFixed(0).padStart(7)} µs` : ""}`;
  const side = (title, rowsA, rowsB) => {
    const ma = merge(rowsA);
    const mb = merge(rowsB);
    const keys = [...new Set([...ma.keys(), ...mb.keys()])]
      .sort((x, y) => Math.max(mb.get(y) ?? 0, ma.get(y) ?? 0) - Math.max(mb.get(x) ?? 0, ma.get(x) ?? 0))
      .slice(0, top);
    return [title, ...keys.map((k) => `${cell(ma.get(k), a.perUs)} ${cell(mb.get(k), b.perUs)}  ${k}`), ""];
  };
  return [
    `A: ${a.samples} samples${a.perUs ? `, ${a.perUs} µs per request` : ""}; B: ${b.samples} samples${b.perUs ? `, ${b.perUs} µs per request` : ""}`,
    "",
    ...side("by kind of code (A, then B):", a.byKind, b.byKind),
    ...side("by the Worker's code that asked for it (A, then B):", a.byCode, b.byCode),
    `garbage collection: A ${(a.gc * 100).toFixed(1)} % (epilogue ${(a.epilogue * 100).toFixed(1)} %), B ${(b.gc * 100).toFixed(1)} % (epilogue ${(b.epilogue * 100).toFixed(1)} %)`,
  ].join("\n");
}

if (process.argv[1] && fileURLToPath(import.meta.url) === fs.realpathSync(process.argv[1])) {
  const args = process.argv.slice(2);
  const opt = (name) => {
    const i = args.indexOf(name);
    return i >= 0 ? args[i + 1] : undefined;
  };
  if (args.includes("--compare")) {
    const i = args.indexOf("--compare");
    const [fa, fb] = [args[i + 1], args[i + 2]];
    if (!fa || !fb) {
      console.error("perf-report: --compare A.json B.json (as --save wrote them)");
      process.exit(2);
    }
    const read = (f) => JSON.parse(fs.readFileSync(f, "utf8"));
    console.log(compare(read(fa), read(fb)));
    process.exit(0);
  }
  const bundle = opt("--bundle");
  const perUs = opt("--per-us") ? Number(opt("--per-us")) : undefined;
  const reader = new SampleReader();
  for await (const line of readline.createInterface({ input: process.stdin, crlfDelay: Infinity })) reader.line(line);
  const { samples } = reader;
  if (samples.length === 0) {
    console.error("perf-report: no samples on standard input (pipe `perf script` into it)");
    process.exit(1);
  }
  const bundleLines = bundle ? fs.readFileSync(bundle, "utf8").split("\n") : undefined;
  const figures = analyse(samples, { bundleLines });
  if (opt("--save")) fs.writeFileSync(opt("--save"), JSON.stringify({ ...figures, perUs }, null, 1));
  console.log(format(figures, { perUs }));
}
