/**
 * Lifetimes through a real server and a durable store: the absolute lifetime ends a session
 * however active it is (C3), and expired records left by an earlier run are removed from the
 * store, at startup and by the periodic sweep (store.sweepInterval).
 */
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, describe, test } from 'node:test';
import { FileStore } from '../../src/stores/file.ts';
import { SqliteStore } from '../../src/stores/sqlite.ts';
import type { ContextStore } from '../../src/stores/store.ts';
import { Client, waitFor } from '../helpers.ts';
import { DURABLE, clientWith, logsWith, peek, recordSuspendCalls, startOn, state, tempStore, type TempStore, cleanup } from './server-helpers.ts';

after(cleanup);

const TEST = { timeout: 30_000 };

async function openDirectly(store: TempStore): Promise<ContextStore> {
  return store.kind === 'sqlite' ? new SqliteStore({ path: store.path }) : FileStore.open({ dir: store.path });
}

/** Two clients with state, suspended into the store by a shutdown; returns their IDs and the latest expiry. */
async function leaveRecords(store: TempStore, cookieTimeout: string): Promise<{ ids: string[]; expiresAt: number }> {
  const t = await startOn(store, { sessions: { cookieTimeout, processTimeout: '1h' } });
  const ids: string[] = [];
  try {
    for (let i = 0; i < 2; i++) {
      const client = new Client(t.url);
      await state(client, '/inc');
      ids.push(client.cookie!);
    }
  } finally {
    await t.close();
  }
  const expiries = ids.map((id) => peek(store, id)?.expiresAt);
  for (const expiresAt of expiries) assert.equal(typeof expiresAt, 'number', 'each record has an expiry');
  return { ids, expiresAt: Math.max(...(expiries as number[])) };
}

describe('lifetimes in every durable store, side by side', { concurrency: true }, () => {
  for (const kind of DURABLE) {
    describe(`${kind} store: lifetimes`, () => {
      test('C3: sessions.maxLifetime "2s" ends a continuously active session; a new ID, the old one dead and deleted', TEST, async () => {
        const store = tempStore(kind);
        const calls = recordSuspendCalls();
        let t = await startOn(store, { sessions: { maxLifetime: '2s', processTimeout: '1h', checkpointInterval: '200ms' } });
        const client = new Client(t.url);
        let oldId: string;
        try {
          // The session is created during this first request: between t0 and started.
          const t0 = Date.now();
          const first = await state(client, '/inc');
          const started = Date.now();
          oldId = first.id;
          let changed: Awaited<ReturnType<typeof state>> | undefined;
          let changedAt = 0;
          let checkpointed = false;
          while (!changed && Date.now() - started < 5000) {
            await sleep(300);
            const sentAt = Date.now();
            const s = await state(client, '/inc');
            if (s.id !== oldId) {
              changed = s;
              changedAt = Date.now();
            } else {
              assert.ok(sentAt - started < 2010, `the old ID was still served ${sentAt - started} ms after its start, past its 2 s lifetime`);
              checkpointed ||= peek(store, oldId) !== undefined;
            }
          }
          assert.ok(changed, 'a new ID within 5 s');
          assert.ok(changedAt - t0 >= 2000, `the session ended ${changedAt - t0} ms after it began, before its lifetime`);
          assert.equal(changed.resumed, false);
          assert.deepEqual(changed.data, { n: 1 }, 'a new session starts afresh');
          assert.equal(client.cookie, changed.id);
          assert.ok(t.server.sessions.stats.expired >= 1);
          await waitFor(async () => calls.reasons(oldId).includes('expired'), 5000, "onSessionSuspend(ctx, 'expired')");
          assert.ok(logsWith(t.logs, 'expired', first.idHash).length > 0, 'the end is logged');
          // Checkpoints had written it; the end deletes it.
          assert.ok(checkpointed, 'the session was checkpointed into the store while active');
          await waitFor(async () => peek(store, oldId) === undefined, 5000, 'the old record deleted');

          const stale = await state(clientWith(t.url, oldId));
          assert.notEqual(stale.id, oldId, 'the old ID is dead');
          assert.notEqual(stale.id, changed.id);
          assert.equal(stale.resumed, false);
        } finally {
          await t.close();
          calls.close();
        }
        t = await startOn(store, { sessions: { maxLifetime: '2s', processTimeout: '1h' } });
        try {
          const afterRestart = await state(clientWith(t.url, oldId));
          assert.notEqual(afterRestart.id, oldId, 'not resurrected by a restart');
          assert.equal(afterRestart.resumed, false);
        } finally {
          await t.close();
        }
      });

      test('records left by an earlier run that expire while the server runs are removed by the periodic sweep (store.sweepInterval)', TEST, async () => {
        const store = tempStore(kind);
        const { ids, expiresAt } = await leaveRecords(store, '6s');
        const t = await startOn(store, { sessions: { cookieTimeout: '6s' }, store: { sweepInterval: '200ms' } });
        try {
          assert.ok(Date.now() < expiresAt, `the records expired ${Date.now() - expiresAt} ms before the server had started: the machine is too slow for this test`);
          // Not at startup, nor before they expire.
          for (const id of ids) assert.ok(peek(store, id) || Date.now() >= expiresAt, 'removed before it expired');
          await waitFor(async () => ids.every((id) => peek(store, id) === undefined), 8000, 'the sweep');
          assert.ok(Date.now() >= expiresAt, 'not removed before their expiry');
          // A record is gone as soon as the thread pool has removed its file, a moment before the
          // sweep's promise settles and it logs: the line may still be on its way.
          const removed = () => logsWith(t.logs, 'store-sweep').reduce((sum, line) => sum + Number(line.removed), 0);
          await waitFor(async () => removed() >= 2, 2000, 'the store-sweep line');
          assert.equal(removed(), 2);
          const stale = await state(clientWith(t.url, ids[0]));
          assert.notEqual(stale.id, ids[0], 'an expired cookie gets a new ID');
          assert.equal(stale.resumed, false);
        } finally {
          await t.close();
        }
        const direct = await openDirectly(store);
        try {
          for (const id of ids) assert.equal(await direct.get(id), undefined);
        } finally {
          await direct.close();
        }
      });

      test('records that expired while the server was down are removed at startup', TEST, async () => {
        const store = tempStore(kind);
        const { ids, expiresAt } = await leaveRecords(store, '1s');
        await waitFor(async () => Date.now() > expiresAt + 10, 3000, 'the records to expire');
        for (const id of ids) assert.ok(peek(store, id), 'still there while nothing runs');
        const t = await startOn(store, { sessions: { cookieTimeout: '1s' }, store: { sweepInterval: '1h' } });
        try {
          for (const id of ids) assert.equal(peek(store, id), undefined, 'removed at startup, without a request');
          const stale = await state(clientWith(t.url, ids[1]));
          assert.notEqual(stale.id, ids[1]);
          assert.equal(stale.resumed, false);
        } finally {
          await t.close();
        }
        const direct = await openDirectly(store);
        try {
          for (const id of ids) assert.equal(await direct.get(id), undefined);
        } finally {
          await direct.close();
        }
      });
    });
  }
});
