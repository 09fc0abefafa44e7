/**
 * Where contexts live, as the rooms see it: somewhere that hosts contexts and runs tasks on
 * them. Each edge thread's rooms run on the thread that holds their contexts, so
 * src/edge/local-host.ts implements it with direct calls; it writes no session field.
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
