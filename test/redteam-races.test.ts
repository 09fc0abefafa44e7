/**
 * Red team: races around a session's end, regenerate, admin suspend and the cap, run many
 * times through a real server. A closed or regenerated-away ID must never come back, and no
 * acknowledged increment may be lost.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { Agent } from 'undici';
import { Client, FIXTURE_HOOKS, ROOT, send, startTestServer, type Reply, type TestServer } from './helpers.ts';

const HOOKS = { ...FIXTURE_HOOKS, onConnection: join(ROOT, 'test/fixtures/redteam/onConnection.ts') };

const servers: TestServer[] = [];
const agent = new Agent({ connections: 64 });
after(async () => {
  await Promise.all(servers.map((t) => t.close()));
  await agent.close();
});

async function serverWith(overrides: Parameters<typeof startTestServer>[0] = {}): Promise<TestServer> {
  const t = await startTestServer({ workers: { threads: 2 }, log: { level: 'warn' }, ...overrides, hooks: { ...HOOKS, ...overrides.hooks } });
  servers.push(t);
  return t;
}

function as(t: TestServer, id: string, path: string): Promise<Reply> {
  return send(t.url + path, { headers: { cookie: `RSID=${id}` }, dispatcher: agent });
}

function issued(reply: Reply): string[] {
  return reply.setCookies.filter((line) => line.startsWith('RSID=')).map((line) => line.slice(5, line.indexOf(';')));
}

test('red team: a session closed while requests of it race the close never comes back (300 rounds)', { timeout: 60_000 }, async () => {
  const t = await serverWith();
  for (let round = 0; round < 300; round++) {
    const first = await send(`${t.url}/inc`, { dispatcher: agent });
    const id = issued(first)[0]!;
    const paths = ['/inc', '/inc', round % 2 ? '/close' : '/slow-close?ms=5', '/inc', '/inc'];
    const replies = await Promise.all(paths.map((path) => as(t, id, path)));
    for (const reply of replies) assert.equal(reply.status, 200, `round ${round}: ${reply.text}`);
    const closeReply = replies[2]!;
    assert.ok(issued(closeReply).every((value) => value === ''), `round ${round}: the close expires the cookie`);
    // Requests answered after the close never renew the dead ID. Sent at once on connections of
    // their own, they reach the session's home in any order (some on its thread, some through a
    // hop): one that renewed the ID must have been served by the session's context itself,
    // before the close, and one that a fresh context served never names the dead ID.
    for (const [index, reply] of replies.entries()) {
      if (index === 2 || !issued(reply).includes(id)) continue;
      assert.equal(reply.json<{ id: string }>().id, id, `round ${round}: a request served after the close renewed the dead ID`);
    }
    const replay = await as(t, id, '/state');
    const state = replay.json<{ id: string; n: number }>();
    assert.notEqual(state.id, id, `round ${round}: the closed ID came back`);
    assert.equal(state.n, 0, `round ${round}: a fresh context`);
    assert.equal((await t.server.sessions.info(id)), undefined, `round ${round}: the directory forgot the closed ID`);
  }
});

test('red team: regenerate racing requests of the old ID: the old ID is dead afterwards, no other reply learns the new ID, no increment lost (300 rounds)', { timeout: 60_000 }, async () => {
  // Room for every round's sessions: the cap is not what this race is about.
  const t = await serverWith({ sessions: { maxContexts: 10_000 } });
  for (let round = 0; round < 300; round++) {
    const first = await send(`${t.url}/inc`, { dispatcher: agent });
    const id = issued(first)[0]!;
    const createdAt = first.json<{ createdAt: string }>().createdAt;
    const paths = ['/inc', '/regenerate', '/inc', '/inc'];
    const replies = await Promise.all(paths.map((path) => as(t, id, path)));
    for (const reply of replies) assert.equal(reply.status, 200, `round ${round}: ${reply.text}`);
    const fresh = issued(replies[1]!);
    assert.equal(fresh.length, 1, `round ${round}: exactly one Set-Cookie on the regenerate`);
    const newId = fresh[0]!;
    assert.notEqual(newId, id);
    // On the context: the regenerate, and each request admitted under the old ID before it
    // (run before or after it; the fixture's body names ctx.id, old or new, which is the hook's
    // choice). Told apart by the ID, not only the creation time: a fresh session made for an
    // old-ID request after the regenerate can be created within the same millisecond.
    let onContext = 2;
    for (const [index, reply] of replies.entries()) {
      if (index === 1) continue;
      const served = reply.json<{ id: string; n: number; createdAt: string }>();
      if (served.id === id || served.id === newId) {
        assert.equal(served.createdAt, createdAt);
        // Run after the regenerate: no renewal of the old ID may overwrite the new cookie.
        if (served.id === newId) assert.deepEqual(issued(reply), [], `round ${round}: reply ${index}, run after the regenerate, sets no cookie`);
        onContext++;
      } else assert.equal(served.n, 1, `round ${round}: reply ${index} is a fresh session`);
      assert.ok(!issued(reply).includes(newId), `round ${round}: reply ${index} handed out the new ID`);
    }
    const kept = (await as(t, newId, '/state')).json<{ id: string; n: number }>();
    assert.equal(kept.id, newId);
    assert.equal(kept.n, onContext, `round ${round}: every increment on the context is kept`);
    const replay = (await as(t, id, '/state')).json<{ id: string; n: number }>();
    assert.ok(replay.id !== id && replay.id !== newId && replay.n === 0, `round ${round}: the old ID gives a fresh session`);
  }
});

test('red team: maxContexts 1 with 8 clients at once: every acknowledged increment is kept through evictions, each client keeps its ID', { timeout: 60_000 }, async () => {
  const t = await serverWith({ sessions: { maxContexts: 1 } });
  // Eight clients, each from an address of its own (one address would be one source, whose
  // new sessions under way may not push another client out: README, Hostile traffic).
  const clients = Array.from({ length: 8 }, (_, index) => new Client(t.url, { localAddress: `127.0.0.${10 + index}` }));
  let refused = 0;
  await Promise.all(
    clients.map(async (client, index) => {
      let acknowledged = 0;
      let id: string | undefined;
      for (let i = 0; i < 60; i++) {
        const reply = await client.get('/inc');
        if (reply.status === 503) {
          refused++;
          continue;
        }
        assert.equal(reply.status, 200, reply.text);
        const state = reply.json<{ id: string; n: number }>();
        id ??= state.id;
        assert.equal(state.id, id, `client ${index}: its ID changed`);
        acknowledged++;
        assert.equal(state.n, acknowledged, `client ${index}: increment ${acknowledged} lost or doubled`);
      }
    }),
  );
  assert.ok(t.server.sessions.stats.live <= 1, 'within the cap');
  assert.ok(refused < 8 * 60, 'some requests were served');
});

test('red team: admin suspend and admin close racing a client\'s requests (200 rounds): a closed ID never comes back, no increment lost before it', { timeout: 60_000 }, async () => {
  // Room for every round's sessions: the cap is not what this race is about.
  const t = await serverWith({ sessions: { maxContexts: 10_000 } });
  for (let round = 0; round < 200; round++) {
    const first = await send(`${t.url}/inc`, { dispatcher: agent });
    const id = issued(first)[0]!;
    const requests = [as(t, id, '/inc'), as(t, id, '/inc')];
    const suspended = t.server.sessions.suspendSession(id);
    requests.push(as(t, id, '/inc'));
    const closed = round % 2 ? t.server.sessions.closeSession(id, 'test') : Promise.resolve(false);
    requests.push(as(t, id, '/inc'));
    const replies = await Promise.all(requests);
    await suspended;
    const didClose = await closed;
    // Sent at once on connections of their own, the requests reach the session in any order:
    // those it served count 2, 3, ... with none lost and none counted twice.
    const counts: number[] = [];
    for (const reply of replies) {
      assert.equal(reply.status, 200, `round ${round}: ${reply.text}`);
      const state = reply.json<{ id: string; n: number }>();
      if (state.id === id) counts.push(state.n);
    }
    counts.sort((x, y) => x - y);
    assert.deepEqual(counts, counts.map((_, index) => index + 2), `round ${round}: increments on the session, none lost or doubled`);
    const last = counts.at(-1) ?? 1;
    const replay = (await as(t, id, '/state')).json<{ id: string; n: number }>();
    if (didClose) assert.notEqual(replay.id, id, `round ${round}: the closed ID came back`);
    else assert.deepEqual([replay.id, replay.n], [id, last], `round ${round}: the session kept its count through the suspend`);
  }
});

test('red team: after a restart, closing store-only sessions while their clients come back (100 sessions, sqlite): none comes back', { timeout: 60_000 }, async () => {
  const { mkdtempSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const path = join(mkdtempSync(join(tmpdir(), 'redteam-')), 'contexts.db');
  const store = { kind: 'sqlite' as const, path };
  const before = await startTestServer({ workers: { threads: 2 }, log: { level: 'warn' }, hooks: HOOKS, store });
  const ids: string[] = [];
  for (let i = 0; i < 100; i++) ids.push(issued(await send(`${before.url}/inc`, { dispatcher: agent }))[0]!);
  await before.close();
  const t = await serverWith({ store });
  await Promise.all(
    ids.map(async (id, index) => {
      const early = index % 3 === 0 ? [as(t, id, '/inc')] : [];
      const closing = t.server.sessions.closeSession(id, 'test');
      const late = [as(t, id, '/inc'), as(t, id, '/inc')];
      await Promise.all([...early, closing, ...late]);
    }),
  );
  for (const id of ids) {
    const replay = (await as(t, id, '/state')).json<{ id: string }>();
    assert.notEqual(replay.id, id, 'a closed store-only session came back');
  }
});

test('red team A8: two cookies (a closed ID, another client\'s ID, one\'s own) in any order pick one\'s own session, and leave the others untouched (100 rounds)', { timeout: 60_000 }, async () => {
  const t = await serverWith();
  const attackerAgent = new Agent({ localAddress: '127.0.0.2' });
  try {
    for (let round = 0; round < 100; round++) {
      const victim = issued(await send(`${t.url}/inc`, { dispatcher: agent }))[0]!;
      const dead = issued(await send(`${t.url}/inc`, { dispatcher: attackerAgent }))[0]!;
      await send(`${t.url}/close`, { headers: { cookie: `RSID=${dead}` }, dispatcher: attackerAgent });
      const own = issued(await send(`${t.url}/inc`, { dispatcher: attackerAgent }))[0]!;
      const orders = [[dead, victim, own], [victim, own, dead], [own, dead, victim]];
      const cookie = orders[round % 3]!.map((id) => `RSID=${id}`).join('; ');
      const reply = await send(`${t.url}/inc`, { headers: { cookie }, dispatcher: attackerAgent });
      assert.equal(reply.status, 200, `round ${round}: ${reply.text}`);
      assert.equal(reply.json<{ id: string; n: number }>().id, own, `round ${round}: the attacker's own session`);
      const victimState = (await as(t, victim, '/state')).json<{ id: string; n: number }>();
      assert.deepEqual([victimState.id, victimState.n], [victim, 1], `round ${round}: the victim untouched`);
      assert.equal((await t.server.sessions.info(dead)), undefined, `round ${round}: the closed ID stays dead`);
    }
  } finally {
    await attackerAgent.close();
  }
});
