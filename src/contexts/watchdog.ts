/**
 * Watches each worker thread's heartbeat (./heartbeat.ts) from the main thread and reports a
 * thread whose counter has not moved for `stallTimeoutMs` (RELIABILITY.md F3). The pool then
 * terminates it; piscina replaces it.
 */
import { BEAT_INTERVAL_MS, beats } from './heartbeat.ts';

interface Watched {
  heartbeat: Int32Array;
  last: number;
  /** performance.now() when the counter was last seen to move. */
  movedAt: number;
}

export class Watchdog {
  readonly #stallTimeoutMs: number;
  readonly #onStall: (threadId: number, heartbeat: Int32Array, stalledMs: number) => void;
  readonly #watched = new Map<number, Watched>();
  readonly #checkEveryMs: number;
  #timer: NodeJS.Timeout | undefined;
  #lastCheck = 0;

  /** @param stallTimeoutMs 0 turns the watchdog off */
  constructor(stallTimeoutMs: number, onStall: (threadId: number, heartbeat: Int32Array, stalledMs: number) => void) {
    this.#stallTimeoutMs = stallTimeoutMs;
    this.#onStall = onStall;
    // A stall is seen within a quarter of the timeout, and never judged on fewer beats than two.
    this.#checkEveryMs = Math.max(BEAT_INTERVAL_MS, Math.min(250, stallTimeoutMs / 4));
  }

  watch(threadId: number, heartbeat: Int32Array): void {
    if (this.#stallTimeoutMs === 0) return;
    this.#watched.set(threadId, { heartbeat, last: beats(heartbeat), movedAt: performance.now() });
    if (!this.#timer) {
      this.#lastCheck = performance.now();
      this.#timer = setInterval(() => this.#check(), this.#checkEveryMs);
      this.#timer.unref();
    }
  }

  unwatch(threadId: number): void {
    this.#watched.delete(threadId);
  }

  stop(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
    this.#watched.clear();
  }

  #check(): void {
    const now = performance.now();
    // This check came late: the whole process was paused (SIGSTOP, a suspended VM), and the
    // workers' timers may not have run since it resumed either. Time nobody could watch says
    // nothing about a thread, so the watch starts afresh rather than terminating them all. (A
    // main thread held up alone needs no care: the counters kept moving meanwhile.)
    const blind = now - this.#lastCheck > 2 * this.#checkEveryMs + BEAT_INTERVAL_MS;
    this.#lastCheck = now;
    for (const [threadId, watched] of this.#watched) {
      const current = beats(watched.heartbeat);
      if (current !== watched.last || blind) {
        watched.last = current;
        watched.movedAt = now;
        continue;
      }
      // The last beat came at most one check before movedAt, and the loop may have turned
      // until the next beat was due: only after one beat interval more is the stall certain.
      const stalledMs = now - watched.movedAt - BEAT_INTERVAL_MS;
      if (stalledMs < this.#stallTimeoutMs) continue;
      this.#watched.delete(threadId);
      this.#onStall(threadId, watched.heartbeat, stalledMs);
    }
  }
}
