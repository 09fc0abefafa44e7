/**
 * Strict session IDs against every store (RELIABILITY.md A3, A4, A7), through a real server: a
 * never-issued ID is not adopted and nothing is written for it; a closed session's record is
 * deleted and never resurrected, also across a restart; injection-shaped IDs never reach the
 * store, even when the store holds a record under exactly that text (a Redis key that is a
 * glob, a PostgreSQL row whose ID is SQL). Redis and PostgreSQL are the machine's, with a key
 * prefix or table of this run's own.
 */
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { encodeMemento } from '../../src/contexts/memento.ts';
import { newSessionId } from '../../src/contexts/ids.ts';
import type { ResidentConfigInput } from '../../src/config.ts';
import { MemoryStore } from '../../src/stores/memory.ts';
import { SqliteStore } from '../../src/stores/sqlite.ts';
import type { ContextStore, SessionRecord } from '../../src/stores/store.ts';
import { hashId } from '../../src/log.ts';
import { Client, skipOrFailOnCi, startTestServer, waitFor, type TestServer } from '../helpers.ts';
import { openShared, sharedUnavailable, type SharedKind } from './shared-subjects.ts';
import {
  STORE_HOOKS,
  clientWith,
  cookieValues,
  listTree,
  logsWith,
  peek,
  sessionRowCount,
  startOn,
  state,
  tempStore,
  quarantined,
  withDb,
  type StoreKind,
  type TempStore,
  cleanup,
} from './server-helpers.ts';

after(cleanup);

const TEST = { timeout: 60_000 };
/** An issued session ID: 22 random characters, then 2 naming its home slot (src/contexts/ids.ts). */
const ID_SHAPE = /^[A-Za-z0-9_-]{22}[A-Za-z0-9_-]{2}$/;

/** A MemoryStore that notes every ID it is asked about: the shipped store, observed. */
class ObservedMemoryStore extends MemoryStore {
  readonly lookups: string[] = [];
  readonly writes: string[] = [];
  override async get(id: string) {
    this.lookups.push(id);
    return super.get(id);
  }
  override async set(record: SessionRecord) {
    this.writes.push(record.id);
    return super.set(record);
  }
  override async delete(id: string) {
    this.writes.push(id);
    return super.delete(id);
  }
}

/** A server on a MemoryStore the test holds (the config cannot hand one over), logs captured. */
function startOnMemory(store: MemoryStore, overrides: ResidentConfigInput = {}): Promise<TestServer> {
  return startTestServer({ workers: { threads: 1 }, ...overrides, hooks: STORE_HOOKS }, undefined, store);
}

/** One store kind, as the tests below need it. */
interface Subject {
  start(overrides?: ResidentConfigInput): Promise<TestServer>;
  /** The stored record (memory: only while the server runs). */
  get(id: string): Promise<SessionRecord | undefined>;
  durable: TempStore | null;
  memory: ObservedMemoryStore | null;
  /** Redis or PostgreSQL: the shipped store on this run's prefix or table, open beside the server's. */
  shared: ContextStore | null;
}

type SubjectKind = StoreKind | SharedKind;

/** A Redis or PostgreSQL subject: the server and the test's own store on one prefix or table. */
async function sharedSubject(kind: SharedKind): Promise<Subject> {
  const { store, config } = await openShared(kind);
  return {
    start: (overrides = {}) => startTestServer({ workers: { threads: 1 }, ...overrides, hooks: STORE_HOOKS, store: config }),
    get: (id) => store.get(id),
    durable: null,
    memory: null,
    shared: store,
  };
}

/** Every record the shared store holds (a listing, which reads what a scan or SELECT finds). */
async function sharedRecords(store: ContextStore): Promise<Array<{ id: string; userId: string | null }>> {
  return (await store.list({ limit: 10_000 })).map(({ id, userId }) => ({ id, userId }));
}

async function subject(kind: SubjectKind): Promise<Subject> {
  if (kind === 'redis' || kind === 'postgres') return sharedSubject(kind);
  if (kind === 'memory') {
    const memory = new ObservedMemoryStore();
    return {
      start: (overrides) => startOnMemory(memory, overrides),
      get: async (id) => {
        const before = memory.lookups.length;
        const record = await memory.get(id);
        memory.lookups.length = before; // the test's own look, not the server's
        return record;
      },
      durable: null,
      memory,
      shared: null,
    };
  }
  const store = tempStore(kind);
  return { start: (overrides) => startOn(store, overrides), get: async (id) => peek(store, id), durable: store, memory: null, shared: null };
}

/** A record under an arbitrary ID, as if someone had planted it in the store. */
function planted(id: string): SessionRecord {
  const now = Date.now();
  return {
    id,
    userId: 'victim',
    memento: encodeMemento({ data: { n: 999 }, mode: null }, Infinity),
    mementoVersion: 1,
    clientIp: '127.0.0.1',
    createdAt: now - 1000,
    updatedAt: now,
    lastActivityAt: now,
    expiresAt: now + 3_600_000,
    owner: null,
    fence: 0,
  };
}

test('memory store: the requests of a live context never touch the store', TEST, async () => {
  const memory = new ObservedMemoryStore();
  const t = await startOnMemory(memory, { sessions: { processTimeout: '1h' } });
  try {
    const client = new Client(t.url);
    for (let i = 0; i < 20; i++) await state(client, '/inc');
    assert.deepEqual(memory.lookups, []);
    assert.deepEqual(memory.writes, []);
  } finally {
    await t.close();
  }
  assert.deepEqual(memory.writes.length, 1, 'one write: the shutdown suspend');
});

/** What the store folder must never be steered to: outside it, or globbed inside it. */
const HOSTILE = [
  '../../etc/passwd',
  '..%2f..%2fx',
  "x' OR 1=1--",
  '*',
  '?',
  'A'.repeat(5 * 1024),
  '../victim',
  // Exactly 22 characters, so only the alphabet check stands in the way.
  `../${'v'.repeat(19)}`,
  "x' OR 1=1--".padEnd(22, '-'),
  "%' OR id LIKE '%".padEnd(22, '%'),
  '*'.repeat(22),
  '?'.repeat(22),
  '..%2f..%2f'.padEnd(22, 'x'),
  '..\\..\\..\\..\\..\\victim',
  // The right alphabet, the wrong length.
  'A'.repeat(21),
  'A'.repeat(23),
];

const unavailableShared = await sharedUnavailable();

describe('strict IDs against every store, side by side', { concurrency: true }, () => {
  for (const kind of ['memory', 'sqlite', 'file', 'redis', 'postgres'] as SubjectKind[]) {
    const unavailable = kind === 'redis' || kind === 'postgres' ? unavailableShared[kind] : undefined;
    if (unavailable) {
      test(`${kind} store: strict IDs`, (t) => skipOrFailOnCi(t, unavailable));
      continue;
    }
    describe(`${kind} store: strict IDs`, () => {
      test('A3: a never-issued, well-formed ID gets a new ID, and nothing is written to the store for it', TEST, async () => {
        const s = await subject(kind);
        const forged = newSessionId();
        const t = await s.start({ sessions: { processTimeout: '200ms' } });
        try {
          const client = clientWith(t.url, forged);
          const first = await state(client, '/inc');
          assert.notEqual(first.id, forged);
          assert.match(first.id, ID_SHAPE);
          assert.equal(first.resumed, false);
          assert.deepEqual(cookieValues(first.reply), [first.id]);
          assert.ok(
            logsWith(t.logs, 'unknown-id').some((line) => (line.presented as string[]).includes(hashId(forged))),
            'logged as suspicious',
          );
          // The new session is written when it suspends; the forged ID never is.
          await waitFor(async () => s.get(first.id), 5000, 'the new session suspended');
          assert.equal(await s.get(forged), undefined);
          const again = await state(clientWith(t.url, forged));
          assert.notEqual(again.id, forged, 'not adopted later either');
          assert.notEqual(again.id, first.id);
          assert.equal(await s.get(forged), undefined);
          if (s.memory) assert.ok(!s.memory.writes.includes(forged), 'no write for the forged ID');
        } finally {
          await t.close();
        }
        if (s.durable) {
          assert.equal(peek(s.durable, forged), undefined, 'nothing for it after the shutdown either');
          if (kind === 'sqlite') assert.equal(sessionRowCount(s.durable.path), 2, 'only the two issued sessions');
        }
        if (s.shared) {
          assert.equal(await s.get(forged), undefined, 'nothing for it after the shutdown either');
          assert.equal((await sharedRecords(s.shared)).length, 2, 'only the two issued sessions');
        }
      });

      test('A4: a closed session is deleted from the store and never resurrected, also after a restart', TEST, async () => {
        const s = await subject(kind);
        let t = await s.start({ sessions: { processTimeout: '200ms' } });
        const client = new Client(t.url);
        let id: string;
        try {
          await state(client, '/inc');
          id = client.cookie!;
          await waitFor(async () => s.get(id), 5000, 'the session suspended into the store');
          const closed = await client.get('/close');
          assert.equal(closed.status, 200);
          assert.equal(client.cookie, undefined, 'the cookie is expired');
          await waitFor(async () => (await s.get(id)) === undefined, 5000, 'the record deleted');
          const stale = await state(clientWith(t.url, id), '/inc');
          assert.notEqual(stale.id, id);
          assert.equal(stale.resumed, false);
          assert.deepEqual(stale.data, { n: 1 });
          assert.equal(await s.get(id), undefined);
        } finally {
          await t.close();
        }
        if (!s.durable && !s.shared) return;
        assert.equal(await s.get(id), undefined);
        t = await s.start();
        try {
          const afterRestart = await state(clientWith(t.url, id));
          assert.notEqual(afterRestart.id, id, 'not resurrected from a store copy');
          assert.equal(afterRestart.resumed, false);
        } finally {
          await t.close();
        }
        assert.equal(await s.get(id), undefined);
      });

      test('A7: injection-shaped IDs never reach the store, even when it holds a record under that very text', TEST, async () => {
        const s = await subject(kind);
        const plantedShared = new Map(HOSTILE.map((value) => [value, planted(value)]));
        const planted22 = HOSTILE.filter((value) => value.length === 22 && !/^[A-Za-z0-9_-]{22}$/.test(value));
        let dir: string | undefined;
        if (s.memory) {
          for (const value of HOSTILE) await s.memory.set(planted(value));
          s.memory.writes.length = 0;
        } else if (s.shared) {
          for (const value of HOSTILE) await s.shared.set(plantedShared.get(value)!);
        } else if (s.durable?.kind === 'sqlite') {
          const seed = new SqliteStore({ path: s.durable.path });
          for (const value of HOSTILE) await seed.set(planted(value));
          await seed.close();
        } else if (s.durable) {
          dir = s.durable.dir;
          // Records the traversal would read: next to the store folder...
          writeFileSync(join(dir, 'victim.json'), JSON.stringify(planted('../victim')));
          writeFileSync(join(dir, `${'v'.repeat(19)}.json`), JSON.stringify(planted(`../${'v'.repeat(19)}`)));
          // ...and inside it, under names a glob or an unchecked ID would match.
          mkdirSync(s.durable.path, { recursive: true });
          for (const value of planted22.filter((v) => !v.includes('/') && !v.includes('\\'))) {
            writeFileSync(join(s.durable.path, `${value}.json`), JSON.stringify(planted(value)));
          }
        }
        const t = await s.start({ sessions: { processTimeout: '1h' } });
        const tree = dir ? listTree(dir) : undefined;
        const rows = s.durable?.kind === 'sqlite' ? sessionRowCount(s.durable.path) : 0;
        const sharedBefore = s.shared ? await sharedRecords(s.shared) : [];
        try {
          const created = t.server.sessions.stats.created;
          for (const value of HOSTILE) {
            const reply = await clientWith(t.url, undefined).get('/state', { headers: { cookie: `RSID=${value}` } });
            assert.equal(reply.status, 200, `${value.slice(0, 30)} → ${reply.status} ${reply.text}`);
            const body = reply.json<{ id: string; resumed: boolean; data: { n?: number } }>();
            assert.notEqual(body.id, value);
            assert.match(body.id, ID_SHAPE);
            assert.equal(body.resumed, false, `${value.slice(0, 30)}: a planted record was adopted`);
            assert.equal(body.data.n, undefined, `${value.slice(0, 30)}: a planted memento was served`);
          }
          assert.equal(t.server.sessions.stats.created, created + HOSTILE.length);
          assert.equal(t.server.sessions.stats.adopted, 0);
          if (s.memory) {
            for (const value of HOSTILE) assert.ok(!s.memory.lookups.includes(value), `${value.slice(0, 30)} reached the store`);
            assert.deepEqual(s.memory.writes, []);
            for (const id of s.memory.lookups) assert.match(id, ID_SHAPE);
            for (const value of HOSTILE) assert.ok(await s.get(value), 'the planted record is untouched');
          }
          if (s.durable?.kind === 'sqlite') {
            assert.equal(sessionRowCount(s.durable.path), rows, 'the sessions table row count is unchanged');
            assert.equal(rows, HOSTILE.length);
            assert.deepEqual(quarantined(s.durable), []);
            const userIds = withDb(s.durable.path, (db) => db.prepare('SELECT DISTINCT user_id FROM sessions').all());
            assert.deepEqual(userIds, [{ user_id: 'victim' }], 'no row rewritten');
          }
          if (dir) assert.deepEqual(listTree(dir), tree, 'no file created, moved or changed in or around the store folder');
          if (s.shared) {
            // The records planted under glob- and SQL-shaped keys are all there and untouched, and
            // no other record appeared (nothing written while the sessions stay live).
            assert.equal(sharedBefore.length, HOSTILE.length);
            assert.deepEqual(await sharedRecords(s.shared), sharedBefore);
            for (const value of HOSTILE) assert.deepEqual(await s.get(value), plantedShared.get(value), `${value.slice(0, 30)}: the planted record changed`);
          }
        } finally {
          await t.close();
        }
      });
    });
  }
});
