/**
 * Redis and PostgreSQL records lost or mangled behind the server's back (RELIABILITY.md E8,
 * E11), through a real server, as test/stores/corrupt.test.ts does for SQLite and files: a lost
 * record gives a fresh context and one warning; a damaged one is quarantined, logged and never
 * served again, a flipped digit in the memento's data included; the server keeps running and
 * other sessions keep their state.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { decodeMemento } from '../../src/contexts/memento.ts';
import { hashId } from '../../src/log.ts';
import { tableNames } from '../../src/stores/postgres-schema.ts';
import { Client, skipOrFailOnCi, startTestServer, waitFor, type LogLine, type TestServer } from '../helpers.ts';
import { withClient } from './postgres-helpers.ts';
import { STORE_HOOKS, clientWith, logsWith, savedOf, state } from './server-helpers.ts';
import { openShared, sharedUnavailable, withRedis, type OpenShared, type SharedKind } from './shared-subjects.ts';

const TEST = { timeout: 60_000 };

function start(shared: OpenShared): Promise<TestServer> {
  return startTestServer({ workers: { threads: 1 }, hooks: STORE_HOOKS, sessions: { processTimeout: '200ms' }, store: shared.config });
}

/** The stored memento of `id`, decoded; undefined when there is no record. */
async function storedData(shared: OpenShared, id: string): Promise<{ n?: number; label?: string } | undefined> {
  const record = await shared.store.get(id);
  if (!record?.memento) return undefined;
  return (decodeMemento(record.memento) as { data: { n?: number; label?: string } }).data;
}

/** Changes one field of the stored record of `id` behind the server's back. */
async function damage(shared: OpenShared, id: string, how: 'delete' | 'truncate' | 'flip-digit' | 'wrong-type' | 'bad-number'): Promise<void> {
  if (shared.kind === 'redis') {
    const key = `${shared.name}s:${id}`;
    await withRedis(async (redis) => {
      const memento = (await redis.hGet(key, 'memento')) ?? '';
      if (how === 'delete') await redis.del(key);
      else if (how === 'truncate') await redis.hSet(key, 'memento', memento.slice(0, Math.floor(memento.length / 2)));
      else if (how === 'flip-digit') {
        assert.ok(memento.includes('1000'), 'the digits to flip are in the stored memento');
        await redis.hSet(key, 'memento', memento.replace('1000', '9000'));
      }
      else if (how === 'wrong-type') {
        await redis.del(key);
        await redis.set(key, 'not a hash');
      } else await redis.hSet(key, 'fence', 'x1');
    });
    return;
  }
  const sessions = tableNames(shared.name).sessions;
  const change = {
    delete: `DELETE FROM ${sessions} WHERE id = $1`,
    truncate: `UPDATE ${sessions} SET memento = left(memento, length(memento) / 2) WHERE id = $1`,
    'flip-digit': `UPDATE ${sessions} SET memento = replace(memento, '1000', '9000') WHERE id = $1 AND memento LIKE '%1000%'`,
    'wrong-type': `UPDATE ${sessions} SET memento = '"just a string"' WHERE id = $1`,
    'bad-number': `UPDATE ${sessions} SET fence = -1 WHERE id = $1`,
  }[how];
  const { rowCount } = await withClient((client) => client.query(change, [id]));
  assert.equal(rowCount, 1, `${how}: the row was there to damage`);
}

const corruptionLines = (logs: LogLine[], id: string) =>
  logs.filter((line) => (line.event === 'record-corrupt' || line.event === 'memento-corrupt') && line.session === hashId(id));

const unavailable = await sharedUnavailable();

describe('lost and corrupt records in Redis and PostgreSQL, side by side', { concurrency: true }, () => {
  for (const kind of ['redis', 'postgres'] as SharedKind[]) {
    const missing = unavailable[kind];
    if (missing) {
      test(`${kind} store: lost and corrupt records`, (t) => skipOrFailOnCi(t, missing));
      continue;
    }
    describe(`${kind} store: lost and corrupt records`, () => {
      test('E8: a suspended session\'s record is lost: a fresh context (resumed false), one warn line, no crash; another session keeps its state', TEST, async () => {
        const shared = await openShared(kind);
        const t = await start(shared);
        try {
          const [victim, bystander] = [new Client(t.url), new Client(t.url)];
          await state(victim, '/inc');
          await state(victim, '/inc');
          await state(bystander, '/inc');
          const id = victim.cookie!;
          await waitFor(async () => (await storedData(shared, id))?.n === 2, 5000, 'the idle suspend after the last request');
          await damage(shared, id, 'delete');
          const fresh = await state(victim);
          assert.equal(fresh.resumed, false);
          assert.equal(savedOf(fresh), undefined);
          assert.deepEqual(fresh.data, {});
          const warning = logsWith(t.logs, 'memento-missing', hashId(id));
          assert.equal(warning.length, 1, 'one warn line');
          assert.equal(warning[0]!.level, 40);
          assert.equal((await state(victim, '/inc')).data.n, 1, 'the fresh context works');
          assert.equal((await state(bystander, '/inc')).data.n, 2, 'the other session is unaffected');
        } finally {
          await t.close();
        }
      });

      test('E11: a truncated memento, a flipped digit in its data, a value of another type and a bad number are each quarantined, logged and never served', TEST, async () => {
        const shared = await openShared(kind);
        const t = await start(shared);
        try {
          const cases = ['truncate', 'flip-digit', 'wrong-type', 'bad-number'] as const;
          const clients = new Map<(typeof cases)[number], Client>();
          for (const how of cases) {
            const client = new Client(t.url);
            await state(client, `/put?key=label&value=${how}-1000`);
            await state(client, '/inc');
            clients.set(how, client);
          }
          const bystander = new Client(t.url);
          await state(bystander, '/inc');
          await waitFor(
            async () => (await Promise.all([...clients.values()].map(async (c) => (await storedData(shared, c.cookie!))?.n === 1))).every(Boolean),
            5000,
            'every session suspended',
          );
          for (const [how, client] of clients) await damage(shared, client.cookie!, how);
          for (const [how, client] of clients) {
            const damaged = client.cookie!;
            const fresh = await state(client);
            // A readable record with a damaged memento: a fresh context under the same ID. A record
            // that cannot be read is gone once quarantined, and on a shared store a session whose
            // record is gone ends (another node may have closed it): a new ID.
            const id = client.cookie!;
            assert.equal(fresh.resumed, false, `${how}: resumed`);
            assert.equal(savedOf(fresh), undefined, `${how}: a damaged memento was served`);
            assert.deepEqual(fresh.data, {}, `${how}: fresh state`);
            assert.ok(corruptionLines(t.logs, damaged).length > 0, `${how}: logged as record-corrupt or memento-corrupt`);
            assert.ok(await shared.isQuarantined(damaged), `${how}: quarantined`);
            // Never served again: the next suspend writes the fresh context's memento, and that is what comes back.
            await waitFor(async () => (await storedData(shared, id)) !== undefined && (await storedData(shared, id))?.label === undefined, 5000, `${how}: the fresh memento suspended`);
            const later = await state(clientWith(t.url, id));
            assert.equal(later.resumed, true, `${how}: resumed from the new memento`);
            assert.deepEqual(later.data, {}, `${how}: the damaged state came back`);
            assert.ok(!t.rawLogs().includes(id), 'logs name sessions by hash, never by ID');
          }
          assert.equal((await state(bystander, '/inc')).data.n, 2, 'the other session kept its state throughout');
        } finally {
          await t.close();
        }
      });
    });
  }
});
