/**
 * A8 after a restart (issue 9, finding 7): junk values of our cookie in front of the real one
 * (`RSID=aaa…; RSID=bbb…; RSID=ccc…; RSID=<real>`) must not hide a session that only the store
 * holds. Before, only three presented IDs were looked up in the store per request, so a fourth
 * value, the real one, was never found: the client got a new session, whose Set-Cookie then
 * overwrote the real cookie in a browser.
 */
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { newSessionId } from '../../src/contexts/ids.ts';
import { Client } from '../helpers.ts';
import { DURABLE, cleanup, startOn, state, tempStore, type StoreState } from './server-helpers.ts';

after(cleanup);

function withCookie(url: string, values: string[], localAddress?: string) {
  return new Client(url, { localAddress }).get('/state', { headers: { cookie: values.map((value) => `RSID=${value}`).join('; ') } });
}

describe('A8: junk and foreign values never shadow a stored session after a restart', { concurrency: true }, () => {
  for (const kind of DURABLE) {
    test(`${kind} store: 3 and 500 junk values in front of the real one; a foreign session in front`, { timeout: 60_000 }, async () => {
      const store = tempStore(kind);
      let t = await startOn(store, { sessions: { processTimeout: '1h' } });
      const owner = new Client(t.url);
      await state(owner, '/inc');
      await state(owner, '/inc');
      const real = owner.cookie!;
      const stranger = new Client(t.url, { localAddress: '127.0.0.2' });
      await state(stranger, '/inc');
      const foreign = stranger.cookie!;
      await t.close(); // both suspended into the store

      t = await startOn(store, { sessions: { processTimeout: '1h' } });
      try {
        const junk = (n: number) => Array.from({ length: n }, () => newSessionId());
        for (const [what, values] of [
          ['three junk values first', [...junk(3), real]],
          ['500 junk values first (a 14 KB header)', [...junk(500), real]],
          ['a session bound to another address first', [foreign, ...junk(2), real]],
        ] as const) {
          const reply = await withCookie(t.url, [...values]);
          assert.equal(reply.status, 200, `${what}: ${reply.status} ${reply.text}`);
          const s = reply.json<StoreState>();
          assert.equal(s.id, real, `${what}: the real session, not a new one`);
          assert.equal(s.data.n, 2, `${what}: its state`);
          assert.ok(reply.setCookies.every((line) => line.startsWith(`RSID=${real};`)), `${what}: no Set-Cookie overwrites the real cookie: ${reply.setCookies}`);
        }
        assert.equal((await withCookie(t.url, [real])).json<StoreState>().resumed, true, 'resumed from the store once, then live');
        // The stranger still has its own session, untouched.
        const theirs = (await withCookie(t.url, [foreign], '127.0.0.2')).json<StoreState>();
        assert.deepEqual([theirs.id, theirs.data.n], [foreign, 1]);
      } finally {
        await t.close();
      }
    });
  }
});
