/**
 * D2, guessed IDs (issue 12 "Tests", README "Hostile traffic", "Guessed IDs"): 100,000 random
 * well-formed session IDs from one source. The README's bound: one budget of
 * `maxUnknownIdsPerIp` store lookups per source and `budgetWindow` for every thread together
 * (the main thread keeps it, no per-thread share), up to twice it across a window's boundary;
 * no store write ever; one `id-guessing` warn line per source and window.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { newSessionId } from '../src/contexts/ids.ts';
import { metric } from './edge-helpers.ts';
import { FLOOD, floodOf, hostileServers, MAX_CONTEXTS, storedRows, storeWrites } from './hostile-helpers.ts';

const start = hostileServers();
const BUDGET = 100;
const WINDOW_MS = 60 * 60_000;
const GUESSER = '127.0.0.50';

const lookups = (t: Parameters<typeof metric>[0], lookedUp: boolean) => metric(t, 'resident_unknown_ids_total', `looked_up="${lookedUp}"`);
const storeCalls = (t: Parameters<typeof metric>[0], operation: string) => metric(t, 'resident_store_operation_duration_seconds_count', `operation="${operation}"`);

test('D2: 100,000 random unknown IDs from one source cost at most maxUnknownIdsPerIp store reads per window, no store write, and one id-guessing line', { timeout: 120_000 }, async (t) => {
  const { t: server, dbPath } = await start({ maxUnknownIdsPerIp: BUDGET, budgetWindow: '1h' });
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
  const rows = storedRows(dbPath);
  const figures = {
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
