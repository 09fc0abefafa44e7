/**
 * The worker-side Context: what hooks receive. Lives in exactly one worker's heap; nothing in
 * it crosses threads except the memento its suspend hook returns.
 */
import { threadId } from 'node:worker_threads';
import type { Context } from '../types.ts';
import type { ContextInit } from './protocol.ts';

export class LiveContext implements Context {
  readonly id: string;
  readonly idHash: string;
  readonly resumed: boolean;
  readonly saved: unknown;
  readonly savedVersion: number | undefined;
  readonly clientIp: string;
  readonly createdAt: Date;
  readonly threadId = threadId;
  vars: Record<string, any> = {};
  #isNew = true;
  #userId: string | null;
  /** True when the hook changed userId since the main thread last heard of it. */
  userIdChanged = false;
  #closed = false;
  #expiresAt: Date | null = null;
  readonly #selections = new Map<string, unknown>();
  readonly #loading = new Map<string, Promise<unknown>>();

  /** `saved` is the decoded memento; the worker decodes it (and reports a corrupt one). */
  constructor(id: string, init: ContextInit, saved: unknown) {
    this.id = id;
    this.idHash = init.idHash;
    this.resumed = init.resumed;
    this.saved = saved;
    this.savedVersion = saved === undefined ? undefined : (init.savedVersion ?? undefined);
    this.#userId = init.userId;
    this.clientIp = init.clientIp;
    this.createdAt = new Date(init.createdAt);
  }

  get isNew(): boolean {
    return this.#isNew;
  }

  get userId(): string | null {
    return this.#userId;
  }

  set userId(value: string | null) {
    if (value !== null && (typeof value !== 'string' || value.length === 0 || value.length > 256)) {
      throw new TypeError('ctx.userId must be a non-empty string of at most 256 characters, or null');
    }
    if (value !== this.#userId) this.userIdChanged = true;
    this.#userId = value;
  }

  get closed(): boolean {
    return this.#closed;
  }

  get expiresAt(): Date | null {
    return this.#expiresAt;
  }

  get selections(): ReadonlyMap<string, unknown> {
    return this.#selections;
  }

  close(): void {
    this.#closed = true;
  }

  async select<T>(name: string, load: () => T | Promise<T>): Promise<T> {
    if (this.#selections.has(name)) return this.#selections.get(name) as T;
    let pending = this.#loading.get(name) as Promise<T> | undefined;
    if (!pending) {
      pending = Promise.resolve().then(load);
      this.#loading.set(name, pending);
    }
    try {
      const value = await pending;
      this.#selections.set(name, value);
      return value;
    } finally {
      // A failed load is not cached: the next call tries again.
      this.#loading.delete(name);
    }
  }

  /** Called by the worker before each request. */
  beginRequest(expiresAt: number | null): void {
    this.#expiresAt = expiresAt === null ? null : new Date(expiresAt);
  }

  /** Called by the worker after each request that succeeded. */
  endRequest(): void {
    this.#isNew = false;
  }
}
