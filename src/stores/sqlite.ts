/**
 * The embedded default store: one SQLite database (better-sqlite3) in WAL mode. Writes that
 * arrive in the same event-loop turn share one transaction, so suspending 100,000 contexts at
 * shutdown is a handful of commits, not 100,000. A committed transaction survives `kill -9`
 * in any `synchronous` mode; `synchronous: "full"` also survives power loss.
 */
import Database from 'better-sqlite3';
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { ResidentError } from '../errors.ts';
import {
  checkExpected,
  checkFenceStep,
  type ContextStore,
  type CorruptRecordListener,
  type ListQuery,
  type OwnerFence,
  type SessionRecord,
  type SessionSummary,
} from './store.ts';
import { fromRow, recordOrQuarantine, type Row, type SummaryRow } from './sql-row.ts';

const SCHEMA_VERSION = 2;
/** How long a write waits for another process's lock. */
const BUSY_TIMEOUT_MS = 5_000;
const PING_BUSY_TIMEOUT_MS = 100;

const SCHEMA = `
  CREATE TABLE IF NOT EXISTS sessions (
    id               TEXT    PRIMARY KEY,
    user_id          TEXT,
    client_ip        TEXT    NOT NULL,
    memento          TEXT,
    memento_version  INTEGER NOT NULL,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    last_activity_at INTEGER NOT NULL,
    expires_at       INTEGER,
    owner            TEXT,
    fence            INTEGER NOT NULL DEFAULT 0
  ) WITHOUT ROWID;
  CREATE INDEX IF NOT EXISTS sessions_expires_at ON sessions (expires_at) WHERE expires_at IS NOT NULL;
  CREATE INDEX IF NOT EXISTS sessions_user_id ON sessions (user_id) WHERE user_id IS NOT NULL;
  -- One row, rewritten by ping(): readiness means "takes writes", not just "answers".
  CREATE TABLE IF NOT EXISTS probe (id INTEGER PRIMARY KEY CHECK (id = 1), at INTEGER NOT NULL);
  CREATE TABLE IF NOT EXISTS quarantine (
    id             TEXT    NOT NULL,
    reason         TEXT    NOT NULL,
    row            TEXT,
    quarantined_at INTEGER NOT NULL
  );
`;

/**
 * The step from each older schema version to the next, run in the same transaction as SCHEMA.
 */
const MIGRATIONS: Record<number, string> = {
  // Owner and fencing number (issue 10): rows written before them read as never claimed. The
  // columns go last, where SCHEMA puts them, so old and new databases have one layout.
  1: `ALTER TABLE sessions ADD COLUMN owner TEXT;
      ALTER TABLE sessions ADD COLUMN fence INTEGER NOT NULL DEFAULT 0;`,
};

const SUMMARY_COLUMNS =
  'id, user_id, client_ip, memento_version, created_at, updated_at, last_activity_at, expires_at, owner, fence, coalesce(length(CAST(memento AS BLOB)), 0) AS memento_bytes';

const INSERT = `INSERT INTO sessions (id, user_id, client_ip, memento, memento_version, created_at, updated_at, last_activity_at, expires_at, owner, fence)
  VALUES (@id, @userId, @clientIp, @memento, @mementoVersion, @createdAt, @updatedAt, @lastActivityAt, @expiresAt, @owner, @fence)`;

/** One entry of a write batch, applied in call order inside one transaction. */
type Write =
  | { kind: 'set'; record: SessionRecord }
  | { kind: 'delete'; id: string }
  | { kind: 'setIf'; record: SessionRecord; expected: OwnerFence | null }
  | { kind: 'deleteIf'; id: string; expected: OwnerFence | null };

/** A write waiting for its turn's transaction, with its caller's promise. */
interface Pending {
  write: Write;
  resolve: (written: boolean) => void;
  reject: (error: Error) => void;
}

export interface SqliteStoreOptions {
  path: string;
  synchronous?: 'normal' | 'full';
  onCorrupt?: CorruptRecordListener;
}

export class SqliteStore implements ContextStore {
  readonly kind = 'sqlite';
  readonly #db: Database.Database;
  readonly #onCorrupt: CorruptRecordListener;
  readonly #statements;
  /** Writes and deletes waiting for this turn's transaction, in call order. */
  #batch: Pending[] = [];
  #flushScheduled = false;

  constructor(options: SqliteStoreOptions) {
    this.#onCorrupt = options.onCorrupt ?? (() => {});
    try {
      mkdirSync(dirname(options.path), { recursive: true });
      this.#db = new Database(options.path, { timeout: BUSY_TIMEOUT_MS });
      this.#db.pragma('journal_mode = WAL');
      this.#db.pragma(`synchronous = ${options.synchronous === 'full' ? 'FULL' : 'NORMAL'}`);
      const version = this.#db.pragma('user_version', { simple: true }) as number;
      if (version > SCHEMA_VERSION) {
        throw new Error(`the database has schema version ${version}, newer than this Resident's ${SCHEMA_VERSION}`);
      }
      // An immediate transaction takes the write lock now: a database locked by another
      // process fails here, at startup, after busy_timeout, not on the first suspend.
      this.#db.transaction(() => {
        // A new database (version 0) gets SCHEMA as it is now; an older one is brought up first.
        if (version > 0) for (let from = version; from < SCHEMA_VERSION; from++) this.#db.exec(MIGRATIONS[from]!);
        this.#db.exec(SCHEMA);
        this.#db.pragma(`user_version = ${SCHEMA_VERSION}`);
      }).immediate();
    } catch (error) {
      throw new ResidentError('RESIDENT_ERR_STORE_OPEN', `Cannot open the SQLite store at ${options.path}: ${describe(error)}`, { cause: error });
    }
    this.#statements = {
      get: this.#db.prepare<[string], Row>('SELECT * FROM sessions WHERE id = ?'),
      upsert: this.#db.prepare<[SessionRecord]>(
        `${INSERT} ON CONFLICT (id) DO UPDATE SET user_id = excluded.user_id, client_ip = excluded.client_ip, memento = excluded.memento,
           memento_version = excluded.memento_version, updated_at = excluded.updated_at,
           last_activity_at = excluded.last_activity_at, expires_at = excluded.expires_at, owner = excluded.owner, fence = excluded.fence`,
      ),
      // The conditional writes: the condition is in the statement, so the check and the write are
      // one step of the transaction (the shape PostgreSQL's store uses too).
      insertNew: this.#db.prepare<[SessionRecord]>(`${INSERT} ON CONFLICT (id) DO NOTHING`),
      updateIf: this.#db.prepare<[SessionRecord & { expectedOwner: string | null; expectedFence: number }]>(
        `UPDATE sessions SET user_id = @userId, client_ip = @clientIp, memento = @memento, memento_version = @mementoVersion,
           updated_at = @updatedAt, last_activity_at = @lastActivityAt, expires_at = @expiresAt, owner = @owner, fence = @fence
         WHERE id = @id AND owner IS @expectedOwner AND fence = @expectedFence`,
      ),
      delete: this.#db.prepare<[string]>('DELETE FROM sessions WHERE id = ?'),
      deleteIf: this.#db.prepare<[string, string | null, number]>('DELETE FROM sessions WHERE id = ? AND owner IS ? AND fence = ?'),
      has: this.#db.prepare<[string], number>('SELECT 1 FROM sessions WHERE id = ?').pluck(),
      // One statement for any number of IDs: the list arrives as a JSON array.
      existing: this.#db.prepare<[string], { id: string }>('SELECT id FROM sessions WHERE id IN (SELECT value FROM json_each(?))').pluck(),
      expired: this.#db.prepare<[number, number], { id: string }>(
        'SELECT id FROM sessions WHERE expires_at IS NOT NULL AND expires_at <= ? ORDER BY expires_at LIMIT ?',
      ),
      // Both listings read an index in ID order: the primary key, or (user_id, id) for a user.
      list: this.#db.prepare<[string, number], SummaryRow>(`SELECT ${SUMMARY_COLUMNS} FROM sessions WHERE id > ? ORDER BY id LIMIT ?`),
      listUser: this.#db.prepare<[string, string, number], SummaryRow>(
        `SELECT ${SUMMARY_COLUMNS} FROM sessions WHERE user_id = ? AND id > ? ORDER BY id LIMIT ?`,
      ),
      ping: this.#db.prepare<[number]>('INSERT OR REPLACE INTO probe (id, at) VALUES (1, ?)'),
      quarantine: this.#db.prepare<[string, string, string | null, number]>(
        'INSERT INTO quarantine (id, reason, row, quarantined_at) VALUES (?, ?, ?, ?)',
      ),
    };
  }

  async get(id: string): Promise<SessionRecord | undefined> {
    return recordOrQuarantine(this.#statements.get.get(id), id, this, this.#onCorrupt);
  }

  async existing(ids: readonly string[]): Promise<Set<string>> {
    return new Set(this.#statements.existing.all(JSON.stringify(ids)) as unknown as string[]);
  }

  async set(record: SessionRecord): Promise<void> {
    await this.#enqueue({ kind: 'set', record: { ...record } });
  }

  /** A delete shares the write batch, so it never overtakes an earlier write of the same ID. */
  async delete(id: string): Promise<void> {
    await this.#enqueue({ kind: 'delete', id });
  }

  /** Judged inside the batch's transaction, after every write called before it. */
  async setIf(record: SessionRecord, expected: OwnerFence | null): Promise<boolean> {
    checkFenceStep(record, expected);
    return this.#enqueue({ kind: 'setIf', record: { ...record }, expected: expected && { ...expected } });
  }

  async deleteIf(id: string, expected: OwnerFence | null): Promise<boolean> {
    checkExpected(expected);
    return this.#enqueue({ kind: 'deleteIf', id, expected: expected && { ...expected } });
  }

  #enqueue(write: Write): Promise<boolean> {
    return new Promise((resolve, reject) => {
      this.#batch.push({ write, resolve, reject });
      if (!this.#flushScheduled) {
        this.#flushScheduled = true;
        setImmediate(() => this.#flush());
      }
    });
  }

  #flush(): void {
    const batch = this.#batch;
    this.#batch = [];
    this.#flushScheduled = false;
    let written: boolean[];
    try {
      written = this.#db.transaction(() => batch.map(({ write }) => this.#apply(write)))();
    } catch (error) {
      // The whole transaction rolled back: nothing of it is claimed durable (E4, E5). One
      // write SQLite cannot take (a value it cannot bind) must not fail the other sessions'
      // writes of this turn: each is tried again alone, in call order, and fails alone.
      if (batch.length > 1) {
        for (const write of batch) this.#flushAlone(write);
        return;
      }
      batch[0]!.reject(new ResidentError('RESIDENT_ERR_STORE_FAILED', `SQLite write failed: ${describe(error)}`, { cause: error }));
      return;
    }
    batch.forEach((write, at) => write.resolve(written[at]!));
  }

  #flushAlone(write: Pending): void {
    let written: boolean;
    try {
      written = this.#db.transaction(() => this.#apply(write.write))();
    } catch (error) {
      write.reject(new ResidentError('RESIDENT_ERR_STORE_FAILED', `SQLite write failed: ${describe(error)}`, { cause: error }));
      return;
    }
    write.resolve(written);
  }

  /** Runs one write inside the batch's transaction; false when its condition refused it. */
  #apply(write: Write): boolean {
    const statements = this.#statements;
    switch (write.kind) {
      case 'set':
        statements.upsert.run(write.record);
        return true;
      case 'delete':
        statements.delete.run(write.id);
        return true;
      case 'setIf': {
        const { record, expected } = write;
        const result =
          expected === null
            ? statements.insertNew.run(record)
            : statements.updateIf.run({ ...record, expectedOwner: expected.owner, expectedFence: expected.fence });
        return result.changes === 1;
      }
      case 'deleteIf':
        if (write.expected === null) return statements.has.get(write.id) === undefined;
        return statements.deleteIf.run(write.id, write.expected.owner, write.expected.fence).changes === 1;
    }
  }

  async expiredIds(now: number, limit: number): Promise<string[]> {
    return this.#statements.expired.all(now, limit).map((row) => row.id);
  }

  async list(query: ListQuery): Promise<SessionSummary[]> {
    const after = query.after ?? '';
    const rows =
      query.userId === undefined ? this.#statements.list.all(after, query.limit) : this.#statements.listUser.all(query.userId, after, query.limit);
    return rows.map(({ memento_bytes, ...row }) => {
      const { memento: _, ...summary } = fromRow({ ...row, memento: null });
      return { ...summary, mementoBytes: memento_bytes };
    });
  }

  /**
   * Writes the one probe row: the database takes writes now (a full disk fails here, as it
   * fails suspends). With a short busy timeout, so another process holding the write lock
   * costs the probe a moment, not this thread the whole 5 s busy timeout.
   */
  async ping(): Promise<void> {
    if (!this.#db.open) throw new ResidentError('RESIDENT_ERR_STORE_FAILED', 'the SQLite store is closed');
    if (this.#batch.length > 0) this.#flush();
    this.#db.pragma(`busy_timeout = ${PING_BUSY_TIMEOUT_MS}`);
    try {
      this.#statements.ping.run(Date.now());
    } catch (error) {
      throw new ResidentError('RESIDENT_ERR_STORE_FAILED', `SQLite does not take writes: ${describe(error)}`, { cause: error });
    } finally {
      this.#db.pragma(`busy_timeout = ${BUSY_TIMEOUT_MS}`);
    }
  }

  async quarantine(id: string, reason: string): Promise<void> {
    if (this.#batch.length > 0) this.#flush();
    this.#db.transaction(() => {
      const row = this.#statements.get.get(id);
      this.#statements.quarantine.run(id, reason, row ? JSON.stringify(row) : null, Date.now());
      this.#statements.delete.run(id);
    })();
  }

  async close(): Promise<void> {
    if (this.#batch.length > 0) this.#flush();
    if (this.#db.open) this.#db.close();
  }
}

function describe(error: unknown): string {
  const code = (error as { code?: string }).code;
  if (code === 'SQLITE_BUSY') return 'the database is locked by another process';
  if (code === 'SQLITE_NOTADB' || code === 'SQLITE_CORRUPT') return 'the file is not a valid SQLite database (corrupt?)';
  if (code === 'SQLITE_CANTOPEN' || code === 'EACCES') return 'the path cannot be opened for writing';
  return (error as Error).message;
}
