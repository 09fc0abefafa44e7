/**
 * The worker pool: piscina with a load balancer that pins each context to one thread for its
 * whole life. The settings follow what we measured (../shared/DESIGN.md): affinity keyed by
 * `worker.id` (the array position changes when a worker is replaced), always the home worker
 * (a null would send the task to piscina's shared queue, where order can break), no
 * AbortSignal (aborting terminates the thread and every context on it), and
 * `atomics: 'async'` so idle workers keep their timers running.
 */
import { fileURLToPath } from 'node:url';
import { Piscina } from 'piscina';
import type { PiscinaTask } from 'piscina';
import type { WorkerEvent, WorkerReply, WorkerTask } from './protocol.ts';
import type { WorkerSettings } from './worker.ts';

/** Where a context lives: the balancer reads it, and writes it when it picks a home. */
export interface Route {
  workerId: number | null;
}

interface BalancedWorker {
  id: number;
  currentUsage: number;
}

export interface PoolEvents {
  /** A worker thread is gone (crashed or exited): the contexts homed on it are lost. */
  onWorkerGone(workerId: number): void;
  onWorkerEvent(event: WorkerEvent): void;
  onPoolError(error: Error): void;
}

const WORKER_ENTRY = fileURLToPath(new URL('./worker-entry.mjs', import.meta.url));

export class ContextPool {
  readonly #piscina: Piscina<WorkerTask, WorkerReply>;
  /** Contexts homed per worker id: new contexts go to the thread holding the fewest. */
  readonly #homed = new Map<number, number>();
  #closed = false;

  constructor(threads: number, settings: WorkerSettings, events: PoolEvents) {
    this.#piscina = new Piscina({
      filename: WORKER_ENTRY,
      minThreads: threads,
      maxThreads: threads,
      idleTimeout: Infinity,
      concurrentTasksPerWorker: 1_000_000,
      atomics: 'async',
      recordTiming: false,
      workerData: settings,
      loadBalancer: (task, workers) => this.#pick(task, workers),
    });
    this.#piscina.on('workerCreate', (worker: BalancedWorker) => this.#homed.set(worker.id, 0));
    // By the time piscina reports a destroyed worker its threadId reads -1, so the dead one is
    // found as the known id no longer among the running threads.
    this.#piscina.on('workerDestroy', () => {
      const running = new Set(this.#piscina.threads.map((thread) => thread.threadId));
      for (const id of [...this.#homed.keys()]) {
        if (running.has(id)) continue;
        this.#homed.delete(id);
        if (!this.#closed) events.onWorkerGone(id);
      }
    });
    this.#piscina.on('message', (event: WorkerEvent) => events.onWorkerEvent(event));
    this.#piscina.on('error', (error: Error) => events.onPoolError(error));
  }

  /** Resolves once every thread has loaded the hooks; rejects if a hook module fails to load. */
  async ready(): Promise<void> {
    // A throwaway context per thread forces each worker to import the hooks now rather than
    // on the first client's request.
    await Promise.all(
      Array.from({ length: this.#piscina.maxThreads }, () => this.#piscina.run({ type: 'discard', sessionId: '' })),
    );
  }

  /**
   * Sends a task to the home worker of `route` (assigning one if it has none yet); a task
   * without a route goes to the least busy thread.
   */
  run(task: WorkerTask, route: Route | null, transfer?: ArrayBuffer): Promise<WorkerReply> {
    return this.#piscina.run(this.#routed(task, route), transfer ? { transferList: [transfer] } : undefined);
  }

  /** The balancer reads the route from this symbol; structured clone leaves it behind. */
  #routed(task: WorkerTask, route: Route | null): WorkerTask {
    (task as unknown as Record<symbol, unknown>)[Piscina.queueOptionsSymbol] = route;
    return task;
  }

  /** The context behind `route` left its worker: forget its home. */
  release(route: Route): void {
    if (route.workerId === null) return;
    const count = this.#homed.get(route.workerId);
    if (count !== undefined) this.#homed.set(route.workerId, Math.max(0, count - 1));
    route.workerId = null;
  }

  /** Live contexts per worker thread id. */
  get homedCounts(): ReadonlyMap<number, number> {
    return this.#homed;
  }

  get threadIds(): number[] {
    return this.#piscina.threads.map((thread) => thread.threadId);
  }

  /** Each worker's figures: contexts held and heap used. */
  async workerStats(options: { gc?: boolean } = {}): Promise<Array<{ threadId: number; contexts: number; heapUsed: number }>> {
    const replies = await Promise.all(
      [...this.#homed.keys()].map((workerId) => this.#piscina.run(this.#routed({ type: 'stats', sessionId: '', gc: options.gc }, { workerId }))),
    );
    return replies.flatMap((reply) => (reply.type === 'stats' ? [{ threadId: reply.threadId, contexts: reply.contexts, heapUsed: reply.heapUsed }] : []));
  }

  async close(): Promise<void> {
    this.#closed = true;
    await this.#piscina.destroy();
  }

  #pick<W extends BalancedWorker>(task: PiscinaTask, workers: W[]): W | null {
    if (workers.length === 0) return null;
    const route = (task as unknown as Record<symbol, Route | null>)[Piscina.queueOptionsSymbol] ?? null;
    if (route?.workerId != null) {
      for (const worker of workers) if (worker.id === route.workerId) return worker;
      // The home thread is gone: the context went with it. Its next task finds no context
      // on the new home and says so ('gone'), and the session resumes from its memento.
      this.release(route);
    }
    let best = workers[0]!;
    let bestLoad = route ? this.#homed.get(best.id) ?? 0 : best.currentUsage;
    for (const worker of workers) {
      const load = route ? this.#homed.get(worker.id) ?? 0 : worker.currentUsage;
      if (load < bestLoad) {
        best = worker;
        bestLoad = load;
      }
    }
    if (route) {
      route.workerId = best.id;
      this.#homed.set(best.id, (this.#homed.get(best.id) ?? 0) + 1);
    }
    return best;
  }
}
