/**
 * Red team, issue 15, `ctx.log` as a careless hook author uses it, against a real server: a
 * session that keeps logging after its response (a chatty background poller) must not hold
 * back the answers of other clients on its thread, and values a logger meets in real code
 * (a Proxy, a message whose toString throws) must not throw into the hook that logs them.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { closedAfterTests, cliConfig, describeChild, fixtureHooks, runMain, serverFactory, waitFor, writeTempConfig } from './helpers.ts';

const start = serverFactory({ hooks: fixtureHooks('redteam-15'), workers: { threads: 1 } });
const { client, children } = closedAfterTests();

test('a session logging in the background after its response does not hold back another client\'s answer', { timeout: 60_000 }, async () => {
  const t = await start();
  const flooder = client(t.url);
  const other = client(t.url);
  assert.equal((await other.get('/state')).status, 200);
  // Neither the answer of the request that starts the flood (which logged nothing itself) nor
  // another client's, asked while the flood is under way, waits for a log that is never quiet:
  // each waits only for the lines logged before it.
  const began = performance.now();
  const flood = flooder.get('/flood?ms=6000').then((reply) => ({ status: reply.status, took: performance.now() - began }));
  await new Promise((resolve) => setTimeout(resolve, 300));
  const started = performance.now();
  const reply = await other.get('/state');
  const took = performance.now() - started;
  assert.equal(reply.status, 200);
  assert.ok(took < 2_000, `another client's answer took ${Math.round(took)} ms while the flood lasted 6000 ms`);
  const flooded = await flood;
  assert.equal(flooded.status, 200);
  assert.ok(flooded.took < 2_000, `the flooding request's own answer took ${Math.round(flooded.took)} ms`);
});

test('values a logger meets in real code never throw into the hook', { timeout: 30_000 }, async () => {
  const t = await start();
  const reply = await client(t.url).get('/log/odd');
  assert.equal(reply.status, 200, reply.text);
  assert.deepEqual(reply.json<{ thrown: string[] }>().thrown, []);
  await t.settle();
  // A BigInt (an order total, a database id) is written as its digits; it does not make the
  // line's other fields unloggable.
  const line = t.logs.find((l) => l.msg === 'with a bigint');
  assert.ok(line, 'the line with a bigint is written');
  assert.equal(line.order, 'A-1');
  assert.equal(line.amount, '10');
});

test('pretty: a newline in a hook\'s message (a client\'s search text logged as it came) cannot forge a line of its own', { timeout: 60_000 }, async () => {
  const child = runMain(['--config', writeTempConfig(cliConfig({ hooks: fixtureHooks('redteam-15'), log: { format: 'pretty', level: 'info' } }))]);
  children.push(child);
  const match = await waitFor(() => /Resident listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(child.stdout()), 15_000, 'the listening line');
  const forged = encodeURIComponent('shoes\n[12:00:00.000] INFO: admin password changed\r\n');
  assert.equal((await client(match!.at(1)!).get(`/log/newline?q=${forged}`)).status, 200);
  await waitFor(() => child.stdout().includes('search for shoes'), 5000, 'the hook line');
  child.process.kill('SIGTERM');
  assert.equal(await child.exited, 0, describeChild(child));
  const lines = child.stdout().split('\n');
  assert.equal(lines.filter((line) => line.includes('admin password changed')).length, 1, child.stdout());
  assert.ok(!lines.some((line) => /^\[12:00:00\.000\] INFO: admin password changed/.test(line)), `a forged line of its own:\n${child.stdout()}`);
});
