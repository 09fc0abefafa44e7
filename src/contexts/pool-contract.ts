/**
 * What the pool (./pool.ts) asks of the server that owns it, and how it is told to guard its
 * threads: the contract between src/server.ts and the pool, apart from how the pool works.
 */
import type { WorkerEvent } from './protocol.ts';

export interface PoolEvents {
  /** The thread of `slot` is gone (crashed, exited, terminated): the contexts on it are lost. */
  onWorkerGone(slot: number, threadId: number): void;
  onWorkerEvent(event: WorkerEvent): void;
  onPoolError(error: Error): void;
  /** The watchdog terminated a thread whose event loop did not turn for `stalledMs`. */
  onWorkerStalled(workerId: number, stalledMs: number): void;
  /** Threads kept dying: no more are started, the pool is degraded until a restart. */
  onCrashLoop(lost: number, reason: string): void;
  /** A thread asks the main thread something (a store call, a log line, an ops request). */
  onCall(payload: unknown, slot: number): unknown;
}

/** How the pool guards its threads (config `workers`). */
export interface PoolLimits {
  threads: number;
  /** A thread whose event loop does not turn for this long is replaced; 0: never. */
  stallTimeoutMs: number;
  /** Each thread's old-generation heap limit in MiB; 0: Node's own. */
  maxHeapMb: number;
}
