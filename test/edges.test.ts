/**
 * Every worker thread an HTTP edge (issue 11): through real servers and real sockets, a client
 * whose connection lands on another thread than its session's home sees exactly what a local
 * client sees; one context still runs one request at a time, in order; the cap stays global;
 * IP binding holds through a hop; the admin view and the metrics see every thread.
 *
 * Which thread accepts a connection is the kernel's choice (SO_REUSEPORT hashes the
 * connection's addresses and ports), so the tests open many connections and check, through
 * the hops counter and the session IDs' home slots, that the paths they claim were taken.
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { Agent } from 'undici';
import { newSessionId, slotOf } from '../src/contexts/ids.ts';
import { Client, ManualClock, send, startTestServer, waitFor, type FixtureState, type Reply, type TestServer } from './helpers.ts';

const TOKEN = 'edges-test-admin-token-0123456789abcdef';
const servers: TestServer[] = [];
after(async () => {
  await Promise.all(servers.map((t) => t.close()));
});

async function start(threads: number, sessions: Record<string, unknown> = {}, clock?: ManualClock): Promise<TestServer> {
  const t = await startTestServer({ workers: { threads }, admin: { token: TOKEN }, sessions: { processTimeout: '1h', ...sessions } }, clock);
  servers.push(t);
  return t;
}

/** One request over a connection of its own: the kernel picks its thread afresh each time. */
async function fresh(url: string, init: { headers?: Record<string, string>; localAddress?: string } = {}): Promise<Reply> {
  const agent = new Agent({ connections: 1, ...(init.localAddress ? { localAddress: init.localAddress } : {}) });
  try {
    return await send(url, { headers: init.headers, dispatcher: agent });
  } finally {
    await agent.close();
  }
}

async function metric(t: TestServer, name: string, labels = ''): Promise<number> {
  const text = await t.server.metrics!.text();
  const line = text.split('\n').find((candidate) => candidate.startsWith(`${name}${labels} `) || (labels === '' && candidate.startsWith(`${name} `)));
  return line ? Number(line.split(' ').pop()) : 0;
}

function cookieOf(reply: Reply): string | undefined {
  const line = reply.setCookies.find((candidate) => candidate.startsWith('RSID='));
  return line?.slice(5, line.indexOf(';'));
}

test('a client whose connections land on other threads sees what a local client sees, Set-Cookie included', async () => {
  const t = await start(2);
  const first = await fresh(`${t.url}/inc`);
  const id = cookieOf(first)!;
  assert.match(id, /^[A-Za-z0-9_-]{24}$/);
  const home = first.json<FixtureState>().threadId;
  const hopsBefore = await metric(t, 'resident_hops_total');
  for (let n = 2; n <= 21; n++) {
    const reply = await fresh(`${t.url}/inc`, { headers: { cookie: `RSID=${id}` } });
    assert.equal(reply.status, 200);
    const state = reply.json<FixtureState>();
    assert.equal(state.n, n, 'one context, every request in order');
    assert.equal(state.threadId, home, 'the context stays on its home thread');
    assert.equal(state.isNew, false);
    assert.equal(cookieOf(reply), id, 'the rolling cookie comes back through the hop');
    assert.match(reply.setCookies.find((line) => line.startsWith('RSID='))!, /HttpOnly/i);
  }
  // 20 connections over 2 threads: all on the home thread has odds of 2^-20.
  assert.ok((await metric(t, 'resident_hops_total')) - hopsBefore > 0, 'some requests hopped');
  assert.equal(t.server.sessions.stats.created, 1);
});

test('50 concurrent increments on one cookie over 10 connections give exactly 1..50', async () => {
  const t = await start(2);
  const client = new Client(t.url);
  await client.get('/state');
  const id = client.cookie!;
  const agents = Array.from({ length: 10 }, () => new Agent({ connections: 1 }));
  try {
    const replies = await Promise.all(
      Array.from({ length: 50 }, (_, i) => send(`${t.url}/slow-inc?ms=2`, { headers: { cookie: `RSID=${id}` }, dispatcher: agents[i % 10] })),
    );
    assert.deepEqual(
      replies.map((reply) => reply.json<FixtureState>().n).sort((a, b) => a - b),
      Array.from({ length: 50 }, (_, i) => i + 1),
    );
  } finally {
    await Promise.all(agents.map((agent) => agent.close()));
  }
});

/**
 * Sessions created one by one, each over a connection of its own, with the clock moved between
 * them; each creation beyond the cap must evict the globally least recently active idle one,
 * whichever thread holds it. Runs until an eviction crossed threads at least twice.
 */
async function globalCap(threads: number): Promise<void> {
  const clock = new ManualClock();
  const cap = 3;
  const t = await start(threads, { maxContexts: cap }, clock);
  const live: string[] = []; // least recently active first
  let crossed = 0;
  for (let round = 0; round < 40 && crossed < 2; round++) {
    clock.advance(1000);
    if (live.length === cap && round % 3 === 0) {
      // Touch the oldest: the next victim is the one after it.
      const touched = live.shift()!;
      assert.equal((await fresh(`${t.url}/inc`, { headers: { cookie: `RSID=${touched}` } })).status, 200);
      live.push(touched);
      clock.advance(1000);
    }
    const created = cookieOf(await fresh(`${t.url}/inc`))!;
    assert.ok(created);
    // Proven (its cookie came back), so that activity alone orders the victims: an unproven
    // context would leave first (issue 12).
    assert.equal((await fresh(`${t.url}/inc`, { headers: { cookie: `RSID=${created}` } })).status, 200);
    if (live.length === cap) {
      const victim = live.shift()!;
      const state = await waitFor(async () => {
        const info = await t.server.sessions.info(victim);
        return info && info.state === 'suspended' ? info.state : undefined;
      }, 3000, `round ${round}: the least recently active context evicted`);
      assert.equal(state, 'suspended');
      for (const other of live) assert.equal((await t.server.sessions.info(other))?.state, 'live', `round ${round}: a more recently active context stayed live`);
      if (slotOf(victim) % threads !== slotOf(created) % threads) crossed++;
    }
    live.push(created);
    assert.equal(t.server.sessions.stats.live, Math.min(live.length, cap));
  }
  assert.ok(crossed >= 2, `an eviction on another thread than the creation's was seen (${crossed})`);
  assert.equal(t.server.sessions.stats.suspended.evicted >= 2, true);
}

test('the cap stays global with 2 threads: the globally least recently active idle context leaves', () => globalCap(2));
test('the cap stays global with 4 threads', () => globalCap(4));

test('IP binding holds through a hop: another address gets 400 from every thread, the owner keeps its context', async () => {
  const t = await start(2);
  const owner = await fresh(`${t.url}/inc`, { localAddress: '127.0.0.1' });
  const id = cookieOf(owner)!;
  for (let i = 0; i < 10; i++) {
    const stolen = await fresh(`${t.url}/inc`, { headers: { cookie: `RSID=${id}` }, localAddress: '127.0.0.2' });
    assert.equal(stolen.status, 400);
  }
  const again = await fresh(`${t.url}/inc`, { headers: { cookie: `RSID=${id}` }, localAddress: '127.0.0.1' });
  assert.equal(again.json<FixtureState>().n, 2, 'the owner\'s context was not touched');
  assert.equal(t.server.sessions.stats.ipMismatches, 10);
});

test('the admin view and the metrics see every thread', async () => {
  const t = await start(2);
  const ids: string[] = [];
  // Sessions until both threads hold some (a new session is homed where it arrived).
  await waitFor(async () => {
    ids.push(cookieOf(await fresh(`${t.url}/inc`))!);
    return new Set(ids.map((id) => slotOf(id) % 2)).size === 2;
  }, 10_000, 'sessions on both threads');
  const overview = await send(`${t.server.adminUrl}api/overview`, { headers: { authorization: `Bearer ${TOKEN}` } });
  const body = overview.json<{ sessions: { live: number }; workers: Array<{ contexts: number }> }>();
  assert.equal(body.sessions.live, ids.length);
  assert.equal(body.workers.length, 2);
  assert.ok(body.workers.every((worker) => worker.contexts > 0), 'every thread holds some');
  assert.equal(body.workers.reduce((sum, worker) => sum + worker.contexts, 0), ids.length);
  const listed = await send(`${t.server.adminUrl}api/sessions?state=live&limit=100`, { headers: { authorization: `Bearer ${TOKEN}` } });
  assert.equal(listed.json<{ sessions: unknown[] }>().sessions.length, ids.length);
  assert.equal(await metric(t, 'resident_sessions', '{state="live"}'), ids.length);
  assert.equal(await metric(t, 'resident_request_duration_seconds_count', '{status="2xx"}'), ids.length);
  for (const id of ids) assert.equal((await t.server.sessions.info(id))?.state, 'live');
});

test('sessions suspended by a server with 2 threads resume on one restarted with 3, then with 1 (home = slot modulo threads)', async () => {
  const { mkdtempSync } = await import('node:fs');
  const { join } = await import('node:path');
  const { tmpdir } = await import('node:os');
  const path = join(mkdtempSync(join(tmpdir(), 'resident-edges-')), 'contexts.db');
  const store = { kind: 'sqlite' as const, path };
  const first = await startTestServer({ workers: { threads: 2 }, store });
  const ids: string[] = [];
  await waitFor(async () => {
    const reply = await fresh(`${first.url}/inc`);
    ids.push(cookieOf(reply)!);
    return ids.length >= 4 && new Set(ids.map((id) => slotOf(id) % 2)).size === 2;
  }, 10_000, 'sessions on both threads');
  await first.close();
  for (const threads of [3, 1]) {
    const next = await startTestServer({ workers: { threads }, store });
    try {
      for (const id of ids) {
        const reply = await fresh(`${next.url}/inc`, { headers: { cookie: `RSID=${id}` } });
        const state = reply.json<FixtureState>();
        assert.equal(state.id, id, `${threads} threads: the session kept its ID`);
        assert.equal(state.resumed, true);
        // The fixture counts from 0 again on a resumed context; what it saved at each shutdown was 1.
        assert.equal((state.saved as { n: number }).n, 1, `${threads} threads: resumed with its memento`);
      }
      assert.equal(next.server.sessions.stats.created, 0, 'no session was created instead');
      assert.equal(next.server.sessions.stats.live, ids.length);
    } finally {
      await next.close();
    }
  }
});

test('behind a trusted proxy, new sessions from one connection are spread to the least-loaded thread', async () => {
  const t = await startTestServer({ workers: { threads: 2 }, sessions: { trustProxy: ['127.0.0.1'], processTimeout: '1h' } });
  servers.push(t);
  const agent = new Agent({ connections: 1 });
  try {
    const ids: string[] = [];
    for (let i = 0; i < 20; i++) {
      const reply = await send(`${t.url}/inc`, { headers: { 'x-forwarded-for': `203.0.113.${i + 1}` }, dispatcher: agent });
      ids.push(cookieOf(reply)!);
    }
    const perSlot = [0, 1].map((slot) => ids.filter((id) => slotOf(id) % 2 === slot).length);
    assert.deepEqual(perSlot, [10, 10], 'one connection, yet the sessions are shared out evenly');
    // Each still answers from its home through that one connection.
    for (const id of ids) {
      const reply = await send(`${t.url}/inc`, { headers: { cookie: `RSID=${id}`, 'x-forwarded-for': `203.0.113.${ids.indexOf(id) + 1}` }, dispatcher: agent });
      assert.equal(reply.json<FixtureState>().n, 2);
    }
  } finally {
    await agent.close();
  }
});

test('behind a trusted proxy, a slot whose thread is being replaced gets no new session: new clients are answered at once, not after the replacement', async () => {
  const t = await startTestServer({ workers: { threads: 2 }, sessions: { trustProxy: ['127.0.0.1'], processTimeout: '1h' } });
  servers.push(t);
  const agent = new Agent({ connections: 1 });
  try {
    // Sessions on both slots through the proxy's one connection; then the thread of the first
    // one's slot is ended by its hook.
    const ids: string[] = [];
    for (let i = 0; i < 4; i++) ids.push(cookieOf(await send(`${t.url}/inc`, { headers: { 'x-forwarded-for': `198.51.100.${i + 1}` }, dispatcher: agent }))!);
    const lost = t.server.sessions.stats.workersLost;
    // Its slot's live count is cleared to 0 at once: the least loaded, were it not left out.
    await send(`${t.url}/die`, { headers: { cookie: `RSID=${ids[0]}`, 'x-forwarded-for': '198.51.100.1' }, dispatcher: agent }).catch(() => undefined);
    await waitFor(() => t.server.sessions.stats.workersLost === lost + 1, 5000, 'the thread gone');
    const dead = slotOf(ids[0]!) % 2;
    for (let i = 0; i < 10; i++) {
      const started = performance.now();
      const reply = await send(`${t.url}/inc`, { headers: { 'x-forwarded-for': `192.0.2.${i + 1}` }, dispatcher: agent });
      const ms = performance.now() - started;
      assert.equal(reply.status, 200, reply.text);
      // Homed on the dead slot only once its replacement is there (then it answers at once);
      // before, a new client waited for the replacement (about 300 ms here, up to 10 s).
      const home = slotOf(cookieOf(reply)!) % 2;
      assert.ok(home !== dead || ms < 100, `new client ${i} homed on the slot being replaced, answered after ${Math.round(ms)} ms`);
    }
  } finally {
    await agent.close();
  }
});

test('A8 across homes: junk and foreign values homed on other threads never shadow the client\'s session', async () => {
  const t = await start(2);
  const owner = await fresh(`${t.url}/inc`, { localAddress: '127.0.0.1' });
  const id = cookieOf(owner)!;
  const other = (slotOf(id) + 1) % 2;
  // Another client's session on the other thread: bound to 127.0.0.2.
  let foreign = '';
  await waitFor(async () => {
    foreign = cookieOf(await fresh(`${t.url}/inc`, { localAddress: '127.0.0.2' }))!;
    return slotOf(foreign) % 2 === other;
  }, 10_000, 'a session of another client on the other thread');
  const created = t.server.sessions.stats.created;
  let n = 1;
  for (let i = 0; i < 10; i++) {
    const junk = newSessionId(other);
    for (const cookie of [`RSID=${junk}; RSID=${id}`, `RSID=${foreign}; RSID=${junk}; RSID=${id}`, `RSID=${id}; RSID=${foreign}`]) {
      const reply = await fresh(`${t.url}/inc`, { headers: { cookie }, localAddress: '127.0.0.1' });
      assert.equal(reply.status, 200, reply.text);
      const state = reply.json<FixtureState>();
      assert.equal(state.id, id, `${cookie}: the client's own session wins`);
      assert.equal(state.n, ++n);
    }
  }
  // Only a foreign value and junk: the 400 of the binding, the foreign session untouched.
  const refused = await fresh(`${t.url}/inc`, { headers: { cookie: `RSID=${newSessionId(slotOf(id) % 2)}; RSID=${foreign}` }, localAddress: '127.0.0.1' });
  assert.equal(refused.status, 400);
  assert.equal(t.server.sessions.stats.created, created, 'no session was created for any of them');
});
