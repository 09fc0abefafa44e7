import { ResidentError, type ErrorCode } from '../errors.ts';

interface Watched {
  /** performance.now() at which the work is late. */
  at: number;
  reject: ((error: Error) => void) | null;
  /** The call, as the timeout's message names it. */
  what: string;
}

/**
 * Deadlines for many calls of one kind with one timer (a hook's connectionTimeout, its
 * suspendTimeout). A timer and a Promise.race per request cost more than a trivial hook
 * itself (bench/worker-path.ts); here a call costs an entry in a queue. Every call of one
 * sweep waits the same time, so arrival order is deadline order: the timer only ever waits
 * for the queue's head, and work that settles leaves its entry behind to be skipped later.
 * The work itself cannot be cancelled; the caller stops waiting for it.
 */
export class DeadlineSweep {
  readonly #ms: number;
  readonly #code: ErrorCode;
  readonly #what: string;
  #queue: Watched[] = [];
  #head = 0;
  #timer: NodeJS.Timeout | null = null;

  /** `ms` 0 or less: no deadline. */
  constructor(ms: number, code: ErrorCode, what: string) {
    this.#ms = ms;
    this.#code = code;
    this.#what = what;
  }

  /** Runs `work` now; resolves like it, or rejects with the sweep's code once its time is up. */
  run<T>(work: () => T | Promise<T>, what = this.#what): Promise<T> {
    if (this.#ms <= 0) return Promise.resolve().then(work);
    return new Promise<T>((resolve, reject) => {
      const watched: Watched = { at: performance.now() + this.#ms, reject, what };
      this.#dropSettledHead();
      this.#queue.push(watched);
      this.#timer ??= this.#arm(this.#ms);
      const settle = () => {
        watched.reject = null;
      };
      try {
        Promise.resolve(work()).then(
          (value) => {
            settle();
            resolve(value);
          },
          (error: unknown) => {
            settle();
            reject(error);
          },
        );
      } catch (error) {
        settle();
        reject(error);
      }
    });
  }

  /**
   * Forgets calls at the head that have settled. Otherwise every call made before the head's
   * deadline stayed queued until the sweep, so a busy thread held connectionTimeout's worth of
   * entries (red team: 75 MB after a million quick calls with the default 30 s).
   */
  #dropSettledHead(): void {
    const queue = this.#queue;
    while (this.#head < queue.length && queue[this.#head]!.reject === null) this.#head++;
    if (this.#head === queue.length) {
      queue.length = 0;
      this.#head = 0;
    } else if (this.#head > 1024 && this.#head * 2 > queue.length) {
      this.#queue = queue.slice(this.#head);
      this.#head = 0;
    }
  }

  #arm(ms: number): NodeJS.Timeout {
    // Capped at what setTimeout takes (about 24.8 days): beyond it Node fires after 1 ms.
    const timer = setTimeout(() => this.#sweep(), Math.min(2 ** 31 - 1, Math.max(1, Math.ceil(ms))));
    timer.unref();
    return timer;
  }

  #sweep(): void {
    this.#timer = null;
    const now = performance.now();
    const queue = this.#queue;
    while (this.#head < queue.length) {
      const watched = queue[this.#head]!;
      if (watched.reject !== null && watched.at > now) break;
      this.#head++;
      const reject = watched.reject;
      watched.reject = null;
      reject?.(new ResidentError(this.#code, `${watched.what} did not settle within ${this.#ms} ms`));
    }
    if (this.#head === queue.length) {
      this.#queue = [];
      this.#head = 0;
      return;
    }
    // Settled entries past the head are skipped when they reach it; drop the swept prefix.
    if (this.#head > 1024) {
      this.#queue = queue.slice(this.#head);
      this.#head = 0;
    }
    this.#timer = this.#arm(this.#queue[this.#head]!.at - now);
  }
}

/**
 * Resolves like `work`, or rejects with `code` once `ms` pass (0: no deadline): for calls
 * too rare to share a sweep (a store call on a request's path).
 */
export function withDeadline<T>(work: Promise<T>, ms: number, code: ErrorCode, what: string): Promise<T> {
  if (ms <= 0) return work;
  let timer: NodeJS.Timeout;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new ResidentError(code, `${what} did not settle within ${ms} ms`)), ms);
  });
  return Promise.race([work, timeout]).finally(() => clearTimeout(timer));
}
