/**
 * The store goes away mid-run and comes back (RELIABILITY.md E6, E7, scaled down from 30 s to a
 * few seconds), through the real server with the real stores. Nothing is mocked: the outages are
 * made by the kernel.
 *  - the file store's folder moved away (an unmounted volume) and moved back: reads and writes
 *    fail. Needs no privilege.
 *  - a full disk (a tiny tmpfs filled to the last page), for the file and the SQLite store:
 *    writes fail with ENOSPC, reads still work. Needs root (mount); skipped, saying why, without.
 *  - a store that does not answer at all: every thread of libuv's pool (which runs fs calls) is
 *    parked in open(2) on a FIFO no one writes to, the way a hung network mount parks them.
 * What must hold: idle suspends fail loudly and the contexts stay live, serving their state; no
 * request hangs; /readyz says 503 while the store is down; a request that needs the store gets
 * 503 rather than a silent fresh context; evictions the store refuses keep the context live; and
 * once the store is back the failed suspends are retried (every 5 s) and the sessions resume
 * from their mementos.
 * Store unreachable at startup (exit 2) for bad paths, a locked or corrupt database is in
 * startup.test.ts; the full disk at startup is here.
 */
import assert from 'node:assert/strict';
import { renameSync, rmSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, test, type TestContext } from 'node:test';
import { newSessionId } from '../../src/contexts/ids.ts';
import { hashId } from '../../src/log.ts';
import { Client, send, skipOrFailOnCi, waitFor, type LogLine, type Reply, type TestServer } from '../helpers.ts';
import { parkThreadPool as parkThreadsOfPool } from '../park-threadpool.ts';
import {
  cleanup,
  cliConfig,
  cliExit,
  cliLogs,
  describeChild,
  peekMemento,
  savedOf,
  startCli,
  startOn,
  tempDir,
  type DurableKind,
  type StoreState,
  type TempStore,
} from './server-helpers.ts';
import { fillUp, mountTmpfs as mountTmpfsInto } from './tmpfs.ts';

/** Every request during and after an outage is answered within this (E6: 503 within 2 s, never a hang). */
const ANSWER_BOUND_MS = 2_000;
const TEST = { timeout: 45_000 };

/** Cleanups (unmount, release), run last-in first-out in `after`, whatever happened. */
const cleanups: Array<() => void> = [];
const mountTmpfs = (size: string) => mountTmpfsInto(size, cleanups);

after(async () => {
  for (const undo of cleanups.splice(0).reverse()) {
    try {
      undo();
    } catch (error) {
      console.error('cleanup failed:', error);
    }
  }
  await cleanup();
});

/** A real outage of a real store, and what the server can still do during it. */
interface Outage {
  store: TempStore;
  start(): void;
  end(): void;
  /** The store cannot even read (a vanished folder); on a full disk it still can. */
  readsFail: boolean;
}

/** The file store's folder moved away (an unmounted volume) and back: records kept meanwhile. */
function folderMovedAway(): Outage {
  const dir = tempDir('resident-outage-');
  const store: TempStore = { kind: 'file', dir, path: join(dir, 'contexts') };
  const away = join(dir, 'moved-away');
  return {
    store,
    start: () => renameSync(store.path, away),
    end: () => renameSync(away, store.path),
    readsFail: true,
  };
}

/** The store on a 2 MB tmpfs that the test fills up, then empties. */
function diskFull(kind: DurableKind): Outage | string {
  const mount = mountTmpfs('2m');
  if (typeof mount === 'string') return mount;
  const store: TempStore = { kind, dir: mount.dir, path: join(mount.dir, kind === 'sqlite' ? 'contexts.db' : 'contexts') };
  let filler: string | undefined;
  return {
    store,
    start: () => void (filler = fillUp(mount.dir)),
    end: () => {
      unlinkSync(filler!);
      rmSync(join(mount.dir, 'probe'), { force: true });
    },
    readsFail: false,
  };
}

async function parkThreadPool(): Promise<{ release(): Promise<void> }> {
  const release = await parkThreadsOfPool();
  cleanups.push(() => void release());
  return { release };
}

/** Times every request a test makes, so it can assert none took longer than the bound. */
class Timed {
  readonly slowest: Array<{ what: string; ms: number }> = [];
  async get(client: Client, path: string, what = path): Promise<Reply> {
    const started = Date.now();
    const reply = await client.get(path);
    this.slowest.push({ what, ms: Date.now() - started });
    return reply;
  }
  async send(url: string, init: Parameters<typeof send>[1], what: string): Promise<Reply> {
    const started = Date.now();
    const reply = await send(url, init);
    this.slowest.push({ what, ms: Date.now() - started });
    return reply;
  }
  assertBounded(): void {
    const over = this.slowest.filter((entry) => entry.ms > ANSWER_BOUND_MS);
    assert.deepEqual(over, [], `every request answered within ${ANSWER_BOUND_MS} ms`);
  }
}

function stateOf(reply: Reply): StoreState {
  assert.equal(reply.status, 200, `expected 200, got ${reply.status}: ${reply.text}`);
  return reply.json<StoreState>();
}

const since = (t: TestServer, mark: number) => t.logs.slice(mark);
const dump = (lines: LogLine[]) => lines.map((line) => JSON.stringify(line)).join('\n');

/** The store refused an idle (or evicting) suspend of `id`: logged as an error, the context kept. */
const storeRefused = (id: string, reason: 'idle' | 'evicted') => (line: LogLine) =>
  line.event === 'hook-error' &&
  line.session === hashId(id) &&
  line.code === 'RESIDENT_ERR_STORE_FAILED' &&
  line.hook === `onSessionSuspend(ctx, '${reason}')`;

const suspendedLine = (id: string, reason: string) => (line: LogLine) =>
  line.event === 'suspended' && line.session === hashId(id) && line.reason === reason;

/** A 503 for want of the store: short body, Retry-After, and no cookie of any kind. */
function assertStoreUnavailable(reply: Reply, what: string): void {
  assert.equal(reply.status, 503, `${what}: ${reply.status} ${reply.text}`);
  assert.equal(reply.text, 'Session storage is unavailable. Please retry shortly.', what);
  assert.equal(reply.headers['retry-after'], '1', what);
  assert.deepEqual(reply.setCookies, [], `${what}: no cookie, so the browser keeps the one it has`);
}

async function readyz(timed: Timed, t: TestServer) {
  const reply = await timed.send(`${t.url}/readyz`, {}, '/readyz');
  return { status: reply.status, body: reply.json<{ status: string; store: { kind: string; status: string } }>() };
}

/**
 * /readyz answers from the store's latest background ping (one about every second, given up
 * after 1 s), so it turns within about 2 s of a change; every probe meanwhile is timed.
 */
async function readyzUntil(timed: Timed, t: TestServer, status: number) {
  const found = await waitFor(async () => {
    const answer = await readyz(timed, t);
    return answer.status === status ? answer : undefined;
  }, 4000, `/readyz ${status}`);
  return found!;
}

/**
 * One outage, scaled down. S is suspended before it (its memento n=2 in the store); A is live
 * when it starts (n=3). During it: A's idle suspend is refused and A stays live, serving n=4;
 * /readyz says 503; S and an unknown ID get 503 when the store cannot be read. After it: the
 * retried suspend of A succeeds within the 5 s retry, /readyz is 200, and both sessions resume
 * from their mementos.
 */
async function throughOutage(t: TestContext, make: () => Outage | string, options: { secondFailure?: boolean } = {}): Promise<void> {
  const outage = make();
  if (typeof outage === 'string') {
    skipOrFailOnCi(t, outage);
    return;
  }
  const { store } = outage;
  const server = await startOn(store, { sessions: { processTimeout: '1s' }, log: { level: 'info' } });
  const timed = new Timed();
  const s = new Client(server.url);
  const a = new Client(server.url);
  const { sessions } = server.server;
  try {
    stateOf(await timed.get(s, '/inc'));
    const sId = stateOf(await timed.get(s, '/inc')).id;
    await waitFor(async () => (await sessions.info(sId))?.state === 'suspended', 4000, "S's idle suspend");
    assert.equal(peekMemento(store, sId)?.data.n, 2);

    let aState: StoreState | undefined;
    for (let i = 0; i < 3; i++) aState = stateOf(await timed.get(a, '/inc'));
    const aId = aState!.id;

    outage.start();
    const mark = server.logs.length;
    const created = server.server.sessions.stats.created;

    // Readiness says so within about 2 s (the next background ping fails), and /healthz still answers.
    const notReady = await readyzUntil(timed, server, 503);
    assert.equal(notReady.status, 503, JSON.stringify(notReady.body));
    assert.deepEqual(notReady.body, { status: 'not ready', workers: { up: 1, expected: 1 }, store: { kind: store.kind, status: 'unreachable' } });
    assert.equal((await timed.send(`${server.url}/healthz`, {}, '/healthz')).status, 200);

    // A's idle suspend (1 s after its last request) is refused by the store: loudly, and A stays live.
    const refused = await waitFor(async () => since(server, mark).find(storeRefused(aId, 'idle')), 4000, "A's refused idle suspend").catch(
      (error: Error) => assert.fail(`${error.message}\n${dump(since(server, mark))}`),
    );
    assert.ok(refused && refused.level >= 50, JSON.stringify(refused));
    t.diagnostic(`the store refused: ${JSON.stringify((refused.err as { message?: string }).message)}`);
    assert.equal((await sessions.info(aId))?.state, 'live');
    const during = stateOf(await timed.get(a, '/inc', 'A during the outage'));
    assert.deepEqual(
      { id: during.id, resumed: during.resumed, isNew: during.isNew, requests: during.requests, n: during.data.n },
      { id: aId, resumed: false, isNew: false, requests: 4, n: 4 },
      'the same live context, its variables as they were',
    );

    if (outage.readsFail) {
      // E6: what needs the store gets 503 in bounded time, never a silent fresh context.
      assertStoreUnavailable(await timed.get(s, '/state', 'S (suspended) during the outage'), 'resuming S');
      assert.equal((await sessions.info(sId))?.state, 'suspended', 'S is still suspended, not forgotten');
      const unknown = newSessionId();
      const reply = await timed.send(`${server.url}/state`, { headers: { cookie: `RSID=${unknown}` } }, 'an unknown ID during the outage');
      assertStoreUnavailable(reply, 'an ID this process does not know');
      assert.equal(server.server.sessions.stats.created, created, 'no session created for it');
    } else {
      // A full disk still reads: S resumes from its memento, and an unknown ID is looked up,
      // found missing, and gets a new session (strict mode), as when the store is healthy.
      const resumed = stateOf(await timed.get(s, '/inc', 'S during the outage'));
      assert.deepEqual({ id: resumed.id, resumed: resumed.resumed, n: resumed.data.n }, { id: sId, resumed: true, n: 3 });
      const unknown = newSessionId();
      const reply = await timed.send(`${server.url}/state`, { headers: { cookie: `RSID=${unknown}` } }, 'an unknown ID during the outage');
      const fresh = stateOf(reply);
      assert.notEqual(fresh.id, unknown, 'never adopted');
      assert.equal(fresh.resumed, false);
    }

    if (options.secondFailure) {
      // The outage lasts: the retry 5 s later is refused too, and A is still the same context.
      await waitFor(async () => since(server, mark).filter(storeRefused(aId, 'idle')).length >= 2, 9000, 'the second refused attempt');
      const still = stateOf(await timed.get(a, '/state', 'A later in the outage'));
      assert.deepEqual({ id: still.id, resumed: still.resumed, requests: still.requests, n: still.data.n }, { id: aId, resumed: false, requests: 5, n: 4 });
    }
    assert.deepEqual(since(server, mark).filter(suspendedLine(aId, 'idle')), [], 'nothing reported suspended during the outage');
    assert.equal(server.server.sessions.stats.lostSuspends, 0);

    outage.end();
    const back = server.logs.length;
    // The failed suspend is retried (every 5 s) and succeeds, with no restart.
    await waitFor(async () => since(server, back).find(suspendedLine(aId, 'idle')), 9000, "A's retried idle suspend").catch((error: Error) =>
      assert.fail(`${error.message}\n${dump(since(server, back))}`),
    );
    assert.equal(peekMemento(store, aId)?.data.n, 4, "A's memento is in the store");
    const ready = await readyzUntil(timed, server, 200);
    assert.equal(ready.body.status, 'ready');

    const aBack = stateOf(await timed.get(a, '/state', 'A after the outage'));
    assert.deepEqual({ id: aBack.id, resumed: aBack.resumed, n: aBack.data.n, requests: aBack.requests }, { id: aId, resumed: true, n: 4, requests: 1 });
    assert.equal(savedOf(aBack).data.n, 4);
    const sBack = stateOf(await timed.get(s, '/state', 'S after the outage'));
    assert.equal(sBack.id, sId);
    assert.equal(sBack.data.n, outage.readsFail ? 2 : 3, 'S has its state');
    timed.assertBounded();
  } finally {
    await s.close();
    await a.close();
    await server.close();
  }
}

describe('E7: the store fails mid-run, then comes back', () => {
  test('file store, folder moved away for two retry rounds: contexts stay live, 503 for what needs the store, all recovered', TEST, (t) =>
    throughOutage(t, folderMovedAway, { secondFailure: true }),
  );
  test('file store, disk full: suspends refused, contexts stay live, /readyz 503; recovered when space returns', TEST, (t) =>
    throughOutage(t, () => diskFull('file')),
  );
  test('sqlite store, disk full: suspends refused, contexts stay live; recovered when space returns', TEST, (t) =>
    throughOutage(t, () => diskFull('sqlite')),
  );
});

describe('E4/E7: an eviction the store refuses', () => {
  test('maxContexts 1: the evicted context stays live (the cap is exceeded meanwhile), nothing lost; evictions work again after', TEST, async (t) => {
    const outage = folderMovedAway();
    const server = await startOn(outage.store, { sessions: { maxContexts: 1, processTimeout: 0 }, log: { level: 'info' } });
    const { sessions } = server.server;
    const timed = new Timed();
    const [a, b, c] = [new Client(server.url), new Client(server.url), new Client(server.url)];
    try {
      stateOf(await timed.get(a, '/inc'));
      const aId = stateOf(await timed.get(a, '/inc')).id;
      outage.start();
      const mark = server.logs.length;

      // B needs room: A is evicted, the store refuses the write, and A stays live.
      const bId = stateOf(await timed.get(b, '/inc', 'B during the outage')).id;
      await waitFor(async () => since(server, mark).find(storeRefused(aId, 'evicted')), 4000, "A's refused eviction").catch((error: Error) =>
        assert.fail(`${error.message}\n${dump(since(server, mark))}`),
      );
      await waitFor(async () => (await sessions.info(aId))?.state === 'live', 2000, 'A live again');
      assert.equal(sessions.stats.live, 2, 'the cap is exceeded rather than a memento lost');
      const aDuring = stateOf(await timed.get(a, '/inc', 'A during the outage'));
      assert.deepEqual({ id: aDuring.id, resumed: aDuring.resumed, requests: aDuring.requests, n: aDuring.data.n }, { id: aId, resumed: false, requests: 3, n: 3 });
      assert.equal(sessions.stats.lostSuspends, 0);
      assert.deepEqual(since(server, mark).filter((line) => line.event === 'suspended'), []);

      outage.end();
      const back = server.logs.length;
      // C needs room: the least recently active idle context (B) is evicted, and this time it sticks.
      stateOf(await timed.get(c, '/inc', 'C after the outage'));
      await waitFor(async () => since(server, back).find(suspendedLine(bId, 'evicted')), 4000, "B's eviction").catch((error: Error) =>
        assert.fail(`${error.message}\n${dump(since(server, back))}`),
      );
      assert.equal(peekMemento(outage.store, bId)?.data.n, 1);
      t.diagnostic(`live contexts after the first eviction that sticks: ${sessions.stats.live} (maxContexts 1)`);
      const bBack = stateOf(await timed.get(b, '/state', 'B after the outage'));
      assert.deepEqual({ id: bBack.id, resumed: bBack.resumed, n: bBack.data.n }, { id: bId, resumed: true, n: 1 });
      const aBack = stateOf(await timed.get(a, '/state', 'A after the outage'));
      assert.equal(aBack.id, aId);
      assert.equal(aBack.data.n, 3, 'A has its state, live or resumed');
      assert.equal(sessions.stats.lostSuspends, 0);
      timed.assertBounded();
    } finally {
      for (const client of [a, b, c]) await client.close();
      await server.close();
    }
  });

  test(
    'once the store takes writes again, live contexts come back within maxContexts',
    TEST,
    async () => {
      const outage = folderMovedAway();
      const server = await startOn(outage.store, { sessions: { maxContexts: 1, processTimeout: 0 }, log: { level: 'info' } });
      const { sessions } = server.server;
      const clients = [new Client(server.url), new Client(server.url), new Client(server.url)];
      try {
        stateOf(await clients[0]!.get('/inc'));
        outage.start();
        stateOf(await clients[1]!.get('/inc'));
        await waitFor(async () => sessions.stats.live === 2 && sessions.stats.suspended.failed === 1, 4000, 'the refused eviction');
        outage.end();
        // The store takes writes again; the next admission makes room.
        stateOf(await clients[2]!.get('/inc'));
        await waitFor(async () => sessions.stats.suspended.evicted >= 1, 4000, 'an eviction that sticks');
        await new Promise((resolve) => setTimeout(resolve, 500));
        assert.ok(sessions.stats.live <= 1, `${sessions.stats.live} live contexts with maxContexts 1`);
      } finally {
        for (const client of clients) await client.close();
        await server.close();
      }
    },
  );
});

describe('the cap during an outage', () => {
  test(
    'each new client costs at most two refused evictions, not one per context over the cap',
    TEST,
    async () => {
      const outage = folderMovedAway();
      const server = await startOn(outage.store, { sessions: { maxContexts: 1, processTimeout: 0 }, log: { level: 'info' } });
      const { sessions } = server.server;
      const clients = Array.from({ length: 5 }, () => new Client(server.url));
      const settled = () => sessions.stats.suspending === 0;
      try {
        stateOf(await clients[0]!.get('/inc'));
        outage.start();
        const refusedPerClient: number[] = [];
        for (const c of clients.slice(1)) {
          const before = sessions.stats.suspended.failed;
          stateOf(await c.get('/inc'));
          await waitFor(async () => settled() && sessions.stats.suspended.failed > before, 4000, 'the refused evictions');
          refusedPerClient.push(sessions.stats.suspended.failed - before);
        }
        // Every context stays live over the cap (no memento lost), and the 4th newcomer did not
        // make the store refuse four writes.
        assert.equal(sessions.stats.live, 5);
        assert.ok(refusedPerClient.every((n) => n <= 2), `refused evictions per new client: ${refusedPerClient.join(', ')}`);
        outage.end();
      } finally {
        for (const client of clients) await client.close();
        await server.close();
      }
    },
  );
});

describe('E6: a store that does not answer at all', () => {
  test(
    'a request that needs the store gets 503 within 2 s, not a hang',
    TEST,
    async () => {
      const store: TempStore = (() => {
        const dir = tempDir('resident-outage-');
        return { kind: 'file', dir, path: join(dir, 'contexts') };
      })();
      const server = await startOn(store, { sessions: { processTimeout: '1s' }, log: { level: 'info' } });
      const s = new Client(server.url);
      let parked: { release(): Promise<void> } | undefined;
      try {
        const sId = stateOf(await s.get('/inc')).id;
        await waitFor(async () => (await server.server.sessions.info(sId))?.state === 'suspended', 4000, "S's idle suspend");
        parked = await parkThreadPool();
        const outcome = (request: Promise<Reply>) =>
          Promise.race([
            request.then((reply) => reply.status),
            new Promise<string>((resolve) => setTimeout(() => resolve('no answer'), ANSWER_BOUND_MS + 500)),
          ]);
        const [unknown, resume] = await Promise.all([
          outcome(send(`${server.url}/state`, { headers: { cookie: `RSID=${newSessionId()}` } })),
          outcome(s.get('/state')),
        ]);
        assert.deepEqual({ unknown, resume }, { unknown: 503, resume: 503 });
        // The background ping is given up on after 1 s; every probe meanwhile answers at once.
        const timed = new Timed();
        await readyzUntil(timed, server, 503);
        timed.assertBounded();
      } finally {
        await parked?.release();
        await s.close();
        await server.close();
      }
    },
  );
});

describe('readiness of a SQLite store on a full disk', () => {
  test(
    '/readyz says 503 while every write fails',
    TEST,
    async (t) => {
      const outage = diskFull('sqlite');
      if (typeof outage === 'string') {
        skipOrFailOnCi(t, outage);
        return;
      }
      const server = await startOn(outage.store, { log: { level: 'info' } });
      try {
        outage.start();
        const timed = new Timed();
        try {
          await readyzUntil(timed, server, 503);
        } finally {
          outage.end();
        }
        timed.assertBounded();
      } finally {
        await server.close();
      }
    },
  );
});

describe('E6: a full disk at startup', () => {
  for (const kind of ['file', 'sqlite'] as const) {
    test(`${kind}: exit 2 with a message naming the store, nothing listening`, TEST, async (t) => {
      const mount = mountTmpfs('1m');
      if (typeof mount === 'string') {
        skipOrFailOnCi(t, mount);
        return;
      }
      const path = join(mount.dir, kind === 'sqlite' ? 'contexts.db' : 'contexts');
      fillUp(mount.dir);
      const child = startCli(cliConfig(null, { store: { kind, path } }));
      assert.equal(await cliExit(child, 20_000), 2, describeChild(child));
      assert.ok(!cliLogs(child).some((line) => line.event === 'started'), 'nothing listened');
      const stderr = child.stderr();
      assert.ok(stderr.includes(path), stderr);
      assert.match(stderr, kind === 'sqlite' ? /Cannot open the SQLite store .*(disk is full|disk I\/O)/ : /Cannot use the file store folder .*ENOSPC/);
    });
  }
});
