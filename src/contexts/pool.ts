/**
 * The worker pool. piscina supervises the threads: it starts them, loads the hooks, and
 * replaces a thread that dies. Requests do not travel as piscina tasks: each thread gets a
 * MessageChannel (./channel.ts) that carries them in batches, because the per-task cost of a
 * piscina run (a task object, an async resource, a wake-up per message) was the largest
 * main-thread cost after socket writes (bench/ profile, BENCHMARKS.md).
 *
 * Affinity is ours: the pool places a new context on the thread holding the fewest and
 * reports that thread; the sessions keep it as the context's home for its whole life and send
 * its tasks there (src/sessions/host.ts is the contract). piscina's balancer only routes the
 * control tasks (readiness, channel hand-over) to the thread they are for.
 *
 * The pool also guards the threads (RELIABILITY.md F3, F4, F5): a watchdog terminates a thread
 * whose event loop stops turning (./watchdog.ts), piscina's resourceLimits bound each heap,
 * and a breaker stops replacing threads that keep dying (./crash-breaker.ts).
 */
import { fileURLToPath } from 'node:url';
import { MessageChannel, type Worker } from 'node:worker_threads';
import { Piscina } from 'piscina';
import type { PiscinaTask } from 'piscina';
import { WorkerChannel, WorkerLostError } from './channel.ts';
import { CrashBreaker } from './crash-breaker.ts';
import { hookStarted, newHeartbeat, runningTask } from './heartbeat.ts';
import { Watchdog } from './watchdog.ts';
import { LoadWatch } from './load-watch.ts';
import { ResidentError } from '../errors.ts';
import type { ConnectTask, WorkerEvent, WorkerReply, WorkerTask } from './protocol.ts';
import type { WorkerSettings } from './worker.ts';
import type { ContextHost } from '../sessions/host.ts';

export { WorkerLostError };

interface BalancedWorker {
  id: number;
}

export interface PoolEvents {
  /** A worker thread is gone (crashed or exited): the contexts homed on it are lost. */
  onWorkerGone(workerId: number): void;
  onWorkerEvent(event: WorkerEvent): void;
  onPoolError(error: Error): void;
  /** The watchdog terminated a thread whose event loop did not turn for `stalledMs`. */
  onWorkerStalled(workerId: number, stalledMs: number): void;
  /** Threads kept dying: no more are started, the pool is degraded until a restart. */
  onCrashLoop(lost: number, reason: string): void;
}

/** How the pool guards its threads (config `workers`). */
export interface PoolLimits {
  threads: number;
  /** A thread whose event loop does not turn for this long is replaced; 0: never. */
  stallTimeoutMs: number;
  /** Each thread's old-generation heap limit in MiB; 0: Node's own. */
  maxHeapMb: number;
}

const WORKER_ENTRY = fileURLToPath(new URL('./worker-entry.mjs', import.meta.url));
/** A thread that loaded the hooks but never took its channel has failed to start. */
const CONNECT_TIMEOUT_MS = 10_000;

export class ContextPool implements ContextHost {
  readonly #piscina: Piscina<WorkerTask | ConnectTask, WorkerReply | { type: 'connected' }>;
  readonly #channels = new Map<number, WorkerChannel>();
  /** Contexts homed per worker id. */
  readonly #homed = new Map<number, number>();
  readonly #events: PoolEvents;
  /** Sends that found no connected thread (one was being replaced) wait here. */
  #waiting: Array<{ resolve(): void; reject(error: Error): void }> = [];
  #closed = false;
  #closing: Promise<void> | null = null;
  readonly #threads: number;
  readonly #watchdog: Watchdog;
  readonly #loadWatch: LoadWatch;
  /** Set when a thread was terminated for not loading in time: startup fails with it. */
  #loadFailure: ResidentError | null = null;
  readonly #breaker = new CrashBreaker();
  #stalls = 0;
  /** Threads that became ready (piscina's workerCreate) and are not destroyed yet, with their ids. */
  readonly #ready = new Map<Worker, number>();
  /** Ready threads that took their channel: their loss is counted when the channel closes. */
  readonly #connectedIds = new Set<number>();
  /** Each connected thread's heartbeat: the watchdog reads it, and so does the crash-loop count. */
  readonly #heartbeats = new Map<number, Int32Array>();

  constructor(limits: PoolLimits, settings: WorkerSettings, events: PoolEvents) {
    const { threads } = limits;
    this.#threads = threads;
    this.#events = events;
    this.#watchdog = new Watchdog(limits.stallTimeoutMs, (workerId, heartbeat, stalledMs) => this.#stalled(workerId, heartbeat, stalledMs));
    this.#loadWatch = new LoadWatch(limits.stallTimeoutMs, () => this.#piscina.threads, (threadId) => this.#connectedIds.has(threadId), (worker, loadingMs) => {
      this.#loadFailure = new ResidentError('RESIDENT_ERR_HOOK_LOAD', `a worker thread did not finish loading its hooks within workers.stallTimeout (${limits.stallTimeoutMs} ms): does a hook module loop as it loads?`);
      this.#stalls++;
      events.onWorkerStalled(worker.threadId, loadingMs);
      void worker.terminate().catch((error: Error) => events.onPoolError(error));
    });
    this.#piscina = new Piscina({
      filename: WORKER_ENTRY,
      minThreads: threads,
      maxThreads: threads,
      idleTimeout: Infinity,
      concurrentTasksPerWorker: 1_000_000,
      // Idle workers must keep their timers running (hooks and loaders use them).
      atomics: 'async',
      recordTiming: false,
      workerData: settings,
      // A thread that outgrows its heap is stopped with ERR_WORKER_OUT_OF_MEMORY and replaced,
      // instead of taking the process down (RELIABILITY.md D8, F4).
      ...(limits.maxHeapMb > 0 ? { resourceLimits: { maxOldGenerationSizeMb: limits.maxHeapMb } } : {}),
      loadBalancer: (task, workers) => this.#pick(task, workers),
    });
    // A replacement thread gets its channel as soon as piscina has it ready.
    this.#piscina.on('workerCreate', (worker: BalancedWorker) => {
      const started = this.#piscina.threads.find((thread) => thread.threadId === worker.id);
      if (started) this.#ready.set(started, worker.id);
      if (!this.#closed) void this.#connect(worker.id).catch((error) => events.onPoolError(error));
    });
    this.#piscina.on('message', (event: WorkerEvent) => events.onWorkerEvent(event));
    this.#piscina.on('error', (error: Error) => events.onPoolError(error));
    this.#piscina.on('workerDestroy', (destroyed: BalancedWorker) => {
      if (this.#closed) return;
      // Node reads Worker.threadId as -1 once a thread has exited; a thread that failed with
      // an 'error' is destroyed before its exit, its id still readable.
      const gone = [...this.#ready].filter(([worker]) => worker.threadId === -1 || worker.threadId === destroyed.id);
      if (gone.length === 0) {
        // It never became ready (its hooks throw at load): piscina starts no thread after
        // such a failure, for the pool's whole life. That is a crash loop already.
        this.#tripBreaker('a replacement thread failed to start (piscina starts no more)');
      }
      for (const [worker, id] of gone) {
        this.#ready.delete(worker);
        // Gone before it took its channel (it exits right after loading): it answered nothing.
        if (!this.#connectedIds.delete(id)) this.#unproductive();
      }
    });
  }

  /** Resolves once every thread has loaded the hooks and holds its channel. */
  async ready(): Promise<void> {
    this.#loadWatch.start();
    // A probe per thread makes each worker import the hooks now, so a broken hook module
    // fails startup rather than the first client's request.
    try {
      await Promise.all(Array.from({ length: this.#threads }, () => this.#piscina.run({ type: 'discard', sessionId: '' })));
    } catch (error) {
      // A thread terminated for loading too long fails its probe: say why, not "terminated".
      throw this.#loadFailure ?? error;
    }
    const deadline = Date.now() + CONNECT_TIMEOUT_MS;
    while (this.#channels.size < this.#threads) {
      if (Date.now() > deadline) throw new Error(`only ${this.#channels.size} of ${this.#threads} worker threads connected within ${CONNECT_TIMEOUT_MS} ms`);
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
  }

  async #connect(workerId: number): Promise<void> {
    if (this.#channels.has(workerId)) return;
    const { port1, port2 } = new MessageChannel();
    const heartbeat = newHeartbeat();
    const task: ConnectTask & Record<symbol, unknown> = { type: 'connect', port: port2, heartbeat };
    task[Piscina.queueOptionsSymbol] = workerId;
    await this.#piscina.run(task, { transferList: [port2] });
    this.#channels.set(
      workerId,
      new WorkerChannel(workerId, port1, () => this.#lost(workerId)),
    );
    this.#homed.set(workerId, this.#homed.get(workerId) ?? 0);
    this.#connectedIds.add(workerId);
    this.#heartbeats.set(workerId, heartbeat);
    this.#watchdog.watch(workerId, heartbeat);
    for (const waiter of this.#waiting.splice(0)) waiter.resolve();
  }

  #lost(workerId: number): void {
    if (!this.#closed && !hookStarted(this.#heartbeats.get(workerId))) this.#unproductive();
    this.#heartbeats.delete(workerId);
    this.#watchdog.unwatch(workerId);
    this.#channels.delete(workerId);
    this.#homed.delete(workerId);
    if (!this.#closed) this.#events.onWorkerGone(workerId);
  }

  /**
   * A thread stopped turning. Its requests are answered now, before it is terminated: the one
   * whose hook holds the thread 504 (RESIDENT_ERR_HOOK_TIMEOUT), the others 502 (F2's path,
   * through the channel's close); piscina then replaces the thread.
   */
  #stalled(workerId: number, heartbeat: Int32Array, stalledMs: number): void {
    if (this.#closed) return;
    this.#stalls++;
    const worker = this.#piscina.threads.find((thread) => thread.threadId === workerId);
    this.#events.onWorkerStalled(workerId, stalledMs);
    const stuck = runningTask(heartbeat);
    const channel = this.#channels.get(workerId);
    const timeout = new ResidentError('RESIDENT_ERR_HOOK_TIMEOUT', `onConnection held worker thread ${workerId} for ${Math.round(stalledMs)} ms (workers.stallTimeout)`);
    channel?.close(stuck === undefined ? undefined : { taskId: stuck, error: timeout });
    // terminate() stops even a `while (true) {}` (V8 TerminateExecution); piscina sees the
    // exit and starts a replacement.
    void worker?.terminate().catch((error: Error) => this.#events.onPoolError(error));
  }

  /**
   * A thread died before any hook started on it: that is what a crash loop is made of (a hook
   * module that throws at load, a thread that exits right after loading). A thread on which a
   * hook ran did start, whatever killed it afterwards: a breaker that counted it would let a
   * client take the whole server down by sending, to each fresh thread, a request whose hook
   * kills or stalls its thread (red team: a route with a catastrophic regex), and would turn
   * one broken route into an outage of every route. Those threads are replaced every time.
   */
  #unproductive(): void {
    if (this.#breaker.lost()) this.#tripBreaker(`${this.#breaker.recent} worker threads died within a minute before any hook ran on them`);
  }

  #tripBreaker(reason: string): void {
    if (!this.#breaker.trip()) return;
    // piscina 5 has no call to stop replacing threads: its _ensureMinimumWorkers reads
    // options.minThreads from this live options object (node_modules/piscina/dist/index.js),
    // so lowering it stops the respawns; the threads still up keep serving.
    this.#piscina.options.minThreads = 0;
    this.#events.onCrashLoop(this.#breaker.recent, reason);
    // Requests waiting for a thread to connect would wait for good: they get 503 now.
    if (this.#channels.size === 0) for (const waiter of this.#waiting.splice(0)) waiter.reject(new ResidentError('RESIDENT_ERR_WORKERS_DOWN'));
  }

  /** Threads the watchdog terminated. */
  get stalls(): number {
    return this.#stalls;
  }

  /** True once the crash-loop breaker tripped: no thread is replaced until a restart. */
  get degraded(): boolean {
    return this.#breaker.tripped;
  }

  /**
   * The home for a new context: the connected thread holding the fewest, counted there at
   * once. Undefined while no thread is connected (one is being replaced): see `connected`.
   * The caller keeps the answer; the pool writes no session field.
   */
  place(): number | undefined {
    let best: number | undefined;
    let bestCount = Infinity;
    for (const [threadId, channel] of this.#channels) {
      // A channel the watchdog closed stays listed until its port's close event: not a home.
      if (channel.closed) continue;
      const count = this.#homed.get(threadId) ?? 0;
      if (count < bestCount) {
        best = threadId;
        bestCount = count;
      }
    }
    if (best !== undefined) this.#homed.set(best, bestCount + 1);
    return best;
  }

  /**
   * Resolves once some thread is connected, or the pool is closed. Rejects with
   * RESIDENT_ERR_WORKERS_DOWN when none is and none will be (the crash-loop breaker tripped).
   */
  connected(): Promise<void> {
    if (this.#channels.size > 0 || this.#closed) return Promise.resolve();
    if (this.#breaker.tripped) return Promise.reject(new ResidentError('RESIDENT_ERR_WORKERS_DOWN'));
    return new Promise<void>((resolve, reject) => this.#waiting.push({ resolve, reject }));
  }

  /** A context homed on `threadId` left it. */
  release(threadId: number): void {
    const count = this.#homed.get(threadId);
    if (count !== undefined) this.#homed.set(threadId, Math.max(0, count - 1));
  }

  /**
   * Sends a task to thread `threadId`, or to the least busy thread when null. A thread that is
   * gone took its contexts with it: a task for it is answered 'gone' at once (the session
   * resumes from its memento), never sent to another thread that holds no such context.
   */
  async run(task: WorkerTask, threadId: number | null): Promise<WorkerReply> {
    if (threadId !== null) {
      const home = this.#channels.get(threadId);
      if (!home) return { type: 'gone' };
      return ContextPool.#send(home, task);
    }
    let channel = this.#leastBusy();
    while (!channel) {
      if (this.#closed) throw new WorkerLostError(-1);
      await this.connected();
      channel = this.#leastBusy();
    }
    return ContextPool.#send(channel, task);
  }

  /**
   * Sends a task to the thread `threadId` itself, with no route: the pulls of a streamed
   * response body go to the thread that holds the stream, and home no context there. Rejects
   * with WorkerLostError when that thread is gone.
   */
  async toThread(threadId: number, task: WorkerTask): Promise<WorkerReply> {
    const channel = this.#channels.get(threadId);
    if (!channel) throw new WorkerLostError(threadId);
    return ContextPool.#send(channel, task);
  }

  static async #send(channel: WorkerChannel, task: WorkerTask): Promise<WorkerReply> {
    const reply = await channel.send(task);
    if (reply.type === 'failed') throw new Error(`worker ${channel.threadId} failed a task: ${reply.error.message}`);
    return reply;
  }

  #leastBusy(): WorkerChannel | undefined {
    let best: WorkerChannel | undefined;
    for (const channel of this.#channels.values()) if (!channel.closed && (!best || channel.inFlight < best.inFlight)) best = channel;
    return best;
  }

  /** Live contexts per worker thread id. */
  get homedCounts(): ReadonlyMap<number, number> {
    return this.#homed;
  }

  get threadIds(): number[] {
    return [...this.#channels.keys()];
  }

  /** Threads expected when every one is up. */
  get size(): number {
    return this.#threads;
  }

  /** Per connected thread: contexts homed there and tasks sent and not yet answered (its queue depth). */
  workerLoad(): Array<{ threadId: number; contexts: number; queued: number }> {
    return [...this.#channels.values()].map((channel) => ({
      threadId: channel.threadId,
      contexts: this.#homed.get(channel.threadId) ?? 0,
      queued: channel.inFlight,
    }));
  }

  /** Each worker's figures: contexts held and heap used. */
  async workerStats(options: { gc?: boolean } = {}): Promise<Array<{ threadId: number; contexts: number; heapUsed: number }>> {
    const replies = await Promise.all([...this.#channels.values()].map((channel) => channel.send({ type: 'stats', sessionId: '', gc: options.gc })));
    return replies.flatMap((reply) => (reply.type === 'stats' ? [{ threadId: reply.threadId, contexts: reply.contexts, heapUsed: reply.heapUsed }] : []));
  }

  /**
   * Stops every thread. Tasks still waiting for a reply fail with WorkerLostError at once, so
   * nothing a stopped thread was doing lands afterwards. Idempotent (shutdown may call it at
   * its deadline, then the server once more).
   */
  close(): Promise<void> {
    if (!this.#closing) {
      this.#closed = true;
      this.#watchdog.stop();
      this.#loadWatch.stop();
      for (const waiter of this.#waiting.splice(0)) waiter.resolve();
      for (const channel of this.#channels.values()) channel.close();
      this.#closing = this.#piscina.destroy();
    }
    return this.#closing;
  }

  /** piscina's balancer, for control tasks only: the connect task names its thread. */
  #pick<W extends BalancedWorker>(task: PiscinaTask, workers: W[]): W | null {
    // piscina reports a task without queue options as null.
    const target = (task as unknown as Record<symbol, number | null | undefined>)[Piscina.queueOptionsSymbol];
    if (target != null) return workers.find((worker) => worker.id === target) ?? null;
    // Readiness probes: one per thread, to the thread with the fewest tasks.
    let best: W | null = null;
    for (const worker of workers) if (!best || (worker as unknown as { currentUsage: number }).currentUsage < (best as unknown as { currentUsage: number }).currentUsage) best = worker;
    return best;
  }
}
