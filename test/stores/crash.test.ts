/**
 * Crashes against the durable stores (RELIABILITY.md E1, E2, E3), with real processes and real
 * signals, nothing mocked:
 *  - E1/E2 at the store level: a child process writes records through the shipped SqliteStore /
 *    FileStore as fast as it can and is killed with SIGKILL at a random instant; every record
 *    read back afterwards is whole, self-consistent, never older than the last acknowledged
 *    write and never newer than the last attempted one. ≥ 100 kills per store.
 *  - E2 through the CLI: a session suspended (logged) just before `kill -9` resumes after a restart.
 *  - E3 through the CLI: SIGTERM with 20 live contexts suspends all 20; all resume after a restart.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test, type TestContext } from 'node:test';
import Database from 'better-sqlite3';
import { newSessionId } from '../../src/contexts/ids.ts';
import { FileStore } from '../../src/stores/file.ts';
import { SqliteStore } from '../../src/stores/sqlite.ts';
import type { SessionRecord } from '../../src/stores/store.ts';
import { checkReadBack, crashRecord } from '../fixtures/crash/records.ts';
import { Client, FIXTURE_HOOKS, ROOT, childLogs, describeChild, waitForStart, fixtureState, runMain, waitFor, writeTempConfig, type Child } from '../helpers.ts';

const WRITER = join(ROOT, 'test/fixtures/crash/writer.ts');
/** Kills per store, spread over parallel lanes (each lane its own store and IDs). CRASH_KILLS lowers it while developing only. */
const KILLS_PER_STORE = Number(process.env.CRASH_KILLS ?? 100);
const LANES = 2;
const IDS_PER_LANE = 20;
const KILL_AFTER_MS = { min: 20, max: 200 };

type Kind = 'sqlite' | 'file';

const writers = new Set<ChildProcess>();
const servers: Child[] = [];
const tempDirs: string[] = [];

after(() => {
  for (const child of writers) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  for (const child of servers) {
    if (child.process.exitCode === null && child.process.signalCode === null) child.process.kill('SIGKILL');
  }
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
});

function tempDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), `resident-${prefix}-`));
  tempDirs.push(dir);
  return dir;
}

// ---------------------------------------------------------------------------------------------
// E1 / E2 at the store level: kill -9 during heavy writes
// ---------------------------------------------------------------------------------------------

interface KillStats {
  kills: number;
  acks: number;
  /** Kills that hit while at least one attempted write was not yet acknowledged. */
  killsMidWrite: number;
  /** Records found newer than their last acknowledged write (an unacknowledged write that landed). */
  landedUnacked: number;
  /** Kills after which the file store folder held a temp file (killed between open and rename). */
  killsLeavingTemp: number;
  /** Milliseconds from spawn to the first acknowledged write, summed (to watch the run time). */
  startupMs: number;
}

/** One writer run: started, killed SIGKILL at a random instant after its first ack; what its journal says. */
async function runWriterUntilKilled(kind: Kind, path: string, ids: string[], firstSeq: number, journal: string) {
  writeFileSync(journal, '');
  const child = spawn(process.execPath, ['--import', 'tsx', WRITER, kind, path, ids.join(','), String(firstSeq), journal], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  writers.add(child);
  const delay = KILL_AFTER_MS.min + Math.floor(Math.random() * (KILL_AFTER_MS.max - KILL_AFTER_MS.min + 1));
  let out = '';
  let err = '';
  let timer: NodeJS.Timeout | undefined;
  const spawnedAt = Date.now();
  let startupMs = 0;
  // Heavy writes are under way once the first write is acknowledged: the random delay starts then.
  child.stdout!.on('data', (chunk: Buffer) => {
    out += chunk;
    if (!timer && out.includes('writing')) {
      startupMs = Date.now() - spawnedAt;
      timer = setTimeout(() => child.kill('SIGKILL'), delay);
    }
  });
  child.stderr!.on('data', (chunk: Buffer) => (err += chunk));
  const watchdog = setTimeout(() => child.kill('SIGKILL'), 15_000);
  const [code, signal] = (await once(child, 'close')) as [number | null, NodeJS.Signals | null];
  clearTimeout(watchdog);
  clearTimeout(timer);
  writers.delete(child);
  assert.ok(timer, `the writer never acknowledged a write (exit ${code}, ${signal})\nstderr:\n${err}`);
  assert.equal(signal, 'SIGKILL', `the writer ended on its own (exit ${code})\nstderr:\n${err}`);
  const tried = new Map<string, number>();
  const acked = new Map<string, number>();
  let acks = 0;
  // A line is complete only with its newline; lines are written whole, this is belt and braces.
  for (const line of readFileSync(journal, 'utf8').split('\n').slice(0, -1)) {
    const [verb, id, seqText] = line.split(' ');
    const seq = Number(seqText);
    assert.ok(id && Number.isInteger(seq) && (verb === 'try' || verb === 'ack'), `unexpected writer line ${JSON.stringify(line)}`);
    const map = verb === 'try' ? tried : acked;
    map.set(id, Math.max(map.get(id) ?? -1, seq));
    if (verb === 'ack') acks++;
  }
  return { tried, acked, acks, delay, startupMs };
}

/** Reads every record back the way a restarted server would, checking what the kill left behind. */
async function readBack(kind: Kind, path: string, ids: string[]): Promise<{ records: Map<string, SessionRecord>; tempsLeft: number }> {
  const records = new Map<string, SessionRecord>();
  const corrupt: string[] = [];
  const onCorrupt = (id: string, reason: string) => corrupt.push(`${id}: ${reason}`);
  let tempsLeft = 0;
  if (kind === 'sqlite') {
    // The shipped store opens the database first, as a restarted server would (WAL recovery).
    const store = new SqliteStore({ path, onCorrupt });
    try {
      for (const id of ids) {
        const record = await store.get(id);
        if (record) records.set(id, record);
      }
      // SQLite's own check of every page and index, on what the store now sees.
      const raw = new Database(path, { readonly: true });
      try {
        assert.equal(raw.pragma('integrity_check', { simple: true }), 'ok', 'SQLite integrity_check after kill -9');
      } finally {
        raw.close();
      }
    } finally {
      await store.close();
    }
    const check = new Database(path, { readonly: true });
    try {
      assert.equal((check.prepare('SELECT count(*) AS n FROM quarantine').get() as { n: number }).n, 0, 'nothing quarantined');
      const stray = check.prepare('SELECT id FROM sessions').all() as Array<{ id: string }>;
      assert.ok(stray.every((row) => ids.includes(row.id)), 'only the written IDs are stored');
    } finally {
      check.close();
    }
  } else {
    // What the kill left on disk, before the store touches it.
    const temps = existsSync(path) ? readdirSync(path).filter((name) => name.startsWith('.tmp-')) : [];
    tempsLeft = temps.length;
    const onDisk = new Map<string, string>();
    for (const id of ids) {
      const file = join(path, `${id}.json`);
      if (existsSync(file)) onDisk.set(id, readFileSync(file, 'utf8'));
    }
    const store = await FileStore.open({ dir: path, onCorrupt });
    try {
      assert.deepEqual(
        readdirSync(path).filter((name) => name.startsWith('.tmp-')),
        [],
        'opening the file store removes every leftover temp file',
      );
      for (const id of ids) {
        const record = await store.get(id);
        const file = onDisk.get(id);
        // A temp file is never data: get returns exactly the renamed file, or nothing.
        if (file === undefined) assert.equal(record, undefined, `${id}: no record file, yet get returned one`);
        else {
          let onDiskRecord: unknown;
          try {
            onDiskRecord = JSON.parse(file);
          } catch (error) {
            assert.fail(`${id}: torn record file on disk (${file.length} bytes): ${(error as Error).message}`);
          }
          assert.deepEqual(record, onDiskRecord, `${id}: get returns the record file as it was on disk`);
        }
        if (record) records.set(id, record);
      }
    } finally {
      await store.close();
    }
    assert.deepEqual(readdirSync(join(path, 'quarantine')), [], 'nothing quarantined');
  }
  assert.deepEqual(corrupt, [], 'no record reported corrupt');
  return { records, tempsLeft };
}

/** `kills` writer runs against one store, each checked against everything acknowledged before it. */
async function killLane(kind: Kind, kills: number, stats: KillStats): Promise<void> {
  const dir = tempDir(`crash-${kind}`);
  const path = kind === 'sqlite' ? join(dir, 'contexts.db') : join(dir, 'contexts');
  const ids = Array.from({ length: IDS_PER_LANE }, () => newSessionId());
  /** Per ID: nothing older may ever be read again (acknowledged, or already seen after a crash). */
  const floor = new Map<string, number>();
  /** Per ID: the newest seq ever handed to store.set. */
  const ceiling = new Map<string, number>();
  let nextSeq = 1;
  for (let kill = 0; kill < kills; kill++) {
    const run = await runWriterUntilKilled(kind, path, ids, nextSeq, join(dir, 'journal.txt'));
    const where = `${kind} kill #${kill} (after ${run.delay} ms, ${run.acks} acks)`;
    let midWrite = false;
    for (const id of ids) {
      const tried = run.tried.get(id);
      if (tried !== undefined) ceiling.set(id, Math.max(ceiling.get(id) ?? -1, tried));
      const acked = run.acked.get(id);
      if (acked !== undefined) floor.set(id, Math.max(floor.get(id) ?? -1, acked));
      if (tried !== undefined && tried !== acked) midWrite = true;
      nextSeq = Math.max(nextSeq, (tried ?? 0) + 1);
    }
    const { records, tempsLeft } = await readBack(kind, path, ids);
    for (const id of ids) {
      const low = floor.get(id);
      const seq = checkReadBack(records.get(id), id, low, ceiling.get(id), where);
      if (seq === undefined) continue;
      if (low === undefined || seq > low) stats.landedUnacked++;
      // What was read back after a crash is durable from now on: it must never go back in time.
      floor.set(id, seq);
    }
    stats.kills++;
    stats.acks += run.acks;
    stats.startupMs += run.startupMs;
    if (midWrite) stats.killsMidWrite++;
    if (tempsLeft > 0) stats.killsLeavingTemp++;
  }
}

async function killTest(t: TestContext, kind: Kind): Promise<KillStats> {
  const stats: KillStats = { kills: 0, acks: 0, killsMidWrite: 0, landedUnacked: 0, killsLeavingTemp: 0, startupMs: 0 };
  const perLane = Math.ceil(KILLS_PER_STORE / LANES);
  await Promise.all(Array.from({ length: LANES }, () => killLane(kind, perLane, stats)));
  t.diagnostic(`${kind}: ${JSON.stringify(stats)}`);
  assert.ok(stats.kills >= KILLS_PER_STORE, `${stats.kills} kills`);
  // The kills really landed during writes, not between them.
  assert.ok(stats.killsMidWrite >= stats.kills / 2, `only ${stats.killsMidWrite} of ${stats.kills} kills hit a write in flight`);
  return stats;
}

describe('E1/E2: kill -9 at a random instant during heavy writes, ≥ 100 times per store', () => {
  test('sqlite: every record whole and readable, none older than its last acknowledged write', { timeout: 240_000 }, async (t) => {
    await killTest(t, 'sqlite');
  });

  test('file: every record whole and readable, no temp file ever read as data', { timeout: 240_000 }, async (t) => {
    const stats = await killTest(t, 'file');
    // Kills between the temp file's creation and its rename did happen, so the temp-file
    // checks above were exercised for real.
    assert.ok(stats.killsLeavingTemp > 0, 'no kill ever left a temp file behind');
  });

  test('file: a leftover temp file holding a newer (or the only) record is removed at open, never returned', async () => {
    const dir = join(tempDir('crash-file-temp'), 'contexts');
    const store = await FileStore.open({ dir });
    const kept = crashRecord(newSessionId(), 1);
    await store.set(kept);
    await store.close();
    const orphan = newSessionId();
    // What a writer killed before its rename leaves: whole, valid-looking records in temp files.
    writeFileSync(join(dir, `.tmp-${kept.id}-0a1b2c3d`), JSON.stringify(crashRecord(kept.id, 2)));
    writeFileSync(join(dir, `.tmp-${orphan}-4e5f6a7b`), JSON.stringify(crashRecord(orphan, 3)));
    writeFileSync(join(dir, `.tmp-${orphan}-deadbeef`), JSON.stringify(crashRecord(orphan, 4)).slice(0, 100)); // torn
    const again = await FileStore.open({ dir });
    try {
      assert.deepEqual(readdirSync(dir).filter((name) => name.startsWith('.tmp-')), []);
      assert.deepEqual(await again.get(kept.id), kept);
      assert.equal(await again.get(orphan), undefined);
    } finally {
      await again.close();
    }
  });
});

// ---------------------------------------------------------------------------------------------
// E2 and E3 through the real server (the CLI, as `npm start` runs it)
// ---------------------------------------------------------------------------------------------

const STARTUP_MS = 15_000;
const CLI_TEST = { timeout: 60_000 };



function startCli(configPath: string): Child {
  const child = runMain(['--config', configPath]);
  servers.push(child);
  return child;
}

const started = (child: Child) => waitForStart(child, STARTUP_MS);

async function exited(child: Child, ms = 20_000): Promise<number | null> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`the server did not exit within ${ms} ms\n${describeChild(child)}`)), ms);
  });
  try {
    return await Promise.race([child.exited, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

function storePath(kind: Kind): string {
  const dir = tempDir(`cli-${kind}`);
  return kind === 'sqlite' ? join(dir, 'contexts.db') : join(dir, 'contexts');
}

function cliConfig(kind: Kind, path: string, sessions: Record<string, unknown>) {
  return {
    host: '127.0.0.1',
    port: 0,
    publicDir: join(ROOT, 'test/fixtures/public'),
    workers: { threads: 2 },
    hooks: { ...FIXTURE_HOOKS },
    sessions,
    store: { kind, path },
    log: { level: 'info' },
  };
}

/** `count` clients, client i having made i+1 /inc requests; returns them with their session IDs. */
async function clientsWithCounts(url: string, count: number): Promise<Array<{ client: Client; id: string; n: number }>> {
  const clients = [];
  for (let i = 0; i < count; i++) {
    const client = new Client(url);
    let state;
    for (let k = 0; k <= i; k++) state = await fixtureState(client, '/inc');
    assert.equal(state!.n, i + 1);
    assert.equal(state!.id, client.cookie);
    clients.push({ client, id: state!.id, n: i + 1 });
  }
  assert.equal(new Set(clients.map((c) => c.id)).size, count, 'every client has its own session');
  return clients;
}

/** The same browsers, talking to the restarted server: each must find its session and memento. */
async function assertResumed(url: string, clients: Array<{ id: string; n: number }>, reason: string): Promise<void> {
  for (const { id, n } of clients) {
    const client = new Client(url);
    client.cookie = id;
    const state = await fixtureState(client);
    assert.equal(state.id, id, 'same session ID after the restart');
    assert.equal(state.resumed, true, `session ${id} resumed`);
    assert.deepEqual(
      { n: (state.saved as { n?: unknown })?.n, reason: (state.saved as { reason?: unknown })?.reason },
      { n, reason },
      `session ${id} resumed with its memento`,
    );
    await client.close();
  }
}

for (const kind of ['sqlite', 'file'] as const) {
  describe(`${kind} store through the CLI`, () => {
    test(`E2: kill -9 right after sessions were suspended (logged): all resume after a restart`, CLI_TEST, async () => {
      const config = writeTempConfig(cliConfig(kind, storePath(kind), { processTimeout: '1s' }));
      const first = startCli(config);
      const clients = await clientsWithCounts(await started(first), 5);
      // SIGKILL from the data handler, the moment the fifth 'suspended' line arrives: no
      // graceful anything after the acknowledgement.
      const suspendedCount = () => childLogs(first).filter((l) => l.event === 'suspended').length;
      let killed = false;
      const check = () => {
        if (!killed && suspendedCount() >= clients.length) {
          killed = first.process.kill('SIGKILL');
          first.process.stdout.off('data', check);
        }
      };
      first.process.stdout.on('data', check);
      check();
      await waitFor(async () => killed, 10_000, 'five "suspended" log lines').catch((error: Error) =>
        assert.fail(`${error.message}\n${describeChild(first)}`),
      );
      await exited(first);
      assert.equal(first.process.signalCode, 'SIGKILL', describeChild(first));
      assert.ok(childLogs(first).every((l) => l.event !== 'stopping'), 'no graceful shutdown happened');
      for (const c of clients) await c.client.close();

      const second = startCli(config);
      await assertResumed(await started(second), clients, 'idle');
      second.process.kill('SIGTERM');
      assert.equal(await exited(second), 0, describeChild(second));
    });

    test(`E3: SIGTERM with 20 live contexts: all 20 suspended, exit 0, all resume after a restart`, CLI_TEST, async () => {
      const config = writeTempConfig(cliConfig(kind, storePath(kind), {}));
      const first = startCli(config);
      const clients = await clientsWithCounts(await started(first), 20);
      assert.equal(childLogs(first).filter((l) => l.event === 'suspended').length, 0, 'every context live before the signal');
      first.process.kill('SIGTERM');
      assert.equal(await exited(first), 0, describeChild(first));
      const suspended = childLogs(first).filter((l) => l.event === 'suspended');
      assert.equal(suspended.length, 20, describeChild(first));
      assert.ok(suspended.every((l) => l.reason === 'shutdown'));
      assert.equal(new Set(suspended.map((l) => l.session)).size, 20, 'twenty distinct sessions suspended');
      for (const c of clients) await c.client.close();

      const second = startCli(config);
      await assertResumed(await started(second), clients, 'shutdown');
      second.process.kill('SIGTERM');
      assert.equal(await exited(second), 0, describeChild(second));
    });
  });
}
