/**
 * The two floods of issue 12 "Tests" that run on every store (SQLite, Redis, PostgreSQL), as
 * functions that declare the test for one store; each test file declares one flood, since one
 * took 10 to 48 s on a shared two-core machine and a file should stay within a minute.
 *
 * D1 (RELIABILITY.md; README "Hostile traffic"): 100,000 cookieless requests from one source
 * beside a proven user from another address.
 *
 * D2, guessed IDs (README "Hostile traffic", "Guessed IDs"): 100,000 random well-formed session
 * IDs from one source. The README's bound: one budget of `maxUnknownIdsPerIp` store lookups per
 * source and `budgetWindow` for every thread together (the main thread keeps it, no per-thread
 * share), up to twice it across a window's boundary; no store write ever; one `id-guessing`
 * warn line per source and window.
 *
 * A store whose service does not answer here fails on CI and is skipped elsewhere, with the reason.
 */
import assert from 'node:assert/strict';
import { test, type TestContext } from 'node:test';
import { newSessionId } from '../src/contexts/ids.ts';
import { metric } from './edge-helpers.ts';
import { skipOrFailOnCi } from './helpers.ts';
import { assertFloodContained, FLOOD, floodOf, hostileServers, MAX_CONTEXTS, provenUser, storeUnavailable, storeWrites, type HostileServer, type HostileStore } from './hostile-helpers.ts';

const FLOOD_TEST = { timeout: 120_000 };

/**
 * `start` for `store`, and a way for a test to get one of its servers, or undefined after
 * skipping (or failing on CI) when the store's service does not answer.
 */
function serversOn(store: HostileStore) {
  const start = hostileServers(store);
  return async (t: TestContext, sessions?: Parameters<typeof start>[0]): Promise<HostileServer | undefined> => {
    const unavailable = await storeUnavailable(store);
    if (unavailable !== undefined) return void skipOrFailOnCi(t, unavailable);
    return start(sessions);
  };
}

/** D1 from one source on `store`. */
export function oneSourceFlood(store: HostileStore): void {
  const start = serversOn(store);
  test(`D1 (${store} store): 100,000 cookieless requests from one source keep live contexts within the cap, store nothing, and leave a proven user from another address live`, FLOOD_TEST, async (t) => {
    const hostile = await start(t);
    if (!hostile) return;
    const user = await provenUser(hostile.t, '127.0.0.2');
    const result = await floodOf(hostile.t, { sources: ['127.0.0.3'], total: FLOOD, sockets: 48 });
    await assertFloodContained(t, hostile, result, await user.stop(), ['127.0.0.3']);
  });
}

const BUDGET = 100;
const WINDOW_MS = 60 * 60_000;
const GUESSER = '127.0.0.50';

const lookups = (t: Parameters<typeof metric>[0], lookedUp: boolean) => metric(t, 'resident_unknown_ids_total', `looked_up="${lookedUp}"`);
const storeCalls = (t: Parameters<typeof metric>[0], operation: string) => metric(t, 'resident_store_operation_duration_seconds_count', `operation="${operation}"`);

/** D2 on `store`. */
export function guessedIdFlood(store: HostileStore): void {
  const start = serversOn(store);
  test(`D2 (${store} store): 100,000 random unknown IDs from one source cost at most maxUnknownIdsPerIp store reads per window, no store write, and one id-guessing line`, FLOOD_TEST, async (t) => {
    const hostile = await start(t, { maxUnknownIdsPerIp: BUDGET, budgetWindow: '1h' });
    if (!hostile) return;
    const server = hostile.t;
    const before = { existing: await storeCalls(server, 'existing'), get: await storeCalls(server, 'get'), writes: await storeWrites(server) };
    const began = Date.now();
    const sampled: string[] = [];
    const guess = (i: number) => {
      const id = newSessionId();
      if (i % 1000 === 0) sampled.push(id);
      return [`Cookie: RSID=${id}`];
    };
    const result = await floodOf(server, { sources: [GUESSER], total: FLOOD, sockets: 48, headers: guess });
    // Windows are fixed (README): a flood that crosses a boundary may spend the budget twice.
    const windows = Math.floor(Date.now() / WINDOW_MS) - Math.floor(began / WINDOW_MS) + 1;
    await server.settle();
    const lookedUp = await lookups(server, true);
    const unread = await lookups(server, false);
    const reads = { existing: (await storeCalls(server, 'existing')) - before.existing, get: (await storeCalls(server, 'get')) - before.get };
    const writes = (await storeWrites(server)) - before.writes;
    const guessing = server.logs.filter((line) => line.event === 'id-guessing');
    const rows = await hostile.storedRows();
    const figures = {
      store,
      requests: FLOOD,
      ms: result.ms,
      windows,
      statuses: Object.fromEntries(result.statuses),
      resent: result.resent,
      lookedUp,
      unread,
      storeReads: reads,
      storeWrites: writes,
      storedRows: Object.fromEntries(rows),
      idGuessingLines: guessing.map((line) => ({ source: line.source, windowMs: line.windowMs })),
      maxLiveSampled: result.maxLive,
    };
    t.diagnostic(JSON.stringify(figures));

    const unexpected = [...result.statuses].filter(([status]) => status !== '200' && status !== '429 RESIDENT_ERR_TOO_MANY_NEW');
    assert.deepEqual(unexpected, [], 'every guess got 200 (a new session, as without a cookie) or the documented 429');
    assert.equal(result.resent, 0, 'requests whose connection closed unanswered');
    // Every guess was an ID not held in memory, counted once either way.
    assert.equal(lookedUp + unread, FLOOD, 'every unknown ID is counted as looked up or not');
    assert.ok(lookedUp >= BUDGET && lookedUp <= BUDGET * windows, `${lookedUp} IDs looked up; the budget is ${BUDGET} per window (${windows} window(s))`);
    // The store calls themselves: a lookup may carry several IDs, never more calls than IDs.
    assert.ok(reads.existing >= 1 && reads.existing <= lookedUp, `store existing() calls: ${reads.existing}`);
    assert.equal(reads.get, 0, 'no record was found, so none was read');
    assert.equal(writes, 0, 'unknown IDs cause no store write');
    assert.equal(rows.size, 0, 'the store holds no record');
    assert.ok(result.maxLive <= MAX_CONTEXTS, `live contexts reached ${result.maxLive}`);
    assert.ok(guessing.every((line) => line.source === GUESSER), 'the line names the source');
    assert.ok(guessing.length >= 1 && guessing.length <= windows, `${guessing.length} id-guessing lines in ${windows} window(s)`);
    // Logged by source, never with the IDs (README); a sample of them is checked against the log.
    const leaked = sampled.filter((id) => server.rawLogs().includes(id));
    assert.deepEqual(leaked, [], 'no guessed ID in the log');
  });
}
