/**
 * E1/E2 for the Redis store: a Redis server this test owns (AOF on, `appendfsync always`: the
 * machine's shared Redis keeps nothing on disk) is killed with SIGKILL at a random instant during
 * heavy writes through the shipped RedisStore, and started again on the same files, ≥ 100 times.
 * After each restart every record is whole (checkCrashRecord), never older than its last
 * acknowledged write, never newer than the last attempted one, and the indexes (all IDs, each
 * user's IDs) hold exactly the records there are: a write and its indexes land together or not
 * at all. The store itself is opened once and reconnects after every crash by itself.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, test } from 'node:test';
import { createClient } from 'redis';
import { newSessionId } from '../../src/contexts/ids.ts';
import { RedisStore } from '../../src/stores/redis.ts';
import { checkReadBack, crashRecord } from '../fixtures/crash/records.ts';
import { freePort, skipOrFailOnCi, waitFor } from '../helpers.ts';
import { uniquePrefix } from './redis-helpers.ts';

/** CRASH_KILLS lowers it while developing only. */
const KILLS = Number(process.env.CRASH_KILLS ?? 100);
const IDS = 16;
const KILL_AFTER_MS = { min: 10, max: 150 };

const hasRedisServer = spawnSync('redis-server', ['--version']).status === 0;
const dir = mkdtempSync(join(tmpdir(), 'resident-redis-crash-'));
let server: ChildProcess | undefined;
after(() => {
  server?.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
});

/** Starts redis-server on `port` with its files in `dir` (the same files after every crash). */
async function startRedis(port: number): Promise<void> {
  server = spawn(
    'redis-server',
    ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--appendonly', 'yes', '--appendfsync', 'always', '--save', '', '--protected-mode', 'no'],
    { stdio: 'ignore' },
  );
  await waitFor(
    async () => {
      const client = createClient({ url: `redis://127.0.0.1:${port}`, socket: { reconnectStrategy: false, connectTimeout: 500 } });
      client.on('error', () => {});
      try {
        await client.connect();
        // LOADING until the AOF is read back: only then is the data set complete.
        return (await client.ping()) === 'PONG';
      } catch {
        return false;
      } finally {
        client.destroy();
      }
    },
    10_000,
    'redis-server to answer',
  );
}

async function killRedis(): Promise<void> {
  const child = server!;
  child.kill('SIGKILL');
  if (child.exitCode === null && child.signalCode === null) await once(child, 'exit');
}

test('E1/E2: redis-server killed -9 at random instants during heavy writes, ≥ 100 times: every acknowledged record there and whole, indexes exact', { timeout: 300_000 }, async (t) => {
  if (!hasRedisServer) return skipOrFailOnCi(t, 'redis-server is not installed');
  const port = await freePort();
  await startRedis(port);
  const url = `redis://127.0.0.1:${port}`;
  const prefix = uniquePrefix();
  const corrupt: string[] = [];
  const store = await RedisStore.open({ url, prefix, callTimeout: 2000, onCorrupt: (id, reason) => corrupt.push(`${id}: ${reason}`) });
  const raw = createClient({ url, socket: { reconnectStrategy: 100 } });
  raw.on('error', () => {});
  await raw.connect();
  const ids = Array.from({ length: IDS }, () => newSessionId());
  const floor = new Map<string, number>();
  const ceiling = new Map<string, number>();
  const stats = { kills: 0, acks: 0, killsMidWrite: 0, landedUnacked: 0 };
  let nextSeq = 1;
  try {
    for (let kill = 0; kill < KILLS; kill++) {
      let firstAck: () => void = () => {};
      const acked = new Promise<void>((resolve) => (firstAck = resolve));
      const inFlight = new Set<string>();
      // One write loop per ID, until Redis is gone.
      const loops = ids.map(async (id) => {
        for (;;) {
          const seq = nextSeq++;
          ceiling.set(id, seq);
          inFlight.add(id);
          try {
            await store.set(crashRecord(id, seq));
          } catch {
            return;
          }
          inFlight.delete(id);
          floor.set(id, Math.max(floor.get(id) ?? 0, seq));
          stats.acks++;
          firstAck();
        }
      });
      await acked;
      await sleep(KILL_AFTER_MS.min + Math.random() * (KILL_AFTER_MS.max - KILL_AFTER_MS.min));
      await killRedis();
      if (inFlight.size > 0) stats.killsMidWrite++;
      await Promise.all(loops);
      await startRedis(port);
      await waitFor(() => store.ping().then(() => true, () => false), 10_000, 'the store to reconnect');

      const where = `kill #${kill}`;
      const found = new Map<string, { seq: number; userId: string }>();
      for (const id of ids) {
        const record = await store.get(id);
        const low = floor.get(id);
        const seq = checkReadBack(record, id, low, ceiling.get(id), where);
        if (seq === undefined) continue;
        if (low === undefined || seq > low) stats.landedUnacked++;
        floor.set(id, seq);
        found.set(id, { seq, userId: `user-${seq}` });
      }
      // The indexes as Redis holds them, read behind the store's back (SCAN over this test's own prefix).
      assert.deepEqual((await raw.zRange(`${prefix}ids`, 0, -1)).sort(), [...found.keys()].sort(), `${where}: the ID index`);
      const byUser: string[] = [];
      for await (const keys of raw.scanIterator({ MATCH: `${prefix}u:*`, COUNT: 1000 })) {
        for (const key of keys) for (const id of await raw.zRange(key, 0, -1)) byUser.push(`${key.slice(prefix.length + 2)} ${id}`);
      }
      assert.deepEqual(byUser.sort(), [...found].map(([id, { userId }]) => `${userId} ${id}`).sort(), `${where}: the user indexes`);
      stats.kills++;
    }
  } finally {
    raw.destroy();
    await store.close();
  }
  t.diagnostic(JSON.stringify(stats));
  assert.deepEqual(corrupt, [], 'nothing reported corrupt');
  assert.ok(stats.kills >= KILLS, `${stats.kills} kills`);
  assert.ok(stats.killsMidWrite >= stats.kills / 2, `only ${stats.killsMidWrite} of ${stats.kills} kills hit a write in flight`);
});
