// gateway.mjs: the official OpenAI client, as a user, through the gateway
// recipe (scripts/lighttpd-gateway.conf.in).  tests/gateway.t runs it with the
// keys in its environment and turns each printed line into test points.
//
// Environment: GW_BASE (http://127.0.0.1:PORT), KW_MASTER_KEY (to block a key),
// KW_KEY_VALID, KW_KEY_BLOCK, KW_KEY_BUDGET, KW_KEY_RPM, KW_KEY_MODELS, KW_KEY_RETRY,
// KW_KEY_PARALLEL, KW_KEY_RPM10 (keys
// made for each step), KW_KEY_UNKNOWN (a key keywarden never issued).
// Output: one JSON object a line, {"step", "ok": true, ...what came back} or
// {"step", "ok": false, "error": {"class", "status", "headers", ...}}, then
// {"done": true}.
import { randomUUID } from 'node:crypto';
import OpenAI, { AzureOpenAI } from 'openai';
import { block as blockKey, emit, failure, headersOf, sameMinute, step } from './steps.mjs';

const env = process.env;
const base = env.GW_BASE;
const messages = [{ role: 'user', content: 'hi there' }];

function client(apiKey) {
  return new OpenAI({ apiKey, baseURL: `${base}/v1`, maxRetries: 0, timeout: 20000 });
}

// The authorizer sees no body, so the model goes in x-model as well; the
// request id lets the model server's usage report settle this request.
function options(model) {
  return { headers: { 'x-model': model, 'x-request-id': randomUUID() } };
}

async function complete(key, model) {
  const c = await client(key).chat.completions.create({ model, messages }, options(model));
  return {
    content: c.choices?.[0]?.message?.content ?? null, model: c.model,
    usage: c.usage ?? null, object: c.object, request_id: c._request_id ?? null,
  };
}

async function main() {
  // a valid key: the answer and its usage arrive
  await step('valid', () => complete(env.KW_KEY_VALID, 'gpt-4'));
  await step('valid models.list', async () => {
    const page = await client(env.KW_KEY_VALID).models.list();
    return { ids: page.data.map((m) => m.id) };
  });
  await step('valid stream', async () => {
    const stream = await client(env.KW_KEY_VALID).chat.completions.create(
      { model: 'gpt-4', messages, stream: true, stream_options: { include_usage: true } },
      options('gpt-4'));
    let content = '';
    let usage = null;
    for await (const chunk of stream) {
      content += chunk.choices?.[0]?.delta?.content ?? '';
      if (chunk.usage) usage = chunk.usage;
    }
    return { content, usage };
  });
  // Azure's path names the model, and the key goes in api-key
  await step('valid azure', async () => {
    const az = new AzureOpenAI({
      apiKey: env.KW_KEY_VALID, endpoint: base, apiVersion: '2024-10-21',
      deployment: 'gpt-4', maxRetries: 0, timeout: 20000,
    });
    const c = await az.chat.completions.create({ model: 'gpt-4', messages },
      { headers: { 'x-request-id': randomUUID() } });
    return { content: c.choices?.[0]?.message?.content ?? null, usage: c.usage ?? null };
  });
  // the model must be named for the authorizer to check it
  await step('no x-model', async () => {
    const c = await client(env.KW_KEY_VALID).chat.completions.create({ model: 'gpt-4', messages });
    return { content: c.choices?.[0]?.message?.content ?? null };
  });
  // a request id is one request's: sent again, it is refused at the door
  const reused = { headers: { 'x-model': 'gpt-4', 'x-request-id': randomUUID() } };
  const again = async () => {
    const c = await client(env.KW_KEY_VALID).chat.completions.create({ model: 'gpt-4', messages },
      reused);
    return { content: c.choices?.[0]?.message?.content ?? null };
  };
  await step('request id: first', again);
  await step('request id: again', again);
  // the upstream fails once; the client retries with the same x-request-id, which
  // keywarden lets through because the failure returned the slot and used nothing
  await step('retry after upstream failure', async () => {
    const retrying = new OpenAI({ apiKey: env.KW_KEY_RETRY, baseURL: `${base}/v1`,
      maxRetries: 2, timeout: 20000 });
    const c = await retrying.chat.completions.create({ model: 'gpt-4', messages }, {
      headers: { 'x-model': 'gpt-4', 'x-request-id': randomUUID(),
        'x-upstream-fail-once': randomUUID() } });
    return { content: c.choices?.[0]?.message?.content ?? null, usage: c.usage ?? null };
  });
  // a request in flight holds the key's one parallel slot (a model list reports no
  // usage); the next is refused with a Retry-After the client can wait out
  await step('parallel: in flight', async () => {
    const page = await client(env.KW_KEY_PARALLEL).models.list();
    return { ids: page.data.map((m) => m.id) };
  });
  await step('parallel: refused', () => complete(env.KW_KEY_PARALLEL, 'gpt-4'));
  // a 200 says what is left of the key's limits
  await step('rate headers on 200', async () => {
    const { data, response } = await client(env.KW_KEY_RPM10).chat.completions
      .create({ model: 'gpt-4', messages }, options('gpt-4')).withResponse();
    return { content: data.choices?.[0]?.message?.content ?? null, usage: data.usage ?? null,
      headers: headersOf(response.headers) };
  });
  await step('unknown key', () => complete(env.KW_KEY_UNKNOWN, 'gpt-4'));
  await step('no key', () => complete('', 'gpt-4'));

  // blocked: refused on the very next completion
  await step('block: before', () => complete(env.KW_KEY_BLOCK, 'gpt-4'));
  await step('block: POST /key/block', () => blockKey(base, env.KW_MASTER_KEY, env.KW_KEY_BLOCK));
  await step('block: after', () => complete(env.KW_KEY_BLOCK, 'gpt-4'));

  // a key's models list
  await step('models: allowed', () => complete(env.KW_KEY_MODELS, 'gpt-4'));
  await step('models: not allowed', () => complete(env.KW_KEY_MODELS, 'gpt-3.5-turbo'));
  await step('models: not allowed, azure', async () => {
    const az = new AzureOpenAI({
      apiKey: env.KW_KEY_MODELS, endpoint: base, apiVersion: '2024-10-21',
      deployment: 'claude-3', maxRetries: 0, timeout: 20000,
    });
    const c = await az.chat.completions.create({ model: 'claude-3', messages });
    return { content: c.choices?.[0]?.message?.content ?? null };
  });

  // a budget: completions until one is refused (the model server reports the cost)
  for (let i = 1; i <= 5; i++) {
    let refused = false;
    await step(`budget ${i}`, async () => {
      try {
        return await complete(env.KW_KEY_BUDGET, 'gpt-4');
      } catch (err) {
        refused = true;
        throw err;
      }
    });
    if (refused) break;
  }

  // rpm_limit 2: two pass, the third is refused
  await sameMinute(10);
  for (let i = 1; i <= 3; i++) await step(`rpm ${i}`, () => complete(env.KW_KEY_RPM, 'gpt-4'));

  emit({ done: true });
}

main().catch((err) => {
  emit(failure('gateway.mjs', err));
  process.exit(1);
});
