/**
 * Mementos through a real server and a durable store: every supported type round-trips
 * through a suspend and a restart; a memento that cannot be saved is refused at suspend time,
 * naming its path, and nothing is written (H2); onConnection throwing while restoring keeps the
 * memento for a later attempt (H4).
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { Client, ROOT, waitFor } from '../helpers.ts';
import { buildRich } from '../fixtures/stores/rich.ts';
import { DURABLE, clientWith, logsWith, peek, peekMemento, savedOf, startOn, state, tempStore, cleanup } from './server-helpers.ts';

after(cleanup);

const TEST = { timeout: 30_000 };
const README_IDIOM = join(ROOT, 'test/fixtures/stores/onConnectionReadmeIdiom.ts');

interface RichReply {
  savedText: string | null;
  resumed: boolean;
  checks: Record<string, boolean> | null;
}

async function richReport(client: Client): Promise<RichReply & { saved: any }> {
  const reply = await client.get('/rich');
  assert.equal(reply.status, 200, reply.text);
  const body = reply.json<RichReply>();
  return { ...body, saved: savedOf(body) };
}

function assertRich(report: RichReply & { saved: any }, where: string): void {
  assert.equal(report.resumed, true, `${where}: resumed`);
  assert.ok(report.checks, `${where}: the context was given a rich memento`);
  for (const [name, ok] of Object.entries(report.checks)) assert.equal(ok, true, `${where}: ${name}`);
  assert.deepEqual(report.saved.rich, buildRich(), `${where}: every value round-trips`);
  assert.deepEqual(report.saved.data, { label: 'rich' });
}

describe('mementos in every durable store, side by side', { concurrency: true }, () => {
  for (const kind of DURABLE) {
    describe(`${kind} store: mementos`, () => {
      test('plain data, Date, Map, Set, BigInt, typed arrays, undefined and cycles round-trip through a suspend and a restart', TEST, async () => {
        const store = tempStore(kind);
        let t = await startOn(store, { sessions: { processTimeout: '200ms' } });
        const client = new Client(t.url);
        let id: string;
        try {
          await state(client, '/put?key=label&value=rich');
          await state(client, '/mode?value=rich');
          id = client.cookie!;
          await waitFor(async () => peek(store, id), 5000, 'the idle suspend');
          // Stored as data, never as code: `m1:<checksum>:` then devalue's JSON.
          const stored = peek(store, id)!.memento!;
          assert.match(stored, /^m1:[A-Za-z0-9_-]{22}:/);
          assert.doesNotThrow(() => JSON.parse(stored.slice(stored.indexOf(':', 3) + 1)));
          assertRich(await richReport(client), 'after a suspend');
        } finally {
          await t.close();
        }
        t = await startOn(store);
        try {
          assertRich(await richReport(clientWith(t.url, id)), 'after a restart');
        } finally {
          await t.close();
        }
      });

      test('H2: a function, a class instance or an oversized memento is refused at suspend time, naming it; the context stays live and nothing is written', TEST, async () => {
        const store = tempStore(kind);
        const t = await startOn(store, { sessions: { processTimeout: '200ms', maxMementoSize: 2000 } });
        const ids: string[] = [];
        try {
          const counters = t.server.sessions.stats;
          // A session with a good memento in the store, that then cannot be saved.
          const withFunction = new Client(t.url);
          await state(withFunction, '/inc');
          const fnId = withFunction.cookie!;
          await waitFor(async () => peek(store, fnId), 5000, 'the first idle suspend');
          const good = peek(store, fnId)!;
          // Resumed and made unsaveable in one request.
          const resumed = await state(withFunction, '/mode?value=function');
          assert.equal(resumed.resumed, true);

          // Sessions never saved before.
          const withClass = new Client(t.url);
          const classState = await state(withClass, '/mode?value=class');
          const tooLarge = new Client(t.url);
          const largeState = await state(tooLarge, '/mode?value=big&bigSize=5000');

          const failure = (idHash: string, code: string) =>
            logsWith(t.logs, 'hook-error', idHash).find((line) => line.code === code);
          const fnLine = (await waitFor(async () => failure(resumed.idHash, 'RESIDENT_ERR_MEMENTO_NOT_CLONEABLE'), 5000, 'the function refused'))!;
          const classLine = (await waitFor(async () => failure(classState.idHash, 'RESIDENT_ERR_MEMENTO_NOT_CLONEABLE'), 5000, 'the class refused'))!;
          const largeLine = (await waitFor(async () => failure(largeState.idHash, 'RESIDENT_ERR_MEMENTO_TOO_LARGE'), 5000, 'the big one refused'))!;
          const message = (line: Record<string, unknown>) => String((line.err as { message?: string } | undefined)?.message);
          assert.match(message(fnLine), /memento\.cart\.fn\b/, 'names the path of the function');
          assert.match(message(classLine), /memento\.cart\b/, 'names the path of the class instance');
          assert.match(message(largeLine), /maxMementoSize/);
          assert.match(message(largeLine), /2000/);
          for (const line of [fnLine, classLine, largeLine]) assert.equal(line.hook, "onSessionSuspend(ctx, 'idle')");
          assert.ok(counters.suspended.failed >= 3);

          // Nothing written: the good memento is untouched, the others have no record.
          assert.deepEqual(peek(store, fnId), good);
          assert.equal(peek(store, withClass.cookie!), undefined);
          assert.equal(peek(store, tooLarge.cookie!), undefined);

          // Every context is still live: the counter that is not in the memento continues.
          const fnLive = await state(withFunction);
          assert.equal(fnLive.isNew, false);
          assert.equal(fnLive.requests, 2);
          assert.deepEqual(fnLive.data, { n: 1 });
          assert.equal((await state(withClass)).requests, 2);
          assert.equal((await state(tooLarge)).requests, 2);

          // Fixed: the next suspend (here the shutdown) saves.
          await state(withFunction, '/mode?value=');
          await state(withClass, '/mode?value=');
          await state(tooLarge, '/mode?value=');
          ids.push(fnId, withClass.cookie!, tooLarge.cookie!);
        } finally {
          await t.close();
        }
        assert.deepEqual(peekMemento(store, ids[0]!), { data: { n: 1 }, mode: null });
        assert.deepEqual(peekMemento(store, ids[1]!), { data: {}, mode: null });
        assert.deepEqual(peekMemento(store, ids[2]!), { data: { bigSize: '5000' }, mode: null });
      });

      test('H4: onConnection throws while restoring: 500 with a generic body, the memento is kept and a later request restores it', TEST, async () => {
        const store = tempStore(kind);
        let t = await startOn(store, { sessions: { processTimeout: '200ms' } });
        const client = new Client(t.url);
        let id: string;
        try {
          await state(client, '/inc');
          await state(client, '/inc');
          id = client.cookie!;
          await waitFor(async () => peek(store, id), 5000, 'the idle suspend');
          const before = peek(store, id);

          const failed = await client.get('/state?failRestore=1');
          assert.equal(failed.status, 500);
          assert.equal(failed.text, 'Internal Server Error');
          assert.doesNotMatch(failed.text, /secret|restore failed/);
          assert.equal(client.cookie, id, 'the session is kept');
          const line = logsWith(t.logs, 'hook-error').find((l) => l.hook === 'onConnection');
          assert.ok(line, 'the failure is logged');
          assert.deepEqual(peek(store, id), before, 'the memento is kept in the store');

          const retry = await state(client);
          assert.equal(retry.resumed, true);
          assert.deepEqual(retry.data, { n: 2 }, 'restored on the second attempt');

          // Once more, and this time the server restarts before anyone retries.
          await waitFor(async () => (peek(store, id)?.updatedAt ?? 0) > before!.updatedAt, 5000, 'the next idle suspend');
          assert.equal((await client.get('/state?failRestore=1')).status, 500);
        } finally {
          await t.close();
        }
        t = await startOn(store);
        try {
          const later = await state(clientWith(t.url, id));
          assert.equal(later.id, id);
          assert.equal(later.resumed, true);
          assert.deepEqual(later.data, { n: 2 });
        } finally {
          await t.close();
        }
      });

      test('H4 with the README\'s restore idiom (ctx.isNew && ctx.resumed): a request after the failed one still gets the memento', TEST, async () => {
        const store = tempStore(kind);
        const t = await startOn(store, { sessions: { processTimeout: '200ms' }, hooks: { onConnection: README_IDIOM } });
        try {
          const client = new Client(t.url);
          await state(client, '/inc');
          await state(client, '/inc');
          const id = client.cookie!;
          await waitFor(async () => peek(store, id), 5000, 'the idle suspend');
          const kept = peek(store, id)!;

          const failed = await client.get('/state?failRestore=1');
          assert.equal(failed.status, 500);
          assert.equal(failed.text, 'Internal Server Error');
          assert.deepEqual(peek(store, id), kept, 'the memento is kept in the store');

          // "so a later request can retry": the next request must see the memento again.
          const retry = await state(client);
          assert.deepEqual(retry.data, { n: 2 }, 'the later request did not get the kept memento (ctx.isNew is false, nothing to retry)');
        } finally {
          await t.close();
        }
      });
    });
  }
});
