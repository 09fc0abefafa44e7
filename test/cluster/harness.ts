/**
 * Several Resident nodes on this machine, each a real CLI process (what `npm start` runs) on
 * its own loopback ports, all on one shared store: a Redis server the harness starts itself
 * (appendonly yes, appendfsync always: what the cluster's guarantees need) or a PostgreSQL
 * table of its own. Faults by real means: kill -9, SIGSTOP/SIGCONT, SIGTERM.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createClient } from 'redis';
import { request } from 'undici';
import { Client, ROOT, childLogs, describeChild, freePort, runMain, skipOrFailOnCi, waitFor, writeTempConfig, type Child, type LogLine } from '../helpers.ts';
import { dropTables, uniqueTable, POSTGRES_URL } from '../stores/postgres-helpers.ts';
import { unavailableReason, type SharedKind } from '../stores/shared-helpers.ts';
import { after, before, type TestContext } from 'node:test';
import { openRegistry } from '../../src/cluster/open-registry.ts';
import type { OwnerRegistry } from '../../src/cluster/registry.ts';
import { PostgresStore } from '../../src/stores/postgres.ts';
import { RedisStore } from '../../src/stores/redis.ts';
import type { ContextStore } from '../../src/stores/store.ts';

export const CLUSTER_SECRET = 'cluster-test-secret-0123456789abcdef';
export const ADMIN_TOKEN = 'cluster-admin-token-0123456789';
export const CLUSTER_HOOKS = {
  onConnection: join(ROOT, 'test/fixtures/cluster/onConnection.ts'),
  onSessionSuspend: join(ROOT, 'test/fixtures/cluster/onSessionSuspend.ts'),
};
/** A cold start through tsx on a loaded 2-core machine has taken over 30 s. */
const STARTUP_MS = 90_000;

/** A redis-server of the test's own: durable on every write, as the cluster chapter asks. */
export class TestRedis {
  readonly url: string;
  readonly #process: ChildProcess;
  readonly #dir: string;

  private constructor(url: string, process: ChildProcess, dir: string) {
    this.url = url;
    this.#process = process;
    this.#dir = dir;
  }

  static async start(): Promise<TestRedis> {
    const port = await freePort();
    const dir = mkdtempSync(join(tmpdir(), 'resident-cluster-redis-'));
    const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--appendonly', 'yes', '--appendfsync', 'always', '--save', '', '--dir', dir], { stdio: 'ignore' });
    const url = `redis://127.0.0.1:${port}`;
    await waitFor(
      async () => {
        const client = createClient({ url, socket: { reconnectStrategy: false } });
        client.on('error', () => {});
        try {
          await client.connect();
          return (await client.ping()) === 'PONG';
        } catch {
          return false;
        } finally {
          await client.close().catch(() => {});
        }
      },
      15_000,
      'the test redis-server',
    );
    return new TestRedis(url, child, dir);
  }

  async stop(): Promise<void> {
    this.#process.kill('SIGKILL');
    await new Promise((resolve) => (this.#process.exitCode !== null || this.#process.signalCode !== null ? resolve(null) : this.#process.once('exit', resolve)));
    rmSync(this.#dir, { recursive: true, force: true });
  }
}

export interface ClusterNodeOptions {
  leaseTimeout?: string;
  forwardTimeout?: string;
  processTimeout?: string;
  checkpointInterval?: string;
  threads?: number;
  /** Extra environment (e.g. RESIDENT_CLUSTER_SECRET). */
  env?: Record<string, string>;
  /** Extra keys of the sessions section. */
  sessions?: Record<string, unknown>;
  /** The store's URL for this node (a TCP proxy in front of the store, to cut it off). */
  storeUrl?: string;
  /** cluster.port and cluster.advertise (a TCP proxy in front of the private port, to cut the nodes apart). */
  privatePort?: number;
  advertise?: string;
}

export interface RunningNode {
  name: string;
  url: string;
  /** The private listener other nodes forward to. */
  privateUrl: string;
  /** Its incarnation as it started (`<nodeId>#<incarnation>`): what a signed header is for. */
  owner: string;
  child: Child;
  logs(): LogLine[];
}

/** One shared store and the nodes on it. */
export class TestCluster {
  readonly kind: SharedKind;
  readonly nodes = new Map<string, RunningNode>();
  readonly #store: { kind: SharedKind; url: string; prefix?: string; table?: string };
  readonly #redis: TestRedis | null;
  readonly #clients: Client[] = [];
  readonly #inspectors: ContextStore[] = [];

  private constructor(kind: SharedKind, store: TestCluster['storeConfig'], redis: TestRedis | null) {
    this.kind = kind;
    this.#store = store;
    this.#redis = redis;
  }

  static async open(kind: SharedKind): Promise<TestCluster> {
    if (kind === 'redis') {
      const redis = await TestRedis.start();
      return new TestCluster(kind, { kind, url: redis.url, prefix: 'cluster:' }, redis);
    }
    return new TestCluster(kind, { kind, url: POSTGRES_URL, table: uniqueTable() }, null);
  }

  get storeConfig(): { kind: SharedKind; url: string; prefix?: string; table?: string } {
    return this.#store;
  }

  get redis(): TestRedis | null {
    return this.#redis;
  }

  config(name: string, options: ClusterNodeOptions = {}): Record<string, unknown> {
    return {
      host: '127.0.0.1',
      port: 0,
      publicDir: join(ROOT, 'test/fixtures/public'),
      workers: { threads: options.threads ?? 2 },
      hooks: CLUSTER_HOOKS,
      sessions: { processTimeout: options.processTimeout ?? '10m', ...(options.checkpointInterval && { checkpointInterval: options.checkpointInterval }), ...options.sessions },
      store: { ...this.#store, ...(options.storeUrl && { url: options.storeUrl }), callTimeout: '1s' },
      cluster: {
        enabled: true,
        nodeId: name,
        port: options.privatePort ?? 0,
        ...(options.advertise && { advertise: options.advertise }),
        secret: CLUSTER_SECRET,
        leaseTimeout: options.leaseTimeout ?? '3s',
        ...(options.forwardTimeout && { forwardTimeout: options.forwardTimeout }),
      },
      limits: { shutdownTimeout: '20s' },
      admin: { token: ADMIN_TOKEN },
      log: { level: 'info' },
    };
  }

  /** Starts node `name` and waits until it serves. */
  async start(name: string, options: ClusterNodeOptions = {}): Promise<RunningNode> {
    const child = runMain(['--config', writeTempConfig(this.config(name, options))], options.env ?? {});
    const logs = () => childLogs(child);
    const started = await waitFor(
      () => {
        if (child.process.exitCode !== null || child.process.signalCode !== null) throw new Error(`node ${name} exited before listening\n${describeChild(child)}`);
        return logs().find((line) => line.event === 'started');
      },
      STARTUP_MS,
      `node ${name} to start`,
    );
    const joined = logs().find((line) => line.event === 'cluster-joined');
    const node: RunningNode = { name, url: started!.url as string, privateUrl: String(joined?.advertise), owner: String(joined?.owner), child, logs };
    this.nodes.set(name, node);
    return node;
  }

  node(name: string): RunningNode {
    const node = this.nodes.get(name);
    if (!node) throw new Error(`no node ${name}`);
    return node;
  }

  /** A browser-like client of node `name` (its own connections). */
  client(name: string, cookie?: string): Client {
    const client = new Client(this.node(name).url);
    client.cookie = cookie;
    this.#clients.push(client);
    return client;
  }

  /** GET (or POST) an admin API path of node `name`, as JSON. */
  async admin(name: string, path: string, method: 'GET' | 'POST' = 'GET'): Promise<{ status: number; body: any }> {
    const answer = await request(`${this.node(name).url}/_resident/${path}`, { method, headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
    const text = await answer.body.text();
    return { status: answer.statusCode, body: text.startsWith('{') || text.startsWith('[') ? JSON.parse(text) : text };
  }

  /** Sends `signal`; for kill and term, waits for the process to exit. */
  async signal(name: string, signal: NodeJS.Signals, exitWithinMs = 30_000): Promise<number | null | undefined> {
    const { child } = this.node(name);
    child.process.kill(signal);
    if (signal === 'SIGSTOP' || signal === 'SIGCONT') return undefined;
    let timer: NodeJS.Timeout | undefined;
    try {
      return await Promise.race([
        child.exited,
        new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`node ${name} did not exit after ${signal}\n${describeChild(child)}`)), exitWithinMs))),
      ]);
    } finally {
      clearTimeout(timer);
      this.nodes.delete(name);
    }
  }

  /** The store and its registry, opened by the test to read behind the nodes' backs. */
  async inspect(): Promise<{ store: ContextStore; registry: OwnerRegistry; close(): Promise<void> }> {
    const store =
      this.kind === 'redis'
        ? await RedisStore.open({ url: this.#store.url, prefix: this.#store.prefix!, callTimeout: 5_000 })
        : await PostgresStore.open({ url: this.#store.url, table: this.#store.table!, callTimeout: 5_000 });
    this.#inspectors.push(store);
    return { store, registry: openRegistry(store), close: () => store.close() };
  }

  /** The host and port of the store, for a TCP proxy in front of it. */
  storeAddress(): { host: string; port: number } {
    const url = new URL(this.#store.url);
    return { host: url.hostname, port: Number(url.port) || (this.kind === 'redis' ? 6379 : 5432) };
  }

  /** The store URL with its host and port replaced by `port` on 127.0.0.1. */
  storeUrlVia(port: number): string {
    const url = new URL(this.#store.url);
    url.hostname = '127.0.0.1';
    url.port = String(port);
    return url.toString();
  }

  async close(): Promise<void> {
    for (const store of this.#inspectors.splice(0)) await store.close().catch(() => {});
    for (const client of this.#clients.splice(0)) await client.close().catch(() => {});
    for (const { child } of this.nodes.values()) {
      if (child.process.exitCode === null && child.process.signalCode === null) {
        child.process.kill('SIGCONT');
        child.process.kill('SIGKILL');
        await child.exited;
      }
    }
    this.nodes.clear();
    if (this.#redis) await this.#redis.stop();
    if (this.#store.table) await dropTables([this.#store.table]).catch(() => {});
  }
}

/**
 * Inside a describe: nodes `names` on a cluster of `kind`, started before its tests and closed
 * after them. The returned `ready(t)` gives the cluster, or skips the test (fails it under CI)
 * when the store's service is unavailable, and gives undefined.
 */
export function clusterFor(kind: SharedKind, names: readonly string[], options: ClusterNodeOptions): (t: TestContext) => TestCluster | undefined {
  let cluster: TestCluster | undefined;
  let unavailable: string | undefined;
  before(async () => {
    unavailable = await unavailableReason(kind);
    if (unavailable !== undefined) return;
    cluster = await TestCluster.open(kind);
    await Promise.all(names.map((name) => cluster!.start(name, options)));
  });
  after(() => cluster?.close());
  return (t) => {
    if (unavailable !== undefined) skipOrFailOnCi(t, unavailable);
    return cluster;
  };
}
