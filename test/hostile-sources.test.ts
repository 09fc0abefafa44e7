/**
 * D1 from many sources (issue 12 "Tests"): 100,000 cookieless requests spread over 20 loopback
 * addresses, beside a proven user. On SQLite only; the one-source case, on every store, is in
 * test/hostile-floods.ts.
 */
import { test } from 'node:test';
import { assertFloodContained, FLOOD, floodOf, hostileServers, provenUser } from './hostile-helpers.ts';

const start = hostileServers();

test('D1: the same flood from 20 sources (127.0.0.10 … 127.0.0.29)', { timeout: 120_000 }, async (t) => {
  const hostile = await start();
  const user = await provenUser(hostile.t, '127.0.0.2');
  const sources = Array.from({ length: 20 }, (_, i) => `127.0.0.${10 + i}`);
  const result = await floodOf(hostile.t, { sources, total: FLOOD, sockets: 40 });
  await assertFloodContained(t, hostile, result, await user.stop(), sources);
});
