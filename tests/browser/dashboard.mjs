// The dashboard in a real headless Chromium (Debian's `chromium`, driven by playwright-core).
//
//   DASHBOARD_KEY=<client key> node tests/browser/dashboard.mjs <gateway base URL> <desktop.png> <phone.png>
//
// Optional env: DASHBOARD_MODEL (the model its own traffic asks for; default mock-model),
// DASHBOARD_TRAFFIC=0 (make no traffic: for a fixture that only serves JSON), CHROMIUM (the
// browser's path). The key comes by env, not argv, so that it is not in the process list.
//
// It blocks and records every request for another host, opens /dashboard, checks that a wrong
// key brings the form back with a message, enters the key, waits for real figures, makes traffic
// (a cache miss then a hit of one deterministic request, and a 400), waits for the page's figures
// to change, takes a full-page screenshot at desktop size and one at phone size (390x844), checks
// "forget key". Prints one JSON line; exits 1 with the reason on any failure.
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { chromium } from "playwright-core";

const [base, desktopPng, phonePng] = process.argv.slice(2);
const key = process.env.DASHBOARD_KEY;
const model = process.env.DASHBOARD_MODEL || "mock-model";
const traffic = process.env.DASHBOARD_TRAFFIC !== "0";
if (!base || !desktopPng || !phonePng || !key) {
  console.error("usage: DASHBOARD_KEY=... node dashboard.mjs <base URL> <desktop.png> <phone.png>");
  process.exit(2);
}
const origin = new URL(base).origin;
const WAIT = 25_000;

const report = { ok: false, external: [], steps: [] };
const problems = [];
const step = (s) => report.steps.push(s);

function chromiumPath() {
  for (const p of [process.env.CHROMIUM, "/usr/bin/chromium", "/usr/bin/chromium-browser"]) {
    if (p && existsSync(p)) return p;
  }
  for (const name of ["chromium", "chromium-browser"]) {
    try {
      return execFileSync("sh", ["-c", `command -v ${name}`], { encoding: "utf8" }).trim();
    } catch {}
  }
  throw new Error("no chromium found (scripts/test installs Debian's chromium; or set CHROMIUM)");
}

async function call(path, body, raw = false) {
  const r = await fetch(origin + path, {
    method: body === undefined ? "GET" : "POST",
    headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
    body: body === undefined ? undefined : raw ? body : JSON.stringify(body),
  });
  const text = await r.text();
  return { status: r.status, cache: r.headers.get("x-gateway-cache"), text };
}

// A cache miss then a hit of one deterministic request (the Worker stores its entry after
// answering, so the repeat may take a few tries), and a malformed body (400 invalid_json).
async function makeTraffic(tag) {
  const body = {
    model,
    temperature: 0,
    messages: [{ role: "user", content: `dashboard ${tag} ${Date.now()}` }],
  };
  const first = await call("/v1/chat/completions", body);
  if (first.status !== 200) throw new Error(`traffic: chat completion answered ${first.status}: ${first.text}`);
  let hit = false;
  for (let i = 0; i < 20 && !hit; i++) {
    const again = await call("/v1/chat/completions", body);
    hit = (again.cache || "").toUpperCase() === "HIT";
    if (!hit) await new Promise((r) => setTimeout(r, 250));
  }
  if (!hit) throw new Error("traffic: the repeated deterministic request never came back as a cache hit");
  const bad = await call("/v1/chat/completions", "{not json", true);
  if (bad.status !== 400) throw new Error(`traffic: malformed JSON answered ${bad.status}, not 400`);
}

// Every request goes through here: another host's is aborted and recorded; ours are checked
// for the key (header only, never in the URL).
async function guard(context) {
  await context.route("**/*", (route) => {
    const req = route.request();
    const url = new URL(req.url());
    if (url.origin !== origin) {
      report.external.push(req.url());
      return route.abort("blockedbyclient");
    }
    if (req.url().includes(key)) problems.push(`the key appeared in a URL: ${url.pathname}`);
    if (url.pathname.startsWith("/v1/gateway/")) {
      const auth = req.headers()["authorization"];
      if (auth && auth !== `Bearer ${key}` && !auth.startsWith("Bearer wrong-")) {
        problems.push(`unexpected authorization header on ${url.pathname}`);
      }
      if (!auth) problems.push(`no authorization header on ${url.pathname}`);
    }
    return route.continue();
  });
}

function watch(page, name) {
  page.on("pageerror", (e) => problems.push(`${name}: uncaught error in the page: ${e.message}`));
  page.on("console", (m) => {
    if (m.type() !== "error") return;
    const t = m.text();
    // The wrong-key step makes the browser log the 401 itself.
    if (/status of 401/.test(t)) return;
    problems.push(`${name}: console error: ${t}`);
  });
}

// The page's figures, as the page shows them.
const figures = (page) =>
  page.evaluate(() => {
    const n = (id, attr = "v") => {
      const v = document.getElementById(id)?.dataset?.[attr];
      return v === undefined || v === "" ? null : Number(v);
    };
    const ups = [...document.querySelectorAll("#ups .u")].map((u) => ({
      name: u.dataset.name,
      text: u.textContent,
    }));
    return {
      requests: n("kreq"),
      errors: n("kerr"),
      cacheHits: n("khit", "hits"),
      upstreams: ups,
      topErrors: document.getElementById("terr")?.textContent ?? "",
      live: document.getElementById("live")?.textContent ?? "",
    };
  });

async function waitFor(page, what, test) {
  const t0 = Date.now();
  let last;
  while (Date.now() - t0 < WAIT) {
    last = await figures(page);
    if (test(last)) return last;
    await page.waitForTimeout(300);
  }
  throw new Error(`timed out after ${WAIT / 1000} s waiting for ${what}; the page shows ${JSON.stringify(last)}`);
}

async function login(page, value) {
  await page.waitForSelector("#login:not([hidden])", { timeout: WAIT });
  await page.fill("#key", value);
  await page.press("#key", "Enter");
}

async function main() {
  // So that there are figures to show from the start.
  if (traffic) await makeTraffic("warm-up");

  const browser = await chromium.launch({ executablePath: chromiumPath(), args: ["--no-sandbox"] });
  try {
    const desktop = await browser.newContext({ viewport: { width: 1440, height: 900 } });
    await guard(desktop);
    const page = await desktop.newPage();
    watch(page, "desktop");
    const resp = await page.goto(`${origin}/dashboard`);
    if (resp?.status() !== 200) throw new Error(`GET /dashboard answered ${resp?.status()}`);

    await login(page, `wrong-${Date.now()}`);
    await page.waitForFunction(
      () => /401/.test(document.getElementById("msg")?.textContent ?? "") &&
        !document.getElementById("login").hidden,
      null,
      { timeout: WAIT },
    );
    if (await page.evaluate(() => Object.keys(sessionStorage).length)) {
      throw new Error("a refused key was kept in session storage");
    }
    step("a wrong key brings the form back with the 401 message");

    await login(page, key);
    const ready = (f) =>
      f.upstreams.length > 0 && f.upstreams.every((u) => u.name) && f.requests > 0 &&
      f.errors !== null && f.cacheHits !== null;
    const before = await waitFor(page, "real figures (upstreams named, requests > 0, error and cache hit counts)", ready);
    step(`figures: ${before.requests} requests, ${before.upstreams.map((u) => u.name).join(", ")}`);
    const stored = await page.evaluate(() => Object.values(sessionStorage));
    if (!stored.includes(key)) throw new Error("the key is not in session storage after logging in");

    let after = before;
    if (traffic) {
      await makeTraffic("run");
      after = await waitFor(
        page,
        "the requests, errors and cache hits to go up",
        (f) =>
          f.requests > before.requests && f.errors > before.errors &&
          f.cacheHits > before.cacheHits && !/Nothing yet/.test(f.topErrors),
      );
      step(`figures changed: requests ${before.requests} -> ${after.requests}, errors ${before.errors} -> ${after.errors}, cache hits ${before.cacheHits} -> ${after.cacheHits}`);
    }
    await page.waitForTimeout(400);
    await page.screenshot({ path: desktopPng, fullPage: true });

    const phone = await browser.newContext({
      viewport: { width: 390, height: 844 },
      isMobile: true,
      hasTouch: true,
      deviceScaleFactor: 2,
    });
    await guard(phone);
    const mobile = await phone.newPage();
    watch(mobile, "phone");
    await mobile.goto(`${origin}/dashboard`);
    await login(mobile, key);
    await waitFor(mobile, "figures on the phone", ready);
    const overflow = await mobile.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    if (overflow > 1) throw new Error(`the phone layout is ${overflow}px wider than the screen`);
    await mobile.waitForTimeout(400);
    await mobile.screenshot({ path: phonePng, fullPage: true });
    step("phone layout fits 390 px");

    await page.click("#forget");
    await page.waitForSelector("#login:not([hidden])", { timeout: WAIT });
    if (await page.evaluate(() => Object.keys(sessionStorage).length)) {
      throw new Error("'Forget key' left the key in session storage");
    }
    step("forget key clears it and brings the form back");

    report.before = before.requests;
    report.after = after.requests;
    report.cacheHits = [before.cacheHits, after.cacheHits];
  } finally {
    await browser.close();
  }
  if (report.external.length) problems.push(`requests to other hosts: ${report.external.join(", ")}`);
  if (problems.length) throw new Error(problems.join("; "));
  report.ok = true;
}

try {
  await main();
  console.log(JSON.stringify(report));
} catch (e) {
  report.error = String(e?.message ?? e);
  console.error(`dashboard: FAILED: ${report.error}`);
  console.log(JSON.stringify(report));
  process.exit(1);
}
