/**
 * Unknown session IDs (well-formed, not held in memory) cost a store read each: an attacker
 * guessing IDs, or replaying random ones, would make the store its amplifier. Each source has
 * `sessions.maxUnknownIdsPerIp` lookups per window (`sessions.budgetWindow`): counted before
 * the read, so however many requests are in flight the reads stay within it, and given back
 * for each ID the store did hold (a real session, suspended before a restart, is no guess).
 * Past it, the source's unknown IDs are treated as no cookie, without a read. One budget for
 * every thread: the main thread holds it (edge threads ask through src/stores/remote.ts).
 */
import type { ContextStore } from '../stores/store.ts';
import type { SessionCounters } from './counters.ts';
import type { SourceAlarms } from './source-alarms.ts';

/** Which of `ids` (unknown here) the store holds, within the source's budget. */
export interface UnknownIds {
  existing(ids: readonly string[], source: string): Promise<Set<string>>;
}

export class GuessBudget implements UnknownIds {
  readonly #store: ContextStore;
  readonly #budget: number;
  readonly #windowMs: number;
  readonly #counters: SessionCounters;
  readonly #alarms: SourceAlarms;
  readonly #now: () => number;
  #window = -1;
  /** Lookups counted per source in the current window. */
  #used = new Map<string, number>();
  /** Each source's lookups under way, settled (either way) once their count is adjusted. */
  readonly #pending = new Map<string, Set<Promise<void>>>();

  constructor(
    store: ContextStore,
    config: { maxUnknownIdsPerIp: number; budgetWindow: number },
    counters: SessionCounters,
    alarms: SourceAlarms,
    now: () => number = Date.now,
  ) {
    this.#store = store;
    this.#budget = config.maxUnknownIdsPerIp;
    this.#windowMs = Math.max(1, config.budgetWindow);
    this.#counters = counters;
    this.#alarms = alarms;
    this.#now = now;
  }

  async existing(ids: readonly string[], source: string): Promise<Set<string>> {
    if (this.#budget === 0) {
      this.#counters.unknownIds += ids.length;
      return this.#store.existing(ids);
    }
    let window: number;
    let allowed: number;
    for (;;) {
      window = Math.floor(this.#now() / this.#windowMs);
      if (window !== this.#window) {
        // A fresh window forgets every source: the map holds one window's sources at most.
        this.#window = window;
        this.#used = new Map();
      }
      const used = this.#used.get(source) ?? 0;
      allowed = Math.max(0, Math.min(ids.length, this.#budget - used));
      // Spent, but by lookups still under way: each ID they find gives its count back (in a
      // cluster most are sessions another node holds), so they are waited for before this
      // source's IDs are taken for guesses. A guesser's lookups find nothing and give nothing back.
      const pending = this.#pending.get(source);
      if (allowed === ids.length || !pending) break;
      await Promise.race(pending);
    }
    this.#used.set(source, (this.#used.get(source) ?? 0) + allowed);
    if (allowed < ids.length) {
      this.#counters.unknownIdsUnread += ids.length - allowed;
      this.#alarms.note(source, 'unknown_ids', ids.length - allowed);
    }
    if (allowed === 0) return new Set();
    this.#counters.unknownIds += allowed;
    let done!: () => void;
    const settled = new Promise<void>((resolve) => (done = resolve));
    const pending = this.#pending.get(source) ?? new Set<Promise<void>>();
    this.#pending.set(source, pending.add(settled));
    let givenBack = 0;
    try {
      const found = await this.#store.existing(allowed === ids.length ? ids : ids.slice(0, allowed));
      givenBack = found.size;
      return found;
    } catch (error) {
      // A lookup the store did not answer says nothing of the IDs: given back, or an outage
      // would spend the budget of every source whose cookies this node does not hold, and their
      // next requests would get fresh sessions in place of theirs. While it was under way it
      // counted, so in-flight lookups stay within the budget all the same.
      givenBack = allowed;
      throw error;
    } finally {
      // Given back only within the window it was counted in; then the waiters look again.
      if (givenBack > 0 && this.#window === window) this.#used.set(source, Math.max(0, (this.#used.get(source) ?? 0) - givenBack));
      pending.delete(settled);
      if (pending.size === 0 && this.#pending.get(source) === pending) this.#pending.delete(source);
      done();
    }
  }
}
