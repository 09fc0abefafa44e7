/**
 * Red team, issue 15, `ctx.select` as an untyped (JavaScript) hook calls it, against a real
 * server: a loader that is not a function is the hook's bug, said at its call (a TypeError),
 * never a silently cached `undefined`; and `ttl: Infinity`, the natural way to write "never
 * expires", means what omitting the ttl means.
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { Client, fixtureHooks, serverFactory } from './helpers.ts';

const start = serverFactory({ hooks: fixtureHooks('redteam-15'), workers: { threads: 1 } });
const clients: Client[] = [];
after(() => Promise.all(clients.map((c) => c.close())));

async function get(path: string): Promise<unknown> {
  const t = await start();
  const c = new Client(t.url);
  clients.push(c);
  const reply = await c.get(path);
  assert.equal(reply.status, 200, reply.text);
  return reply.json();
}

test('a loader that is not a function rejects with a TypeError and caches nothing', { timeout: 30_000 }, async () => {
  assert.deepEqual(await get('/select/not-a-function'), { outcomes: ['TypeError', 'TypeError'], cached: [] });
});

test('ttl: Infinity keeps the value for good, as no ttl does', { timeout: 30_000 }, async () => {
  assert.deepEqual(await get('/select/forever'), { first: 1, second: 1, loads: 1 });
});
