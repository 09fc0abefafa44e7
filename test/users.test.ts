/**
 * Logins and users against real servers (real worker threads, real sockets, undici, real
 * stores): ctx.regenerate() (RELIABILITY.md A5, its log lines A13), regenerate while requests of
 * the session are in flight, the stored record following the new ID (suspend/resume, checkpoint,
 * restart, kill -9), ctx.userId and server.sessions.sessionsOfUser / closeUser / closeSession
 * over live, suspended and store-only sessions on every store kind, ctx.closeOtherSessions(),
 * and sessions.maxPerUser.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { BroadcastChannel } from 'node:worker_threads';
import { after, describe, test } from 'node:test';
import type { ResidentConfigInput } from '../src/config.ts';
import { decodeMemento, encodeMemento } from '../src/contexts/memento.ts';
import { newSessionId } from '../src/contexts/ids.ts';
import type { SessionInfo } from '../src/sessions/index.ts';
import { hashId } from '../src/log.ts';
import { MemoryStore } from '../src/stores/memory.ts';
import type { ListQuery, SessionRecord, SessionSummary } from '../src/stores/store.ts';
import type { UsersState } from './fixtures/users/onConnection.ts';
import { USERS_SUSPEND_CHANNEL, type UsersMemento, type UsersSuspendCall } from './fixtures/users/onSessionSuspend.ts';
import { Client, ROOT, send, startTestServer, waitFor, type Reply, type TestServer } from './helpers.ts';
import { record as storedRecord } from './stores/contract.ts';
import { cleanup, cliConfig, cliReady, peek, startCli, tempStore, type StoreKind } from './stores/server-helpers.ts';

const USERS_HOOKS = {
  onConnection: join(ROOT, 'test/fixtures/users/onConnection.ts'),
  onSessionSuspend: join(ROOT, 'test/fixtures/users/onSessionSuspend.ts'),
};
/**
 * The shipped MemoryStore with a misbehaving medium: deletes that hang until released, or one
 * write refused, as a stuck or failing disk would do to a durable store.
 */
class FaultyMemoryStore extends MemoryStore {
  #held: Promise<void> | null = null;
  #failSet = false;
  heldDeletes = 0;
  holdDeletes(): { release(): void } {
    let release!: () => void;
    this.#held = new Promise((resolve) => (release = resolve));
    return {
      release: () => {
        this.#held = null;
        release();
      },
    };
  }
  failNextSet(): void {
    this.#failSet = true;
  }
  #failList = false;
  failLists(on: boolean): void {
    this.#failList = on;
  }
  override async list(query: ListQuery): Promise<SessionSummary[]> {
    if (this.#failList) throw new Error('listing refused (test fault)');
    return super.list(query);
  }
  override async set(record: SessionRecord): Promise<void> {
    if (this.#failSet) {
      this.#failSet = false;
      throw new Error('write refused (test fault)');
    }
    return super.set(record);
  }
  override async delete(id: string): Promise<void> {
    if (this.#held) {
      this.heldDeletes++;
      await this.#held;
    }
    return super.delete(id);
  }
}

const KINDS: StoreKind[] = ['memory', 'file', 'sqlite'];
/** An issued session ID: 22 random characters, then 2 naming its home slot (src/contexts/ids.ts). */
const ID_SHAPE = /^[A-Za-z0-9_-]{22}[A-Za-z0-9_-]{2}$/;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Every server a test starts is shut down here even when the test failed half-way. */
const servers = new Set<TestServer>();
after(async () => {
  await Promise.all([...servers].map((s) => s.close()));
  suspendCalls.close();
  await cleanup();
});

async function track(started: Promise<TestServer>): Promise<TestServer> {
  const t = await started;
  servers.add(t);
  return t;
}

async function stop(t: TestServer): Promise<void> {
  servers.delete(t);
  await t.close();
}

/** Every onSessionSuspend call of the users fixture, from every worker thread of every server. */
const suspendCalls = (() => {
  const calls: UsersSuspendCall[] = [];
  const channel = new BroadcastChannel(USERS_SUSPEND_CHANNEL);
  channel.onmessage = (event) => calls.push((event as MessageEvent).data as UsersSuspendCall);
  channel.unref();
  return {
    /**
     * Asserts the hook's calls for `id`. The channel is not the reply's path, so a call may be
     * reported just after the operation that made it returned: wait for it first.
     */
    async expect(id: string, reasons: string[], message?: string): Promise<void> {
      const of = () => calls.filter((call) => call.id === id).map((call) => call.reason);
      await waitFor(async () => of().length >= reasons.length, 2000, `${reasons.length} onSessionSuspend call(s)`).catch(() => {});
      assert.deepEqual(of(), reasons, message);
    },
    close: () => channel.close(),
  };
})();

/**
 * A store kind the tests start servers on. `record` reads the store behind the server's back
 * (durable: a second SQLite connection or the record file; memory: the instance the server
 * uses). A memory store forgets everything on shutdown, so "restart" needs a durable one.
 */
interface Backing {
  kind: StoreKind;
  durable: boolean;
  start(overrides?: ResidentConfigInput): Promise<TestServer>;
  record(id: string): Promise<SessionRecord | undefined>;
  /** The memory store the running server uses (memory kind only). */
  memory(): MemoryStore;
}

function backing(kind: StoreKind): Backing {
  const config = (overrides: ResidentConfigInput, store: ResidentConfigInput['store']): ResidentConfigInput => ({
    workers: { threads: 2 },
    ...overrides,
    hooks: { ...USERS_HOOKS, ...overrides.hooks },
    store,
  });
  if (kind === 'memory') {
    let store = new MemoryStore();
    return {
      kind,
      durable: false,
      start: (overrides = {}) => {
        store = new MemoryStore();
        return track(startTestServer(config(overrides, { kind: 'memory' }), undefined, store));
      },
      record: (id) => store.get(id),
      memory: () => store,
    };
  }
  const temp = tempStore(kind);
  return {
    kind,
    durable: true,
    start: (overrides = {}) => track(startTestServer(config(overrides, { kind, path: temp.path }))),
    record: async (id) => peek(temp, id),
    memory: () => {
      throw new Error(`not a memory store: ${kind}`);
    },
  };
}

function mementoOf(record: SessionRecord | undefined): UsersMemento | undefined {
  if (!record) return undefined;
  assert.equal(typeof record.memento, 'string', `a record without a memento: ${JSON.stringify(record)}`);
  return decodeMemento(record.memento!) as UsersMemento;
}

async function stateOf(client: Client, path = '/state'): Promise<UsersState & { reply: Reply }> {
  const reply = await client.get(path);
  if (reply.status !== 200) throw new Error(`${path} answered ${reply.status}: ${reply.text}`);
  return { ...reply.json<UsersState>(), reply };
}

/** A client that presents `cookie`, like a browser that kept it (or an attacker who copied it). */
function withCookie(url: string, cookie: string): Client {
  const client = new Client(url);
  client.cookie = cookie;
  return client;
}

/** The values our cookie is set to in a reply (every Set-Cookie line for RSID). */
function cookieValues(reply: Reply): string[] {
  return reply.setCookies.filter((line) => line.startsWith('RSID=')).map((line) => line.slice(5, line.indexOf(';') === -1 ? undefined : line.indexOf(';')));
}

async function login(client: Client, user: string): Promise<UsersState> {
  const s = await stateOf(client, `/login?user=${user}`);
  assert.equal(s.userId, user);
  return s;
}

/** IDs of a user's sessions as the server lists them, sorted. */
async function idsOf(t: TestServer, user: string): Promise<string[]> {
  return (await t.server.sessions.sessionsOfUser(user)).map((info) => info.id).sort();
}

function byId(infos: SessionInfo[]): Map<string, SessionInfo> {
  return new Map(infos.map((info) => [info.id, info]));
}

/** A13: no raw ID in any log line, in the raw text or in any parsed field. */
function assertNoRawIds(t: TestServer, ids: string[]): void {
  const raw = t.rawLogs();
  assert.ok(t.logs.length > 0, 'the server logged something');
  for (const id of ids) {
    assert.ok(!raw.includes(id), `a raw session ID appears in the logs: ${raw.split('\n').find((line) => line.includes(id))}`);
    for (const line of t.logs) assert.ok(!JSON.stringify(line).includes(id), `a raw session ID in ${JSON.stringify(line)}`);
  }
}

// ---------------------------------------------------------------------------------------------
// ctx.regenerate()

describe('ctx.regenerate() (A5)', { timeout: 60_000 }, () => {
  test('a new ID in exactly one Set-Cookie; the same context, vars and thread; the old ID is dead; logs carry hashes only', async () => {
    const t = await backing('memory').start();
    const client = new Client(t.url);
    const first = await stateOf(client, '/inc');
    await stateOf(client, '/inc');
    await stateOf(client, '/tag?value=kept');
    const oldId = client.cookie!;
    assert.equal(first.id, oldId);

    const regen = await client.get('/regenerate');
    assert.equal(regen.status, 200);
    assert.equal(regen.setCookies.length, 1, `exactly one Set-Cookie: ${JSON.stringify(regen.setCookies)}`);
    const [newId] = cookieValues(regen);
    assert.ok(newId, `the Set-Cookie is ours: ${regen.setCookies[0]}`);
    assert.match(newId, ID_SHAPE);
    assert.notEqual(newId, oldId);
    assert.equal(client.cookie, newId);
    // During the regenerating request the hook still reads the old ID.
    assert.equal(regen.json<UsersState>().id, oldId);

    // The next request: the new ID, the same live context (vars, born token, thread).
    const next = await stateOf(client, '/inc');
    assert.equal(next.id, newId);
    assert.equal(next.idHash, hashId(newId));
    assert.equal(next.n, 3);
    assert.equal(next.tag, 'kept');
    assert.equal(next.born, first.born, 'the same context object, not a new one');
    assert.equal(next.threadId, first.threadId);
    assert.equal(next.isNew, false);
    assert.equal(next.resumed, false);
    assert.deepEqual(cookieValues(next.reply), [newId], 'the renewed cookie carries the new ID');

    // The old ID, presented again (a fixated or stolen cookie): a brand-new session.
    const replay = await stateOf(withCookie(t.url, oldId));
    assert.notEqual(replay.id, oldId);
    assert.notEqual(replay.id, newId);
    assert.deepEqual(cookieValues(replay.reply), [replay.id]);
    assert.equal(replay.n, 0);
    assert.equal(replay.tag, null);
    assert.notEqual(replay.born, first.born);
    assert.equal(replay.isNew, true);
    assert.equal(replay.resumed, false);
    const replay2 = await stateOf(withCookie(t.url, oldId));
    assert.ok(![oldId, newId, replay.id].includes(replay2.id), 'the old ID is never adopted');

    assert.equal((await t.server.sessions.info(oldId)), undefined);
    assert.equal((await t.server.sessions.info(newId))?.state, 'live');
    assert.equal(t.server.sessions.stats.regenerated, 1);
    // The regenerated client carries on undisturbed.
    const later = await stateOf(client);
    assert.equal(later.id, newId);
    assert.equal(later.n, 3);
    assert.equal(later.born, first.born);

    const regenerated = t.logs.filter((line) => line.event === 'regenerated');
    assert.equal(regenerated.length, 1);
    assert.equal(regenerated[0]!.session, hashId(newId));
    assert.equal(regenerated[0]!.previous, hashId(oldId));
    const unknown = t.logs.filter((line) => line.event === 'unknown-id');
    assert.ok(
      unknown.some((line) => Array.isArray(line.presented) && line.presented.includes(hashId(oldId))),
      'the old ID presented again is logged as unknown (by its hash)',
    );
    assertNoRawIds(t, [oldId, newId, replay.id, replay2.id]);
    await stop(t);
  });

  test('regenerate while requests of the session are in flight: all answered in order on one context, only the regenerating one carries the new cookie', async () => {
    const t = await backing('memory').start();
    const sessions = t.server.sessions;
    const client = new Client(t.url);
    const first = await stateOf(client);
    const oldId = client.cookie!;
    // Read under the old ID for as long as it names the session (until the regenerate runs).
    const admitted = async () => (await sessions.info(oldId))!.requests! - 1; // requests admitted after the first one
    const asOld = (ms: number) => send(`${t.url}/slow-inc?ms=${ms}`, { headers: { cookie: `RSID=${oldId}` } });

    // Five queued before the regenerate, five after it, all presenting the old cookie and all
    // admitted before the regenerate runs (it waits behind 5 × 500 ms, time enough on a loaded machine).
    // Each is sent once the one before it was admitted: with an edge on every thread, requests
    // sent at once on several connections reach the session's home in any order (some hop).
    const inOrder = async (count: number, ms: number, already: number) => {
      const replies: Array<Promise<Reply>> = [];
      for (let i = 1; i <= count; i++) {
        replies.push(asOld(ms));
        await waitFor(async () => (await admitted()) === already + i, 5000, `request ${already + i} admitted`);
      }
      return replies;
    };
    const before = await inOrder(5, 500, 0);
    const regen = send(`${t.url}/regenerate`, { headers: { cookie: `RSID=${oldId}` } });
    await waitFor(async () => (await admitted()) === 6, 5000, 'the regenerate admitted');
    const afterwards = await inOrder(5, 20, 6);
    assert.equal((await sessions.info(oldId))?.id, oldId, 'still the old ID while the regenerate waits its turn');
    assert.equal((await sessions.info(oldId))?.inFlight, 11, 'all eleven in flight at once');

    const early = await Promise.all(before);
    const regenReply = await regen;
    const late = await Promise.all(afterwards);
    for (const reply of [...early, regenReply, ...late]) assert.equal(reply.status, 200, reply.text);
    const [newId] = cookieValues(regenReply);
    assert.ok(newId && newId !== oldId);
    for (const reply of early) assert.deepEqual(cookieValues(reply), [oldId], 'answered before the regenerate: the old ID');
    // Only the regenerating response hands out the new ID: a client still holding the old one
    // (perhaps a fixated one) never learns it, and no late renewal of the old ID overwrites it.
    for (const reply of late) assert.deepEqual(cookieValues(reply), [], 'answered after the regenerate: no cookie at all');
    // One context ran them one at a time, in arrival order: n = 1..5 then 6..10.
    assert.deepEqual(
      early.map((reply) => reply.json<UsersState>().n),
      [1, 2, 3, 4, 5],
    );
    assert.deepEqual(
      late.map((reply) => reply.json<UsersState>().n),
      [6, 7, 8, 9, 10],
    );
    for (const reply of [...early, ...late]) assert.equal(reply.json<UsersState>().born, first.born);

    const next = await stateOf(withCookie(t.url, newId));
    assert.equal(next.id, newId);
    assert.equal(next.n, 10);
    assert.equal(next.born, first.born);
    // No request was lost to a 'gone' context and retried as a new session.
    assert.equal(sessions.stats.created, 1, 'no other session was created');
    assert.equal(t.logs.filter((line) => line.event === 'worker-lost' || line.event === 'hook-error').length, 0);
    assertNoRawIds(t, [oldId, newId]);
    await stop(t);
  });

  for (const kind of KINDS) {
    test(`${kind} store: a suspended and resumed session regenerates; its record moves to the new ID and the old ID finds nothing`, async () => {
      const b = backing(kind);
      const t = await b.start({ sessions: { processTimeout: '1h' } });
      const client = new Client(t.url);
      await stateOf(client, '/inc');
      await stateOf(client, '/inc');
      await stateOf(client, '/tag?value=kept');
      const oldId = client.cookie!;
      assert.equal(await t.server.sessions.suspendSession(oldId), 'suspended');
      assert.deepEqual(mementoOf(await b.record(oldId)), { n: 2, tag: 'kept', userId: null });

      const resumed = await stateOf(client);
      assert.equal(resumed.resumed, true);
      assert.equal(resumed.id, oldId);
      assert.equal(resumed.n, 2);

      const regen = await client.get('/regenerate');
      assert.equal(regen.status, 200);
      const [newId] = cookieValues(regen);
      assert.ok(newId && newId !== oldId);
      // Moved before the response was sent.
      assert.equal(await b.record(oldId), undefined, 'no record under the old ID');
      assert.deepEqual(mementoOf(await b.record(newId)), { n: 2, tag: 'kept', userId: null }, 'the memento moved to the new ID');

      const live = await stateOf(client, '/inc');
      assert.equal(live.id, newId);
      assert.equal(live.n, 3);
      assert.equal(live.born, resumed.born, 'the same context');

      assert.equal(await t.server.sessions.suspendSession(newId), 'suspended');
      assert.deepEqual(mementoOf(await b.record(newId)), { n: 3, tag: 'kept', userId: null });
      assert.equal(await b.record(oldId), undefined);
      await suspendCalls.expect(newId, ['admin'], 'the hook saw the new ID at the second suspend');

      const again = await stateOf(client);
      assert.equal(again.id, newId);
      assert.equal(again.resumed, true);
      assert.equal(again.isNew, true);
      assert.deepEqual(again.saved, { n: 3, tag: 'kept', userId: null });
      assert.equal(again.n, 3);
      assert.notEqual(again.born, live.born, 'a new context, restored from the memento');

      const stale = await stateOf(withCookie(t.url, oldId));
      assert.ok(stale.id !== oldId && stale.id !== newId);
      assert.equal(stale.resumed, false);
      assert.equal(stale.saved, null);
      assert.equal(stale.n, 0);

      await stateOf(client, '/inc'); // n = 4, saved by the shutdown suspend
      assertNoRawIds(t, [oldId, newId, stale.id]);
      await stop(t);
      if (!b.durable) return;

      // After a restart on the same store: the new ID resumes, the old one finds nothing.
      const t2 = await b.start();
      assert.equal(await b.record(oldId), undefined);
      const back = await stateOf(withCookie(t2.url, newId));
      assert.equal(back.id, newId);
      assert.equal(back.resumed, true);
      assert.equal(back.n, 4);
      assert.equal(back.tag, 'kept');
      const gone = await stateOf(withCookie(t2.url, oldId));
      assert.ok(gone.id !== oldId && gone.id !== newId);
      assert.equal(gone.resumed, false);
      assert.equal(gone.n, 0);
      assert.equal(t2.server.sessions.stats.adopted, 1, 'only the new ID was found in the store');
      await stop(t2);
    });
  }

  for (const kind of ['sqlite', 'file'] as const) {
    test(`${kind} store, CLI: a checkpointed session regenerates, the checkpoints follow the new ID, and after kill -9 the new ID resumes`, { timeout: 60_000 }, async () => {
      const store = tempStore(kind);
      const config = { ...cliConfig(store, { sessions: { checkpointInterval: '50ms' } }), hooks: USERS_HOOKS, workers: { threads: 2 } };
      const child = startCli(config);
      const url = await cliReady(child);
      const client = new Client(url);
      const first = await stateOf(client, '/inc');
      await stateOf(client, '/inc');
      await stateOf(client, '/tag?value=cp');
      const oldId = client.cookie!;
      await waitFor(async () => mementoOf(peek(store, oldId))?.tag === 'cp', 5000, 'the checkpoint under the old ID');

      const regen = await client.get('/regenerate');
      assert.equal(regen.status, 200);
      const [newId] = cookieValues(regen);
      assert.ok(newId && newId !== oldId);
      assert.equal(peek(store, oldId), undefined, 'the checkpoint left the old ID with the response');
      assert.deepEqual(mementoOf(peek(store, newId)), { n: 2, tag: 'cp', userId: null });

      const live = await stateOf(client, '/inc');
      assert.equal(live.id, newId);
      assert.equal(live.born, first.born);
      await waitFor(async () => mementoOf(peek(store, newId))?.n === 3, 5000, 'a checkpoint under the new ID');
      await sleep(200); // several more checkpoint intervals: none writes the old ID back
      assert.equal(peek(store, oldId), undefined);

      child.process.kill('SIGKILL');
      await child.exited;
      const child2 = startCli(config);
      const url2 = await cliReady(child2);
      const back = await stateOf(withCookie(url2, newId));
      assert.equal(back.id, newId);
      assert.equal(back.resumed, true);
      assert.deepEqual(back.saved, { n: 3, tag: 'cp', userId: null });
      assert.equal(back.n, 3);
      const gone = await stateOf(withCookie(url2, oldId));
      assert.ok(gone.id !== oldId && gone.id !== newId);
      assert.equal(gone.resumed, false);
      assert.equal(gone.n, 0);
      assert.equal(peek(store, oldId), undefined);
      child2.process.kill('SIGKILL');
      await child2.exited;
    });
  }

  test('the old ID is never adopted back: not while its record is being moved, not when the move fails', async () => {
    const store = new FaultyMemoryStore();
    const t = await track(startTestServer({ workers: { threads: 2 }, hooks: USERS_HOOKS, store: { kind: 'memory' } }, undefined, store));
    const sessions = t.server.sessions;

    // A session resumed from a stored memento, so a record sits under its ID.
    const resumedOnce = async () => {
      const client = new Client(t.url);
      await stateOf(client, '/inc');
      assert.equal(await sessions.suspendSession(client.cookie!), 'suspended');
      assert.equal((await stateOf(client, '/inc')).n, 2);
      assert.ok(await store.get(client.cookie!), 'a record under the ID');
      return client;
    };

    // 1. The delete of the old record hangs: a request with the old ID meanwhile starts afresh.
    const slow = await resumedOnce();
    const slowOld = slow.cookie!;
    const adoptedBefore = sessions.stats.adopted;
    const held = store.holdDeletes();
    const regen = slow.get('/regenerate');
    await waitFor(async () => store.heldDeletes > 0, 5000, 'the move reaching the delete');
    const replay = await stateOf(withCookie(t.url, slowOld), '/inc');
    assert.notEqual(replay.id, slowOld, 'the old ID was not adopted from its record');
    assert.equal(replay.n, 1, 'a fresh context');
    assert.equal(sessions.stats.adopted, adoptedBefore);
    held.release();
    const regenReply = await regen;
    assert.equal(regenReply.status, 200);
    const [slowNew] = cookieValues(regenReply);
    assert.ok(slowNew && slowNew !== slowOld);
    assert.equal(await store.get(slowOld), undefined, 'the old record deleted once the store answered');
    assert.equal((await stateOf(slow, '/inc')).n, 3, 'the session goes on under the new ID');

    // 2. The store refuses the moved record: the old one is deleted all the same.
    const refused = await resumedOnce();
    const refusedOld = refused.cookie!;
    store.failNextSet();
    const reply = await refused.get('/regenerate');
    assert.equal(reply.status, 200, 'the login itself succeeds: the context is live');
    const [refusedNew] = cookieValues(reply);
    assert.ok(refusedNew && refusedNew !== refusedOld);
    assert.equal(await store.get(refusedOld), undefined, 'no record left to adopt the old ID from');
    const again = await stateOf(withCookie(t.url, refusedOld));
    assert.notEqual(again.id, refusedOld, 'the old ID starts afresh');
    assert.equal((await stateOf(refused, '/inc')).n, 3, 'the context under the new ID kept its state');
    assert.ok(t.logs.some((line) => line.event === 'store-error' && line.msg === 'cannot update the stored session record'));
    await stop(t);
  });
});

// ---------------------------------------------------------------------------------------------
// ctx.userId and the server-side user API

describe('sessions of a user', { timeout: 60_000 }, () => {
  for (const kind of KINDS) {
    test(`${kind} store: sessionsOfUser lists live, suspended and store-only sessions; userId null unlists; closeUser closes them all`, async () => {
      const b = backing(kind);
      let storeOnly: { alice: string; bob: string };
      let t: TestServer;
      if (b.durable) {
        // Sessions suspended before a restart: only the store holds them afterwards.
        const t1 = await b.start();
        const s1 = new Client(t1.url);
        const s2 = new Client(t1.url);
        await login(s1, 'alice');
        await stateOf(s1, '/tag?value=stored-alice');
        await login(s2, 'bob');
        await stateOf(s2, '/tag?value=stored-bob');
        storeOnly = { alice: s1.cookie!, bob: s2.cookie! };
        await stop(t1);
        t = await b.start();
      } else {
        // The memory store forgets on shutdown: records written into the running server's store
        // (as another node sharing it would) are sessions only the store holds.
        t = await b.start();
        storeOnly = { alice: newSessionId(), bob: newSessionId() };
        for (const [user, id] of [['alice', storeOnly.alice], ['bob', storeOnly.bob]] as const) {
          const memento = encodeMemento({ n: 0, tag: `stored-${user}`, userId: user }, 1 << 20);
          await b.memory().set(storedRecord({ id, userId: user, memento, expiresAt: Date.now() + 3_600_000 }));
        }
      }
      const sessions = t.server.sessions;
      assert.equal((await b.record(storeOnly.alice))?.userId, 'alice', 'the store holds the userId');
      assert.equal((await b.record(storeOnly.bob))?.userId, 'bob');

      // Listed without any request having adopted them.
      const listed = await sessions.sessionsOfUser('alice');
      assert.deepEqual(listed.map((info) => info.id), [storeOnly.alice]);
      assert.equal(listed[0]!.state, 'suspended');
      assert.equal(listed[0]!.requests, null, 'a session this process has not seen');
      assert.equal(listed[0]!.userId, 'alice');
      assert.equal((await sessions.info(storeOnly.alice)), undefined, 'listing did not adopt it');
      assert.equal(sessions.stats.adopted, 0);

      const live = new Client(t.url);
      const suspended = new Client(t.url);
      const loggedOut = new Client(t.url);
      const anonymous = new Client(t.url);
      await login(live, 'alice');
      await stateOf(live, '/inc');
      await login(suspended, 'alice');
      await stateOf(suspended, '/tag?value=suspended-alice');
      await login(loggedOut, 'alice');
      await stateOf(anonymous, '/inc');
      const ids = { live: live.cookie!, suspended: suspended.cookie!, loggedOut: loggedOut.cookie!, anonymous: anonymous.cookie! };
      assert.equal(await sessions.suspendSession(ids.suspended), 'suspended');
      assert.equal((await b.record(ids.suspended))?.userId, 'alice', 'the suspended record holds the userId');

      assert.deepEqual(await idsOf(t, 'alice'), [storeOnly.alice, ids.live, ids.suspended, ids.loggedOut].sort());
      // userId set to null: out of the listing, live and then suspended (record without user).
      assert.equal((await stateOf(loggedOut, '/logout')).userId, null);
      assert.deepEqual(await idsOf(t, 'alice'), [storeOnly.alice, ids.live, ids.suspended].sort());
      assert.equal(await sessions.suspendSession(ids.loggedOut), 'suspended');
      assert.equal((await b.record(ids.loggedOut))?.userId, null);
      assert.deepEqual(await idsOf(t, 'alice'), [storeOnly.alice, ids.live, ids.suspended].sort());

      const infos = byId(await sessions.sessionsOfUser('alice'));
      assert.equal(infos.get(ids.live)?.state, 'live');
      assert.equal(typeof infos.get(ids.live)?.workerId, 'number');
      assert.equal(infos.get(ids.suspended)?.state, 'suspended');
      assert.equal(infos.get(ids.suspended)?.workerId, null);
      assert.equal(infos.get(storeOnly.alice)?.requests, null);
      for (const info of infos.values()) assert.equal(info.userId, 'alice');
      assert.deepEqual(await idsOf(t, 'bob'), [storeOnly.bob]);
      assert.deepEqual(await idsOf(t, 'nobody-at-all'), []);

      // Closing: every one of alice's sessions, whatever its state.
      assert.equal(await sessions.closeUser('alice', { by: 'test' }), 3);
      assert.deepEqual(await idsOf(t, 'alice'), []);
      await suspendCalls.expect(ids.live, ['closed'], "the live context got onSessionSuspend(ctx, 'closed')");
      assert.equal(await b.record(storeOnly.alice), undefined);
      assert.equal(await b.record(ids.suspended), undefined);
      for (const id of [storeOnly.alice, ids.live, ids.suspended]) {
        assert.ok(
          t.logs.some((line) => line.event === 'closed' && line.session === hashId(id) && line.by === 'test'),
          `a 'closed' line for ${hashId(id)}`,
        );
      }
      for (const [name, id] of [['live', ids.live], ['suspended', ids.suspended], ['store-only', storeOnly.alice]] as const) {
        const next = await stateOf(withCookie(t.url, id));
        assert.notEqual(next.id, id, `${name}: a new session`);
        assert.deepEqual(cookieValues(next.reply), [next.id]);
        assert.equal(next.resumed, false, `${name}: nothing resumed`);
        assert.equal(next.userId, null);
        assert.equal(next.n, 0);
        assert.equal(next.tag, null);
      }

      // Other sessions untouched: bob (store-only) resumes, the logged-out and anonymous ones go on.
      const bob = await stateOf(withCookie(t.url, storeOnly.bob));
      assert.equal(bob.id, storeOnly.bob);
      assert.equal(bob.resumed, true);
      assert.equal(bob.userId, 'bob');
      assert.equal(bob.tag, 'stored-bob');
      const out = await stateOf(loggedOut);
      assert.equal(out.id, ids.loggedOut);
      assert.equal(out.resumed, true);
      assert.equal(out.userId, null);
      const anon = await stateOf(anonymous);
      assert.equal(anon.id, ids.anonymous);
      assert.equal(anon.n, 1);
      assert.equal(await sessions.closeUser('alice'), 0, 'nothing left to close');
      assertNoRawIds(t, [...Object.values(ids), storeOnly.alice, storeOnly.bob]);

      if (b.durable) {
        // The logged-out session's record says no user, so after a restart it is not listed.
        await stop(t);
        const t3 = await b.start();
        assert.equal((await b.record(ids.loggedOut))?.userId, null);
        assert.equal((await b.record(storeOnly.bob))?.userId, 'bob');
        assert.deepEqual(await idsOf(t3, 'alice'), []);
        assert.deepEqual(await idsOf(t3, 'bob'), [storeOnly.bob]);
        await stop(t3);
      } else {
        await stop(t);
      }
    });
  }

  // A sign-out must not come back with a crash: the stored record names the session's current
  // user, whether the change came with a regenerate (the record moves) or without one.
  test('sqlite store: the record a sign-in or sign-out regenerate moves carries the new userId', async () => {
    const b = backing('sqlite');
    const t = await b.start();
    const outgoing = new Client(t.url);
    await login(outgoing, 'alice');
    assert.equal(await t.server.sessions.suspendSession(outgoing.cookie!), 'suspended');
    assert.equal((await b.record(outgoing.cookie!))?.userId, 'alice');
    assert.equal((await stateOf(outgoing, '/logout?regenerate=1')).userId, null);
    const incoming = new Client(t.url);
    await stateOf(incoming, '/inc');
    assert.equal(await t.server.sessions.suspendSession(incoming.cookie!), 'suspended');
    assert.equal((await stateOf(incoming, '/login?user=bob&regenerate=1')).userId, 'bob');
    const stayed = new Client(t.url);
    await login(stayed, 'carol');
    assert.equal(await t.server.sessions.suspendSession(stayed.cookie!), 'suspended');
    assert.equal((await stateOf(stayed, '/logout')).userId, null);
    try {
      assert.equal((await b.record(outgoing.cookie!))?.userId, null, 'signed out, but the moved record still names alice');
      assert.equal((await b.record(incoming.cookie!))?.userId, 'bob', 'signed in, but the moved record names no user');
      assert.equal((await b.record(stayed.cookie!))?.userId, null, 'signed out without a regenerate, but the record still names carol');
    } finally {
      await stop(t);
    }
  });

  test('closeSession(id, by): a live session is closed and its cookie gets a new session; an unknown ID answers false', async () => {
    const t = await backing('memory').start();
    const client = new Client(t.url);
    await login(client, 'carol');
    await stateOf(client, '/inc');
    const id = client.cookie!;
    assert.equal(await t.server.sessions.closeSession(id, 'test'), true);
    await suspendCalls.expect(id, ['closed']);
    assert.equal((await t.server.sessions.info(id)), undefined);
    assert.deepEqual(await idsOf(t, 'carol'), []);
    const next = await stateOf(client);
    assert.notEqual(next.id, id);
    assert.equal(next.n, 0);
    assert.equal(next.userId, null);
    assert.equal(await t.server.sessions.closeSession(id, 'test'), false, 'already closed');
    assert.equal(await t.server.sessions.closeSession(newSessionId(), 'test'), false, 'never existed');
    await stop(t);
  });

  test('closeUser while the store cannot be listed: the sessions in memory are closed all the same, and the call fails saying so', async () => {
    const store = new FaultyMemoryStore();
    const t = await track(startTestServer({ workers: { threads: 2 }, hooks: USERS_HOOKS, store: { kind: 'memory' } }, undefined, store));
    const a = new Client(t.url);
    const b = new Client(t.url);
    await login(a, 'dave');
    await login(b, 'dave');
    const ids = [a.cookie!, b.cookie!];
    store.failLists(true);
    await assert.rejects(t.server.sessions.closeUser('dave'), (error: Error & { code?: string }) => {
      assert.equal(error.code, 'RESIDENT_ERR_STORE_FAILED');
      assert.match(error.message, /closed 2 session\(s\) of the user held in memory/);
      return true;
    });
    for (const id of ids) {
      await suspendCalls.expect(id, ['closed']);
      assert.equal((await t.server.sessions.info(id)), undefined, 'closed though the store listing failed');
    }
    store.failLists(false);
    assert.deepEqual(await idsOf(t, 'dave'), []);
    assert.notEqual((await stateOf(a)).id, ids[0], 'the closed cookie starts afresh');
    await stop(t);
  });

  test('ctx.closeOtherSessions(): every other session of the user (live on either worker, suspended, store-only) is closed; the caller survives', async () => {
    const b = backing('sqlite');
    const t1 = await b.start();
    const old = new Client(t1.url);
    await login(old, 'alice');
    const storeOnly = old.cookie!;
    await stop(t1);

    const t = await b.start();
    const me = new Client(t.url);
    const mine = await login(me, 'alice');
    await stateOf(me, '/inc');
    await stateOf(me, '/tag?value=mine');
    // The kernel spreads connections over the threads' listeners by a hash (reusePort), so three
    // clients can all land on one thread: log in until one lands on another (at most 16 tries).
    const others: Client[] = [];
    const otherStates: UsersState[] = [];
    while (others.length < 3 || (!otherStates.some((s) => s.threadId !== mine.threadId) && others.length < 16)) {
      const other = new Client(t.url);
      others.push(other);
      otherStates.push(await login(other, 'alice'));
    }
    const suspended = new Client(t.url);
    await login(suspended, 'alice');
    assert.equal(await t.server.sessions.suspendSession(suspended.cookie!), 'suspended');
    const bob = new Client(t.url);
    await login(bob, 'bob');
    await stateOf(bob, '/inc');
    const anonymous = new Client(t.url);
    await stateOf(anonymous, '/inc');
    assert.ok(
      otherStates.some((s) => s.threadId !== mine.threadId),
      `some other live session is on another worker than ${mine.threadId}: ${otherStates.map((s) => s.threadId).join(', ')}`,
    );
    const otherIds = [...others.map((c) => c.cookie!), suspended.cookie!, storeOnly];
    assert.deepEqual(await idsOf(t, 'alice'), [me.cookie!, ...otherIds].sort());

    const reply = await stateOf(me, '/close-others');
    assert.equal(reply.id, me.cookie);
    await waitFor(async () => (await idsOf(t, 'alice')).length === 1, 5000, 'the other sessions closed');
    assert.deepEqual(await idsOf(t, 'alice'), [me.cookie!]);
    for (const other of others) await suspendCalls.expect(other.cookie!, ['closed']);
    assert.equal(await b.record(suspended.cookie!), undefined);
    assert.equal(await b.record(storeOnly), undefined);
    assert.ok(t.logs.some((line) => line.event === 'closed' && line.by === 'closeOtherSessions' && line.session === hashId(storeOnly)));

    for (const id of otherIds) {
      const next = await stateOf(withCookie(t.url, id));
      assert.notEqual(next.id, id, 'a closed session: a new one');
      assert.equal(next.userId, null);
      assert.equal(next.resumed, false);
    }
    const still = await stateOf(me);
    assert.equal(still.id, mine.id);
    assert.equal(still.born, mine.born);
    assert.equal(still.userId, 'alice');
    assert.equal(still.n, 1);
    assert.equal(still.tag, 'mine');
    const bobState = await stateOf(bob);
    assert.equal(bobState.userId, 'bob');
    assert.equal(bobState.n, 1);
    assert.equal((await stateOf(anonymous)).n, 1);
    assert.deepEqual(await idsOf(t, 'bob'), [bob.cookie!]);
    await stop(t);
  });

  test('sessions.maxPerUser 2: the third login closes the oldest session; the newest two and other users are untouched', async () => {
    const t = await backing('memory').start({ sessions: { maxPerUser: 2 } });
    const bobs = [new Client(t.url), new Client(t.url)];
    for (const bob of bobs) {
      await login(bob, 'bob');
      await stateOf(bob, '/inc');
    }
    const anonymous = new Client(t.url);
    await stateOf(anonymous, '/inc');
    const alices = [new Client(t.url), new Client(t.url), new Client(t.url)];
    const states: UsersState[] = [];
    for (const alice of alices) {
      await sleep(5); // distinct createdAt
      await stateOf(alice, '/inc');
      states.push(await login(alice, 'alice'));
    }
    const [firstId, secondId, thirdId] = alices.map((alice) => alice.cookie!) as [string, string, string];
    await waitFor(async () => (await idsOf(t, 'alice')).length === 2, 5000, 'the oldest session closed');
    assert.deepEqual(await idsOf(t, 'alice'), [secondId, thirdId].sort());
    assert.ok(t.logs.some((line) => line.event === 'user-limit' && line.session === hashId(firstId)));
    await suspendCalls.expect(firstId, ['closed']);

    const first = await stateOf(alices[0]!);
    assert.notEqual(first.id, firstId, 'the first client starts a new session');
    assert.equal(first.userId, null);
    assert.equal(first.n, 0);
    for (const [i, id] of [[1, secondId], [2, thirdId]] as const) {
      const s = await stateOf(alices[i]!);
      assert.equal(s.id, id);
      assert.equal(s.userId, 'alice');
      assert.equal(s.n, 1);
      assert.equal(s.born, states[i]!.born);
    }
    for (const bob of bobs) {
      const s = await stateOf(bob);
      assert.equal(s.userId, 'bob');
      assert.equal(s.n, 1);
    }
    assert.equal((await idsOf(t, 'bob')).length, 2);
    assert.equal((await stateOf(anonymous)).n, 1);
    await stop(t);
  });

  for (const regenerate of [false, true]) {
    const how = regenerate ? 'logging in with ctx.regenerate() (as the demo does)' : 'logging in';
    test(`sessions.maxPerUser 2, ${how}: the session that just logged in survives even when it is the oldest`, async () => {
      const t = await backing('memory').start({ sessions: { maxPerUser: 2 } });
      const clients = [new Client(t.url), new Client(t.url), new Client(t.url)];
      for (const client of clients) {
        await stateOf(client, '/inc'); // created in this order: 0 is the oldest
        await sleep(5);
      }
      const created = clients.map((client) => client.cookie!);
      // Logged in newest first, so the last login is the oldest session.
      const suffix = regenerate ? '&regenerate=1' : '';
      for (const i of [2, 1, 0]) await stateOf(clients[i]!, `/login?user=alice${suffix}`);
      const ids = clients.map((client) => client.cookie!);
      if (regenerate) for (const i of [0, 1, 2]) assert.notEqual(ids[i], created[i], 'the login renewed the ID');
      await waitFor(async () => (await idsOf(t, 'alice')).length <= 2, 3000, `alice down to 2 sessions (has ${(await idsOf(t, 'alice')).length})`);
      assert.deepEqual(await idsOf(t, 'alice'), [ids[0]!, ids[2]!].sort(), 'the oldest of the others (1) went');
      const s0 = await stateOf(clients[0]!);
      assert.equal(s0.id, ids[0]);
      assert.equal(s0.userId, 'alice');
      const s1 = await stateOf(clients[1]!);
      assert.notEqual(s1.id, ids[1]);
      assert.equal(s1.userId, null);
      await stop(t);
    });
  }
});
