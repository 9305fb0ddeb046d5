// The platform calls the Worker makes for every request, each in one call from wasm: headers
// cross the boundary as one string ("name:value" lines) rather than one call per header and
// per name and value, the request's head (method, URL, location, headers) is read in one call,
// a response is built in one, and the upstream `fetch` takes its init in one object.

/** Headers as text: one "name:value" line per entry (names are lower case, without ':'). */
export function headerText(headers) {
  let text = "";
  for (const [name, value] of headers) text += name + ":" + value + "\n";
  return text;
}

/** Headers from text as `headerText` writes it. */
export function headersFrom(text) {
  const headers = new Headers();
  let start = 0;
  while (start < text.length) {
    let end = text.indexOf("\n", start);
    if (end < 0) end = text.length;
    const colon = text.indexOf(":", start);
    if (colon > start && colon < end) {
      try {
        headers.append(text.slice(start, colon), text.slice(colon + 1, end));
      } catch {
        // A value the platform refuses is left out, as `Headers.append` would have.
      }
    }
    start = end + 1;
  }
  return headers;
}

/** A value of `request.cf` as text: never a tab or a newline, which separate the fields. */
function cfField(cf, name) {
  const v = cf[name];
  return v == null ? "" : String(v).replace(/[\t\n]/g, " ");
}

/**
 * The client's request head as one string: the method, the URL, the location fields of
 * `request.cf` (colo, country, continent, latitude, longitude: tab-separated, empty when
 * absent), each on its own line, then the headers as `headerText` writes them.
 */
export function requestHead(request) {
  const cf = request.cf;
  const location =
    cf && typeof cf === "object"
      ? cfField(cf, "colo") + "\t" + cfField(cf, "country") + "\t" + cfField(cf, "continent") +
        "\t" + cfField(cf, "latitude") + "\t" + cfField(cf, "longitude")
      : "";
  return request.method + "\n" + request.url + "\n" + location + "\n" + headerText(request.headers);
}

/**
 * A response: `body` is bytes (a view of wasm memory, copied here before wasm can change it),
 * a `ReadableStream`, or nothing.
 */
export function respond(status, headers, body) {
  const init = { status, headers: headersFrom(headers) };
  if (body instanceof Uint8Array) return new Response(body.slice(), init);
  return new Response(body ?? null, init);
}

/** The upstream call. */
export function send(url, method, headers, body, signal) {
  return fetch(url, { method, headers: headersFrom(headers), body, signal });
}

/** A failure's text, as the platform wrote it. */
export function message(error) {
  return String(error);
}
