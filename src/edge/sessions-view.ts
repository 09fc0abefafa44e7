/**
 * Every thread's sessions as the main thread sees them: the admin view, the metrics, the
 * benchmarks and the tests read this, never a thread's rooms. Counters and the figures held now
 * come from shared memory (summed, read when asked); a session is asked of its home thread,
 * named in its ID; a listing is gathered from every thread.
 */
import type { ContextPool } from '../contexts/pool.ts';
import { Homes, summedStats, type SharedState } from '../contexts/shared-state.ts';
import { isSessionIdShape } from '../contexts/ids.ts';
import type { ListQuery, OverBudget, SessionInfo, SessionStats, SourceAlarms } from '../sessions/index.ts';
import type { ContextStore } from '../stores/store.ts';
import type { Log } from '../log.ts';

/** Expired records read per round of the store sweep. */
const EXPIRED_BATCH = 1_000;

export class SessionsView {
  readonly #pool: ContextPool;
  readonly #homes: Homes;
  readonly #store: ContextStore;
  readonly #log: Log;
  #closing = false;

  readonly #alarms: SourceAlarms;

  constructor(pool: ContextPool, shared: SharedState, store: ContextStore, log: Log, alarms: SourceAlarms) {
    this.#pool = pool;
    this.#homes = new Homes(shared);
    this.#store = store;
    this.#log = log;
    this.#alarms = alarms;
    this.stats = summedStats(shared);
  }

  /** Sources over a hostile-traffic budget in this window and the one before (copies). */
  sourcesOverBudget(): OverBudget[] {
    return this.#alarms.list();
  }

  /** How many sources are over each budget in this window. */
  sourcesOverBudgetCount(): Record<OverBudget['budget'], number> {
    return this.#alarms.counts();
  }

  /**
   * The counters and the sessions held now, over every thread, and the requests that hopped
   * to their home thread: a live, read-only view.
   */
  readonly stats: SessionStats & { readonly hops: number };

  /** True once shutdown began. */
  get closing(): boolean {
    return this.#closing;
  }

  markClosing(): void {
    this.#closing = true;
  }

  #home(id: string): number {
    return this.#homes.of(id);
  }

  /** One session, asked of its home thread; undefined when it knows none by that ID. */
  async info(id: string): Promise<SessionInfo | undefined> {
    if (!isSessionIdShape(id)) return undefined;
    return (await this.#pool.call<SessionInfo | null>(this.#home(id), { op: 'info', id }).catch(() => null)) ?? undefined;
  }

  /** Sessions in memory or suspended ones known to the threads, least recently active first. */
  async list(query: ListQuery): Promise<SessionInfo[]> {
    const start = query.start ?? 0;
    const limit = query.limit ?? Infinity;
    // Each thread's first start + limit, merged: enough for the page whatever their mix.
    const perThread = { state: query.state, start: 0, limit: Number.isFinite(limit) ? start + limit : undefined };
    const answers = await this.#pool.broadcast<SessionInfo[]>({ op: 'list', query: perThread });
    // Idle time is on one monotonic scale on every thread (a wall-clock figure computed by each
    // thread at its own moment is not); sessions idle alike go in the order they were created.
    const idle = (info: SessionInfo) => info.idleMs ?? Infinity;
    const all = answers.flatMap(({ value }) => value).sort((a, b) => idle(b) - idle(a) || a.createdAt - b.createdAt);
    return all.slice(start, Number.isFinite(limit) ? start + limit : undefined);
  }

  /** Every session of `userId`, on every thread and in the store. */
  sessionsOfUser(userId: string): Promise<SessionInfo[]> {
    return this.#pool.call(this.#anySlot(), { op: 'sessionsOfUser', userId });
  }

  /** Closes every session of `userId`, on every thread and in the store; resolves with how many. */
  closeUser(userId: string, options: { by?: string } = {}): Promise<number> {
    return this.#pool.call(this.#anySlot(), { op: 'closeUser', userId, by: options.by ?? 'admin' });
  }

  /** Closes one session by ID, through its home; false when there is no such session. */
  async closeSession(id: string, by: string): Promise<boolean> {
    if (!isSessionIdShape(id)) return false;
    return this.#pool.call(this.#home(id), { op: 'closeSession', id, by });
  }

  /** Suspends one live context now, through its home (see Sessions.suspendSession). */
  async suspendSession(id: string): Promise<'suspended' | 'busy' | 'not-live' | 'failed' | 'lost' | 'dropped'> {
    if (!isSessionIdShape(id)) return 'not-live';
    return this.#pool.call(this.#home(id), { op: 'suspendSession', id });
  }

  /** Runs every thread's idle and expiry sweep now (it also runs every 250 ms). */
  async sweep(): Promise<void> {
    await this.#pool.broadcast({ op: 'sweep' });
  }

  /**
   * Removes expired records nobody knows: batch after batch from the store, each record's home
   * asked to drop those it does not hold (a session it holds expires on its monotonic clock).
   * A home being replaced keeps its records until the next sweep. Resolves with how many went.
   */
  async sweepStore(): Promise<number> {
    let removed = 0;
    try {
      for (;;) {
        const ids = await this.#store.expiredIds(Date.now(), EXPIRED_BATCH);
        const byHome = new Map<number, string[]>();
        for (const id of ids) {
          const home = this.#home(id);
          byHome.set(home, [...(byHome.get(home) ?? []), id]);
        }
        let round = 0;
        for (const [home, homed] of byHome) round += await this.#pool.call<number>(home, { op: 'dropExpired', ids: homed }).catch(() => 0);
        removed += round;
        if (ids.length < EXPIRED_BATCH || round === 0) break;
      }
    } catch (error) {
      this.#log.error({ event: 'store-error', err: error }, 'the store sweep failed; it will run again');
    }
    if (removed > 0) this.#log.info({ event: 'store-sweep', removed }, 'expired session records removed');
    return removed;
  }

  /** A connected slot to run a user-wide call from (it reaches the others itself). */
  #anySlot(): number {
    return this.#pool.edges.map(({ slot }) => slot).sort((a, b) => a - b)[0] ?? 0;
  }
}
