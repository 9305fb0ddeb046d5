// The floor for a relay that sees every chunk: the upstream body read chunk by chunk in
// JavaScript and enqueued into the client's ReadableStream (what this project's relay does,
// without the call into wasm per chunk).
export default {
  async fetch(req, env) {
    const path = new URL(req.url).pathname.slice(3);
    const up = await fetch(env.UPSTREAM_BASE_URL + path, {
      method: req.method,
      headers: { authorization: `Bearer ${env.UPSTREAM_API_KEY}`, "content-type": "application/json" },
      body: req.body,
    });
    if (!up.body) return up;
    const reader = up.body.getReader();
    let bytes = 0;
    const body = new ReadableStream(
      {
        async pull(c) {
          const { done, value } = await reader.read();
          if (done) c.close();
          else {
            c.enqueue(value);
            bytes += value.length;
          }
        },
        cancel: (reason) => reader.cancel(reason),
      },
      { highWaterMark: 0 },
    );
    return new Response(body, up);
  },
};
export class Limiter {}
