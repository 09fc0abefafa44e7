/**
 * The contexts of an edge thread's sessions live on that same thread: the rooms' host
 * (src/sessions/host.ts) is a direct call into the context runtime (src/contexts/worker.ts),
 * with no channel, no copy and no wait for another thread.
 */
import { threadId } from 'node:worker_threads';
import type { WorkerReply, WorkerTask } from '../contexts/protocol.ts';
import type { ContextHost } from '../sessions/host.ts';
import { ResidentError } from '../errors.ts';

export type Dispatch = (task: WorkerTask, taskId: number) => Promise<WorkerReply>;

export class LocalHost implements ContextHost {
  readonly #dispatch: Dispatch;
  readonly #dying: () => boolean;
  /** Numbers the tasks, so the heartbeat can name the one whose hook holds the thread. */
  #nextTask = 0;

  /** @param dying true once a hook ended this thread (./last-words.ts) */
  constructor(dispatch: Dispatch, dying: () => boolean) {
    this.#dispatch = dispatch;
    this.#dying = dying;
  }

  place(): number {
    return threadId;
  }

  connected(): Promise<void> {
    return Promise.resolve();
  }

  release(): void {}

  async run(task: WorkerTask): Promise<WorkerReply> {
    const reply = await this.#dispatch(task, this.#nextTask++ & 0x3fffffff);
    // A hook ended the thread while this ran (process.exit throws back into the hook that
    // called it): whatever the task says now is the exit's doing, and the thread is lost.
    if (this.#dying()) throw new ResidentError('RESIDENT_ERR_WORKER_LOST');
    if (reply.type === 'failed') throw new Error(`the context runtime failed a task: ${reply.error.message}`);
    return reply;
  }

  /** Pulls and cancels of a streamed body this thread holds. */
  toThread(_threadId: number, task: WorkerTask): Promise<WorkerReply> {
    return this.run(task);
  }
}
