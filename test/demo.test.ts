/**
 * The shipped demo hooks, driven through a real server like a browser would: page, cart,
 * preferences from SQLite, close, the cart surviving a suspension, and sign-in attempts that
 * neither stall their worker nor tell which usernames exist.
 */
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { Client, DEMO_OPTIONS, startTestServer, waitFor, type TestServer } from './helpers.ts';


let t: TestServer;
before(async () => {
  process.env.RESIDENT_DEMO_DB = join(mkdtempSync(join(tmpdir(), 'resident-demo-')), 'demo.db');
  t = await startTestServer({ ...DEMO_OPTIONS, sessions: { processTimeout: '1s' } });
});
after(() => t.close());

const cell = (html: string, id: string) => html.match(new RegExp(`id="${id}">([^<]*)<`))?.[1];
const form = (fields: Record<string, string>) => ({
  method: 'POST',
  headers: { 'content-type': 'application/x-www-form-urlencoded' },
  body: new URLSearchParams(fields).toString(),
});

test('the demo page shows the context and counts hits', async () => {
  const client = new Client(t.url);
  const first = await client.get('/');
  assert.equal(first.status, 200);
  assert.equal(cell(first.text, 'hits'), '1');
  assert.equal(cell(first.text, 'state'), 'new');
  assert.match(cell(first.text, 'thread') ?? '', /^\d+$/);
  assert.match(cell(first.text, 'expires') ?? '', /^\d{4}-\d\d-\d\dT/);
  // The page shows a masked ID, never the whole cookie value.
  assert.ok(!first.text.includes(client.cookie!));
  const second = await client.get('/');
  assert.equal(cell(second.text, 'hits'), '2');
  assert.equal(cell(second.text, 'state'), 'continuing');
});

test('the cart is a live object and preferences come from SQLite', async () => {
  const client = new Client(t.url);
  await client.get('/');
  assert.equal((await client.get('/cart/add', form({ sku: 'tea' }))).status, 303);
  await client.get('/cart/add', form({ sku: 'tea' }));
  await client.get('/cart/add', form({ sku: 'mug' }));
  await client.get('/me', form({ employee: '3' }));
  const page = (await client.get('/')).text;
  assert.match(page, /<li data-sku="tea">2 × Green tea<\/li>/);
  assert.match(page, /<li data-sku="mug">1 × Stoneware mug<\/li>/);
  assert.match(page, /Preferences of Jean Dupont: theme light, language fr/);
  assert.match(page, /<html lang="fr">/);
});

test('a suspended visitor comes back resumed with the cart restored', async () => {
  const client = new Client(t.url);
  await client.get('/');
  await client.get('/cart/add', form({ sku: 'book' }));
  await waitFor(async () => ((await t.server.sessions.info(client.cookie!))?.state === 'suspended'), 4000, 'the idle suspend');
  const page = (await client.get('/')).text;
  assert.equal(cell(page, 'state'), 'resumed');
  assert.equal(cell(page, 'hits'), '2');
  assert.match(page, /<li data-sku="book">1 × The 4D handbook<\/li>/);
});

test('the close button ends the session', async () => {
  const client = new Client(t.url);
  await client.get('/');
  const before = client.cookie;
  const closed = await client.get('/close', { method: 'POST' });
  assert.equal(closed.status, 303);
  assert.ok(closed.setCookies.some((line) => /^RSID=;/.test(line) && /Max-Age=0/.test(line)));
  assert.equal(client.cookie, undefined);
  const next = await client.get('/', { headers: { cookie: `RSID=${before}` } });
  assert.equal(cell(next.text, 'state'), 'new');
  assert.equal(cell(next.text, 'hits'), '1');
});

test('sign-in attempts do not stall the other contexts on their worker (scrypt runs off the thread)', async () => {
  const one = await startTestServer({ ...DEMO_OPTIONS, workers: { threads: 1 } });
  try {
    const bystander = new Client(one.url);
    assert.equal((await bystander.get('/')).status, 200);
    const attackers = Array.from({ length: 16 }, () => new Client(one.url));
    let answered = 0;
    const attempts = attackers.map(async (client) => {
      const reply = await client.get('/login', form({ username: 'ada', password: 'not-the-password' }));
      answered++;
      return reply;
    });
    // Every attempt has reached the one worker thread (answered, or still in flight there).
    const inFlight = () => one.server.pool.workerLoad().reduce((sum, worker) => sum + worker.queued, 0);
    await waitFor(async () => inFlight() + answered >= attackers.length, 5000, 'every attempt on the worker');
    const page = await bystander.get('/');
    const answeredBeforePage = answered;
    assert.equal(page.status, 200);
    assert.equal(cell(page.text, 'hits'), '2');
    for (const reply of await Promise.all(attempts)) {
      assert.equal(reply.status, 303);
      assert.equal(reply.headers.location, '/?notice=login-failed');
    }
    // A synchronous scrypt (~36 ms each) would have held the page until every attempt was done.
    assert.ok(answeredBeforePage < attackers.length, `the page waited for all ${attackers.length} sign-in attempts`);
  } finally {
    await one.close();
  }
});

test('an unknown username costs the same scrypt as a wrong password, and gets the same answer', async () => {
  const client = new Client(t.url);
  await client.get('/');
  const timeLogin = async (username: string) => {
    const started = performance.now();
    const reply = await client.get('/login', form({ username, password: 'not-the-password' }));
    assert.equal(reply.status, 303);
    assert.equal(reply.headers.location, '/?notice=login-failed');
    return performance.now() - started;
  };
  const median = (values: number[]) => values.sort((a, b) => a - b)[Math.floor(values.length / 2)]!;
  const known: number[] = [];
  const unknown: number[] = [];
  for (let i = 0; i < 5; i++) {
    known.push(await timeLogin('ada'));
    unknown.push(await timeLogin(`nobody-${i}`));
  }
  // Without the stand-in hash an unknown user answers in about 1 ms against scrypt's tens of ms;
  // the bound is loose because this machine is shared.
  assert.ok(median(unknown) > median(known) / 3, `unknown ${median(unknown).toFixed(1)} ms, known ${median(known).toFixed(1)} ms`);
});

test('static files are served without a cookie', async () => {
  const reply = await new Client(t.url).get('/style.css');
  assert.equal(reply.status, 200);
  assert.match(reply.text, /font-family/);
  assert.deepEqual(reply.setCookies, []);
});

test('a restart of the demo keeps every visitor’s cart (SQLite store, the default)', async () => {
  const storePath = join(mkdtempSync(join(tmpdir(), 'resident-demo-store-')), 'contexts.db');
  const options = { ...DEMO_OPTIONS, store: { kind: 'sqlite' as const, path: storePath } };
  const first = await startTestServer(options);
  const visitors = [new Client(first.url), new Client(first.url), new Client(first.url)];
  const skus = ['tea', 'mug', 'book'];
  for (const [i, visitor] of visitors.entries()) {
    await visitor.get('/');
    await visitor.get('/cart/add', form({ sku: skus[i]! }));
  }
  const shutdown = await first.server.shutdown();
  assert.deepEqual(shutdown, { suspended: 3, lost: 0 });

  const second = await startTestServer(options);
  try {
    for (const [i, visitor] of visitors.entries()) {
      const before = visitor.cookie;
      const page = await new Client(second.url).get('/', { headers: { cookie: `RSID=${before}` } });
      assert.equal(page.status, 200);
      assert.equal(cell(page.text, 'state'), 'resumed');
      assert.equal(cell(page.text, 'hits'), '2');
      assert.match(page.text, new RegExp(`<li data-sku="${skus[i]}">1 × `));
      // Same session: the cookie is renewed with the same ID, not replaced.
      assert.ok(page.setCookies.some((line) => line.startsWith(`RSID=${before};`)));
    }
  } finally {
    await second.close();
  }
});
