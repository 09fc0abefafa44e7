/**
 * The ContextStore contract: where a suspended session outlives its context, a restart and a
 * crash. Promise-only; "not found" is `undefined`. One test suite (test/stores/contract.ts)
 * holds every store to the same behaviour, so a new store is done when that suite passes.
 *
 * Required: get, set, delete, expiredIds, quarantine, close.
 * A store never interprets the memento: it is text encoded by the worker (devalue), stored and
 * returned byte for byte.
 */

/** What a store keeps for one session. Times are wall-clock milliseconds. */
export interface SessionRecord {
  /** The session ID: always a validated 22-character ID, never user-chosen text. */
  id: string;
  /** Set by hooks through ctx.userId, so a user's sessions can be found. */
  userId: string | null;
  /** The encoded memento, or null when the session was never suspended with one. */
  memento: string | null;
  /** `sessions.mementoVersion` when the memento was written. */
  mementoVersion: number;
  /** The client IP the session is bound to. */
  clientIp: string;
  createdAt: number;
  updatedAt: number;
  lastActivityAt: number;
  /** After this the record is dead (cookie or absolute lifetime); null: never by time. */
  expiresAt: number | null;
}

export interface ContextStore {
  /** 'memory', 'file', 'sqlite', … for logs and the startup banner. */
  readonly kind: string;
  /**
   * The record as stored, or undefined when there is none. Expiry is the caller's judgement:
   * within a run the server decides it on a monotonic clock, so a step of the wall clock
   * cannot void a memento (RELIABILITY.md C9).
   */
  get(id: string): Promise<SessionRecord | undefined>;
  /**
   * Inserts or replaces. Resolves only once the record is durable (for durable stores).
   * Writes and deletes of one ID take effect in the order they were called.
   */
  set(record: SessionRecord): Promise<void>;
  delete(id: string): Promise<void>;
  /** Up to `limit` IDs whose expiresAt ≤ now, read from an index, never a scan of every record. */
  expiredIds(now: number, limit: number): Promise<string[]>;
  /** Moves a record that cannot be read aside, for inspection, so it is never served again. */
  quarantine(id: string, reason: string): Promise<void>;
  close(): Promise<void>;
}

/** A record that cannot be parsed; the store quarantines it and reports it through this. */
export type CorruptRecordListener = (id: string, reason: string) => void;

/** Checks the shape of a record read back from storage: every field, every type. */
export function isSessionRecord(value: unknown): value is SessionRecord {
  if (typeof value !== 'object' || value === null) return false;
  const r = value as Record<string, unknown>;
  const time = (v: unknown) => typeof v === 'number' && Number.isFinite(v);
  return (
    typeof r.id === 'string' &&
    (r.userId === null || typeof r.userId === 'string') &&
    (r.memento === null || typeof r.memento === 'string') &&
    Number.isInteger(r.mementoVersion) &&
    typeof r.clientIp === 'string' &&
    time(r.createdAt) &&
    time(r.updatedAt) &&
    time(r.lastActivityAt) &&
    (r.expiresAt === null || time(r.expiresAt))
  );
}
