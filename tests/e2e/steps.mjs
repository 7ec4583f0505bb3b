// steps.mjs: what the client scripts (gateway.mjs, relay.mjs) share: one JSON
// line a step on standard output, a client error as the test reads it, and the
// steps that talk to keywarden itself rather than through the OpenAI client.

export function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

// a Headers object or a plain one, with lower-case names
export function headersOf(h) {
  const out = {};
  if (h && typeof h.forEach === 'function') h.forEach((v, k) => { out[k.toLowerCase()] = v; });
  else if (h) for (const [k, v] of Object.entries(h)) out[k.toLowerCase()] = v;
  return out;
}

// {step, ok: false, error: {class, status, headers, ...}} for what the client raised
export function failure(step, err) {
  return {
    step, ok: false,
    error: {
      class: err?.constructor?.name, status: err?.status ?? null,
      headers: headersOf(err?.headers), type: err?.type ?? null, code: err?.code ?? null,
      body: err?.error ?? null, message: String(err?.message ?? err),
    },
  };
}

// Runs fn and emits {step, ok: true, ms, ...what it returned}, or its failure.
export async function step(name, fn) {
  const t0 = Date.now();
  try {
    const got = await fn();
    emit({ step: name, ok: true, ms: Date.now() - t0, ...got });
  } catch (err) {
    emit({ ...failure(name, err), ms: Date.now() - t0 });
  }
}

// POST /key/block with the master key: {status, blocked}
export async function block(base, masterKey, key) {
  const r = await fetch(`${base}/key/block`, {
    method: 'POST',
    headers: { authorization: `Bearer ${masterKey}`, 'content-type': 'application/json' },
    body: JSON.stringify({ key }),
  });
  return { status: r.status, blocked: (await r.json())?.blocked ?? null };
}

// rpm and tpm windows are UTC minutes: waits for the next one unless `seconds` are left of this
export async function sameMinute(seconds) {
  const into = new Date().getUTCSeconds();
  if (into > 60 - seconds) await new Promise((r) => setTimeout(r, (61 - into) * 1000));
}
