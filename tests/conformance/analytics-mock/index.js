// A stand-in for a Workers Analytics Engine dataset, which `wrangler dev` cannot show: the
// gateway Worker of the analytics case (../wrangler-analytics.toml) reaches this Worker's
// `Dataset` entrypoint through a service binding named ANALYTICS and calls `writeDataPoint` as it would
// on the real binding; `GET /` answers every point written so far, in order. A point whose
// first blob (the request id) starts with `analytics-refused` is refused with an error, as a
// failing dataset would, to show that the request it belongs to does not fail.
import { WorkerEntrypoint } from "cloudflare:workers";

// The points written so far (one isolate serves every call under `wrangler dev`).
const points = [];

// The default entrypoint: wrangler's dev registry reaches another process's Worker through it
// (a named entrypoint is not found there).
export default class Dataset extends WorkerEntrypoint {
  writeDataPoint(point) {
    if (String(point?.blobs?.[0]).startsWith("analytics-refused")) {
      throw new Error("analytics-mock refuses this data point");
    }
    points.push(point);
  }

  fetch() {
    return Response.json(points);
  }
}
