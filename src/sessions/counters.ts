/**
 * What happened to sessions since the process started, and the public, read-only figures the
 * admin view, the metrics and the tests read (`sessions.stats`): never the rooms' own Maps.
 */
import type { SuspendReason } from '../types.ts';

export interface SessionCounters {
  created: number;
  resumed: number;
  /** Sessions found in the store that this process did not know (after a restart). */
  adopted: number;
  suspended: Record<SuspendReason | 'failed', number>;
  /** Forced suspends (cap, shutdown) whose memento could not be taken or kept. */
  lostSuspends: number;
  checkpoints: number;
  closed: number;
  expired: number;
  ipMismatches: number;
  corruptMementos: number;
  workersLost: number;
  regenerated: number;
  /** Unproven sessions that left memory without a record (idle, the cap, pushed out, shutdown). */
  dropped: number;
  /** Of those, pushed out by their source's sessions.maxUnprovenPerIp. */
  pushedOut: number;
  /** New sessions refused with 429: the source's unproven sessions were all busy. */
  refusedNew: number;
  /** Unknown session IDs looked up in the store (sessions.maxUnknownIdsPerIp counts them). */
  unknownIds: number;
  /** Unknown session IDs not looked up: their source's budget was spent. */
  unknownIdsUnread: number;
  /** Cluster: sessions this node claimed from the store (unowned, or taken over). */
  claims: number;
  /** Cluster: of those, taken from a node whose lease had expired. */
  takeovers: number;
  /** Cluster: requests sent on to the node that owns their session. */
  forwards: number;
  /** Cluster: writes the store refused because another node owns the session now. */
  fencedWrites: number;
}

/** The counters and the sessions held in memory, as `sessions.stats` shows them. */
export interface SessionStats extends Readonly<Omit<SessionCounters, 'suspended'>> {
  readonly suspended: Readonly<SessionCounters['suspended']>;
  /** Contexts in memory that count against `sessions.maxContexts`. */
  readonly live: number;
  /** Contexts whose suspend is under way (in memory, no longer counted against the cap). */
  readonly suspending: number;
  /** Suspended sessions this process knows (it suspended or adopted them). */
  readonly suspendedKnown: number;
  /** Requests admitted and not yet answered, over all sessions. */
  readonly inFlight: number;
  /** Live contexts whose client has not presented their cookie back yet. */
  readonly unproven: number;
}

export function newCounters(): SessionCounters {
  return {
    created: 0,
    resumed: 0,
    adopted: 0,
    suspended: { idle: 0, evicted: 0, admin: 0, closed: 0, shutdown: 0, expired: 0, checkpoint: 0, dropped: 0, failed: 0 },
    lostSuspends: 0,
    checkpoints: 0,
    closed: 0,
    expired: 0,
    ipMismatches: 0,
    corruptMementos: 0,
    workersLost: 0,
    regenerated: 0,
    dropped: 0,
    pushedOut: 0,
    refusedNew: 0,
    unknownIds: 0,
    unknownIdsUnread: 0,
    claims: 0,
    takeovers: 0,
    forwards: 0,
    fencedWrites: 0,
  };
}

/** How many sessions are held now, read when asked. */
export interface HeldNow {
  live(): number;
  suspending(): number;
  suspendedKnown(): number;
  inFlight(): number;
  unproven(): number;
}

/** Read-only getters over `source`'s keys: a reader sees every change and can make none. */
function readOnlyView<T extends object>(source: T, keys: Array<keyof T>): Record<string, unknown> {
  const view: Record<string, unknown> = {};
  for (const key of keys) Object.defineProperty(view, key, { enumerable: true, get: () => source[key] });
  return view;
}

/**
 * A live, read-only view of the counters and of what is held now: `sessions.stats`. Always
 * current (a test or a scrape may keep it); frozen, so nothing writes through it; spreading
 * it or JSON.stringify gives a plain copy.
 */
export function statsView(counters: SessionCounters, held: HeldNow): SessionStats {
  const plain = (Object.keys(counters) as Array<keyof SessionCounters>).filter((key) => key !== 'suspended');
  const view = readOnlyView(counters, plain);
  view.suspended = Object.freeze(readOnlyView(counters.suspended, Object.keys(counters.suspended) as Array<keyof SessionCounters['suspended']>));
  for (const key of Object.keys(held) as Array<keyof HeldNow>) Object.defineProperty(view, key, { enumerable: true, get: held[key] });
  return Object.freeze(view) as unknown as SessionStats;
}
