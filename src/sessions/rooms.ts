/**
 * How the rooms reach each other. The facade (index.ts) builds one of each and hands every
 * room this record, so a room names the others it calls and nothing else. No room knows which
 * thread it runs on: the per-thread edge runs one set of rooms on every worker thread.
 */
import type { ResidentConfig } from '../config.ts';
import type { Clock } from '../clock.ts';
import { loggedError, type WireError } from '../contexts/protocol.ts';
import { hashId } from '../id-hash.ts';
import type { Log } from '../log.ts';
import type { ContextStore } from '../stores/store.ts';
import type { Admission } from './admission.ts';
import type { Capacity } from './capacity.ts';
import type { SessionCounters } from './counters.ts';
import type { Directory, SessionEntry } from './directory.ts';
import type { ContextHost } from './host.ts';
import type { Lifecycle } from './lifecycle.ts';
import type { Endings } from './endings.ts';
import type { Ownership } from './ownership.ts';
import type { GlobalCap, HeldFigures, Peers } from './peers.ts';
import type { SessionPolicy } from './policy.ts';
import type { Requests } from './requests.ts';
import type { Users } from './users.ts';
import type { UnknownIds } from './guesses.ts';
import type { Budget } from './source-alarms.ts';
import type { SourceBudget } from './sources.ts';

/** What the server gives the sessions: configuration, where contexts live, where mementos go. */
export interface SessionsDeps {
  config: ResidentConfig['sessions'];
  host: ContextHost;
  store: ContextStore;
  ownership: Ownership;
  clock: Clock;
  log: Log;
  /** The other homes (every worker thread is one); none by default. */
  peers: Peers;
  /** Live contexts over every home, against maxContexts; this home's alone by default. */
  cap: GlobalCap;
  /** Where the counters live (a shared buffer, so the main thread reads them); a plain object by default. */
  counters?: SessionCounters;
  /** Where the held figures are published; nowhere by default. */
  held?: HeldFigures;
  /** Homes (edge threads) sharing the per-source budgets; 1 by default. */
  homes: number;
  /** Looks up unknown IDs within their source's budget (the main thread's, on an edge thread). */
  lookups: UnknownIds;
  /** Told when a source goes over a budget (logged and listed where every home's reports meet). */
  overBudget: (source: string, budget: Budget) => void;
}

export interface Rooms extends SessionsDeps {
  policy: SessionPolicy;
  directory: Directory;
  counters: SessionCounters;
  held?: HeldFigures;
  admission: Admission;
  requests: Requests;
  lifecycle: Lifecycle;
  endings: Endings;
  capacity: Capacity;
  users: Users;
  sources: SourceBudget;
  /** True once shutdown began. */
  closing: boolean;
}

/** A hook failed: one log line with the hook, the session (hashed) and what it means. */
export function logHookError(log: Log, entry: SessionEntry, hook: string, error: WireError, outcome?: string, fields?: object): void {
  log.error(
    { event: 'hook-error', hook, session: hashId(entry.id), ...fields, code: error.code, err: loggedError(error) },
    outcome ? `${hook} failed: ${outcome}` : `${hook} failed`,
  );
}

/**
 * A forced suspend (shutdown, the cap) whose hook failed: the context is gone, and the store's
 * record is left as it was, so the session comes back as it was when last saved, an older
 * state. A hook that always fails there rolls the session back at every shutdown (under
 * `npm run dev`, at every edit of a hook) and nothing else would show it: the line says so, and
 * what to do.
 */
export function logLostSuspend(log: Log, entry: SessionEntry, hook: string, error: WireError): void {
  const fix = 'Fix onSessionSuspend (with sessions.suspendEveryRequest on, every request tries it): until then every shutdown (each restart of npm run dev) and eviction does this again';
  const outcome = entry.hasMemento
    ? `what this session did since its last saved memento is lost; that memento is kept unchanged and the session resumes from it, an older state. ${fix}`
    : `this session had no saved memento: its state is lost and it starts afresh. ${fix}`;
  logHookError(log, entry, hook, error, outcome, { resumesFrom: entry.hasMemento ? 'previous-memento' : 'nothing' });
}
