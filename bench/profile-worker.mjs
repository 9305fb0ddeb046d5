// Where the Worker's CPU time and memory go: runs a Worker bundle on bare workerd in front of
// the mock upstream, with the V8 inspector on, and measures one thing:
//
//   --mode plain|stream|mixed [--conns N] [--seconds N]   a CPU profile of that traffic (written
//       to --out FILE.cpuprofile, for Chrome DevTools) and the functions with the most self time
//   --profile off     the same traffic without the profiler: req/s and workerd's CPU per request
//   --trace N [--burst B] [--trace-load L]   N rounds of B streams through the Worker and B
//       straight to the mock at the same time (with L other streams going on): the added delay
//       to the first event and to later events, from the request's start (medians), and each
//       event's time from the mock's send (stamped into it) to the client: the relay's own delay
//   --stream-model M  the streams' model (default mock-stream-50x20ms; the mock reads its name,
//       e.g. mock-stream-2x1ms for short streams whose cost is mostly their set-up)
//   --v8-flags A,B    V8 flags for the measured isolate (a diagnosis: Cloudflare sets its own),
//       e.g. --perf-basic-prof,--interpreted-frames-native-stack with --profile off, then
//       `perf record -p` on the pid it prints: a profile without the inspector's overhead
//   --hold N          N streams held open: JavaScript heap and workerd's memory per stream (the
//       last line is the figures as JSON, which `bench run` reads for its goals table)
//
// `bench/profile-worker.sh` builds the bundle with wasm function names and runs this on it;
// `--dist DIR` picks the bundle (default dist/), e.g. one of bench/worker-floors/.
// Needs Node 22 (global WebSocket and fetch): `scripts/lib/env.sh` puts one on PATH.
import { spawn } from "node:child_process";
import fs from "node:fs";
import http from "node:http";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, "..");
const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => {
    if (a.startsWith("--")) acc.push([a.slice(2), all[i + 1]]);
    return acc;
  }, []),
);
const dist = path.resolve(args.dist ?? path.join(repo, "dist"));
const mode = args.mode ?? "plain";
const seconds = Number(args.seconds ?? 10);
const conns = Number(args.conns ?? 32);
const out = args.out ?? path.join(os.tmpdir(), `worker-${mode}.cpuprofile`);
const mockBin = args.mock ?? path.join(repo, "target/release/mock-upstream");
const workerd = args.workerd ?? path.join(repo, "node_modules/@cloudflare/workerd-linux-64/bin/workerd");
const MOCK_KEY = "sk-prof-mock";
// V8 flags for the measured isolate, comma-separated (a diagnosis only: Cloudflare sets its
// own), e.g. `--v8-flags --perf-basic-prof` so that `perf` names the JIT's and wasm's code.
const v8Flags = args["v8-flags"]
  ? `\n  v8Flags = ${JSON.stringify(args["v8-flags"].split(","))},`
  : "";
const CLIENT_KEY = "sk-prof-client";

const freePort = () =>
  new Promise((resolve) => {
    const s = net.createServer().listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const text = (s) => JSON.stringify(s);

const mockPort = await freePort();
const port = await freePort();
const inspector = await freePort();
const work = fs.mkdtempSync(path.join(os.tmpdir(), "profile-worker-"));
const children = [];
const stop = () => children.forEach((c) => c.kill("SIGKILL"));
process.on("exit", stop);
for (const signal of ["SIGINT", "SIGTERM"]) process.on(signal, () => process.exit(130));

children.push(
  spawn(mockBin, ["--port", String(mockPort), "--api-key", MOCK_KEY, "--name", "prof-mock"], {
    stdio: "ignore",
  }),
);
const files = fs.readdirSync(dist).filter((f) => /\.(m?js|wasm)$/.test(f));
const entry = files.find((f) => f === "index.js") ?? files.find((f) => f.endsWith(".js"));
const modules = [entry, ...files.filter((f) => f !== entry)].map((f) => {
  fs.copyFileSync(path.join(dist, f), path.join(work, f));
  return `(name = ${text(f)}, ${f.endsWith(".wasm") ? "wasm" : "esModule"} = embed ${text(f)})`;
});
const toml = fs.readFileSync(path.join(repo, "wrangler.toml"), "utf8");
const date = /^compatibility_date\s*=\s*"([^"]+)"/m.exec(toml)?.[1] ?? "2025-01-01";
fs.writeFileSync(
  path.join(work, "config.capnp"),
  `using Workerd = import "/workerd/workerd.capnp";
const config :Workerd.Config = (${v8Flags}
  services = [ (name = "main", worker = .gateway),
               (name = "internet", network = (allow = ["public", "private", "local"])) ],
  sockets = [ (name = "http", address = "127.0.0.1:${port}", http = (), service = "main") ],
);
const gateway :Workerd.Worker = (
  modules = [ ${modules.join(",\n    ")} ],
  compatibilityDate = "${date}",
  bindings = [
    (name = "UPSTREAM_BASE_URL", text = ${text(`http://127.0.0.1:${mockPort}/v1`)}),
    (name = "UPSTREAM_API_KEY", text = ${text(MOCK_KEY)}),
    (name = "GATEWAY_API_KEYS", text = ${text(CLIENT_KEY)}),
    (name = "LIMITER", durableObjectNamespace = "Limiter"),
  ],
  durableObjectNamespaces = [ (className = "Limiter", uniqueKey = "prof-limiter", enableSql = true) ],
  durableObjectStorage = (inMemory = void),
);
`,
);
const wd = spawn(workerd, ["serve", "config.capnp", `--inspector-addr=127.0.0.1:${inspector}`], {
  cwd: work,
  stdio: ["ignore", "ignore", "inherit"],
});
children.push(wd);

const agent = new http.Agent({ keepAlive: true, maxSockets: conns });
const body = (stream) =>
  JSON.stringify({
    model: stream ? (args["stream-model"] ?? "mock-stream-50x20ms") : "bench-model",
    messages: [
      { role: "system", content: "You are a benchmark." },
      { role: "user", content: "Tell me about gateway" },
    ],
    max_tokens: 32,
    ...(stream ? { stream: true } : {}),
  });
const bodies = { plain: body(false), stream: body(true) };
const once = (kind) =>
  new Promise((resolve) => {
    const b = bodies[kind];
    const req = http.request(
      {
        host: "127.0.0.1",
        port,
        path: "/v1/chat/completions",
        method: "POST",
        agent,
        headers: {
          authorization: `Bearer ${CLIENT_KEY}`,
          "content-type": "application/json",
          "content-length": Buffer.byteLength(b),
        },
      },
      (res) => {
        res.on("data", () => {});
        res.on("end", () => resolve(res.statusCode));
      },
    );
    req.on("error", () => resolve(0));
    req.end(b);
  });

for (let i = 0; ; i++) {
  if ((await once("plain")) === 200) break;
  if (i > 150) throw new Error("workerd did not answer 200 within 30 s");
  await sleep(200);
}

async function load(ms) {
  const until = Date.now() + ms;
  const counts = { requests: 0, failed: 0 };
  const kindOf = (i) => (mode === "mixed" ? (i % 2 ? "stream" : "plain") : mode);
  await Promise.all(
    Array.from({ length: conns }, async (_, i) => {
      while (Date.now() < until) {
        const status = await once(kindOf(i));
        counts.requests++;
        if (status !== 200) counts.failed++;
      }
    }),
  );
  return counts;
}

// Warm up: V8 tiers the wasm up under load.
await load(3000);

// One stream at a time, through the Worker and straight to the mock: when each event arrives.
if (args.trace) {
  // The mock stamps each content event with its send time (`-stamped`): how long each event
  // took from the mock to here, apart from when the request reached the mock.
  const stamped = JSON.stringify({ ...JSON.parse(bodies.stream), model: "mock-stream-50x20ms-stamped" });
  const nowUs = () => (performance.timeOrigin + performance.now()) * 1000;
  const transit = { worker: [], direct: [] };
  // The first event's own: what holds the first event back after the mock sent it.
  const firstTransit = { worker: [], direct: [] };
  const trace = (p, key) =>
    new Promise((resolve) => {
      const b = stamped;
      const t0 = process.hrtime.bigint();
      const times = [];
      const transits = p === port ? transit.worker : transit.direct;
      const firsts = p === port ? firstTransit.worker : firstTransit.direct;
      let seenFirst = false;
      let partial = "";
      const req = http.request(
        { host: "127.0.0.1", port: p, path: "/v1/chat/completions", method: "POST",
          headers: { authorization: `Bearer ${key}`, "content-type": "application/json", "content-length": Buffer.byteLength(b) } },
        (res) => {
          res.on("data", (d) => {
            const at = nowUs();
            const n = (d.toString().match(/^data: /gm) ?? []).length;
            for (let i = 0; i < n; i++) times.push(Number(process.hrtime.bigint() - t0) / 1e6);
            const lines = (partial + d.toString()).split("\n");
            partial = lines.pop();
            for (const line of lines) {
              const m = /"mock_sent_unix_us":(\d+)/.exec(line);
              if (m) {
                transits.push((at - Number(m[1])) / 1000);
                if (!seenFirst) firsts.push((at - Number(m[1])) / 1000);
                seenFirst = true;
              }
            }
          });
          res.on("end", () => resolve(times));
        },
      );
      req.end(b);
    });
  const median = (xs) => {
    const s = [...xs].sort((a, b) => a - b);
    return s.length ? s[Math.floor(s.length / 2)] : NaN;
  };
  const first = [];
  const later = [];
  // Streams kept going meanwhile (the bench runs 20 at a time).
  let busy = true;
  const background = Array.from({ length: Number(args["trace-load"] ?? 0) }, async () => {
    while (busy) await once("stream");
  });
  // `--burst N`: N streams start at once through the Worker, and N straight to the mock.
  const burst = Number(args.burst ?? 1);
  for (let i = 0; i < Number(args.trace); i++) {
    const runs = await Promise.all(
      Array.from({ length: burst }, () => Promise.all([trace(port, CLIENT_KEY), trace(mockPort, MOCK_KEY)])),
    );
    if (args.rounds) {
      const f = runs.map(([w, d]) => w[0] - d[0]).sort((a, b) => a - b);
      console.log(`round ${i + 1}: added to the first event ${f[0].toFixed(1)} .. ${f[f.length - 1].toFixed(1)} ms`);
    }
    for (const [w, d] of runs) {
      first.push(w[0] - d[0]);
      for (let j = 1; j < Math.min(w.length, d.length); j++) later.push(w[j] - d[j]);
    }
  }
  busy = false;
  await Promise.all(background);
  console.log(
    `with ${args["trace-load"] ?? 0} other streams: ${args.trace} streams: added to the first event ${median(first).toFixed(2)} ms, to later events ${median(later).toFixed(2)} ms (medians)`,
  );
  const w = median(transit.worker);
  const d = median(transit.direct);
  console.log(
    `from the mock's send to the client, per event: ${w.toFixed(2)} ms through the Worker, ${d.toFixed(2)} ms direct: the relay adds ${(w - d).toFixed(2)} ms (medians of ${transit.worker.length} and ${transit.direct.length} events)`,
  );
  const fw = median(firstTransit.worker);
  const fd = median(firstTransit.direct);
  console.log(
    `the first event alone, from the mock's send: ${fw.toFixed(2)} ms through the Worker, ${fd.toFixed(2)} ms direct: ${(fw - fd).toFixed(2)} ms added (the rest of its added delay is the request's way to the mock)`,
  );
}

// workerd's CPU time (user + system, every thread), in seconds.
const cpu = () => {
  const f = fs.readFileSync(`/proc/${wd.pid}/stat`, "utf8").split(") ")[1].split(" ");
  return (Number(f[11]) + Number(f[12])) / 100;
};
if (args.profile === "off") {
  // `perf record -p` can attach to this while the load runs.
  console.error(`workerd pid ${wd.pid} port ${port} mock ${mockPort}`);
  const t0 = Date.now();
  const c0 = cpu();
  const counts = await load(seconds * 1000);
  const elapsed = (Date.now() - t0) / 1000;
  const used = cpu() - c0;
  const unit = mode === "stream" ? "stream" : "request";
  console.log(
    `mode ${mode}, ${conns} connections, ${elapsed.toFixed(1)} s, no profiler: ${counts.requests} requests (${counts.failed} not 200), ${(counts.requests / elapsed).toFixed(0)} req/s, workerd CPU ${((used / counts.requests) * 1e6).toFixed(0)} µs per ${unit}, ${((used / elapsed) * 100).toFixed(0)}% of a core`,
  );
  stop();
  process.exit(0);
}

const list = await (await fetch(`http://127.0.0.1:${inspector}/json/list`)).json();
const ws = new WebSocket(list[0].webSocketDebuggerUrl);
await new Promise((r, e) => {
  ws.onopen = r;
  ws.onerror = e;
});
let id = 0;
const pending = new Map();
// The isolate's JavaScript contexts, as `Runtime.enable` announces them (for `--hold`).
const contexts = [];
ws.onmessage = (m) => {
  const msg = JSON.parse(m.data);
  if (msg.method === "Runtime.executionContextCreated") contexts.push(msg.params.context.id);
  if (msg.id && pending.has(msg.id)) {
    pending.get(msg.id)(msg);
    pending.delete(msg.id);
  }
};
const send = (method, params = {}) =>
  new Promise((resolve) => {
    id += 1;
    pending.set(id, resolve);
    ws.send(JSON.stringify({ id, method, params }));
  });

// `--hold N`: what N open streams cost inside the isolate (JavaScript heap, array buffers and
// wasm linear memory) and in workerd's resident memory.
if (args.hold) {
  const rss = () => {
    const m = /VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${wd.pid}/status`, "utf8"));
    return m ? Number(m[1]) / 1024 : NaN;
  };
  const heap = async () => {
    // workerd's inspector does not answer HeapProfiler.collectGarbage: the figures include
    // garbage not yet collected.
    const reply = await Promise.race([send("Runtime.getHeapUsage"), sleep(5000)]);
    return reply?.result ?? {};
  };
  // The wasm linear memory, read off every `WebAssembly.Memory` in the isolate (V8 counts it
  // outside the JavaScript heap). It only grows, so the reading after is the peak.
  await send("Runtime.enable");
  const wasmMemory = async () => {
    const proto = await send("Runtime.evaluate", {
      expression: "WebAssembly.Memory.prototype",
      ...(contexts.length ? { contextId: contexts[0] } : {}),
    });
    const protoId = proto?.result?.result?.objectId;
    if (!protoId) {
      console.error("wasm memory: no prototype:", JSON.stringify(proto).slice(0, 400));
      return NaN;
    }
    const found = await send("Runtime.queryObjects", { prototypeObjectId: protoId });
    const arrayId = found?.result?.objects?.objectId;
    if (!arrayId) {
      console.error("wasm memory: queryObjects:", JSON.stringify(found).slice(0, 400));
      return NaN;
    }
    const sum = await send("Runtime.callFunctionOn", {
      objectId: arrayId,
      functionDeclaration: "function () { return this.reduce((s, m) => s + m.buffer.byteLength, 0); }",
      returnByValue: true,
    });
    if (typeof sum?.result?.result?.value !== "number")
      console.error("wasm memory: sum:", JSON.stringify(sum).slice(0, 600));
    return sum?.result?.result?.value ?? NaN;
  };
  await sleep(500);
  const before = await heap();
  const wasm0 = await wasmMemory();
  const rss0 = rss();
  const n = Number(args.hold);
  const holdBody = JSON.stringify({ model: "mock-stream-90x1000ms", stream: true, messages: [{ role: "user", content: "Tell me about gateway" }] });
  const sockets = [];
  let firsts = 0;
  await new Promise((resolve) => {
    for (let i = 0; i < n; i++) {
      const req = http.request(
        { host: "127.0.0.1", port, path: "/v1/chat/completions", method: "POST", agent: false,
          headers: { authorization: `Bearer ${CLIENT_KEY}`, "content-type": "application/json", "content-length": Buffer.byteLength(holdBody) } },
        (res) => {
          let seen = false;
          res.on("data", () => {
            if (!seen) {
              seen = true;
              if (++firsts === n) resolve();
            }
          });
        },
      );
      req.on("error", () => {});
      req.end(holdBody);
      sockets.push(req);
    }
    setTimeout(resolve, 60000);
  });
  await sleep(1000);
  const after = await heap();
  const wasm1 = await wasmMemory();
  const rss1 = rss();
  const mib = (b) => (b / 1048576).toFixed(1);
  const per = (a, b) => ((a - b) / n / 1024).toFixed(1);
  console.log(`${firsts} of ${n} streams open (first event seen)`);
  console.log(`JS heap used: ${mib(before.usedSize)} -> ${mib(after.usedSize)} MiB (${per(after.usedSize, before.usedSize)} KiB per stream)`);
  if (after.backingStorageSize !== undefined)
    console.log(`array buffers (backing stores): ${mib(before.backingStorageSize)} -> ${mib(after.backingStorageSize)} MiB (${per(after.backingStorageSize, before.backingStorageSize)} KiB per stream)`);
  console.log(`wasm linear memory: ${mib(wasm0)} -> ${mib(wasm1)} MiB (${per(wasm1, wasm0)} KiB per stream)`);
  console.log(`isolate total (JS heap + array buffers + wasm memory): ${mib(after.usedSize + (after.backingStorageSize ?? 0) + wasm1)} MiB for ${n} streams, against the 128 MB limit`);
  if (after.embedderHeapUsedSize !== undefined)
    console.log(`embedder heap: ${mib(before.embedderHeapUsedSize)} -> ${mib(after.embedderHeapUsedSize)} MiB`);
  console.log(`workerd RSS: ${rss0.toFixed(1)} -> ${rss1.toFixed(1)} MiB (${(((rss1 - rss0) * 1024) / n).toFixed(1)} KiB per stream)`);
  // The last line, for `bench run` (its goals table): bytes, the isolate's figures with the
  // streams open.
  console.log(
    JSON.stringify({
      streams: n,
      open: firsts,
      js_heap_used: after.usedSize ?? null,
      array_buffers: after.backingStorageSize ?? null,
      wasm_memory: Number.isFinite(wasm1) ? wasm1 : null,
      js_heap_used_before: before.usedSize ?? null,
      wasm_memory_before: Number.isFinite(wasm0) ? wasm0 : null,
      workerd_rss_before_mib: rss0,
      workerd_rss_mib: rss1,
    }),
  );
  sockets.forEach((r) => r.destroy());
  stop();
  process.exit(0);
}

await send("Profiler.enable");
await send("Profiler.setSamplingInterval", { interval: Number(args.interval ?? 200) });
await send("Profiler.start");
const t0 = Date.now();
const counts = await load(seconds * 1000);
const elapsed = (Date.now() - t0) / 1000;
const { result } = await send("Profiler.stop");
const profile = result.profile;
fs.writeFileSync(out, JSON.stringify(profile));
ws.close();

// Self time per function name (samples are equally spaced).
const byId = new Map(profile.nodes.map((n) => [n.id, n]));
const selfSamples = new Map();
for (const s of profile.samples) {
  const n = byId.get(s);
  const f = n.callFrame;
  const name = `${f.functionName || "(anonymous)"} ${f.url ? path.basename(f.url) : ""}`.trim();
  selfSamples.set(name, (selfSamples.get(name) ?? 0) + 1);
}
const total = profile.samples.length;
const idle = selfSamples.get("(idle)") ?? 0;
const busy = total - idle;
const rps = counts.requests / elapsed;
console.log(
  `mode ${mode}, ${conns} connections, ${elapsed.toFixed(1)} s: ${counts.requests} requests (${counts.failed} not 200), ${rps.toFixed(0)} req/s`,
);
console.log(
  `isolate busy ${((busy / total) * 100).toFixed(1)}% of samples = ${((busy / total) * elapsed * 1e6 / counts.requests).toFixed(0)} µs of JavaScript/wasm thread per request`,
);
// Self time by kind: Rust compiled to wasm, JavaScript (wasm-bindgen's glue and the relay),
// the platform's built-in functions (fetch, Response, timers...), the GC, and V8's own.
const kinds = new Map();
for (const s of profile.samples) {
  const f = byId.get(s).callFrame;
  const fn = f.functionName;
  const kind =
    fn === "(idle)" ? null
    : fn === "(program)" ? "V8 and workerd outside JavaScript (program)"
    : fn === "(garbage collector)" ? "garbage collector"
    : f.url.includes("wasm") ? (/^(js-to-wasm|wasm-to-js)/.test(fn) ? "boundary crossings" : "wasm (Rust)")
    : f.url ? "JavaScript (glue, relay)"
    : "platform built-ins (fetch, Response, timers, ...)";
  if (kind) kinds.set(kind, (kinds.get(kind) ?? 0) + 1);
}
const perRequest = (c) => ((c / total) * elapsed * 1e6) / counts.requests;
console.log("\nself time by kind:");
[...kinds.entries()]
  .sort((a, b) => b[1] - a[1])
  .forEach(([k, c]) => console.log(`${((c / busy) * 100).toFixed(1).padStart(5)}%  ${perRequest(c).toFixed(0).padStart(5)} µs/request  ${k}`));
console.log(`\nprofile: ${out}\n\nself time (share of busy samples):`);
[...selfSamples.entries()]
  .filter(([n]) => n !== "(idle)")
  .sort((a, b) => b[1] - a[1])
  .slice(0, Number(args.top ?? 40))
  .forEach(([n, c]) => console.log(`${((c / busy) * 100).toFixed(1).padStart(5)}%  ${n}`));
stop();
fs.rmSync(work, { recursive: true, force: true });
process.exit(0);
