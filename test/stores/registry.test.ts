/**
 * The cluster registry on the machine's real Redis and PostgreSQL (registry-contract.ts), each
 * on a prefix or table of its own; then what only one store has: a damaged Redis record, a Redis
 * out of memory, a PostgreSQL claim whose connection dies mid-call (RELIABILITY E9).
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { after, test, type TestContext } from 'node:test';
import pg from 'pg';
import { createClient, WatchError, type RedisClientType } from 'redis';
import { PostgresRegistry } from '../../src/cluster/postgres-registry.ts';
import { RedisRegistry } from '../../src/cluster/redis-registry.ts';
import type { NodeLease } from '../../src/cluster/registry.ts';
import { ResidentError } from '../../src/errors.ts';
import { PostgresStore } from '../../src/stores/postgres.ts';
import { tableNames } from '../../src/stores/postgres-schema.ts';
import { RedisStore } from '../../src/stores/redis.ts';
import type { ContextStore } from '../../src/stores/store.ts';
import { freePort, skipOrFailOnCi, waitFor } from '../helpers.ts';
import { record } from './contract.ts';
import { POSTGRES_URL, tempTable, withClient } from './postgres-helpers.ts';
import { REDIS_URL } from './redis-helpers.ts';
import { registryContract, type RegistrySubject } from './registry-contract.ts';
import { withRedis } from './shared-subjects.ts';
import { sharedStore, unavailableReason } from './shared-helpers.ts';
import { TcpProxy } from './tcp-proxy.ts';

const opened: ContextStore[] = [];
after(async () => {
  for (const store of opened) await store.close();
});

async function openRedis(on?: string): Promise<RegistrySubject & { store: RedisStore; prefix: string }> {
  const { url, name } = on === undefined ? sharedStore('redis') : { url: REDIS_URL, name: on };
  const store = await RedisStore.open({ url, prefix: name, callTimeout: 5_000 });
  opened.push(store);
  // WATCH: EXEC is refused (a WatchError) when anything wrote the key meanwhile.
  const wrote = (id: string, during: () => Promise<unknown>) =>
    withRedis(async (redis) => {
      await redis.watch(`${name}s:${id}`);
      await during();
      return redis
        .multi()
        .ping()
        .exec()
        .then(
          () => false,
          (error: Error) => (error instanceof WatchError ? true : Promise.reject(error)),
        );
    });
  return { store, registry: new RedisRegistry(store), wrote, prefix: name, peer: () => openRedis(name) };
}

async function openPostgres(url?: string, on?: string): Promise<RegistrySubject & { store: PostgresStore; table: string }> {
  const name = on ?? tempTable();
  const store = await PostgresStore.open({ url: url ?? POSTGRES_URL, table: name, callTimeout: 8_000 });
  opened.push(store);
  // xmin: the transaction that wrote the row's current version.
  const version = async (id: string) =>
    (await withClient((client) => client.query<{ xmin: string }>(`SELECT xmin::text FROM ${tableNames(name).sessions} WHERE id = $1`, [id]))).rows[0]?.xmin;
  const wrote = async (id: string, during: () => Promise<unknown>) => {
    const before = await version(id);
    await during();
    return (await version(id)) !== before;
  };
  return { store, registry: new PostgresRegistry(store), wrote, table: name, peer: () => openPostgres(url, name) };
}

registryContract({ kind: 'redis', unavailable: () => unavailableReason('redis'), open: openRedis });
registryContract({ kind: 'postgres', unavailable: () => unavailableReason('postgres'), open: () => openPostgres() });

const lease = (node: string): NodeLease => ({ owner: `${node}#${process.pid}-${Math.random().toString(36).slice(2)}`, nodeId: node, url: `http://${node}:7000/` });

test('redis: a damaged record (another Redis type, a hash that is not a record) is quarantined by a claim and reads as missing', async (t) => {
  const why = await unavailableReason('redis');
  if (why) return skipOrFailOnCi(t, why);
  const corrupt: string[] = [];
  const { url, name } = sharedStore('redis');
  const store = await RedisStore.open({ url, prefix: name, callTimeout: 5_000, onCorrupt: (id) => corrupt.push(id) });
  opened.push(store);
  const registry = new RedisRegistry(store);
  const a = lease('a');
  await registry.acquire(a, 60_000);
  const [list, hash, fence] = [record(), record(), record()];
  await withRedis(async (redis) => {
    await redis.rPush(`${name}s:${list.id}`, 'junk');
    await redis.hSet(`${name}s:${hash.id}`, { clientIp: 'x', fence: '1' });
    await redis.hSet(`${name}s:${fence.id}`, { clientIp: 'x', fence: '-1' });
  });
  for (const damaged of [list, hash, fence]) {
    assert.deepEqual(await registry.claim(damaged.id, a.owner), { kind: 'missing' });
    assert.equal(await registry.locate(damaged.id), undefined);
  }
  assert.deepEqual(corrupt, [list.id, hash.id, fence.id]);
  await withRedis(async (redis) => {
    for (const damaged of [list, hash, fence]) {
      assert.equal(await redis.exists(`${name}s:${damaged.id}`), 0, 'moved aside');
      assert.equal(await redis.exists(`${name}q:${damaged.id}`), 1);
    }
  });
  const good = record();
  await store.set(good);
  assert.equal((await registry.claim(good.id, a.owner)).kind, 'ours', 'the store goes on');
  // A lease key of another type is no lease: its owner's records are claimable, and nodes() skips it.
  const b = lease('b');
  await withRedis((redis) => redis.hSet(`${name}lease:${b.owner}`, { owner: b.owner }));
  await store.set({ ...good, id: record().id, owner: b.owner, fence: 1 });
  assert.deepEqual((await registry.nodes()).map((n) => n.owner), [a.owner]);
  assert.equal(await registry.lease(b.owner), undefined);
  assert.equal(await registry.renew(b.owner, 1000), false);
});

/** A redis-server of the test's own (maxmemory, CLIENT PAUSE and SCRIPT FLUSH are server-wide: the shared one has other tenants). */
async function privateRedis(t: TestContext): Promise<{ admin: RedisClientType; url: string } | undefined> {
  if (spawnSync('redis-server', ['--version']).status !== 0) return void skipOrFailOnCi(t, 'redis-server is not installed');
  const port = await freePort();
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--maxmemory-policy', 'noeviction'], { stdio: 'ignore' });
  t.after(() => void child.kill('SIGKILL'));
  const url = `redis://127.0.0.1:${port}`;
  const admin: RedisClientType = createClient({ url, socket: { reconnectStrategy: false, connectTimeout: 500 } });
  admin.on('error', () => {});
  await waitFor(() => admin.connect().then(() => true, () => false), 10_000, 'redis-server to answer');
  t.after(() => admin.destroy());
  return { admin, url };
}

test('redis: after SCRIPT FLUSH (a restarted Redis) the registry’s scripts are sent again; a Redis that hangs fails a claim within callTimeout', { timeout: 30_000 }, async (t) => {
  const server = await privateRedis(t);
  if (!server) return;
  const { admin, url } = server;
  const store = await RedisStore.open({ url, prefix: 'flush:', callTimeout: 500 });
  t.after(() => store.close());
  const registry = new RedisRegistry(store);
  const a = lease('a');
  const saved = record();
  await store.set(saved);
  await admin.scriptFlush();
  assert.equal(await registry.acquire(a, 60_000), true);
  await admin.scriptFlush();
  // Each met NOSCRIPT, and they are sent again in call order: before the claim unowned, after it a's.
  const [before, claim, after] = await Promise.all([registry.locate(saved.id), registry.claim(saved.id, a.owner), registry.locate(saved.id)]);
  assert.equal(before, undefined);
  assert.deepEqual(claim, { kind: 'ours', record: { ...saved, owner: a.owner, fence: 1 } });
  assert.deepEqual(after, a);
  assert.deepEqual(await registry.nodes(), [a]);

  await admin.sendCommand(['CLIENT', 'PAUSE', '3000', 'ALL']);
  const started = performance.now();
  await assert.rejects(registry.claim(saved.id, a.owner), (error: ResidentError) => error.code === 'RESIDENT_ERR_STORE_FAILED');
  assert.ok(performance.now() - started < 1_500, `failed within about callTimeout (${Math.round(performance.now() - started)} ms)`);
});

test('redis: past maxmemory a takeover claim and an acquire write nothing; renew, locate and a claim of one’s own still answer', { timeout: 30_000 }, async (t) => {
  const server = await privateRedis(t);
  if (!server) return;
  const { admin, url } = server;
  const prefix = 'oom:';
  const store = await RedisStore.open({ url, prefix, callTimeout: 2_000 });
  t.after(() => store.close());
  const registry = new RedisRegistry(store);
  const [a, b] = [lease('a'), lease('b')];
  await registry.acquire(a, 60_000);
  const free = record({ owner: 'gone#1', fence: 2 });
  const mine = record();
  await store.set(free);
  await store.set(mine);
  assert.equal((await registry.claim(mine.id, a.owner)).kind, 'ours');
  const before = await admin.hGetAll(`${prefix}s:${free.id}`);
  await admin.configSet('maxmemory', '1');
  try {
    await assert.rejects(registry.claim(free.id, a.owner), /OOM/);
    assert.deepEqual(await admin.hGetAll(`${prefix}s:${free.id}`), before, 'nothing written');
    await assert.rejects(registry.acquire(b, 60_000), /OOM/);
    assert.equal(await admin.exists(`${prefix}lease:${b.owner}`), 0);
    assert.equal(await registry.renew(a.owner, 60_000), true, 'a renewal needs no memory: a full Redis does not end every node');
    assert.equal((await registry.claim(mine.id, a.owner)).kind, 'ours');
    assert.deepEqual(await registry.locate(mine.id), a);
    assert.deepEqual(await registry.nodes(), [a]);
  } finally {
    await admin.configSet('maxmemory', '0');
  }
  assert.deepEqual(await registry.claim(free.id, a.owner), { kind: 'ours', record: { ...free, owner: a.owner, fence: 3 }, from: 'gone#1' });
});

/**
 * A PostgreSQL claim held by a lock on the sessions table (LOCK TABLE … IN SHARE MODE in an
 * open transaction), so its backend can be found waiting and killed, or its reply lost.
 */
async function holdWrites(table: string): Promise<{ release: () => Promise<void> }> {
  const client = new pg.Client({ connectionString: POSTGRES_URL });
  await client.connect();
  await client.query('BEGIN');
  await client.query(`LOCK TABLE ${tableNames(table).sessions} IN SHARE MODE`);
  let released = false;
  return {
    release: async () => {
      if (released) return;
      released = true;
      await client.query('ROLLBACK');
      await client.end();
    },
  };
}

/** The store's backends waiting for a lock with a statement on `table`. */
async function waiting(table: string): Promise<number[]> {
  const { rows } = await withClient((client) =>
    client.query<{ pid: number }>(
      `SELECT pid FROM pg_stat_activity WHERE application_name = 'resident' AND wait_event_type = 'Lock' AND query LIKE $1 AND pid <> pg_backend_pid() ORDER BY query_start`,
      [`%${table}%`],
    ),
  );
  return rows.map((row) => row.pid);
}

const waitingOne = async (table: string, what: string, not?: number): Promise<number> =>
  (await waitFor(async () => {
    const pids = await waiting(table);
    return pids.length === 1 && pids[0] !== not ? pids[0] : undefined;
  }, 15_000, what))!;

async function postgresOrSkip(t: TestContext): Promise<boolean> {
  const why = await unavailableReason('postgres');
  if (why) skipOrFailOnCi(t, why);
  return why === undefined;
}

test('postgres: a claim whose backend is killed mid-statement is retried on a new connection and claims once (fence + 1, not + 2)', { timeout: 60_000 }, async (t) => {
  if (!(await postgresOrSkip(t))) return;
  const s = await openPostgres();
  const [a, b] = [lease('a'), lease('b')];
  await s.registry.acquire(a, 60_000);
  await s.registry.acquire(b, 60_000);
  const saved = record({ owner: 'gone#1', fence: 4 });
  await s.store.set(saved);
  const hold = await holdWrites(s.table);
  try {
    const claim = s.registry.claim(saved.id, a.owner);
    const first = await waitingOne(s.table, 'the claim waiting for the lock');
    await withClient((client) => client.query('SELECT pg_terminate_backend($1)', [first]));
    await waitingOne(s.table, 'the retry waiting, on another backend', first);
    // A rival claim waits behind the retry, and must lose to it.
    const rival = s.registry.claim(saved.id, b.owner);
    await hold.release();
    assert.deepEqual(await claim, { kind: 'ours', record: { ...saved, owner: a.owner, fence: 5 }, from: 'gone#1' });
    assert.deepEqual(await rival, { kind: 'elsewhere', lease: a });
  } finally {
    await hold.release();
  }
  assert.deepEqual(await s.store.get(saved.id), { ...saved, owner: a.owner, fence: 5 });
});

test('postgres: a claim that committed but whose reply was lost answers ours with the record on its retry, not elsewhere', { timeout: 60_000 }, async (t) => {
  if (!(await postgresOrSkip(t))) return;
  const direct = new URL(POSTGRES_URL);
  const proxy = await TcpProxy.start({ host: direct.hostname, port: Number(direct.port || 5432) });
  t.after(() => proxy.close());
  const url = new URL(POSTGRES_URL);
  url.host = `127.0.0.1:${proxy.port}`;
  const s = await openPostgres(url.toString());
  const a = lease('a');
  await s.registry.acquire(a, 60_000);
  const saved = record({ memento: '["resume me"]' });
  await s.store.set(saved);
  const owner = async () =>
    (await withClient((client) => client.query<{ owner: string | null }>(`SELECT owner FROM ${tableNames(s.table).sessions} WHERE id = $1`, [saved.id]))).rows[0]?.owner;
  const hold = await holdWrites(s.table);
  try {
    const claim = s.registry.claim(saved.id, a.owner);
    await waitingOne(s.table, 'the claim waiting for the lock');
    proxy.stall();
    await hold.release();
    await waitFor(async () => (await owner()) === a.owner, 15_000, 'the first attempt committed');
    proxy.cut();
    proxy.restore();
    proxy.flow();
    assert.deepEqual(await claim, { kind: 'ours', record: { ...saved, owner: a.owner, fence: 1 } });
  } finally {
    proxy.restore();
    proxy.flow();
    await hold.release();
  }
  assert.deepEqual(await s.store.get(saved.id), { ...saved, owner: a.owner, fence: 1 }, 'claimed once');
});

test('postgres: a claimer that waited for the row behind the winner sees the winner’s lease, even one newer than its own statement (READ COMMITTED)', { timeout: 60_000 }, async (t) => {
  if (!(await postgresOrSkip(t))) return;
  const s = await openPostgres();
  const [a, b] = [lease('a'), lease('b')];
  await s.registry.acquire(b, 60_000);
  const saved = record();
  await s.store.set(saved);
  // The winner's claim, as an open transaction that holds the row: B's claim starts and waits for it.
  const winner = new pg.Client({ connectionString: POSTGRES_URL });
  await winner.connect();
  t.after(() => winner.end());
  await winner.query('BEGIN');
  await winner.query(`UPDATE ${tableNames(s.table).sessions} SET owner = $2, fence = fence + 1 WHERE id = $1`, [saved.id, a.owner]);
  const claim = s.registry.claim(saved.id, b.owner);
  await waitingOne(s.table, 'B’s claim waiting for the row');
  // A's lease commits after B's statement took its snapshot, then A's claim commits.
  assert.equal(await s.registry.acquire(a, 60_000), true);
  await winner.query('COMMIT');
  assert.deepEqual(await claim, { kind: 'elsewhere', lease: a }, 'B forwards to A: one owner, not two');
  assert.deepEqual(await s.store.get(saved.id), { ...saved, owner: a.owner, fence: 1 });
});

test('postgres: a claim held past callTimeout (a lock it waits for) fails with RESIDENT_ERR_STORE_FAILED within about callTimeout; claiming again settles it', { timeout: 30_000 }, async (t) => {
  if (!(await postgresOrSkip(t))) return;
  const table = tempTable();
  const store = await PostgresStore.open({ url: POSTGRES_URL, table, callTimeout: 500 });
  opened.push(store);
  const registry = new PostgresRegistry(store);
  const a = lease('a');
  await registry.acquire(a, 60_000);
  const saved = record();
  await store.set(saved);
  const hold = await holdWrites(table);
  try {
    const started = performance.now();
    await assert.rejects(registry.claim(saved.id, a.owner), (error: ResidentError) => error.code === 'RESIDENT_ERR_STORE_FAILED');
    assert.ok(performance.now() - started < 1_500, `failed within about callTimeout (${Math.round(performance.now() - started)} ms)`);
  } finally {
    await hold.release();
  }
  // Whether the timed-out statement still landed (the server may run it until its own
  // statement_timeout) is unknown to the caller: claiming again settles it, once.
  assert.deepEqual(await registry.claim(saved.id, a.owner), { kind: 'ours', record: { ...saved, owner: a.owner, fence: 1 } });
  assert.deepEqual(await registry.claim(saved.id, a.owner), { kind: 'ours', record: { ...saved, owner: a.owner, fence: 1 } });
});

test('postgres: a claim waits for a renewal under way (begun while the lease was alive) and forwards to the renewed owner', { timeout: 30_000 }, async (t) => {
  if (!(await postgresOrSkip(t))) return;
  const s = await openPostgres();
  const [a, b] = [lease('a'), lease('b')];
  await s.registry.acquire(a, 400);
  await s.registry.acquire(b, 60_000);
  const saved = record();
  await s.store.set(saved);
  assert.equal((await s.registry.claim(saved.id, a.owner)).kind, 'ours');
  // a's renewal, applied while its lease is alive, commits only after the lease's old expiry.
  const renewal = new pg.Client({ connectionString: POSTGRES_URL });
  await renewal.connect();
  t.after(() => renewal.end());
  await renewal.query('BEGIN');
  const renewed = await renewal.query(`UPDATE ${tableNames(s.table).leases} SET expires_at = clock_timestamp() + interval '1 minute' WHERE owner = $1 AND expires_at > clock_timestamp()`, [a.owner]);
  assert.equal(renewed.rowCount, 1);
  await new Promise((resolve) => setTimeout(resolve, 600));
  const claim = s.registry.claim(saved.id, b.owner);
  await waitingOne(s.table, 'B’s claim waiting for a’s lease row');
  await renewal.query('COMMIT');
  assert.deepEqual(await claim, { kind: 'elsewhere', lease: a }, 'a renewed in time: still a’s');
  assert.equal((await s.store.get(saved.id))?.owner, a.owner);
});
