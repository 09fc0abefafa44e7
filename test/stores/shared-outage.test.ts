/**
 * E7 for the shared stores, through a real server (RELIABILITY.md, issue 13): Redis and
 * PostgreSQL each drop for 30 s mid-run and come back. A TCP proxy between the server and the
 * real service resets every connection and refuses new ones meanwhile; both stores run at once.
 * What must hold, with no restart: no request hangs (each is answered within 2 s); /readyz says
 * 503 while the store is gone and 200 after; an idle suspend the store refuses is logged as an
 * error, keeps its context live and is tried again every 5 s, the whole outage long; what needs
 * the store (a suspended session, an unknown ID) gets 503, never a silent fresh context; a session
 * created during the outage is served; once the store is back the retried suspends land, their
 * mementos are in the store, and every session resumes from its memento.
 */
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import type { TestContext } from 'node:test';
import { newSessionId } from '../../src/contexts/ids.ts';
import { Client, waitFor } from '../helpers.ts';
import { savedOf } from './server-helpers.ts';
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

const OUTAGE_MS = 30_000;
/** Every request during and after the outage is answered within this (E6: 503 within 2 s). */
const ANSWER_BOUND_MS = 2_000;

async function throughOutage(t: TestContext, kind: SharedKind): Promise<void> {
  const { proxy, url } = await proxyFor(kind);
  const store = sharedStore(kind, url);
  const server = await startShared(store);
  const { sessions } = server.server;
  const timed = new Timed();
  const [s, a, c] = [new Client(server.url), new Client(server.url), new Client(server.url)];
  const readyz = async () => (await timed.send(server.url, '/readyz', undefined, `${kind} /readyz`)).status;
  try {
    // S suspended (n=2 in the store) before the outage; A live (n=3) when it starts.
    stateOf(await timed.get(s, '/inc'), 'S');
    const sId = stateOf(await timed.get(s, '/inc'), 'S').id;
    await waitFor(async () => (await sessions.info(sId))?.state === 'suspended', 5000, `${kind}: S's idle suspend`);
    assert.equal((await storedMemento(store, sId))?.data.n, 2);
    for (let i = 0; i < 2; i++) stateOf(await timed.get(a, '/inc'), 'A');
    const aId = stateOf(await timed.get(a, '/inc'), 'A').id;

    proxy.cut();
    const cutAt = performance.now();
    const mark = server.logs.length;
    const created = sessions.stats.created;
    await waitFor(async () => (await readyz()) === 503, 5000, `${kind}: /readyz 503`);
    const down = await timed.send(server.url, '/readyz', undefined, `${kind} /readyz`);
    assert.deepEqual(down.json<{ store: unknown }>().store, { kind, status: 'unreachable' });

    // A's idle suspend is refused, loudly, and A stays the same live context.
    const refused = await waitFor(async () => since(server, mark).find(storeRefused(aId)), 5000, `${kind}: A's refused idle suspend`).catch(
      (error: Error) => assert.fail(`${error.message}\n${dump(since(server, mark))}`),
    );
    assert.ok(refused && refused.level >= 50, JSON.stringify(refused));
    t.diagnostic(`${kind}: the store refused: ${(refused.err as { message?: string }).message}`);
    const during = stateOf(await timed.get(a, '/inc', `${kind} A during`), 'A during');
    assert.deepEqual({ id: during.id, resumed: during.resumed, requests: during.requests, n: during.data.n }, { id: aId, resumed: false, requests: 4, n: 4 });

    // What needs the store gets 503 in bounded time; a new session needs none and is served.
    assertStoreUnavailable(await timed.get(s, '/state', `${kind} S during`), `${kind}: resuming S`);
    assertStoreUnavailable(await timed.send(server.url, '/state', newSessionId(), `${kind} unknown ID`), `${kind}: an unknown ID`);
    assert.equal(sessions.stats.created, created, 'no session created for the unknown ID');
    const cState = stateOf(await timed.get(c, '/put?key=c&value=during'), 'C');
    assert.equal(cState.isNew, true);
    const cId = cState.id;

    // The rest of the 30 s: still 503 for readiness and for S, every answer prompt; A and C idle,
    // their suspends refused and tried again.
    while (performance.now() - cutAt < OUTAGE_MS) {
      await sleep(2000);
      assert.equal(await readyz(), 503, `${kind}: /readyz during the outage`);
      assertStoreUnavailable(await timed.get(s, '/state', `${kind} S during`), `${kind}: resuming S`);
    }
    const attempts = since(server, mark).filter(storeRefused(aId)).length;
    assert.ok(attempts >= 4, `${kind}: A's suspend was tried ${attempts} times in 30 s (every 5 s)`);
    assert.ok(since(server, mark).filter(storeRefused(cId)).length >= 3, `${kind}: C's suspend refused and retried`);
    assert.deepEqual(since(server, mark).filter((line) => line.event === 'suspended'), [], 'nothing reported suspended during the outage');
    assert.equal((await sessions.info(aId))?.state, 'live');
    assert.equal((await sessions.info(sId))?.state, 'suspended', 'S is still suspended, not forgotten');
    t.diagnostic(`${kind}: A's suspend refused ${attempts} times`);

    proxy.restore();
    const back = server.logs.length;
    await waitFor(async () => (await readyz()) === 200, 6000, `${kind}: /readyz 200 again`);
    for (const [name, id] of [['A', aId], ['C', cId]] as const) {
      await waitFor(async () => since(server, back).find(suspendedLine(id)), 9000, `${kind}: ${name}'s retried idle suspend`).catch((error: Error) =>
        assert.fail(`${error.message}\n${dump(since(server, back))}`),
      );
    }
    assert.equal((await storedMemento(store, aId))?.data.n, 4, "A's memento is in the store");
    assert.equal((await storedMemento(store, cId))?.data.c, 'during', "C's memento is in the store");
    assert.equal(sessions.stats.lostSuspends, 0);

    const aBack = stateOf(await timed.get(a, '/state', `${kind} A after`), 'A after');
    assert.deepEqual({ id: aBack.id, resumed: aBack.resumed, requests: aBack.requests, n: savedOf(aBack).data.n }, { id: aId, resumed: true, requests: 1, n: 4 });
    const sBack = stateOf(await timed.get(s, '/state', `${kind} S after`), 'S after');
    assert.deepEqual({ id: sBack.id, resumed: sBack.resumed, n: sBack.data.n }, { id: sId, resumed: true, n: 2 });
    const cBack = stateOf(await timed.get(c, '/state', `${kind} C after`), 'C after');
    assert.deepEqual({ id: cBack.id, resumed: cBack.resumed, c: cBack.data.c }, { id: cId, resumed: true, c: 'during' });
    timed.assertWithin(ANSWER_BOUND_MS, kind);
    t.diagnostic(`${kind}: ${timed.times.length} requests, slowest ${timed.slowest()} ms`);
  } finally {
    await Promise.all([s.close(), a.close(), c.close()]);
    await server.close();
  }
}

// Both outages at once (concurrency): the file takes about 40 s, not 80.
forEachShared('E7: a shared store gone for 30 s mid-run, then back', () => 'no hung request, /readyz follows, refused suspends retried and landed, every session resumes', 90_000, throughOutage);
