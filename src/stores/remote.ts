/**
 * The store as an edge thread sees it: every call goes to the main thread, which holds the one
 * real store (memory, file or SQLite: each written by one thread, and a memory store outlives
 * a worker thread that dies). Live hits never touch the store, so these calls are the rare
 * ones: a creation, a resume, a suspend, a checkpoint, a close.
 */
import type { RpcPort } from '../contexts/rpc.ts';
import type { UnknownIds } from '../sessions/guesses.ts';
import type { Budget } from '../sessions/source-alarms.ts';
import type { ContextStore, ListQuery, OwnerFence, SessionRecord, SessionSummary } from './store.ts';

/** A store call as it crosses to the main thread. */
export interface StoreCall {
  op: 'store';
  method: keyof typeof METHODS;
  args: unknown[];
}

const METHODS = {
  get: true,
  existing: true,
  set: true,
  delete: true,
  setIf: true,
  deleteIf: true,
  expiredIds: true,
  list: true,
  ping: true,
  quarantine: true,
} as const;

export class RemoteStore implements ContextStore {
  readonly kind: string;
  readonly #main: RpcPort;

  constructor(main: RpcPort, kind: string) {
    this.#main = main;
    this.kind = kind;
  }

  #call<T>(method: StoreCall['method'], ...args: unknown[]): Promise<T> {
    const call: StoreCall = { op: 'store', method, args };
    return this.#main.call<T>(call);
  }

  get(id: string): Promise<SessionRecord | undefined> {
    return this.#call('get', id);
  }
  async existing(ids: readonly string[]): Promise<Set<string>> {
    return new Set(await this.#call<string[]>('existing', ids));
  }
  set(record: SessionRecord): Promise<void> {
    return this.#call('set', record);
  }
  delete(id: string): Promise<void> {
    return this.#call('delete', id);
  }
  setIf(record: SessionRecord, expected: OwnerFence | null): Promise<boolean> {
    return this.#call('setIf', record, expected);
  }
  deleteIf(id: string, expected: OwnerFence | null): Promise<boolean> {
    return this.#call('deleteIf', id, expected);
  }
  expiredIds(now: number, limit: number): Promise<string[]> {
    return this.#call('expiredIds', now, limit);
  }
  list(query: ListQuery): Promise<SessionSummary[]> {
    return this.#call('list', query);
  }
  ping(): Promise<void> {
    return this.#call('ping');
  }
  quarantine(id: string, reason: string): Promise<void> {
    return this.#call('quarantine', id, reason);
  }
  /** The main thread closes the real store, after every thread is done. */
  async close(): Promise<void> {}
}

/** Main thread: runs a store call an edge thread made. */
export async function runStoreCall(store: ContextStore, call: StoreCall): Promise<unknown> {
  if (!Object.hasOwn(METHODS, call.method)) throw new Error(`no store method ${String(call.method)}`);
  const result = await (store[call.method] as (...args: unknown[]) => Promise<unknown>).apply(store, call.args);
  return result instanceof Set ? [...result] : result;
}

/** An edge thread's lookup of unknown IDs, within their source's budget: the main thread holds the one budget. */
export interface LookupCall {
  op: 'lookup';
  ids: readonly string[];
  source: string;
}

/** An edge thread's report of a source over a budget, for the main thread's log, admin view and metrics. */
export interface OverBudgetCall {
  op: 'overBudget';
  source: string;
  budget: Budget;
  /** Events since the last report (see batchedReports). */
  count: number;
}

export class RemoteLookups implements UnknownIds {
  readonly #main: RpcPort;
  constructor(main: RpcPort) {
    this.#main = main;
  }
  async existing(ids: readonly string[], source: string): Promise<Set<string>> {
    return new Set(await this.#main.call<string[]>({ op: 'lookup', ids, source } satisfies LookupCall));
  }
}

/** Main thread: runs a lookup an edge thread made. */
export async function runLookupCall(lookups: UnknownIds, call: LookupCall): Promise<string[]> {
  return [...(await lookups.existing(call.ids, call.source))];
}
