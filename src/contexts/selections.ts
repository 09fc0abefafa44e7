/**
 * A context's cached selections (`ctx.select`, `ctx.forget`): each loaded once and kept until
 * forgotten, or until it is older than the `ttl` a later select asks for. Made on a context's
 * first select, so an idle context that never selects carries none of it.
 */
import ms from 'ms';
import type { SelectOptions } from '../types.ts';

interface Loading {
  promise: Promise<unknown>;
}

export class Selections {
  /** The values, as `ctx.selections` shows them. */
  readonly values = new Map<string, unknown>();
  /** When each value was loaded (performance.now(): a clock step neither expires nor keeps one). */
  readonly #loadedAt = new Map<string, number>();
  readonly #loading = new Map<string, Loading>();

  /** Async so that a wrong ttl rejects, as a failed load does, instead of throwing at the call. */
  async select<T>(name: string, load: () => T | Promise<T>, options?: SelectOptions): Promise<T> {
    // From JavaScript, a value passed for its loader would otherwise be cached as undefined.
    if (typeof load !== 'function') throw new TypeError(`ctx.select: the loader of "${String(name)}" must be a function that returns the value, not ${typeof load}`);
    const ttl = options?.ttl === undefined ? Infinity : ttlMillis(options.ttl);
    if (this.values.has(name)) {
      if (performance.now() - this.#loadedAt.get(name)! < ttl) return this.values.get(name) as T;
      this.#drop(name);
    }
    const loading = this.#loading.get(name);
    if (loading) return loading.promise as Promise<T>;
    const entry: Loading = { promise: Promise.resolve() };
    // Only the load still current is cached: one that forget() detached serves its own
    // callers and is then dropped, so a value known stale never comes back into the cache.
    const current = () => this.#loading.get(name) === entry;
    entry.promise = Promise.resolve()
      .then(load)
      .then(
        (value) => {
          if (current()) {
            this.#loading.delete(name);
            this.values.set(name, value);
            this.#loadedAt.set(name, performance.now());
          }
          return value;
        },
        (error: unknown) => {
          // A failed load is not cached: the next call tries again.
          if (current()) this.#loading.delete(name);
          throw error;
        },
      );
    this.#loading.set(name, entry);
    return entry.promise as Promise<T>;
  }

  /** True when a cached value, or a load under way, was dropped. */
  forget(name: string): boolean {
    const had = this.values.has(name) || this.#loading.has(name);
    this.#drop(name);
    this.#loading.delete(name);
    return had;
  }

  #drop(name: string): void {
    this.values.delete(name);
    this.#loadedAt.delete(name);
  }
}

/** A ttl in milliseconds; a wrong one is the hook's bug, said at its call. */
function ttlMillis(ttl: number | string): number {
  let millis: number | undefined;
  try {
    millis = typeof ttl === 'number' ? ttl : typeof ttl === 'string' ? ms(ttl as ms.StringValue) : undefined;
  } catch {
    // ms throws on an empty string: the TypeError below says what is expected.
  }
  // Infinity: kept for good, as without a ttl.
  if (typeof millis !== 'number' || Number.isNaN(millis) || millis < 0) {
    throw new TypeError(`ctx.select: ttl must be a number of milliseconds or a duration such as "90s" or "5m", not ${typeof ttl === 'number' ? String(ttl) : JSON.stringify(ttl)}`);
  }
  return millis;
}
