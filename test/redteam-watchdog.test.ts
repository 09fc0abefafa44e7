/**
 * Red team 3 against the watchdog (src/contexts/heartbeat.ts, watchdog.ts, crash-breaker.ts,
 * pool.ts): each test states what the README promises and drives a real server at it.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Client, fixtureHooks, fixtureState, send, withServer } from './helpers.ts';

const HOOKS = fixtureHooks('redteam-watchdog');
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

test('a session\'s requests, each 150 ms of synchronous work (a tenth of stallTimeout), do not get their thread killed', async () => {
  await withServer({ workers: { threads: 1, stallTimeout: '1500ms' }, hooks: HOOKS }, async (s) => {
    const client = new Client(s.url);
    const first = await fixtureState(client, '/inc');
    // One client, twelve requests at once: they queue on its context, each a legitimate 150 ms.
    const replies = await Promise.all(Array.from({ length: 12 }, () => client.get('/spin?ms=150')));
    assert.deepEqual(replies.map((reply) => reply.status), Array(12).fill(200));
    assert.equal(s.server.pool.stalls, 0, 'no thread was terminated');
    const after = await fixtureState(client, '/inc');
    assert.deepEqual([after.id, after.n, after.resumed], [first.id, 2, false], 'the context stayed live');
  });
});

test('concurrent new clients of a legitimate route (150 ms of synchronous work each) do not cost the sessions on that thread their state', async () => {
  await withServer({ workers: { threads: 1, stallTimeout: '1500ms' }, hooks: HOOKS }, async (s) => {
    const resident = new Client(s.url);
    const first = await fixtureState(resident, '/inc');
    const replies = await Promise.all(Array.from({ length: 12 }, () => new Client(s.url).get('/spin?ms=150')));
    assert.deepEqual(replies.map((reply) => reply.status), Array(12).fill(200));
    const after = await fixtureState(resident, '/inc');
    assert.deepEqual([after.id, after.n, after.resumed], [first.id, 2, false], 'the resident session kept its live context');
  });
});

test('a client cannot trip the crash-loop breaker: a route that stalls its thread, hit by a new client as the first request on each fresh thread, leaves the server serving', async () => {
  // /spin-forever stands for the README's own F3 example, a catastrophic regex on client input.
  await withServer({ workers: { threads: 1, stallTimeout: '500ms' }, hooks: HOOKS }, async (s) => {
    for (let attack = 0; attack < 6; attack++) {
      // A new client is placed on the thread holding the fewest contexts: the fresh one.
      const reply = await new Client(s.url).get('/spin-forever');
      assert.ok([503, 504].includes(reply.status), `status ${reply.status}`);
    }
    await sleep(300);
    const ready = await send(`${s.url}/readyz`);
    const served = await new Client(s.url).get('/inc');
    assert.deepEqual(
      { degraded: s.server.pool.degraded, ready: ready.status, served: served.status },
      { degraded: false, ready: 200, served: 200 },
      `six requests from an anonymous client took every thread down for good: ${ready.text}`,
    );
  });
});
