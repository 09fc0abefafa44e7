/** One session as the admin view, user lookups and tests see it: a copy, never the entry. */
import type { SessionSummary } from '../stores/store.ts';
import type { SessionEntry } from './directory.ts';

export interface SessionInfo {
  id: string;
  userId: string | null;
  clientIp: string;
  state: 'live' | 'suspending' | 'suspended';
  createdAt: number;
  /** Wall-clock ms of the last request's arrival or completion. */
  lastActivityAt: number;
  /** Milliseconds since then, on the monotonic clock; null for a session only the store holds. */
  idleMs: number | null;
  /** The worker thread hosting the context; null when suspended. */
  workerId: number | null;
  /** Requests served by this process; null for a session it has not seen (stored before a restart). */
  requests: number | null;
  /** Requests admitted and not yet answered (waiting included); 0 for a session only the store holds. */
  inFlight: number;
  /** A suspend, resume, record rewrite or end is under way: its requests wait for it. */
  transitioning: boolean;
  /** UTF-8 size of the stored memento; 0: none. */
  mementoBytes: number;
}

/** A session this process knows; `now` is the monotonic clock's time, `lastActivityAt` the wall time of its activity. */
export function entryInfo(entry: SessionEntry, now: number, lastActivityAt: number): SessionInfo {
  return {
    id: entry.id,
    userId: entry.userId,
    clientIp: entry.clientIp,
    state: entry.state === 'gone' ? 'suspended' : entry.state,
    createdAt: entry.createdAt,
    lastActivityAt,
    idleMs: Math.max(0, now - entry.lastActive),
    workerId: entry.workerId,
    requests: entry.requests,
    inFlight: entry.inFlight,
    transitioning: entry.gate !== null,
    mementoBytes: entry.mementoBytes,
  };
}

/** A session only the store knows (suspended before a restart). */
export function storedInfo(summary: SessionSummary): SessionInfo {
  return {
    id: summary.id,
    userId: summary.userId,
    clientIp: summary.clientIp,
    state: 'suspended',
    createdAt: summary.createdAt,
    lastActivityAt: summary.lastActivityAt,
    idleMs: null,
    workerId: null,
    requests: null,
    inFlight: 0,
    transitioning: false,
    mementoBytes: summary.mementoBytes,
  };
}
