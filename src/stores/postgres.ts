/**
 * The PostgreSQL store (`store.kind: "postgres"`): one table of session records that every node
 * of a cluster shares. Each write is one statement, so it is atomic on its own; the conditional
 * writes carry their condition in the statement (`UPDATE … WHERE owner IS NOT DISTINCT FROM …
 * AND fence = … RETURNING`), so a late write from a node that lost the session is refused by
 * the database itself, whichever node sends it. A write resolves once PostgreSQL committed it
 * with synchronous_commit on: flushed to the server's WAL (and to its synchronous standbys, if
 * it names any).
 *
 * Every call is bounded by `store.callTimeout`: the wait for a connection, the statement on the
 * server (statement_timeout) and on the client (query_timeout), and the call as a whole. A write
 * whose connection dies is tried once more within that bound (E9, postgres-retry.ts).
 */
import pg from 'pg';
import { redactUrl, secretsOf } from '../url-secrets.ts';
import { withDeadline } from '../contexts/deadline.ts';
import { ResidentError } from '../errors.ts';
import { Connections, type Attempt } from './postgres-retry.ts';
import { ensureSchema, tableNames, type TableNames } from './postgres-schema.ts';
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

export interface PostgresStoreOptions {
  url: string;
  /** Validated by config.ts: a lower-case SQL name, optionally "schema.table". */
  table: string;
  /** Milliseconds any one call may take, connection included. */
  callTimeout: number;
  onCorrupt?: CorruptRecordListener;
  /** Connections kept at most (default 10). */
  maxConnections?: number;
}

/** A row as `pg` returns it: times (DOUBLE PRECISION) as numbers, the fence (BIGINT) as a string. */
const COLUMNS = 'id, user_id, client_ip, memento, memento_version, created_at, updated_at, last_activity_at, expires_at, owner, fence';
/** octet_length counts the UTF-8 bytes (the database encoding Resident requires). */
const SUMMARY_COLUMNS =
  'id, user_id, client_ip, memento_version, created_at, updated_at, last_activity_at, expires_at, owner, fence, coalesce(octet_length(memento), 0) AS memento_bytes';
/** $1…$11 in COLUMNS order (see `values`). */
const VALUES = '$1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11';
const SET_ALL = `user_id = $2, client_ip = $3, memento = $4, memento_version = $5, created_at = $6, updated_at = $7,
  last_activity_at = $8, expires_at = $9, owner = $10, fence = $11`;

/** The upsert's replacement: every column as the new record has it (set replaces the record). */
const SET_EXCLUDED = `user_id = excluded.user_id, client_ip = excluded.client_ip, memento = excluded.memento,
  memento_version = excluded.memento_version, created_at = excluded.created_at, updated_at = excluded.updated_at,
  last_activity_at = excluded.last_activity_at, expires_at = excluded.expires_at, owner = excluded.owner, fence = excluded.fence`;

function values(r: SessionRecord): unknown[] {
  return [r.id, r.userId, r.clientIp, r.memento, r.mementoVersion, r.createdAt, r.updatedAt, r.lastActivityAt, r.expiresAt, r.owner, r.fence];
}

/** Every statement, written once for the configured table. */
function statements(t: TableNames) {
  return {
    get: `SELECT ${COLUMNS} FROM ${t.sessions} WHERE id = $1`,
    existing: `SELECT id FROM ${t.sessions} WHERE id = ANY($1::text[])`,
    upsert: `INSERT INTO ${t.sessions} (${COLUMNS}) VALUES (${VALUES})
      ON CONFLICT (id) DO UPDATE SET ${SET_EXCLUDED}`,
    delete: `DELETE FROM ${t.sessions} WHERE id = $1`,
    // The conditional writes: check and write are one statement, atomic in the database. A row
    // that is there never matches `null`, a missing row never matches an owner/fence pair.
    insertNew: `INSERT INTO ${t.sessions} (${COLUMNS}) VALUES (${VALUES}) ON CONFLICT (id) DO NOTHING RETURNING 1`,
    updateIf: `UPDATE ${t.sessions} SET ${SET_ALL}
      WHERE id = $1 AND owner IS NOT DISTINCT FROM $12::text AND fence = $13 RETURNING 1`,
    deleteIf: `DELETE FROM ${t.sessions} WHERE id = $1 AND owner IS NOT DISTINCT FROM $2::text AND fence = $3 RETURNING 1`,
    absent: `SELECT NOT EXISTS (SELECT 1 FROM ${t.sessions} WHERE id = $1) AS absent`,
    // A setIf's retry: the row holds exactly the record written (params as `values`), every column.
    holds: `SELECT 1 FROM ${t.sessions} WHERE id = $1 AND user_id IS NOT DISTINCT FROM $2 AND client_ip = $3
      AND memento IS NOT DISTINCT FROM $4 AND memento_version = $5 AND created_at = $6 AND updated_at = $7
      AND last_activity_at = $8 AND expires_at IS NOT DISTINCT FROM $9 AND owner IS NOT DISTINCT FROM $10 AND fence = $11`,
    // The partial index on expires_at, oldest first: the sweep never scans every record.
    expired: `SELECT id FROM ${t.sessions} WHERE expires_at IS NOT NULL AND expires_at <= $1 ORDER BY expires_at LIMIT $2`,
    // The primary key, or the (user_id, id) index for one user: both in ID order.
    list: `SELECT ${SUMMARY_COLUMNS} FROM ${t.sessions} WHERE id > $1 ORDER BY id LIMIT $2`,
    listUser: `SELECT ${SUMMARY_COLUMNS} FROM ${t.sessions} WHERE user_id = $1 AND id > $2 ORDER BY id LIMIT $3`,
    // Moves the row aside and deletes it in one statement; a missing row leaves a note all the same.
    quarantine: `WITH moved AS (DELETE FROM ${t.sessions} WHERE id = $1 RETURNING *)
      INSERT INTO ${t.quarantine} (id, reason, row, quarantined_at)
      VALUES ($1, $2, (SELECT to_jsonb(moved) FROM moved), $3)`,
    // Its retry: no second note when the row is gone and the first attempt's note (same time) is there.
    quarantineAgain: `WITH moved AS (DELETE FROM ${t.sessions} WHERE id = $1 RETURNING *)
      INSERT INTO ${t.quarantine} (id, reason, row, quarantined_at)
      SELECT $1::text, $2::text, (SELECT to_jsonb(moved) FROM moved), $3::float8
      WHERE EXISTS (SELECT 1 FROM moved) OR NOT EXISTS (SELECT 1 FROM ${t.quarantine} WHERE id = $1 AND quarantined_at = $3::float8)`,
    // Readiness: the server answers, takes writes (not a standby, not read-only) and the table is there.
    ping: `SELECT pg_is_in_recovery() OR current_setting('transaction_read_only') = 'on' AS read_only,
      (SELECT true FROM ${t.sessions} LIMIT 0) AS table_there`,
  };
}

/**
 * What the cluster registry (src/cluster/postgres-registry.ts) runs through this store, so its
 * statements share the pool, the time bound, the retry after a lost connection (E9) and, for
 * writes of a record, the call order of that record's writes.
 */
export interface PostgresAccess {
  readonly names: TableNames;
  /** `attempt` as a write of record `id`: ordered after its previous writes, bounded, retried once (postgres-retry.ts). */
  write<T>(id: string, what: string, attempt: Attempt<T>): Promise<T>;
  /** `attempt` bounded and retried once after a lost connection, in no per-record order. */
  run<T>(what: string, attempt: Attempt<T>): Promise<T>;
  /** Where the store reports a record it quarantined. */
  readonly onCorrupt: CorruptRecordListener;
}

export class PostgresStore implements ContextStore {
  readonly kind = 'postgres';
  readonly #pool: pg.Pool;
  readonly #connections: Connections;
  readonly #sql: ReturnType<typeof statements>;
  readonly #names: TableNames;
  readonly #callTimeout: number;
  readonly #onCorrupt: CorruptRecordListener;
  /**
   * The last write of each ID still under way: the next write of that ID starts after it settles,
   * so writes and deletes of one ID take effect in call order although the pool runs them on
   * different connections. Writes of different IDs run side by side.
   */
  readonly #tails = new Map<string, Promise<unknown>>();
  #closed = false;

  private constructor(pool: pg.Pool, names: TableNames, options: PostgresStoreOptions) {
    this.#pool = pool;
    this.#connections = new Connections(pool);
    this.#sql = statements(names);
    this.#names = names;
    this.#callTimeout = options.callTimeout;
    this.#onCorrupt = options.onCorrupt ?? (() => {});
  }

  /**
   * Connects, creates or upgrades the tables, and returns the store; rejects with
   * RESIDENT_ERR_STORE_OPEN (naming the server without its password) within about callTimeout
   * when the server cannot be reached or the tables cannot be used.
   */
  static async open(options: PostgresStoreOptions): Promise<PostgresStore> {
    const pool = createPool(options);
    const names = tableNames(options.table);
    try {
      await withDeadline(ensureSchema(pool, names), options.callTimeout, 'RESIDENT_ERR_STORE_OPEN', 'creating the tables');
    } catch (error) {
      await pool.end().catch(() => {});
      const where = `${redactUrl(options.url)} (table ${options.table})`;
      throw new ResidentError('RESIDENT_ERR_STORE_OPEN', `Cannot open the PostgreSQL store at ${where}: ${describe(error, options.url)}`, { cause: error });
    }
    return new PostgresStore(pool, names, options);
  }

  /** For the cluster registry only (see PostgresAccess). */
  registryAccess(): PostgresAccess {
    return {
      names: this.#names,
      write: (id, what, attempt) => this.#write(id, what, attempt),
      run: (what, attempt) => this.#run(what, attempt),
      onCorrupt: this.#onCorrupt,
    };
  }

  async get(id: string): Promise<SessionRecord | undefined> {
    const { rows } = await this.#query<Row>('get', this.#sql.get, [id]);
    return recordOrQuarantine(rows[0], id, this, this.#onCorrupt);
  }

  async existing(ids: readonly string[]): Promise<Set<string>> {
    if (ids.length === 0) return new Set();
    const { rows } = await this.#query<{ id: string }>('existing', this.#sql.existing, [ids]);
    return new Set(rows.map((row) => row.id));
  }

  async set(record: SessionRecord): Promise<void> {
    const params = values(record);
    await this.#write(record.id, 'set', (client) => client.query(this.#sql.upsert, params));
  }

  async delete(id: string): Promise<void> {
    await this.#write(id, 'delete', (client) => client.query(this.#sql.delete, [id]));
  }

  async setIf(record: SessionRecord, expected: OwnerFence | null): Promise<boolean> {
    checkFenceStep(record, expected);
    const params = values(record);
    const [text, bound] = expected === null ? [this.#sql.insertNew, params] : [this.#sql.updateIf, [...params, expected.owner, expected.fence]];
    // A retry refused because the first attempt landed finds the row as we wrote it (postgres-retry.ts).
    return this.#write(record.id, 'setIf', async (client, retry) => {
      if ((await client.query(text, bound)).rowCount === 1) return true;
      return retry && (await client.query(this.#sql.holds, params)).rows.length === 1;
    });
  }

  async deleteIf(id: string, expected: OwnerFence | null): Promise<boolean> {
    checkExpected(expected);
    const absent = async (client: pg.PoolClient) => (await client.query<{ absent: boolean }>(this.#sql.absent, [id])).rows[0]!.absent;
    if (expected === null) return this.#write(id, 'deleteIf', absent);
    // A retry that deletes nothing because the first attempt did finds no record (postgres-retry.ts).
    return this.#write(id, 'deleteIf', async (client, retry) => {
      if ((await client.query(this.#sql.deleteIf, [id, expected.owner, expected.fence])).rowCount === 1) return true;
      return retry && absent(client);
    });
  }

  async expiredIds(now: number, limit: number): Promise<string[]> {
    const { rows } = await this.#query<{ id: string }>('expiredIds', this.#sql.expired, [now, limit]);
    return rows.map((row) => row.id);
  }

  async list(query: ListQuery): Promise<SessionSummary[]> {
    // ctx.userId never holds U+0000 (PostgreSQL text cannot), so no record is that user's; asking
    // PostgreSQL would fail the call instead (an admin lookup by a URL with %00).
    if (query.userId?.includes('\u0000')) return [];
    const after = query.after ?? '';
    const { rows } =
      query.userId === undefined
        ? await this.#query<SummaryRow>('list', this.#sql.list, [after, query.limit])
        : await this.#query<SummaryRow>('list', this.#sql.listUser, [query.userId, after, query.limit]);
    return rows.map(({ memento_bytes, ...row }) => {
      const { memento: _, ...summary } = fromRow({ ...row, memento: null });
      return { ...summary, mementoBytes: memento_bytes };
    });
  }

  async ping(): Promise<void> {
    const { rows } = await this.#query<{ read_only: boolean }>('ping', this.#sql.ping, []);
    if (rows[0]!.read_only) throw new ResidentError('RESIDENT_ERR_STORE_FAILED', 'the PostgreSQL server is read-only (a standby?): it takes no writes');
  }

  async quarantine(id: string, reason: string): Promise<void> {
    const params = [id, reason, Date.now()];
    await this.#write(id, 'quarantine', (client, retry) => client.query(retry ? this.#sql.quarantineAgain : this.#sql.quarantine, params));
  }

  /** Waits for the writes under way, then closes every connection. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await Promise.allSettled([...this.#tails.values()]);
    await this.#pool.end();
  }

  /**
   * A write of `id`, sent after the previous write of that ID settled. The chain waits for the
   * statement itself, not for its caller's deadline: a write that timed out for its caller may
   * still be on the server, and the next write of the ID must not overtake it. The caller's
   * deadline counts from the call, so waiting behind a slow write is bounded too, and a retry
   * after a lost connection (E9) is made only while that deadline is ahead.
   */
  #write<T>(id: string, what: string, attempt: Attempt<T>): Promise<T> {
    if (this.#closed) return this.#refuseClosed(what);
    const deadline = performance.now() + this.#callTimeout;
    const statement = () => this.#failed(this.#connections.retried(attempt, deadline), what);
    const previous = this.#tails.get(id);
    const run = previous ? previous.then(statement, statement) : statement();
    const tail = run.then(
      () => {},
      () => {},
    );
    this.#tails.set(id, tail);
    void tail.then(() => {
      if (this.#tails.get(id) === tail) this.#tails.delete(id);
    });
    return this.#bounded(run, what);
  }

  /**
   * A read: one statement, bounded by callTimeout, tried once more on a new connection after a
   * lost one as writes are (a read is idempotent): after a restart or failover of PostgreSQL
   * every idle connection of the pool is dead, and without the retry each would fail one call.
   */
  #query<R extends pg.QueryResultRow = pg.QueryResultRow>(what: string, text: string, params: unknown[]): Promise<pg.QueryResult<R>> {
    return this.#run(what, (client) => client.query<R>(text, params));
  }

  /** Any idempotent work as a read runs: bounded, tried once more after a lost connection, in no per-ID order. */
  #run<T>(what: string, attempt: Attempt<T>): Promise<T> {
    if (this.#closed) return this.#refuseClosed(what);
    const deadline = performance.now() + this.#callTimeout;
    return this.#bounded(this.#failed(this.#connections.retried(attempt, deadline), what), what);
  }

  /** Calls made after close() fail at once; those made before it still run (close waits for them). */
  #refuseClosed(what: string): Promise<never> {
    return Promise.reject(new ResidentError('RESIDENT_ERR_STORE_FAILED', `PostgreSQL ${what}: the store is closed`));
  }

  #bounded<T>(work: Promise<T>, what: string): Promise<T> {
    return withDeadline(work, this.#callTimeout, 'RESIDENT_ERR_STORE_FAILED', `PostgreSQL ${what}`);
  }

  /**
   * Statements' failure as a RESIDENT_ERR_STORE_FAILED. Each statement settles on its own within
   * about twice callTimeout: the pool's connection timeout, then statement_timeout / query_timeout.
   */
  async #failed<T>(work: Promise<T>, what: string): Promise<T> {
    try {
      return await work;
    } catch (error) {
      throw new ResidentError('RESIDENT_ERR_STORE_FAILED', `PostgreSQL ${what} failed: ${describe(error)}`, { cause: error });
    }
  }
}

function createPool(options: PostgresStoreOptions): pg.Pool {
  const pool = new pg.Pool({
    connectionString: options.url,
    max: options.maxConnections ?? 10,
    // Waiting for a connection (a new one, or a free one of the pool) is bounded too.
    connectionTimeoutMillis: options.callTimeout,
    // The server cancels a statement that runs longer (a lock wait included); the client stops
    // waiting for one that never answers (a partition) and drops that connection.
    statement_timeout: options.callTimeout,
    query_timeout: options.callTimeout,
    keepAlive: true,
    idleTimeoutMillis: 30_000,
    application_name: 'resident',
    // A write resolves once it is durable: synchronous_commit on for every connection, whatever
    // the server's or the role's default (ensureSchema refuses a URL whose own options turn it off).
    options: '-c synchronous_commit=on',
  });
  // An idle connection the server drops (a restart, pg_terminate_backend) reports here; without a
  // listener it would crash the process. The pool discards it; the next call opens another.
  pool.on('error', () => {});
  return pool;
}

/** The reason of a failure, never with the URL's password in it. */
function describe(error: unknown, url?: string): string {
  const e = error as { message?: string; code?: string; errors?: Array<{ message?: string }> };
  // Node's connect to "localhost" tries ::1 and 127.0.0.1 and fails with an AggregateError without a message.
  let reason = e.message || e.errors?.map((inner) => inner.message).join('; ') || e.code || String(error);
  for (const secret of url ? secretsOf(url) : []) reason = reason.replaceAll(secret, '***');
  return reason;
}
