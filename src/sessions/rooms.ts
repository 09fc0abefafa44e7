/**
 * How the rooms reach each other. The facade (index.ts) builds one of each and hands every
 * room this record, so a room names the others it calls and nothing else. No room knows which
 * thread it runs on: the per-thread edge runs one set of rooms on every worker thread.
 */
import type { ResidentConfig } from '../config.ts';
import type { Clock } from '../clock.ts';
import type { WireError } from '../contexts/protocol.ts';
import { hashId, type Logger } from '../log.ts';
import type { ContextStore } from '../stores/store.ts';
import type { Admission } from './admission.ts';
import type { Capacity } from './capacity.ts';
import type { SessionCounters } from './counters.ts';
import type { Directory, SessionEntry } from './directory.ts';
import type { ContextHost } from './host.ts';
import type { Lifecycle } from './lifecycle.ts';
import type { Endings } from './endings.ts';
import type { Ownership } from './ownership.ts';
import type { SessionPolicy } from './policy.ts';
import type { Requests } from './requests.ts';
import type { Users } from './users.ts';

/** What the server gives the sessions: configuration, where contexts live, where mementos go. */
export interface SessionsDeps {
  config: ResidentConfig['sessions'];
  /** `store.sweepInterval`: how often expired records nobody knows are removed; 0: never. */
  storeSweepInterval: number;
  host: ContextHost;
  store: ContextStore;
  ownership: Ownership;
  clock: Clock;
  log: Logger;
}

export interface Rooms extends SessionsDeps {
  policy: SessionPolicy;
  directory: Directory;
  counters: SessionCounters;
  admission: Admission;
  requests: Requests;
  lifecycle: Lifecycle;
  endings: Endings;
  capacity: Capacity;
  users: Users;
  /** True once shutdown began. */
  closing: boolean;
}

/** A hook failed: one log line with the hook, the session (hashed) and what it means. */
export function logHookError(log: Logger, entry: SessionEntry, hook: string, error: WireError, outcome?: string): void {
  log.error(
    { event: 'hook-error', hook, session: hashId(entry.id), code: error.code, err: { message: error.message, stack: error.stack } },
    outcome ? `${hook} failed: ${outcome}` : `${hook} failed`,
  );
}
