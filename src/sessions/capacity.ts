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
   * Keeps live contexts within `maxContexts`: suspends the least recently active context with
   * no request in flight. When every context is busy the caller answers 503 (C5, C6).
   * Synchronous: the room it makes and the context the caller adds are one step.
   */
  makeRoom(): ResidentError | undefined {
    const { directory, clock, config, lifecycle, log } = this.#rooms;
    // More than one may go: contexts whose eviction the store refused stayed live over the cap,
    // and once it takes writes again the count comes back down here. Each victim is marked
    // suspending at once, so it counts no more and is not picked twice.
    const now = clock.now();
    // Contexts whose suspend was refused lately (a store outage) are tried again at most one
    // per admission: a client arriving after the store recovers still brings the count back
    // down, and one arriving during the outage costs one refused write, not one per context.
    let retried = false;
    while (directory.liveCount >= config.maxContexts) {
      let { victim, refusedLately } = chooseVictim(directory.live.values(), now);
      if (!victim && refusedLately) {
        // Over the cap until the store takes writes again (E4), rather than a memento lost.
        if (retried) return undefined;
        retried = true;
        victim = refusedLately;
      }
      if (!victim) {
        log.warn({ event: 'capacity', maxContexts: config.maxContexts }, 'every context is busy: refusing a new one');
        return new ResidentError('RESIDENT_ERR_CAPACITY');
      }
      void lifecycle.startSuspend(victim, 'evicted');
    }
    return undefined;
  }
}
