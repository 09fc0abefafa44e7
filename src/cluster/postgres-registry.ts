/**
 * The OwnerRegistry on the PostgreSQL store (../stores/postgres.ts): leases are rows of the
 * leases table (postgres-schema.ts) whose expires_at is the database's clock_timestamp(), and a
 * claim is one UPDATE whose condition reads the owner's lease, followed, when it writes nothing,
 * by one read that says why (the claimer's already, a live owner elsewhere, no record).
 *
 * Two claimers at once (READ COMMITTED). The UPDATE reads the row once (the `current` CTE, the
 * statement's snapshot) and writes only if the row still has that owner and fence when it holds
 * the row's lock: a second claimer that waited behind the first one's lock re-checks the row as
 * the first one left it, finds another fence and writes nothing, then its read sees the winner.
 * So at most one claimer of a given (owner, fence) wins, and the loser names the winner. The
 * owner's lease row is locked FOR SHARE before it is judged (alive or not): a renewal that
 * began while the lease was alive and commits only now is waited for and its new expiry seen,
 * rather than the lease being judged lapsed from the snapshot's version.
 *
 * A claim retried after a lost connection (postgres-retry.ts) is safe: if the first attempt
 * landed, the retry finds the record already the claimer's and answers 'ours' with it.
 */
import type { PostgresAccess, PostgresStore } from '../stores/postgres.ts';
import type { TableNames } from '../stores/postgres-schema.ts';
import { recordOrQuarantine, type Row } from '../stores/sql-row.ts';
import { checkLease, checkOwner, checkTtl } from './lease-check.ts';
import type { ClaimAnswer, NodeLease, OwnerRegistry } from './registry.ts';

const COLUMNS = ['id', 'user_id', 'client_ip', 'memento', 'memento_version', 'created_at', 'updated_at', 'last_activity_at', 'expires_at', 'owner', 'fence'];
/** How often a claim tries again when the record changed between its write and its read. */
const CLAIM_ROUNDS = 5;

interface LeaseRow {
  owner: string;
  node_id: string;
  url: string;
}

function statements(t: TableNames) {
  const cols = (alias: string) => COLUMNS.map((c) => `${alias}.${c}`).join(', ');
  const alive = (alias: string) => `${alias}.expires_at > clock_timestamp()`;
  const until = `clock_timestamp() + $4::float8 * interval '1 millisecond'`;
  return {
    // Also removes a few leases that lapsed (SKIP LOCKED: never waits for, nor deadlocks with, another acquire).
    acquire: `WITH lapsed AS (
        DELETE FROM ${t.leases} WHERE owner IN (
          SELECT owner FROM ${t.leases} WHERE NOT ${alive(t.leases)} AND owner <> $1 LIMIT 100 FOR UPDATE SKIP LOCKED))
      INSERT INTO ${t.leases} AS l (owner, node_id, url, expires_at) VALUES ($1, $2, $3, ${until})
      ON CONFLICT (owner) DO UPDATE SET node_id = excluded.node_id, url = excluded.url, expires_at = excluded.expires_at
        WHERE NOT ${alive('l')}
      RETURNING 1`,
    // An acquire's retry: the lease there is ours, landed by the first attempt.
    ours: `SELECT 1 FROM ${t.leases} l WHERE owner = $1 AND node_id = $2 AND url = $3 AND ${alive('l')}`,
    renew: `UPDATE ${t.leases} l SET expires_at = clock_timestamp() + $2::float8 * interval '1 millisecond'
      WHERE owner = $1 AND ${alive('l')} RETURNING 1`,
    release: `DELETE FROM ${t.leases} WHERE owner = $1`,
    nodes: `SELECT owner, node_id, url FROM ${t.leases} l WHERE ${alive('l')}`,
    lease: `SELECT owner, node_id, url FROM ${t.leases} l WHERE owner = $1 AND ${alive('l')}`,
    claim: `WITH current AS (SELECT id, owner, fence FROM ${t.sessions} WHERE id = $1),
        lease AS (SELECT l.expires_at FROM ${t.leases} l JOIN current c ON l.owner = c.owner FOR SHARE OF l)
      UPDATE ${t.sessions} s SET owner = $2::text, fence = s.fence + 1
      FROM current c
      WHERE s.id = c.id AND s.owner IS NOT DISTINCT FROM c.owner AND s.fence = c.fence
        AND c.owner IS DISTINCT FROM $2::text AND NOT EXISTS (SELECT 1 FROM lease WHERE ${alive('lease')})
      RETURNING ${cols('s')}, c.owner AS previous_owner`,
    // Why a claim wrote nothing: the record with its owner's live lease, if any.
    holder: `SELECT ${cols('s')}, l.owner AS lease_owner, l.node_id AS lease_node_id, l.url AS lease_url
      FROM ${t.sessions} s LEFT JOIN ${t.leases} l ON l.owner = s.owner AND ${alive('l')} WHERE s.id = $1`,
    locate: `SELECT l.owner, l.node_id, l.url FROM ${t.sessions} s JOIN ${t.leases} l ON l.owner = s.owner AND ${alive('l')} WHERE s.id = $1`,
  };
}

type HolderRow = Row & { lease_owner: string | null; lease_node_id: string | null; lease_url: string | null };
/** A claim's outcome as the statements found it; the row is checked once the write settled. */
type Found = { kind: 'missing' } | { kind: 'ours'; row: Row; from?: string } | { kind: 'elsewhere'; lease: NodeLease };

export class PostgresRegistry implements OwnerRegistry {
  readonly #pg: PostgresAccess;
  readonly #store: PostgresStore;
  readonly #sql: ReturnType<typeof statements>;

  constructor(store: PostgresStore) {
    this.#store = store;
    this.#pg = store.registryAccess();
    this.#sql = statements(this.#pg.names);
  }

  async acquire(lease: NodeLease, ttlMs: number): Promise<boolean> {
    checkLease(lease);
    checkTtl(ttlMs);
    const params = [lease.owner, lease.nodeId, lease.url, ttlMs];
    return this.#pg.run('acquire', async (client, retry) => {
      if ((await client.query(this.#sql.acquire, params)).rowCount === 1) return true;
      return retry && (await client.query(this.#sql.ours, params.slice(0, 3))).rows.length === 1;
    });
  }

  async renew(owner: string, ttlMs: number): Promise<boolean> {
    checkOwner(owner);
    checkTtl(ttlMs);
    // Idempotent: a retry after a renewal that landed finds the lease alive and extends it again.
    return this.#pg.run('renew', async (client) => (await client.query(this.#sql.renew, [owner, ttlMs])).rowCount === 1);
  }

  async release(owner: string): Promise<void> {
    checkOwner(owner);
    await this.#pg.run('release', (client) => client.query(this.#sql.release, [owner]));
  }

  async nodes(): Promise<NodeLease[]> {
    const rows = await this.#pg.run('nodes', async (client) => (await client.query<LeaseRow>(this.#sql.nodes)).rows);
    return rows.map(toLease);
  }

  async lease(owner: string): Promise<NodeLease | undefined> {
    checkOwner(owner);
    const rows = await this.#pg.run('lease', async (client) => (await client.query<LeaseRow>(this.#sql.lease, [owner])).rows);
    return rows[0] && toLease(rows[0]);
  }

  async claim(id: string, owner: string): Promise<ClaimAnswer> {
    checkOwner(owner);
    const found = await this.#pg.write(id, 'claim', async (client) => {
      for (let round = 0; round < CLAIM_ROUNDS; round++) {
        const claimed = await client.query<Row & { previous_owner: string | null }>(this.#sql.claim, [id, owner]);
        const won = claimed.rows[0];
        if (won) {
          const { previous_owner: from, ...row } = won;
          return (from === null ? { kind: 'ours', row } : { kind: 'ours', row, from }) satisfies Found;
        }
        const row = (await client.query<HolderRow>(this.#sql.holder, [id])).rows[0];
        if (!row) return { kind: 'missing' } satisfies Found;
        if (row.owner === owner) return { kind: 'ours', row } satisfies Found;
        if (row.lease_owner !== null) return { kind: 'elsewhere', lease: { owner: row.lease_owner, nodeId: row.lease_node_id!, url: row.lease_url! } } satisfies Found;
        // Claimable now (the owner's lease lapsed or was released since the UPDATE's snapshot): again.
      }
      throw new Error(`the record changed under ${CLAIM_ROUNDS} claims in a row`);
    });
    if (found.kind !== 'ours') return found;
    // A row that is not a record is quarantined as the store's get does (after the write: its
    // quarantine is a write of the same ID, ordered behind this one).
    const record = await recordOrQuarantine(pick(found.row), id, this.#store, this.#pg.onCorrupt);
    if (!record) return { kind: 'missing' };
    return found.from === undefined ? { kind: 'ours', record } : { kind: 'ours', record, from: found.from };
  }

  async locate(id: string): Promise<NodeLease | undefined> {
    const rows = await this.#pg.run('locate', async (client) => (await client.query<LeaseRow>(this.#sql.locate, [id])).rows);
    return rows[0] && toLease(rows[0]);
  }
}

const toLease = (row: LeaseRow): NodeLease => ({ owner: row.owner, nodeId: row.node_id, url: row.url });

/** Just the record's columns of a row (the holder read has the lease's too). */
function pick(row: Row): Row {
  return Object.fromEntries(COLUMNS.map((c) => [c, (row as unknown as Record<string, unknown>)[c]])) as unknown as Row;
}
