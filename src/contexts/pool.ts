/**
 * The worker pool, on the main thread. piscina supervises the threads: it starts them, loads
 * the hooks, and replaces a thread that dies. Each thread, once ready, is handed a slot and
 * becomes an edge (src/edge/thread.ts): it listens on the server's port and holds the sessions
 * homed on its slot. The pool keeps one port per thread to reach it (admin, shutdown, its store
 * calls and log lines come back the same way), and wires every pair of threads together (the
 * mesh, src/edge/mesh.ts), again whenever one is replaced. A replacement takes its
 * predecessor's slot, so the sessions homed there find a home again (from the store).
 *
 * The pool also guards the threads (RELIABILITY.md F3, F4, F5): a watchdog terminates a thread
 * whose event loop stops turning (./watchdog.ts), piscina's resourceLimits bound each heap,
 * and a breaker stops replacing threads that keep dying (./crash-breaker.ts).
 */
import { fileURLToPath } from 'node:url';
import { MessageChannel, type Worker } from 'node:worker_threads';
import { Piscina } from 'piscina';
import type { PiscinaTask } from 'piscina';
import { CrashBreaker } from './crash-breaker.ts';
import { hookStarted, newHeartbeat, runningHop } from './heartbeat.ts';
import { Watchdog } from './watchdog.ts';
import { LoadWatch } from './load-watch.ts';
import { RpcPort } from './rpc.ts';
import { slotHeld } from './shared-state.ts';
import { ResidentError } from '../errors.ts';
import { isHookLoadError, loadTooLong } from './start-failure.ts';
import type { ConnectTask, HooksLoading, WorkerEvent, WorkerReply, WorkerTask } from './protocol.ts';
import type { WorkerSettings } from './worker.ts';
import type { ControlCall, EdgeSetup } from '../edge/thread.ts';
import type { PoolEvents, PoolLimits } from './pool-contract.ts';

interface BalancedWorker {
  id: number;
}

export type { PoolEvents, PoolLimits } from './pool-contract.ts';

/** One connected edge thread. */
interface Edge {
  threadId: number;
  slot: number;
  rpc: RpcPort;
  heartbeat: Int32Array;
}

const WORKER_ENTRY = fileURLToPath(new URL('./worker-entry.mjs', import.meta.url));
/** A thread that loaded the hooks but never took its slot has failed to start. */
const CONNECT_TIMEOUT_MS = 10_000;
/** How long a question to every thread (metrics, listings) waits for each. */
const BROADCAST_TIMEOUT_MS = 2_000;
/** How long the watchdog waits for the edge thread of a stalled hop to take note (504). */
const STALL_NOTE_MS = 500;

export class ContextPool {
  readonly #piscina: Piscina<WorkerTask | ConnectTask, WorkerReply | { type: 'connected'; port: number }>;
  /** Connected edge threads by thread id. */
  readonly #edges = new Map<number, Edge>();
  /** Threads that became edges, until piscina reports them destroyed. */
  readonly #becameEdge = new Set<number>();
  /** Slots whose thread is connecting (a replacement takes a free slot once). */
  readonly #taken = new Set<number>();
  readonly #events: PoolEvents;
  readonly #setup: Omit<EdgeSetup, 'port'>;
  /** The port every edge listens on: the configured one, or the first edge's when that is 0. */
  #port: Promise<number>;
  #portKnown: (port: number) => void = () => {};
  #portFailed: (error: Error) => void = () => {};
  /** Until ready() resolves: what fails the start is said by the start's error, not logged besides. */
  #starting = true;
  /** Set once the first edge was asked to pick the port (config.port 0). */
  #portPicked = false;
  #closed = false;
  #closing: Promise<void> | null = null;
  readonly #threads: number;
  readonly #watchdog: Watchdog;
  readonly #loadWatch: LoadWatch;
  /** Set when a thread was terminated for not loading in time: startup fails with it. */
  #loadFailure: ResidentError | null = null;
  /** The first edge that failed to listen: startup fails with it. */
  #listenFailure: Error | null = null;
  readonly #breaker = new CrashBreaker();
  #stalls = 0;
  /** Threads that became ready (piscina's workerCreate) and are not destroyed yet, with their ids. */
  readonly #ready = new Map<Worker, number>();

  constructor(limits: PoolLimits, settings: WorkerSettings, setup: Omit<EdgeSetup, 'port'> & { port: number }, events: PoolEvents) {
    const { threads } = limits;
    this.#threads = threads;
    this.#events = events;
    const { port, ...rest } = setup;
    this.#setup = rest;
    this.#port =
      port !== 0
        ? Promise.resolve(port)
        : new Promise<number>((resolve, reject) => {
            this.#portKnown = resolve;
            this.#portFailed = reject;
          });
    this.#port.catch(() => {});
    this.#watchdog = new Watchdog(limits.stallTimeoutMs, (workerId, heartbeat, stalledMs) => void this.#stalled(workerId, heartbeat, stalledMs));
    this.#loadWatch = new LoadWatch(limits.stallTimeoutMs, () => this.#piscina.threads, (worker, loadingMs, loading) => {
      this.#loadFailure = loadTooLong(loading, limits.stallTimeoutMs);
      this.#stalls++;
      // At startup the start's error says it (ready()); a replacement's stall is logged.
      if (!this.#starting) events.onWorkerStalled(worker.threadId, loadingMs);
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
    // A replacement thread gets its slot as soon as piscina has it ready.
    this.#piscina.on('workerCreate', (worker: BalancedWorker) => {
      const started = this.#piscina.threads.find((thread) => thread.threadId === worker.id);
      if (started) this.#ready.set(started, worker.id);
      if (!this.#closed) void this.#connect(worker.id).catch((error: Error) => this.#connectFailed(worker.id, error));
    });
    this.#piscina.on('message', (event: WorkerEvent | HooksLoading) => {
      if (event.type === 'hooks') this.#loadWatch.mark(event);
      else events.onWorkerEvent(event);
    });
    this.#piscina.on('error', (error: Error) => {
      // A thread that cannot load the hooks at startup fails the start, which says why (ready()).
      if (!this.#closed && !this.#saidByStart(error)) events.onPoolError(error);
    });
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
        // Gone before it took its slot (it exits right after loading): it answered nothing. Not
        // #edges: #lost may have taken a dead edge out of it already (its port closes first).
        if (!this.#becameEdge.delete(id)) this.#unproductive();
      }
    });
  }

  /** Resolves once every thread has loaded the hooks and listens; rejects with why not. */
  async ready(): Promise<number> {
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
    while (this.#edges.size < this.#threads) {
      if (this.#listenFailure) throw this.#listenFailure;
      if (Date.now() > deadline) throw new Error(`only ${this.#edges.size} of ${this.#threads} worker threads became edges within ${CONNECT_TIMEOUT_MS} ms`);
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    this.#starting = false;
    return this.#port;
  }

  async #connect(workerId: number): Promise<void> {
    if (this.#edges.has(workerId)) return;
    // A replacement can be ready before its predecessor's port has closed: its slot frees then.
    const deadline = Date.now() + CONNECT_TIMEOUT_MS;
    let slot = this.#freeSlot();
    while (slot === undefined) {
      if (this.#closed || Date.now() > deadline) return;
      await new Promise((resolve) => setTimeout(resolve, 10));
      slot = this.#freeSlot();
    }
    this.#taken.add(slot);
    try {
      // With port 0 the first edge picks the port and the others join it, a replacement of the
      // first one too (listening on port 0 again, it would take a port nobody connects to).
      const first = slot === 0 && !this.#portPicked;
      this.#portPicked ||= first;
      const port = first || this.#setup.config.port !== 0 ? this.#setup.config.port : await this.#port;
      const { port1, port2 } = new MessageChannel();
      const heartbeat = newHeartbeat();
      const rpc = new RpcPort(port1, `the port to worker thread ${workerId}`);
      rpc.handle((payload) => this.#events.onCall(payload, slot));
      const task: ConnectTask & Record<symbol, unknown> = { type: 'connect', port: port2, slot, edge: { ...this.#setup, port }, heartbeat };
      task[Piscina.queueOptionsSymbol] = workerId;
      const connected = await this.#piscina.run(task, { transferList: [port2] });
      if (connected.type !== 'connected') throw new Error(`worker thread ${workerId} answered ${connected.type}`);
      if (this.#closed) {
        rpc.close();
        return;
      }
      if (port === 0) this.#portKnown(connected.port);
      const edge: Edge = { threadId: workerId, slot, rpc, heartbeat };
      this.#wire(edge);
      this.#edges.set(workerId, edge);
      this.#becameEdge.add(workerId);
      rpc.onClose(() => this.#lost(edge));
      this.#watchdog.watch(workerId, heartbeat);
    } catch (error) {
      this.#taken.delete(slot);
      throw error;
    }
  }

  #freeSlot(): number | undefined {
    for (let slot = 0; slot < this.#threads; slot++) if (!this.#taken.has(slot)) return slot;
    return undefined;
  }

  /** The start's error says it (a hook that fails to load, a thread terminated for loading too long): not logged besides. */
  #saidByStart(error: unknown): boolean {
    return this.#starting && (isHookLoadError(error) || this.#loadFailure !== null);
  }

  /** A thread could not become an edge: at startup that fails the start (a port in use); later it is logged. */
  #connectFailed(workerId: number, error: Error): void {
    if (this.#edges.size < this.#threads && !this.#listenFailure) {
      this.#listenFailure = error;
      this.#portFailed(error);
    }
    // A connect cut short by close() (a failed start stops the pool) is no failure of its own.
    if (!this.#closed && !this.#saidByStart(error)) this.#events.onPoolError(error);
    const worker = this.#piscina.threads.find((thread) => thread.threadId === workerId);
    void worker?.terminate().catch(() => {});
  }

  /** Gives a new edge a port to each other edge, and each of them a port to it. */
  #wire(edge: Edge): void {
    for (const other of this.#edges.values()) {
      const { port1, port2 } = new MessageChannel();
      const toOther: ControlCall = { op: 'peer', slot: other.slot, port: port1, threadId: other.threadId };
      const toNew: ControlCall = { op: 'peer', slot: edge.slot, port: port2, threadId: edge.threadId };
      edge.rpc.call(toOther, [port1]).catch(() => {});
      other.rpc.call(toNew, [port2]).catch(() => {});
    }
  }

  #lost(edge: Edge): void {
    if (!this.#closed && !hookStarted(edge.heartbeat)) this.#unproductive();
    this.#watchdog.unwatch(edge.threadId);
    this.#edges.delete(edge.threadId);
    this.#taken.delete(edge.slot);
    if (!this.#closed) this.#events.onWorkerGone(edge.slot, edge.threadId);
  }

  /**
   * A thread stopped turning. When the hook holding it serves a request that hopped from
   * another edge, that edge is told first and answers it 504 (RESIDENT_ERR_HOOK_TIMEOUT); the
   * other requests hopped to it get 502 as its ports close; its own connections close with it.
   * piscina then replaces the thread, in the same slot.
   */
  async #stalled(workerId: number, heartbeat: Int32Array, stalledMs: number): Promise<void> {
    if (this.#closed) return;
    this.#stalls++;
    const worker = this.#piscina.threads.find((thread) => thread.threadId === workerId);
    this.#events.onWorkerStalled(workerId, stalledMs);
    const hop = runningHop(heartbeat);
    const origin = hop && [...this.#edges.values()].find((edge) => edge.slot === hop[0]);
    const stuck = this.#edges.get(workerId);
    if (origin && stuck) {
      const note: ControlCall = { op: 'stalledHop', slot: stuck.slot, call: hop[1] };
      await Promise.race([origin.rpc.call(note).catch(() => {}), new Promise((resolve) => setTimeout(resolve, STALL_NOTE_MS))]);
    }
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
  }

  /** Threads the watchdog terminated. */
  get stalls(): number {
    return this.#stalls;
  }

  /** True once the crash-loop breaker tripped: no thread is replaced until a restart. */
  get degraded(): boolean {
    return this.#breaker.tripped;
  }

  /** Connected edge threads' ids. */
  get threadIds(): number[] {
    return [...this.#edges.keys()];
  }

  /** Connected edges: slot and thread id. */
  get edges(): Array<{ slot: number; threadId: number }> {
    return [...this.#edges.values()].map(({ slot, threadId }) => ({ slot, threadId }));
  }

  /** Threads expected when every one is up. */
  get size(): number {
    return this.#threads;
  }

  /** Asks the edge of `slot`; rejects with RESIDENT_ERR_WORKER_LOST when it is not connected. */
  call<T>(slot: number, call: ControlCall): Promise<T> {
    for (const edge of this.#edges.values()) if (edge.slot === slot) return edge.rpc.call<T>(call);
    return Promise.reject(new ResidentError('RESIDENT_ERR_WORKER_LOST', `no worker thread holds slot ${slot} now`));
  }

  /**
   * Asks every connected edge; the answers of those that answered within `timeoutMs`, in slot
   * order. A thread stuck in a hook answers nothing until the watchdog ends it: a scrape or an
   * admin listing goes on without it rather than wait (with stallTimeout 0, for ever).
   */
  async broadcast<T>(call: ControlCall, timeoutMs = BROADCAST_TIMEOUT_MS): Promise<Array<{ slot: number; threadId: number; value: T }>> {
    const edges = [...this.#edges.values()].sort((a, b) => a.slot - b.slot);
    const answers = await Promise.all(
      edges.map((edge) => {
        let timer: NodeJS.Timeout | undefined;
        const late = new Promise<[]>((resolve) => (timer = setTimeout(() => resolve([]), timeoutMs)));
        const answer = edge.rpc.call<T>(call).then(
          (value) => [{ slot: edge.slot, threadId: edge.threadId, value }],
          () => [],
        );
        return Promise.race([answer, late]).finally(() => clearTimeout(timer));
      }),
    );
    return answers.flat();
  }

  /** Per connected thread: contexts homed there and requests it is serving (its queue depth). */
  workerLoad(): Array<{ threadId: number; slot: number; contexts: number; queued: number }> {
    const { shared } = this.#setup;
    return this.edges
      .sort((a, b) => a.slot - b.slot)
      .map(({ slot, threadId }) => ({ threadId, slot, contexts: slotHeld(shared, slot, 'live'), queued: slotHeld(shared, slot, 'inFlight') }));
  }

  /** Each worker's figures: contexts held and heap used. */
  async workerStats(options: { gc?: boolean } = {}): Promise<Array<{ threadId: number; contexts: number; heapUsed: number }>> {
    // A collection over a large heap may take a while: this is for benchmarks, not scrapes.
    const answers = await this.broadcast<{ threadId: number; contexts: number; heapUsed: number }>({ op: 'stats', gc: options.gc }, 60_000);
    return answers.map(({ value }) => value);
  }

  /**
   * Stops every thread. Calls still waiting for an answer fail at once, so nothing a stopped
   * thread was doing lands afterwards. Idempotent (shutdown may call it at its deadline, then
   * the server once more).
   */
  close(): Promise<void> {
    if (!this.#closing) {
      this.#closed = true;
      this.#watchdog.stop();
      this.#loadWatch.stop();
      this.#portFailed(new Error('the pool closed'));
      for (const edge of this.#edges.values()) edge.rpc.close();
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
