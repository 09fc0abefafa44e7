/**
 * Red team: hooks that misbehave on their worker thread, through a real server. (A hook that
 * never yields its thread, RELIABILITY.md F3, is the watchdog's: issue 11.)
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { Client, FIXTURE_HOOKS, ROOT, serverFactory, startTestServer, waitFor, type Reply } from './helpers.ts';

const HOOKS = { ...FIXTURE_HOOKS, onConnection: join(ROOT, 'test/fixtures/redteam/onConnection.ts') };
const serverWith = serverFactory({ workers: { threads: 1 }, hooks: HOOKS });

async function timed<T>(work: Promise<T>): Promise<{ value: T; ms: number }> {
  const start = performance.now();
  const value = await work;
  return { value, ms: performance.now() - start };
}

test('red team: a ctx kept from an answered request refuses every effect when used from another session, and that session is untouched', { timeout: 30_000 }, async () => {
  const t = await serverWith();
  const owner = new Client(t.url);
  await owner.get('/inc');
  const ownerId = owner.cookie;
  await owner.get('/keep');
  const other = new Client(t.url);
  const used = (await other.get('/use-kept')).json<{ attempts: Record<string, string> }>();
  assert.deepEqual(used.attempts, {
    close: 'RESIDENT_ERR_EFFECT_REFUSED',
    regenerate: 'RESIDENT_ERR_EFFECT_REFUSED',
    userId: 'RESIDENT_ERR_EFFECT_REFUSED',
    closeOthers: 'RESIDENT_ERR_EFFECT_REFUSED',
  });
  const state = (await owner.get('/inc')).json<{ id: string; n: number }>();
  assert.equal(state.id, ownerId);
  assert.equal(state.n, 2);
  assert.equal(owner.cookie, ownerId);
});

const SUSPEND_EXITS = { onSessionSuspend: join(ROOT, 'test/fixtures/redteam/onSessionSuspend.ts') };

/** A reply, or how its connection ended without one. */
async function settled(reply: Promise<Reply>): Promise<{ status: number | 'cut'; text: string; id?: string }> {
  try {
    const answer = await reply;
    return { status: answer.status, text: answer.text, id: answer.status === 200 ? answer.json<{ id: string }>().id : undefined };
  } catch (error) {
    return { status: 'cut', text: String((error as Error).message) };
  }
}

/**
 * One thread, so the hook that exits it takes the only edge with it: its open requests are
 * answered 502 by its last words (src/edge/last-words.ts), its listener closes at once, and new
 * connections are refused until the replacement listens (README, "A worker thread dies").
 */
test('red team F2: a suspend hook that exits its thread, 10 times: every request in flight is answered (a 502 at worst), a closed ID stays dead, the replacement serves', { timeout: 90_000 }, async () => {
  const t = await serverWith({ hooks: SUSPEND_EXITS });
  for (let round = 0; round < 10; round++) {
    const lost = t.server.sessions.stats.workersLost;
    const victim = new Client(t.url);
    await victim.get('/inc');
    const id = victim.cookie!;
    await victim.get('/mode?value=exit');
    const bystander = new Client(t.url);
    await bystander.get('/inc');
    const inFlight = settled(bystander.get('/sleep?ms=400'));
    await new Promise((resolve) => setTimeout(resolve, 50));
    if (round % 2 === 0) {
      // An admin suspend: the hook exits; a request of the session waits at its gate meanwhile.
      const suspending = t.server.sessions.suspendSession(id);
      const waiting = settled(victim.get('/inc'));
      const outcome = await suspending;
      assert.notEqual(outcome, 'suspended', `round ${round}: an admin suspend whose hook exited the thread (memento lost) was reported ${outcome}`);
      const reply = await waiting;
      assert.equal(reply.status, 502, `round ${round}: the request waiting at the gate: ${reply.status} ${reply.text}`);
    } else {
      // The session's own close: onSessionSuspend(ctx, 'closed') exits the thread.
      const closing = await settled(victim.get('/close'));
      assert.ok(closing.status === 200 || closing.status === 502, `round ${round}: the close: ${closing.status} ${closing.text}`);
    }
    const bystanding = await inFlight;
    assert.ok(bystanding.status === 200 || bystanding.status === 502, `round ${round}: the bystander in flight: ${bystanding.status} ${bystanding.text}`);
    await waitFor(() => t.server.sessions.stats.workersLost === lost + 1 && t.server.pool.edges.length === 1, 10_000, 'the replacement');
    // The ID is dead either way: closed, or lost with its thread before any memento was stored.
    const replay = await settled(new Client(t.url).get('/state', { headers: { cookie: `RSID=${id}` } }));
    assert.equal(replay.status, 200, `round ${round}: the replacement serves: ${replay.text}`);
    assert.notEqual(replay.id, id, `round ${round}: the ID came back`);
  }
  assert.equal(t.server.pool.degraded, false, 'hooks that ran before dying are not a crash loop');
});

test('red team F2/H1: a shutdown whose suspend hook exits the thread reports that context lost (exit 1), not saved', { timeout: 30_000 }, async () => {
  const t = await startTestServer({ workers: { threads: 1 }, hooks: { ...HOOKS, ...SUSPEND_EXITS } });
  const doomed = new Client(t.url);
  await doomed.get('/inc');
  await doomed.get('/mode?value=exit');
  const result = await t.server.shutdown();
  assert.equal(result.lost, 1, `shutdown reported ${JSON.stringify(result)}`);
});

test('red team: hung hooks started at different times among a stream of quick ones each get their 504 at their own deadline, once', { timeout: 30_000 }, async () => {
  const t = await serverWith({ workers: { threads: 1 }, hooks: { connectionTimeout: '500ms' } });
  const quick = new Client(t.url);
  let stop = false;
  let quickServed = 0;
  const stream = (async () => {
    while (!stop) {
      assert.equal((await quick.get('/inc')).status, 200);
      quickServed++;
    }
  })();
  const hung = Array.from({ length: 5 }, async (_, index) => {
    await new Promise((resolve) => setTimeout(resolve, index * 130));
    const result = await timed(new Client(t.url).get('/hang'));
    return { index, status: result.value.status, ms: result.ms };
  });
  const results = await Promise.all(hung);
  stop = true;
  await stream;
  for (const { index, status, ms } of results) {
    assert.equal(status, 504, `hung request ${index}`);
    assert.ok(ms >= 480 && ms < 900, `hung request ${index} answered after ${Math.round(ms)} ms (deadline 500 ms)`);
  }
  assert.ok(quickServed > 20, `quick requests kept flowing (${quickServed})`);
});
