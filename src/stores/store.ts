/**
 * The ContextStore contract: where a suspended session outlives its context, a restart and a
 * crash. Promise-only; "not found" is `undefined`. One test suite (test/stores/contract.ts)
 * holds every store to the same behaviour, so a new store is done when that suite passes.
 *
 * Required: get, existing, set, delete, setIf, deleteIf, expiredIds, list, ping, quarantine,
 * close.
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
  /**
   * The node holding the session's live context, or null when nobody holds it. A node names
   * itself with something new at every start (its node ID and incarnation), so a restarted
   * node is a new owner and must claim again.
   */
  owner: string | null;
  /** Rises by one on every change of owner; 0 for a record that was never claimed. */
  fence: number;
}

/** Who holds a stored record, as a conditional write expects to find it. */
export interface OwnerFence {
  owner: string | null;
  fence: number;
}

/**
 * Never claimed: what records stored before owners existed read as (SQLite schema 1, older
 * record files), and where the fence of a record written from nothing counts from.
 */
export const UNCLAIMED: Readonly<OwnerFence> = Object.freeze({ owner: null, fence: 0 });

/**
 * Whether a stored record (undefined: none) is what a conditional write expects. `null` expects
 * no record at all. A record that is there and unclaimed ({ owner: null, fence: 0 }) never
 * matches absence: otherwise a caller that read it before another node claimed it and deleted
 * it (the session closed) could bring the closed session back.
 */
export function holds(stored: OwnerFence | undefined, expected: OwnerFence | null): boolean {
  if (expected === null) return stored === undefined;
  return stored !== undefined && stored.owner === expected.owner && stored.fence === expected.fence;
}

/**
 * Throws unless `record` follows `expected` by the fencing rule: the same owner keeps the fence,
 * a change of owner raises it by exactly one (from no record, as from { owner: null, fence: 0 }).
 * A store checks this before a conditional write, so fences never go back and a stale
 * (owner, fence) pair can never match again.
 */
export function checkFenceStep(record: SessionRecord, expected: OwnerFence | null): void {
  checkExpected(expected);
  const before = expected ?? UNCLAIMED;
  if (!isOwnership(record) || !isOwnership(before)) {
    throw new RangeError(`a conditional write needs owners that are null or non-empty strings and fences that are integers ≥ 0 (${describeOwnership(record)} after ${describeOwnership(before)})`);
  }
  const fence = record.owner === before.owner ? before.fence : before.fence + 1;
  if (record.fence !== fence) {
    throw new RangeError(`a write of ${describeOwnership(record)} after ${describeOwnership(before)} must carry fence ${fence}`);
  }
}

/**
 * Throws a RangeError unless `expected` is null or an owner/fence pair: a malformed condition
 * (undefined, an object as owner) is refused alone, before the store compares or binds it,
 * rather than read as a mismatch by one store and failing a whole write batch in another.
 */
export function checkExpected(expected: OwnerFence | null): void {
  if (expected !== null && (typeof expected !== 'object' || !isOwnership(expected))) {
    throw new RangeError(`a conditional write expects null or { owner, fence } with an owner that is null or a non-empty string and a fence that is an integer ≥ 0, not ${describeExpected(expected)}`);
  }
}

function describeExpected(expected: unknown): string {
  try {
    return JSON.stringify(expected) ?? String(expected);
  } catch {
    return typeof expected;
  }
}

/** An owner is null or a non-empty string (no store need tell '' from null); a fence an integer ≥ 0. */
function isOwnership(value: { owner?: unknown; fence?: unknown }): boolean {
  const { owner, fence } = value;
  return (owner === null || (typeof owner === 'string' && owner !== '')) && Number.isSafeInteger(fence) && (fence as number) >= 0;
}

function describeOwnership({ owner, fence }: OwnerFence): string {
  return `owner ${JSON.stringify(owner)} fence ${String(fence)}`;
}

export interface ListQuery {
  userId?: string;
  /** Exclusive cursor: the last ID of the previous page. */
  after?: string;
  limit: number;
}

/** A record without its memento: what listings need. */
export type SessionSummary = Omit<SessionRecord, 'memento'> & {
  /** The memento's size in UTF-8 bytes; 0 without one. */
  mementoBytes: number;
};

/** The summary of a full record. */
export function summarize(record: SessionRecord): SessionSummary {
  const { memento, ...rest } = record;
  return { ...rest, mementoBytes: memento === null ? 0 : Buffer.byteLength(memento) };
}

/**
 * The page `query` asks for, out of candidate records held in memory: filtered, in ID order,
 * cut at the limit, then summarized (for the in-process stores).
 */
export function pageOf<T extends { id: string; userId: string | null }>(
  candidates: Iterable<T>,
  query: ListQuery,
  toSummary: (candidate: T) => SessionSummary,
): SessionSummary[] {
  const page: T[] = [];
  for (const candidate of candidates) {
    if (query.userId !== undefined && candidate.userId !== query.userId) continue;
    if (query.after !== undefined && candidate.id <= query.after) continue;
    page.push(candidate);
  }
  return page
    .sort((a, b) => (a.id < b.id ? -1 : 1))
    .slice(0, query.limit)
    .map(toSummary);
}

/**
 * A store other Resident processes may write too (store.kind "redis" or "postgres"): a record
 * this process wrote can be gone because another one ended the session.
 */
export const isSharedStore = (store: ContextStore): boolean => store.kind === 'redis' || store.kind === 'postgres';

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
   * Which of `ids` have a record, in one call whatever their number, reading no memento: a
   * Cookie header may carry hundreds of values, and junk ones must cost no read each (A8).
   */
  existing(ids: readonly string[]): Promise<Set<string>>;
  /**
   * Inserts or replaces. Resolves only once the record is durable (for durable stores).
   * Writes and deletes of one ID take effect in the order they were called.
   */
  set(record: SessionRecord): Promise<void>;
  delete(id: string): Promise<void>;
  /**
   * Writes `record` only when the stored record's owner and fence are `expected` (`null`: only
   * when no record exists), checked and written as one atomic step by the store itself, so a
   * late write from an owner that lost the session is refused, never applied. Resolves true
   * when written (durable, as `set`), false when refused (nothing changed); rejects with a
   * RangeError, writing nothing, when `record` breaks the fencing rule (`checkFenceStep`). Takes
   * its place in the call order of the ID's writes and deletes, as `set` does.
   */
  setIf(record: SessionRecord, expected: OwnerFence | null): Promise<boolean>;
  /**
   * Removes the record only when its owner and fence are `expected`; true when the condition
   * held (for `null`: when there is no record), false when refused. Ordered as `delete`.
   */
  deleteIf(id: string, expected: OwnerFence | null): Promise<boolean>;
  /** Up to `limit` IDs whose expiresAt ≤ now, read from an index, never a scan of every record. */
  expiredIds(now: number, limit: number): Promise<string[]>;
  /**
   * Summaries (no memento text) of stored records in ascending ID order, after the ID `after`
   * when given, at most `limit`; only those of `userId` when given. Read from an index: listing
   * one user's sessions never scans every record. This is how the server finds every session
   * of a user, and how the admin view pages through suspended sessions.
   */
  list(query: ListQuery): Promise<SessionSummary[]>;
  /** Resolves when the store can read and write now; rejects with the reason otherwise (/readyz). */
  ping(): Promise<void>;
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
    (r.expiresAt === null || time(r.expiresAt)) &&
    isOwnership(r)
  );
}
