/**
 * Several Resident nodes on this machine for workload (j), each a real CLI process (what
 * `npm start` runs: src/main.ts on the bench's own Node) with the bench hooks, all on one
 * redis-server the bench starts itself with `appendonly yes` and `appendfsync always`: what the
 * README's cluster chapter asks of Redis for its guarantees, and away from the machine's shared
 * Redis (`appendonly no`, and busy with other people's tests). Faults by real means: kill -9,
 * SIGTERM. Ports are picked here (PORT and cluster.port), so the nodes log at `warn` only and
 * readiness is /readyz (it answers 200 once the node holds its lease).
 */
import { spawn, type ChildProcessWithoutNullStreams, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createClient } from 'redis';
import { request } from 'undici';
import { openRegistry } from '../../src/cluster/open-registry.ts';
import type { OwnerRegistry } from '../../src/cluster/registry.ts';
import { RedisStore } from '../../src/stores/redis.ts';
import { assertSameNode, type NodeBinary } from './announce-node.ts';
import { processCpuMs } from './contender.ts';

const ROOT = resolve(import.meta.dirname, '../..');
const SECRET = `bench-cluster-secret-${randomBytes(16).toString('hex')}`;
export const ADMIN_TOKEN = `bench-admin-${randomBytes(16).toString('hex')}`;
/** A cold start through tsx on a loaded 2-core machine has taken over 30 s (test/cluster/harness.ts). */
const STARTUP_MS = 120_000;

export async function freePort(): Promise<number> {
  return new Promise((resolvePort) => {
    const server = createServer().listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolvePort(port));
    });
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until<T>(check: () => Promise<T | undefined | false>, timeoutMs: number, what: string, everyMs = 50): Promise<T> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const value = await check().catch(() => undefined);
    if (value) return value;
    if (performance.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(everyMs);
  }
}

/** A redis-server of the bench's own, durable on every write; its CPU is read like a node's. */
export class BenchRedis {
  readonly url: string;
  readonly #process: ChildProcess;
  readonly #dir: string;

  private constructor(url: string, child: ChildProcess, dir: string) {
    this.url = url;
    this.#process = child;
    this.#dir = dir;
  }

  static async start(): Promise<BenchRedis> {
    const port = await freePort();
    const dir = mkdtempSync(join(tmpdir(), 'resident-bench-redis-'));
    const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--appendonly', 'yes', '--appendfsync', 'always', '--save', '', '--dir', dir], { stdio: 'ignore' });
    const url = `redis://127.0.0.1:${port}`;
    await until(
      async () => {
        const client = createClient({ url, socket: { reconnectStrategy: false } });
        client.on('error', () => {});
        try {
          await client.connect();
          return (await client.ping()) === 'PONG';
        } finally {
          client.destroy();
        }
      },
      15_000,
      'the bench redis-server',
    );
    return new BenchRedis(url, child, dir);
  }

  get pid(): number {
    return this.#process.pid!;
  }

  cpuMs(): number {
    return processCpuMs(this.pid);
  }

  async stop(): Promise<void> {
    if (this.#process.exitCode === null && this.#process.signalCode === null) {
      const exited = new Promise((r) => this.#process.once('exit', r));
      this.#process.kill('SIGKILL');
      await exited;
    }
    rmSync(this.#dir, { recursive: true, force: true });
  }
}

export interface NodeOptions {
  threads?: number;
  leaseTimeout?: string;
  checkpointInterval?: string;
  /** Extra keys of the sessions section (e.g. trustProxy behind HAProxy). */
  sessions?: Record<string, unknown>;
  /** Extra environment of the node's process (e.g. NODE_OPTIONS for a profile). */
  env?: Record<string, string>;
}

/** One node: a CLI process on its public port and its private (forwarding) port. */
export class ClusterNode {
  readonly name: string;
  readonly url: string;
  readonly privateUrl: string;
  readonly child: ChildProcessWithoutNullStreams;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>;
  node: NodeBinary | undefined;
  /** How many log lines of each `event` the node printed (warn and above), for the report. */
  readonly events = new Map<string, number>();
  #tail = '';

  constructor(name: string, url: string, privateUrl: string, child: ChildProcessWithoutNullStreams) {
    this.name = name;
    this.url = url;
    this.privateUrl = privateUrl;
    this.child = child;
    this.exited = new Promise((r) => child.once('exit', (code, signal) => r({ code, signal, at: performance.now() })));
    let partial = '';
    child.stdout.on('data', (chunk: Buffer) => {
      const lines = (partial + chunk.toString()).split('\n');
      partial = lines.pop()!;
      for (const line of lines) this.#line(line);
    });
    child.stderr.on('data', (chunk: Buffer) => {
      this.#tail = (this.#tail + chunk.toString()).slice(-4000);
      process.stderr.write(`[node ${name}] ${chunk}`);
    });
  }

  #line(line: string): void {
    this.#tail = (this.#tail + line + '\n').slice(-4000);
    let event = 'other';
    try {
      event = String((JSON.parse(line) as { event?: unknown }).event ?? 'other');
    } catch {
      // Not a log line of ours: counted as other.
    }
    const count = (this.events.get(event) ?? 0) + 1;
    this.events.set(event, count);
    // The first few lines of each kind are shown; the rest only counted (a dead owner makes one per request).
    if (count <= 3) process.stderr.write(`[node ${this.name}] ${line.slice(0, 600)}\n`);
  }

  get pid(): number {
    return this.child.pid!;
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  cpuMs(): number {
    return this.running ? processCpuMs(this.pid) : 0;
  }

  tail(): string {
    return this.#tail;
  }

  /**
   * The sum of a Prometheus series of this node from its admin metrics: every label set, or
   * those whose labels contain `label` (e.g. `reason="checkpoint"`).
   */
  async metric(name: string, label?: string): Promise<number> {
    const answer = await request(`${this.url}/_resident/metrics`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
    const text = await answer.body.text();
    if (answer.statusCode !== 200) throw new Error(`node ${this.name}: metrics answered ${answer.statusCode}`);
    let sum = 0;
    for (const line of text.split('\n')) {
      const labelled = line.startsWith(`${name}{`);
      if (!(labelled || line.startsWith(`${name} `))) continue;
      if (label && !(labelled && line.slice(0, line.indexOf('}')).includes(label))) continue;
      sum += Number(line.slice(line.lastIndexOf(' ') + 1));
    }
    return sum;
  }
}

/** One bench redis-server (a key prefix per cluster) and the nodes on it. */
export class BenchCluster {
  readonly nodes = new Map<string, ClusterNode>();
  readonly redis: BenchRedis;
  readonly prefix = `bench-cluster-${randomBytes(4).toString('hex')}:`;
  readonly #dir = mkdtempSync(join(tmpdir(), 'resident-bench-cluster-'));
  #inspector: { store: RedisStore; registry: OwnerRegistry } | undefined;

  constructor(redis: BenchRedis) {
    this.redis = redis;
  }

  /** The config.json of node `name`: the bench hooks and the bench's session limits, as ../contenders/resident.ts. */
  config(name: string, port: number, privatePort: number, options: NodeOptions): Record<string, unknown> {
    return {
      host: '127.0.0.1',
      port,
      publicDir: join(ROOT, 'bench/no-public-dir'),
      workers: { threads: options.threads ?? 2 },
      hooks: { onConnection: join(ROOT, 'bench/hooks/onConnection.ts'), onSessionSuspend: join(ROOT, 'bench/hooks/onSessionSuspend.ts') },
      sessions: {
        maxContexts: 2_000_000,
        maxQueuedRequests: 1000,
        processTimeout: '480m',
        cookieTimeout: '480m',
        ...(options.checkpointInterval && { checkpointInterval: options.checkpointInterval }),
        ...options.sessions,
      },
      store: { kind: 'redis', url: this.redis.url, prefix: this.prefix },
      cluster: { enabled: true, nodeId: name, port: privatePort, secret: SECRET, ...(options.leaseTimeout && { leaseTimeout: options.leaseTimeout }) },
      limits: { shutdownTimeout: '10m' },
      // The admin token turns metrics on, as in production (and lets the bench read the cluster counters).
      admin: { token: ADMIN_TOKEN },
      log: { level: 'warn' },
    };
  }

  /** Starts node `name` and waits until /readyz says it serves (its lease taken). */
  async start(name: string, options: NodeOptions = {}): Promise<ClusterNode> {
    const [port, privatePort] = [await freePort(), await freePort()];
    const path = join(this.#dir, `${name}-${port}.json`);
    writeFileSync(path, JSON.stringify(this.config(name, port, privatePort, options), null, 2));
    // process.execPath, never `node` from PATH: every node runs on the runner's own Node.
    const child = spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'src/main.ts'), '--config', path], { cwd: ROOT, env: { ...process.env, ...options.env } });
    const node = new ClusterNode(name, `http://127.0.0.1:${port}`, `http://127.0.0.1:${privatePort}`, child);
    await until(
      async () => {
        if (!node.running) throw new Error(`node ${name} exited before it was ready\n${node.tail()}`);
        const answer = await request(`${node.url}/readyz`);
        await answer.body.dump();
        return answer.statusCode === 200;
      },
      STARTUP_MS,
      `node ${name} to be ready`,
      100,
    ).catch((error) => {
      if (!node.running) throw new Error(`node ${name} exited before it was ready\n${node.tail()}`);
      child.kill('SIGKILL');
      throw error;
    });
    node.node = assertSameNode(`node ${name}`, child.pid!);
    this.nodes.set(name, node);
    return node;
  }

  node(name: string): ClusterNode {
    const node = this.nodes.get(name);
    if (!node) throw new Error(`no node ${name}`);
    return node;
  }

  /** CPU of every node process started so far (a dead one counts what it used before it died: not here). */
  cpuMs(): number {
    let sum = 0;
    for (const node of this.nodes.values()) sum += node.cpuMs();
    return sum;
  }

  /** The store's registry, read behind the nodes' backs: whose leases are alive. */
  async registry(): Promise<OwnerRegistry> {
    if (!this.#inspector) {
      const store = await RedisStore.open({ url: this.redis.url, prefix: this.prefix, callTimeout: 5_000 });
      this.#inspector = { store, registry: openRegistry(store) };
    }
    return this.#inspector.registry;
  }

  /** Whether node `name` has a lease alive in the store. */
  async hasLease(name: string): Promise<boolean> {
    return (await (await this.registry()).nodes()).some((lease) => lease.nodeId === name);
  }

  /** Sends `signal` to node `name`; it leaves the cluster's list (its exit is `node.exited`). */
  signal(name: string, signal: NodeJS.Signals): ClusterNode {
    const node = this.node(name);
    node.child.kill(signal);
    this.nodes.delete(name);
    return node;
  }

  /** Stops every node (SIGKILL: nothing of theirs is measured any more) and deletes the prefix's keys. */
  async close(): Promise<void> {
    await this.#inspector?.store.close().catch(() => {});
    this.#inspector = undefined;
    for (const node of this.nodes.values()) {
      if (node.running) {
        node.child.kill('SIGKILL');
        await node.exited;
      }
    }
    this.nodes.clear();
    const client = createClient({ url: this.redis.url, socket: { reconnectStrategy: false } });
    client.on('error', () => {});
    try {
      await client.connect();
      for await (const keys of client.scanIterator({ MATCH: `${this.prefix}*`, COUNT: 1000 })) if (keys.length) await client.del(keys);
    } catch {
      // The redis-server is the bench's own and is removed with its folder anyway.
    } finally {
      client.destroy();
    }
    rmSync(this.#dir, { recursive: true, force: true });
  }
}
