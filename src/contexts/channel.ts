/**
 * The main thread's end of one worker's channel. Tasks sent in one event-loop turn leave as
 * one message; each promise settles when its reply comes back, or fails when the worker's end
 * closes (the thread died), so every request in flight on a dead thread settles exactly once.
 */
import type { MessagePort } from 'node:worker_threads';
import { forEachReply, forEachTask, pushTask, type WireBatch } from './batches.ts';
import type { WorkerReply, WorkerTask } from './protocol.ts';

export class WorkerLostError extends Error {
  constructor(threadId: number) {
    super(`worker thread ${threadId} stopped`);
    this.name = 'WorkerLostError';
  }
}

interface Pending {
  resolve(reply: WorkerReply): void;
  reject(error: Error): void;
}

export class WorkerChannel {
  readonly threadId: number;
  readonly #port: MessagePort;
  readonly #pending = new Map<number, Pending>();
  #nextId = 0;
  #outbox: WireBatch = [];
  #scheduled = false;
  #closed = false;

  constructor(threadId: number, port: MessagePort, onClose: () => void) {
    this.threadId = threadId;
    this.#port = port;
    port.on('message', (batch: WireBatch) => {
      // Closed from this side: whatever the thread still says arrives too late to count.
      if (this.#closed) return;
      forEachReply(batch, (id, reply) => {
        const pending = this.#pending.get(id);
        this.#pending.delete(id);
        pending?.resolve(reply);
      });
    });
    port.on('close', () => {
      this.#failPending();
      onClose();
    });
    // The HTTP server keeps the process alive; an idle channel must not.
    port.unref();
  }

  /** Tasks waiting for a reply. */
  get inFlight(): number {
    return this.#pending.size;
  }

  get closed(): boolean {
    return this.#closed;
  }

  send(task: WorkerTask): Promise<WorkerReply> {
    if (this.#closed) return Promise.reject(new WorkerLostError(this.threadId));
    const id = this.#nextId++;
    const reply = new Promise<WorkerReply>((resolve, reject) => this.#pending.set(id, { resolve, reject }));
    pushTask(this.#outbox, id, task);
    if (!this.#scheduled) {
      this.#scheduled = true;
      // Every request parsed in this turn of the event loop joins the same message.
      setImmediate(() => this.#flush());
    }
    return reply;
  }

  #flush(): void {
    this.#scheduled = false;
    const batch = this.#outbox;
    this.#outbox = [];
    if (this.#closed) return;
    try {
      this.#port.postMessage(batch);
    } catch (error) {
      // A task that cannot be cloned (a bug) fails alone; the rest of its batch still goes.
      forEachTask(batch, (id, task) => {
        const alone: WireBatch = [];
        pushTask(alone, id, task);
        try {
          this.#port.postMessage(alone);
        } catch {
          const pending = this.#pending.get(id);
          this.#pending.delete(id);
          pending?.reject(error as Error);
        }
      });
    }
  }

  #failPending(stuck?: { taskId: number; error: Error }): void {
    this.#closed = true;
    const lost = [...this.#pending];
    this.#pending.clear();
    for (const [id, pending] of lost) pending.reject(id === stuck?.taskId ? stuck.error : new WorkerLostError(this.threadId));
  }

  /**
   * Every task still waiting fails now, not when the port's close event comes: with
   * WorkerLostError, or `stuck.error` for the task that held a stalled thread (the watchdog).
   */
  close(stuck?: { taskId: number; error: Error }): void {
    this.#failPending(stuck);
    this.#port.close();
  }
}
