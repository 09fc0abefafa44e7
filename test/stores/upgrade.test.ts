/**
 * Records stored before owners and fences existed (SQLite schema version 1, record files without
 * the two fields) read back as never claimed and take conditional writes; a SQLite database is
 * migrated to schema version 2 when it is opened.
 */
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, test } from 'node:test';
import Database from 'better-sqlite3';
import { newSessionId } from '../../src/contexts/ids.ts';
import { FileStore } from '../../src/stores/file.ts';
import { SqliteStore } from '../../src/stores/sqlite.ts';
import type { ContextStore, SessionRecord } from '../../src/stores/store.ts';
import { cleanup, tempDir, withDb } from './server-helpers.ts';

after(cleanup);

/** Schema version 1, as Resident created it before owners existed (commit 73051a6). */
const SCHEMA_1 = `
  CREATE TABLE IF NOT EXISTS sessions (
    id               TEXT    PRIMARY KEY,
    user_id          TEXT,
    client_ip        TEXT    NOT NULL,
    memento          TEXT,
    memento_version  INTEGER NOT NULL,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    last_activity_at INTEGER NOT NULL,
    expires_at       INTEGER
  ) WITHOUT ROWID;
  CREATE INDEX IF NOT EXISTS sessions_expires_at ON sessions (expires_at) WHERE expires_at IS NOT NULL;
  CREATE INDEX IF NOT EXISTS sessions_user_id ON sessions (user_id) WHERE user_id IS NOT NULL;
  CREATE TABLE IF NOT EXISTS probe (id INTEGER PRIMARY KEY CHECK (id = 1), at INTEGER NOT NULL);
  CREATE TABLE IF NOT EXISTS quarantine (
    id             TEXT    NOT NULL,
    reason         TEXT    NOT NULL,
    row            TEXT,
    quarantined_at INTEGER NOT NULL
  );
`;

/** A record as it was before owners: every field of today's but owner and fence. */
type OldRecord = Omit<SessionRecord, 'owner' | 'fence'>;

function oldRecords(): OldRecord[] {
  const now = Date.now();
  return [
    {
      id: newSessionId(),
      userId: 'user-1',
      memento: '[{"n":1},41]',
      mementoVersion: 3,
      clientIp: '::1',
      createdAt: now - 5000,
      updatedAt: now - 100,
      lastActivityAt: now - 200,
      expiresAt: now + 60_000,
    },
    { id: newSessionId(), userId: null, memento: null, mementoVersion: 1, clientIp: '10.0.0.7', createdAt: now, updatedAt: now, lastActivityAt: now, expiresAt: null },
  ];
}

const unclaimed = (old: OldRecord): SessionRecord => ({ ...old, owner: null, fence: 0 });

/** Reads the old records back as never claimed, then claims, refuses a stale claim, writes and deletes conditionally. */
async function assertUpgraded(store: ContextStore, olds: OldRecord[]): Promise<void> {
  for (const old of olds) assert.deepEqual(await store.get(old.id), unclaimed(old), 'an old record reads as never claimed');
  assert.deepEqual(
    (await store.list({ limit: 10 })).map(({ id, owner, fence }) => ({ id, owner, fence })),
    olds.map(({ id }) => ({ id, owner: null, fence: 0 })).sort((a, b) => (a.id < b.id ? -1 : 1)),
  );
  const [first, second] = olds as [OldRecord, OldRecord];
  const claimed: SessionRecord = { ...first, owner: 'node-a/1', fence: 1, memento: '["claimed"]' };
  assert.equal(await store.setIf(claimed, null), false, 'the record is there');
  assert.equal(await store.setIf(claimed, { owner: null, fence: 0 }), true, 'claimed from never claimed');
  assert.equal(await store.setIf({ ...claimed, owner: 'node-b/1' }, { owner: null, fence: 0 }), false, 'a second claim is stale');
  assert.deepEqual(await store.get(first.id), claimed);
  assert.equal(await store.deleteIf(second.id, { owner: 'node-a/1', fence: 1 }), false);
  assert.equal(await store.deleteIf(second.id, { owner: null, fence: 0 }), true);
  assert.equal(await store.get(second.id), undefined);
}

test('a SQLite database of schema version 1 is migrated to version 2 on open; its rows read as never claimed', async () => {
  const path = join(tempDir(), 'contexts.db');
  const olds = oldRecords();
  const v1 = new Database(path);
  v1.pragma('journal_mode = WAL');
  v1.exec(SCHEMA_1);
  v1.pragma('user_version = 1');
  const insert = v1.prepare(
    `INSERT INTO sessions (id, user_id, client_ip, memento, memento_version, created_at, updated_at, last_activity_at, expires_at)
     VALUES (@id, @userId, @clientIp, @memento, @mementoVersion, @createdAt, @updatedAt, @lastActivityAt, @expiresAt)`,
  );
  for (const old of olds) insert.run(old);
  v1.close();

  const store = new SqliteStore({ path });
  await assertUpgraded(store, olds);
  await store.close();

  const columns = (file: string) =>
    withDb(file, (db) => ({
      version: db.pragma('user_version', { simple: true }),
      columns: db.prepare('SELECT name, type, "notnull", dflt_value FROM pragma_table_info(?)').all('sessions'),
    }));
  const freshPath = join(tempDir(), 'fresh.db');
  await new SqliteStore({ path: freshPath }).close();
  assert.deepEqual(columns(path), columns(freshPath), 'a migrated database has the layout of a new one');
  assert.equal(columns(path).version, 2);

  const again = new SqliteStore({ path });
  assert.equal((await again.get(olds[0]!.id))?.fence, 1, 'opening a migrated database again keeps it as it is');
  await again.close();
});

test('record files written before owners read as never claimed and take conditional writes', async () => {
  const dir = tempDir();
  const olds = oldRecords();
  for (const old of olds) writeFileSync(join(dir, `${old.id}.json`), JSON.stringify(old));
  const store = await FileStore.open({ dir });
  await assertUpgraded(store, olds);
  assert.deepEqual(JSON.parse(readFileSync(join(dir, `${olds[0]!.id}.json`), 'utf8')), { ...olds[0], owner: 'node-a/1', fence: 1, memento: '["claimed"]' });
  await store.close();
});

test('a record file with an owner but no fence is not an old record: it is quarantined', async () => {
  const dir = tempDir();
  const [old] = oldRecords() as [OldRecord];
  writeFileSync(join(dir, `${old.id}.json`), JSON.stringify({ ...old, owner: 'node-a/1' }));
  const corrupt: string[] = [];
  const store = await FileStore.open({ dir, onCorrupt: (id) => corrupt.push(id) });
  assert.equal(await store.get(old.id), undefined);
  assert.deepEqual(corrupt, [old.id]);
  assert.equal(existsSync(join(dir, `${old.id}.json`)), false);
  assert.equal(readdirSync(join(dir, 'quarantine')).length, 1);
  await store.close();
});
