/**
 * A store that loses or mangles records behind the server's back (RELIABILITY.md E8, E11),
 * through a real server: a lost record gives a fresh context and a warning; a corrupt one is
 * quarantined, logged and never served again; the server keeps running.
 */
import assert from 'node:assert/strict';
import { readFileSync, unlinkSync, writeFileSync } from 'node:fs';
import { after, describe, test } from 'node:test';
import { Client, waitFor, type LogLine } from '../helpers.ts';
import { hashId } from '../../src/log.ts';
import {
  DURABLE,
  clientWith,
  isQuarantined,
  logsWith,
  peek,
  peekMemento,
  recordFile,
  savedOf,
  startOn,
  state,
  tempStore,
  withDb,
  type TempStore,
  cleanup,
} from './server-helpers.ts';

after(cleanup);

const TEST = { timeout: 30_000 };

/** A session per case, each with state, all suspended into the store. */
async function suspendedSessions(url: string, store: TempStore, names: string[]): Promise<Map<string, Client>> {
  const clients = new Map<string, Client>();
  for (const name of names) {
    const client = new Client(url);
    await state(client, `/put?key=label&value=${name}`);
    await state(client, '/inc');
    clients.set(name, client);
  }
  // n is in the memento only once the suspend after the last request has written it.
  await waitFor(async () => [...clients.values()].every((client) => peekMemento(store, client.cookie!)?.data?.n === 1), 5000, 'every session suspended');
  return clients;
}

function corruptionLines(logs: LogLine[], id: string): LogLine[] {
  const session = hashId(id);
  return logs.filter((line) => (line.event === 'record-corrupt' || line.event === 'memento-corrupt') && line.session === session);
}

/** The record file with one bit of byte `index` flipped. */
function flipBit(path: string, index: number, bit: number): void {
  const bytes = readFileSync(path);
  bytes[index] = bytes[index]! ^ bit;
  writeFileSync(path, bytes);
}

/** After a corrupt record: the client got a fresh context, the record is quarantined, and it is never served again. */
async function assertQuarantinedAndFresh(t: { logs: LogLine[]; url: string }, store: TempStore, name: string, client: Client): Promise<void> {
  const id = client.cookie!;
  const fresh = await state(client);
  assert.equal(fresh.resumed, false, `${name}: resumed`);
  assert.equal(savedOf(fresh), undefined, `${name}: a corrupt memento was served`);
  assert.deepEqual(fresh.data, {}, `${name}: fresh state`);
  assert.ok(corruptionLines(t.logs, id).length > 0, `${name}: logged as record-corrupt or memento-corrupt`);
  assert.ok(isQuarantined(store, id), `${name}: quarantined`);
  // Never served again: the next suspend writes the fresh context's memento, and that is what comes back.
  await waitFor(async () => peek(store, id)?.memento?.includes('label') === false, 5000, `${name}: the fresh memento suspended`);
  const later = await state(client);
  assert.equal(later.resumed, true, `${name}: resumed from the new memento`);
  assert.deepEqual(later.data, {}, `${name}: the corrupt state came back`);
}

describe('lost and corrupt records in every durable store, side by side', { concurrency: true }, () => {
  for (const kind of DURABLE) {
    describe(`${kind} store: lost and corrupt records`, () => {
      test('E8: the store loses a suspended session\'s record: a fresh context (resumed false), a warn line, no crash', TEST, async () => {
        const store = tempStore(kind);
        const t = await startOn(store, { sessions: { processTimeout: '200ms' } });
        try {
          const [victim, bystander] = [new Client(t.url), new Client(t.url)];
          await state(victim, '/inc');
          await state(victim, '/inc');
          await state(bystander, '/inc');
          const id = victim.cookie!;
          await waitFor(async () => peekMemento(store, id)?.data?.n === 2, 5000, 'the idle suspend after the last request');
          if (kind === 'sqlite') withDb(store.path, (db) => db.prepare('DELETE FROM sessions WHERE id = ?').run(id));
          else unlinkSync(recordFile(store, id));

          const fresh = await state(victim);
          assert.equal(fresh.resumed, false);
          assert.equal(savedOf(fresh), undefined);
          assert.deepEqual(fresh.data, {});
          const warning = logsWith(t.logs, 'memento-missing', hashId(id));
          assert.equal(warning.length, 1, 'one warn line');
          assert.equal(warning[0]!.level, 40);
          assert.equal((await state(victim, '/inc')).data.n, 1, 'the fresh context works');
          assert.equal((await state(bystander, '/inc')).data.n, 2, 'other sessions are unaffected');
        } finally {
          await t.close();
        }
      });

      test('E11: a corrupt record (truncated, wrong types, flipped bits) is quarantined and logged; the client gets a fresh context', TEST, async () => {
        const store = tempStore(kind);
        const t = await startOn(store, { sessions: { processTimeout: '200ms' } });
        try {
          const cases: Record<string, (id: string) => void> =
            kind === 'file'
              ? {
                  'truncated JSON': (id) => {
                    const text = readFileSync(recordFile(store, id), 'utf8');
                    writeFileSync(recordFile(store, id), text.slice(0, Math.floor(text.length / 2)));
                  },
                  'an empty file': (id) => writeFileSync(recordFile(store, id), ''),
                  'a version of the wrong type': (id) => {
                    const record = JSON.parse(readFileSync(recordFile(store, id), 'utf8'));
                    writeFileSync(recordFile(store, id), JSON.stringify({ ...record, mementoVersion: 'one' }));
                  },
                  'a memento of the wrong type': (id) => {
                    const record = JSON.parse(readFileSync(recordFile(store, id), 'utf8'));
                    writeFileSync(recordFile(store, id), JSON.stringify({ ...record, memento: { n: 1 } }));
                  },
                  'another session\'s ID inside': (id) => {
                    const record = JSON.parse(readFileSync(recordFile(store, id), 'utf8'));
                    writeFileSync(recordFile(store, id), JSON.stringify({ ...record, id: 'B'.repeat(22) }));
                  },
                  'a flipped bit in the JSON structure': (id) => flipBit(recordFile(store, id), 0, 0x01),
                  'a flipped bit in the memento encoding': (id) => {
                    const text = readFileSync(recordFile(store, id), 'utf8');
                    // The first byte of the encoded memento (past its format prefix and checksum).
                    const start = text.indexOf('"memento":"') + '"memento":"'.length;
                    flipBit(recordFile(store, id), Buffer.byteLength(text.slice(0, text.indexOf(':', text.indexOf(':', start) + 1) + 1)), 0x01);
                  },
                }
              : {
                  'a truncated memento': (id) => update(store, "memento = '[{\"a\":'", id),
                  'a memento of the wrong type (integer)': (id) => update(store, 'memento = 42', id),
                  'a memento of the wrong type (blob)': (id) => update(store, "memento = X'00ff7b5b'", id),
                  'a version of the wrong type': (id) => update(store, "memento_version = 'one'", id),
                  'a time of the wrong type': (id) => update(store, "created_at = 'yesterday'", id),
                  'JSON that is not a memento': (id) => update(store, "memento = '\"just a string\"'", id),
                  'a flipped bit in the memento encoding': (id) => update(store, "memento = 'Z' || substr(memento, 2)", id),
                };
          const clients = await suspendedSessions(t.url, store, Object.keys(cases));
          for (const [name, corrupt] of Object.entries(cases)) corrupt(clients.get(name)!.cookie!);
          const bystander = new Client(t.url);
          await state(bystander, '/inc');
          for (const [name, client] of clients) {
            await assertQuarantinedAndFresh(t, store, name, client);
            assert.equal((await state(bystander, '/inc')).reply.status, 200, 'the server keeps running');
            assert.ok(!t.rawLogs().includes(client.cookie!), 'logs name sessions by hash, never by ID');
          }
        } finally {
          await t.close();
        }
      });

      test('E11: a record corrupted while the server was down is quarantined and logged; the client gets a new session', TEST, async () => {
        const store = tempStore(kind);
        let t = await startOn(store);
        const client = new Client(t.url);
        await state(client, '/inc');
        const id = client.cookie!;
        await t.close();
        if (kind === 'file') writeFileSync(recordFile(store, id), '{"id":');
        else update(store, "memento = '[{\"a\":'", id);

        t = await startOn(store);
        try {
          const fresh = await state(clientWith(t.url, id));
          assert.equal(fresh.resumed, false);
          assert.equal(savedOf(fresh), undefined);
          assert.deepEqual(fresh.data, {});
          assert.ok(corruptionLines(t.logs, id).length > 0, 'logged');
          assert.ok(isQuarantined(store, id), 'quarantined');
          assert.equal(peek(store, id)?.memento?.includes('{"a":') ?? false, false, 'the corrupt memento is not in the sessions any more');
        } finally {
          await t.close();
        }
      });

      test('E11: a bit flipped inside the memento\'s data is detected (quarantined), not served as a different value', TEST, async () => {
        const store = tempStore(kind);
        const t = await startOn(store, { sessions: { processTimeout: '200ms' } });
        try {
          const client = new Client(t.url);
          await state(client, '/put?key=balance&value=1000');
          const id = client.cookie!;
          await waitFor(async () => peek(store, id), 5000, 'the idle suspend');
          // '1' (0x31) → '9' (0x39): one bit, and the memento still parses.
          if (kind === 'sqlite') update(store, `memento = replace(memento, '"1000"', '"9000"')`, id);
          else {
            const text = readFileSync(recordFile(store, id), 'utf8');
            flipBit(recordFile(store, id), Buffer.byteLength(text.slice(0, text.indexOf('\\"1000\\"') + 2)), 0x08);
          }
          assert.match(peek(store, id)!.memento!, /"9000"/, 'the flip is in place');
          const s = await state(client);
          assert.notEqual(s.data.balance, '9000', 'a flipped bit was served as data');
          assert.equal(s.resumed, false);
          assert.ok(isQuarantined(store, id));
        } finally {
          await t.close();
        }
      });
    });
  }
});

function update(store: TempStore, assignment: string, id: string): void {
  const changed = withDb(store.path, (db) => db.prepare(`UPDATE sessions SET ${assignment} WHERE id = ?`).run(id).changes);
  assert.equal(changed, 1, `UPDATE ${assignment}`);
}
