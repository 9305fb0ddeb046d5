// The official OpenAI client against the gateway.
//
//   node tests/sdk/openai_sdk.mjs <base URL ending in /v1> <api key> [model]
//
// Makes one plain chat completion, one streamed one (with stream_options.include_usage), and one
// call with a wrong key that must fail with OpenAI.AuthenticationError; prints one JSON line with
// what it got. Exits 1 (still printing a JSON line) when a call fails unexpectedly.
import OpenAI from "openai";

const [baseURL, apiKey, model = "mock-model@sdk"] = process.argv.slice(2);
if (!baseURL || !apiKey) {
  console.error("usage: node openai_sdk.mjs <base URL> <api key> [model]");
  process.exit(2);
}

const messages = [{ role: "user", content: "Hello from the official OpenAI SDK" }];
const options = { baseURL, maxRetries: 0, timeout: 30_000 };
const client = new OpenAI({ ...options, apiKey });
const out = { sdkVersion: OpenAI.VERSION ?? null };

function describe(err) {
  return {
    name: err?.constructor?.name ?? typeof err,
    message: String(err?.message ?? err),
    status: err?.status ?? null,
    code: err?.code ?? null,
    type: err?.type ?? null,
  };
}

try {
  const { data, response } = await client.chat.completions
    .create({ model, messages })
    .withResponse();
  out.plain = {
    id: data.id,
    object: data.object,
    content: data.choices?.[0]?.message?.content ?? null,
    finishReason: data.choices?.[0]?.finish_reason ?? null,
    usage: data.usage ?? null,
    requestId: response.headers.get("x-request-id"),
  };
} catch (err) {
  out.plain = { error: describe(err) };
}

try {
  const stream = await client.chat.completions.create({
    model,
    messages,
    stream: true,
    stream_options: { include_usage: true },
  });
  let chunks = 0;
  let content = "";
  let usage = null;
  const objects = new Set();
  for await (const chunk of stream) {
    chunks += 1;
    objects.add(chunk.object);
    for (const choice of chunk.choices ?? []) {
      content += choice.delta?.content ?? "";
    }
    if (chunk.usage) usage = chunk.usage;
  }
  out.stream = { chunks, content, usage, objects: [...objects] };
} catch (err) {
  out.stream = { error: describe(err) };
}

try {
  const wrong = new OpenAI({ ...options, apiKey: "definitely-not-a-valid-key" });
  await wrong.chat.completions.create({ model, messages });
  out.wrongKey = { error: "the call with a wrong key succeeded" };
} catch (err) {
  out.wrongKey = {
    isAuthenticationError: err instanceof OpenAI.AuthenticationError,
    ...describe(err),
  };
}

console.log(JSON.stringify(out));
const failed = out.plain.error || out.stream.error || !out.wrongKey.isAuthenticationError;
process.exit(failed ? 1 : 0);
