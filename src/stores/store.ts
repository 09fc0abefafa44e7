/**
 * The ContextStore contract: where a suspended session's record outlives its context.
 * Promise-only; "not found" is `undefined`. Every store is held to the same behaviour by one
 * shared test suite.
 */

/** What a store keeps for one suspended session. */
export interface SessionRecord {
  id: string;
  /** What onSessionSuspend returned. */
  memento: unknown;
  /** The client IP the session is bound to. */
  clientIp: string;
  /** Wall-clock ms. */
  createdAt: number;
  updatedAt: number;
  lastActivityAt: number;
  /** Wall-clock ms after which the record is dead; null: no expiry (browser-session cookie). */
  expiresAt: number | null;
}

export interface ContextStore {
  get(id: string): Promise<SessionRecord | undefined>;
  set(record: SessionRecord): Promise<void>;
  delete(id: string): Promise<void>;
  close(): Promise<void>;
}
