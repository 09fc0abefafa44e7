/**
 * A store outage must not spend a source's budget of unknown session IDs (./guesses.ts in
 * src/sessions): a lookup the store did not answer says nothing about the ID. Found by the
 * cluster's Jepsen test: a node cut off from the store looked up, and failed to look up, the
 * cookie of every session another node held; once the store was back, that source's cookies
 * were "over budget", taken for guesses, and answered with new sessions (their Set-Cookie
 * replacing the client's, the session lost to it).
 *
 * Here on one server: a session R in the store that this server does not know (made by another
 * server, now gone), and R's cookie more times than the budget during a cut: each gets 503 (no
 * silent fresh context, E7; before the fix the one past the budget got a new session), and
 * once the store is back R resumes.
 */
import assert from 'node:assert/strict';
import { Client, startTestServer, waitFor } from '../helpers.ts';
import { STORE_HOOKS } from './server-helpers.ts';
import { assertStoreUnavailable, forEachShared, proxyFor, sharedStore, stateOf, storeConfig, type SharedKind } from './shared-helpers.ts';
import type { TestContext } from 'node:test';

const BUDGET = 5;

const start = (store: ReturnType<typeof sharedStore>) =>
  startTestServer({
    workers: { threads: 1 },
    hooks: STORE_HOOKS,
    log: { level: 'info' },
    // A long window, so that it cannot roll over (and forget the spent budget) mid-test.
    sessions: { processTimeout: '10m', checkpointInterval: '0', maxUnknownIdsPerIp: BUDGET, budgetWindow: '1h' },
    store: { ...storeConfig(store), callTimeout: '500ms' },
  });

async function outageThenCookie(t: TestContext, kind: SharedKind): Promise<void> {
  const { proxy, url } = await proxyFor(kind);
  const direct = sharedStore(kind);
  // R: made on a first server, saved when it shuts down.
  const first = await start(direct);
  const maker = new Client(first.url);
  let rId: string;
  try {
    stateOf(await maker.get('/put?key=r&value=kept'), 'R');
    rId = stateOf(await maker.get('/state'), 'R').id;
  } finally {
    await maker.close();
    await first.close();
  }
  const server = await start({ ...direct, url });
  const client = new Client(server.url);
  client.cookie = rId;
  try {
    proxy.cut();
    for (let i = 0; i <= BUDGET; i++) assertStoreUnavailable(await client.get('/state'), `${kind}: R during the cut (${i})`);
    proxy.restore();
    const back = await waitFor(
      async () => {
        const reply = await client.get('/state');
        return reply.status === 200 ? reply : undefined;
      },
      10_000,
      `${kind}: served once the store is back`,
    );
    const state = stateOf(back!, 'R after');
    assert.deepEqual({ id: state.id, resumed: state.resumed, r: state.data.r }, { id: rId, resumed: true, r: 'kept' }, `${kind}: R resumes, not a new session in its place`);
    t.diagnostic(`${kind}: ${BUDGET + 1} failed lookups, then R resumed`);
  } finally {
    await client.close();
    await server.close();
  }
}

forEachShared('unknown-ID budget through a store outage', () => 'failed lookups do not spend it: a known cookie resumes once the store is back', 60_000, outageThenCookie);
