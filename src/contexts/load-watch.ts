/**
 * Threads loading the hook modules, watched from the main thread (red team 3). A thread is
 * only given a heartbeat when it takes its slot, after its hooks loaded (./heartbeat.ts), so a
 * hook module that spins as it loads would otherwise never be watched: at startup the server
 * would hang, and a replacement would burn a core for good. Each thread says when it starts
 * and when it has finished importing the hook modules (./worker.ts); one that takes longer than
 * `workers.stallTimeout` is reported and terminated.
 *
 * Only that import is timed: not Node's bootstrap of the thread, nor registering tsx and
 * loading Resident's own modules, nor becoming an edge (src/edge/thread.ts). On a busy 2-core
 * machine those took 1-2 s, which a short stallTimeout must not be measured against.
 */
import type { Worker } from 'node:worker_threads';
import type { HooksLoading } from './protocol.ts';

export class LoadWatch {
  readonly #timeoutMs: number;
  readonly #threads: () => readonly Worker[];
  readonly #onStuck: (worker: Worker, loadingMs: number, loading: HooksLoading) => void;
  /** performance.now() when each thread (by id) started loading the hook modules. */
  readonly #since = new Map<number, number>();
  /** What each of them said it loads now (the module a stall is reported on). */
  readonly #loading = new Map<number, HooksLoading>();
  readonly #checkEveryMs: number;
  #timer: NodeJS.Timeout | undefined;
  #lastCheck = 0;

  /** @param timeoutMs 0: never (the watchdog is off) */
  constructor(timeoutMs: number, threads: () => readonly Worker[], onStuck: (worker: Worker, loadingMs: number, loading: HooksLoading) => void) {
    this.#timeoutMs = timeoutMs;
    this.#threads = threads;
    this.#onStuck = onStuck;
    this.#checkEveryMs = Math.max(100, Math.min(250, timeoutMs / 4));
  }

  /** A thread started loading a hook module (each has the whole timeout), or finished loading them. */
  mark(said: HooksLoading): void {
    if (this.#timeoutMs === 0) return;
    if (said.loading) {
      this.#since.set(said.threadId, performance.now());
      this.#loading.set(said.threadId, said);
    } else {
      this.#since.delete(said.threadId);
      this.#loading.delete(said.threadId);
    }
  }

  start(): void {
    if (this.#timeoutMs === 0 || this.#timer) return;
    this.#lastCheck = performance.now();
    this.#timer = setInterval(() => this.#check(), this.#checkEveryMs);
    this.#timer.unref();
  }

  stop(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
    this.#since.clear();
    this.#loading.clear();
  }

  #check(): void {
    const now = performance.now();
    // A late check: the whole process was paused (SIGSTOP, a suspended VM), and time nobody
    // could watch says nothing about a thread (as in ./watchdog.ts): the clocks start afresh.
    const blind = now - this.#lastCheck > 2 * this.#checkEveryMs + 100;
    this.#lastCheck = now;
    const current = new Map<number, Worker>();
    // -1: it has exited already (piscina drops it soon).
    for (const worker of this.#threads()) if (worker.threadId !== -1) current.set(worker.threadId, worker);
    for (const [threadId, since] of this.#since) {
      const worker = current.get(threadId);
      if (!worker) this.#since.delete(threadId);
      else if (blind) this.#since.set(threadId, now);
      else if (now - since > this.#timeoutMs) {
        this.#since.delete(threadId);
        const loading = this.#loading.get(threadId)!;
        this.#loading.delete(threadId);
        this.#onStuck(worker, now - since, loading);
      }
    }
  }
}
