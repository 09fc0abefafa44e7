/**
 * Suspended sessions that survive, end to end through a real server, real worker threads and
 * real durable stores in temp folders (issue 3): restarts with SIGTERM, kill -9 with and
 * without checkpoints, quiet checkpoints, ctx.userId in the record, memento versions, and the
 * round-trip mode.
 */
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, describe, test } from 'node:test';
import { Client, waitFor } from '../helpers.ts';
import {
  DURABLE,
  clientWith,
  cliConfig,
  cliExit,
  cliLogs,
  cliStarted,
  cookieValues,
  cleanup,
  peek,
  peekMemento,
  savedOf,
  startCli,
  startOn,
  state,
  tempStore,
  type StoreKind,
} from './server-helpers.ts';

after(cleanup);

const TEST = { timeout: 30_000 };

describe('durable stores, side by side', { concurrency: true }, () => {
  for (const kind of DURABLE) {
    describe(`${kind} store: restarts`, () => {
      test('shutdown, then a new server on the same store: every client resumes with its ID, memento and IP binding', TEST, async () => {
        const store = tempStore(kind);
        let t = await startOn(store, { workers: { threads: 2 } });
        const clients = [0, 1, 2].map(() => new Client(t.url));
        for (const [i, client] of clients.entries()) {
          for (let k = 0; k <= i; k++) await state(client, '/inc');
          await state(client, `/put?key=name&value=client-${i}`);
        }
        const ids = clients.map((client) => client.cookie!);
        assert.equal(new Set(ids).size, 3, 'three sessions');
        // What SIGTERM calls.
        assert.deepEqual(await t.server.shutdown(), { suspended: 3, lost: 0 });
        for (const [i, id] of ids.entries()) {
          const record = peek(store, id);
          assert.ok(record, `record of client ${i} written at shutdown`);
          assert.equal(record.clientIp, '127.0.0.1');
          assert.deepEqual(peekMemento(store, id), { data: { n: i + 1, name: `client-${i}` }, mode: null });
        }

        t = await startOn(store, { workers: { threads: 2 } });
        try {
          // The first request after the restart comes from another address: refused, untouched.
          const thief = clientWith(t.url, ids[0], { localAddress: '127.0.0.2' });
          const stolen = await thief.get('/state');
          assert.equal(stolen.status, 400, stolen.text);
          assert.deepEqual(cookieValues(stolen), [''], 'the thief’s cookie is expired, never renewed or replaced (B1)');
          await thief.close();

          for (const [i, id] of ids.entries()) {
            const client = clientWith(t.url, id);
            const s = await state(client);
            assert.equal(s.id, id, 'same ID');
            assert.equal(s.resumed, true);
            assert.equal(s.isNew, true, 'a new context, rebuilt from the memento');
            assert.deepEqual(savedOf(s), { data: { n: i + 1, name: `client-${i}` }, mode: null });
            assert.deepEqual(s.data, { n: i + 1, name: `client-${i}` });
            assert.deepEqual(cookieValues(s.reply), [id], 'no new Set-Cookie value');
            const next = await state(client, '/inc');
            assert.equal(next.data.n, i + 2, 'the counter continues');
            assert.equal(next.isNew, false);
            assert.equal(client.cookie, id);
          }
          // Still bound once resumed and live.
          for (const id of ids) {
            const thiefAgain = clientWith(t.url, id, { localAddress: '127.0.0.2' });
            assert.equal((await thiefAgain.get('/state')).status, 400);
            await thiefAgain.close();
          }
          const counters = t.server.sessions.stats;
          assert.equal(counters.adopted, 3);
          assert.equal(counters.created, 0, 'no session was created by the restart or the thief');
          assert.equal(counters.ipMismatches, 4);
          for (const id of ids) assert.ok(!t.rawLogs().includes(id), 'logs name sessions by hash, never by ID');
        } finally {
          await t.close();
        }
      });

      test('ctx.userId is saved with the record and comes back after a restart', TEST, async () => {
        const store = tempStore(kind);
        let t = await startOn(store);
        const client = new Client(t.url);
        const first = await state(client, '/user?id=alice');
        assert.equal(first.userId, 'alice');
        const id = client.cookie!;
        await t.close();
        assert.equal(peek(store, id)?.userId, 'alice');

        t = await startOn(store);
        try {
          const resumed = await state(clientWith(t.url, id));
          assert.equal(resumed.resumed, true);
          assert.equal(resumed.userId, 'alice');
          // Logout: null is saved too.
          await state(clientWith(t.url, id), '/user?id=');
        } finally {
          await t.close();
        }
        assert.equal(peek(store, id)?.userId, null);
      });

      test('memento version: written with 1, read after a restart with 2 (ctx.savedVersion 1); new suspends are written with 2', TEST, async () => {
        const store = tempStore(kind);
        let t = await startOn(store, { sessions: { mementoVersion: 1 } });
        const client = new Client(t.url);
        await state(client, '/inc');
        const id = client.cookie!;
        const fresh = await state(client);
        assert.equal(fresh.savedVersion, null, 'a new session has no saved version');
        await t.close();
        assert.equal(peek(store, id)?.mementoVersion, 1);

        t = await startOn(store, { sessions: { mementoVersion: 2 } });
        try {
          const s = await state(clientWith(t.url, id));
          assert.equal(s.resumed, true);
          assert.equal(s.savedVersion, 1, 'the version the memento was written with');
          assert.deepEqual(s.data, { n: 1 });
        } finally {
          await t.close();
        }
        assert.equal(peek(store, id)?.mementoVersion, 2);

        t = await startOn(store, { sessions: { mementoVersion: 2 } });
        try {
          const s = await state(clientWith(t.url, id));
          assert.equal(s.savedVersion, 2);
          assert.deepEqual(s.data, { n: 1 });
        } finally {
          await t.close();
        }
      });

      test('checkpoints: a context that handled a request is saved while it stays live; a quiet one is not rewritten', TEST, async () => {
        const store = tempStore(kind);
        const t = await startOn(store, { sessions: { checkpointInterval: '200ms', processTimeout: '1h' } });
        try {
          const busy = new Client(t.url);
          const quiet = new Client(t.url);
          await state(busy, '/inc');
          await state(quiet, '/inc');
          const counters = t.server.sessions.stats;
          await waitFor(async () => counters.checkpoints >= 2, 5000, 'the first checkpoints');
          assert.equal(counters.checkpoints, 2);
          const busyFirst = peek(store, busy.cookie!);
          const quietFirst = peek(store, quiet.cookie!);
          assert.deepEqual(peekMemento(store, busy.cookie!), { data: { n: 1 }, mode: null });
          assert.ok(busyFirst && quietFirst);

          // Three quiet intervals: nothing is rewritten. (Absence needs a wait.)
          await sleep(700);
          assert.equal(counters.checkpoints, 2, 'no checkpoint without a request');
          assert.equal(peek(store, busy.cookie!)?.updatedAt, busyFirst.updatedAt);

          await state(busy, '/inc');
          await waitFor(async () => counters.checkpoints >= 3, 5000, 'the checkpoint after a request');
          await waitFor(async () => peek(store, busy.cookie!)!.updatedAt > busyFirst.updatedAt, 5000, 'the new checkpoint in the store');
          assert.deepEqual(peekMemento(store, busy.cookie!), { data: { n: 2 }, mode: null });
          const live = await state(busy);
          assert.equal(live.isNew, false, 'the context stayed live through its checkpoints');
          assert.equal(live.requests, 3);
          assert.equal(peek(store, quiet.cookie!)?.updatedAt, quietFirst.updatedAt, 'the quiet context was not rewritten');
          assert.equal(counters.suspended.checkpoint, 0, 'checkpoints are not suspensions');
        } finally {
          await t.close();
        }
      });

      test('kill -9 without checkpoints: what was suspended before survives; what came after is lost', TEST, async () => {
        const store = tempStore(kind);
        const config = cliConfig(store, { sessions: { processTimeout: '2s' } });
        const child = startCli(config);
        const url = await cliStarted(child);
        const suspended = new Client(url);
        const neverSuspended = new Client(url);
        for (let i = 0; i < 3; i++) await state(suspended, '/inc');
        await waitFor(async () => peek(store, suspended.cookie!), 5000, 'the idle suspend');
        assert.deepEqual(peekMemento(store, suspended.cookie!), { data: { n: 3 }, mode: null });
        // Resumed and changed after its last suspend, then the process dies.
        const after1 = await state(suspended, '/inc');
        assert.equal(after1.resumed, true);
        await state(suspended, '/inc');
        await state(neverSuspended, '/inc');
        child.process.kill('SIGKILL');
        assert.equal(await cliExit(child), null);
        assert.deepEqual(peekMemento(store, suspended.cookie!), { data: { n: 3 }, mode: null }, 'no suspend ran before the kill');
        assert.equal(peek(store, neverSuspended.cookie!), undefined);

        const again = startCli(config);
        const url2 = await cliStarted(again);
        const s = await state(clientWith(url2, suspended.cookie));
        assert.equal(s.id, suspended.cookie);
        assert.equal(s.resumed, true);
        assert.deepEqual(s.data, { n: 3 }, 'the state of the last suspend');
        const lost = await state(clientWith(url2, neverSuspended.cookie));
        assert.notEqual(lost.id, neverSuspended.cookie, 'a session never saved is gone: new ID');
        assert.equal(lost.resumed, false);
        again.process.kill('SIGTERM');
        assert.equal(await cliExit(again), 0);
      });

      test('kill -9 with sessions.checkpointInterval "200ms": the client resumes with the checkpointed state', TEST, async () => {
        const store = tempStore(kind);
        const config = cliConfig(store, { sessions: { checkpointInterval: '200ms', processTimeout: '1h' } });
        const child = startCli(config);
        const url = await cliStarted(child);
        const client = new Client(url);
        await state(client, '/inc');
        await state(client, '/put?key=cart&value=apples');
        const id = client.cookie!;
        await waitFor(async () => peek(store, id), 5000, 'the first checkpoint');
        await state(client, '/inc');
        await waitFor(async () => peekMemento(store, id)?.data?.n === 2, 5000, 'the checkpoint after the last request');
        child.process.kill('SIGKILL');
        assert.equal(await cliExit(child), null);

        const again = startCli(config);
        const url2 = await cliStarted(again);
        const s = await state(clientWith(url2, id));
        assert.equal(s.id, id);
        assert.equal(s.resumed, true);
        assert.deepEqual(s.data, { n: 2, cart: 'apples' });
        again.process.kill('SIGTERM');
        assert.equal(await cliExit(again), 0);
      });
    });
  }
});

test('the CLI: SIGTERM suspends every client into SQLite; after a restart each resumes with its ID, memento and binding', TEST, async () => {
  const store = tempStore('sqlite');
  const config = cliConfig(store);
  const child = startCli(config);
  const url = await cliStarted(child);
  const clients = [new Client(url), new Client(url)];
  await state(clients[0]!, '/inc');
  for (let i = 0; i < 3; i++) await state(clients[1]!, '/inc');
  const ids = clients.map((client) => client.cookie!);
  child.process.kill('SIGTERM');
  assert.equal(await cliExit(child), 0);
  const stopped = cliLogs(child).find((line) => line.event === 'stopped');
  assert.equal(stopped?.suspended, 2);
  assert.equal(stopped?.lost, 0);

  const again = startCli(config);
  const url2 = await cliStarted(again);
  const thief = clientWith(url2, ids[1], { localAddress: '127.0.0.2' });
  assert.equal((await thief.get('/state')).status, 400);
  await thief.close();
  for (const [i, id] of ids.entries()) {
    const s = await state(clientWith(url2, id));
    assert.equal(s.id, id);
    assert.equal(s.resumed, true);
    assert.deepEqual(cookieValues(s.reply), [id]);
    assert.deepEqual(s.data, { n: i === 0 ? 1 : 3 });
  }
  again.process.kill('SIGTERM');
  assert.equal(await cliExit(again), 0);
});

for (const kind of ['memory', ...DURABLE] as StoreKind[]) {
  test(`${kind} store: round-trip mode (sessions.suspendEveryRequest): every request resumes from the store`, TEST, async () => {
    const store = kind === 'memory' ? null : tempStore(kind);
    const t = await startOn(store, { sessions: { suspendEveryRequest: true, processTimeout: '1h' } });
    try {
      const client = new Client(t.url);
      const counters = t.server.sessions.stats;
      for (let k = 1; k <= 4; k++) {
        const s = await state(client, '/inc');
        assert.equal(s.data.n, k, 'the counter carried by the memento continues');
        assert.equal(s.resumed, k > 1, `request ${k}: resumed`);
        assert.equal(s.isNew, true, 'a new context for every request');
        assert.equal(s.requests, 1, 'nothing but the memento survives');
        if (k > 1) assert.deepEqual(savedOf(s), { data: { n: k - 1 }, mode: null });
        await waitFor(async () => counters.suspended.idle >= k, 5000, `suspend ${k}`);
      }
      assert.equal(counters.resumed, 3);
      assert.equal(counters.created, 1);
      if (store) assert.deepEqual(peekMemento(store, client.cookie!), { data: { n: 4 }, mode: null });
    } finally {
      await t.close();
    }
  });
}
