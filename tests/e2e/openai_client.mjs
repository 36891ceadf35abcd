// openai_client.mjs - the official `openai` npm client against `expertd serve`:
// completions.create and chat.completions.create, without and with stream, as a user would
// call them. Prints one line per
// check ("ok ..." / "FAIL ...") and exits non-zero on any failure.
//   node openai_client.mjs BASE_URL MODEL
import OpenAI from "openai";

const [baseURL, model] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey: "unused-key", maxRetries: 0, timeout: 60000 });
let failed = 0;
const check = (name, cond, detail = "") => {
  console.log(`${cond ? "ok" : "FAIL"} ${name}${cond ? "" : " " + detail}`);
  if (!cond) failed++;
};

const whole = await client.completions.create({
  model, prompt: "Once upon a time", max_tokens: 8, temperature: 0.7, seed: 42,
});
check("openai: non-stream object", whole.object === "text_completion", JSON.stringify(whole));
check("openai: non-stream id", whole.id.startsWith("cmpl-"), whole.id);
check("openai: non-stream one choice", whole.choices.length === 1 && typeof whole.choices[0].text === "string");
check("openai: non-stream finish_reason", ["length", "stop"].includes(whole.choices[0].finish_reason));
check("openai: non-stream usage", whole.usage.total_tokens === whole.usage.prompt_tokens + whole.usage.completion_tokens &&
  whole.usage.completion_tokens > 0, JSON.stringify(whole.usage));

const stream = await client.completions.create({
  model, prompt: "Once upon a time", max_tokens: 8, temperature: 0.7, seed: 42, stream: true,
  stream_options: { include_usage: true },
});
let text = "", chunks = 0, usage = null, finish = null;
for await (const chunk of stream) {
  chunks++;
  if (chunk.usage) usage = chunk.usage;
  for (const c of chunk.choices) {
    text += c.text;
    if (c.finish_reason) finish = c.finish_reason;
  }
}
check("openai: stream chunks", chunks >= 2, `chunks=${chunks}`);
check("openai: stream text equals non-stream text (same seed)", text === whole.choices[0].text,
  JSON.stringify([text, whole.choices[0].text]));
check("openai: stream finish_reason", finish === whole.choices[0].finish_reason, String(finish));
check("openai: stream usage chunk", usage && usage.completion_tokens === whole.usage.completion_tokens,
  JSON.stringify(usage));

const multi = await client.completions.create({
  model, prompt: ["Hello", "The sky"], max_tokens: 4, n: 2, logprobs: 2, seed: 7,
});
check("openai: 2 prompts x n=2 gives 4 choices", multi.choices.length === 4 &&
  multi.choices.every((c, i) => c.index === i), JSON.stringify(multi.choices.map((c) => c.index)));
check("openai: logprobs shape", multi.choices.every((c) => c.logprobs &&
  c.logprobs.tokens.length === c.logprobs.token_logprobs.length &&
  c.logprobs.top_logprobs.length === c.logprobs.tokens.length));

try {
  await client.completions.create({ model, prompt: "x", temperature: 5 });
  check("openai: 400 raises BadRequestError", false, "no error");
} catch (e) {
  check("openai: 400 raises BadRequestError", e instanceof OpenAI.BadRequestError && e.param === "temperature",
    `${e.constructor.name} ${e.status} ${e.param}`);
}
try {
  await client.completions.create({ model: "no-such-model", prompt: "x" });
  check("openai: 404 raises NotFoundError", false, "no error");
} catch (e) {
  check("openai: 404 raises NotFoundError", e instanceof OpenAI.NotFoundError, `${e.constructor.name}`);
}
// ---- chat ----
const messages = [
  { role: "system", content: "You are terse." },
  { role: "user", content: "Say hello" },
];
const chat = await client.chat.completions.create({
  model, messages, max_tokens: 8, temperature: 0.7, seed: 42,
});
check("openai chat: non-stream object", chat.object === "chat.completion" && chat.id.startsWith("chatcmpl-"),
  JSON.stringify(chat));
check("openai chat: assistant message", chat.choices.length === 1 && chat.choices[0].message.role === "assistant" &&
  typeof chat.choices[0].message.content === "string");
check("openai chat: finish_reason and usage", ["length", "stop"].includes(chat.choices[0].finish_reason) &&
  chat.usage.total_tokens === chat.usage.prompt_tokens + chat.usage.completion_tokens, JSON.stringify(chat.usage));

const cstream = await client.chat.completions.create({
  model, messages, max_tokens: 8, temperature: 0.7, seed: 42, stream: true,
  stream_options: { include_usage: true },
});
let ctext = "", role = null, cfinish = null, cusage = null, firstDelta = null;
for await (const chunk of cstream) {
  if (chunk.usage) cusage = chunk.usage;
  for (const c of chunk.choices) {
    if (firstDelta === null) firstDelta = c.delta;
    if (c.delta.role) role = c.delta.role;
    if (c.delta.content) ctext += c.delta.content;
    if (c.finish_reason) cfinish = c.finish_reason;
  }
}
check("openai chat: stream opens with the assistant role", role === "assistant" && firstDelta.role === "assistant",
  JSON.stringify(firstDelta));
check("openai chat: stream text equals non-stream text (same seed)", ctext === chat.choices[0].message.content,
  JSON.stringify([ctext, chat.choices[0].message.content]));
check("openai chat: stream finish_reason", cfinish === chat.choices[0].finish_reason, String(cfinish));
check("openai chat: stream usage chunk", cusage && cusage.completion_tokens === chat.usage.completion_tokens,
  JSON.stringify(cusage));

const clp = await client.chat.completions.create({
  model, messages: [{ role: "user", content: [{ type: "text", text: "Hi" }] }],
  max_completion_tokens: 3, logprobs: true, top_logprobs: 2, n: 2, seed: 1,
});
check("openai chat: n=2 with logprobs in chat's shape", clp.choices.length === 2 && clp.choices.every((c) =>
  c.logprobs.content.length > 0 && c.logprobs.content.every((t) => typeof t.token === "string" &&
    Array.isArray(t.bytes) && t.top_logprobs.length === 2)), JSON.stringify(clp.choices[0].logprobs));

try {
  await client.chat.completions.create({
    model, messages: [{ role: "user", content: [{ type: "image_url", image_url: { url: "http://x/y.png" } }] }],
  });
  check("openai chat: image part raises BadRequestError", false, "no error");
} catch (e) {
  check("openai chat: image part raises BadRequestError", e instanceof OpenAI.BadRequestError &&
    e.param === "messages[0].content[0].type" && /image_url/.test(e.message), `${e.constructor.name} ${e.message}`);
}

const models = await client.models.list();
check("openai: models.list", models.data.length === 1 && models.data[0].id === model, JSON.stringify(models.data));
process.exit(failed ? 1 : 0);
