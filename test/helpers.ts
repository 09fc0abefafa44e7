/**
 * Shared test plumbing: a real Resident server on an ephemeral port with the fixture hooks,
 * its log lines captured, and an undici client that keeps one cookie like a browser.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, type TestContext } from 'node:test';
import { Agent, request, type Dispatcher } from 'undici';
import type { Clock } from '../src/clock.ts';
import { resolveConfig, type ResidentConfigInput } from '../src/config.ts';
import { startServer, type ResidentServer } from '../src/server.ts';
import type { ContextStore } from '../src/stores/store.ts';

export const ROOT = resolve(import.meta.dirname, '..');

/** CI means the variable is set to anything but empty, "0" or "false". */
export const IN_CI = !['', '0', 'false'].includes((process.env.CI ?? '').toLowerCase());

/**
 * A test that needs something this machine lacks (root for a mount, a program) skips saying
 * why; on CI the same lack fails it, so a requirement never passes as a quiet skip.
 */
export function skipOrFailOnCi(t: TestContext, reason: string): void {
  if (IN_CI) throw new Error(`cannot run on CI: ${reason}`);
  t.skip(reason);
}

/** The shipped demo: its hooks and public folder (set RESIDENT_DEMO_DB to a temp file first). */
export const DEMO_OPTIONS: ResidentConfigInput = Object.freeze({
  publicDir: join(ROOT, 'public'),
  hooks: { onConnection: join(ROOT, 'src/hooks/onConnection.ts'), onSessionSuspend: join(ROOT, 'src/hooks/onSessionSuspend.ts') },
});
/**
 * A file's way to start servers: `defaults` under each call's overrides (hooks and workers
 * merged key by key), every server closed once the file's tests are done.
 */
export function serverFactory(defaults: ResidentConfigInput): (overrides?: ResidentConfigInput) => Promise<TestServer> {
  const servers: TestServer[] = [];
  after(() => Promise.all(servers.map((t) => t.close())));
  return async (overrides = {}) => {
    const t = await startTestServer({
      ...defaults,
      ...overrides,
      workers: { ...defaults.workers, ...overrides.workers },
      hooks: { ...defaults.hooks, ...overrides.hooks },
    });
    servers.push(t);
    return t;
  };
}

/** The hook pair under test/fixtures/NAME/. */
export function fixtureHooks(name: string): { onConnection: string; onSessionSuspend: string } {
  return { onConnection: join(ROOT, `test/fixtures/${name}/onConnection.ts`), onSessionSuspend: join(ROOT, `test/fixtures/${name}/onSessionSuspend.ts`) };
}

export const FIXTURE_HOOKS = {
  onConnection: join(ROOT, 'test/fixtures/hooks/onConnection.ts'),
  onSessionSuspend: join(ROOT, 'test/fixtures/hooks/onSessionSuspend.ts'),
};

export type LogLine = Record<string, unknown> & { level: number; msg: string; event?: string };

export interface TestServer {
  server: ResidentServer;
  url: string;
  /** Every log line the server wrote so far, parsed. */
  logs: LogLine[];
  /** The raw log text, for asserting what never appears in it. */
  rawLogs(): string;
  /**
   * Resolves once every line the worker threads logged so far is in `logs`: their lines reach
   * the main thread's logger over each thread's port, a moment after the response may have
   * reached the client, and a round trip over that port comes back behind them.
   */
  settle(): Promise<void>;
  close(): Promise<void>;
}

/** Deep-merges config sections over the test defaults (fixture hooks, port 0, loopback). */
export function testConfig(overrides: ResidentConfigInput = {}) {
  const input: ResidentConfigInput = {
    host: '127.0.0.1',
    port: 0,
    publicDir: join(ROOT, 'test/fixtures/public'),
    ...overrides,
    sessions: { ...overrides.sessions },
    hooks: { ...FIXTURE_HOOKS, ...overrides.hooks },
    // Durable stores are chosen explicitly by the tests that exercise them, with a temp path.
    store: { kind: 'memory', ...overrides.store },
    log: { level: 'debug', ...overrides.log },
  };
  return resolveConfig(input, ROOT);
}

/** @param store a store instance the test holds (the config can only name a kind) */
export async function startTestServer(overrides: ResidentConfigInput = {}, clock?: ManualClock, store?: ContextStore): Promise<TestServer> {
  const logs: LogLine[] = [];
  let raw = '';
  const destination = {
    write(line: string) {
      raw += line;
      for (const part of line.split('\n')) if (part.trim()) logs.push(JSON.parse(part) as LogLine);
    },
  };
  const server = await startServer({ config: testConfig(overrides), logDestination: destination, clock, store });
  return {
    server,
    url: server.url,
    logs,
    rawLogs: () => raw,
    settle: async () => {
      await server.pool.broadcast({ op: 'stats' });
    },
    close: async () => {
      await server.shutdown();
    },
  };
}

export interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  setCookies: string[];
  text: string;
  json<T = any>(): T;
}

/** A client that keeps our cookie between requests, as a browser does. */
export class Client {
  cookie: string | undefined;
  readonly #base: string;
  readonly #dispatcher: Dispatcher;
  readonly #cookieName: string;

  /** @param localAddress bind the client to this source IP (any of 127/8 works on loopback) */
  constructor(base: string, options: { localAddress?: string; cookieName?: string } = {}) {
    this.#base = base;
    this.#cookieName = options.cookieName ?? 'RSID';
    // Connections of its own, as a browser has: with an edge on every thread, a client sharing
    // undici's global pool would land on whichever thread another client's connection reached.
    // undici takes the source address as a top-level option (one inside `connect` is overridden).
    this.#dispatcher = new Agent(options.localAddress ? { localAddress: options.localAddress } : {});
  }

  async get(path: string, init: { method?: string; headers?: Record<string, string>; body?: string } = {}): Promise<Reply> {
    const headers: Record<string, string> = { ...init.headers };
    if (this.cookie && headers.cookie === undefined) headers.cookie = `${this.#cookieName}=${this.cookie}`;
    const reply = await send(this.#base + path, { ...init, headers, dispatcher: this.#dispatcher });
    for (const line of reply.setCookies) {
      const [pair] = line.split(';');
      const eq = pair!.indexOf('=');
      if (pair!.slice(0, eq) !== this.#cookieName) continue;
      const value = pair!.slice(eq + 1);
      this.cookie = value === '' || /max-age=0/i.test(line) ? undefined : value;
    }
    return reply;
  }

  async close(): Promise<void> {
    await this.#dispatcher.close();
  }
}

/** One request with undici, no cookie handling. */
export async function send(
  url: string,
  init: { method?: string; headers?: Record<string, string>; body?: string | Buffer; dispatcher?: Dispatcher } = {},
): Promise<Reply> {
  const response = await request(url, {
    method: (init.method ?? 'GET') as Dispatcher.HttpMethod,
    headers: init.headers,
    body: init.body,
    dispatcher: init.dispatcher,
  });
  const text = await response.body.text();
  const raw = response.headers['set-cookie'];
  const setCookies = raw === undefined ? [] : Array.isArray(raw) ? raw : [raw];
  return { status: response.statusCode, headers: response.headers, setCookies, text, json: () => JSON.parse(text) };
}

/** The JSON the fixture hooks answer with (/state, /inc and most other routes). */
export interface FixtureState {
  id: string;
  isNew: boolean;
  resumed: boolean;
  saved?: unknown;
  n: number;
  threadId: number;
  clientIp: string;
  createdAt: string;
  expiresAt: string | null;
}

/** A GET that must answer 200 with the fixture's state JSON. */
export async function fixtureState(client: Client, path = '/state'): Promise<FixtureState> {
  const reply = await client.get(path);
  if (reply.status !== 200) throw new Error(`${path} answered ${reply.status}: ${reply.text}`);
  return reply.json<FixtureState>();
}

/** Runs `body` against a fresh server that is shut down afterwards, whatever happens. */
export async function withServer(
  overrides: ResidentConfigInput,
  body: (t: TestServer) => Promise<void>,
  clock?: ManualClock,
): Promise<void> {
  const t = await startTestServer(overrides, clock);
  try {
    await body(t);
  } finally {
    await t.close();
  }
}

/** A clock tests move by hand: timeouts are judged on it, not on the time of day. */
export class ManualClock implements Clock {
  /** Every thread reads the time from here (src/server.ts, StartOptions.clock). */
  readonly shared = new SharedArrayBuffer(Float64Array.BYTES_PER_ELEMENT);
  readonly #cell = new Float64Array(this.shared);
  now(): number {
    return this.#cell[0]!;
  }
  advance(ms: number): void {
    this.#cell[0] = this.#cell[0]! + ms;
  }
}

/** A local port nothing listens on (bound, read and released a moment ago). */
export async function freePort(): Promise<number> {
  const probe = createServer();
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
  const { port } = probe.address() as { port: number };
  await new Promise((resolve) => probe.close(resolve));
  return port;
}

/** Polls `check` until it returns a truthy value, or fails after `timeoutMs`. */
export async function waitFor<T>(check: () => T | Promise<T>, timeoutMs = 5000, what = 'condition'): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** Writes a config file into a fresh temp folder and returns its path. */
export function writeTempConfig(config: unknown): string {
  const dir = mkdtempSync(join(tmpdir(), 'resident-test-'));
  const path = join(dir, 'config.json');
  writeFileSync(path, typeof config === 'string' ? config : JSON.stringify(config, null, 2));
  return path;
}

export interface Child {
  process: ChildProcessWithoutNullStreams;
  stdout(): string;
  stderr(): string;
  exited: Promise<number | null>;
}

/** The JSON log lines a child has printed so far (a partial last line waits for the next call). */
export function childLogs(child: Child): LogLine[] {
  const lines: LogLine[] = [];
  for (const line of child.stdout().split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      lines.push(JSON.parse(line) as LogLine);
    } catch {
      // A partial last line: read it on the next poll.
    }
  }
  return lines;
}

/** Waits for a CLI child's "started" log line and returns its url; fails early if the child exits. */
export async function waitForStart(child: Child, timeoutMs = 15_000): Promise<string> {
  const line = await waitFor(
    () => {
      if (child.process.exitCode !== null || child.process.signalCode !== null) {
        throw new Error(`the server exited before listening\n${describeChild(child)}`);
      }
      return childLogs(child).find((l) => l.event === 'started');
    },
    timeoutMs,
    'the "started" log line',
  );
  const url = line?.url;
  if (typeof url !== 'string') throw new Error(`a "started" line without a url: ${JSON.stringify(line)}`);
  return url;
}

/** A child's exit and output, for assertion messages. */
export function describeChild(child: Child, tail = 4000): string {
  return `exit=${child.process.exitCode} signal=${child.process.signalCode}\nstdout:\n${child.stdout().slice(-tail)}\nstderr:\n${child.stderr().slice(-tail)}`;
}

/** A CLI config on 127.0.0.1, an ephemeral port, the fixture hooks (unless `extra` names others). */
export function cliConfig(extra: Record<string, unknown> = {}) {
  return {
    host: '127.0.0.1',
    port: 0,
    publicDir: join(ROOT, 'test/fixtures/public'),
    hooks: FIXTURE_HOOKS,
    workers: { threads: 1 },
    store: { kind: 'memory' },
    ...extra,
  };
}

/**
 * The clients and child processes a test file opens, closed and killed after its tests: call
 * once at the top of the file; push the children it spawns into `children`.
 */
export function closedAfterTests(): { client(url: string): Client; children: Child[] } {
  const clients: Client[] = [];
  const children: Child[] = [];
  after(async () => {
    for (const child of children) if (child.process.exitCode === null && child.process.signalCode === null) child.process.kill('SIGKILL');
    await Promise.all(clients.map((c) => c.close()));
  });
  return {
    client(url) {
      const c = new Client(url);
      clients.push(c);
      return c;
    },
    children,
  };
}

/** Runs `src/main.ts` (what `npm start` runs) as a child process. */
export function runMain(args: string[], env: Record<string, string> = {}): Child {
  return spawnChild(process.execPath, ['--import', 'tsx', join(ROOT, 'src/main.ts'), ...args], { cwd: ROOT, env: { ...process.env, ...env } });
}

/** Runs a command as a child process whose output the test reads (childLogs, describeChild). */
export function spawnChild(command: string, args: string[], options: { cwd: string; env: NodeJS.ProcessEnv }): Child {
  const child = spawn(command, args, options);
  let out = '';
  let err = '';
  child.stdout.on('data', (chunk) => (out += chunk));
  child.stderr.on('data', (chunk) => (err += chunk));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  return { process: child, stdout: () => out, stderr: () => err, exited };
}
