/**
 * E12 for the shared stores, through a real server (RELIABILITY.md, issue 13): every operation on
 * Redis and on PostgreSQL takes 5 s longer (a TCP proxy between the server and the real service
 * holds each byte toward the service for 5 s), for 12 s; both stores at once. What must hold:
 * what needs the store (resuming a suspended session, an unknown ID) fails fast, with a 503
 * within about store.callTimeout (500 ms here), far under the 5 s; the sessions live in memory do
 * not notice: four bystander clients keep going with low latency and no failure, and the main
 * thread's event loop is never blocked; a new session needs no store call on its path and is
 * served at once, its first write (the idle suspend) refused and retried. Once the latency is
 * gone the store answers again and the suspended sessions resume from their mementos.
 */
import assert from 'node:assert/strict';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import type { TestContext } from 'node:test';
import { newSessionId } from '../../src/contexts/ids.ts';
import { Client, waitFor } from '../helpers.ts';
import {
  Timed,
  assertStoreUnavailable,
  dump,
  forEachShared,
  proxyFor,
  sharedStore,
  since,
  startShared,
  stateOf,
  storeRefused,
  storedMemento,
  suspendedLine,
  type SharedKind,
} from './shared-helpers.ts';

const LATENCY_MS = 5_000;
const SLOW_FOR_MS = 12_000;
/** store.callTimeout of these servers. */
const CALL_TIMEOUT_MS = 500;
/** What needs the store answers within this: callTimeout and the scheduling of a loaded machine. */
const FAIL_FAST_MS = CALL_TIMEOUT_MS + 1_000;
/** No bystander request takes longer, nor does the event loop stall longer: a fifth of the latency at most. */
const BYSTANDER_BOUND_MS = 1_000;
const BYSTANDERS = 4;

/** One client doing /inc after /inc until `stop`, each answer timed; its counter must follow. */
async function bystander(url: string, stop: { now: boolean }, label: string) {
  const client = new Client(url);
  const times: number[] = [];
  const failures: string[] = [];
  let n = stateOf(await client.get('/inc'), label).data.n as number;
  const id = client.cookie;
  while (!stop.now) {
    const started = performance.now();
    const reply = await client.get('/inc');
    times.push(performance.now() - started);
    if (reply.status !== 200) failures.push(`${reply.status} ${reply.text}`);
    else {
      const state = reply.json<{ id: string; resumed: boolean; data: { n: number } }>();
      if (state.id !== id || state.data.n !== n + 1) failures.push(`${label}: ${JSON.stringify(state)} after n=${n}`);
      n = state.data.n;
    }
    await sleep(50);
  }
  await client.close();
  return { times, failures };
}

async function throughLatency(t: TestContext, kind: SharedKind): Promise<void> {
  const { proxy, url } = await proxyFor(kind);
  const store = sharedStore(kind, url);
  // Bystanders stay live (a request every ~50 ms is never 1 s idle); S is suspended.
  const server = await startShared(store, { callTimeout: `${CALL_TIMEOUT_MS}ms` });
  const { sessions } = server.server;
  const timed = new Timed();
  const [s, d] = [new Client(server.url), new Client(server.url)];
  const stop = { now: false };
  const loop = monitorEventLoopDelay({ resolution: 10 });
  try {
    stateOf(await timed.get(s, '/inc'), 'S');
    const sId = stateOf(await timed.get(s, '/inc'), 'S').id;
    await waitFor(async () => (await sessions.info(sId))?.state === 'suspended', 5000, `${kind}: S's idle suspend`);

    const bystanders = Array.from({ length: BYSTANDERS }, (_, i) => bystander(server.url, stop, `${kind} bystander ${i}`));
    await sleep(300);
    proxy.delay(LATENCY_MS);
    const slowAt = performance.now();
    const mark = server.logs.length;
    loop.enable();

    // Every resume of S, and a guessed ID, gets a prompt 503; S stays suspended.
    let resumes = 0;
    while (performance.now() - slowAt < SLOW_FOR_MS - 1_000) {
      assertStoreUnavailable(await timed.get(s, '/state', `${kind} S resume`), `${kind}: resuming S`);
      resumes++;
      assertStoreUnavailable(await timed.send(server.url, '/state', newSessionId(), `${kind} unknown ID`), `${kind}: an unknown ID`);
      if (resumes === 1) {
        // A new session: served at once, nothing of the store on its path.
        const fresh = stateOf(await timed.get(d, '/put?key=d&value=slow', `${kind} new session`), 'D');
        assert.equal(fresh.isNew, true);
      }
      await sleep(1000);
    }
    await waitFor(async () => (await timed.send(server.url, '/readyz', undefined, `${kind} /readyz`)).status === 503, 3000, `${kind}: /readyz 503`);
    await sleep(Math.max(0, SLOW_FOR_MS - (performance.now() - slowAt)));
    loop.disable();
    const dId = d.cookie!;
    // D's first write, its idle suspend, timed out on the store and is kept live for a retry.
    assert.ok(since(server, mark).some(storeRefused(dId)), `${kind}: D's suspend refused\n${dump(since(server, mark))}`);
    assert.equal((await sessions.info(sId))?.state, 'suspended');

    proxy.delay(0);
    const fastAt = performance.now();
    stop.now = true;
    const results = await Promise.all(bystanders);
    const times = results.flatMap((r) => r.times);
    const worst = Math.max(...times);
    const stalls = Math.round(loop.max / 1e6);
    t.diagnostic(
      `${kind}: ${resumes} resumes, slowest ${Math.max(...timed.times.filter((e) => e.what.endsWith('resume')).map((e) => e.ms))} ms; ` +
        `bystanders ${times.length} requests, worst ${Math.round(worst)} ms; event loop max delay ${stalls} ms`,
    );
    assert.deepEqual(results.flatMap((r) => r.failures), [], `${kind}: no bystander request failed`);
    assert.ok(times.length >= BYSTANDERS * 20, `${kind}: bystanders kept going (${times.length} requests)`);
    assert.ok(worst < BYSTANDER_BOUND_MS, `${kind}: the slowest bystander request took ${Math.round(worst)} ms`);
    assert.ok(stalls < BYSTANDER_BOUND_MS, `${kind}: the event loop stalled ${stalls} ms`);
    timed.assertWithin(FAIL_FAST_MS, `${kind}: what needs the store`);

    // Latency gone: the store answers again (bytes still held arrive first), S resumes, D's retry lands.
    await waitFor(async () => (await timed.send(server.url, '/readyz', undefined, `${kind} /readyz`)).status === 200, LATENCY_MS + 5000, `${kind}: /readyz 200`);
    t.diagnostic(`${kind}: /readyz 200 again ${Math.round(performance.now() - fastAt)} ms after the latency ended`);
    const back = server.logs.length;
    const sBack = stateOf(await s.get('/state'), 'S after');
    assert.deepEqual({ id: sBack.id, resumed: sBack.resumed, n: sBack.data.n }, { id: sId, resumed: true, n: 2 });
    await waitFor(async () => since(server, mark).find(suspendedLine(dId)), 9000, `${kind}: D's retried suspend`).catch((error: Error) =>
      assert.fail(`${error.message}\n${dump(since(server, back))}`),
    );
    assert.equal((await storedMemento(store, dId))?.data.d, 'slow', "D's memento is in the store");
    assert.equal(sessions.stats.lostSuspends, 0);
  } finally {
    stop.now = true;
    loop.disable();
    await Promise.all([s.close(), d.close()]);
    await server.close();
  }
}

// Both stores at once (concurrency): the file takes about 25 s, not 50.
forEachShared('E12: 5 s of latency on every store operation', () => 'what needs the store fails fast (503), sessions in memory and the event loop unaffected', 60_000, throughLatency);
