// The floor for a gateway that looks at what it relays, in plain JavaScript: the request body
// read and parsed, a deadline timer and an AbortController, the answer read whole and parsed
// (for its usage), a log line, a new response. What that work costs without wasm.
export default {
  async fetch(req, env) {
    const path = new URL(req.url).pathname.slice(3);
    const body = JSON.parse(new TextDecoder().decode(await req.arrayBuffer()));
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), 300000);
    const up = await fetch(env.UPSTREAM_BASE_URL + path, {
      method: req.method,
      headers: { authorization: `Bearer ${env.UPSTREAM_API_KEY}`, "content-type": "application/json" },
      body: new TextEncoder().encode(JSON.stringify(body)),
      signal: abort.signal,
    });
    const answer = await up.arrayBuffer();
    clearTimeout(timer);
    const data = JSON.parse(new TextDecoder().decode(answer));
    console.log(JSON.stringify({ ts: Date.now(), path, status: up.status, model: data.model, usage: data.usage }));
    return new Response(answer, { status: up.status, headers: { "content-type": "application/json" } });
  },
};
export class Limiter {}
