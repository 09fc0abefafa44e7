/**
 * The map from session ID to its state, and the only writer of that state: every change of a
 * session's state (live, suspending, suspended, gone, ending), its ID, its user and its home
 * goes through a method here, so the rules of a session's life read in one place. Live and
 * suspended sessions are kept in
 * two Maps in least-recently-active order (re-inserting on activity keeps that order for
 * free), so the idle sweep and cap eviction read from the head: O(expired), never a scan of
 * every session, and no timer per session.
 */
import { ExpiryQueue } from './expiry-queue.ts';
import type { SessionEntry } from './entry.ts';
import { UnprovenIndex } from './unproven.ts';

export { newEntry, type SessionEntry, type SessionState } from './entry.ts';

/**
 * A touch moves an entry to its Map's tail only when its place is this stale. Re-inserting on
 * every request cost a delete and a set per touch, and with a million live sessions the Map's
 * cache misses and rehashes halved throughput (bench/ workload d).
 */
export const REORDER_MS = 250;

/** How many sessions the directory holds, by state (published to the other threads). */
export interface DirectoryCounts {
  live: number;
  suspending: number;
  suspended: number;
  unproven: number;
}

export class Directory {
  /** Sessions in state live or suspending, least recently active first. */
  readonly live = new Map<string, SessionEntry>();
  /** Suspended sessions, least recently active first. */
  readonly suspended = new Map<string, SessionEntry>();
  /** Live sessions whose client has not presented their cookie back, oldest first. */
  readonly unproven = new UnprovenIndex();
  /** userId → that user's sessions known to this process. */
  readonly #byUser = new Map<string, Set<SessionEntry>>();
  /**
   * Suspended sessions by last activity, for expiry: the `suspended` Map is in the order they
   * were suspended or adopted, which is not the order they expire in.
   */
  readonly #expiry = new ExpiryQueue<SessionEntry>();
  #suspending = 0;
  readonly #onCounts: (counts: DirectoryCounts) => void;

  /** @param onCounts told after every change of how many sessions are live, suspending or suspended here */
  constructor(onCounts: (counts: DirectoryCounts) => void = () => {}) {
    this.#onCounts = onCounts;
  }

  #changed(): void {
    this.#onCounts({ live: this.liveCount, suspending: this.#suspending, suspended: this.suspended.size, unproven: this.unproven.size });
  }

  get(id: string): SessionEntry | undefined {
    return this.live.get(id) ?? this.suspended.get(id);
  }

  /** The sessions of `userId` this process knows (live or suspended). */
  ofUser(userId: string): SessionEntry[] {
    return [...(this.#byUser.get(userId) ?? [])];
  }

  setUser(entry: SessionEntry, userId: string | null): void {
    if (entry.userId === userId) return;
    this.#unindexUser(entry);
    entry.userId = userId;
    if (userId === null || entry.state === 'gone') return;
    let entries = this.#byUser.get(userId);
    if (!entries) this.#byUser.set(userId, (entries = new Set()));
    entries.add(entry);
  }

  /** Gives a live session a new ID (ctx.regenerate()): the old ID stops resolving at once. */
  rename(entry: SessionEntry, id: string): void {
    const map = entry.state === 'suspended' ? this.suspended : this.live;
    map.delete(entry.id);
    const wasUnproven = this.unproven.delete(entry);
    entry.id = id;
    map.set(id, entry);
    if (wasUnproven) this.unproven.add(entry);
  }

  /** Its client presented the cookie back: from now on it is kept like any session. Returns it. */
  markProven(entry: SessionEntry): SessionEntry {
    if (entry.proven) return entry;
    entry.proven = true;
    if (this.unproven.delete(entry)) this.#changed();
    return entry;
  }

  /** The thread that hosts the context now, as the pool reported it; null when it left. */
  setHome(entry: SessionEntry, workerId: number | null): void {
    entry.workerId = workerId;
  }

  /** Its end has begun: from now on its responses expire the cookie. */
  markEnding(entry: SessionEntry, ending = true): void {
    entry.ending = ending;
  }

  #unindexUser(entry: SessionEntry): void {
    if (entry.userId === null) return;
    const entries = this.#byUser.get(entry.userId);
    entries?.delete(entry);
    if (entries?.size === 0) this.#byUser.delete(entry.userId);
  }

  /** Contexts that count against `maxContexts`. */
  get liveCount(): number {
    return this.live.size - this.#suspending;
  }

  /** Contexts whose suspend is under way (still in `live`, no longer counted against the cap). */
  get suspendingCount(): number {
    return this.#suspending;
  }

  addLive(entry: SessionEntry): void {
    entry.state = 'live';
    entry.orderedAt = entry.lastActive;
    this.suspended.delete(entry.id);
    this.live.set(entry.id, entry);
    if (!entry.proven) this.unproven.add(entry);
    this.#changed();
  }

  /** A session known only from the store (suspended before a restart). */
  addSuspended(entry: SessionEntry): void {
    entry.state = 'suspended';
    entry.orderedAt = entry.lastActive;
    this.suspended.set(entry.id, entry);
    this.#queueForExpiry(entry);
    const userId = entry.userId;
    entry.userId = null;
    this.setUser(entry, userId);
    this.#changed();
  }

  /** Records activity; moves the entry to the tail when its place is more than REORDER_MS old. */
  touch(entry: SessionEntry, now: number): void {
    entry.lastActive = now;
    if (now - entry.orderedAt < REORDER_MS) return;
    entry.orderedAt = now;
    const map = entry.state === 'suspended' ? this.suspended : entry.state === 'gone' ? undefined : this.live;
    if (map?.delete(entry.id)) map.set(entry.id, entry);
  }

  markSuspending(entry: SessionEntry): void {
    entry.state = 'suspending';
    this.#suspending++;
    // Leaving: no longer counted against its source's budget, nor a victim to pick again.
    this.unproven.delete(entry);
    this.#changed();
  }

  /** Ends a suspend attempt that left the context live. */
  markLiveAgain(entry: SessionEntry): void {
    if (entry.state === 'suspending') this.#suspending--;
    entry.state = 'live';
    if (!entry.proven) this.unproven.add(entry);
    this.#changed();
  }

  markSuspended(entry: SessionEntry): void {
    if (entry.state === 'suspending') this.#suspending--;
    entry.state = 'suspended';
    entry.init = null;
    entry.orderedAt = entry.lastActive;
    this.unproven.delete(entry);
    this.live.delete(entry.id);
    this.suspended.set(entry.id, entry);
    this.#queueForExpiry(entry);
    this.#changed();
  }

  #queueForExpiry(entry: SessionEntry): void {
    if (entry.queuedForExpiry) return;
    entry.queuedForExpiry = true;
    this.#expiry.push(entry.lastActive, entry);
  }

  /**
   * Suspended sessions idle for `limit` ms or more at monotonic time `now`, least recently
   * active first, for which `canEnd` says yes; taken out of the expiry queue. A session that
   * became active meanwhile takes a new place; one that is live or gone leaves the queue (a
   * later suspension queues it again).
   */
  takeExpired(now: number, limit: number, canEnd: (entry: SessionEntry) => boolean): SessionEntry[] {
    const expired: SessionEntry[] = [];
    const later: SessionEntry[] = [];
    while (now - this.#expiry.peekKey() >= limit) {
      const entry = this.#expiry.pop()!;
      entry.queuedForExpiry = false;
      if (entry.state !== 'suspended') continue;
      if (now - entry.lastActive < limit || !canEnd(entry)) later.push(entry);
      else expired.push(entry);
    }
    for (const entry of later) this.#queueForExpiry(entry);
    return expired;
  }

  remove(entry: SessionEntry): void {
    if (entry.state === 'suspending') this.#suspending--;
    entry.ending = false;
    this.#unindexUser(entry);
    entry.state = 'gone';
    this.unproven.delete(entry);
    this.live.delete(entry.id);
    this.suspended.delete(entry.id);
    this.#changed();
  }
}
