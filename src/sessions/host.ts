/**
 * The thread boundary as the rooms see it: somewhere that hosts contexts and runs tasks on
 * them. The pool (src/contexts/pool.ts) implements it across worker threads; it reports the
 * thread it picked and writes no session field. The rooms keep a context's home themselves.
 */
import type { WorkerTask, WorkerReply } from '../contexts/protocol.ts';

export interface ContextHost {
  /**
   * Picks the home of a new context (the thread holding the fewest) and counts it there;
   * undefined while no thread is connected (see `connected`).
   */
  place(): number | undefined;
  /** Resolves once some thread is connected (or the host closed). */
  connected(): Promise<void>;
  /** The context homed on `threadId` left it. */
  release(threadId: number): void;
  /**
   * Runs a task on thread `threadId`, or on the least busy thread when null. A thread that is
   * gone holds no context: a task for it is answered `{ type: 'gone' }` without being sent.
   */
  run(task: WorkerTask, threadId: number | null): Promise<WorkerReply>;
}
