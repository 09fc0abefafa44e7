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
  readonly clientIp: string;
  readonly createdAt: Date;
  readonly threadId = threadId;
  vars: Record<string, any> = {};
  #isNew = true;
  #closed = false;
  #expiresAt: Date | null = null;
  readonly #selections = new Map<string, unknown>();
  readonly #loading = new Map<string, Promise<unknown>>();

  constructor(id: string, init: ContextInit) {
    this.id = id;
    this.idHash = init.idHash;
    this.resumed = init.resumed;
    this.saved = init.saved;
    this.clientIp = init.clientIp;
    this.createdAt = new Date(init.createdAt);
  }

  get isNew(): boolean {
    return this.#isNew;
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

  /** Called by the worker after each request. */
  endRequest(): void {
    this.#isNew = false;
  }
}
