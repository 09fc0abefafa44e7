/**
 * Red team for hostile traffic (issue 12): a client that never sends its cookie back, guesses
 * IDs, races the drop of its pushed-out sessions, or asks to be kept, attacked through real
 * servers and sockets. Each test states the promise (README "Hostile traffic") it holds the
 * server to.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { newSessionId } from '../src/contexts/ids.ts';
import { ROOT, send, waitFor, type TestServer } from './helpers.ts';
import { cookieOf, edgeServers, fresh, metric, pool } from './edge-helpers.ts';

const start = edgeServers({
  onConnection: join(ROOT, 'test/fixtures/redteam-hostile/onConnection.ts'),
  onSessionSuspend: join(ROOT, 'test/fixtures/redteam-hostile/onSessionSuspend.ts'),
});

const as = (id: string) => ({ cookie: `RSID=${id}` });

test('log flooding: random unknown IDs from one source write one warn line per window, not one per request', { timeout: 60_000 }, async () => {
  // A cap well above the flood, so that only the guesses are judged here.
  const t = await start(2, { log: { level: 'warn' }, sessions: { maxUnknownIdsPerIp: 10, budgetWindow: '1h', maxContexts: 10_000, maxUnprovenPerIp: 0 } });
  const requests = 200;
  await pool(requests, 4, async () => {
    const reply = await fresh(`${t.url}/inc`, { headers: as(newSessionId()) });
    assert.equal(reply.status, 200, reply.text);
  });
  await t.settle();
  const guessing = t.logs.filter((line) => line.event === 'id-guessing');
  assert.equal(guessing.length, 1, 'one id-guessing line for the source and window');
  // Every other warn line these requests caused: the issue asks for one line per source and
  // window, so a guesser cannot fill the log (or the disk behind it) with one line per guess.
  const perRequest = t.logs.filter((line) => line.level >= 40 && line.event !== 'id-guessing');
  assert.ok(
    perRequest.length <= 2,
    `${requests} guesses wrote ${perRequest.length} further warn lines (events: ${[...new Set(perRequest.map((l) => l.event))].join(', ')})`,
  );
});

test('a flood of new sessions homed on one thread (forged cookies naming slot 0) gets 200 or 429, never 503 "at capacity", while contexts are idle; a proven user there stays live', { timeout: 60_000 }, async () => {
  // Defaults: maxContexts 100, maxUnprovenPerIp 200. Any well-formed unknown value routes the
  // new session to the home it names, so a flood can concentrate every creation on one home.
  const t = await start(2, { log: { level: 'warn' } });
  // A real user homed on slot 0, proven (its cookie came back).
  const first = await fresh(`${t.url}/inc`, { headers: as(newSessionId(0)), localAddress: '127.0.0.3' });
  const user = cookieOf(first)!;
  assert.equal((await fresh(`${t.url}/inc`, { headers: as(user), localAddress: '127.0.0.3' })).json<{ proven: boolean }>().proven, true);
  const statuses = new Map<number, number>();
  const newcomers = new Map<number, number>();
  const count = (map: Map<number, number>, status: number) => map.set(status, (map.get(status) ?? 0) + 1);
  let flooding = true;
  const flood = pool(800, 20, async () => {
    const reply = await fresh(`${t.url}/inc`, { headers: as(newSessionId(0)), localAddress: '127.0.0.2' });
    count(statuses, reply.status);
  }).finally(() => (flooding = false));
  // New clients on a third address (no cookie yet), visiting while the flood runs.
  await pool(3, 3, async () => {
    while (flooding) count(newcomers, (await fresh(`${t.url}/inc`, { localAddress: '127.0.0.4' })).status);
  });
  await flood;
  const back = await fresh(`${t.url}/inc`, { headers: as(user), localAddress: '127.0.0.3' });
  assert.deepEqual({ n: back.json<{ n: number }>().n, resumed: back.json<{ resumed: boolean }>().resumed }, { n: 3, resumed: false }, 'the proven user kept its live context');
  await t.settle();
  const capacityLog = t.logs.filter((line) => line.event === 'capacity');
  // No context was busy for long (each request is a few ms): the README promises 429 to the
  // flooding source when its own are all busy, and 503 only when every context is busy (and
  // then a "capacity" warn line says so).
  assert.deepEqual(
    { flood503: statuses.get(503) ?? 0, newcomer503: newcomers.get(503) ?? 0 },
    { flood503: 0, newcomer503: 0 },
    `flood statuses ${JSON.stringify([...statuses])}, newcomers' ${JSON.stringify([...newcomers])}; capacity log lines: ${capacityLog.length}`,
  );
});

/** A new session from `localAddress` via `path`; its ID and the state it answered. */
async function newSession(t: TestServer, path: string, localAddress: string): Promise<{ id: string; n: number }> {
  const reply = await fresh(`${t.url}${path}`, { localAddress });
  assert.equal(reply.status, 200, reply.text);
  return { id: cookieOf(reply)!, n: reply.json<{ n: number }>().n };
}

for (const [how, path] of [
  ['ctx.keep() in onConnection', '/keep'],
  ['ctx.keep() in onSessionSuspend', '/keep-on-drop'],
] as const) {
  test(`a session kept with ${how} and then pushed out by its source's budget is saved like any other (README: "the session is then saved like any other")`, { timeout: 30_000 }, async () => {
    const t = await start(1, { sessions: { maxUnprovenPerIp: 2 } });
    const kept = await newSession(t, path, '127.0.0.2');
    // Two more first visits from the same address (a NAT, an office): the kept one is the oldest.
    await newSession(t, '/inc', '127.0.0.2');
    await newSession(t, '/inc', '127.0.0.2');
    await waitFor(() => t.server.sessions.stats.suspending === 0 && t.server.sessions.stats.live === 2, 5000, 'the push-out');
    const back = await fresh(`${t.url}/inc`, { headers: as(kept.id), localAddress: '127.0.0.2' });
    assert.equal(back.status, 200, back.text);
    assert.deepEqual(
      { cookie: cookieOf(back), n: back.json<{ n: number }>().n },
      { cookie: kept.id, n: 2 },
      'the kept session comes back with its state',
    );
  });
}

test('a session pushed out by its source\'s budget, whose client presents the cookie while onSessionSuspend(ctx, "dropped") runs, gets a new session: nothing written, the drop counters agree', { timeout: 30_000 }, async () => {
  const t = await start(1, { sessions: { maxUnprovenPerIp: 1 }, metrics: { port: 0 } });
  const victim = await newSession(t, '/slow-suspend?ms=400', '127.0.0.2');
  // The next first visit from that address pushes the victim out: its hook takes 400 ms.
  await newSession(t, '/inc', '127.0.0.2');
  const back = await fresh(`${t.url}/inc`, { headers: as(victim.id), localAddress: '127.0.0.2' });
  assert.equal(back.status, 200, back.text);
  await waitFor(() => t.server.sessions.stats.suspending === 0, 5000, 'the drop');
  const state = back.json<{ resumed: boolean; saved: { reason?: string } | null }>();
  const writes = await metric(t, 'resident_store_operation_duration_seconds_count', 'operation="set"');
  const { dropped, suspended } = t.server.sessions.stats;
  // Either the drop holds (a new session, nothing written) or the hook was not told the
  // session ends: a hook that releases what the session holds on "dropped" must not see the
  // session come back from that very memento.
  assert.deepEqual(
    { resumedFromDropped: state.resumed && state.saved?.reason === 'dropped', storeWrites: writes, droppedCounters: [dropped, suspended.dropped] },
    { resumedFromDropped: false, storeWrites: 0, droppedCounters: [suspended.dropped, suspended.dropped] },
    `answer ${back.text}`,
  );
});


test('disk: a cookieless flood from one source, far beyond its budget, writes a bounded number of log lines at the default level (info)', { timeout: 60_000 }, async () => {
  const t = await start(2, { log: { level: 'info' }, sessions: { maxUnprovenPerIp: 10 } });
  const requests = 300;
  await pool(requests, 4, async () => {
    const reply = await fresh(`${t.url}/inc`, { localAddress: '127.0.0.2' });
    assert.ok(reply.status === 200 || reply.status === 429, `${reply.status} ${reply.text}`);
  });
  await t.settle();
  const events = new Map<string, number>();
  for (const line of t.logs) events.set(String(line.event), (events.get(String(line.event)) ?? 0) + 1);
  // The budget's own line is one per window; what else does each flood request cost the disk?
  assert.ok(t.logs.length < requests / 10, `${requests} cookieless requests wrote ${t.logs.length} log lines: ${JSON.stringify([...events])}`);
});

test('a kept unproven session that was checkpointed and then pushed out ("dropped") comes back from the memento of that suspend, not from the older checkpoint', { timeout: 30_000 }, async () => {
  const t = await start(1, { sessions: { maxUnprovenPerIp: 1, checkpointInterval: '100ms' }, metrics: { port: 0 } });
  const kept = await newSession(t, '/keep', '127.0.0.2');
  await waitFor(async () => (await metric(t, 'resident_store_operation_duration_seconds_count', 'operation="set"')) >= 1, 5000, 'a checkpoint');
  // Pushed out by the next first visit from the same address: onSessionSuspend(ctx, 'dropped').
  await newSession(t, '/inc', '127.0.0.2');
  await waitFor(() => t.server.sessions.stats.pushedOut === 1 && t.server.sessions.stats.suspending === 0, 5000, 'the push-out');
  const back = await fresh(`${t.url}/inc`, { headers: as(kept.id), localAddress: '127.0.0.2' });
  assert.equal(back.status, 200, back.text);
  const state = back.json<{ resumed: boolean; saved: unknown }>();
  // Ended ("dropped", nothing stored, README) means a new session here; kept ("saved like any
  // other") means the memento the 'dropped' hook returned. Not the record of a checkpoint taken
  // before the drop, which the drop left in the store and a later request adopts.
  assert.ok(
    cookieOf(back) !== kept.id || (state.saved as { reason?: string } | null)?.reason === 'dropped',
    `the dropped session came back from the checkpoint it left in the store: ${back.text}`,
  );
});

const ADMIN_TOKEN = 'redteam-hostile-token-0123456789';

test('admin api/sources: the count of a source over its unproven budget is the pushed-out and refused sessions (source-alarms.ts), not one report per thread', { timeout: 30_000 }, async () => {
  const t = await start(2, { sessions: { maxUnprovenPerIp: 4 }, admin: { token: ADMIN_TOKEN } });
  for (let i = 0; i < 60; i++) assert.equal((await fresh(`${t.url}/inc`, { localAddress: '127.0.0.2' })).status, 200);
  const { pushedOut, refusedNew } = t.server.sessions.stats;
  assert.ok(pushedOut >= 50, `the flood pushed out ${pushedOut}`);
  // Each thread reports its first event at once and the rest gathered once a second.
  let last = '';
  const listed = await waitFor(async () => {
    const reply = await send(`${t.server.adminUrl}api/sources`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
    last = reply.text;
    // This window's entry and, when the run crossed a window's end, the previous one's.
    const entries = reply.json<{ sources: Array<{ source: string; budget: string; count: number }> }>().sources.filter((s) => s.source === '127.0.0.2' && s.budget === 'unproven');
    const count = entries.reduce((sum, entry) => sum + entry.count, 0);
    return entries.length > 0 && count === pushedOut + refusedNew ? count : undefined;
  }, 5000, 'api/sources to count every push-out').catch(() => undefined);
  assert.equal(listed, pushedOut + refusedNew, `api/sources: ${last}`);
});

test('log flooding: a cookie presented from other addresses writes one ip-mismatch warn line per window, not one per request', { timeout: 30_000 }, async () => {
  const t = await start(2, { log: { level: 'warn' } });
  // The attacker's own session, then its cookie replayed from 100 addresses of its own.
  const own = await newSession(t, '/inc', '127.0.0.2');
  const requests = 100;
  for (let i = 0; i < requests; i++) {
    const reply = await fresh(`${t.url}/inc`, { headers: as(own.id), localAddress: `127.0.1.${i + 1}` });
    assert.equal(reply.status, 400);
  }
  await t.settle();
  const lines = t.logs.filter((line) => line.event === 'ip-mismatch').length;
  assert.ok(lines <= 2, `${requests} replays wrote ${lines} warn lines`);
});

for (const threads of [1, 2]) {
  test(`${threads} thread(s): with the cap full of proven users, a source whose new session is still busy gets 429 for more, and no further user leaves memory (README: "instead of pushing a real user out")`, { timeout: 30_000 }, async () => {
    const t = await start(threads, { sessions: { maxContexts: 4 } });
    const users: string[] = [];
    for (let i = 0; i < 4; i++) {
      const first = await newSession(t, '/inc', '127.0.0.3');
      // Proven: its cookie came back.
      const again = await fresh(`${t.url}/inc`, { headers: as(first.id), localAddress: '127.0.0.3' });
      assert.equal(again.json<{ proven: boolean }>().proven, true);
      users.push(first.id);
    }
    // A first visit from 127.0.0.2 holds no unproven session yet: it takes the least recently
    // active user's place (4D's rule), and keeps its request in flight.
    const slow = fresh(`${t.url}/slow?ms=1500`, { localAddress: '127.0.0.2' });
    await waitFor(() => t.server.sessions.stats.suspending === 0 && t.server.sessions.stats.created === 5, 5000, 'the first visit in');
    const more = await pool(10, 5, () => fresh(`${t.url}/inc`, { localAddress: '127.0.0.2' }));
    assert.deepEqual(
      more.map((reply) => `${reply.status} ${reply.headers['retry-after'] ?? '-'}`),
      Array.from({ length: 10 }, () => '429 1'),
      'each further new session of that source waits instead of evicting a user',
    );
    assert.equal((await slow).status, 200);
    // Users 1..3 never left memory; user 0 (the least recently active) made room for the first visit.
    for (const [i, id] of users.entries()) {
      const back = await fresh(`${t.url}/inc`, { headers: as(id), localAddress: '127.0.0.3' });
      assert.equal(back.status, 200, back.text);
      assert.equal(back.json<{ resumed: boolean }>().resumed, i === 0, `user ${i} resumed`);
    }
  });
}

test('the cap across threads: a flood whose own sessions are all busy on its home takes its own idle one on the other home, not an older new visitor\'s there (README: "the new client\'s own source\'s, then any other\'s")', { timeout: 30_000 }, async () => {
  // The per-source budget off, so that only the cap chooses; forged IDs naming a slot home each
  // new session there (see the "homed on one thread" case above).
  const t = await start(2, { sessions: { maxContexts: 8, maxUnprovenPerIp: 0 } });
  // A new visitor homed on slot 0 (from 127.0.0.2): unproven until its cookie comes back.
  const visitor = await fresh(`${t.url}/inc`, { headers: as(newSessionId(0)), localAddress: '127.0.0.2' });
  const id = cookieOf(visitor)!;
  // The flood (127.0.0.3): three idle sessions on slot 0, newer than the visitor's...
  for (let i = 0; i < 3; i++) assert.equal((await fresh(`${t.url}/inc`, { headers: as(newSessionId(0)), localAddress: '127.0.0.3' })).status, 200);
  // ...and four on slot 1, each busy with a slow request. Eight live: the cap.
  const busy = pool(4, 4, () => fresh(`${t.url}/slow?ms=1500`, { headers: as(newSessionId(1)), localAddress: '127.0.0.3' }));
  await waitFor(() => t.server.sessions.stats.live === 8 && t.server.sessions.stats.inFlight === 4, 5000, 'the cap filled, four busy on slot 1');
  // One more first visit of the flood homed on slot 1: none idle there, so the place comes from slot 0.
  assert.equal((await fresh(`${t.url}/inc`, { headers: as(newSessionId(1)), localAddress: '127.0.0.3' })).status, 200);
  await busy;
  const back = await fresh(`${t.url}/inc`, { headers: as(id), localAddress: '127.0.0.2' });
  assert.equal(back.status, 200, back.text);
  assert.deepEqual({ session: cookieOf(back) ?? id, n: back.json<{ n: number }>().n }, { session: id, n: 2 }, 'the visitor keeps the session of its first page');
});

test('one source with more requests in flight than maxContexts: its excess gets 429 (never 503), and a proven user stays live throughout (RELIABILITY D1)', { timeout: 60_000 }, async () => {
  const t = await start(2, { sessions: { maxContexts: 8 } });
  const user = await newSession(t, '/inc', '127.0.0.3');
  assert.equal((await fresh(`${t.url}/inc`, { headers: as(user.id), localAddress: '127.0.0.3' })).json<{ proven: boolean }>().proven, true);
  const statuses = new Map<number, number>();
  let n = 2;
  for (let round = 0; round < 5; round++) {
    // 20 slow first visits at once from one address: more than the cap holds.
    const flood = pool(20, 20, async () => {
      const reply = await fresh(`${t.url}/slow?ms=200`, { localAddress: '127.0.0.2' });
      statuses.set(reply.status, (statuses.get(reply.status) ?? 0) + 1);
    });
    const back = await fresh(`${t.url}/inc`, { headers: as(user.id), localAddress: '127.0.0.3' });
    await flood;
    assert.deepEqual({ n: back.json<{ n: number }>().n, resumed: back.json<{ resumed: boolean }>().resumed }, { n: ++n, resumed: false }, `round ${round}`);
  }
  assert.deepEqual([...statuses.keys()].filter((status) => status !== 200 && status !== 429), [], `flood statuses ${JSON.stringify([...statuses])}`);
  assert.ok((statuses.get(429) ?? 0) > 0, 'the excess was refused');
});

for (const threads of [1, 2]) {
  test(`${threads} thread(s): a cap no larger than its active users, and a flood: the flood keeps no place by coming back as a "first visit" each time a returning user displaced its session`, { timeout: 60_000 }, async () => {
    const t = await start(threads, { sessions: { maxContexts: 8 } });
    const users: string[] = [];
    for (let i = 0; i < 8; i++) {
      const first = await newSession(t, '/inc', '127.0.0.3');
      await fresh(`${t.url}/inc`, { headers: as(first.id), localAddress: '127.0.0.3' });
      users.push(first.id);
    }
    let going = true;
    const flood = new Map<number, number>();
    const real = Promise.all(
      users.map(async (id) => {
        while (going) assert.equal((await fresh(`${t.url}/inc`, { headers: as(id), localAddress: '127.0.0.3' })).status, 200);
      }),
    );
    const flooding = pool(4, 4, async () => {
      while (going) {
        const { status } = await fresh(`${t.url}/inc`, { localAddress: '127.0.0.2' });
        flood.set(status, (flood.get(status) ?? 0) + 1);
      }
    });
    await new Promise((resolve) => setTimeout(resolve, 3000));
    going = false;
    await Promise.all([real, flooding]);
    // Without the rule, each displaced flood session came back as a first visit and pushed
    // another user out: ~2,000 flood sessions admitted in 3 s, ~3,500 user resumes.
    const admitted = flood.get(200) ?? 0;
    assert.ok(admitted <= 50, `flood statuses ${JSON.stringify([...flood])}`);
    assert.deepEqual([...flood.keys()].filter((status) => status !== 200 && status !== 429), [], `flood statuses ${JSON.stringify([...flood])}`);
  });
}
