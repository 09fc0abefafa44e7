/**
 * `npm run dev` (src/dev.ts: the server under `tsx watch`, with the hook folders included), as a
 * real process tree: editing a hook module restarts the server, and since a restart is a
 * graceful shutdown into the SQLite store, the session survives it. SIGTERM to the process
 * group (what Ctrl-C does in a terminal) stops everything: no process is left behind. So does
 * SIGHUP to the dev process alone (the terminal closed), which the detached server never sees.
 * A suspend hook that fails at a restart is said loudly, and the session's previous memento kept.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import Database from 'better-sqlite3';
import { decodeMemento } from '../src/contexts/memento.ts';
import { fromRow, type Row } from '../src/stores/sql-row.ts';
import { Client, ROOT, childLogs, describeChild, waitFor, type Child, type LogLine } from './helpers.ts';

const TEST = { timeout: 60_000 };
const tempDirs: string[] = [];
const groups: number[] = [];
/** Processes of the dev trees, killed in `after` if a failed test left them running. */
const strays: number[] = [];

after(() => {
  for (const group of groups) for (const pid of processesInGroup(group)) killQuietly(pid, 'SIGKILL');
  for (const pid of strays) if (alive(pid)) killQuietly(pid, 'SIGKILL');
  // tsx watch and the server are in a session of their own, and a SIGKILL to the group above
  // leaves them running (holding this process's output pipes open, so it never exits) when a
  // test failed before it listed them: find them by the temp config on their command line.
  for (const { pid } of processes()) if (tempDirs.some((dir) => commandLine(pid).includes(`${dir}/`))) killQuietly(pid, 'SIGKILL');
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
});

function killQuietly(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch {
    // already gone
  }
}

interface ProcessInfo {
  pid: number;
  ppid: number;
  pgrp: number;
}

/** Every live process (from /proc; zombies excluded). */
function processes(): ProcessInfo[] {
  const found: ProcessInfo[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${name}/stat`, 'utf8');
    } catch {
      continue;
    }
    // "pid (comm) state ppid pgrp …": comm may hold spaces and parentheses.
    const [state, ppid, pgrp] = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (state !== 'Z') found.push({ pid: Number(name), ppid: Number(ppid), pgrp: Number(pgrp) });
  }
  return found;
}

function processesInGroup(pgid: number): number[] {
  return processes()
    .filter((p) => p.pgrp === pgid)
    .map((p) => p.pid);
}

/** `root` and every process descended from it now, whatever its process group. */
function processTree(root: number): number[] {
  const all = processes();
  const tree = [root];
  for (let i = 0; i < tree.length; i++) for (const p of all) if (p.ppid === tree[i]) tree.push(p.pid);
  return tree;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  return !processes().every((p) => p.pid !== pid);
}

/** The command line of a process ('' once it is gone). */
function commandLine(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ');
  } catch {
    return '';
  }
}

/** What happens when connecting to `url`'s port: 'connected' or the error code. */
function probe(url: string): Promise<string> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve) => {
    const socket = connect(Number(port), hostname);
    socket.once('connect', () => {
      socket.destroy();
      resolve('connected');
    });
    socket.once('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? error.message));
  });
}

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** A connection hook that counts requests per context, restoring the count from its memento. */
const connectionHook = (version: string) => `
export default async function onConnection(ctx: any, request: Request): Promise<Response | undefined> {
  if (new URL(request.url).pathname !== '/count') return undefined;
  if (ctx.isNew && ctx.saved) ctx.vars.n = ctx.saved.n;
  ctx.vars.n = (ctx.vars.n ?? 0) + 1;
  return new Response('${version} n=' + ctx.vars.n);
}
`;

/** Takes 300 ms, like a hook that saves real work: a stop that does not wait for it loses the memento. */
const suspendHook = `
export default async function onSessionSuspend(ctx: any): Promise<unknown> {
  await new Promise((resolve) => setTimeout(resolve, 300));
  return { n: ctx.vars.n ?? 0 };
}
`;

/** Resolves with `promise`'s value, or with 'timeout' after `ms` (the timer never outlives it). */
async function within<T>(promise: Promise<T>, ms: number): Promise<T | 'timeout'> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([promise, new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

interface Dev {
  child: Child;
  url: string;
  hookFile: string;
  /** The SQLite store's file. */
  storePath: string;
  /** The process group: npm and everything it started. */
  group: number;
  started(): LogLine[];
}

/** `npm run dev -- --config <temp config>` with the v1 hooks in a temp folder and a SQLite store. */
async function startDev(suspendSource = suspendHook): Promise<Dev> {
  const dir = mkdtempSync(join(tmpdir(), 'resident-dev-'));
  tempDirs.push(dir);
  mkdirSync(join(dir, 'hooks'));
  const hookFile = join(dir, 'hooks', 'onConnection.ts');
  writeFileSync(hookFile, connectionHook('v1'));
  writeFileSync(join(dir, 'hooks', 'onSessionSuspend.ts'), suspendSource);
  // A fixed port, so the client's URL stays the same across restarts.
  const port = await freePort();
  const configPath = join(dir, 'config.json');
  writeFileSync(
    configPath,
    JSON.stringify({
      host: '127.0.0.1',
      port,
      publicDir: join(ROOT, 'test/fixtures/public'),
      workers: { threads: 1 },
      hooks: { onConnection: 'hooks/onConnection.ts', onSessionSuspend: 'hooks/onSessionSuspend.ts' },
      store: { kind: 'sqlite', path: 'data/contexts.db' },
      log: { format: 'json' },
    }),
  );
  // detached: a process group of its own, as a terminal gives `npm run dev`.
  const npm = spawn('npm', ['run', 'dev', '--', '--config', configPath], { cwd: ROOT, detached: true, env: { ...process.env } });
  const group = npm.pid!;
  groups.push(group);
  let out = '';
  let err = '';
  npm.stdout.on('data', (chunk: Buffer) => (out += chunk));
  npm.stderr.on('data', (chunk: Buffer) => (err += chunk));
  const exited = new Promise<number | null>((resolve) => npm.on('exit', (code) => resolve(code)));
  const child: Child = { process: npm, stdout: () => out, stderr: () => err, exited };
  const started = () => childLogs(child).filter((line) => line.event === 'started');
  await waitFor(
    () => {
      if (npm.exitCode !== null) throw new Error(`npm run dev exited\n${describeChild(child)}`);
      return started().length === 1;
    },
    20_000,
    'the first start',
  );
  return { child, url: `http://127.0.0.1:${port}`, hookFile, storePath: join(dir, 'data', 'contexts.db'), group, started };
}

/** Signals the whole group (what the terminal does on Ctrl-C) and waits until no process of it is left. */
async function stopGroup(dev: Dev, signal: NodeJS.Signals): Promise<void> {
  // npm, sh, tsx, dev.ts, tsx watch, the server: every one of them must be gone afterwards, even
  // one that left the group.
  const tree = processTree(dev.group);
  assert.ok(tree.length >= 4, `the dev process tree: ${JSON.stringify(tree)}`);
  for (const pid of tree) if (!groups.includes(pid)) strays.push(pid);
  process.kill(-dev.group, signal);
  assert.notEqual(await within(dev.child.exited, 15_000), 'timeout', describeChild(dev.child));
  const left = () => [...new Set([...processesInGroup(dev.group), ...tree.filter(alive)])];
  await waitFor(async () => left().length === 0, 10_000, 'every process of the tree to end').catch((error: Error) =>
    assert.fail(`${error.message}: still running ${JSON.stringify(left())}\n${describeChild(dev.child)}`),
  );
}

test('npm run dev: editing a hook restarts the server and the session carries on; SIGTERM to the group leaves no process', TEST, async () => {
  const dev = await startDev();
  const client = new Client(dev.url);
  try {
    for (let n = 1; n <= 3; n++) {
      const reply = await client.get('/count');
      assert.equal(reply.text, `v1 n=${n}`);
    }
    const cookie = client.cookie;
    assert.ok(cookie);

    writeFileSync(dev.hookFile, connectionHook('v2'));
    // Poll until the new hook answers; requests during the restart may fail to connect.
    const answers: string[] = [];
    const v2 = await waitFor(
      async () => {
        try {
          const reply = await client.get('/count');
          answers.push(`${reply.status} ${reply.text}`);
          return reply.status === 200 && reply.text.startsWith('v2') ? reply.text : undefined;
        } catch (error) {
          answers.push((error as Error).message);
          return undefined;
        }
      },
      30_000,
      'the edited hook to answer',
    ).catch((error: Error) => assert.fail(`${error.message}\nanswers: ${answers.join(' | ')}\n${describeChild(dev.child)}`));
    // Every request counted once, across the restart: the last v1 answer, then v2 with the next count.
    const lastV1 = answers.filter((a) => a.startsWith('200 v1')).at(-1) ?? '200 v1 n=3';
    const nBefore = Number(/n=(\d+)/.exec(lastV1)![1]);
    assert.equal(v2, `v2 n=${nBefore + 1}`, `answers: ${answers.join(' | ')}`);
    assert.equal(client.cookie, cookie, 'the same session ID');
    assert.equal(dev.started().length, 2, 'restarted once');
    const logs = childLogs(dev.child);
    assert.ok(logs.some((l) => l.event === 'suspended' && l.reason === 'shutdown'), 'the context was suspended by the restart');
    assert.ok(logs.some((l) => l.event === 'resumed' && l.memento === true), 'and resumed from its memento');
    assert.equal((await client.get('/count')).text, `v2 n=${nBefore + 2}`);

    await stopGroup(dev, 'SIGTERM');
  } finally {
    await client.close();
  }
});

test(
  'npm run dev: Ctrl-C (SIGINT to the group) stops the server gracefully, suspending the live context into the store',
  TEST,
  async () => {
    const dev = await startDev();
    const client = new Client(dev.url);
    try {
      assert.equal((await client.get('/count')).text, 'v1 n=1');
      // Its cookie came back: a proven session, saved at shutdown (an unproven one is not).
      assert.equal((await client.get('/count')).text, 'v1 n=2');
      await stopGroup(dev, 'SIGINT');
      const logs = childLogs(dev.child);
      assert.doesNotMatch(dev.child.stdout(), /Force killing/, describeChild(dev.child));
      assert.equal(logs.filter((l) => l.event === 'suspended' && l.reason === 'shutdown').length, 1, describeChild(dev.child));
      assert.equal(logs.filter((l) => l.event === 'stopped').length, 1, describeChild(dev.child));
    } finally {
      await client.close();
    }
  },
);

/** In a dev tree: src/dev.ts, the parent of tsx watch (npm's shell has src/dev.ts on its command line too). */
function devTree(tree: number[]): { dev: number; tsxWatch: number } {
  const tsxWatch = tree.find((pid) => /tsx\/dist\/cli\.mjs watch /.test(commandLine(pid)));
  const dev = processes().find((p) => p.pid === tsxWatch)?.ppid;
  assert.ok(tsxWatch && dev && commandLine(dev).includes('src/dev.ts'), `the dev processes in ${JSON.stringify(tree.map((pid) => `${pid}: ${commandLine(pid)}`))}`);
  return { dev, tsxWatch };
}

/** The server's port refuses connections, npm has exited, and no process of `tree` is left. */
async function assertAllGone(dev: Dev, tree: number[]): Promise<void> {
  await waitFor(async () => (await probe(dev.url)) === 'ECONNREFUSED', 15_000, 'the port to refuse connections').catch((error: Error) =>
    assert.fail(`${error.message}\n${describeChild(dev.child)}`),
  );
  assert.notEqual(await within(dev.child.exited, 15_000), 'timeout', describeChild(dev.child));
  await waitFor(async () => tree.filter(alive).length === 0, 10_000, 'every process of the tree to end').catch((error: Error) =>
    assert.fail(`${error.message}: still running ${JSON.stringify(tree.filter(alive))}\n${describeChild(dev.child)}`),
  );
}

/** `npm run dev` with a proven session (two requests served); `act` gets its process tree (strays noted for cleanup). */
async function withRunningDev(act: (dev: Dev, tree: number[]) => Promise<void>): Promise<void> {
  const dev = await startDev();
  const client = new Client(dev.url);
  try {
    assert.equal((await client.get('/count')).text, 'v1 n=1');
    assert.equal((await client.get('/count')).text, 'v1 n=2');
    const tree = processTree(dev.group);
    for (const pid of tree) if (!groups.includes(pid)) strays.push(pid);
    await act(dev, tree);
  } finally {
    await client.close();
  }
}

test('npm run dev: SIGHUP to the dev process (the terminal closed) stops the server gracefully, and its port is free', TEST, () =>
  withRunningDev(async (dev, tree) => {
    // Only src/dev.ts gets the hang-up: tsx watch and the server are in a session of their own.
    process.kill(devTree(tree).dev, 'SIGHUP');
    await assertAllGone(dev, tree);
    // Stopped as by Ctrl-C: the live context was suspended into the store, not lost.
    const logs = childLogs(dev.child);
    assert.equal(logs.filter((l) => l.event === 'suspended' && l.reason === 'shutdown').length, 1, describeChild(dev.child));
    assert.equal(logs.filter((l) => l.event === 'stopped').length, 1, describeChild(dev.child));
  }),
);

test('npm run dev: when tsx watch dies, the dev process exits and takes the server with it', TEST, () =>
  withRunningDev(async (dev, tree) => {
    // SIGKILL: tsx cannot relay anything, and its server is orphaned. The dev process sees its
    // child exit and, exiting, signals the child's process group, where the server still is.
    process.kill(devTree(tree).tsxWatch, 'SIGKILL');
    await assertAllGone(dev, tree);
    assert.equal(childLogs(dev.child).filter((l) => l.event === 'stopped').length, 1, describeChild(dev.child));
  }),
);

/** A suspend hook that cannot save a count of 3 or more (a cart it cannot serialize, say). */
const failingSuspendHook = `
export default async function onSessionSuspend(ctx: any): Promise<unknown> {
  if ((ctx.vars.n ?? 0) >= 3) throw new TypeError('the cart cannot be saved: n=' + ctx.vars.n);
  return { n: ctx.vars.n ?? 0 };
}
`;

/** The stored record of `id`, read behind the server's back, with its memento decoded. */
function storedRecord(storePath: string, id: string): { memento: unknown; updatedAt: number } | undefined {
  const db = new Database(storePath, { readonly: true, fileMustExist: true });
  try {
    const row = db.prepare('SELECT * FROM sessions WHERE id = ?').get(id) as Row | undefined;
    if (!row) return undefined;
    const record = fromRow(row);
    return { memento: record.memento === null ? null : decodeMemento(record.memento), updatedAt: record.updatedAt };
  } finally {
    db.close();
  }
}

/** Edits the connection hook to `version` and waits for the server that restarted on it. */
async function restartWith(dev: Dev, version: string, starts: number): Promise<void> {
  writeFileSync(dev.hookFile, connectionHook(version));
  await waitFor(() => dev.started().length === starts, 30_000, `start ${starts}`).catch((error: Error) => assert.fail(`${error.message}\n${describeChild(dev.child)}`));
}

test('npm run dev: onSessionSuspend failing at a restart is one loud error line saying what was lost and what to do; the previous memento is kept unchanged and the session resumes from it', TEST, async () => {
  const dev = await startDev(failingSuspendHook);
  const client = new Client(dev.url);
  try {
    assert.equal((await client.get('/count')).text, 'v1 n=1');
    assert.equal((await client.get('/count')).text, 'v1 n=2');
    const id = client.cookie!;
    // The first restart saves n=2.
    await restartWith(dev, 'v2', 2);
    const previous = storedRecord(dev.storePath, id);
    assert.deepEqual(previous?.memento, { n: 2 });
    assert.equal((await client.get('/count')).text, 'v2 n=3');
    assert.equal((await client.get('/count')).text, 'v2 n=4');
    // The second cannot save n=4: the hook throws.
    await restartWith(dev, 'v3', 3);
    const logs = childLogs(dev.child);
    const failed = logs.filter((l) => l.event === 'hook-error');
    assert.equal(failed.length, 1, describeChild(dev.child));
    const line = failed[0]!;
    const err = line.err as { type?: string; message?: string; stack?: string };
    assert.deepEqual(
      { level: line.level, hook: line.hook, resumesFrom: line.resumesFrom, type: err.type, message: err.message },
      { level: 50, hook: "onSessionSuspend(ctx, 'shutdown')", resumesFrom: 'previous-memento', type: 'TypeError', message: 'the cart cannot be saved: n=4' },
    );
    assert.match(line.msg, /what this session did since its last saved memento is lost; that memento is kept unchanged and the session resumes from it/);
    assert.match(line.msg, /Fix onSessionSuspend/);
    assert.ok(err.stack?.includes(join(dev.hookFile, '..', 'onSessionSuspend.ts')), err.stack);
    assert.deepEqual(logs.filter((l) => l.event === 'stopped').map((l) => l.lost), [0, 1]);
    // The record is as the first restart left it, memento and all; the session resumes from it.
    assert.deepEqual(storedRecord(dev.storePath, id), previous);
    assert.equal((await client.get('/count')).text, 'v3 n=3');
    assert.equal(client.cookie, id, 'the same session');
    await stopGroup(dev, 'SIGTERM');
  } finally {
    await client.close();
  }
});
