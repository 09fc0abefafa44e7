/**
 * Crashes against the shared stores (RELIABILITY.md E1, E2, E3; issue 13), with real processes,
 * real signals and the machine's real Redis and PostgreSQL, nothing mocked:
 *  - E1/E2 at the store level (crash-kills.ts): a child process writes records through the
 *    shipped PostgresStore / RedisStore as fast as it can and is killed with SIGKILL at a random
 *    instant, ≥ 100 times per store; after each kill every record read back through the shipped
 *    store is whole, never older than its last acknowledged write, never newer than the last
 *    attempted one; nothing is quarantined, no stray record appears, and in Redis the indexes
 *    (all IDs, each user's IDs) hold exactly the records there are (and, after the last kill, no
 *    other key is under the prefix).
 *  - E2 and E3 through the CLI, as crash.test.ts does for SQLite and the file store.
 * Each lane and CLI test has a PostgreSQL table or Redis key prefix of its own, removed after.
 * (Killing the Redis server itself is redis-crash.test.ts.)
 */
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { tableNames } from '../../src/stores/postgres-schema.ts';
import { PostgresStore } from '../../src/stores/postgres.ts';
import { RedisStore } from '../../src/stores/redis.ts';
import type { ContextStore, SessionRecord } from '../../src/stores/store.ts';
import { skipOrFailOnCi } from '../helpers.ts';
import { cliCrashTests } from './crash-cli.ts';
import { killTest, type CrashTarget } from './crash-kills.ts';
import { POSTGRES_URL, postgresUnavailable, tempTable, withClient } from './postgres-helpers.ts';
import { REDIS_URL, rawClient, redisUnavailable, removePrefixes, uniquePrefix } from './redis-helpers.ts';

const CALL_TIMEOUT_MS = 15_000;
const pgMissing = (await postgresUnavailable()) ?? undefined;
const redisMissing = await redisUnavailable();

const prefixes: string[] = [];
// Registered after crash-cli.ts's hook, which kills any CLI server still running.
after(() => (redisMissing === undefined ? removePrefixes(prefixes) : undefined));

function newPrefix(): string {
  const prefix = uniquePrefix();
  prefixes.push(prefix);
  return prefix;
}

/** Every record of `ids` through `store`, which is closed after; any record reported corrupt fails. */
async function readAll(open: (onCorrupt: (id: string, reason: string) => void) => Promise<ContextStore>, ids: string[]) {
  const corrupt: string[] = [];
  const store = await open((id, reason) => corrupt.push(`${id}: ${reason}`));
  const records = new Map<string, SessionRecord>();
  try {
    for (const id of ids) {
      const record = await store.get(id);
      if (record) records.set(id, record);
    }
  } finally {
    await store.close();
  }
  assert.deepEqual(corrupt, [], 'no record reported corrupt');
  return records;
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL

/**
 * PostgreSQL runs a statement to its end even when its client is gone, and only then sees the
 * closed socket: waits until no backend that ran a statement on `table` is left (the dead
 * writer's, and the last read-back's closing ones). True when a statement was still running.
 */
async function postgresSettled(table: string): Promise<boolean> {
  let running = false;
  const deadline = Date.now() + 20_000;
  await withClient(async (client) => {
    for (;;) {
      const { rows } = await client.query<{ active: boolean }>(
        `SELECT state = 'active' AS active FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND query LIKE $1`,
        [`%${table}%`],
      );
      if (rows.some((row) => row.active)) running = true;
      if (rows.length === 0) return;
      assert.ok(Date.now() < deadline, `${rows.length} backends on ${table} still there 20 s after the writer was killed`);
      await sleep(10);
    }
  });
  return running;
}

/** What a restarted server would read, then the table itself: no stray row, nothing quarantined. */
async function postgresReadBack(table: string, ids: string[]) {
  const records = await readAll((onCorrupt) => PostgresStore.open({ url: POSTGRES_URL, table, callTimeout: CALL_TIMEOUT_MS, onCorrupt }), ids);
  const names = tableNames(table);
  await withClient(async (client) => {
    const { rows } = await client.query<{ id: string }>(`SELECT id FROM ${names.sessions}`);
    assert.deepEqual(rows.map((row) => row.id).sort(), [...records.keys()].sort(), 'the table holds exactly the records read back');
    const quarantined = await client.query(`SELECT id FROM ${names.quarantine}`);
    assert.equal(quarantined.rowCount, 0, 'nothing quarantined');
  });
  return { records };
}

function postgresLane(): CrashTarget {
  const table = tempTable();
  return { store: ['postgres', POSTGRES_URL, table], settle: () => postgresSettled(table), readBack: (ids) => postgresReadBack(table, ids) };
}

// ---------------------------------------------------------------------------------------------
// Redis

/**
 * What a restarted server would read, then the indexes behind the store's back: the ID index and
 * each record's user index hold exactly the records read back; no expiry index, no quarantine.
 */
async function redisReadBack(prefix: string, ids: string[]) {
  const records = await readAll((onCorrupt) => RedisStore.open({ url: REDIS_URL, prefix, callTimeout: CALL_TIMEOUT_MS, onCorrupt }), ids);
  const raw = await rawClient();
  try {
    assert.deepEqual((await raw.zRange(`${prefix}ids`, 0, -1)).sort(), [...records.keys()].sort(), 'the ID index');
    for (const [user, holders] of usersOf(records)) {
      assert.deepEqual((await raw.zRange(`${prefix}u:${user}`, 0, -1)).sort(), holders.sort(), `the index of ${user}`);
    }
    const strays = [`${prefix}exp`, ...ids.map((id) => `${prefix}q:${id}`)];
    assert.equal(await raw.exists(strays), 0, 'no expiry index, nothing quarantined');
  } finally {
    raw.destroy();
  }
  return { records };
}

/** Each user and the IDs of the records that name it. */
function usersOf(records: Map<string, SessionRecord>): Map<string, string[]> {
  const users = new Map<string, string[]>();
  for (const record of records.values()) users.set(record.userId!, [...(users.get(record.userId!) ?? []), record.id]);
  return users;
}

/**
 * After the lane's last kill, every key under the prefix (SCAN reads the whole shared keyspace,
 * too slow for every kill while other tests fill it): the records and their indexes, nothing
 * else. A user index a kill left stale would still be there: nothing removes it later.
 */
async function redisKeysExact(prefix: string, ids: string[]): Promise<void> {
  const { records } = await redisReadBack(prefix, ids);
  const raw = await rawClient();
  try {
    const keys: string[] = [];
    for await (const batch of raw.scanIterator({ MATCH: `${prefix}*`, COUNT: 1000 })) keys.push(...batch.map((key) => key.slice(prefix.length)));
    const expected = ['ids', ...[...records.keys()].map((id) => `s:${id}`), ...[...usersOf(records).keys()].map((user) => `u:${user}`)];
    assert.deepEqual(keys.sort(), expected.sort(), 'the keys under the prefix: the records and their indexes, nothing else');
  } finally {
    raw.destroy();
  }
}

function redisLane(): CrashTarget {
  const prefix = newPrefix();
  return { store: ['redis', REDIS_URL, prefix], readBack: (ids) => redisReadBack(prefix, ids), finish: (ids) => redisKeysExact(prefix, ids) };
}

// ---------------------------------------------------------------------------------------------

describe('E1/E2: kill -9 of a process writing to a shared store, at a random instant during heavy writes, ≥ 100 times per store', () => {
  test('postgres: every record whole, none older than its last acknowledged write, no stray row', { timeout: 480_000 }, async (t) => {
    if (pgMissing) return skipOrFailOnCi(t, pgMissing);
    await killTest(t, 'postgres', postgresLane);
  });

  test('redis: every record whole, none older than its last acknowledged write, indexes exact', { timeout: 480_000 }, async (t) => {
    if (redisMissing) return skipOrFailOnCi(t, redisMissing);
    await killTest(t, 'redis', redisLane);
  });
});

cliCrashTests('postgres', () => ({ kind: 'postgres', url: POSTGRES_URL, table: tempTable() }), pgMissing);
cliCrashTests('redis', () => ({ kind: 'redis', url: REDIS_URL, prefix: newPrefix() }), redisMissing);
