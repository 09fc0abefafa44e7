/**
 * Hostile traffic at full size through a real server (issue 12 "Tests", RELIABILITY.md D1 and
 * D7; README "Hostile traffic"): 100,000 cookieless requests from one source beside a proven
 * user (on SQLite; declared in test/hostile-floods.ts, which runs it on Redis and PostgreSQL in
 * test/hostile-redis.test.ts and test/hostile-postgres.test.ts), and X-Forwarded-For rotated
 * by an untrusted peer. The 20-source flood and the guessed IDs (D2) are in
 * test/hostile-sources.test.ts and test/hostile-guesses*.test.ts: a flood took 10 to 48 s on a
 * shared two-core machine, so one per file keeps each file within a minute. The
 * smaller red-team cases of the same promises are in test/redteam-hostile.test.ts. Each case
 * prints what it measured (t.diagnostic).
 */
import assert from 'node:assert/strict';
import { test, type TestContext } from 'node:test';
import { newSessionId } from '../src/contexts/ids.ts';
import { metric } from './edge-helpers.ts';
import { send, waitFor } from './helpers.ts';
import { oneSourceFlood } from './hostile-floods.ts';
import { ADMIN, floodOf, hostileServers } from './hostile-helpers.ts';

const start = hostileServers();

oneSourceFlood('sqlite');

const PEER = '127.0.0.60';
const ROTATED = 400;
const GUESSES = 200;
/** A forwarded address of its own for request `i`, as a client rotating X-Forwarded-For sends. */
const forwarded = (i: number) => `X-Forwarded-For: 10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`;

/**
 * ROTATED cookieless requests, then GUESSES unknown IDs, one at a time, each with a new
 * X-Forwarded-For, all from PEER. `settled(figures)` says when the over-budget reports (each
 * thread sends its first at once, the rest once a second) are all in.
 */
async function rotate(t: TestContext, trustProxy: false | string[], settled: (figures: Rotated) => boolean) {
  const { t: server } = await start({ trustProxy, maxUnprovenPerIp: 8, maxUnknownIdsPerIp: 10, budgetWindow: '1h' });
  // One at a time: no session is busy when the next arrives, so no 429 and the counts are exact.
  const one = { sources: [PEER], sockets: 1 };
  const fresh = await floodOf(server, { ...one, total: ROTATED, headers: (i) => [forwarded(i)] });
  const guesses = await floodOf(server, { ...one, total: GUESSES, headers: (i) => [forwarded(ROTATED + i), `Cookie: RSID=${newSessionId()}`] });
  const read = async (): Promise<Rotated> => {
    await server.settle();
    const { sources } = (await send(`${server.server.adminUrl}api/sources`, ADMIN)).json<{ sources: Array<{ source: string; budget: string; count: number }> }>();
    return {
      statuses: { fresh: Object.fromEntries(fresh.statuses), guesses: Object.fromEntries(guesses.statuses), resent: fresh.resent + guesses.resent },
      pushedOut: server.server.sessions.stats.pushedOut,
      lookedUp: await metric(server, 'resident_unknown_ids_total', 'looked_up="true"'),
      unread: await metric(server, 'resident_unknown_ids_total', 'looked_up="false"'),
      sources: sources.map(({ source, budget, count }) => `${source} ${budget} ${count}`).sort(),
      budgetLines: server.logs.filter((line) => line.event === 'unproven-budget' || line.event === 'id-guessing').map((line) => `${line.event} ${line.source}`).sort(),
    };
  };
  let figures = await read();
  await waitFor(async () => settled((figures = await read())), 5000, 'the over-budget reports').catch(() => undefined);
  t.diagnostic(`trustProxy ${JSON.stringify(trustProxy)}: ${JSON.stringify(figures)}`);
  assert.deepEqual(figures.statuses, { fresh: { 200: ROTATED }, guesses: { 200: GUESSES }, resent: 0 });
  return figures;
}

interface Rotated {
  statuses: { fresh: Record<string, number>; guesses: Record<string, number>; resent: number };
  pushedOut: number;
  lookedUp: number;
  unread: number;
  /** api/sources: "source budget count". */
  sources: string[];
  /** The over-budget warn lines: "event source". */
  budgetLines: string[];
}

test('D7: X-Forwarded-For rotated by an untrusted peer counts against the peer: push-out, the guess budget, api/sources and the log see one source', { timeout: 60_000 }, async (t) => {
  // Settled once every event over a budget is reported: the push-outs and the unread guesses.
  const figures = await rotate(t, false, (f) => f.sources.join() === `${PEER} unknown_ids ${f.unread},${PEER} unproven ${f.pushedOut}` && f.budgetLines.length === 2);
  // The peer's budget of 8 unproven sessions: every later new session (a guess gets one too)
  // pushed an older one out.
  assert.ok(figures.pushedOut >= ROTATED + GUESSES - 8, `${figures.pushedOut} pushed out of ${ROTATED + GUESSES}`);
  assert.deepEqual({ lookedUp: figures.lookedUp, unread: figures.unread }, { lookedUp: 10, unread: GUESSES - 10 }, 'one budget of 10 lookups');
  assert.deepEqual(
    { sources: figures.sources.map((line) => line.split(' ').slice(0, 2).join(' ')), lines: figures.budgetLines },
    { sources: [`${PEER} unknown_ids`, `${PEER} unproven`], lines: [`id-guessing ${PEER}`, `unproven-budget ${PEER}`] },
    'only the real address is a source',
  );
});

test('D7 contrast: with trustProxy "loopback" the forwarded addresses are the sources, each within its budgets', { timeout: 60_000 }, async (t) => {
  // Nothing went over a budget (the counters say so at once), so nothing is to be reported.
  const figures = await rotate(t, ['loopback'], () => true);
  assert.deepEqual(
    { pushedOut: figures.pushedOut, lookedUp: figures.lookedUp, unread: figures.unread, sources: figures.sources, lines: figures.budgetLines },
    { pushedOut: 0, lookedUp: GUESSES, unread: 0, sources: [], lines: [] },
  );
});
