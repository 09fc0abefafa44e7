/**
 * The PostgreSQL store's tables, and their creation at startup: idempotent, versioned, and safe
 * when several nodes start at once (one advisory lock per table, held by the DDL transaction).
 */
import { createHash } from 'node:crypto';
import type { Pool } from 'pg';

/** Bump with a new entry in MIGRATIONS when the tables change. */
export const SCHEMA_VERSION = 2;

/** The quoted names of everything the store owns for one configured `store.table`. */
export interface TableNames {
  /** The configured name as written in the config ("schema.table" or "table"), for the lock key. */
  configured: string;
  sessions: string;
  quarantine: string;
  /** One row: the schema version of these tables, so a later Resident can migrate them. */
  meta: string;
  /** The cluster registry's node leases (src/cluster/postgres-registry.ts); since version 2. */
  leases: string;
  expiresIndex: string;
  userIndex: string;
}

const MAX_IDENTIFIER = 63;

/**
 * Double-quotes an identifier. The configured table name is already validated by config.ts
 * (lower-case letters, digits, "_"), so quoting is a second line, not the only one.
 */
export function quoteIdentifier(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}

/**
 * `base` + `_suffix`, kept within PostgreSQL's 63-byte identifiers: a long table name is cut and
 * given a hash of itself, so two long names never share an index or a quarantine table (PostgreSQL
 * would cut both silently to the same name).
 */
function derivedName(base: string, suffix: string): string {
  const plain = `${base}_${suffix}`;
  if (plain.length <= MAX_IDENTIFIER) return plain;
  const hash = createHash('sha256').update(base).digest('hex').slice(0, 8);
  return `${base.slice(0, MAX_IDENTIFIER - suffix.length - hash.length - 2)}_${hash}_${suffix}`;
}

export function tableNames(configured: string): TableNames {
  const dot = configured.indexOf('.');
  const schema = dot === -1 ? undefined : configured.slice(0, dot);
  const base = dot === -1 ? configured : configured.slice(dot + 1);
  const qualified = (name: string) => (schema === undefined ? quoteIdentifier(name) : `${quoteIdentifier(schema)}.${quoteIdentifier(name)}`);
  return {
    configured,
    sessions: qualified(base),
    quarantine: qualified(derivedName(base, 'quarantine')),
    meta: qualified(derivedName(base, 'schema')),
    leases: qualified(derivedName(base, 'leases')),
    // An index lives in its table's schema: its name is never qualified.
    expiresIndex: quoteIdentifier(derivedName(base, 'expires_at')),
    userIndex: quoteIdentifier(derivedName(base, 'user_id')),
  };
}

/**
 * The tables as they are now. Times are wall-clock milliseconds as JavaScript has them, fractions
 * included (DOUBLE PRECISION: the same 64-bit float, returned exactly). IDs and user IDs sort
 * by byte (COLLATE "C"), the order the contract lists in, whatever the database's locale, so
 * paging by ID reads the primary key and the (user_id, id) index in order.
 */
function schema(t: TableNames): string {
  return `
    CREATE TABLE IF NOT EXISTS ${t.sessions} (
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
    CREATE INDEX IF NOT EXISTS ${t.expiresIndex} ON ${t.sessions} (expires_at) WHERE expires_at IS NOT NULL;
    CREATE INDEX IF NOT EXISTS ${t.userIndex} ON ${t.sessions} (user_id, id) WHERE user_id IS NOT NULL;
    CREATE TABLE IF NOT EXISTS ${t.quarantine} (
      id             TEXT   NOT NULL,
      reason         TEXT   NOT NULL,
      row            JSONB,
      quarantined_at DOUBLE PRECISION NOT NULL
    );
    ${leasesTable(t)}
  `;
}

/**
 * One row per node incarnation's lease. expires_at is the database's time (clock_timestamp()),
 * never a node's: the store is the only judge of which leases are alive.
 */
function leasesTable(t: TableNames): string {
  return `
    CREATE TABLE IF NOT EXISTS ${t.leases} (
      owner      TEXT COLLATE "C" PRIMARY KEY,
      node_id    TEXT NOT NULL,
      url        TEXT NOT NULL,
      expires_at TIMESTAMPTZ NOT NULL
    );
  `;
}

/** The step from each older schema version to the next, run in the same transaction as the schema. */
const MIGRATIONS: Record<number, (t: TableNames) => string> = {
  // 1 → 2: the cluster registry's leases (the sessions table already had owner and fence).
  1: leasesTable,
};

/**
 * Creates or upgrades the tables in one transaction. The advisory lock (keyed by the table name)
 * makes nodes that start together take turns: concurrent CREATE TABLE IF NOT EXISTS can otherwise
 * fail on PostgreSQL's catalog unique index. Throws when the tables are newer than this Resident.
 */
export async function ensureSchema(pool: Pool, t: TableNames): Promise<void> {
  const client = await pool.connect();
  let failed: unknown;
  try {
    // Writes are acknowledged as durable: refuse a connection where commits are not flushed (only
    // `options` in the URL itself can override the synchronous_commit=on the pool asks for).
    const commit = await client.query<{ synchronous_commit: string }>('SHOW synchronous_commit');
    if (commit.rows[0]?.synchronous_commit === 'off') {
      throw new Error('synchronous_commit is off for this connection (the URL\'s options?): acknowledged writes would not be durable');
    }
    await client.query('BEGIN');
    await client.query('SELECT pg_advisory_xact_lock(hashtextextended($1, 0))', [`resident schema ${t.configured}`]);
    const found = await client.query<{ meta: boolean; complete: boolean }>(
      'SELECT to_regclass($1) IS NOT NULL AS meta, to_regclass($2) IS NOT NULL AND to_regclass($3) IS NOT NULL AND to_regclass($4) IS NOT NULL AS complete',
      [t.meta, t.sessions, t.quarantine, t.leases],
    );
    const { meta, complete } = found.rows[0]!;
    const version = meta ? ((await client.query<{ version: number }>(`SELECT version FROM ${t.meta}`)).rows[0]?.version ?? 0) : 0;
    if (version > SCHEMA_VERSION) {
      throw new Error(`the table ${t.configured} has schema version ${version}, newer than this Resident's ${SCHEMA_VERSION}`);
    }
    // Tables already as they should be: no DDL at all, so a restart needs no CREATE privilege and
    // takes no lock that would wait behind the other nodes' traffic.
    if (version < SCHEMA_VERSION || !complete) {
      if (!meta) await client.query(`CREATE TABLE ${t.meta} (version INTEGER NOT NULL, only_row BOOLEAN PRIMARY KEY DEFAULT true CHECK (only_row))`);
      if (version > 0) for (let from = version; from < SCHEMA_VERSION; from++) await client.query(MIGRATIONS[from]!(t));
      await client.query(schema(t));
      await client.query(`INSERT INTO ${t.meta} (version) VALUES ($1) ON CONFLICT (only_row) DO UPDATE SET version = excluded.version`, [SCHEMA_VERSION]);
    }
    await client.query('COMMIT');
  } catch (error) {
    failed = error;
    await client.query('ROLLBACK').catch(() => {});
    throw error;
  } finally {
    // A connection that failed mid-transaction is not given back for reuse.
    client.release(failed instanceof Error ? failed : undefined);
  }
}
