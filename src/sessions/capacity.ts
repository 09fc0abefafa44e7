/**
 * The cap: `sessions.maxContexts` live contexts at most. Which context leaves is a pure choice
 * (the least recently active one with no request in flight, 4D's rule); the eviction itself
 * is a suspend, done by the lifecycle room.
 */
import { ResidentError } from '../errors.ts';
import type { SessionEntry } from './directory.ts';
import type { Rooms } from './rooms.ts';

export interface VictimChoice {
  /** The context to suspend: idle, least recently active, not refused lately. */
  victim?: SessionEntry;
  /** The least recently active of those whose suspend the store refused lately (E4). */
  refusedLately?: SessionEntry;
}

/**
 * Picks the context to evict from `live`, which is in activity order to within the directory's
 * reorder window: the scan stops once no later entry can be older than the best so far.
 */
export function chooseVictim(live: Iterable<SessionEntry>, now: number): VictimChoice {
  let victim: SessionEntry | undefined;
  let refusedLately: SessionEntry | undefined;
  for (const candidate of live) {
    if (victim && candidate.orderedAt >= victim.lastActive) break;
    if (candidate.state !== 'live' || candidate.inFlight > 0 || candidate.gate) continue;
    if (candidate.retryAt > now) {
      if (!refusedLately || candidate.lastActive < refusedLately.lastActive) refusedLately = candidate;
      continue;
    }
    if (!victim || candidate.lastActive < victim.lastActive) victim = candidate;
  }
  return { victim, refusedLately };
}

export class Capacity {
  readonly #rooms: Rooms;

  constructor(rooms: Rooms) {
    this.#rooms = rooms;
  }

  /**
   * Takes a place for one more live context within `maxContexts`, counted over every home (the
   * cap is global, as in 4D): while the count is over, the globally least recently active
   * context with no request in flight is suspended ('evicted'), here or on its own home.
   * Resolves with the error that answers 503 when every context is busy (C5, C6). On success
   * the place is held until `placed()` or `unplace()`: the caller adds its context with no
   * await in between, so two creations, on one home or on two, cannot both take the last place.
   */
  async makeRoom(): Promise<ResidentError | undefined> {
    const { cap, config } = this.#rooms;
    let total = cap.reserve();
    try {
      // Contexts whose suspend was refused lately (a store outage) are tried again at most one
      // per admission: a client arriving after the store recovers still brings the count back
      // down, and one arriving during the outage costs one refused write, not one per context.
      let retried = false;
      let evictedOwn = false;
      // A victim can get a request between being reported and being asked for: look again,
      // a bounded number of times.
      for (let attempts = 0; total > config.maxContexts; attempts++) {
        // One eviction per place taken over the cap: once this one's has gone, the rest of the
        // excess is other creations under way, each evicting for its own place. Evicting for
        // them too (the count read here includes their places) suspended idle contexts nobody
        // needed gone. With no other under way, contexts kept over the cap (E4) come back down.
        if (evictedOwn && cap.reserving > 1) break;
        if (attempts > 16) {
          cap.unreserve();
          return new ResidentError('RESIDENT_ERR_CAPACITY');
        }
        const evicted = await this.#evictOne(retried);
        if (evicted === 'evicted') evictedOwn = true;
        else if (evicted === 'retried') retried = true;
        else if (evicted === 'over') return undefined;
        else if (evicted instanceof ResidentError) {
          cap.unreserve();
          return evicted;
        }
        total = cap.total;
      }
      return undefined;
    } catch (error) {
      cap.unreserve();
      throw error;
    }
  }

  /** The context that took the place was added to the directory (which counted it). */
  placed(): void {
    this.#rooms.cap.unreserve();
  }

  /** The place taken by makeRoom() is not used after all. */
  unplace(): void {
    this.#rooms.cap.unreserve();
  }

  /**
   * Suspends the least recently active idle context of every home: 'evicted' once one went,
   * 'again' when the candidates changed meanwhile (or the room was made by others),
   * 'retried' when a context refused lately was tried again, 'over' when the cap stays
   * exceeded until the store takes writes again (E4), or the error when every one is busy.
   */
  async #evictOne(retried: boolean): Promise<'evicted' | 'again' | 'retried' | 'over' | ResidentError> {
    const { directory, clock, config, lifecycle, log, peers } = this.#rooms;
    const { victim, refusedLately } = chooseVictim(directory.live.values(), clock.now());
    const elsewhere = await peers.idleCandidates();
    // Other creations may have made the room while the other homes answered: an eviction now
    // would be one nobody needs (an idle context suspended for nothing).
    if (this.#rooms.cap.total <= config.maxContexts) return 'again';
    let oldest: (typeof elsewhere)[number] | undefined;
    for (const candidate of elsewhere) if (!oldest || candidate.lastActive < oldest.lastActive) oldest = candidate;
    // Each victim is marked suspending at once, so it counts no more and is not picked twice.
    if (victim && victim.state === 'live' && !victim.gate && victim.inFlight === 0 && (!oldest || victim.lastActive <= oldest.lastActive)) {
      void lifecycle.startSuspend(victim, 'evicted');
      return 'evicted';
    }
    if (oldest && (await peers.evict(oldest.home))) return 'evicted';
    // Changed meanwhile (a request came, or a concurrent creation here took the same victim
    // while this one awaited the other homes' candidates): look again. Only "no candidate
    // anywhere" means every context is busy; a victim taken by another eviction did not.
    if (oldest || victim) return 'again';
    if (refusedLately && refusedLately.state === 'live' && !refusedLately.gate) {
      // Over the cap until the store takes writes again (E4), rather than a memento lost.
      if (retried) return 'over';
      void lifecycle.startSuspend(refusedLately, 'evicted');
      return 'retried';
    }
    log.warn({ event: 'capacity', maxContexts: config.maxContexts }, 'every context is busy: refusing a new one');
    return new ResidentError('RESIDENT_ERR_CAPACITY');
  }

  /** A peer asks this home to give up its least recently active idle context; true when one went. */
  evictOldestIdle(): boolean {
    const { directory, clock, lifecycle } = this.#rooms;
    const { victim } = chooseVictim(directory.live.values(), clock.now());
    if (!victim) return false;
    void lifecycle.startSuspend(victim, 'evicted');
    return true;
  }

  /** This home's least recently active idle context's last activity, for a peer choosing a victim. */
  oldestIdle(): number | undefined {
    const { directory, clock } = this.#rooms;
    return chooseVictim(directory.live.values(), clock.now()).victim?.lastActive;
  }
}
