/**
 * RELIABILITY E9 on the machine's real PostgreSQL: a write whose connection dies mid-statement
 * is tried once more, and lands exactly once and whole; a second loss fails the call with
 * RESIDENT_ERR_STORE_FAILED, leaving the old record whole. Each write is held mid-statement by a
 * lock another connection holds on the table, so its backend can be found waiting in
 * pg_stat_activity and killed there (pg_terminate_backend), or its reply lost on the way back
 * after the server committed it (a TCP proxy that holds the server's bytes, then resets). A
 * trigger logs every committed row write with the backend that made it: which attempt landed.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { after, test } from 'node:test';
import pg from 'pg';
import { ResidentError } from '../../src/errors.ts';
import { PostgresStore } from '../../src/stores/postgres.ts';
import { tableNames } from '../../src/stores/postgres-schema.ts';
import type { SessionRecord } from '../../src/stores/store.ts';
import { Client, skipOrFailOnCi, startTestServer, waitFor } from '../helpers.ts';
import { record } from './contract.ts';
import { POSTGRES_URL, postgresUnavailable, tempTable, withClient } from './postgres-helpers.ts';
import { STORE_HOOKS, cleanup, clientWith, state } from './server-helpers.ts';
import { TcpProxy } from './tcp-proxy.ts';

const TEST = { timeout: 60_000 };
/** Long enough for a loaded machine to find, kill and release within one call's bound. */
const CALL_TIMEOUT = 8_000;
const A = 'node-a/1';
const B = 'node-b/1';

/** A memento large enough that a partial write could not pass for a whole one. */
const big = (tag: string) => JSON.stringify([tag, 'x'.repeat(100_000)]);
/** A record with its memento as a digest, so a failed comparison prints something readable. */
const view = (r: SessionRecord | undefined) => r && { ...r, memento: r.memento && `${r.memento.length} bytes, sha256 ${createHash('sha256').update(r.memento).digest('hex')}` };

interface Backend {
  pid: number;
}

/** The store's backends waiting for a lock on `table`, oldest first. */
async function waiting(table: string): Promise<Backend[]> {
  const { rows } = await withClient((client) =>
    client.query<Backend>(
      `SELECT pid FROM pg_stat_activity
        WHERE application_name = 'resident' AND wait_event_type = 'Lock' AND query LIKE $1 AND pid <> pg_backend_pid()
        ORDER BY query_start`,
      [`%${table}%`],
    ),
  );
  return rows;
}

/** Waits until exactly `count` of the store's backends wait for a lock, none of them `gone`; returns them. */
async function waitingFor(table: string, count: number, what: string, gone?: Backend): Promise<Backend[]> {
  const found = await waitFor(async () => {
    const backends = await waiting(table);
    return backends.length === count && !backends.some((b) => b.pid === gone?.pid) ? backends : undefined;
  }, 15_000, what);
  return found!;
}

const terminate = (pid: number) => withClient((client) => client.query('SELECT pg_terminate_backend($1)', [pid]));

/**
 * Holds every write to the table (LOCK TABLE … IN SHARE MODE in an open transaction; reads go
 * on) until `release()`. A table lock, not a row lock: a conditional write whose condition does
 * not hold would pass a locked row without waiting.
 */
async function holdWrites(table: string): Promise<{ release: () => Promise<void> }> {
  const client = new pg.Client({ connectionString: POSTGRES_URL });
  await client.connect();
  await client.query('BEGIN');
  await client.query(`LOCK TABLE ${tableNames(table).sessions} IN SHARE MODE`);
  let released = false;
  const release = async () => {
    if (released) return;
    released = true;
    await client.query('ROLLBACK');
    await client.end();
  };
  return { release };
}

/** What the tests made besides the store's tables (dropped with the file's tables' cleanup). */
const drops: string[] = [];
after(async () => {
  await withClient(async (client) => {
    for (const drop of drops) await client.query(drop);
  });
  await cleanup();
});

/**
 * From now on, logs every committed row write to the table with the backend that made it (a
 * trigger: a rolled-back attempt leaves no entry). Returns a reader that takes the entries.
 */
async function logWrites(table: string): Promise<() => Promise<Array<{ pid: number; op: string }>>> {
  drops.push(`DROP TABLE IF EXISTS ${table}_writes; DROP FUNCTION IF EXISTS ${table}_log() CASCADE`);
  await withClient((client) =>
    client.query(`CREATE TABLE ${table}_writes (n SERIAL PRIMARY KEY, pid INTEGER NOT NULL, op TEXT NOT NULL);
      CREATE FUNCTION ${table}_log() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN INSERT INTO ${table}_writes (pid, op) VALUES (pg_backend_pid(), TG_OP); RETURN NULL; END $$;
      CREATE TRIGGER ${table}_log AFTER INSERT OR UPDATE OR DELETE ON ${tableNames(table).sessions} FOR EACH ROW EXECUTE FUNCTION ${table}_log()`),
  );
  return () =>
    withClient(async (client) => {
      const { rows } = await client.query<{ pid: number; op: string }>(`DELETE FROM ${table}_writes RETURNING pid, op`);
      return rows;
    });
}

/** The row as PostgreSQL holds it, read behind the store's back. */
async function raw(table: string, id: string): Promise<SessionRecord | undefined> {
  const { rows } = await withClient((client) => client.query(`SELECT * FROM ${tableNames(table).sessions} WHERE id = $1`, [id]));
  const row = rows[0];
  if (!row) return undefined;
  const { user_id, client_ip, memento, memento_version, created_at, updated_at, last_activity_at, expires_at, owner, fence } = row;
  return {
    id: row.id, userId: user_id, clientIp: client_ip, memento, mementoVersion: memento_version, createdAt: created_at, updatedAt: updated_at,
    lastActivityAt: last_activity_at, expiresAt: expires_at, owner, fence: Number(fence),
  };
}

/**
 * `work` on a store of a table of its own whose connections go through a TCP proxy of their own
 * (to lose a reply, or reset a connection the server does not see closed); closed after.
 */
async function withStore(work: (store: PostgresStore, table: string, proxy: TcpProxy) => Promise<void>): Promise<void> {
  const table = tempTable();
  const url = new URL(POSTGRES_URL);
  const proxy = await TcpProxy.start({ host: url.hostname, port: Number(url.port || 5432) });
  url.host = `127.0.0.1:${proxy.port}`;
  try {
    const store = await PostgresStore.open({ url: url.toString(), table, callTimeout: CALL_TIMEOUT });
    try {
      await work(store, table, proxy);
    } finally {
      await store.close();
    }
  } finally {
    await proxy.close();
  }
}

/** `base` as `owner` writes it under `fence`, with a memento of its own. */
const by = (base: SessionRecord, owner: string | null, fence: number, tag = `${owner}@${fence}`): SessionRecord => ({ ...base, owner, fence, memento: big(tag) });

/** `call` with its first attempt killed while it waits for the table's lock: the retry's backend. */
async function killedOnce<T>(table: string, call: () => Promise<T>): Promise<{ value: T; retry: Backend }> {
  const hold = await holdWrites(table);
  try {
    const result = call();
    const [first] = await waitingFor(table, 1, 'the write waiting for the lock');
    await terminate(first!.pid);
    const [retry] = await waitingFor(table, 1, 'the retry waiting for the lock, on another connection', first);
    await hold.release();
    return { value: await result, retry: retry! };
  } finally {
    await hold.release();
  }
}

const unavailable = await postgresUnavailable();

if (unavailable) {
  test('postgres store: E9 retries', (t) => skipOrFailOnCi(t, unavailable));
} else {
  test('E9: a set whose backend is killed mid-statement is retried once, on a new connection, and lands once and whole', TEST, async () => {
    await withStore(async (store, table) => {
      const old = record({ memento: big('old') });
      await store.set(old);
      const writes = await logWrites(table);
      const next = { ...old, memento: big('new'), updatedAt: old.updatedAt + 1 };
      const { retry } = await killedOnce(table, () => store.set(next));
      assert.deepEqual(view(await raw(table, old.id)), view(next), 'the new record, whole');
      assert.deepEqual(await writes(), [{ pid: retry.pid, op: 'UPDATE' }], 'written once, by the retry: the killed attempt rolled back');
    });
  });

  test('E9: when the retry is killed too, the call rejects with RESIDENT_ERR_STORE_FAILED, no third attempt is made, and the old record is whole', TEST, async () => {
    await withStore(async (store, table) => {
      const old = record({ memento: big('old') });
      await store.set(old);
      const writes = await logWrites(table);
      const held = await holdWrites(table);
      try {
        const failed = assert.rejects(store.set({ ...old, memento: big('new') }), (error: ResidentError) => {
          assert.equal(error.code, 'RESIDENT_ERR_STORE_FAILED');
          assert.match(error.message, /administrator command/);
          return true;
        });
        const [first] = await waitingFor(table, 1, 'the set waiting for the lock');
        await terminate(first!.pid);
        const [retry] = await waitingFor(table, 1, 'the retry waiting for the lock, on another connection', first);
        await terminate(retry!.pid);
        await failed;
        // A third attempt would have been made before the call failed, and would wait for the lock.
        await waitingFor(table, 0, 'no third attempt waiting once the call failed', retry);
      } finally {
        await held.release();
      }
      assert.deepEqual(view(await raw(table, old.id)), view(old), 'the old record, whole');
      assert.deepEqual(await writes(), [], 'neither attempt wrote');
      const after = { ...old, memento: big('after') };
      await store.set(after);
      assert.deepEqual(view(await store.get(old.id)), view(after), 'the store serves again');
    });
  });

  test('E9: setIf and deleteIf killed once: the owner’s writes land (true), a stale owner is still refused (false) and changes nothing', TEST, async () => {
    await withStore(async (store, table) => {
      const base = record();
      assert.equal(await store.setIf(by(base, A, 1), null), true);
      const writes = await logWrites(table);
      const takeover = by(base, B, 2);
      const claim = await killedOnce(table, () => store.setIf(takeover, { owner: A, fence: 1 }));
      assert.equal(claim.value, true, 'B takes over');
      assert.deepEqual(view(await raw(table, base.id)), view(takeover));
      assert.equal((await killedOnce(table, () => store.setIf(by(base, A, 1, 'late'), { owner: A, fence: 1 }))).value, false, 'A’s late write');
      assert.equal((await killedOnce(table, () => store.deleteIf(base.id, { owner: A, fence: 1 }))).value, false, 'A’s late delete');
      assert.equal((await killedOnce(table, () => store.setIf(by(base, A, 1, 'fresh'), null))).value, false, 'a claim from nothing');
      assert.deepEqual(view(await raw(table, base.id)), view(takeover), 'the refused writes changed nothing');
      const closed = await killedOnce(table, () => store.deleteIf(base.id, { owner: B, fence: 2 }));
      assert.equal(closed.value, true, 'B deletes');
      assert.equal(await raw(table, base.id), undefined);
      assert.deepEqual(await writes(), [
        { pid: claim.retry.pid, op: 'UPDATE' },
        { pid: closed.retry.pid, op: 'DELETE' },
      ], 'only the landed writes wrote, once each');
    });
  });

  test('E9: a write that committed but whose reply was lost (a reset after the commit): setIf and deleteIf report true, quarantine leaves one note', TEST, async () => {
    await withStore(async (store, table, proxy) => {
      /**
       * `call` held by the table's lock; then the proxy holds every byte, the lock goes, the server
       * commits (checked behind the proxy), and the proxy resets the connection: the reply is lost.
       */
      const replyLost = async <T>(call: () => Promise<T>, committed: () => Promise<boolean>) => {
        const hold = await holdWrites(table);
        try {
          const result = call();
          const [first] = await waitingFor(table, 1, 'the write waiting for the lock');
          proxy.stall();
          await hold.release();
          await waitFor(committed, 15_000, 'the first attempt committed');
          proxy.cut();
          proxy.restore();
          proxy.flow();
          return { value: await result, first: first! };
        } finally {
          proxy.restore();
          proxy.flow();
          await hold.release();
        }
      };
      const base = record();
      assert.equal(await store.setIf(by(base, A, 1), null), true);
      const writes = await logWrites(table);
      const takeover = by(base, B, 2);
      const claim = await replyLost(() => store.setIf(takeover, { owner: A, fence: 1 }), async () => (await raw(table, base.id))?.owner === B);
      assert.equal(claim.value, true, 'the retry finds the record as written');
      assert.deepEqual(view(await raw(table, base.id)), view(takeover));
      assert.deepEqual(await writes(), [{ pid: claim.first.pid, op: 'UPDATE' }], 'the first attempt wrote it; the retry did not write again');

      const closed = await replyLost(() => store.deleteIf(base.id, { owner: B, fence: 2 }), async () => (await raw(table, base.id)) === undefined);
      assert.equal(closed.value, true, 'the retry finds the record gone');
      assert.deepEqual(await writes(), [{ pid: closed.first.pid, op: 'DELETE' }]);

      const bad = record({ memento: big('bad') });
      await store.set(bad);
      await replyLost(() => store.quarantine(bad.id, 'test'), async () => (await raw(table, bad.id)) === undefined);
      const notes = await withClient((client) =>
        client.query<{ row: { memento: string } | null }>(`SELECT row FROM ${tableNames(table).quarantine} WHERE id = $1`, [bad.id]),
      );
      assert.equal(notes.rows.length, 1, 'one note');
      assert.ok(notes.rows[0]!.row?.memento === bad.memento, 'with the row, whole');
    });
  });

  test('E9: a reset while the write waits leaves its statement running on the server: the store cancels it, and only the retry writes', TEST, async () => {
    await withStore(async (store, table, proxy) => {
      const base = record();
      assert.equal(await store.setIf(by(base, A, 1), null), true);
      const writes = await logWrites(table);
      const hold = await holdWrites(table);
      try {
        const takeover = by(base, B, 2);
        const claim = store.setIf(takeover, { owner: A, fence: 1 });
        const [first] = await waitingFor(table, 1, 'the setIf waiting for the lock');
        // The reset reaches the server, but a backend waiting for a lock does not read its socket.
        proxy.cut();
        proxy.restore();
        const [retry] = await waitingFor(table, 1, 'the retry waiting alone: the first attempt was cancelled', first);
        await hold.release();
        assert.equal(await claim, true);
        assert.deepEqual(view(await raw(table, base.id)), view(takeover));
        assert.deepEqual(await writes(), [{ pid: retry!.pid, op: 'UPDATE' }], 'written once, by the retry');
      } finally {
        await hold.release();
      }
    });
  });

  test('E9: an error that is not a lost connection (a check the row fails) is not retried: one attempt, RESIDENT_ERR_STORE_FAILED', TEST, async () => {
    await withStore(async (store, table) => {
      const saved = record();
      await store.set(saved);
      // A trigger counts the attempts in a sequence (which a rollback does not undo), then fails them.
      drops.push(`DROP SEQUENCE IF EXISTS ${table}_attempts; DROP FUNCTION IF EXISTS ${table}_refuse() CASCADE`);
      const refuseWith = (sqlstate: string) =>
        withClient((client) =>
          client.query(`CREATE OR REPLACE FUNCTION ${table}_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN PERFORM nextval('${table}_attempts'); RAISE EXCEPTION 'refused by the test' USING ERRCODE = '${sqlstate}'; END $$`),
        );
      const attempts = () =>
        withClient(async (client) => {
          const { rows } = await client.query<{ n: string }>(`SELECT CASE WHEN is_called THEN last_value ELSE 0 END AS n FROM ${table}_attempts`);
          return Number(rows[0]!.n);
        });
      await withClient((client) => client.query(`CREATE SEQUENCE ${table}_attempts`));
      await refuseWith('23514');
      await withClient((client) =>
        client.query(`CREATE TRIGGER ${table}_refuse BEFORE UPDATE ON ${tableNames(table).sessions} FOR EACH ROW EXECUTE FUNCTION ${table}_refuse()`),
      );
      const refused = (error: ResidentError) => error.code === 'RESIDENT_ERR_STORE_FAILED' && /refused by the test/.test(error.message);
      await assert.rejects(store.set({ ...saved, memento: '["x"]' }), refused);
      assert.equal(await attempts(), 1, 'a check violation (23514) is tried once');
      // The control: the same failure as a connection exception (class 08) is tried twice.
      await refuseWith('08006');
      await assert.rejects(store.set({ ...saved, memento: '["y"]' }), refused);
      assert.equal(await attempts(), 3, 'a connection exception (08006) is tried again');
      assert.deepEqual(await raw(table, saved.id), saved);
    });
  });

  test('E9 through a real server: a suspend whose write is killed once still lands, and the session resumes with its memento', TEST, async () => {
    const table = tempTable();
    const start = () => startTestServer({ workers: { threads: 1 }, hooks: STORE_HOOKS, store: { kind: 'postgres', url: POSTGRES_URL, table, callTimeout: '8s' } });
    let t = await start();
    const client = new Client(t.url);
    try {
      await state(client, '/inc');
      await state(client, '/put?key=name&value=killed-once');
      const { value } = await killedOnce(table, () => t.server.shutdown());
      assert.deepEqual(value, { suspended: 1, lost: 0 });
    } finally {
      await t.close();
    }
    t = await start();
    try {
      const resumed = await state(clientWith(t.url, client.cookie!));
      assert.equal(resumed.resumed, true);
      assert.equal(resumed.id, client.cookie);
      assert.deepEqual(resumed.data, { n: 1, name: 'killed-once' });
    } finally {
      await t.close();
    }
  });
}
