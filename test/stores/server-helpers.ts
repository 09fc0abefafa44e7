/**
 * Plumbing for the end-to-end store tests (test/stores/*.test.ts): a real server (in process
 * or through the CLI) on a durable store in a temp folder, with the store fixture hooks, and
 * ways to look at the store behind the server's back.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { BroadcastChannel } from 'node:worker_threads';
import Database from 'better-sqlite3';
import { parse } from 'devalue';
import { decodeMemento } from '../../src/contexts/memento.ts';
import type { ResidentConfigInput } from '../../src/config.ts';
import type { SessionRecord } from '../../src/stores/store.ts';
import { Client, ROOT, childLogs, describeChild, runMain, startTestServer, waitFor, writeTempConfig, type Child, type LogLine, type Reply, type TestServer } from '../helpers.ts';
import { STORE_SUSPEND_CHANNEL, type StoreSuspendCall } from '../fixtures/stores/onSessionSuspend.ts';

export const STORE_HOOKS = {
  onConnection: join(ROOT, 'test/fixtures/stores/onConnection.ts'),
  onSessionSuspend: join(ROOT, 'test/fixtures/stores/onSessionSuspend.ts'),
};

export type DurableKind = 'sqlite' | 'file';
export type StoreKind = DurableKind | 'memory';
export const DURABLE: DurableKind[] = ['sqlite', 'file'];

export interface TempStore {
  kind: DurableKind;
  /** store.path: the database file (sqlite) or the folder (file). */
  path: string;
  /** The temp folder holding it (and nothing else of ours). */
  dir: string;
}

const tempDirs: string[] = [];

export function tempDir(prefix = 'resident-stores-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  tempDirs.push(dir);
  return dir;
}

export function tempStore(kind: DurableKind): TempStore {
  const dir = tempDir();
  return { kind, dir, path: join(dir, kind === 'sqlite' ? 'contexts.db' : 'contexts') };
}

/** An in-process server on `store` with the store fixture hooks and one worker thread. */
export function startOn(store: TempStore | null, overrides: ResidentConfigInput = {}): Promise<TestServer> {
  return startTestServer({
    workers: { threads: 1 },
    ...overrides,
    hooks: { ...STORE_HOOKS, ...overrides.hooks },
    store: store ? { kind: store.kind, path: store.path, ...overrides.store } : { kind: 'memory', ...overrides.store },
  });
}

/** What the store fixture's onConnection answers. */
export interface StoreState {
  id: string;
  idHash: string;
  isNew: boolean;
  resumed: boolean;
  savedText: string | null;
  savedVersion: number | null;
  userId: string | null;
  data: Record<string, unknown>;
  mode: string | null;
  requests: number;
  clientIp: string;
}

export async function state(client: Client, path = '/state'): Promise<StoreState & { reply: Reply }> {
  const reply = await client.get(path);
  if (reply.status !== 200) throw new Error(`${path} answered ${reply.status}: ${reply.text}`);
  return { ...reply.json<StoreState>(), reply };
}

/** The memento the context was given (ctx.saved), decoded. */
export function savedOf(s: { savedText: string | null }): any {
  return s.savedText === null ? undefined : parse(s.savedText);
}

/** A client on `url` that presents `cookie`, like a browser that kept it across a restart. */
export function clientWith(url: string, cookie: string | undefined, options: { localAddress?: string } = {}): Client {
  const client = new Client(url, options);
  client.cookie = cookie;
  return client;
}

/** The session ID values this reply set in our cookie (empty when it set none). */
export function cookieValues(reply: Reply): string[] {
  return reply.setCookies
    .filter((line) => line.startsWith('RSID='))
    .map((line) => line.slice('RSID='.length, line.indexOf(';') === -1 ? undefined : line.indexOf(';')));
}

// ---------------------------------------------------------------------------------------------
// The store, read behind the server's back

interface Row {
  id: string;
  user_id: string | null;
  client_ip: string;
  memento: unknown;
  memento_version: unknown;
  created_at: unknown;
  updated_at: unknown;
  last_activity_at: unknown;
  expires_at: unknown;
  owner: string | null;
  fence: unknown;
}

/** A short-lived second connection to the SQLite store (the server may hold its own). */
export function withDb<T>(path: string, body: (db: Database.Database) => T): T {
  const db = new Database(path, { fileMustExist: true, timeout: 5000 });
  try {
    return body(db);
  } finally {
    db.close();
  }
}

/** The record as stored, without the store's checks; undefined when there is none. */
export function peek(store: TempStore, id: string): SessionRecord | undefined {
  if (store.kind === 'sqlite') {
    const row = withDb(store.path, (db) => db.prepare<[string], Row>('SELECT * FROM sessions WHERE id = ?').get(id));
    if (!row) return undefined;
    return {
      id: row.id,
      userId: row.user_id,
      memento: row.memento as string,
      mementoVersion: row.memento_version as number,
      clientIp: row.client_ip,
      createdAt: row.created_at as number,
      updatedAt: row.updated_at as number,
      lastActivityAt: row.last_activity_at as number,
      expiresAt: row.expires_at as number | null,
      owner: row.owner,
      fence: row.fence as number,
    };
  }
  try {
    return JSON.parse(readFileSync(recordFile(store, id), 'utf8')) as SessionRecord;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
}

/** The memento stored for `id`, decoded; undefined when there is no record. */
export function peekMemento(store: TempStore, id: string): any {
  const record = peek(store, id);
  if (!record) return undefined;
  assert.equal(typeof record.memento, 'string', `memento of the stored record: ${JSON.stringify(record)}`);
  return decodeMemento(record.memento!);
}

export function recordFile(store: TempStore, id: string): string {
  return join(store.path, `${id}.json`);
}

export function sessionRowCount(path: string): number {
  return withDb(path, (db) => (db.prepare('SELECT count(*) AS n FROM sessions').get() as { n: number }).n);
}

/** IDs in the sqlite quarantine table, or file names in the file store's quarantine/ folder. */
export function quarantined(store: TempStore): string[] {
  if (store.kind === 'sqlite') {
    return withDb(store.path, (db) => (db.prepare('SELECT id FROM quarantine').all() as Array<{ id: string }>).map((row) => row.id));
  }
  try {
    return readdirSync(join(store.path, 'quarantine'));
  } catch {
    return [];
  }
}

export function isQuarantined(store: TempStore, id: string): boolean {
  return quarantined(store).some((entry) => entry === id || entry.startsWith(`${id}.`));
}

/** Every file under `dir` (relative path → size and mtime), to show nothing else was touched. */
export function listTree(dir: string): Map<string, string> {
  const found = new Map<string, string>();
  const walk = (folder: string) => {
    for (const name of readdirSync(folder)) {
      const full = join(folder, name);
      const info = statSync(full);
      if (info.isDirectory()) {
        found.set(`${relative(dir, full)}/`, 'dir');
        walk(full);
      } else found.set(relative(dir, full), `${info.size}@${info.mtimeMs}`);
    }
  };
  walk(dir);
  return found;
}

// ---------------------------------------------------------------------------------------------
// Logs and hook calls

export function logsWith(logs: LogLine[], event: string, idHash?: string): LogLine[] {
  return logs.filter((line) => line.event === event && (idHash === undefined || line.session === idHash));
}

/** Every onSessionSuspend call made by workers in this process, as the fixture reports them. */
export function recordSuspendCalls() {
  const calls: StoreSuspendCall[] = [];
  const channel = new BroadcastChannel(STORE_SUSPEND_CHANNEL);
  channel.onmessage = (event) => calls.push((event as MessageEvent).data as StoreSuspendCall);
  channel.unref();
  return {
    calls,
    reasons: (id: string) => calls.filter((call) => call.id === id).map((call) => call.reason),
    close: () => channel.close(),
  };
}

// ---------------------------------------------------------------------------------------------
// The CLI (src/main.ts) as a child process

const children: Child[] = [];

/** Kills (SIGKILL) every CLI child still running and removes the temp folders; call from `after`. */
export async function cleanup(): Promise<void> {
  const running = children.filter((child) => child.process.exitCode === null && child.process.signalCode === null);
  for (const child of running) child.process.kill('SIGKILL');
  await Promise.all(running.map((child) => child.exited));
  for (const dir of tempDirs.splice(0)) rmSync(dir, { recursive: true, force: true });
}

/** A CLI config on 127.0.0.1, an ephemeral port, the store fixture hooks and `store`. */
export function cliConfig(store: TempStore | null, extra: { sessions?: Record<string, unknown>; store?: Record<string, unknown> } = {}) {
  return {
    host: '127.0.0.1',
    port: 0,
    publicDir: join(ROOT, 'test/fixtures/public'),
    workers: { threads: 1 },
    hooks: STORE_HOOKS,
    sessions: { ...extra.sessions },
    store: { ...(store ? { kind: store.kind, path: store.path } : {}), ...extra.store },
  };
}

export function startCli(config: unknown): Child {
  const child = runMain(['--config', writeTempConfig(config)]);
  children.push(child);
  return child;
}

export { childLogs as cliLogs, describeChild };

export function startCliWithConfigFile(configPath: string): Child {
  const child = runMain(['--config', configPath]);
  children.push(child);
  return child;
}



/** Waits for the "started" line and returns the URL; fails if the child exits first. */
export async function cliStarted(child: Child): Promise<string> {
  const line = await waitFor(
    () => {
      if (child.process.exitCode !== null || child.process.signalCode !== null) {
        throw new Error(`the server exited before listening\n${describeChild(child)}`);
      }
      return childLogs(child).find((l) => l.event === 'started');
    },
    // A cold start compiles every module through tsx: on a loaded 2-core machine that alone
    // has taken over 15 s. How fast the CLI starts is measured by the bench, not here.
    30_000,
    'the "started" log line',
  );
  return line!.url as string;
}

/** The exit code (null when killed by a signal), or a failure after `ms`. */
export async function cliExit(child: Child, ms = 15_000): Promise<number | null> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`the CLI did not exit within ${ms} ms\n${describeChild(child)}`)), ms);
  });
  try {
    return await Promise.race([child.exited, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Started, and answering: a reply proves main() finished registering its signal handlers
 * (src/main.ts logs "started" before it registers them; see the report of test/stores).
 */
export async function cliReady(child: Child): Promise<string> {
  const url = await cliStarted(child);
  const reply = await new Client(url).get('/state');
  assert.equal(reply.status, 200, reply.text);
  return url;
}
