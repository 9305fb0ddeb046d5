// The floor: a Worker that only forwards (the body streams through natively, never into
// JavaScript). What workerd itself costs per request and per stream event.
// Run: node bench/profile-worker.mjs --dist bench/worker-floors/passthrough ...
export default {
  async fetch(req, env) {
    const path = new URL(req.url).pathname.slice(3);
    return fetch(env.UPSTREAM_BASE_URL + path, {
      method: req.method,
      headers: { authorization: `Bearer ${env.UPSTREAM_API_KEY}`, "content-type": "application/json" },
      body: req.body,
    });
  },
};
export class Limiter {}
