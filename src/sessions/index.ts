/**
 * The sessions: the rules of a session's life, one room per job (see the README's "Project
 * layout" and ../shared/DESIGN.md, "The house after the split"). This facade is all the rest
 * of the server sees: the edge calls `serve`; the admin view, the metrics and the tests read
 * `stats`, `list` and `info`, never the rooms' Maps; the pool reports lost threads here.
 *
 * Rules a newcomer can rely on: only the lifecycle room (lifecycle.ts, endings.ts) asks a
 * worker for a memento and writes the store; only the directory changes a session's state;
 * the host (the pool) reports a thread and writes no session field; ownership is asked on
 * create, adopt, resume and close. No room knows which thread it runs on.
 */
import { ResidentError } from '../errors.ts';
import { newSessionId } from '../contexts/ids.ts';
import type { WireRequest } from '../contexts/protocol.ts';
import { Admission } from './admission.ts';
import { Capacity } from './capacity.ts';
import { newCounters, statsView, type SessionStats } from './counters.ts';
import { Directory, type SessionEntry } from './directory.ts';
import { Endings } from './endings.ts';
import { entryInfo, type SessionInfo } from './info.ts';
import { Lifecycle } from './lifecycle.ts';
import { errorOutcome, type Outcome } from './outcome.ts';
import { LocalOwnership } from './ownership.ts';
import { localCap, noPeers, type HomeCandidate, type IdleCandidate } from './peers.ts';
import { SessionPolicy } from './policy.ts';
import { Requests } from './requests.ts';
import type { Rooms, SessionsDeps } from './rooms.ts';
import { relinquishAll, shutDown } from './shutdown.ts';
import { Sweeper } from './sweeper.ts';
import { Users } from './users.ts';
import { GuessBudget } from './guesses.ts';
import { SourceAlarms } from './source-alarms.ts';
import { SourceBudget } from './sources.ts';

export type { CookieAction, Outcome } from './outcome.ts';
export type { SessionInfo } from './info.ts';
export { storedInfo } from './info.ts';
export type { SessionStats } from './counters.ts';
export type { SessionsDeps } from './rooms.ts';
export { GuessBudget } from './guesses.ts';
export { SourceAlarms, type OverBudget } from './source-alarms.ts';

/** What a Sessions makes for itself when not given it. */
type Defaulted = 'ownership' | 'peers' | 'cap' | 'homes' | 'lookups' | 'overBudget';

export interface ListQuery {
  state: 'live' | 'suspended';
  /** Position to start at, in least-recently-active order. */
  start?: number;
  limit?: number;
}

export class Sessions {
  readonly #rooms: Rooms;
  readonly #sweeper: Sweeper;

  constructor(deps: Omit<SessionsDeps, Defaulted> & Partial<Pick<SessionsDeps, Defaulted>>) {
    const counters = deps.counters ?? newCounters();
    // Alone (no edge threads): the budgets of unknown IDs and the alarms are kept here.
    const alarms = deps.overBudget && deps.lookups ? undefined : new SourceAlarms(deps.config.budgetWindow, deps.log);
    const rooms = {
      ...deps,
      ownership: deps.ownership ?? new LocalOwnership(deps.store),
      peers: deps.peers ?? noPeers,
      cap: deps.cap ?? localCap(),
      homes: deps.homes ?? 1,
      lookups: deps.lookups ?? new GuessBudget(deps.store, deps.config, counters, alarms!),
      overBudget: deps.overBudget ?? ((source, budget) => alarms!.note(source, budget)),
      counters,
      closing: false,
    } as Rooms;
    rooms.policy = new SessionPolicy(deps.config, deps.clock);
    // The cap counts this home's live contexts as the directory changes them; the figures go
    // where the main thread reads them.
    let live = 0;
    rooms.directory = new Directory((counts) => {
      if (counts.live !== live) {
        rooms.cap.adjust(counts.live - live);
        live = counts.live;
      }
      deps.held?.setHeld('live', counts.live);
      deps.held?.setHeld('suspending', counts.suspending);
      deps.held?.setHeld('suspendedKnown', counts.suspended);
      deps.held?.setHeld('unproven', counts.unproven);
    });
    [rooms.admission, rooms.requests, rooms.lifecycle, rooms.endings] = [new Admission(rooms), new Requests(rooms), new Lifecycle(rooms), new Endings(rooms)];
    [rooms.capacity, rooms.users, rooms.sources] = [new Capacity(rooms), new Users(rooms), new SourceBudget(rooms)];
    this.#rooms = rooms;
    const { directory, requests } = rooms;
    this.stats = statsView(rooms.counters, {
      live: () => directory.liveCount,
      suspending: () => directory.suspendingCount,
      suspendedKnown: () => directory.suspended.size,
      inFlight: () => requests.inFlight,
      unproven: () => directory.unproven.size,
    });
    this.#sweeper = new Sweeper(rooms);
    this.#sweeper.start();
  }

  /** True once shutdown began. */
  get closing(): boolean {
    return this.#rooms.closing;
  }

  /**
   * Serves one dynamic request. `presented` are the well-formed session IDs the cookie header
   * carried, in header order; `clientIp` is the normalised client address.
   */
  async serve(presented: string[], clientIp: string, request: WireRequest): Promise<Outcome> {
    const { closing, config, requests, admission } = this.#rooms;
    if (closing) return errorOutcome(new ResidentError('RESIDENT_ERR_SHUTTING_DOWN'));
    if (!this.#rooms.ownership.serving()) return errorOutcome(new ResidentError('RESIDENT_ERR_NO_LEASE'));
    if (!config.enabled) return requests.runEphemeral(clientIp, request, newSessionId());
    const admitted = await admission.admit(presented, clientIp);
    if ('kind' in admitted) return admitted;
    return requests.run(admitted, request, clientIp);
  }

  /**
   * Whether `presented` names a session here of this client ('own'), only one bound to another
   * client ('foreign'), or none: how an edge whose cookie header carries IDs of several homes
   * finds the one that wins (A8), before serving there. A store that cannot answer says 'own',
   * so that the request is served there and answered with the store's error.
   */
  async claimable(presented: string[], clientIp: string): Promise<'own' | 'foreign' | 'none'> {
    try {
      const { entry, foreign } = await this.#rooms.admission.find(presented, clientIp);
      return entry ? 'own' : foreign ? 'foreign' : 'none';
    } catch {
      return 'own';
    }
  }

  /** The counters and the sessions held now: a live, read-only view (see ./counters.ts). */
  readonly stats: SessionStats;

  /** One session this process knows, by ID; undefined when it knows none by that ID. */
  info(id: string): SessionInfo | undefined {
    const entry = this.#rooms.directory.get(id);
    return entry && this.#info(entry);
  }

  /** Sessions in memory or suspended ones known here, least recently active first. */
  list(query: ListQuery): SessionInfo[] {
    const map = query.state === 'live' ? this.#rooms.directory.live : this.#rooms.directory.suspended;
    const start = query.start ?? 0;
    const limit = query.limit ?? Infinity;
    const page: SessionInfo[] = [];
    let index = 0;
    for (const entry of map.values()) {
      if (page.length >= limit) break;
      if (index++ < start) continue;
      page.push(this.#info(entry));
    }
    return page;
  }

  #info(entry: SessionEntry): SessionInfo {
    return entryInfo(entry, this.#rooms.clock.now(), this.#rooms.policy.lastActivityAt(entry));
  }

  /** Every session of `userId`, live or suspended, known here or only to the store. */
  sessionsOfUser(userId: string): Promise<SessionInfo[]> {
    return this.#rooms.users.sessionsOf(userId);
  }

  /** Closes every session of `userId`; resolves with how many were closed. */
  closeUser(userId: string, options: { by?: string } = {}): Promise<number> {
    return this.#rooms.users.closeUser(userId, options);
  }

  /** Closes one session by ID; resolves false when there is no such session. */
  closeSession(id: string, by: string): Promise<boolean> {
    return this.#rooms.users.closeSession(id, by);
  }

  /** closeSession for another home; `requester` as in Users.closeSession. */
  closeSessionForPeer(id: string, by: string, requester?: string): Promise<boolean> {
    return this.#rooms.users.closeSession(id, by, requester);
  }

  /**
   * Suspends one live context now (the admin view), as an idle one would be. Resolves with the
   * outcome: 'busy' while it has a request in flight or a suspend or resume under way;
   * 'failed' when the context stays live; 'lost' when it went without its memento (its thread
   * stopped during the hook); 'dropped' when it was unproven, so nothing was kept.
   */
  async suspendSession(id: string): Promise<'suspended' | 'busy' | 'not-live' | 'failed' | 'lost' | 'dropped'> {
    const entry = this.#rooms.directory.get(id);
    if (!entry || entry.state === 'suspended' || entry.state === 'gone') return 'not-live';
    if (entry.inFlight > 0 || entry.gate || entry.state !== 'live') return 'busy';
    if (await this.#rooms.lifecycle.startSuspend(entry, 'admin')) return 'suspended';
    const state = entry.state as SessionEntry['state'];
    return state === 'live' ? 'failed' : state === 'gone' ? 'dropped' : 'lost';
  }

  /** Runs the idle and expiry sweep now (it also runs every 250 ms). */
  sweep(): void {
    this.#sweeper.sweep();
  }

  /** Of these expired records homed here, removes those of sessions not known here; resolves with how many went. */
  dropExpired(ids: readonly string[]): Promise<number> {
    return this.#rooms.endings.dropExpired(ids);
  }

  /** The sessions of `userId` known here (live or suspended), for another home listing a user's. */
  userHere(userId: string): SessionInfo[] {
    return this.#rooms.directory.ofUser(userId).map((entry) => this.#info(entry));
  }

  /** Enforces sessions.maxPerUser for `userId`, for another home whose session signed in (this home judges that user). */
  limitUserHere(userId: string, keepId: string): Promise<void> {
    return this.#rooms.users.limitUserHere(userId, keepId);
  }

  /** Closes the sessions of `userId` known here, for another home closing a user's; resolves with their IDs. */
  async closeUserHere(userId: string, by: string, requester?: string): Promise<string[]> {
    const closedIds: string[] = [];
    await this.#rooms.users.closeUser(userId, { by, homeOnly: true, closedIds, requester });
    return closedIds;
  }

  /** The idle context this home would evict for the global cap (unproven first), for another home choosing. */
  oldestIdle(source?: string): HomeCandidate {
    return this.#rooms.capacity.oldestIdle(source);
  }

  /** Suspends the idle context of oldestIdle(source) ('evicted'), for another home over the cap, if it is of the class `reported`. */
  evictOldestIdle(reported: Pick<IdleCandidate, 'unproven' | 'ofSource'>, source?: string): boolean {
    return this.#rooms.capacity.evictOldestIdle(reported, source);
  }

  /** The cluster lost this node's lease: every context leaves memory (./shutdown.ts). */
  relinquish(deadlineMs: number): Promise<void> {
    return relinquishAll(this.#rooms, deadlineMs);
  }

  /**
   * Graceful shutdown within `deadlineMs` (0: no deadline); `stopHost` stops the worker threads
   * at the deadline. Call it once. See ./shutdown.ts.
   */
  shutdown(deadlineMs: number, stopHost: () => Promise<void>): Promise<{ suspended: number; lost: number }> {
    this.#rooms.closing = true;
    this.#sweeper.stop();
    return shutDown(this.#rooms, deadlineMs, stopHost);
  }
}
