/**
 * ctx.select invalidation against a real server: ctx.forget(name) drops one cached selection
 * (and detaches a load under way), a ttl reloads a value older than it, concurrent callers
 * still share one load, and a wrong ttl is the hook's clear error.
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { Client, fixtureHooks, serverFactory } from './helpers.ts';

const TEST = { timeout: 30_000 };
const start = serverFactory({ hooks: fixtureHooks('hook-tools'), workers: { threads: 1 } });
const clients: Client[] = [];
after(() => Promise.all(clients.map((c) => c.close())));

async function session(): Promise<(path: string) => Promise<any>> {
  const t = await start();
  const c = new Client(t.url);
  clients.push(c);
  return async (path) => (await c.get(path)).json();
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

test('forget(name) drops that selection only: the next select loads again; true only when there was one', TEST, async () => {
  const get = await session();
  assert.deepEqual(await get('/forget?name=a'), { forgot: false }, 'nothing selected yet');
  assert.deepEqual(await get('/select?name=a'), { value: 'a#1', loads: 1 });
  assert.deepEqual(await get('/select?name=b'), { value: 'b#1', loads: 1 });
  assert.deepEqual(await get('/select?name=a'), { value: 'a#1', loads: 1 }, 'cached');
  assert.deepEqual(await get('/forget?name=a'), { forgot: true });
  assert.deepEqual(await get('/forget?name=a'), { forgot: false }, 'already gone');
  assert.deepEqual(await get('/select?name=a'), { value: 'a#2', loads: 2 }, 'loaded again');
  assert.deepEqual(await get('/select?name=b'), { value: 'b#1', loads: 1 }, 'another selection stays cached');
});

test('forget during a load: its callers get its value, but it is not cached; the next select loads afresh', TEST, async () => {
  const get = await session();
  assert.deepEqual(await get('/forget-during-load?name=c'), { forgot: true, value: 'c#1', next: 'c#2', loads: 2 });
  assert.deepEqual(await get('/select?name=c'), { value: 'c#2', loads: 2 }, 'the fresh load is the one cached');
});

test('concurrent callers share one load, with or without forget before', TEST, async () => {
  const get = await session();
  assert.deepEqual(await get('/select-shared?name=d'), { values: ['d#1', 'd#1', 'd#1'], loads: 1 });
  await get('/forget?name=d');
  assert.deepEqual(await get('/select-shared?name=d'), { values: ['d#2', 'd#2', 'd#2'], loads: 2 });
});

test('ttl: a value older than the ttl is loaded again; younger, it is served from the cache; "5m" and milliseconds', TEST, async () => {
  const get = await session();
  assert.deepEqual(await get('/select?name=e&ttl=5m'), { value: 'e#1', loads: 1 });
  assert.deepEqual(await get('/select?name=e&ttl=5m'), { value: 'e#1', loads: 1 }, 'younger than 5 minutes');
  assert.deepEqual(await get('/select?name=f&ttl=100'), { value: 'f#1', loads: 1 });
  await sleep(250);
  assert.deepEqual(await get('/select?name=f&ttl=100'), { value: 'f#2', loads: 2 }, 'older than 100 ms');
  assert.deepEqual(await get('/select?name=f&ttl=1h'), { value: 'f#2', loads: 2 }, 'each call judges the age by its own ttl');
  assert.deepEqual(await get('/select?name=f'), { value: 'f#2', loads: 2 }, 'without a ttl, a cached value serves forever');
  assert.deepEqual(await get('/select?name=f&ttl=0'), { value: 'f#3', loads: 3 }, 'ttl 0: always loaded');
});

test('a wrong ttl rejects the select with a TypeError saying what is expected, and loads nothing', TEST, async () => {
  const get = await session();
  const { error, loads } = await get('/select-bad-ttl?name=g');
  assert.match(error, /ttl must be a number of milliseconds or a duration such as "90s" or "5m", not "soon"/);
  assert.equal(loads, 0);
});
