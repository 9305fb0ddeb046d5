// The floor the bench measures the Worker against (target `worker-js-floor`): the least a
// gateway that looks at what it relays must do, in plain JavaScript on the same workerd. A
// plain request: the body read and parsed, a deadline timer and an AbortController, the answer
// read whole and parsed (for its usage), a log line, a new response. A stream: every chunk read
// from the upstream in JavaScript and enqueued into the client's stream in the turn it arrives
// (a pull source, as `src/edge/js/relay.js`), a log line at its end. No keys, limits, cache,
// routing or failover: what is left of the Worker's figures above these is its own cost.
export default {
  async fetch(req, env) {
    const url = new URL(req.url);
    const path = url.pathname.startsWith("/v1/") ? url.pathname.slice(3) : url.pathname;
    let body;
    try {
      body = JSON.parse(new TextDecoder().decode(await req.arrayBuffer()));
    } catch {
      return Response.json({ error: { message: "invalid JSON", type: "invalid_request_error", param: null, code: null } }, { status: 400 });
    }
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), 300000);
    const up = await fetch(env.UPSTREAM_BASE_URL + path, {
      method: req.method,
      headers: { authorization: `Bearer ${env.UPSTREAM_API_KEY}`, "content-type": "application/json" },
      body: new TextEncoder().encode(JSON.stringify(body)),
      signal: abort.signal,
    });
    const log = (extra) => console.log(JSON.stringify({ ts: Date.now(), path, status: up.status, model: body.model, ...extra }));
    if (body.stream && up.body) {
      const reader = up.body.getReader();
      let bytes = 0;
      const stream = new ReadableStream(
        {
          async pull(c) {
            const { done, value } = await reader.read();
            if (done) {
              clearTimeout(timer);
              log({ bytes });
              c.close();
            } else {
              bytes += value.length;
              c.enqueue(value);
            }
          },
          cancel(reason) {
            clearTimeout(timer);
            return reader.cancel(reason);
          },
        },
        { highWaterMark: 0 },
      );
      return new Response(stream, { status: up.status, headers: { "content-type": "text/event-stream" } });
    }
    const answer = await up.arrayBuffer();
    clearTimeout(timer);
    let usage = null;
    try {
      usage = JSON.parse(new TextDecoder().decode(answer)).usage ?? null;
    } catch {
      // An answer that is not JSON is relayed as it is.
    }
    log({ usage });
    return new Response(answer, { status: up.status, headers: { "content-type": up.headers.get("content-type") ?? "application/json" } });
  },
};
export class Limiter {}
