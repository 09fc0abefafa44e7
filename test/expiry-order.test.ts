/**
 * Issue 9, finding 6: an expired suspended session must never resume, whatever order sessions
 * were suspended in. cookieTimeout 6 s; A created at t=0, B at t=3; B suspended, then A. At
 * t=7.5 A has been idle 7.5 s: it is gone, on the request path and for the sweep alike. Before,
 * the sweep stopped at B (the first unexpired one in suspension order) and the request path
 * never checked expiry, so A's cookie resumed. Time runs on a manual clock (C9).
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { MemoryStore } from '../src/stores/memory.ts';
import { Client, ManualClock, startTestServer, waitFor, type TestServer } from './helpers.ts';

const servers: TestServer[] = [];
after(() => Promise.all(servers.map((t) => t.close())));

async function twoSuspendedOutOfOrder() {
  const clock = new ManualClock();
  const store = new MemoryStore();
  const t = await startTestServer({ workers: { threads: 1 }, sessions: { cookieTimeout: '6s', processTimeout: '1h' } }, clock, store);
  servers.push(t);
  const a = new Client(t.url);
  await a.get('/inc');
  clock.advance(3_000);
  const b = new Client(t.url);
  await b.get('/inc');
  // B leaves memory first, A after it: suspension order is not expiry order.
  assert.equal(await t.server.sessions.suspendSession(b.cookie!), 'suspended');
  assert.equal(await t.server.sessions.suspendSession(a.cookie!), 'suspended');
  clock.advance(4_500);
  return { t, store, a, b, idA: a.cookie!, idB: b.cookie! };
}

test('C2: at t=7.5 s the cookie of A (idle 7.5 s, suspended after B) gets a new session; B (idle 4.5 s) resumes', async () => {
  const { t, idA, idB } = await twoSuspendedOutOfOrder();
  const staleA = await new Client(t.url).get('/state', { headers: { cookie: `RSID=${idA}` } });
  assert.equal(staleA.status, 200);
  assert.notEqual(staleA.json().id, idA, 'an expired session never resumes');
  assert.equal(staleA.json().resumed, false);
  const backB = await new Client(t.url).get('/state', { headers: { cookie: `RSID=${idB}` } });
  assert.deepEqual([backB.json().id, backB.json().resumed], [idB, true], 'B is within its cookie and resumes');
});

test('C2: the sweep alone ends A and deletes its record, though B was suspended before it and is still valid', async () => {
  const { t, store, idA, idB } = await twoSuspendedOutOfOrder();
  await waitFor(async () => (await store.get(idA)) === undefined, 5000, "the sweep to delete A's record");
  assert.ok(await store.get(idB), "B's record stays");
  assert.ok(t.logs.some((line) => line.event === 'expired'), 'the end is logged');
});
