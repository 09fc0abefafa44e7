/**
 * The crash-loop breaker (RELIABILITY.md F5): counts threads lost within a sliding minute
 * (the pool counts those that died before any hook ran on them: see ContextPool).
 * At the limit the pool stops replacing threads, rather than burn CPU starting threads that
 * die again (a hook module that throws at load, a thread that exits right after loading). It stays
 * tripped until the process restarts: what broke the threads is still there.
 */

/** Replacements within WINDOW_MS that trip the breaker. */
export const CRASH_LOOP_LIMIT = 5;
export const CRASH_LOOP_WINDOW_MS = 60_000;

export class CrashBreaker {
  readonly #losses: number[] = [];
  #tripped = false;

  get tripped(): boolean {
    return this.#tripped;
  }

  /** Counts one lost thread; true when the losses within the window reach the limit. */
  lost(now = performance.now()): boolean {
    this.#losses.push(now);
    while (now - this.#losses[0]! > CRASH_LOOP_WINDOW_MS) this.#losses.shift();
    return this.#losses.length >= CRASH_LOOP_LIMIT;
  }

  /** Trips; false when it was tripped already. */
  trip(): boolean {
    if (this.#tripped) return false;
    this.#tripped = true;
    return true;
  }

  /** Losses counted within the window. */
  get recent(): number {
    return this.#losses.length;
  }
}
