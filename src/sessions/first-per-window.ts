/**
 * Lines a client can cause on every request (an unknown ID, a cookie replayed from other
 * addresses): the first per key and window at `warn`, the rest at `debug`, so a hostile client
 * cannot fill the log, or the disk behind it, at the default level. Holds one window's keys.
 */
export class FirstPerWindow {
  readonly #windowMs: number;
  readonly #now: () => number;
  #window = -1;
  #seen = new Set<string>();

  constructor(windowMs: number, now: () => number = Date.now) {
    this.#windowMs = Math.max(1, windowMs);
    this.#now = now;
  }

  /** 'warn' the first time `key` is met in the current window, 'debug' after that. */
  level(key: string): 'warn' | 'debug' {
    const window = Math.floor(this.#now() / this.#windowMs);
    if (window !== this.#window) {
      this.#window = window;
      this.#seen = new Set();
    }
    if (this.#seen.has(key)) return 'debug';
    this.#seen.add(key);
    return 'warn';
  }
}

/**
 * Keys met in the current window or the one before (so a key met just before a window's end
 * is not forgotten at once). Holds two windows' keys.
 */
export class RecentKeys {
  readonly #windowMs: number;
  readonly #now: () => number;
  #window = -1;
  #current = new Set<string>();
  #previous = new Set<string>();

  constructor(windowMs: number, now: () => number = Date.now) {
    this.#windowMs = Math.max(1, windowMs);
    this.#now = now;
  }

  #turn(): void {
    const window = Math.floor(this.#now() / this.#windowMs);
    if (window === this.#window) return;
    this.#previous = window === this.#window + 1 ? this.#current : new Set();
    this.#current = new Set();
    this.#window = window;
  }

  add(key: string): void {
    this.#turn();
    this.#current.add(key);
  }

  has(key: string): boolean {
    this.#turn();
    return this.#current.has(key) || this.#previous.has(key);
  }
}
