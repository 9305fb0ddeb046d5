// The platform calls the Worker makes for every request, each in one call from wasm: headers
// cross the boundary as one string ("name:value" lines) rather than one call per header and
// per name and value, and the upstream `fetch` takes its init in one object.

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

/** The upstream call. */
export function send(url, method, headers, body, signal) {
  return fetch(url, { method, headers: headersFrom(headers), body, signal });
}

/** A failure's text, as the platform wrote it. */
export function message(error) {
  return String(error);
}
