/**
 * Calls across one MessagePort, both ways: each end can call the other and answer its calls.
 * The threads talk through these: an edge thread to a session's home thread (a hop, see
 * ./mesh.ts), an edge thread to the main thread (the store, the ops routes, log lines), the
 * main thread to an edge thread (admin, shutdown). Calls made in one event-loop turn leave as
 * one message, and so do the answers (one wake-up per batch instead of one per call). A call
 * settles exactly once: with its answer, or with RpcClosedError when the port closes first.
 */
import type { MessagePort, Transferable } from 'node:worker_threads';

export class RpcClosedError extends Error {
  constructor(what: string) {
    super(`${what} closed`);
    this.name = 'RpcClosedError';
  }
}

/** An answer that failed: the code is kept, so a ResidentError can be told apart on the other side. */
export interface RpcFailure {
  code?: string;
  message: string;
}

/** On the wire: [kind, id, payload], several per message. kind 0 = call, 1 = answer, 2 = failure. */
type Frame = [0 | 1 | 2, number, unknown];

interface Pending {
  resolve(value: unknown): void;
  reject(error: Error): void;
}

export type RpcHandler = (payload: unknown) => unknown | Promise<unknown>;

/** Things that may be transferred out of a payload (request and response bodies, chunks). */
export type TransferList = Transferable[];

export class RpcPort {
  readonly #port: MessagePort;
  readonly #name: string;
  readonly #pending = new Map<number, Pending>();
  #handler: RpcHandler = () => {
    throw new Error('no handler');
  };
  #nextId = 0;
  #outbox: Frame[] = [];
  #transfer: TransferList = [];
  #scheduled = false;
  #closed = false;
  readonly #onClose: Array<() => void> = [];

  constructor(port: MessagePort, name: string) {
    this.#port = port;
    this.#name = name;
    port.on('message', (frames: Frame[]) => {
      if (this.#closed) return;
      for (const [kind, id, payload] of frames) {
        if (kind === 0) this.#answer(id, payload);
        else {
          const pending = this.#pending.get(id);
          this.#pending.delete(id);
          if (!pending) continue;
          if (kind === 1) pending.resolve(payload);
          else pending.reject(toError(payload as RpcFailure));
        }
      }
    });
    port.on('close', () => this.close());
    // Listeners and timers keep a thread alive; an idle port must not.
    port.unref();
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** The id the next call() will get (a hop names itself with it, see src/edge/mesh.ts). */
  get nextCallId(): number {
    return this.#nextId;
  }

  /** Calls the other end; `transfer` moves buffers instead of copying them. */
  call<T>(payload: unknown, transfer?: TransferList): Promise<T> {
    if (this.#closed) return Promise.reject(new RpcClosedError(this.#name));
    const id = this.#nextId++;
    this.#push([0, id, payload], transfer);
    return new Promise<T>((resolve, reject) => this.#pending.set(id, { resolve: resolve as (value: unknown) => void, reject }));
  }

  /** What answers the other end's calls. What it throws is answered as a failure with its code. */
  handle(handler: RpcHandler): void {
    this.#handler = handler;
  }

  onClose(listener: () => void): void {
    if (this.#closed) listener();
    else this.#onClose.push(listener);
  }

  /** Closes both ends: every call still waiting fails with RpcClosedError. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#port.close();
    const error = new RpcClosedError(this.#name);
    for (const pending of this.#pending.values()) pending.reject(error);
    this.#pending.clear();
    for (const listener of this.#onClose.splice(0)) listener();
  }

  /** Calls waiting for their answer. */
  get inFlight(): number {
    return this.#pending.size;
  }

  #answer(id: number, payload: unknown): void {
    let result: unknown;
    try {
      result = this.#handler(payload);
    } catch (error) {
      this.#push([2, id, toFailure(error)]);
      return;
    }
    if (result instanceof Promise) {
      result.then(
        (value: unknown) => this.#reply(id, value),
        (error: unknown) => this.#push([2, id, toFailure(error)]),
      );
    } else this.#reply(id, result);
  }

  #reply(id: number, value: unknown): void {
    const transfer = value !== null && typeof value === 'object' && TRANSFER in value ? (value as { [TRANSFER]: TransferList })[TRANSFER] : undefined;
    if (transfer) delete (value as { [TRANSFER]?: TransferList })[TRANSFER];
    this.#push([1, id, value], transfer);
  }

  #push(frame: Frame, transfer?: TransferList): void {
    if (this.#closed) return;
    this.#outbox.push(frame);
    if (transfer) for (const item of transfer) this.#transfer.push(item);
    if (this.#scheduled) return;
    this.#scheduled = true;
    setImmediate(() => this.#flush());
  }

  #flush(): void {
    this.#scheduled = false;
    if (this.#closed) return;
    const frames = this.#outbox;
    const transfer = this.#transfer;
    this.#outbox = [];
    this.#transfer = [];
    try {
      this.#port.postMessage(frames, transfer);
    } catch (error) {
      // A value that cannot be cloned (a hook's answer holding a function): every call in the
      // batch is told, instead of one bad value losing the others' answers.
      const failure = toFailure(error);
      const answers: Frame[] = [];
      for (const [kind, id] of frames) {
        if (kind !== 0) answers.push([2, id, failure]);
        else {
          this.#pending.get(id)?.reject(toError(failure));
          this.#pending.delete(id);
        }
      }
      if (answers.length > 0) this.#port.postMessage(answers);
    }
  }
}

/** A handler's answer that lists buffers to transfer with it (removed before sending). */
export const TRANSFER = Symbol('transfer');

export function withTransfer<T extends object>(value: T, transfer: TransferList): T {
  (value as { [TRANSFER]?: TransferList })[TRANSFER] = transfer;
  return value;
}

function toFailure(error: unknown): RpcFailure {
  if (error instanceof Error) {
    const code = (error as { code?: unknown }).code;
    return { code: typeof code === 'string' ? code : undefined, message: error.message };
  }
  return { message: String(error) };
}

/** A failure as an Error that keeps its code. */
function toError(failure: RpcFailure): Error {
  const error = new Error(failure.message) as Error & { code?: string };
  if (failure.code) error.code = failure.code;
  return error;
}
