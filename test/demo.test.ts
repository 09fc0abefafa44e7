/**
 * The shipped demo hooks, driven through a real server like a browser would: page, cart,
 * preferences from SQLite, close, and the cart surviving a suspension.
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
  await waitFor(() => t.server.sessions.directory.suspended.has(client.cookie!), 4000, 'the idle suspend');
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
