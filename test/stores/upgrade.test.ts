/**
 * Records stored before owners and fences existed (SQLite schema version 1, record files without
 * the two fields) read back as never claimed and take conditional writes; a SQLite database is
 * migrated to schema version 2 when it is opened. A PostgreSQL store of schema version 1 (before
 * the cluster registry's leases) is migrated to version 2, its records kept and claimable.
 */
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, test } from 'node:test';
import Database from 'better-sqlite3';
import { newSessionId } from '../../src/contexts/ids.ts';
import { PostgresRegistry } from '../../src/cluster/postgres-registry.ts';
import { FileStore } from '../../src/stores/file.ts';
import { PostgresStore } from '../../src/stores/postgres.ts';
import { SCHEMA_VERSION, tableNames, type TableNames } from '../../src/stores/postgres-schema.ts';
import { SqliteStore } from '../../src/stores/sqlite.ts';
import type { ContextStore, SessionRecord } from '../../src/stores/store.ts';
import { skipOrFailOnCi } from '../helpers.ts';
import { POSTGRES_URL, postgresUnavailable, tempTable, withClient } from './postgres-helpers.ts';
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

/** PostgreSQL schema version 1, as Resident created it before the registry's leases (commit 1292a31). */
const POSTGRES_SCHEMA_1 = (t: TableNames) => `
  CREATE TABLE ${t.meta} (version INTEGER NOT NULL, only_row BOOLEAN PRIMARY KEY DEFAULT true CHECK (only_row));
  INSERT INTO ${t.meta} (version) VALUES (1);
  CREATE TABLE ${t.sessions} (
    id               TEXT COLLATE "C" PRIMARY KEY,
    user_id          TEXT COLLATE "C",
    client_ip        TEXT    NOT NULL,
    memento          TEXT,
    memento_version  INTEGER NOT NULL,
    created_at       DOUBLE PRECISION NOT NULL,
    updated_at       DOUBLE PRECISION NOT NULL,
    last_activity_at DOUBLE PRECISION NOT NULL,
    expires_at       DOUBLE PRECISION,
    owner            TEXT,
    fence            BIGINT  NOT NULL DEFAULT 0
  );
  CREATE INDEX ${t.expiresIndex} ON ${t.sessions} (expires_at) WHERE expires_at IS NOT NULL;
  CREATE INDEX ${t.userIndex} ON ${t.sessions} (user_id, id) WHERE user_id IS NOT NULL;
  CREATE TABLE ${t.quarantine} (
    id             TEXT   NOT NULL,
    reason         TEXT   NOT NULL,
    row            JSONB,
    quarantined_at DOUBLE PRECISION NOT NULL
  );
`;

test('a PostgreSQL store of schema version 1 is migrated to version 2 on open (the leases table added), its records kept and claimable', async (t) => {
  const why = await postgresUnavailable();
  if (why) return skipOrFailOnCi(t, why);
  const table = tempTable();
  const names = tableNames(table);
  const [old, owned] = oldRecords().map(unclaimed) as [SessionRecord, SessionRecord];
  const held = { ...owned, owner: 'node-a#1', fence: 3 };
  await withClient(async (client) => {
    await client.query(POSTGRES_SCHEMA_1(names));
    for (const r of [old, held]) {
      await client.query(
        `INSERT INTO ${names.sessions} (id, user_id, client_ip, memento, memento_version, created_at, updated_at, last_activity_at, expires_at, owner, fence)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`,
        [r.id, r.userId, r.clientIp, r.memento, r.mementoVersion, r.createdAt, r.updatedAt, r.lastActivityAt, r.expiresAt, r.owner, r.fence],
      );
    }
  });
  const layout = (configured: string) =>
    withClient(async (client) => {
      const n = tableNames(configured);
      const columns = await client.query(
        `SELECT table_name = $1 AS leases, column_name, data_type, is_nullable, collation_name FROM information_schema.columns
          WHERE table_name IN ($1, $2) ORDER BY table_name = $1, ordinal_position`,
        [JSON.parse(n.leases), JSON.parse(n.sessions)],
      );
      const version = await client.query(`SELECT version FROM ${n.meta}`);
      return { columns: columns.rows, version: version.rows };
    });

  const store = await PostgresStore.open({ url: POSTGRES_URL, table, callTimeout: 5_000 });
  try {
    assert.deepEqual(await store.get(old.id), old, 'an old record is kept');
    assert.deepEqual(await store.get(held.id), held);
    const registry = new PostgresRegistry(store);
    const lease = { owner: 'node-b#2', nodeId: 'node-b', url: 'http://10.0.0.2:7000/' };
    assert.equal(await registry.acquire(lease, 60_000), true);
    assert.deepEqual(await registry.claim(old.id, lease.owner), { kind: 'ours', record: { ...old, owner: lease.owner, fence: 1 } });
    assert.deepEqual(await registry.claim(held.id, lease.owner), { kind: 'ours', record: { ...held, owner: lease.owner, fence: 4 }, from: held.owner! }, 'its owner holds no lease');
  } finally {
    await store.close();
  }
  const fresh = tempTable();
  await (await PostgresStore.open({ url: POSTGRES_URL, table: fresh, callTimeout: 5_000 })).close();
  const migrated = await layout(table);
  assert.deepEqual(migrated.version, [{ version: SCHEMA_VERSION }]);
  assert.equal(SCHEMA_VERSION, 2);
  assert.ok(migrated.columns.some((c) => c.leases), 'the leases table is there');
  assert.deepEqual(migrated, await layout(fresh), 'a migrated database has the layout of a new one');
  const again = await PostgresStore.open({ url: POSTGRES_URL, table, callTimeout: 5_000 });
  assert.equal((await again.get(old.id))?.fence, 1, 'opening a migrated database again keeps it as it is');
  await again.close();
});
