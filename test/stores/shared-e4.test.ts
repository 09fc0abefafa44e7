/**
 * E4 for the shared stores, through a real server (RELIABILITY.md, issue 13): the store refuses
 * writes for want of room, for real.
 *  - Redis out of memory: a redis-server of the test's own (`maxmemory-policy noeviction`) whose
 *    maxmemory is set just above what it holds, then filled by the test until Redis answers OOM.
 *  - PostgreSQL on a full disk: the test's table (heap, TOAST and indexes) is moved into a
 *    TABLESPACE on a small tmpfs owned by the postgres user, which the test then fills to the
 *    last page, so a write that needs a new page fails with "could not extend file ... No space
 *    left on device" (the WAL stays on the server's own disk: a full WAL disk makes PostgreSQL
 *    stop, which is E7). Needs root (mount) and a PostgreSQL on this machine; skipped, saying
 *    why, otherwise.
 * What must hold: the idle suspend is reported as a failure (an error line, never "suspended"),
 * the previous memento stays intact in the store, the context stays live with its variables, a
 * suspended session still resumes (reads need no room); once room returns the retried suspend
 * lands by itself and the session resumes from the new memento.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chownSync, rmSync, unlinkSync } from 'node:fs';
import { after, test, type TestContext } from 'node:test';
import { createClient } from 'redis';
import { tableNames } from '../../src/stores/postgres-schema.ts';
import { RedisStore } from '../../src/stores/redis.ts';
import { Client, freePort, send, skipOrFailOnCi, waitFor, type TestServer } from '../helpers.ts';
import { POSTGRES_URL, dropTables, postgresUnavailable, uniqueTable, withClient } from './postgres-helpers.ts';
import { uniquePrefix } from './redis-helpers.ts';
import { savedOf } from './server-helpers.ts';
import { dump, since, startShared, stateOf, storeRefused, storedMemento, suspendedLine, type SharedStore } from './shared-helpers.ts';
import { fillUp, mountTmpfs } from './tmpfs.ts';
import { record } from './contract.ts';

/** Cleanups, run last-in first-out after the file's tests, whatever happened. */
const cleanups: Array<() => void | Promise<void>> = [];
after(async () => {
  for (const undo of cleanups.splice(0).reverse()) {
    try {
      await undo();
    } catch (error) {
      console.error('cleanup failed:', error);
    }
  }
});

/** A store that runs out of room on `fill()` and has room again on `free()`. */
interface Full {
  store: SharedStore;
  /** After the server created its tables (PostgreSQL: moves them onto the small disk). */
  prepare(): Promise<void>;
  fill(): Promise<void>;
  free(): Promise<void>;
  /** What the store's refusal says. */
  expected: RegExp;
  /** What /readyz answers while full (README: Redis's ping writes a key, PostgreSQL's writes nothing). */
  readyWhileFull: number;
}

/** A redis-server of this test's own, with no eviction: once full, every write is refused (OOM). */
async function redisOutOfMemory(): Promise<Full | string> {
  if (spawnSync('redis-server', ['--version']).status !== 0) return 'redis-server is not installed';
  const port = await freePort();
  const args = ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--protected-mode', 'no', '--maxmemory-policy', 'noeviction'];
  const child = spawn('redis-server', args, { stdio: 'ignore' });
  cleanups.push(() => void child.kill('SIGKILL'));
  const url = `redis://127.0.0.1:${port}`;
  const admin = createClient({ url, socket: { reconnectStrategy: false, connectTimeout: 500 } });
  admin.on('error', () => {});
  await waitFor(() => admin.connect().then(() => true, () => false), 10_000, 'redis-server to answer');
  cleanups.push(() => admin.destroy());
  const prefix = uniquePrefix();
  return {
    store: { kind: 'redis', url, direct: url, name: prefix },
    prepare: async () => {},
    fill: async () => {
      const used = async () => Number(/used_memory:(\d+)/.exec(await admin.info('memory'))![1]);
      await admin.configSet('maxmemory', String((await used()) + 512 * 1024));
      // Filled by another client until Redis refuses: what a shared Redis with other tenants sees.
      let refused: Error | undefined;
      for (let i = 0; i < 1000 && !refused; i++) {
        await admin.set(`${prefix}filler:${i}`, randomBytes(32 * 1024).toString('base64')).catch((error: Error) => (refused = error));
      }
      assert.match(String(refused?.message), /OOM/, 'Redis is really full');
      // That refusal counted the refused command's own buffer, freed since: the limit goes a
      // little under what Redis holds, so no buffer that comes and goes makes room again.
      await admin.configSet('maxmemory', String((await used()) - 128 * 1024));
      await assert.rejects(admin.set(`${prefix}probe`, 'x'), /OOM/, 'even a small write is refused');
    },
    free: async () => void (await admin.configSet('maxmemory', '0')),
    expected: /OOM command not allowed when used memory > 'maxmemory'/,
    readyWhileFull: 503,
  };
}

/** The test's table in a TABLESPACE on a 2 MB tmpfs the test fills up. */
async function postgresDiskFull(): Promise<Full | string> {
  const why = await postgresUnavailable();
  if (why) return why;
  const owner = spawnSync('id', ['-u', 'postgres'], { encoding: 'utf8' });
  if (owner.status !== 0) return 'no postgres user on this machine: the PostgreSQL server is elsewhere, its disk out of reach';
  const mount = mountTmpfs('2m', cleanups as Array<() => void>);
  if (typeof mount === 'string') return mount;
  const uid = Number(owner.stdout.trim());
  const gid = Number(spawnSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).stdout.trim());
  chownSync(mount.dir, uid, gid);
  const table = uniqueTable();
  const space = `${table}_space`;
  try {
    await withClient((client) => client.query(`CREATE TABLESPACE ${space} LOCATION '${mount.dir}'`));
  } catch (error) {
    return `cannot create a tablespace on ${mount.dir} (needs a superuser and the server on this machine): ${(error as Error).message}`;
  }
  // Before the unmount (pushed earlier, so run later): the tables, then their tablespace.
  cleanups.push(async () => {
    await dropTables([table]);
    await withClient((client) => client.query(`DROP TABLESPACE IF EXISTS ${space}`));
  });
  let filler: string | undefined;
  return {
    store: { kind: 'postgres', url: POSTGRES_URL, name: table },
    prepare: async () => {
      const { sessions } = tableNames(table);
      await withClient(async (client) => {
        // SET TABLESPACE moves the heap and its TOAST table; the indexes move one by one.
        await client.query(`ALTER TABLE ${sessions} SET TABLESPACE ${space}`);
        const { rows } = await client.query<{ name: string }>('SELECT indexrelid::regclass::text AS name FROM pg_index WHERE indrelid = $1::regclass', [sessions]);
        for (const { name } of rows) await client.query(`ALTER INDEX ${name} SET TABLESPACE ${space}`);
      });
    },
    fill: async () => void (filler = fillUp(mount.dir)),
    free: async () => {
      unlinkSync(filler!);
      rmSync(`${mount.dir}/probe`, { force: true });
    },
    expected: /could not extend file .*No space left on device/,
    readyWhileFull: 200,
  };
}

/** 6 KB of text no compression shrinks: a memento that needs pages the store does not have yet. */
const bulky = () => randomBytes(3 * 1024).toString('hex');

async function suspendWhileFull(t: TestContext, make: () => Promise<Full | string>): Promise<void> {
  const full = await make();
  if (typeof full === 'string') return skipOrFailOnCi(t, full);
  const { store } = full;
  // A checkpoint every 200 ms makes the previous memento while the context is live.
  const server: TestServer = await startShared(store, { processTimeout: '2s', checkpointInterval: '200ms' });
  await full.prepare();
  const { sessions } = server.server;
  const [a, s] = [new Client(server.url), new Client(server.url)];
  const readyz = async () => (await send(`${server.url}/readyz`)).status;
  try {
    stateOf(await s.get('/inc'), 'S');
    const sId = stateOf(await s.get('/inc'), 'S').id;
    await waitFor(async () => (await sessions.info(sId))?.state === 'suspended', 6000, "S's idle suspend");
    for (let i = 0; i < 2; i++) stateOf(await a.get('/inc'), 'A');
    const aId = stateOf(await a.get('/inc'), 'A').id;
    await waitFor(async () => (await storedMemento(store, aId))?.data.n === 3, 5000, "A's n=3 checkpoint in the store");
    const previous = await storedMemento(store, aId);

    await full.fill();
    const mark = server.logs.length;
    // A grows: n=4 and 30 KB of data, which needs room the store no longer has.
    stateOf(await a.get('/inc'), 'A');
    for (let i = 0; i < 5; i++) stateOf(await a.get(`/put?key=big${i}&value=${bulky()}`), 'A');

    const refused = await waitFor(async () => since(server, mark).find(storeRefused(aId)), 8000, "A's refused idle suspend").catch((error: Error) =>
      assert.fail(`${error.message}\n${dump(since(server, mark))}`),
    );
    assert.ok(refused && refused.level >= 50, `logged as an error: ${JSON.stringify(refused)}`);
    const message = String((refused.err as { message?: unknown } | undefined)?.message);
    t.diagnostic(`${store.kind}: the store refused: ${message}`);
    assert.match(message, full.expected);
    assert.deepEqual(since(server, mark).filter(suspendedLine(aId)), [], 'never reported suspended');
    assert.deepEqual(await storedMemento(store, aId), previous, 'the previous memento is intact');
    const live = stateOf(await a.get('/state'), 'A while full');
    assert.deepEqual({ id: live.id, isNew: live.isNew, resumed: live.resumed, n: live.data.n }, { id: aId, isNew: false, resumed: false, n: 4 });
    assert.equal((await sessions.info(aId))?.state, 'live', 'the context stays live');
    // /readyz answers from the background ping, about once a second.
    await waitFor(async () => (await readyz()) === full.readyWhileFull, 4000, `/readyz ${full.readyWhileFull} while the store is full`);
    await new Promise((resolve) => setTimeout(resolve, 1500));
    assert.equal(await readyz(), full.readyWhileFull, '/readyz while the store is full, a ping later');
    // Reading needs no room: S resumes from its memento.
    const sDuring = stateOf(await s.get('/state'), 'S while full');
    assert.deepEqual({ id: sDuring.id, resumed: sDuring.resumed, n: sDuring.data.n }, { id: sId, resumed: true, n: 2 });

    await full.free();
    const freed = server.logs.length;
    // The retry (5 s after a failure) writes the memento from the live context, with no restart.
    await waitFor(async () => since(server, freed).find(suspendedLine(aId)), 15_000, "A's retried suspend").catch((error: Error) =>
      assert.fail(`${error.message}\n${dump(since(server, freed))}`),
    );
    const stored = await storedMemento(store, aId);
    assert.deepEqual({ n: stored?.data.n, big4: stored?.data.big4?.length }, { n: 4, big4: 6144 }, 'the new memento is in the store');
    await waitFor(async () => (await readyz()) === 200, 4000, '/readyz 200 once there is room');
    const back = stateOf(await a.get('/state'), 'A after');
    assert.deepEqual({ id: back.id, resumed: back.resumed, n: savedOf(back).data.n }, { id: aId, resumed: true, n: 4 });
    assert.equal(sessions.stats.lostSuspends, 0);
  } finally {
    await Promise.all([a.close(), s.close()]);
    await server.close();
  }
}

test('E4: Redis out of memory (noeviction): the suspend fails loudly, the previous memento intact, the context live; recovers once memory is raised', { timeout: 60_000 }, (t) =>
  suspendWhileFull(t, redisOutOfMemory),
);

test('E4: PostgreSQL on a full disk (its tablespace on a filled tmpfs): the suspend fails loudly, the previous memento intact, the context live; recovers once space returns', { timeout: 60_000 }, (t) =>
  suspendWhileFull(t, postgresDiskFull),
);

test('E4/E11: Redis out of memory: a damaged record is not quarantined past maxmemory (nothing written, never served); once memory is raised it is', { timeout: 60_000 }, async (t) => {
  const full = await redisOutOfMemory();
  if (typeof full === 'string') return skipOrFailOnCi(t, full);
  const { url, name: prefix } = full.store;
  const store = await RedisStore.open({ url, prefix, callTimeout: 2_000 });
  const redis = createClient({ url, socket: { reconnectStrategy: false } });
  redis.on('error', () => {});
  await redis.connect();
  try {
    const damaged = record({ userId: 'u' });
    await store.set(damaged);
    await redis.hSet(`${prefix}s:${damaged.id}`, 'fence', 'x1');
    const before = await redis.hGetAll(`${prefix}s:${damaged.id}`);
    await full.fill();
    // The quarantine is refused whole: the read fails (503 for a request), nothing is served.
    await assert.rejects(store.get(damaged.id), /OOM/);
    assert.equal(await redis.exists(`${prefix}q:${damaged.id}`), 0, 'no quarantine note written past maxmemory');
    assert.deepEqual(await redis.hGetAll(`${prefix}s:${damaged.id}`), before, 'the record is as it was');
    await full.free();
    assert.equal(await store.get(damaged.id), undefined, 'never served');
    assert.equal(await redis.exists(`${prefix}q:${damaged.id}`), 1, 'quarantined once there is room');
  } finally {
    redis.destroy();
    await store.close();
  }
});
