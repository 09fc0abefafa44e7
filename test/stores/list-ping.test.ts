/**
 * list and ping, store by store, where the shared contract (contract.ts) cannot reach: the file
 * store's folder vanishing (RELIABILITY.md E6), a closed SQLite store, the SQLite query plans
 * behind list (read from an index, never a scan), and the memory store's eviction.
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import Database from 'better-sqlite3';
import { newSessionId } from '../../src/contexts/ids.ts';
import { FileStore } from '../../src/stores/file.ts';
import { MemoryStore } from '../../src/stores/memory.ts';
import { SqliteStore } from '../../src/stores/sqlite.ts';
import { byId, record, summaryOf } from './contract.ts';

const tempDirs: string[] = [];
const tempDir = () => {
  const dir = mkdtempSync(join(tmpdir(), 'resident-list-ping-'));
  tempDirs.push(dir);
  return dir;
};
after(() => {
  for (const dir of tempDirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

const storeFailed = { name: 'ResidentError', code: 'RESIDENT_ERR_STORE_FAILED' };

describe('file store: a vanished folder is an outage, not an empty store', () => {
  test('ping and get reject while the folder is gone; once it is back, get answers undefined and ping resolves', async () => {
    const dir = join(tempDir(), 'sessions');
    const store = await FileStore.open({ dir });
    const saved = record({ userId: 'A' });
    await store.set(saved);
    await store.ping();

    rmSync(dir, { recursive: true, force: true });
    await assert.rejects(store.ping(), 'ping rejects without the folder');
    await assert.rejects(store.get(newSessionId()), storeFailed, 'get of an unknown ID rejects, never answers "not found"');
    await assert.rejects(store.get(saved.id), storeFailed, 'get of a stored ID rejects');
    await assert.rejects(store.set(record()), storeFailed, 'set rejects');

    mkdirSync(dir);
    assert.equal(await store.get(newSessionId()), undefined, 'get of an unknown ID is "not found" again');
    assert.equal(await store.ping(), undefined, 'ping resolves again');
    const later = record({ userId: 'A' });
    await store.set(later);
    assert.deepEqual(await store.get(later.id), later, 'writes work again');
    await store.close();
  });

  test('ping leaves no probe file behind', async () => {
    const dir = tempDir();
    const store = await FileStore.open({ dir });
    await store.ping();
    await store.ping();
    assert.deepEqual(readdirSync(dir), ['quarantine']);
    await store.close();
  });

  test(
    'quarantine after the folder was recreated takes the record out of service',
    async () => {
      const dir = join(tempDir(), 'sessions');
      const store = await FileStore.open({ dir });
      rmSync(dir, { recursive: true, force: true });
      mkdirSync(dir);
      const saved = record();
      await store.set(saved);
      await store.quarantine(saved.id, 'test');
      assert.equal(await store.get(saved.id), undefined, 'the quarantined record is not served');
      await store.close();
    },
  );
});

describe('sqlite store: list and ping', () => {
  test('ping rejects after close()', async () => {
    const store = new SqliteStore({ path: join(tempDir(), 'contexts.db') });
    await store.ping();
    await store.close();
    await assert.rejects(store.ping(), storeFailed);
  });

  // Copied from src/stores/sqlite.ts; the test below checks they are still what the store prepares.
  const SUMMARY_COLUMNS =
    'id, user_id, client_ip, memento_version, created_at, updated_at, last_activity_at, expires_at, owner, fence, coalesce(length(CAST(memento AS BLOB)), 0) AS memento_bytes';
  const LIST = `SELECT ${SUMMARY_COLUMNS} FROM sessions WHERE id > ? ORDER BY id LIMIT ?`;
  const LIST_USER = `SELECT ${SUMMARY_COLUMNS} FROM sessions WHERE user_id = ? AND id > ? ORDER BY id LIMIT ?`;

  test('list reads the primary key, and one user’s listing the user_id index: no scan, no sort (EXPLAIN QUERY PLAN)', async (t) => {
    const path = join(tempDir(), 'contexts.db');
    const prepare = t.mock.method(Database.prototype, 'prepare');
    const store = new SqliteStore({ path });
    const prepared = prepare.mock.calls.map((call) => String(call.arguments[0]));
    prepare.mock.restore();
    assert.ok(prepared.includes(LIST), 'the store prepares the listing SQL copied here');
    assert.ok(prepared.includes(LIST_USER), 'the store prepares the user listing SQL copied here');

    const records = Array.from({ length: 60 }, (_, i) => record({ userId: i % 4 === 0 ? null : `user-${i % 3}` }));
    for (const r of records) await store.set(r);
    const ofUser1 = records.filter((r) => r.userId === 'user-1').sort(byId);
    assert.deepEqual(await store.list({ userId: 'user-1', limit: 100 }), ofUser1.map(summaryOf));

    const db = new Database(path, { readonly: true, fileMustExist: true });
    try {
      const plan = (sql: string, ...params: Array<string | number>) =>
        db
          .prepare<unknown[], { detail: string }>(`EXPLAIN QUERY PLAN ${sql}`)
          .all(...params)
          .map((row) => row.detail);
      const assertIndexed = (details: string[], access: RegExp, what: string) => {
        assert.ok(details.some((d) => access.test(d)), `${what}: ${JSON.stringify(details)} should match ${access}`);
        for (const d of details) {
          // 'SCAN sessions' reads every row; 'SCAN sessions USING INDEX …' every index entry.
          assert.doesNotMatch(d, /\bSCAN\b/, `${what} scans: ${JSON.stringify(details)}`);
          assert.doesNotMatch(d, /TEMP B-TREE/, `${what} sorts instead of reading in index order: ${JSON.stringify(details)}`);
        }
      };
      // The checks can see a scan and a sort on this SQLite: a query with no index for it.
      const scan = plan('SELECT id FROM sessions WHERE client_ip = ? ORDER BY created_at', '::1');
      assert.ok(scan.some((d) => /^SCAN sessions\b/.test(d)), `a scan is printed as such: ${JSON.stringify(scan)}`);
      assert.ok(scan.some((d) => /TEMP B-TREE/.test(d)), `a sort is printed as such: ${JSON.stringify(scan)}`);

      assertIndexed(plan(LIST, '', 10), /^SEARCH sessions USING PRIMARY KEY \(id>\?\)$/, 'list');
      assertIndexed(
        plan(LIST_USER, 'user-1', '', 10),
        /^SEARCH sessions USING (COVERING )?INDEX sessions_user_id \(user_id=\? AND id>\?\)$/,
        'list with userId',
      );
    } finally {
      db.close();
      await store.close();
    }
  });
});

describe('memory store: list', () => {
  test('a record evicted beyond maxEntries leaves every listing', async () => {
    const store = new MemoryStore({ maxEntries: 3 });
    const now = Date.now();
    const records = [0, 1, 2, 3, 4].map((i) => record({ userId: 'A', expiresAt: now + 60_000 + i * 1000 }));
    for (const r of records) await store.set(r);
    // The record that expires first goes: each new one expires later than the last.
    const kept = [records[2]!, records[3]!, records[4]!].sort(byId).map(summaryOf);
    assert.deepEqual(await store.list({ limit: 10 }), kept);
    assert.deepEqual(await store.list({ userId: 'A', limit: 10 }), kept);
    await store.close();
  });
});
