/**
 * E1/E2 at the store level (RELIABILITY.md), for every durable store: a child process
 * (test/fixtures/crash/writer.ts) writes records through the shipped store as fast as it can and
 * is killed with SIGKILL at a random instant; then every record is read back the way a restarted
 * server would and checked against the writer's journal: whole, never older than its last
 * acknowledged write, never newer than the last attempted one. Each store's test file says how
 * to read its store back (a CrashTarget); the kill loop is here.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, type TestContext } from 'node:test';
import { newSessionId } from '../../src/contexts/ids.ts';
import type { SessionRecord } from '../../src/stores/store.ts';
import { checkReadBack } from '../fixtures/crash/records.ts';
import { ROOT } from '../helpers.ts';

const WRITER = join(ROOT, 'test/fixtures/crash/writer.ts');
/**
 * Node's own type stripping where it has it (Node 24; the store code is erasable TypeScript),
 * else tsx: a writer starts 100 times per store, and tsx's loader costs it about 0.25 s of CPU
 * more each time (0.62 s against 0.39 s for a Redis writer), which a loaded machine feels.
 */
const LOADER = process.features.typescript ? [] : ['--import', 'tsx'];
/** Kills per store, spread over parallel lanes (each lane its own store and IDs). CRASH_KILLS lowers it while developing only. */
export const KILLS_PER_STORE = Number(process.env.CRASH_KILLS ?? 100);
const LANES = 2;
const IDS_PER_LANE = 20;
const KILL_AFTER_MS = { min: 20, max: 200 };

const writers = new Set<ChildProcess>();
const tempDirs: string[] = [];

after(() => {
  for (const child of writers) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
});

export function tempDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), `resident-${prefix}-`));
  tempDirs.push(dir);
  return dir;
}

/** One lane's store, as the writer opens it and as the test reads it back after each kill. */
export interface CrashTarget {
  /** writer.ts arguments that name the store: its kind, then where it is. */
  store: string[];
  /**
   * Waits until nothing the killed writer sent can still change the store (PostgreSQL runs a
   * statement to its end although its client is gone); true when it had to wait.
   */
  settle?: () => Promise<boolean>;
  /** Every record of `ids`, read back through the shipped store, with the store's own checks asserted. */
  readBack: (ids: string[]) => Promise<{ records: Map<string, SessionRecord>; tempsLeft?: number }>;
  /** Checks too costly for every kill, once after the lane's last one (what the kills left, added up). */
  finish?: (ids: string[]) => Promise<void>;
}

export interface KillStats {
  kills: number;
  acks: number;
  /** Kills that hit while at least one attempted write was not yet acknowledged. */
  killsMidWrite: number;
  /** Records found newer than their last acknowledged write (an unacknowledged write that landed). */
  landedUnacked: number;
  /** Kills after which the file store folder held a temp file (killed between open and rename). */
  killsLeavingTemp: number;
  /** Kills after which the store still ran a write of the dead writer (see CrashTarget.settle). */
  killsLeavingStatement: number;
  /** Milliseconds from a writer's turn (its code loaded) to its first acknowledged write, summed. */
  startupMs: number;
}

/** A writer started with its store's code loaded, waiting for its turn (see writer.ts). */
interface Writer {
  child: ChildProcess;
  out: string;
  err: string;
}

function spawnWriter(store: string[], ids: string[], journal: string): Writer {
  const child = spawn(process.execPath, [...LOADER, WRITER, ids.join(','), journal, ...store], {
    cwd: ROOT,
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  writers.add(child);
  const writer = { child, out: '', err: '' };
  child.stdout!.on('data', (chunk: Buffer) => (writer.out += chunk));
  child.stderr!.on('data', (chunk: Buffer) => (writer.err += chunk));
  // A writer that died before its turn says so in runWriterUntilKilled; no EPIPE crash here.
  child.stdin!.on('error', () => {});
  return writer;
}

/** Kills a writer and waits until it is gone. */
async function stopWriter({ child }: Writer): Promise<void> {
  if (child.exitCode === null && child.signalCode === null) {
    child.kill('SIGKILL');
    await once(child, 'close');
  }
  writers.delete(child);
}

/** One writer run: told to start at `firstSeq`, killed SIGKILL at a random instant after its first ack; what its journal says. */
async function runWriterUntilKilled(writer: Writer, firstSeq: number, journal: string) {
  const { child } = writer;
  writeFileSync(journal, '');
  const delay = KILL_AFTER_MS.min + Math.floor(Math.random() * (KILL_AFTER_MS.max - KILL_AFTER_MS.min + 1));
  let timer: NodeJS.Timeout | undefined;
  const toldAt = Date.now();
  let startupMs = 0;
  // Heavy writes are under way once the first write is acknowledged: the random delay starts then.
  const onData = () => {
    if (!timer && writer.out.includes('writing')) {
      startupMs = Date.now() - toldAt;
      timer = setTimeout(() => child.kill('SIGKILL'), delay);
    }
  };
  child.stdout!.on('data', onData);
  const closed = once(child, 'close') as Promise<[number | null, NodeJS.Signals | null]>;
  child.stdin!.write(`${firstSeq}\n`);
  // Generous: on a loaded machine a writer told to start may still be loading its code.
  const watchdog = setTimeout(() => child.kill('SIGKILL'), 60_000);
  const [code, signal] = await closed;
  clearTimeout(watchdog);
  clearTimeout(timer);
  writers.delete(child);
  assert.ok(timer, `the writer never acknowledged a write (exit ${code}, ${signal})\nstderr:\n${writer.err}`);
  assert.equal(signal, 'SIGKILL', `the writer ended on its own (exit ${code})\nstderr:\n${writer.err}`);
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

/** `kills` writer runs against one store, each checked against everything acknowledged before it. */
async function killLane(label: string, target: CrashTarget, kills: number, stats: KillStats): Promise<void> {
  const journal = join(tempDir(`crash-journal`), 'journal.txt');
  const ids = Array.from({ length: IDS_PER_LANE }, () => newSessionId());
  /** Per ID: nothing older may ever be read again (acknowledged, or already seen after a crash). */
  const floor = new Map<string, number>();
  /** Per ID: the newest seq ever handed to store.set. */
  const ceiling = new Map<string, number>();
  let nextSeq = 1;
  let next = spawnWriter(target.store, ids, journal);
  try {
    for (let kill = 0; kill < kills; kill++) {
      const current = next;
      // The next writer loads its code while this one runs and the store is read back:
      // starting Node and a client library takes longer than a whole round.
      next = spawnWriter(target.store, ids, journal);
      const run = await runWriterUntilKilled(current, nextSeq, journal);
      const where = `${label} kill #${kill} (after ${run.delay} ms, ${run.acks} acks)`;
      let midWrite = false;
      for (const id of ids) {
        const tried = run.tried.get(id);
        if (tried !== undefined) ceiling.set(id, Math.max(ceiling.get(id) ?? -1, tried));
        const acked = run.acked.get(id);
        if (acked !== undefined) floor.set(id, Math.max(floor.get(id) ?? -1, acked));
        if (tried !== undefined && tried !== acked) midWrite = true;
        nextSeq = Math.max(nextSeq, (tried ?? 0) + 1);
      }
      if (await target.settle?.()) stats.killsLeavingStatement++;
      const { records, tempsLeft = 0 } = await target.readBack(ids);
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
  } finally {
    await stopWriter(next);
  }
  await target.finish?.(ids);
}

/** ≥ KILLS_PER_STORE kills over LANES lanes, each lane on a store of its own (`lane()`). */
export async function killTest(t: TestContext, label: string, lane: () => CrashTarget): Promise<KillStats> {
  const stats: KillStats = { kills: 0, acks: 0, killsMidWrite: 0, landedUnacked: 0, killsLeavingTemp: 0, killsLeavingStatement: 0, startupMs: 0 };
  const perLane = Math.ceil(KILLS_PER_STORE / LANES);
  const started = Date.now();
  await Promise.all(Array.from({ length: LANES }, () => killLane(label, lane(), perLane, stats)));
  t.diagnostic(`${label}: ${JSON.stringify(stats)} in ${Date.now() - started} ms`);
  assert.ok(stats.kills >= KILLS_PER_STORE, `${stats.kills} kills`);
  // The kills really landed during writes, not between them.
  assert.ok(stats.killsMidWrite >= stats.kills / 2, `only ${stats.killsMidWrite} of ${stats.kills} kills hit a write in flight`);
  return stats;
}
