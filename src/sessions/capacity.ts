/**
 * The cap: `sessions.maxContexts` live contexts at most. Which context leaves is a pure choice:
 * unproven ones first (their client never presented the cookie back: a cookieless flood
 * evicts itself, not a real user), the new session's own source's before any other's, then
 * the least recently active one with no request in flight (4D's rule). The eviction itself is
 * a suspend, done by the lifecycle room.
 */
import { ResidentError } from '../errors.ts';
import type { SessionEntry } from './directory.ts';
import type { HomeCandidate, IdleCandidate } from './peers.ts';
import type { Rooms } from './rooms.ts';
import { firstIdle } from './unproven.ts';

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
   * cap is global, as in 4D): while the count is over, an idle context is suspended
   * ('evicted'), here or on its own home: an unproven one of `source` here, else the globally
   * oldest unproven one, else the globally least recently active one.
   * Resolves with the error that answers 503 when every context is busy (C5, C6). On success
   * the place is held until `placed()` or `unplace()`: the caller adds its context with no
   * await in between, so two creations, on one home or on two, cannot both take the last place.
   */
  async makeRoom(source?: string, sourceUnderWay = false): Promise<ResidentError | undefined> {
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
          this.#rooms.log.warn({ event: 'capacity', maxContexts: config.maxContexts }, 'no idle context could be evicted in time: refusing a new one');
          return new ResidentError('RESIDENT_ERR_CAPACITY');
        }
        const evicted = await this.#evictOne(retried, source, sourceUnderWay);
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

  /**
   * Whether the contexts still leaving memory on this home (their onSessionSuspend running)
   * number maxContexts: a new session then waits (503) rather than push another one out, so
   * a slow hook cannot make a flood's contexts pile up. Not a share of the cap per home: a
   * burst of legitimate creations makes as many suspends at once, all on one home at times.
   */
  leavingFull(): boolean {
    const { directory, config } = this.#rooms;
    return directory.suspendingCount >= config.maxContexts;
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
   * Suspends one idle context of some home, unproven ones first: 'evicted' once one went,
   * 'again' when the candidates changed meanwhile (or the room was made by others),
   * 'retried' when a context refused lately was tried again, 'over' when the cap stays
   * exceeded until the store takes writes again (E4), or the error when every one is busy.
   */
  async #evictOne(retried: boolean, source?: string, sourceUnderWay = false): Promise<'evicted' | 'again' | 'retried' | 'over' | ResidentError> {
    const { directory, clock, config, counters, lifecycle, log, peers } = this.#rooms;
    const { candidates: elsewhere, sourceHoldsUnproven } = await peers.idleCandidates(source);
    // Other creations may have made the room while the other homes answered: an eviction now
    // would be one nobody needs (an idle context suspended for nothing).
    if (this.#rooms.cap.total <= config.maxContexts) return 'again';
    // This home's choice is made after that await, with none before the victim is marked: two
    // creations here never pick the same one, so none of them loses its turn to the other.
    const now = clock.now();
    const victim = this.#localVictim(source);
    const { refusedLately } = chooseVictim(directory.live.values(), now);
    let best: IdleCandidate | undefined;
    for (const candidate of elsewhere) if (!best || before(candidate, best)) best = candidate;
    const here = victim && candidateOf(victim, source);
    const chosen = here && (!best || !before(best, here)) ? here : best;
    if (chosen && !chosen.ofSource && source !== undefined && (sourceUnderWay || sourceHoldsUnproven || this.#rooms.sources.hasNew(source))) {
      // This source already has new sessions of its own, none idle (or lately dropped ones): a
      // flood. It waits (429) rather than take the place of a real user, or of another
      // source's first page; a first visit from a source that has none makes room as the cap
      // says.
      counters.refusedNew++;
      return new ResidentError('RESIDENT_ERR_TOO_MANY_NEW');
    }
    // Each victim is marked suspending at once, so it counts no more and is not picked twice.
    if (victim && here && chosen === here) {
      this.#evict(victim, source);
      return 'evicted';
    }
    if (best && (await peers.evict(best.home, best, source))) return 'evicted';
    // Changed meanwhile (a request came, or a concurrent creation here took the same victim
    // while this one awaited the other homes' candidates): look again. Only "no candidate
    // anywhere" means every context is busy; a victim taken by another eviction did not.
    if (best || victim) return 'again';
    if (refusedLately && refusedLately.state === 'live' && !refusedLately.gate) {
      // Over the cap until the store takes writes again (E4), rather than a memento lost.
      if (retried) return 'over';
      void lifecycle.startSuspend(refusedLately, 'evicted');
      return 'retried';
    }
    log.warn({ event: 'capacity', maxContexts: config.maxContexts }, 'every context is busy: refusing a new one');
    return new ResidentError('RESIDENT_ERR_CAPACITY');
  }

  /**
   * This home's choice of victim for a new session of `source`: its oldest idle unproven one of
   * that source (a flood evicts itself), else its oldest idle unproven one, else its least
   * recently active idle one.
   */
  #localVictim(source?: string): SessionEntry | undefined {
    const { directory, clock } = this.#rooms;
    const now = clock.now();
    const own = source === undefined ? undefined : firstIdle(directory.unproven.ofSource(source), now);
    return own ?? firstIdle(directory.unproven.all(), now) ?? chooseVictim(directory.live.values(), now).victim;
  }

  /**
   * A peer asks this home to give up its idle context of choice for `source` (see oldestIdle);
   * only one of the class it was told of (`reported`) may go: true when one went.
   */
  evictOldestIdle(reported: Pick<IdleCandidate, 'unproven' | 'ofSource'>, source?: string): boolean {
    const victim = this.#localVictim(source);
    const found = victim && candidateOf(victim, source);
    if (!victim || !found || (reported.unproven && !found.unproven) || (reported.ofSource && !found.ofSource)) return false;
    this.#evict(victim, source);
    return true;
  }

  /**
   * Suspends `victim` for a new session of `source` (undefined: a returning session's resume).
   * An unproven one that leaves for a returning user marks its source (SourceBudget.hasNew):
   * otherwise that source's next first visit would push a user out, whose return displaces it
   * again, and so on. One that leaves for a new session (its own source's or another's) does
   * not: a second visitor behind one address is no flood for that.
   */
  #evict(victim: SessionEntry, source: string | undefined): void {
    if (!victim.proven && source === undefined) this.#rooms.sources.noteDropped(victim.source);
    void this.#rooms.lifecycle.startSuspend(victim, 'evicted');
  }

  /** This home's idle context of choice for a new session of `source`, for a peer choosing a victim. */
  oldestIdle(source?: string): HomeCandidate {
    const victim = this.#localVictim(source);
    const sourceHolds = source !== undefined && this.#rooms.sources.hasNew(source, true);
    return { idle: victim ? candidateOf(victim, source) : null, sourceHolds };
  }
}

/** `entry` as a candidate for a new session of `source` (the home is the caller's to add). */
function candidateOf(entry: SessionEntry, source?: string): Omit<IdleCandidate, 'home'> {
  return { lastActive: entry.lastActive, unproven: !entry.proven, ofSource: !entry.proven && source !== undefined && entry.source === source };
}

/**
 * Whether candidate `a` leaves before `b`: an unproven one of the new session's source first,
 * then any unproven one, then the least recently active.
 */
function before(a: Omit<IdleCandidate, 'home'>, b: Omit<IdleCandidate, 'home'>): boolean {
  if (a.ofSource !== b.ofSource) return a.ofSource;
  if (a.unproven !== b.unproven) return a.unproven;
  return a.lastActive < b.lastActive;
}
