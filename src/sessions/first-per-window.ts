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
