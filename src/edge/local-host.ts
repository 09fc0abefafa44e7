/**
 * The contexts of an edge thread's sessions live on that same thread: the rooms' host
 * (src/sessions/host.ts) is a direct call into the context runtime (src/contexts/worker.ts),
 * with no channel, no copy and no wait for another thread.
 */
import { threadId } from 'node:worker_threads';
import type { WorkerReply, WorkerTask } from '../contexts/protocol.ts';
import type { ContextHost } from '../sessions/host.ts';

export type Dispatch = (task: WorkerTask, taskId: number) => Promise<WorkerReply>;

export class LocalHost implements ContextHost {
  readonly #dispatch: Dispatch;
  /** Numbers the tasks, so the heartbeat can name the one whose hook holds the thread. */
  #nextTask = 0;

  constructor(dispatch: Dispatch) {
    this.#dispatch = dispatch;
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
    if (reply.type === 'failed') throw new Error(`the context runtime failed a task: ${reply.error.message}`);
    return reply;
  }

  /** Pulls and cancels of a streamed body this thread holds. */
  toThread(_threadId: number, task: WorkerTask): Promise<WorkerReply> {
    return this.run(task);
  }
}
