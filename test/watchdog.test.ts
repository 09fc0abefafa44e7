/**
 * The watchdog and the thread limits against a real server (RELIABILITY.md F3, F4, F5, D8), with
 * an HTTP edge on every worker thread (issue 11): a hook that never yields, one that fills its
 * heap, and threads that keep dying. A thread that goes takes its own connections with it; a
 * request that hopped to it from another thread is answered by that thread (504 for the hook
 * that held it, 502 for the others); the other thread's clients are answered throughout, the
 * lost thread is replaced in its slot, and the process survives.
 *
 * Which thread accepts a connection is the kernel's choice (SO_REUSEPORT), and a new session is
 * homed on the thread whose connection brought its first request. So each client here keeps a
 * connection of its own (an undici Agent with one connection), placed by the session it created
 * (its ID names its home slot), and a request sent over another thread's connection is checked
 * to hop with the hops counter.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { Agent } from 'undici';
import { slotOf } from '../src/contexts/ids.ts';
import { FIXTURE_HOOKS, ROOT, send, waitFor, withServer, type FixtureState, type Reply, type TestServer } from './helpers.ts';

const HOOKS = { ...FIXTURE_HOOKS, onConnection: join(ROOT, 'test/fixtures/watchdog/onConnection.ts') };
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** One keep-alive connection: the thread that accepted it reads every request sent over it while it lives. */
class Conn {
  readonly #agent = new Agent({ connections: 1 });
  readonly #base: string;
  constructor(base: string) {
    this.#base = base;
  }

  get(path: string, id?: string): Promise<Reply> {
    return send(this.#base + path, { headers: id ? { cookie: `RSID=${id}` } : {}, dispatcher: this.#agent });
  }

  close(): Promise<void> {
    return this.#agent.destroy().catch(() => {});
  }
}

/**
 * What a test opened: its connections and its bystanders, closed and stopped when the test
 * ends, passed or failed (a bystander left running would keep the test file from ending).
 */
class Scope {
  readonly #conns: Conn[] = [];
  readonly #stops: Array<() => Promise<unknown>> = [];
  conn(base: string): Conn {
    const conn = new Conn(base);
    this.#conns.push(conn);
    return conn;
  }

  bystander(b: Placed): ReturnType<typeof bystander> {
    const watching = bystander(b);
    this.#stops.push(() => watching.stop());
    return watching;
  }

  async close(): Promise<void> {
    await Promise.all(this.#stops.map((stop) => stop()));
    await Promise.all(this.#conns.map((conn) => conn.close()));
  }
}

/** A server for `body`, with a Scope closed before the server is. */
async function withScope(config: Parameters<typeof withServer>[0], body: (s: TestServer, scope: Scope) => Promise<void>): Promise<void> {
  await withServer(config, async (s) => {
    const scope = new Scope();
    try {
      await body(s, scope);
    } finally {
      await scope.close();
    }
  });
}

function cookieOf(reply: Reply): string | undefined {
  const line = reply.setCookies.find((candidate) => candidate.startsWith('RSID='));
  return line?.slice(5, line.indexOf(';'));
}

/** A connection and the session it created: both on the thread of `slot`. */
interface Placed {
  conn: Conn;
  id: string;
  slot: number;
  first: FixtureState;
}

/** Connections, each with the session it created, until each slot s has `wanted[s]` of them. */
async function place(t: TestServer, wanted: number[], scope: Scope): Promise<Placed[][]> {
  const threads = wanted.length;
  const bySlot: Placed[][] = wanted.map(() => []);
  for (let i = 0; i < 100; i++) {
    const conn = scope.conn(t.url);
    const reply = await conn.get('/inc');
    assert.equal(reply.status, 200, reply.text);
    const id = cookieOf(reply)!;
    const slot = slotOf(id) % threads;
    if (bySlot[slot]!.length < wanted[slot]!) bySlot[slot]!.push({ conn, id, slot, first: reply.json<FixtureState>() });
    else await conn.close();
    if (bySlot.every((list, s) => list.length >= wanted[s]!)) return bySlot;
  }
  throw new Error(`could not place connections on every thread: ${bySlot.map((list) => list.length).join(', ')}`);
}

/** A fresh connection that the thread of `slot` accepted, with the session it created there. */
async function placeOn(t: TestServer, slot: number, threads: number, scope: Scope): Promise<Placed> {
  const wanted = Array.from({ length: threads }, (_, s) => (s === slot ? 1 : 0));
  return (await place(t, wanted, scope))[slot]![0]!;
}

/** Hops made while `request` ran: 1 when its connection is on another thread than its session's home. */
async function hopsOf(t: TestServer, request: () => Promise<Reply>): Promise<number> {
  const before = t.server.sessions.stats.hops;
  const reply = await request();
  assert.equal(reply.status, 200, reply.text);
  return t.server.sessions.stats.hops - before;
}

/** How a request ended: an answer, or its connection closed under it (no answer). */
type Outcome = { status: number; text: string; ms: number } | { cut: string; ms: number };

/** Settles `request` into an Outcome; fails (rather than hang) if it has not settled within `limitMs`. */
async function outcome(request: Promise<Reply>, limitMs: number): Promise<Outcome> {
  const started = performance.now();
  let timer: NodeJS.Timeout | undefined;
  const settled = request.then(
    (reply): Outcome => ({ status: reply.status, text: reply.text, ms: performance.now() - started }),
    (error: { code?: string; message?: string }): Outcome => ({ cut: `${error.code ?? ''} ${error.message ?? ''}`, ms: performance.now() - started }),
  );
  const hung = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`a request still unsettled after ${limitMs} ms`)), limitMs)));
  try {
    return await Promise.race([settled, hung]);
  } finally {
    clearTimeout(timer);
  }
}

/** A connection closed with no answer: what undici says when the server's side closes mid-request. */
function assertCut(result: Outcome, what: string): void {
  assert.ok('cut' in result, `${what}: expected its connection cut, got status ${'status' in result ? `${result.status} ${result.text}` : ''}`);
  assert.match(result.cut, /UND_ERR_SOCKET|ECONNRESET|EPIPE/, what);
}

/**
 * A client of another thread asking all along, over its own connection, for its session homed
 * on that same thread: its worst latency and its failures (a wrong status, a wrong count, a
 * cut connection, another thread answering).
 */
function bystander(b: Placed): { stop(): Promise<{ requests: number; worstMs: number; failures: string[] }> } {
  let running = true;
  const failures: string[] = [];
  let worstMs = 0;
  let requests = 0;
  const loop = (async () => {
    let last = b.first.n;
    while (running) {
      const started = performance.now();
      try {
        const reply = await b.conn.get('/inc', b.id);
        const state = reply.status === 200 ? reply.json<FixtureState>() : undefined;
        if (state?.n !== last + 1 || state.threadId !== b.first.threadId) failures.push(`status ${reply.status}, n ${String(state?.n)} after ${last}, thread ${String(state?.threadId)}`);
        last = state?.n ?? last;
      } catch (error) {
        failures.push(`no answer: ${(error as Error).message}`);
      }
      worstMs = Math.max(worstMs, performance.now() - started);
      requests++;
      await sleep(20);
    }
  })();
  return {
    async stop() {
      running = false;
      await loop;
      return { requests, worstMs, failures };
    },
  };
}

/** The thread now in `slot`. */
function threadOf(t: TestServer, slot: number): number | undefined {
  return t.server.pool.edges.find((edge) => edge.slot === slot)?.threadId;
}

/** Waits until `slot` has a thread again, another than `lost`, and every slot is served. */
async function replaced(t: TestServer, slot: number, lost: number, threads: number, timeoutMs = 10_000): Promise<number> {
  await waitFor(() => t.server.pool.edges.length === threads && threadOf(t, slot) !== undefined && threadOf(t, slot) !== lost, timeoutMs, `a replacement thread in slot ${slot}`);
  return threadOf(t, slot)!;
}

test('F3: a hook that never yields gets 504 at workers.stallTimeout; the others hopped to its thread get 502, its own connections are cut; it is replaced in its slot, its sessions resume, the other thread answers throughout', async (t) => {
  const stallMs = 1_000;
  const config = { workers: { threads: 2, stallTimeout: '1s' }, hooks: { ...HOOKS, connectionTimeout: '1s' }, sessions: { checkpointInterval: '100ms' } };
  await withScope(config, async (s, scope) => {
    // Slot 0's thread is the one that gets stuck; slot 1's thread is the other.
    const [onStuck, onOther] = await place(s, [4, 3], scope);
    const [local, resident, spinner, sleeper] = onStuck as [Placed, Placed, Placed, Placed];
    const [watcher, spinnerWay, sleeperWay] = onOther as [Placed, Placed, Placed];
    const stuckThread = local.first.threadId;
    assert.equal(threadOf(s, 0), stuckThread);
    assert.ok([resident, spinner, sleeper].every((p) => p.first.threadId === stuckThread));
    assert.equal((await resident.conn.get('/inc', resident.id)).json<FixtureState>().n, 2);
    // Their checkpoints (every 100 ms) are what they resume from.
    await sleep(400);
    // The spinner's and the sleeper's requests go over connections of the other thread: they hop.
    assert.equal(await hopsOf(s, () => spinnerWay.conn.get('/state', spinner.id)), 1);
    assert.equal(await hopsOf(s, () => sleeperWay.conn.get('/state', sleeper.id)), 1);
    assert.equal(await hopsOf(s, () => local.conn.get('/state', local.id)), 0);

    const watching = scope.bystander(watcher);
    const limit = stallMs + 4_000;
    const onOwnConnection = outcome(local.conn.get('/sleep?ms=5000', local.id), limit);
    const hoppedSleep = outcome(sleeperWay.conn.get('/sleep?ms=5000', sleeper.id), limit);
    await sleep(100);
    const spun = await outcome(spinnerWay.conn.get('/spin-forever', spinner.id), limit);
    const [cut, slept] = await Promise.all([onOwnConnection, hoppedSleep]);
    assert.ok('status' in spun && spun.status === 504, `the spinning request: ${JSON.stringify(spun)}`);
    assert.ok(spun.ms < stallMs + 1_200, `the spinning request was answered after ${Math.round(spun.ms)} ms (stallTimeout ${stallMs} ms)`);
    assert.ok('status' in slept && slept.status === 502, `the other request hopped to the stalled thread: ${JSON.stringify(slept)}`);
    assert.ok(slept.text.length < 120 && !/at |\.ts/.test(slept.text), slept.text);
    assertCut(cut, 'the request on the stalled thread\'s own connection');
    assert.ok(cut.ms < stallMs + 1_500, `the stalled thread's own connection was cut after ${Math.round(cut.ms)} ms`);

    const replacement = await replaced(s, 0, stuckThread, 2);
    const back = await spinnerWay.conn.get('/state', resident.id);
    assert.equal(back.status, 200, back.text);
    assert.deepEqual(
      (({ id, resumed, n, threadId }) => ({ id, resumed, n, threadId }))(back.json<FixtureState>()),
      { id: resident.id, resumed: true, n: 2, threadId: replacement },
      'resumed from its last checkpoint, on the replacement',
    );
    for (const lost of [spinner, sleeper]) {
      const again = (await spinnerWay.conn.get('/state', lost.id)).json<FixtureState>();
      assert.deepEqual([again.id, again.resumed, again.n], [lost.id, true, 1], 'a session whose request was in flight keeps its session');
    }

    const { requests, worstMs, failures } = await watching.stop();
    t.diagnostic(`bystander: ${requests} requests, worst ${Math.round(worstMs)} ms, ${failures.length} failures; spinner answered 504 after ${Math.round(spun.ms)} ms, the hopped sleeper 502 after ${Math.round(slept.ms)} ms, the own connection cut after ${Math.round(cut.ms)} ms`);
    assert.deepEqual(failures, []);
    assert.ok(requests > 20, `the bystander sent ${requests} requests`);
    assert.ok(worstMs < stallMs + 1_000, `the bystander waited ${Math.round(worstMs)} ms`);

    await waitFor(() => s.logs.some((line) => line.event === 'worker-stalled'), 2000, 'the worker-stalled log');
    const stalled = s.logs.filter((line) => line.event === 'worker-stalled');
    assert.equal(stalled.length, 1);
    assert.equal(stalled[0]!.threadId, stuckThread);
    assert.equal(stalled[0]!.level, 50);
    assert.equal(s.server.sessions.stats.workersLost, 1);
    assert.equal(s.server.pool.stalls, 1);
    assert.equal(s.server.pool.degraded, false);
    // hooks.connectionTimeout still answers a hook that awaits forever, local or hopped.
    assert.equal((await watcher.conn.get('/hang', watcher.id)).status, 504);
    assert.equal((await spinnerWay.conn.get('/hang', spinner.id)).status, 504);
    assert.equal(s.server.pool.stalls, 1, 'a hook that awaits forever leaves its thread turning');
    assert.equal(s.logs.filter((line) => line.event === 'edge-error').length, 0, 'no response was written twice');
  });
});

/**
 * The home thread that would log the stuck hook's failure is the one terminated: the edge that
 * answers the hop's 504 (src/edge/mesh.ts) logs it for the session.
 */
test('F3: the session whose hook held its thread logs its timeout', async () => {
  await withScope({ workers: { threads: 2, stallTimeout: '1s' }, hooks: HOOKS }, async (s, scope) => {
    const [[spinner], [way]] = (await place(s, [1, 1], scope)) as [[Placed], [Placed]];
    assert.equal(await hopsOf(s, () => way.conn.get('/state', spinner.id)), 1);
    assert.equal((await way.conn.get('/spin-forever', spinner.id)).status, 504);
    const logged = await waitFor(() => s.logs.find((line) => line.event === 'hook-error' && line.code === 'RESIDENT_ERR_HOOK_TIMEOUT'), 2000, 'the timeout logged');
    assert.match(String(logged!.msg), /terminated/, 'the spinning session logs its timeout');
    assert.equal(typeof logged!.session, 'string', 'the session is named (hashed)');
  });
});

test('F3 with one thread (the red team\'s case): an 8 s spin is cut at stallTimeout with every connection of the thread; the replacement listens soon after, and a session never checkpointed starts anew', async (t) => {
  const stallMs = 1_000;
  await withScope({ workers: { threads: 1, stallTimeout: '1s' }, hooks: { ...HOOKS, connectionTimeout: '1s' } }, async (s, scope) => {
    const [[other, spinner]] = (await place(s, [2], scope)) as [[Placed, Placed]];
    const thread = other.first.threadId;
    const limit = stallMs + 4_000;
    const spinning = outcome(spinner.conn.get('/spin?ms=8000', spinner.id), limit);
    await sleep(100);
    const queued = await outcome(other.conn.get('/inc', other.id), limit);
    const spun = await spinning;
    // The one thread is the edge of both connections: nothing is left to answer on them.
    assertCut(spun, 'the spinning request');
    assertCut(queued, 'a request queued behind it on that thread');
    assert.ok(spun.ms < stallMs + 1_200, `the spinning request was cut after ${Math.round(spun.ms)} ms`);
    assert.ok(queued.ms < stallMs + 1_200, `the other request was cut after ${Math.round(queued.ms)} ms`);
    // Until the replacement listens, connections are refused; then it answers.
    const started = performance.now();
    const back = (await waitFor(async () => {
      const reply = await other.conn.get('/inc', other.id).catch(() => undefined);
      return reply?.status === 200 ? reply : undefined;
    }, 10_000, 'the replacement to answer'))!;
    t.diagnostic(`cut after ${Math.round(spun.ms)} ms; answered again ${Math.round(performance.now() - started)} ms later`);
    assert.notEqual(threadOf(s, 0), thread);
    const state = back.json<FixtureState>();
    // sessions.checkpointInterval is off and the session never suspended: no record to resume.
    assert.deepEqual([state.resumed, state.isNew, state.n, state.threadId], [false, true, 1, threadOf(s, 0)], 'starts anew');
    assert.notEqual(state.id, other.id, 'under an ID of its own');
    assert.equal(cookieOf(back), state.id, 'sent in its cookie');
    assert.equal(s.server.pool.stalls, 1);
    assert.equal(s.server.sessions.stats.workersLost, 1);
  });
});

test('F3: a whole process paused longer than stallTimeout (SIGSTOP, a suspended VM) is no reason to terminate its threads', async (t) => {
  if (process.platform === 'win32') return t.skip('no SIGSTOP');
  await withScope({ workers: { threads: 2, stallTimeout: '500ms' } }, async (s, scope) => {
    const placed = (await place(s, [1, 1], scope)).flat();
    await sleep(300);
    // Every thread of this process stops, the watchdog's and the workers' alike.
    const pauser = spawn('sh', ['-c', `kill -STOP ${process.pid}; sleep 1.5; kill -CONT ${process.pid}`], { stdio: 'ignore' });
    await new Promise((resolve) => pauser.on('exit', resolve));
    await sleep(1_000);
    assert.equal(s.server.pool.stalls, 0);
    assert.equal(s.server.sessions.stats.workersLost, 0);
    for (const p of placed) {
      const next = await p.conn.get('/inc', p.id);
      assert.equal(next.status, 200, next.text);
      const state = next.json<FixtureState>();
      assert.deepEqual([state.id, state.n, state.resumed, state.threadId], [p.id, 2, false, p.first.threadId]);
    }
  });
});

test('F4/D8: a hook that fills its heap (workers.maxHeapMb 64) loses its thread alone: the request hopped there gets 502, its own connections are cut, it is replaced in its slot, and the other thread answers throughout', async (t) => {
  const config = { workers: { threads: 2, maxHeapMb: 64 }, hooks: HOOKS, sessions: { checkpointInterval: '100ms' } };
  await withScope(config, async (s, scope) => {
    const [[local, bomber], [watcher, bomberWay]] = (await place(s, [2, 2], scope)) as [[Placed, Placed], [Placed, Placed]];
    const bombThread = bomber.first.threadId;
    await sleep(400);
    assert.equal(await hopsOf(s, () => bomberWay.conn.get('/state', bomber.id)), 1);
    assert.equal(await hopsOf(s, () => local.conn.get('/state', local.id)), 0);
    const watching = scope.bystander(watcher);
    const onOwnConnection = outcome(local.conn.get('/sleep?ms=8000', local.id), 15_000);
    await sleep(100);
    const bombed = await outcome(bomberWay.conn.get('/heap-bomb', bomber.id), 15_000);
    const cut = await onOwnConnection;
    assert.ok('status' in bombed && bombed.status === 502, `the request hopped to the thread that ran out of heap: ${JSON.stringify(bombed)}`);
    assertCut(cut, 'the request on that thread\'s own connection');
    const replacement = await replaced(s, 0, bombThread, 2);
    const back = (await bomberWay.conn.get('/state', bomber.id)).json<FixtureState>();
    assert.deepEqual([back.id, back.resumed, back.n, back.threadId], [bomber.id, true, 1, replacement], 'resumed from its checkpoint');
    const { requests, worstMs, failures } = await watching.stop();
    t.diagnostic(`bystander: ${requests} requests, worst ${Math.round(worstMs)} ms, ${failures.length} failures; the bomb answered 502 after ${Math.round(bombed.ms)} ms`);
    assert.deepEqual(failures, []);
    assert.ok(requests > 10, `the bystander sent ${requests} requests`);
    assert.ok(worstMs < 1_000, `the bystander waited ${Math.round(worstMs)} ms`);
    await waitFor(() => s.logs.some((line) => line.event === 'worker-out-of-memory' && line.level === 50), 2000, 'the out-of-memory log');
    assert.equal(s.server.sessions.stats.workersLost, 1);
    assert.equal(s.server.pool.degraded, false);
    assert.equal((await watcher.conn.get('/readyz')).status, 200);
  });
});

test('F5: threads killed by their hooks (exit or uncaught error), ten in a row, are each replaced: a route that kills its thread never trips the crash-loop breaker, and the other thread answers throughout', async (t) => {
  await withScope({ workers: { threads: 2 }, hooks: HOOKS }, async (s, scope) => {
    // Slot 0's thread is killed each time; slot 1's serves the bystander and carries the hops.
    const [, [watcher]] = (await place(s, [0, 1], scope)) as [[], [Placed]];
    const watching = scope.bystander(watcher);
    for (let deaths = 1; deaths <= 10; deaths++) {
      const victim = threadOf(s, 0)!;
      const killer = await placeOn(s, 0, 2, scope);
      // Both ways a thread dies (an exit, an error nobody catches), each asked on the dying
      // thread's own connection (its last words answer) and through a hop (the origin answers).
      const path = deaths % 2 === 0 ? '/die' : '/throw-uncaught';
      const hop = deaths % 4 >= 2;
      // A connection of slot 1's thread, fresh: an idle one may have been closed (keep-alive
      // timeout) and opened again on either thread.
      const hopper = hop ? await placeOn(s, 1, 2, scope) : undefined;
      if (hopper) assert.equal(await hopsOf(s, () => hopper.conn.get('/state', killer.id)), 1);
      const reply = await outcome((hopper ?? killer).conn.get(path, killer.id), 10_000);
      assert.ok('status' in reply && reply.status === 502, `death ${deaths} (${path}, ${hop ? 'hopped' : 'own connection'}): ${JSON.stringify(reply)}`);
      await replaced(s, 0, victim, 2);
      await waitFor(() => s.server.sessions.stats.workersLost === deaths, 2000, `thread death ${deaths} counted`);
      await killer.conn.close();
      await hopper?.conn.close();
    }
    const { requests, worstMs, failures } = await watching.stop();
    t.diagnostic(`bystander: ${requests} requests, worst ${Math.round(worstMs)} ms, ${failures.length} failures`);
    assert.deepEqual(failures, []);
    // Ten replacement threads starting on 2 busy cores cost the bystander up to ~0.7 s (the
    // issue's bound, stallTimeout + 1 s, is 11 s here).
    assert.ok(worstMs < 2_000, `the bystander waited ${Math.round(worstMs)} ms`);
    assert.equal(s.server.pool.degraded, false);
    assert.equal(s.logs.filter((line) => line.event === 'worker-crash-loop').length, 0, 'no alert');
    assert.equal((await watcher.conn.get('/readyz')).status, 200);
  });
});

/** A server of two threads whose replacements break (test/fixtures/watchdog/breaksAfterTwoLoads.ts). */
async function withBreakingReplacements(how: 'throw' | 'exit', run: (s: TestServer, scope: Scope) => Promise<void>): Promise<void> {
  process.env.RESIDENT_TEST_LOADS = mkdtempSync(join(tmpdir(), 'resident-loads-'));
  process.env.RESIDENT_TEST_BREAK = how;
  const hooks = { ...HOOKS, onConnection: join(ROOT, 'test/fixtures/watchdog/breaksAfterTwoLoads.ts') };
  await withScope({ workers: { threads: 2 }, hooks }, run);
}

for (const [how, reason] of [
  ['throw', /failed to start/],
  ['exit', /5 worker threads died within a minute before any hook ran on them/],
] as const) {
  test(`F5: replacement threads that ${how === 'throw' ? 'fail to load their hooks' : 'exit right after loading'} trip the breaker; the other thread serves on`, async (t) => {
    await withBreakingReplacements(how, async (s, scope) => {
      // Slot 0's thread dies; slot 1's survives.
      const [[dying], [surviving, way]] = (await place(s, [1, 2], scope)) as [[Placed], [Placed, Placed]];
      const survivor = surviving.first.threadId;
      const watching = scope.bystander(surviving);
      const died = await outcome(dying.conn.get('/die', dying.id), 10_000);
      assert.ok('status' in died && died.status === 502, JSON.stringify(died));
      const alert = await waitFor(() => s.logs.find((line) => line.event === 'worker-crash-loop'), 10_000, 'the alert');
      assert.equal(alert!.level, 50);
      assert.match(String(alert!.reason), reason);
      if (how === 'throw') {
        // Why the replacement failed: the hook-load message, its type kept across the thread.
        const failed = s.logs.find((line) => line.event === 'pool-error');
        const err = failed?.err as { type?: string; message?: string } | undefined;
        assert.equal(err?.type, 'ResidentError', JSON.stringify(failed));
        assert.match(String(err?.message), /^the onConnection hook failed to load \(RESIDENT_ERR_HOOK_LOAD\)\n[\s\S]*error: {2}Error: this hook module breaks on load 3\n  thrown: \S+breaksAfterTwoLoads\.ts:\d+:\d+ \(the hook module itself\)/);
      }
      assert.equal(s.server.pool.degraded, true);
      const ready = await way.conn.get('/readyz');
      assert.equal(ready.status, 503);
      assert.equal(ready.json().workers.crashLoop, true);
      const { requests, worstMs, failures } = await watching.stop();
      t.diagnostic(`bystander: ${requests} requests, worst ${Math.round(worstMs)} ms, ${failures.length} failures`);
      assert.deepEqual(failures, []);
      // Replacements starting and dying on 2 busy cores: far under stallTimeout + 1 s (11 s here).
      assert.ok(worstMs < 2_000, `the bystander waited ${Math.round(worstMs)} ms`);
      assert.deepEqual(s.server.pool.edges, [{ slot: 1, threadId: survivor }]);
      // A new client is served by the thread left.
      const newcomer = await way.conn.get('/inc');
      assert.equal(newcomer.status, 200, newcomer.text);
      assert.equal(newcomer.json<FixtureState>().threadId, survivor);
      const before = s.server.pool.threadIds.length;
      await sleep(500);
      assert.equal(s.server.pool.threadIds.length, before, 'no thread started after the breaker tripped');
    });
  });
}

/**
 * What became of the sessions homed on a slot that has no thread and will have none until a
 * restart. README: a lost thread's sessions "resume from their mementos" on their next request;
 * before the edges they resumed on the thread left. With the edges the slot is retired once the
 * breaker trips (src/server.ts retireDeadSlots), its sessions are homed on the next slot, and a
 * hop waiting for it stops waiting (src/edge/mesh.ts, 'retired').
 */
test('F5: once the breaker tripped, a session homed on the slot left without a thread is served at once by the thread left', async (t) => {
  await withBreakingReplacements('throw', async (s, scope) => {
    const [[dying], [surviving, way]] = (await place(s, [1, 2], scope)) as [[Placed], [Placed, Placed]];
    await outcome(dying.conn.get('/die', dying.id), 10_000);
    await waitFor(() => s.server.pool.degraded && s.server.pool.edges.length === 1, 10_000, 'the breaker tripped');
    const moved = await outcome(way.conn.get('/state', dying.id), 15_000);
    t.diagnostic(`the lost session's request: ${JSON.stringify(moved)}`);
    assert.ok('status' in moved && moved.status === 200, `the lost session's request: ${JSON.stringify(moved)}`);
    assert.ok(moved.ms < 1_000, `answered after ${Math.round(moved.ms)} ms`);
    assert.equal((JSON.parse(moved.text) as FixtureState).threadId, surviving.first.threadId, 'by the thread left');
  });
});

test('F5: once the breaker tripped and no thread is left, the main thread answers on the port: 503 before any session is made, and the probes', async () => {
  process.env.RESIDENT_TEST_LOADS = mkdtempSync(join(tmpdir(), 'resident-loads-'));
  process.env.RESIDENT_TEST_BREAK = 'throw';
  // One thread, and the next load is the third: the first replacement fails to load.
  writeFileSync(join(process.env.RESIDENT_TEST_LOADS, 'load-2'), '');
  const hooks = { ...HOOKS, onConnection: join(ROOT, 'test/fixtures/watchdog/breaksAfterTwoLoads.ts') };
  await withScope({ workers: { threads: 1 }, hooks }, async (s, scope) => {
    const [[only]] = (await place(s, [1], scope)) as [[Placed]];
    const died = await outcome(only.conn.get('/die', only.id), 10_000);
    assert.ok('status' in died && died.status === 502, JSON.stringify(died));
    await waitFor(() => s.server.pool.degraded && s.server.pool.threadIds.length === 0, 5000, 'the breaker tripped, no thread left');
    // Connections are refused until the main thread listens in the threads' stead.
    await waitFor(() => send(`${s.url}/readyz`).then((reply) => reply.status === 503, () => false), 5000, 'the main thread to listen');
    const before = structuredClone(s.server.sessions.stats);
    const ready = await send(`${s.url}/readyz`);
    assert.equal(ready.status, 503);
    assert.equal(ready.json().workers.crashLoop, true);
    assert.equal((await send(`${s.url}/healthz`)).status, 200);
    for (let i = 0; i < 50; i++) {
      const conn = scope.conn(s.url);
      const reply = await conn.get('/inc', i % 2 === 0 ? only.id : undefined);
      assert.equal(reply.status, 503);
      assert.match(reply.text, /./);
      assert.equal(reply.headers['retry-after'], '1');
      assert.deepEqual(reply.setCookies, []);
      await conn.close();
    }
    const after = s.server.sessions.stats;
    assert.deepEqual([after.created - before.created, after.lostSuspends - before.lostSuspends, after.suspendedKnown - before.suspendedKnown, after.live], [0, 0, 0, 0]);
    const log = s.logs.filter((line) => line.event === 'worker-crash-loop');
    assert.equal(log.length, 1);
  });
});
