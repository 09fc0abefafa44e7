/**
 * The PostgreSQL server the store tests run against (RESIDENT_TEST_POSTGRES_URL, default the
 * machine's trust-auth server, database `test`), tables of their own per run, dropped when the
 * test file is done.
 */
import { randomBytes } from 'node:crypto';
import { after } from 'node:test';
import pg from 'pg';
import { tableNames } from '../../src/stores/postgres-schema.ts';

export const POSTGRES_URL = process.env.RESIDENT_TEST_POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/test';

/** Why PostgreSQL cannot be used here, or null when it answers. */
export async function postgresUnavailable(): Promise<string | null> {
  const client = new pg.Client({ connectionString: POSTGRES_URL, connectionTimeoutMillis: 2_000 });
  try {
    await client.connect();
    await client.query('SELECT 1');
    return null;
  } catch (error) {
    return `PostgreSQL is not reachable at ${POSTGRES_URL}: ${(error as Error).message || String(error)}`;
  } finally {
    await client.end().catch(() => {});
  }
}

const created: string[] = [];
after(() => dropTables(created));

/** A table name no other run uses, not dropped by itself (see tempTable). */
export const uniqueTable = (): string => `resident_test_${process.pid}_${randomBytes(4).toString('hex')}`;

/** A table name no other run uses; its tables are dropped after the file's tests. */
export function tempTable(): string {
  const table = uniqueTable();
  created.push(table);
  return table;
}

/** Drops the store's tables for each of `tables` (test tables only). */
export async function dropTables(tables: readonly string[]): Promise<void> {
  if (tables.length === 0) return;
  await withClient(async (client) => {
    for (const table of tables) {
      const t = tableNames(table);
      await client.query(`DROP TABLE IF EXISTS ${t.sessions}, ${t.quarantine}, ${t.meta}, ${t.leases}`);
    }
  });
}

/** Runs `work` on a connection of its own, behind any store's back. */
export async function withClient<T>(work: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: POSTGRES_URL });
  await client.connect();
  try {
    return await work(client);
  } finally {
    await client.end();
  }
}
