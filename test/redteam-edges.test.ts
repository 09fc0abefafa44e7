/**
 * Red team for issue 11 (every worker thread an HTTP edge): what a hostile client can do to the
 * hop between edges, through real servers and real sockets. Which thread accepts a connection
 * is the kernel's choice, so a test that needs a session on a given home makes it with a
 * forged cookie homed there (a request for an unknown ID is answered, and its new session
 * created, on the home that ID names), and one that needs hops opens a connection per request.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { newSessionId, slotOf } from '../src/contexts/ids.ts';
import { ROOT, startTestServer, waitFor, type TestServer } from './helpers.ts';
import { join } from 'node:path';
import { cookieOf, edgeServers, fresh } from './edge-helpers.ts';

const HOOKS = {
  onConnection: join(ROOT, 'test/fixtures/redteam-edges/onConnection.ts'),
  onSessionSuspend: join(ROOT, 'test/fixtures/hooks/onSessionSuspend.ts'),
};

const start = edgeServers(HOOKS);

const homeOf = (id: string, threads: number) => slotOf(id) % threads;

/** A new session homed on `slot`: a forged (never issued) ID homed there is answered, and its session made, there. */
async function sessionOn(t: TestServer, slot: number, localAddress?: string): Promise<string> {
  const reply = await fresh(`${t.url}/inc`, { headers: { cookie: `RSID=${newSessionId(slot)}` }, localAddress });
  assert.equal(reply.status, 200, reply.text);
  const id = cookieOf(reply)!;
  assert.equal(slotOf(id), slot, 'the new session is homed where the forged ID said');
  return id;
}

test('A8 across homes: junk, a closed ID and another client\'s session homed on other threads never shadow one\'s own (200 rounds)', { timeout: 120_000 }, async () => {
  const threads = 3;
  const t = await start(threads);
  for (let round = 0; round < 200; round++) {
    const home = round % threads;
    const elsewhere = (home + 1 + (round % (threads - 1))) % threads;
    const own = await sessionOn(t, home);
    const dead = await sessionOn(t, elsewhere);
    assert.equal((await fresh(`${t.url}/close`, { headers: { cookie: `RSID=${dead}` } })).status, 200);
    const foreign = await sessionOn(t, elsewhere, '127.0.0.2');
    const junk = newSessionId(elsewhere);
    const orders = [
      [junk, own],
      [dead, own],
      [foreign, own],
      [junk, foreign, dead, own],
      [foreign, junk, own, newSessionId(home)],
    ];
    const order = orders[round % orders.length]!;
    const reply = await fresh(`${t.url}/inc`, { headers: { cookie: order.map((id) => `RSID=${id}`).join('; ') } });
    assert.equal(reply.status, 200, `round ${round} (${order.map((id) => homeOf(id, threads))}): ${reply.text}`);
    const state = reply.json<{ id: string; n: number }>();
    assert.equal(state.id, own, `round ${round}: one's own session, not a new one`);
    assert.equal(state.n, 2, `round ${round}: its count`);
    assert.deepEqual(reply.setCookies.map((line) => line.slice(0, line.indexOf(';'))), [`RSID=${own}`], `round ${round}: no Set-Cookie overwrites the real cookie`);
    // The others are untouched, and the closed one stays dead.
    const theirs = await fresh(`${t.url}/state`, { headers: { cookie: `RSID=${foreign}` }, localAddress: '127.0.0.2' });
    assert.deepEqual([theirs.json<{ id: string }>().id, theirs.json<{ n: number }>().n], [foreign, 1], `round ${round}: the other client's session untouched`);
    assert.equal(await t.server.sessions.info(dead), undefined, `round ${round}: the closed ID stays dead`);
  }
  assert.equal(t.server.sessions.stats.ipMismatches, 0, 'no 400 for a client that also presented its own session');
});

test('A8 across homes after a restart: junk homed on other threads in front of a session only the store holds', { timeout: 60_000 }, async () => {
  const { mkdtempSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const store = { kind: 'sqlite' as const, path: join(mkdtempSync(join(tmpdir(), 'redteam-edges-')), 'contexts.db') };
  const threads = 2;
  const before = await startTestServer({ workers: { threads }, log: { level: 'warn' }, hooks: HOOKS, store });
  const real: string[] = [];
  try {
    for (let slot = 0; slot < threads; slot++) real.push(await sessionOn(before, slot));
  } finally {
    await before.close(); // every session suspended into the store
  }
  const t = await start(threads, { store });
  for (const id of real) {
    const other = (homeOf(id, threads) + 1) % threads;
    const values = [newSessionId(other), newSessionId(other), newSessionId(homeOf(id, threads)), id];
    const reply = await fresh(`${t.url}/state`, { headers: { cookie: values.map((value) => `RSID=${value}`).join('; ') } });
    assert.equal(reply.status, 200, reply.text);
    const state = reply.json<{ id: string; resumed: boolean }>();
    assert.deepEqual([state.id, state.resumed], [id, true], 'the stored session resumed, not a new one');
  }
  assert.equal(t.server.sessions.stats.created, 0, 'no session was created instead');
});

/** Polls until no suspend is under way, then returns the stats. */
async function settled(t: TestServer) {
  await waitFor(() => t.server.sessions.stats.suspending === 0 && t.server.sessions.stats.inFlight === 0, 10_000, 'no suspend under way');
  return t.server.sessions.stats;
}

test('the cap under concurrent creations on several threads: never a 503 while idle contexts exist, exactly one eviction per creation, none lost (100 rounds)', { timeout: 120_000 }, async () => {
  const threads = Number(process.env.RT_THREADS ?? 3);
  const cap = 16;
  const burst = Number(process.env.RT_BURST ?? 10);
  const t = await start(threads, { sessions: { maxContexts: cap } });
  const counts = new Map<string, number>();
  for (let i = 0; i < cap; i++) counts.set(await sessionOn(t, i % threads), 1);
  let refused = 0;
  for (let round = 0; round < 100; round++) {
    const replies = await Promise.all(Array.from({ length: burst }, () => fresh(`${t.url}/inc`)));
    for (const reply of replies) {
      if (reply.status === 503) {
        refused++;
        continue;
      }
      assert.equal(reply.status, 200, `round ${round}: ${reply.text}`);
      counts.set(cookieOf(reply)!, 1);
    }
    const stats = await settled(t);
    assert.ok(stats.live <= cap, `round ${round}: ${stats.live} live contexts, over the cap of ${cap}`);
  }
  const stats = await settled(t);
  assert.equal(refused, 0, `${refused} creations refused 503 "at capacity" although ${cap} idle contexts were there to evict`);
  assert.equal(stats.live, cap, 'the cap is full, not emptied by evictions nobody needed');
  assert.equal(stats.suspended.evicted, stats.created - cap, 'one eviction per creation beyond the cap, no more');
  // None lost: a sample of every session comes back with its count.
  const sample = [...counts.keys()].filter((_, i) => i % 10 === 0);
  for (const id of sample) {
    const reply = await fresh(`${t.url}/inc`, { headers: { cookie: `RSID=${id}` } });
    assert.equal(reply.status, 200, reply.text);
    assert.deepEqual([reply.json<{ id: string }>().id, reply.json<{ n: number }>().n], [id, 2], 'the session came back with its count');
  }
});

test('a thread a hook exits while creations on it wait for the cap: the places they held are given back, the cap stays whole (5 rounds)', { timeout: 120_000 }, async () => {
  for (let round = 0; round < 5; round++) {
    const cap = 2;
    const t = await start(2, { sessions: { maxContexts: cap } });
    const blocked = await sessionOn(t, 0);
    const dying = await sessionOn(t, 1);
    // Thread 0 stops answering for a while: thread 1's creations, at the cap, wait for its
    // idle candidate (up to half a second) holding their place...
    const block = fresh(`${t.url}/block?ms=1500`, { headers: { cookie: `RSID=${blocked}` } });
    await new Promise((resolve) => setTimeout(resolve, 100));
    const creations = Array.from({ length: 6 }, () => fresh(`${t.url}/inc`, { headers: { cookie: `RSID=${newSessionId(1)}` } }));
    await new Promise((resolve) => setTimeout(resolve, 150));
    // ...when a hook on thread 1 exits it.
    const exits = Array.from({ length: 4 }, () => fresh(`${t.url}/exit-now`, { headers: { cookie: `RSID=${dying}` } }).catch(() => undefined));
    await Promise.allSettled([block, ...creations, ...exits]);
    await waitFor(() => t.server.pool.threadIds.length === 2 && t.server.sessions.stats.workersLost >= 1, 10_000, 'thread 1 replaced');
    // Idle sessions, one after the other: the cap of 2 must hold 2 of them.
    const made: string[] = [];
    const ids: string[] = [];
    for (let i = 0; i < 4; i++) {
      const reply = await fresh(`${t.url}/inc`);
      made.push(reply.status === 200 ? '200' : `${reply.status} ${reply.text}`);
      ids.push(cookieOf(reply)!);
    }
    const stats = await settled(t);
    assert.deepEqual(made, ['200', '200', '200', '200'], `round ${round}: new clients refused (${JSON.stringify(t.server.sessions.stats)})`);
    assert.equal(stats.live, cap, `round ${round}: ${stats.live} live contexts with nothing in flight: the cap shrank ${JSON.stringify(await Promise.all(ids.map(async (id) => [slotOf(id), (await t.server.sessions.info(id))?.state])))} ${JSON.stringify(stats)}`);
    await t.close();
  }
});
