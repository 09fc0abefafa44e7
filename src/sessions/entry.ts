/** One session as the directory holds it (./directory.ts is its only writer), and how one is made. */
import type { ContextInit } from '../contexts/protocol.ts';

export type SessionState =
  /** A context holds the session on `workerId`. */
  | 'live'
  /** onSessionSuspend is running; requests wait on `gate`. */
  | 'suspending'
  /** No context: the record (memento) is in the store. */
  | 'suspended'
  /** Closed or expired: the ID is dead. */
  | 'gone';

export interface SessionEntry {
  /** The cookie value; changes only through ctx.regenerate() (Directory.rename). */
  id: string;
  /** The worker thread hosting the context (reported by the pool); null: none. */
  workerId: number | null;
  /** Its end (close or expiry) is under way: its responses expire the cookie. */
  ending: boolean;
  readonly clientIp: string;
  /** What the hostile-traffic budgets count it against: its client's address or network (sourceKey). */
  readonly source: string;
  /**
   * The client presented the cookie back (Context.proven). Until then the session is the
   * cap's first choice of victim and leaves memory without a record (see ./unproven.ts).
   */
  proven: boolean;
  /** A hook called ctx.keep(): saved like a proven session even while unproven. */
  kept: boolean;
  /** Wall-clock ms when the session began (kept in the store record). */
  readonly createdAt: number;
  /** Monotonic ms when the session began, for `sessions.maxLifetime`. */
  readonly startedAt: number;
  /** Set by hooks through ctx.userId; change it through Directory.setUser (it is indexed). */
  userId: string | null;
  /** Requests this process has served for the session (for the admin view). */
  requests: number;
  /** UTF-8 size of the last memento written to the store; 0: none. */
  mementoBytes: number;
  /** The store holds a memento for this session (written by a suspend or a checkpoint). */
  hasMemento: boolean;
  /** Handled a request since its last checkpoint. */
  dirty: boolean;
  state: SessionState;
  /** Monotonic ms of the last request's arrival or completion. */
  lastActive: number;
  /**
   * Monotonic ms when the entry last took its place in its Map. lastActive is at most
   * REORDER_MS past it, so the Maps are in lastActive order to within that.
   */
  orderedAt: number;
  /** Requests admitted and not yet answered, including those waiting on `gate`. */
  inFlight: number;
  /** Set while a suspend or resume runs: later requests wait on it, in arrival order. */
  gate: Promise<void> | null;
  /** How the next context is to be born; sent with its first request, then cleared. */
  init: ContextInit | null;
  /** Monotonic ms before which a failed idle suspend is not retried. */
  retryAt: number;
  /** Has a place in the directory's expiry queue (at most one at a time). */
  queuedForExpiry: boolean;
}

/** A new entry: what differs between a created and an adopted session, the rest at rest. */
export function newEntry(
  fields: Pick<SessionEntry, 'id' | 'clientIp' | 'source' | 'proven' | 'createdAt' | 'startedAt' | 'userId' | 'lastActive'> &
    Partial<Pick<SessionEntry, 'mementoBytes' | 'hasMemento'>>,
): SessionEntry {
  return {
    mementoBytes: 0,
    hasMemento: false,
    ...fields,
    kept: false,
    workerId: null,
    ending: false,
    requests: 0,
    dirty: false,
    state: 'suspended',
    orderedAt: fields.lastActive,
    inFlight: 0,
    gate: null,
    init: null,
    retryAt: 0,
    queuedForExpiry: false,
  };
}
