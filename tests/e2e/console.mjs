// console.mjs: the console under /ui/ in Debian's headless Chromium, as an operator would use it.
// tests/console.t seeds keywarden and runs this; each printed line is one step.
//
// Environment: KW_BASE (http://127.0.0.1:PORT), KW_MASTER_KEY, KW_VIEWER_KEY (a proxy_admin_viewer's
// key), KW_INTERNAL_KEY (an internal_user's), KW_SPEND_KEY (a key whose usage this reports), KW_PROVIDER_SECRET (the seeded provider
// key's secret, which no page may show), SHOT_DIR (screenshots), CHROMIUM (/usr/bin/chromium).
// Output: {"step", "ok", ...facts} a line, then {"done": true}.
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import puppeteer from 'puppeteer-core';

const env = process.env;
const base = env.KW_BASE;
const shots = env.SHOT_DIR;
const axeSource = fs.readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');

function emit(obj) { process.stdout.write(JSON.stringify(obj) + '\n'); }
async function step(name, fn) {
  try { emit({ step: name, ok: true, ...(await fn() || {}) }); }
  catch (e) { emit({ step: name, ok: false, error: String(e && e.stack || e) }); }
}

const browser = await puppeteer.launch({ executablePath: env.CHROMIUM || '/usr/bin/chromium', headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run'] });
const cspViolations = [];

async function open(width = 1280) {
  const page = await browser.newPage();
  await page.setViewport({ width, height: 900 });
  page.on('console', (m) => { if (/Content Security Policy/i.test(m.text())) cspViolations.push(m.text()); });
  page.on('pageerror', (e) => cspViolations.push('page error: ' + e.message));
  await page.goto(base + '/ui/', { waitUntil: 'networkidle0' });
  return page;
}
async function signIn(page, key) {
  await page.type('#sign-in-key', key);
  await page.click('#sign-in-form button[type=submit]');
  await page.waitForSelector('#who:not([hidden])');
  await page.waitForSelector('#page-title');
  await idle(page);
}
async function idle(page) { await page.waitForNetworkIdle({ idleTime: 150, timeout: 15000 }); }
async function go(page, name) {
  await page.evaluate((n) => { location.hash = '#/' + n; }, name);
  await page.waitForFunction((n) => document.querySelector('a[aria-current=page]')?.getAttribute('href') === '#/' + n, {}, name);
  await idle(page);
}
async function shot(page, name) { await page.screenshot({ path: path.join(shots, name + '.png'), fullPage: true }); }
async function text(page, sel) { return page.$eval(sel, (e) => e.textContent); }
async function buttons(page) { return page.$$eval('#page button', (bs) => bs.map((b) => b.textContent)); }
async function fill(page, formLabel, values) {
  for (const [name, v] of Object.entries(values)) {
    const sel = `form[aria-label="${formLabel}"] [name="${name}"]`;
    const tag = await page.$eval(sel, (e) => e.tagName);
    if (tag === 'SELECT') await page.select(sel, v);
    else { await page.$eval(sel, (e) => { e.value = ''; }); await page.type(sel, v); }
  }
  await page.click(`form[aria-label="${formLabel}"] button[type=submit]`);
  await idle(page);
}
async function axe(page) {
  await page.evaluate(axeSource);
  const r = await page.evaluate(() => axe.run(document, { resultTypes: ['violations'] }));
  return r.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical')
    .map((v) => v.id + ': ' + v.nodes.slice(0, 3).map((n) => n.target.join(' ')).join(', '));
}
async function rowOf(page, textInRow) {
  return page.evaluateHandle((t) => [...document.querySelectorAll('#page tbody tr')].find((tr) => tr.textContent.includes(t)), textInRow);
}

const page = await open();
const a11y = {};
await step('sign-in page', async () => {
  await shot(page, 'sign-in');
  a11y['sign-in'] = await axe(page);
  return { title: await page.title() };
});
await step('sign in with the master key', async () => {
  await signIn(page, env.KW_MASTER_KEY);
  const stored = await page.evaluate(() => Object.keys(sessionStorage));
  return { who: await text(page, '#who-role'), url: page.url(), cookie: await page.evaluate(() => document.cookie), stored,
    keyInUrl: page.url().includes(env.KW_MASTER_KEY) };
});
await step('keys: the list of 1,000 keys, paged', async () => {
  await fill(page, 'Filter keys', { size: '100' });
  const count = await text(page, '#key-count'), first = await text(page, '#key-page');
  await page.click('nav[aria-label="Key pages"] button:last-child');
  await page.waitForFunction(() => document.querySelector('#key-page')?.textContent.startsWith('Page 2'));
  const second = await text(page, '#key-page');
  await shot(page, 'keys');
  a11y.keys = await axe(page);
  return { count, first, second, rows: await page.$$eval('#page tbody tr', (r) => r.length) };
});
await step('keys: filtered by alias', async () => {
  await fill(page, 'Filter keys', { key_alias: 'bulk-0420' });
  return { count: await text(page, '#key-count'), aliases: await page.$$eval('#page tbody tr', (rs) => rs.map((r) => r.children[1].textContent)) };
});
await step('keys: block a selection, with progress', async () => {
  await fill(page, 'Filter keys', { key_alias: '', size: '25' });
  // the progress the page shows, as it changes: every "Blocking keys: n of N" and the bar's max
  await page.evaluate(() => {
    window.progressSeen = [];
    new MutationObserver((records) => { for (const r of records) for (const n of [r.target, ...r.addedNodes]) {
      const t = n.textContent || '';
      if (/Blocking keys: \d+ of \d+/.test(t)) window.progressSeen.push(t.match(/Blocking keys: \d+ of \d+/)[0]);
      if (n.querySelector && n.querySelector('progress')) window.progressSeen.push('max ' + n.querySelector('progress').max);
    } }).observe(document.body, { childList: true, subtree: true, characterData: true });
  });
  const chosen = await page.$$eval('#page tbody tr', (rs) => rs.filter((r) => /^bulk-/.test(r.children[1].textContent)).slice(0, 12)
    .map((r) => { r.querySelector('input[type=checkbox]').click(); return r.children[1].textContent; }));
  await page.evaluate(() => [...document.querySelectorAll('#page button')].find((b) => b.textContent === 'Block selected').click());
  await page.waitForFunction(() => /keys blocked\.$/.test(document.querySelector('#status')?.textContent || ''));
  await idle(page);
  return { chosen, status: await text(page, '#status'), progress: [...new Set(await page.evaluate(() => window.progressSeen))],
    blockedRows: await page.$$eval('#page tbody tr', (rs) => rs.filter((r) => r.querySelector('.state-blocked')).map((r) => r.children[1].textContent)) };
});
let secret = '';
await step('keys: create one and see its secret once', async () => {
  await fill(page, 'Filter keys', { key_alias: '' });
  await fill(page, 'Create a key', { key_alias: 'console-made', max_budget: '5', models: 'gpt-4o, gpt-4o-mini', tpm_limit: '1000' });
  secret = await text(page, '#new-secret');
  await shot(page, 'key-created');
  const copy = await page.$$eval('.secret button', (b) => b.map((x) => x.textContent));
  await page.click('.secret button.secondary');
  const after = await page.evaluate(() => document.body.innerText);
  await page.reload({ waitUntil: 'networkidle0' });
  await page.waitForSelector('#page-title');
  await idle(page);
  const reloaded = await page.evaluate(() => document.body.innerText);
  return { secretShape: /^sk-/.test(secret), copy, goneAfterDone: !after.includes(secret), goneAfterReload: !reloaded.includes(secret),
    stillSignedIn: await page.$eval('#who', (e) => !e.hidden), secret };
});
await step('keys: block it and see its state change', async () => {
  await fill(page, 'Filter keys', { key_alias: 'console-made' });
  const before = await page.$eval('#page tbody tr', (r) => r.textContent.includes('active'));
  await page.evaluate(() => [...document.querySelectorAll('#page tbody tr button')].find((b) => b.textContent === 'Block').click());
  await page.waitForFunction(() => document.querySelector('#page tbody tr .state-blocked'));
  await shot(page, 'key-blocked');
  return { before, after: await text(page, '#page tbody tr .state-blocked'), status: await text(page, '#status') };
});
await step('keys: regenerate, the new secret shown once', async () => {
  await page.evaluate(() => [...document.querySelectorAll('#page tbody tr button')].find((b) => b.textContent === 'Regenerate').click());
  await page.waitForSelector('dialog[open]');
  const question = await text(page, 'dialog[open] p');
  await page.click('dialog[open] button.danger');
  await page.waitForFunction((old) => document.querySelector('#new-secret') && document.querySelector('#new-secret').textContent !== old, {}, secret);
  const fresh = await text(page, '#new-secret');
  await page.click('.secret button.secondary');
  return { question, fresh, changed: fresh !== secret && /^sk-/.test(fresh) };
});
await step('keys: delete after a confirmation', async () => {
  await fill(page, 'Filter keys', { key_alias: 'bulk-0007' });
  await page.evaluate(() => [...document.querySelectorAll('#page tbody tr button')].find((b) => b.textContent === 'Delete').click());
  await page.waitForSelector('dialog[open]');
  await page.click('dialog[open] button.secondary');
  const keptAfterCancel = await text(page, '#key-count');
  await page.evaluate(() => [...document.querySelectorAll('#page tbody tr button')].find((b) => b.textContent === 'Delete').click());
  await page.waitForSelector('dialog[open]');
  await page.click('dialog[open] button.danger');
  await page.waitForFunction(() => document.querySelector('#key-count')?.textContent === '0 keys');
  await fill(page, 'Filter keys', { key_alias: 'console-made' });
  return { keptAfterCancel, after: await text(page, '#key-count') };
});
await step('keys: a refusal in words, naming its field', async () => {
  await fill(page, 'Create a key', { key_alias: 'console-bad', tpm_limit: '-5' });
  await page.waitForSelector('#alert:not([hidden])');
  await shot(page, 'key-error');
  return { alert: await text(page, '#alert') };
});
await step('teams: add a member', async () => {
  await go(page, 'teams');
  await page.evaluate(() => [...document.querySelectorAll('#page button')].find((b) => b.textContent === 'Members of team-console').click());
  await page.waitForSelector('form[aria-label="Add a member"]');
  await fill(page, 'Add a member', { user_id: 'member-1', role: 'admin' });
  await page.waitForFunction(() => document.querySelector('#team-detail tbody')?.textContent.includes('member-1'));
  await shot(page, 'teams');
  a11y.teams = await axe(page);
  return { members: await page.$$eval('#team-detail tbody tr', (rs) => rs.map((r) => r.children[0].textContent + ':' + r.children[1].textContent)) };
});
await step('provider credentials: edit a weight, never see the secret', async () => {
  await go(page, 'providers');
  await page.waitForSelector('input[aria-label="Weight of console-openai"]', { timeout: 5000 })
    .catch(async () => { throw new Error('no weight editor: ' + await page.evaluate(() => document.body.innerText)); });
  const html = await page.content();
  await page.$eval('input[aria-label="Weight of console-openai"]', (e) => { e.value = ''; });
  await page.type('input[aria-label="Weight of console-openai"]', '3');
  await page.click('button[aria-label="Save weight of console-openai"]');
  await page.waitForFunction(() => document.querySelector('#status')?.textContent === 'Weight saved.');
  await idle(page);
  await shot(page, 'providers');
  a11y.providers = await axe(page);
  const after = await page.content();
  // Bifrost's refusal in words with its field: an environment variable KEYWARDEN_PROVIDER_ENV does not allow
  await fill(page, 'Add a provider key', { provider: 'openai', name: 'console-page', env: 'CONSOLE_PAGE_KEY' });
  await page.waitForSelector('#alert:not([hidden])');
  const addAlert = await text(page, '#alert');
  // a key added from the page with no models: Bifrost v1.5's ["*"], read back as every model
  await fill(page, 'Add a provider key', { env: 'CONSOLE_TEST_API_KEY' });
  await page.waitForFunction(() => document.querySelector('#status')?.textContent === 'Provider key added.');
  const pageRow = await page.$$eval('#provider-keys tbody tr', (rs) => rs.map((r) => r.textContent).find((t) => t.includes('console-page')) || '');
  return { secretShown: html.includes(env.KW_PROVIDER_SECRET) || after.includes(env.KW_PROVIDER_SECRET), pageRow, addAlert,
    weight: await page.$eval('input[aria-label="Weight of console-openai"]', (e) => e.value),
    envShown: await page.evaluate(() => document.body.innerText.includes('from environment: env.CONSOLE_TEST_API_KEY')) };
});
await step('other pages: create a team, a budget, an end user (and block it), a Venice key', async () => {
  await go(page, 'teams');
  await fill(page, 'Create a team', { team_alias: 'team-from-page', max_budget: '10' });
  const teams = await page.$$eval('#page tbody tr', (rs) => rs.map((r) => r.children[0].textContent));
  await go(page, 'budgets');
  await fill(page, 'Create a budget', { budget_id: 'tier-page', max_budget: '7', budget_duration: '30d' });
  const budgets = await page.$$eval('#page tbody tr', (rs) => rs.map((r) => r.children[0].textContent));
  await go(page, 'customers');
  await fill(page, 'Create an end user', { user_id: 'cust-page', budget_id: 'tier-page' });
  await page.evaluate(() => [...document.querySelectorAll('#page tbody tr button')].find((b) => b.textContent === 'Block').click());
  await page.waitForFunction(() => document.querySelector('#page tbody tr .state-blocked'));
  const customer = await text(page, '#page tbody tr');
  await go(page, 'venice');
  await fill(page, 'Create a Venice key', { description: 'from the page', apiKeyType: 'INFERENCE' });
  const venice = await text(page, '#new-secret');
  await page.click('.secret button.secondary');
  const veniceRows = await page.$$eval('#page tbody tr', (rs) => rs.map((r) => r.children[0].textContent));
  return { teams, budgets, customer, veniceShown: venice.startsWith('VENICE_INFERENCE_KEY_'), veniceRows, alert: await page.$eval('#alert', (e) => e.hidden ? '' : e.textContent) };
});
for (const name of ['users', 'organizations', 'budgets', 'customers', 'venice', 'audit']) {
  await step('page: ' + name, async () => {
    await go(page, name);
    await shot(page, name);
    a11y[name] = await axe(page);
    return { title: await text(page, '#page-title'), alert: await page.$eval('#alert', (e) => e.hidden ? '' : e.textContent) };
  });
}
await step('spend: usage reported appears on the chart', async () => {
  await go(page, 'spend');
  const before = await page.$$eval('#spend-chart rect', (r) => r.length);
  const totalBefore = await text(page, '#spend-total');
  const r = await fetch(base + '/key/usage', { method: 'POST', headers: { Authorization: 'Bearer ' + env.KW_MASTER_KEY,
    'Content-Type': 'application/json' }, body: JSON.stringify({ key: env.KW_SPEND_KEY, model: 'gpt-4o', cost: 2.5, total_tokens: 100 }) });
  await fill(page, 'Spend view', { period: 'day', by: 'model' });
  await page.waitForSelector('#spend-chart rect');
  const after = await page.$$eval('#spend-chart rect', (x) => x.length);
  const legend = await text(page, '#spend-chart .legend');
  await fill(page, 'Spend view', { period: 'month', by: 'api_key' });
  await shot(page, 'spend');
  a11y.spend = await axe(page);
  return { usage: r.status, before, totalBefore, after, legend, total: await text(page, '#spend-total'),
    watch: await text(page, '#budget-watch') };
});
await step('phone width: 390 px', async () => {
  const phone = await open(390);
  await signIn(phone, env.KW_MASTER_KEY);
  await shot(phone, 'keys-phone');
  const overflow = await phone.evaluate(() => document.documentElement.scrollWidth);
  a11y['keys-phone'] = await axe(phone);
  await phone.close();
  return { scrollWidth: overflow };
});
await step('a viewer sees no write actions', async () => {
  const v = await open();
  await signIn(v, env.KW_VIEWER_KEY);
  const who = await text(v, '#who-role');
  const keysButtons = await buttons(v);
  const forms = await v.$$eval('#page form', (f) => f.map((x) => x.getAttribute('aria-label')));
  await shot(v, 'viewer-keys');
  await go(v, 'providers');
  const providerButtons = await buttons(v);
  await go(v, 'teams');
  await v.evaluate(() => [...document.querySelectorAll('#page button')].find((b) => b.textContent === 'Members of team-console').click());
  await v.waitForSelector('#team-detail tbody');
  const teamButtons = await buttons(v);
  const teamForms = await v.$$eval('#page form', (f) => f.map((x) => x.getAttribute('aria-label')));
  await shot(v, 'viewer-teams');
  // the API refuses what the page does not offer
  const refused = await v.evaluate(async () => (await fetch('/key/generate', { method: 'POST',
    headers: { Authorization: 'Bearer ' + sessionStorage.getItem('keywarden.key'), 'Content-Type': 'application/json' }, body: '{}' })).status);
  await v.close();
  return { who, keysButtons, forms, providerButtons, teamButtons, teamForms, refused };
});
await step('an internal user is offered only their pages', async () => {
  const u = await open();
  await signIn(u, env.KW_INTERNAL_KEY);
  const who = await text(u, '#who-role');
  const nav = await u.$$eval('#nav li', (ls) => ls.filter((l) => !l.hidden).map((l) => l.textContent));
  const forms = await u.$$eval('#page form', (f) => f.map((x) => x.getAttribute('aria-label')));
  const keys = await text(u, '#key-count');
  await go(u, 'spend');
  const alert = await u.$eval('#alert', (e) => e.hidden ? '' : e.textContent);
  await shot(u, 'internal-spend');
  await u.close();
  return { who, nav, forms, keys, alert };
});
emit({ step: 'accessibility', ok: true, violations: a11y });
emit({ step: 'content security policy', ok: true, violations: cspViolations });
await browser.close();
emit({ done: true });
