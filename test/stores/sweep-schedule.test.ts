/**
 * The store sweep's schedule (src/stores/sweep-schedule.ts): each wait is the interval times a
 * factor in [0.5, 1.5), so nodes sharing a store do not sweep in step (Kinto#1308); a slow sweep
 * never overlaps the next; stop() ends it, also mid-sweep. Then two real servers sweeping one
 * PostgreSQL table together: every expired record goes, and neither reports a store error.
 */
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, test } from 'node:test';
import { newSessionId } from '../../src/contexts/ids.ts';
import { PostgresStore } from '../../src/stores/postgres.ts';
import { scheduleSweeps } from '../../src/stores/sweep-schedule.ts';
import { crashRecord } from '../fixtures/crash/records.ts';
import { skipOrFailOnCi, startTestServer, waitFor, type TestServer } from '../helpers.ts';
import { POSTGRES_URL, postgresUnavailable, tempTable, withClient } from './postgres-helpers.ts';
import { STORE_HOOKS, cleanup, logsWith } from './server-helpers.ts';
import { tableNames } from '../../src/stores/postgres-schema.ts';

after(cleanup);

/** When each of the first `runs` sweeps started, in ms after scheduling. */
async function startTimes(interval: number, random: () => number, runs: number): Promise<number[]> {
  const t0 = performance.now();
  const times: number[] = [];
  const schedule = scheduleSweeps(interval, async () => {
    times.push(performance.now() - t0);
  }, random);
  await waitFor(async () => times.length >= runs, 5000, `${runs} sweeps`);
  schedule.stop();
  return times;
}

test('each wait is the interval times a factor drawn from [0.5, 1.5): never sooner than the draw says', async () => {
  const [low0 = 0, , low2 = 0] = await startTimes(100, () => 0, 3);
  const [high0 = 0, , high2 = 0] = await startTimes(100, () => 0.999, 3);
  // Timers never fire early; on a loaded machine they may fire late, so only the floors are exact.
  assert.ok(low0 >= 49 && low2 >= 3 * 49, `draw 0: first at ${low0} ms, third at ${low2} ms`);
  assert.ok(high0 >= 149 && high2 >= 3 * 149, `draw 0.999: first at ${high0} ms, third at ${high2} ms`);
  // Draws of 0 wait half the interval: three sweeps well before three intervals.
  assert.ok(low2 < high2, `draw 0 (${Math.round(low2)} ms) sweeps sooner than 0.999 (${Math.round(high2)} ms)`);
});

test('ten schedules started together with Math.random sweep at different times', async () => {
  const firsts = await Promise.all(Array.from({ length: 10 }, () => startTimes(400, Math.random, 1).then(([first = 0]) => first)));
  const spread = Math.max(...firsts) - Math.min(...firsts);
  // Ten draws all within 40 ms of each other (a tenth of the 400 ms range) is a 1-in-10^8 chance.
  assert.ok(spread > 40, `first sweeps at ${firsts.map((ms) => Math.round(ms)).join(', ')} ms`);
  for (const first of firsts) assert.ok(first >= 199, `${first} ms is sooner than half the interval`);
});

test('a sweep slower than the interval is never overlapped by the next; stop() during a sweep ends the schedule', async () => {
  let running = 0;
  let most = 0;
  let runs = 0;
  const schedule = scheduleSweeps(10, async () => {
    runs++;
    running++;
    most = Math.max(most, running);
    await sleep(60);
    running--;
  });
  await waitFor(async () => runs >= 4, 5000, 'four sweeps');
  assert.equal(most, 1, 'two sweeps ran at once');
  await waitFor(async () => running === 1, 2000, 'a sweep under way');
  schedule.stop();
  const stoppedAt = runs;
  await sleep(200);
  assert.equal(runs, stoppedAt, 'a sweep started after stop()');
});

test('a sweep that rejects does not end the schedule', async () => {
  let runs = 0;
  const schedule = scheduleSweeps(10, async () => {
    runs++;
    throw new Error('the store is down');
  });
  try {
    await waitFor(async () => runs >= 3, 5000, 'sweeps after a failing one');
  } finally {
    schedule.stop();
  }
});

const unavailable = await postgresUnavailable();
if (unavailable) {
  test('two nodes sweeping one PostgreSQL table', (t) => skipOrFailOnCi(t, unavailable));
} else {
  test('two nodes sweeping one PostgreSQL table: every expired record goes, a live one stays, no store error on either', { timeout: 60_000 }, async () => {
    const table = tempTable();
    const config = { workers: { threads: 1 }, hooks: STORE_HOOKS, store: { kind: 'postgres' as const, url: POSTGRES_URL, table, sweepInterval: '200ms' } };
    const nodes: TestServer[] = [await startTestServer(config), await startTestServer(config)];
    const store = await PostgresStore.open({ url: POSTGRES_URL, table, callTimeout: 5_000 });
    try {
      const expired = Array.from({ length: 2_500 }, (_, i) => ({ ...crashRecord(newSessionId(), i), owner: null, fence: 0, expiresAt: Date.now() - 1_000 }));
      const kept = { ...crashRecord(newSessionId(), 9_999), owner: null, fence: 0, expiresAt: Date.now() + 3_600_000 };
      for (const record of [...expired, kept]) await store.set(record);
      const count = async () => Number((await withClient((c) => c.query(`SELECT count(*) AS n FROM ${tableNames(table).sessions}`))).rows[0].n);
      await waitFor(async () => (await count()) === 1, 20_000, 'the expired records to be swept');
      assert.deepEqual(await store.get(kept.id), kept);
      const removed = nodes.map((node) => logsWith(node.logs, 'store-sweep').reduce((sum, line) => sum + Number(line.removed), 0));
      assert.ok(removed.reduce((a, b) => a + b) >= expired.length, `removed ${removed.join(' + ')} of ${expired.length}`);
      for (const node of nodes) assert.deepEqual(logsWith(node.logs, 'store-error'), []);
    } finally {
      await store.close();
      for (const node of nodes) await node.close();
    }
  });
}
