// relay.mjs: the official OpenAI client, as a user, against keywarden's relay
// (OpenAI(api_key=<generated key>, base_url=<keywarden>/v1)), through lighttpd
// to a fake provider over HTTPS.  tests/relay.t runs it with the keys in its
// environment and turns each printed line into test points.
//
// Environment: RELAY_BASE (http://127.0.0.1:PORT), KW_MASTER_KEY (to block a
// key), and one key a group of steps: KW_KEY_VALID, KW_KEY_BUDGET, KW_KEY_RPM,
// KW_KEY_TPM, KW_KEY_BLOCK, KW_KEY_MODELS, KW_KEY_DISCONNECT.
// Output: one JSON object a line, {"step", "ok": true, ...what came back} or
// {"step", "ok": false, "error": {"class", "status", "headers", ...}}, then
// {"done": true}.
import OpenAI, { AzureOpenAI } from 'openai';
import { block as blockKey, emit, headersOf, sameMinute, step } from './steps.mjs';

const env = process.env;
const base = env.RELAY_BASE;
const messages = [{ role: 'user', content: 'hi there' }];

function client(apiKey, path = '/v1') {
  return new OpenAI({ apiKey, baseURL: `${base}${path}`, maxRetries: 0, timeout: 20000 });
}

// a completion, with the x-ratelimit-* headers of its 200 answer as the client got them
async function chat(key, model = 'gpt-4o', extra = {}, options = {}) {
  const { data: c, response, request_id: requestId } = await client(key).chat.completions
    .create({ model, messages, ...extra }, options).withResponse();
  const ratelimit = Object.fromEntries(Object.entries(headersOf(response.headers))
    .filter(([k]) => k.startsWith('x-ratelimit-')));
  return {
    content: c.choices?.[0]?.message?.content ?? null, model: c.model,
    usage: c.usage ?? null, request_id: requestId ?? c._request_id ?? null, ratelimit,
  };
}

async function streamed(key, extra = {}) {
  const t0 = Date.now();
  const s = await client(key).chat.completions.create({
    model: 'gpt-4o', messages, stream: true, ...extra,
  });
  let content = '';
  let usage = null;
  let chunks = 0;
  let first = null;
  for await (const chunk of s) {
    chunks++;
    const delta = chunk.choices?.[0]?.delta?.content;
    if (delta && first === null) first = Date.now() - t0;
    content += delta ?? '';
    if (chunk.usage) usage = chunk.usage;
  }
  return { content, usage, chunks, first_ms: first, end_ms: Date.now() - t0 };
}

async function main() {
  const valid = env.KW_KEY_VALID;

  await step('chat', () => chat(valid));
  await step('chat stream', () => streamed(valid));
  await step('chat stream with usage', () => streamed(valid, { stream_options: { include_usage: true } }));
  await step('chat without /v1', async () => {
    const c = await client(valid, '').chat.completions.create({ model: 'gpt-4o', messages });
    return { content: c.choices?.[0]?.message?.content ?? null, usage: c.usage ?? null };
  });
  await step('embedding', async () => {
    const e = await client(valid).embeddings.create({ model: 'text-embedding-3-small', input: 'hello world' });
    return { n: e.data?.length ?? 0, dims: e.data?.[0]?.embedding?.length ?? 0, usage: e.usage ?? null };
  });
  await step('models', async () => {
    const ids = [];
    for await (const m of client(valid).models.list()) ids.push(m.id);
    return { ids };
  });
  await step('completion', async () => {
    const c = await client(valid).completions.create({ model: 'gpt-3.5-turbo-instruct', prompt: 'hi there' });
    return { text: c.choices?.[0]?.text ?? null, usage: c.usage ?? null };
  });
  await step('responses', async () => {
    const r = await client(valid).responses.create({ model: 'gpt-4o', input: 'hi there' });
    return { text: r.output_text ?? null, usage: r.usage ?? null };
  });
  await step('responses stream', async () => {
    const s = await client(valid).responses.create({ model: 'gpt-4o', input: 'hi there', stream: true });
    let text = '';
    let usage = null;
    for await (const ev of s) {
      if (ev.type === 'response.output_text.delta') text += ev.delta;
      if (ev.type === 'response.completed') usage = ev.response?.usage ?? null;
    }
    return { text, usage };
  });
  await step('azure', async () => {
    const az = new AzureOpenAI({
      apiKey: valid, endpoint: base, deployment: 'gpt-4o', apiVersion: '2024-10-21',
      maxRetries: 0, timeout: 20000,
    });
    const c = await az.chat.completions.create({ model: 'gpt-4o', messages });
    return { content: c.choices?.[0]?.message?.content ?? null, usage: c.usage ?? null };
  });
  await step('failover', () => chat(valid, 'gpt-4.1'));
  await step('first chunk', () => streamed(valid, { fake_hold_ms: 1500 }));

  // the budget: each completion is priced; the one after max_budget is spent is refused
  for (let i = 1; i <= 8; i++) {
    const name = `budget ${i}`;
    await step(name, () => chat(env.KW_KEY_BUDGET));
  }

  // a model outside the key's list, named in the body, whatever a header says
  await step('models: allowed', () => chat(env.KW_KEY_MODELS, 'gpt-4o-mini'));
  await step('models: not allowed', () => chat(env.KW_KEY_MODELS, 'gpt-4o', {},
    { headers: { 'x-model': 'gpt-4o-mini' } }));

  await step('block: before', () => chat(env.KW_KEY_BLOCK));
  await step('block: POST /key/block', () => blockKey(base, env.KW_MASTER_KEY, env.KW_KEY_BLOCK));
  await step('block: after', () => chat(env.KW_KEY_BLOCK));

  await sameMinute(20);
  for (let i = 1; i <= 3; i++) await step(`rpm ${i}`, () => chat(env.KW_KEY_RPM));
  for (let i = 1; i <= 8; i++) await step(`tpm ${i}`, () => chat(env.KW_KEY_TPM));

  // a client that leaves after the first chunk of a slow stream
  await step('disconnect', async () => {
    const ac = new AbortController();
    const s = await client(env.KW_KEY_DISCONNECT).chat.completions.create({
      model: 'gpt-4o', stream: true, fake_delay_ms: 150,
      messages: [{ role: 'user', content: env.RELAY_LONG_MESSAGE }],
    }, { signal: ac.signal });
    let content = '';
    try {
      for await (const chunk of s) {
        content += chunk.choices?.[0]?.delta?.content ?? '';
        if (content.length > 0) { ac.abort(); break; }
      }
    } catch (err) {
      if (err?.name !== 'AbortError' && err?.constructor?.name !== 'APIUserAbortError') throw err;
    }
    return { content };
  });
  emit({ done: true });
}

main().catch((err) => { emit({ fatal: String(err?.stack ?? err) }); process.exit(1); });
