/**
 * For the fault tests of the shared stores (Redis, PostgreSQL) through a real server: a server
 * whose store.url points at a TcpProxy in front of the real service, the memento of a session as
 * the service holds it (read behind the server's back), what the service cannot do here, and
 * timed requests.
 */
import assert from 'node:assert/strict';
import { after, describe, test, type TestContext } from 'node:test';
import { createClient } from 'redis';
import { decodeMemento } from '../../src/contexts/memento.ts';
import { tableNames } from '../../src/stores/postgres-schema.ts';
import { hashId } from '../../src/log.ts';
import { Client, skipOrFailOnCi, startTestServer, type LogLine, type Reply, type TestServer } from '../helpers.ts';
import { POSTGRES_URL, postgresUnavailable, tempTable, withClient } from './postgres-helpers.ts';
import { REDIS_URL, rawClient, redisUnavailable, removePrefixes, uniquePrefix } from './redis-helpers.ts';
import { STORE_HOOKS, type StoreState } from './server-helpers.ts';
import { TcpProxy } from './tcp-proxy.ts';

export type SharedKind = 'redis' | 'postgres';
export const SHARED: SharedKind[] = ['redis', 'postgres'];

const prefixes: string[] = [];
after(() => (prefixes.length > 0 ? removePrefixes(prefixes) : undefined));

/** Why `kind` cannot be tested here, or undefined when its service answers. */
export async function unavailableReason(kind: SharedKind): Promise<string | undefined> {
  return kind === 'redis' ? await redisUnavailable() : ((await postgresUnavailable()) ?? undefined);
}

/**
 * One test per shared store, run at the same time (so a file of long faults takes the time of
 * one); skipped (failed on CI) when the store's service does not answer.
 */
export function forEachShared(title: string, name: (kind: SharedKind) => string, timeout: number, body: (t: TestContext, kind: SharedKind) => Promise<void>): void {
  describe(title, { concurrency: true }, () => {
    for (const kind of SHARED) {
      test(`${kind}: ${name(kind)}`, { timeout }, async (t) => {
        const why = await unavailableReason(kind);
        if (why !== undefined) return skipOrFailOnCi(t, why);
        await body(t, kind);
      });
    }
  });
}

/** Where the store of one test lives: a Redis prefix or a PostgreSQL table of its own. */
export interface SharedStore {
  kind: SharedKind;
  /** store.url: the service itself, or a proxy in front of it. */
  url: string;
  /** store.prefix (redis) or store.table (postgres). */
  name: string;
  /** The service itself, to read behind the server's back (default: the shared one of `kind`). */
  direct?: string;
}

/** A fresh prefix or table on the service at `url` (default: the real one, no proxy). */
export function sharedStore(kind: SharedKind, url?: string): SharedStore {
  if (kind === 'redis') {
    const prefix = uniquePrefix();
    prefixes.push(prefix);
    return { kind, url: url ?? REDIS_URL, name: prefix };
  }
  return { kind, url: url ?? POSTGRES_URL, name: tempTable() };
}

/** store.* of a server's config on `store`. */
export function storeConfig(store: SharedStore): { kind: SharedKind; url: string; prefix?: string; table?: string } {
  return { kind: store.kind, url: store.url, ...(store.kind === 'redis' ? { prefix: store.name } : { table: store.name }) };
}

/** A proxy in front of the real service of `kind`, closed after the file's tests. */
export async function proxyFor(kind: SharedKind): Promise<{ proxy: TcpProxy; url: string }> {
  const url = new URL(kind === 'redis' ? REDIS_URL : POSTGRES_URL);
  const proxy = await TcpProxy.start({ host: url.hostname, port: Number(url.port || (kind === 'redis' ? 6379 : 5432)) });
  after(() => proxy.close());
  url.host = `127.0.0.1:${proxy.port}`;
  return { proxy, url: url.toString() };
}

/** An in-process server on `store` with the store fixture hooks and one worker thread. */
export function startShared(store: SharedStore, options: { processTimeout?: string; callTimeout?: string; checkpointInterval?: string } = {}): Promise<TestServer> {
  return startTestServer({
    workers: { threads: 1 },
    hooks: STORE_HOOKS,
    log: { level: 'info' },
    sessions: { processTimeout: options.processTimeout ?? '1s', checkpointInterval: options.checkpointInterval ?? '0' },
    store: { ...storeConfig(store), callTimeout: options.callTimeout ?? '500ms' },
  });
}

/** The memento the service holds for `id`, decoded, read behind the server's back; undefined when none. */
export async function storedMemento(store: SharedStore, id: string): Promise<any> {
  let text: string | undefined;
  if (store.kind === 'redis') {
    const redis = store.direct ? createClient({ url: store.direct, socket: { reconnectStrategy: false } }) : await rawClient();
    try {
      if (!redis.isOpen) await redis.on('error', () => {}).connect();
      text = (await redis.hGet(`${store.name}s:${id}`, 'memento')) ?? undefined;
    } finally {
      redis.destroy();
    }
  } else {
    const { rows } = await withClient((client) => client.query(`SELECT memento FROM ${tableNames(store.name).sessions} WHERE id = $1`, [id]));
    text = rows[0]?.memento ?? undefined;
  }
  return text === undefined ? undefined : decodeMemento(text);
}

/** Times every request, to assert none took longer than a bound. */
export class Timed {
  readonly times: Array<{ what: string; ms: number }> = [];
  async get(client: Client, path: string, what = path): Promise<Reply> {
    const started = performance.now();
    try {
      return await client.get(path);
    } finally {
      this.times.push({ what, ms: Math.round(performance.now() - started) });
    }
  }
  /** A request with no cookie jar of its own (a probe, or a cookie the test chose). */
  async send(base: string, path: string, cookie: string | undefined, what: string): Promise<Reply> {
    const client = new Client(base);
    client.cookie = cookie;
    try {
      return await this.get(client, path, what);
    } finally {
      await client.close();
    }
  }
  assertWithin(ms: number, label: string): void {
    assert.deepEqual(this.times.filter((entry) => entry.ms > ms), [], `${label}: every request answered within ${ms} ms`);
  }
  slowest(): number {
    return Math.max(0, ...this.times.map((entry) => entry.ms));
  }
}

export function stateOf(reply: Reply, what: string): StoreState {
  assert.equal(reply.status, 200, `${what}: expected 200, got ${reply.status}: ${reply.text}`);
  return reply.json<StoreState>();
}

/** A 503 for want of the store: the short body, Retry-After, and no cookie. */
export function assertStoreUnavailable(reply: Reply, what: string): void {
  assert.equal(reply.status, 503, `${what}: ${reply.status} ${reply.text}`);
  assert.equal(reply.text, 'Session storage is unavailable. Please retry shortly.', what);
  assert.deepEqual(reply.setCookies, [], `${what}: no cookie, so the browser keeps the one it has`);
}

export const since = (t: TestServer, mark: number): LogLine[] => t.logs.slice(mark);
export const dump = (lines: LogLine[]): string => lines.map((line) => JSON.stringify(line)).join('\n');

/** The store refused the idle suspend of `id`: logged as an error, the context kept. */
export const storeRefused = (id: string) => (line: LogLine) =>
  line.event === 'hook-error' && line.session === hashId(id) && line.code === 'RESIDENT_ERR_STORE_FAILED' && line.hook === "onSessionSuspend(ctx, 'idle')";

export const suspendedLine = (id: string) => (line: LogLine) => line.event === 'suspended' && line.session === hashId(id) && line.reason === 'idle';
