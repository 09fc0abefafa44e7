/**
 * A thread that is about to die answers what it can first. A hook may end its own thread
 * (process.exit, an uncaught exception): with the edge on that thread, the connections it
 * accepted die with it. So before the thread goes, every request of this edge that has no
 * answer yet gets 502 (RESIDENT_ERR_WORKER_LOST), each exactly once, and the thread exits a
 * moment later, once those answers are flushed to their sockets. A thread the watchdog
 * terminates runs nothing more: its own connections are cut (its hops are answered by the
 * threads they came from, see src/edge/mesh.ts).
 */
import type { ServerResponse } from 'node:http';
import { ErrorCodes } from '../errors.ts';
import type { Log } from '../log.ts';

/** Long enough for the answers to reach their sockets, short enough that nothing else runs on. */
const FLUSH_MS = 50;

export class LastWords {
  readonly #open = new Set<ServerResponse>();
  #dying = false;
  #stopAccepting: (() => void) | null = null;

  /** True once the thread is going: nothing it answers from now on can be trusted to arrive. */
  get dying(): boolean {
    return this.#dying;
  }

  /**
   * Tracks a response until `done` settles (the edge has answered it: a body still streaming
   * after that has its head out, and is cut with its connection anyway). No listener per
   * response: this is on every request's path.
   */
  track(res: ServerResponse, done: Promise<void>): Promise<void> {
    // Arrived while the thread flushes its last answers (on a keep-alive connection): it gets
    // the same 502 at once, not whatever half a dying thread would make of it.
    if (this.#dying) {
      this.#answer(res);
      return done;
    }
    this.#open.add(res);
    return done.finally(() => this.#open.delete(res));
  }

  /**
   * What stops this thread's listener: called first when it dies, so that a connection made
   * while it flushes its last answers goes to another thread (or, with one thread, is refused)
   * instead of being accepted here and dropped unanswered.
   */
  onDying(stopAccepting: () => void): void {
    this.#stopAccepting = stopAccepting;
  }

  /**
   * Answers every open request 502 and exits the thread with `code` shortly after. Installed as
   * the thread's process.exit and uncaughtException handler by `install`.
   */
  die(code: number, exit: (code: number) => never): void {
    if (this.#dying) return;
    this.#dying = true;
    try {
      this.#stopAccepting?.();
    } catch {
      // Not listening (yet): nothing to stop.
    }
    for (const res of this.#open) this.#answer(res);
    setTimeout(() => exit(code), FLUSH_MS);
  }

  #answer(res: ServerResponse): void {
    const { status, message } = ErrorCodes.RESIDENT_ERR_WORKER_LOST;
    try {
      if (res.headersSent) res.destroy();
      else {
        res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8', 'cache-control': 'no-store', 'content-length': String(Buffer.byteLength(message)), connection: 'close' });
        res.end(message);
      }
    } catch {
      res.destroy();
    }
  }

  /** Makes process.exit and an uncaught exception on this thread go through `die`. */
  install(log: Log): void {
    const exit = process.exit.bind(process) as (code: number) => never;
    process.exit = ((code?: number | string | null) => {
      this.die(typeof code === 'number' ? code : 1, exit);
      // A hook that calls process.exit() expects nothing after it to run on its stack.
      throw new Error('the worker thread is exiting');
    }) as typeof process.exit;
    process.on('uncaughtException', (error) => {
      // The error process.exit() throws above, surfacing from a timer: the exit is under way.
      if (this.#dying) return;
      log.error({ event: 'worker-uncaught', err: error }, 'an uncaught exception ends this worker thread: its open requests get 502');
      this.die(1, exit);
    });
  }
}
