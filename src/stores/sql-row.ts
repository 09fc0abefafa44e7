/**
 * A session record as the SQL stores (SQLite, PostgreSQL) hold it: one snake_case column per
 * field. One mapping for both, so a field added to SessionRecord is added once.
 */
import { isSessionRecord, type ContextStore, type CorruptRecordListener, type SessionRecord } from './store.ts';

export interface Row {
  id: string;
  user_id: string | null;
  client_ip: string;
  memento: string | null;
  memento_version: number;
  created_at: number;
  updated_at: number;
  last_activity_at: number;
  expires_at: number | null;
  owner: string | null;
  /** A number in SQLite; PostgreSQL's BIGINT arrives as text. */
  fence: number | string;
}

/** A listing's row: every column but the memento, and its size. */
export type SummaryRow = Omit<Row, 'memento'> & { memento_bytes: number };

/** A row as a SessionRecord; a fence past 2^53 does not survive Number() and fails isSessionRecord. */
export function fromRow(row: Row): SessionRecord {
  return {
    id: row.id,
    userId: row.user_id,
    memento: row.memento,
    mementoVersion: row.memento_version,
    clientIp: row.client_ip,
    createdAt: row.created_at,
    updatedAt: row.updated_at,
    lastActivityAt: row.last_activity_at,
    expiresAt: row.expires_at,
    owner: row.owner,
    fence: Number(row.fence),
  };
}

/**
 * The record `row` holds, or undefined: no row, or one that is not a session record, which is
 * moved aside (store.quarantine) and reported, so it is never served.
 */
export async function recordOrQuarantine(row: Row | undefined, id: string, store: Pick<ContextStore, 'quarantine'>, onCorrupt: CorruptRecordListener): Promise<SessionRecord | undefined> {
  if (!row) return undefined;
  const record = fromRow(row);
  if (isSessionRecord(record)) return record;
  await store.quarantine(id, 'the row does not have the shape of a session record');
  onCorrupt(id, 'malformed row');
  return undefined;
}
