/**
 * `sessions.maxUnprovenPerIp` on this home: the unproven sessions one source holds in memory.
 * Each of the N homes holds ⌈budget/N⌉ of a source's, so a new session is judged here, on the
 * hot path, without asking any other thread. Beyond its share, a new session pushes out the
 * source's oldest idle unproven one (onSessionSuspend(ctx, 'dropped'), nothing stored); when
 * every one of them is busy, the new one is refused (429) rather than a place taken from
 * another client.
 */
import { ResidentError } from '../errors.ts';
import type { Rooms } from './rooms.ts';
import { firstIdle } from './unproven.ts';
import { RecentKeys } from './first-per-window.ts';

export class SourceBudget {
  readonly #rooms: Rooms;
  /** A source's share on this home; Infinity: no budget. */
  readonly #share: number;

  constructor(rooms: Rooms) {
    this.#rooms = rooms;
    const { maxUnprovenPerIp, suspendEveryRequest } = rooms.config;
    // The round-trip test mode keeps every session: nothing to push out.
    this.#share = maxUnprovenPerIp === 0 || suspendEveryRequest ? Infinity : Math.ceil(maxUnprovenPerIp / Math.max(1, rooms.homes));
    this.#dropping = new RecentKeys(rooms.config.budgetWindow);
  }

  /** An unproven session of `source` was pushed out by its own source's budget, or for a returning user: its cookie never came back. */
  noteDropped(source: string): void {
    this.#dropping.add(source);
  }

  /**
   * Whether `source` already has new sessions on this home: held live, or pushed out unproven
   * (by its budget, or for a returning user) in this budgetWindow or the one before; with `creating`, also one being created. Such a source
   * makes room under the cap only from its own (Capacity.makeRoom): otherwise a flood whose one
   * session a returning user displaced would come back as a "first visit" each time and push
   * another user out.
   */
  hasNew(source: string, creating = false): boolean {
    return this.#rooms.directory.unproven.countOf(source) > 0 || this.#dropping.has(source) || (creating && this.#creating.has(source));
  }

  /**
   * Creations of a source under way on this home, from their start to their arrival in the
   * directory, where the unproven index cannot see them yet.
   */
  readonly #creating = new Map<string, number>();
  /** Sources whose unproven sessions were pushed out lately by their own or a returning user (noteDropped). */
  readonly #dropping: RecentKeys;

  /**
   * A creation of `source` starts: true when another of that source started before it and is
   * still under way. Creations started together (a flood's connections) would each find the
   * source holding no new session; this way only the first may take another client's place
   * (see Capacity.makeRoom). Paired with end().
   */
  begin(source: string): boolean {
    const ahead = this.#creating.get(source) ?? 0;
    this.#creating.set(source, ahead + 1);
    return ahead > 0;
  }

  end(source: string): void {
    const left = (this.#creating.get(source) ?? 1) - 1;
    if (left > 0) this.#creating.set(source, left);
    else this.#creating.delete(source);
  }

  /** The share of a source on this home (Infinity: none). */
  get share(): number {
    return this.#share;
  }

  /**
   * Makes room for one more unproven session of `source`, or answers the error that refuses
   * it. Called with no await between it and the new session's arrival in the directory, so
   * concurrent creations cannot overshoot the share.
   */
  makeRoom(source: string): ResidentError | undefined {
    const { directory, counters, lifecycle, overBudget } = this.#rooms;
    while (directory.unproven.countOf(source) >= this.#share) {
      // Each push-out or refusal is one event of the source over its budget.
      overBudget(source, 'unproven');
      const victim = firstIdle(directory.unproven.ofSource(source), Infinity);
      if (!victim) {
        counters.refusedNew++;
        return new ResidentError('RESIDENT_ERR_TOO_MANY_NEW');
      }
      counters.pushedOut++;
      // Marked suspending at once: it leaves the source's count before this returns.
      this.noteDropped(source);
      void lifecycle.startSuspend(victim, 'dropped');
    }
    return undefined;
  }
}
