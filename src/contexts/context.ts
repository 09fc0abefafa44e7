/**
 * The worker-side state of one context. Lives in exactly one worker's heap; nothing in it
 * crosses threads except the memento its suspend hook returns. Hooks never hold it directly:
 * each call gets a HookContext (./hook-context.ts), so session effects (close, regenerate,
 * userId) belong to the request that asked for them.
 */
import { threadId } from 'node:worker_threads';
import type { ContextInit } from './protocol.ts';
import { SerialQueue } from './serial-queue.ts';
import { Selections } from './selections.ts';
import type { SelectOptions } from '../types.ts';
import { hashId } from '../id-hash.ts';

let idSalt = new Uint8Array(16);

let nodeId = '';

/** cluster.nodeId (its default on one node): what ctx.nodeId says. */
export function setNodeId(id: string): void {
  nodeId = id;
}

/** The main thread's salt, so ctx.idHash matches the `session` field of its log lines. */
export function setIdSalt(hex: string): void {
  idSalt = Buffer.from(hex, 'hex');
}

/**
 * What no store keeps as text: PostgreSQL refuses U+0000 (the suspend would fail and its memento
 * be lost), and UTF-8 stores turn a lone surrogate into U+FFFD (the user's sessions would no
 * longer be found by their userId).
 */
const UNSTORABLE = /[\u0000\p{Cs}]/u;

export class LiveContext {
  /** Changed only by the worker, when the main thread confirms ctx.regenerate(). */
  id: string;
  readonly resumed: boolean;
  readonly saved: unknown;
  readonly savedVersion: number | undefined;
  readonly clientIp: string;
  vars: Record<string, any> = {};
  /** Runs this context's requests one at a time, in arrival order. */
  readonly queue = new SerialQueue();
  #isNew = true;
  #closed = false;
  /** The client presented the cookie back (told by the main thread with each request). */
  #proven = false;
  /** A hook called ctx.keep(). */
  #kept = false;
  #userId: string | null;
  // Times are kept as numbers and the Maps made on first use: an idle context is small
  // (bench/ workload e: bytes per live idle context).
  readonly #createdAt: number;
  #expiresAt: number | null = null;
  #selections: Selections | null = null;

  /** `saved` is the decoded memento; the worker decodes it (and reports a corrupt one). */
  constructor(id: string, init: ContextInit, saved: unknown) {
    this.id = id;
    this.resumed = init.resumed;
    this.saved = saved;
    this.savedVersion = saved === undefined ? undefined : (init.savedVersion ?? undefined);
    this.#userId = init.userId;
    this.clientIp = init.clientIp;
    this.#createdAt = init.createdAt;
  }

  /** Computed when asked for (hooks rarely do), so an idle context does not carry it. */
  get idHash(): string {
    return hashId(this.id, idSalt);
  }

  get threadId(): number {
    return threadId;
  }

  get nodeId(): string {
    return nodeId;
  }

  get createdAt(): Date {
    return new Date(this.#createdAt);
  }

  get isNew(): boolean {
    return this.#isNew;
  }

  get userId(): string | null {
    return this.#userId;
  }

  /** Sets userId; true when it changed. Only a HookContext of an unanswered request calls it. */
  changeUser(value: string | null): boolean {
    if (value !== null && (typeof value !== 'string' || value.length === 0 || value.length > 256 || UNSTORABLE.test(value))) {
      throw new TypeError('ctx.userId must be a non-empty string of at most 256 characters without U+0000 or lone surrogates, or null');
    }
    const changed = value !== this.#userId;
    this.#userId = value;
    return changed;
  }

  get closed(): boolean {
    return this.#closed;
  }

  get expiresAt(): Date | null {
    return this.#expiresAt === null ? null : new Date(this.#expiresAt);
  }

  get selections(): ReadonlyMap<string, unknown> {
    return (this.#selections ??= new Selections()).values;
  }

  /** The session ends: later requests already queued for this context are not run on it. */
  markClosed(): void {
    this.#closed = true;
  }

  select<T>(name: string, load: () => T | Promise<T>, options?: SelectOptions): Promise<T> {
    return (this.#selections ??= new Selections()).select(name, load, options);
  }

  forget(name: string): boolean {
    return this.#selections?.forget(name) ?? false;
  }

  get proven(): boolean {
    return this.#proven;
  }

  get kept(): boolean {
    return this.#kept;
  }

  keep(): void {
    this.#kept = true;
  }

  /** Called by the worker before each request. Once proven, a session stays proven. */
  beginRequest(expiresAt: number | null, proven: boolean): void {
    this.#expiresAt = expiresAt;
    if (proven) this.#proven = true;
  }

  /** Called by the worker after each request that succeeded. */
  endRequest(): void {
    this.#isNew = false;
  }
}
