/**
 * Threads still loading their hooks, watched from the main thread (red team 3). A thread is
 * only given a heartbeat when it becomes an edge, after its hooks loaded (./heartbeat.ts),
 * so a hook module that spins as it loads would otherwise never be watched: at startup the
 * server would hang, and a replacement would burn a core for good. A thread must finish
 * loading within `workers.stallTimeout`; one that does not is reported and terminated.
 */
import type { Worker } from 'node:worker_threads';

export class LoadWatch {
  readonly #timeoutMs: number;
  readonly #threads: () => readonly Worker[];
  readonly #loaded: (threadId: number) => boolean;
  readonly #onStuck: (worker: Worker, loadingMs: number) => void;
  /** performance.now() when each thread still loading was first seen. */
  readonly #since = new Map<Worker, number>();
  #timer: NodeJS.Timeout | undefined;

  /** @param timeoutMs 0: never (the watchdog is off) */
  constructor(timeoutMs: number, threads: () => readonly Worker[], loaded: (threadId: number) => boolean, onStuck: (worker: Worker, loadingMs: number) => void) {
    this.#timeoutMs = timeoutMs;
    this.#threads = threads;
    this.#loaded = loaded;
    this.#onStuck = onStuck;
  }

  start(): void {
    if (this.#timeoutMs === 0 || this.#timer) return;
    this.#timer = setInterval(() => this.#check(), Math.max(100, Math.min(250, this.#timeoutMs / 4)));
    this.#timer.unref();
  }

  stop(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
    this.#since.clear();
  }

  #check(): void {
    const now = performance.now();
    const current = new Set(this.#threads());
    for (const worker of this.#since.keys()) if (!current.has(worker)) this.#since.delete(worker);
    for (const worker of current) {
      // -1: it has exited already (piscina drops it soon).
      if (worker.threadId === -1 || this.#loaded(worker.threadId)) {
        this.#since.delete(worker);
        continue;
      }
      const since = this.#since.get(worker);
      if (since === undefined) {
        this.#since.set(worker, now);
      } else if (now - since > this.#timeoutMs) {
        this.#since.delete(worker);
        this.#onStuck(worker, now - since);
      }
    }
  }
}
