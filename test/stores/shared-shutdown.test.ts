/**
 * E3 on the shared stores at scale, through a real server (issue 13): a graceful shutdown with
 * thousands of live contexts saves every one into Redis or PostgreSQL. All started at once,
 * their store calls queued behind Redis's one connection or PostgreSQL's pool and ran out of
 * callTimeout in the queue: the benchmark's shutdown of 100,000 contexts lost all of them. And
 * a store that drops for a moment during the shutdown costs nothing: the refused suspends are
 * tried again until the deadline.
 */
import assert from 'node:assert/strict';
import type { TestContext } from 'node:test';
import { Agent, request } from 'undici';
import { decodeMemento } from '../../src/contexts/memento.ts';
import { startTestServer, type TestServer } from '../helpers.ts';
import { STORE_HOOKS } from './server-helpers.ts';
import { openShared, type OpenShared } from './shared-subjects.ts';
import { forEachShared, proxyFor, type SharedKind } from './shared-helpers.ts';

const SESSIONS = 3_000;
/** Short enough that the old all-at-once shutdown lost most of them on this machine; Redis is the faster queue. */
const CALL_TIMEOUT: Record<SharedKind, string> = { redis: '50ms', postgres: '300ms' };

function start(config: OpenShared['config'], callTimeout: string, shutdownTimeout = '30s'): Promise<TestServer> {
  return startTestServer({
    workers: { threads: 2 },
    hooks: STORE_HOOKS,
    limits: { shutdownTimeout },
    sessions: { processTimeout: '1h', maxContexts: SESSIONS * 2 },
    store: { ...config, callTimeout },
  });
}

/** `count` sessions, each made and proven (its cookie sent back once, /inc), `lanes` at a time; their IDs. */
async function provenSessions(url: string, count: number, lanes = 32): Promise<string[]> {
  const agent = new Agent({ connections: lanes });
  const ids: string[] = [];
  const lane = async () => {
    while (ids.length < count) {
      const first = await request(`${url}/inc`, { dispatcher: agent });
      await first.body.text();
      const cookie = String(first.headers['set-cookie']).split(';')[0]!;
      const second = await request(`${url}/inc`, { dispatcher: agent, headers: { cookie } });
      assert.equal(second.statusCode, 200, await second.body.text());
      ids.push(cookie.slice(cookie.indexOf('=') + 1));
    }
  };
  await Promise.all(Array.from({ length: lanes }, lane));
  await agent.close();
  return ids;
}

/** How many of `ids` the store holds with the memento of two /inc. */
async function savedCount(shared: OpenShared, ids: string[]): Promise<number> {
  let saved = 0;
  for (const id of ids) {
    const record = await shared.store.get(id);
    if (record?.memento && (decodeMemento(record.memento) as { data: { n?: number } }).data.n === 2) saved++;
  }
  return saved;
}

forEachShared('E3 at scale on the shared stores', (kind) => `shutdown with ${SESSIONS} live contexts and callTimeout ${CALL_TIMEOUT[kind]}: every one suspended into the store, none lost`, 180_000, async (t: TestContext, kind: SharedKind) => {
  const shared = await openShared(kind);
  const server = await start(shared.config, CALL_TIMEOUT[kind]);
  let result;
  let ids: string[] = [];
  try {
    ids = await provenSessions(server.url, SESSIONS);
    assert.equal(server.server.sessions.stats.live, ids.length);
  } finally {
    result = await server.server.shutdown();
    await server.close();
  }
  t.diagnostic(`${kind}: ${JSON.stringify(result)}`);
  assert.deepEqual(result, { suspended: ids.length, lost: 0 });
  assert.equal(await savedCount(shared, ids), ids.length, 'every memento in the store');
});

forEachShared('E3 and E7 on the shared stores', () => 'the store drops for 1.5 s as shutdown begins: the refused suspends are tried again, none lost', 60_000, async (t: TestContext, kind: SharedKind) => {
  const { proxy, url } = await proxyFor(kind);
  const shared = await openShared(kind);
  const server = await start({ ...shared.config, url }, '300ms');
  let result;
  let ids: string[] = [];
  try {
    ids = await provenSessions(server.url, 40, 8);
    proxy.cut();
    setTimeout(() => proxy.restore(), 1_500);
  } finally {
    result = await server.server.shutdown();
    await server.close();
  }
  assert.deepEqual(result, { suspended: ids.length, lost: 0 });
  const refused = server.logs.filter((line) => line.level >= 50 && line.code === 'RESIDENT_ERR_STORE_FAILED');
  assert.ok(refused.length > 0, 'the store refused suspends while it was gone (the outage really happened)');
  assert.equal(await savedCount(shared, ids), ids.length, 'every memento in the store');
});
