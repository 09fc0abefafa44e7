/**
 * The PostgreSQL store on the machine's real PostgreSQL server: the ContextStore contract, then
 * what only a shared database has (several nodes on one table, the tables made at startup, a
 * bounded wait). Each store works on a table of this run's own, dropped at the end.
 */
import assert from 'node:assert/strict';
import { createServer, type AddressInfo, type Socket } from 'node:net';
import { test } from 'node:test';
import { newSessionId } from '../../src/contexts/ids.ts';
import { ResidentError } from '../../src/errors.ts';
import { PostgresStore } from '../../src/stores/postgres.ts';
import { SCHEMA_VERSION, tableNames } from '../../src/stores/postgres-schema.ts';
import type { ContextStore } from '../../src/stores/store.ts';
import { skipOrFailOnCi } from '../helpers.ts';
import { record, storeContract } from './contract.ts';
import { POSTGRES_URL, postgresUnavailable, tempTable, withClient } from './postgres-helpers.ts';

const CALL_TIMEOUT = 2_000;
const TEST = { timeout: 30_000 };
const tables = new WeakMap<ContextStore, string>();

async function openOn(table: string, options: { callTimeout?: number; onCorrupt?: (id: string, reason: string) => void } = {}): Promise<PostgresStore> {
  const store = await PostgresStore.open({ url: POSTGRES_URL, table, callTimeout: options.callTimeout ?? CALL_TIMEOUT, onCorrupt: options.onCorrupt });
  tables.set(store, table);
  return store;
}

const unavailable = await postgresUnavailable();

if (unavailable) {
  test('postgres store: the ContextStore contract', (t) => skipOrFailOnCi(t, unavailable));
} else {
  storeContract('postgres', {
    create: () => openOn(tempTable()),
    reopen: (previous) => openOn(tables.get(previous)!),
    raw: (store, id) =>
      // Every column as PostgreSQL holds it, read on a connection of its own.
      withClient(async (client) => {
        const { rows } = await client.query<{ row: string }>(`SELECT to_jsonb(t)::text AS row FROM ${tableNames(tables.get(store)!).sessions} t WHERE id = $1`, [id]);
        return rows[0]?.row;
      }),
  });

  test('times with fractions of a millisecond (the server’s clock gives them) round-trip exactly, and expire by them', TEST, async () => {
    const store = await openOn(tempTable());
    const now = Date.now() + 0.123456789;
    const saved = record({ createdAt: now - 1000.5, updatedAt: now, lastActivityAt: now - 0.25, expiresAt: now + 0.5 });
    await store.set(saved);
    assert.deepEqual(await store.get(saved.id), saved);
    assert.deepEqual((await store.list({ limit: 10 }))[0]?.expiresAt, saved.expiresAt);
    assert.deepEqual(await store.expiredIds(now + 0.25, 10), [], 'not expired a quarter millisecond before');
    assert.deepEqual(await store.expiredIds(now + 0.5, 10), [saved.id]);
    await store.close();
  });

  test('nodes on one table: 4 stores each send 50 claims of one record at once, and exactly one lands', TEST, async () => {
    const table = tempTable();
    const stores = await Promise.all(Array.from({ length: 4 }, () => openOn(table)));
    const base = record();
    const claims = await Promise.all(
      stores.flatMap((store, s) => Array.from({ length: 50 }, (_, i) => store.setIf({ ...base, owner: `node-${s}-${i}`, fence: 1 }, null))),
    );
    assert.equal(claims.filter(Boolean).length, 1, 'claims from nothing');
    const winner = (await stores[3]!.get(base.id))!.owner!;
    const takeovers = await Promise.all(
      stores.flatMap((store, s) =>
        Array.from({ length: 50 }, (_, i) => store.setIf({ ...base, owner: `other-${s}-${i}`, fence: 2 }, { owner: winner, fence: 1 })),
      ),
    );
    assert.equal(takeovers.filter(Boolean).length, 1, 'takeovers');
    const taker = (await stores[0]!.get(base.id))!.owner!;
    assert.match(taker, /^other-/);
    const deletes = await Promise.all(stores.map((store) => store.deleteIf(base.id, { owner: taker, fence: 2 })));
    assert.equal(deletes.filter(Boolean).length, 1, 'deletes');
    assert.equal(await stores[1]!.get(base.id), undefined);
    await Promise.all(stores.map((store) => store.close()));
  });

  test('nodes starting together on a new table: every one opens it, and the tables are made once', TEST, async () => {
    const table = tempTable();
    // allSettled: a failed open must not leave the others running past the file's cleanup.
    const opened = await Promise.allSettled(Array.from({ length: 6 }, () => openOn(table)));
    const stores = opened.flatMap((result) => (result.status === 'fulfilled' ? [result.value] : []));
    const failures = opened.flatMap((result) => (result.status === 'rejected' ? [String(result.reason)] : []));
    if (failures.length > 0) await Promise.all(stores.map((store) => store.close()));
    assert.deepEqual(failures, [], 'every node opened the table');
    const saved = record();
    await stores[0]!.set(saved);
    assert.deepEqual(await stores[5]!.get(saved.id), saved);
    const version = await withClient((client) => client.query<{ version: number }>(`SELECT version FROM ${tableNames(table).meta}`));
    assert.deepEqual(version.rows, [{ version: SCHEMA_VERSION }]);
    await Promise.all(stores.map((store) => store.close()));
  });

  test('a restart needs no DDL: a role with only SELECT, INSERT, UPDATE and DELETE on the tables opens them; on a new table it is refused', TEST, async () => {
    const table = tempTable();
    const role = `resident_test_role_${process.pid}`;
    const t = tableNames(table);
    await (await openOn(table)).close();
    await withClient(async (client) => {
      await client.query(`DROP ROLE IF EXISTS ${role}`);
      await client.query(`CREATE ROLE ${role} LOGIN`);
      await client.query(`GRANT SELECT, INSERT, UPDATE, DELETE ON ${t.sessions}, ${t.quarantine}, ${t.meta}, ${t.leases} TO ${role}`);
    });
    try {
      const url = new URL(POSTGRES_URL);
      url.username = role;
      const store = await PostgresStore.open({ url: url.toString(), table, callTimeout: CALL_TIMEOUT });
      const saved = record();
      assert.equal(await store.setIf({ ...saved, owner: 'node-a/1', fence: 1 }, null), true);
      assert.deepEqual(await store.get(saved.id), { ...saved, owner: 'node-a/1', fence: 1 });
      await store.close();
      await assert.rejects(
        PostgresStore.open({ url: url.toString(), table: tempTable(), callTimeout: CALL_TIMEOUT }),
        (error: ResidentError) => error.code === 'RESIDENT_ERR_STORE_OPEN' && /permission denied/.test(error.message),
      );
    } finally {
      await withClient(async (client) => {
        await client.query(`REVOKE ALL ON ${t.sessions}, ${t.quarantine}, ${t.meta}, ${t.leases} FROM ${role}`);
        await client.query(`DROP ROLE ${role}`);
      });
    }
  });

  test('a table of a newer schema version is refused at open, naming both versions, and left as it was', TEST, async () => {
    const table = tempTable();
    const first = await openOn(table);
    const kept = record();
    await first.set(kept);
    await first.close();
    await withClient((client) => client.query(`UPDATE ${tableNames(table).meta} SET version = $1`, [SCHEMA_VERSION + 1]));
    await assert.rejects(openOn(table), (error: ResidentError) => {
      assert.equal(error.code, 'RESIDENT_ERR_STORE_OPEN');
      assert.match(error.message, new RegExp(`schema version ${SCHEMA_VERSION + 1}, newer than this Resident's ${SCHEMA_VERSION}`));
      return true;
    });
    const rows = await withClient((client) => client.query(`SELECT id FROM ${tableNames(table).sessions}`));
    assert.deepEqual(rows.rows, [{ id: kept.id }]);
  });

  test('open against a port where nothing listens fails within about callTimeout, without the password', TEST, async () => {
    const started = performance.now();
    await assert.rejects(
      PostgresStore.open({ url: 'postgres://resident:s3cret-pw@127.0.0.1:1/test', table: 'resident_sessions', callTimeout: 500 }),
      (error: ResidentError) => {
        assert.equal(error.code, 'RESIDENT_ERR_STORE_OPEN');
        assert.match(error.message, /^Cannot open the PostgreSQL store at postgres:\/\/resident:\*\*\*@127\.0\.0\.1:1\/test \(table resident_sessions\): /);
        assert.doesNotMatch(error.message, /s3cret/);
        return true;
      },
    );
    assert.ok(performance.now() - started < 1_500, `took ${Math.round(performance.now() - started)} ms`);
  });

  test('open against a server that accepts the connection but never answers fails within about callTimeout', TEST, async () => {
    // A real TCP listener that takes connections and says nothing: a hung server or a black hole.
    const sockets: Socket[] = [];
    const silent = createServer((socket) => sockets.push(socket));
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    const { port } = silent.address() as AddressInfo;
    try {
      const started = performance.now();
      await assert.rejects(
        PostgresStore.open({ url: `postgres://resident:s3cret-pw@127.0.0.1:${port}/test`, table: 'resident_sessions', callTimeout: 500 }),
        (error: ResidentError) => error.code === 'RESIDENT_ERR_STORE_OPEN' && !error.message.includes('s3cret'),
      );
      const took = performance.now() - started;
      assert.ok(took >= 450 && took < 1_500, `took ${Math.round(took)} ms`);
      assert.ok(sockets.length >= 1, 'the store did connect');
    } finally {
      for (const socket of sockets) socket.destroy();
      silent.close();
    }
  });

  test('a URL whose own options turn synchronous_commit off is refused: writes would not be durable', TEST, async () => {
    const url = `${POSTGRES_URL}?options=${encodeURIComponent('-c synchronous_commit=off')}`;
    await assert.rejects(PostgresStore.open({ url, table: tempTable(), callTimeout: CALL_TIMEOUT }), (error: ResidentError) => {
      assert.equal(error.code, 'RESIDENT_ERR_STORE_OPEN');
      assert.match(error.message, /synchronous_commit is off/);
      return true;
    });
  });

  test('a row locked by another transaction: the write fails with RESIDENT_ERR_STORE_FAILED after callTimeout, other IDs are served, and the ID works once released', TEST, async () => {
    const table = tempTable();
    const store = await openOn(table, { callTimeout: 400 });
    const stuck = record();
    const other = record();
    await store.set(stuck);
    await withClient(async (client) => {
      await client.query('BEGIN');
      await client.query(`SELECT 1 FROM ${tableNames(table).sessions} WHERE id = $1 FOR UPDATE`, [stuck.id]);
      const started = performance.now();
      await assert.rejects(store.set({ ...stuck, memento: '["blocked"]' }), (error: ResidentError) => error.code === 'RESIDENT_ERR_STORE_FAILED');
      const took = performance.now() - started;
      assert.ok(took >= 350 && took < 1_000, `took ${Math.round(took)} ms`);
      await store.set(other);
      assert.deepEqual(await store.get(other.id), other);
      await client.query('ROLLBACK');
    });
    const after = { ...stuck, memento: '["after"]' };
    await store.set(after);
    assert.deepEqual(await store.get(stuck.id), after);
    await store.close();
  });

  test('connections killed by pg_terminate_backend: the process survives, and every read succeeds (tried again on a new connection), without a restart', TEST, async () => {
    const table = tempTable();
    const store = await openOn(table);
    const saved = record();
    await Promise.all([store.set(saved), store.set(record()), store.set(record())]);
    const killed = await withClient(async (client) => {
      const { rows } = await client.query<{ killed: boolean }>(
        `SELECT pg_terminate_backend(pid) AS killed FROM pg_stat_activity WHERE application_name = 'resident' AND query LIKE $1 AND pid <> pg_backend_pid()`,
        [`%${table}%`],
      );
      return rows.filter((row) => row.killed).length;
    });
    assert.ok(killed >= 1, 'the store’s connections were terminated');
    const outcomes: string[] = [];
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        assert.deepEqual(await store.get(saved.id), saved);
        outcomes.push('ok');
      } catch (error) {
        assert.equal((error as ResidentError).code, 'RESIDENT_ERR_STORE_FAILED');
        outcomes.push('failed');
      }
    }
    assert.deepEqual(outcomes, ['ok', 'ok', 'ok']);
    await store.ping();
    await store.close();
  });

  test('a row that is not a session record is quarantined with its content, reported once, and no longer served', TEST, async () => {
    const table = tempTable();
    const reports: Array<[string, string]> = [];
    const store = await openOn(table, { onCorrupt: (id, reason) => reports.push([id, reason]) });
    const bad = record();
    await store.set(bad);
    const t = tableNames(table);
    await withClient((client) => client.query(`UPDATE ${t.sessions} SET fence = -1 WHERE id = $1`, [bad.id]));
    assert.equal(await store.get(bad.id), undefined);
    assert.deepEqual(reports, [[bad.id, 'malformed row']]);
    assert.equal(await store.get(bad.id), undefined);
    assert.equal(reports.length, 1);
    const moved = await withClient((client) => client.query<{ id: string; reason: string; row: { fence: number; memento: string } }>(`SELECT id, reason, row FROM ${t.quarantine}`));
    assert.equal(moved.rows.length, 1);
    assert.equal(moved.rows[0]!.id, bad.id);
    assert.equal(moved.rows[0]!.row.fence, -1);
    assert.equal(moved.rows[0]!.row.memento, bad.memento);
    await store.close();
  });

  test('IDs and user IDs shaped like SQL are data: stored, listed and deleted as themselves', TEST, async () => {
    const store = await openOn(tempTable());
    const id = newSessionId();
    const userId = `x' OR '1'='1'; DROP TABLE resident_sessions; --`;
    const saved = record({ id, userId });
    await store.set(saved);
    assert.deepEqual(await store.get(id), saved);
    assert.deepEqual((await store.list({ userId, limit: 10 })).map((s) => s.id), [id]);
    assert.deepEqual(await store.list({ userId: "' OR ''='", limit: 10 }), []);
    assert.deepEqual(await store.list({ userId: 'a\u0000b', limit: 10 }), [], 'a user ID no record can have');
    assert.deepEqual([...(await store.existing([`${id}' OR '1'='1`, id]))], [id]);
    await store.delete(id);
    assert.equal(await store.get(id), undefined);
    await store.close();
  });

  test('close waits for the writes called before it, also those queued behind another write of their ID; calls after it reject', TEST, async () => {
    const table = tempTable();
    const store = await openOn(table);
    const saved = record();
    const writes = Array.from({ length: 5 }, (_, i) => store.set({ ...saved, memento: `[${i}]` }));
    const other = record();
    const alsoWritten = store.set(other);
    await store.close();
    await Promise.all([...writes, alsoWritten]);
    const again = await openOn(table);
    assert.equal((await again.get(saved.id))?.memento, '[4]');
    assert.deepEqual(await again.get(other.id), other);
    await again.close();
    await assert.rejects(store.get(newSessionId()), (error: ResidentError) => error.code === 'RESIDENT_ERR_STORE_FAILED');
    await assert.rejects(store.ping(), (error: ResidentError) => error.code === 'RESIDENT_ERR_STORE_FAILED');
  });
}
