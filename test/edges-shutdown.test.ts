/**
 * SIGTERM with an edge on every thread (issue 11): `npm start` as a child process, keep-alive
 * connections on both threads, requests in flight on both (one of them hopping to its home):
 * every listener closes at once, every request in flight is answered, every context is
 * suspended with reason 'shutdown', and the process exits 0.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync } from 'node:fs';
import { createServer, connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { Agent } from 'undici';
import { slotOf } from '../src/contexts/ids.ts';
import { FIXTURE_HOOKS, ROOT, childLogs, describeChild, runMain, send, waitFor, waitForStart, writeTempConfig, type Child, type Reply } from './helpers.ts';

const children: Child[] = [];
after(() => {
  for (const child of children) if (child.process.exitCode === null) child.process.kill('SIGKILL');
});

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

function refused(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(false);
    });
    socket.once('error', () => resolve(true));
  });
}

function cookieOf(reply: Reply): string {
  const line = reply.setCookies.find((candidate) => candidate.startsWith('RSID='))!;
  return line.slice(5, line.indexOf(';'));
}

test('SIGTERM with connections on every thread: all listeners close, requests in flight finish (a hop too), every context suspended, exit 0', { timeout: 60_000 }, async () => {
  const port = await freePort();
  const record = join(mkdtempSync(join(tmpdir(), 'resident-edges-')), 'suspends.jsonl');
  const hooks = { ...FIXTURE_HOOKS, onConnection: join(ROOT, 'test/fixtures/cli/onConnection.ts'), onSessionSuspend: join(ROOT, 'test/fixtures/cli/onSessionSuspend.ts') };
  const config = { host: '127.0.0.1', port, publicDir: join(ROOT, 'test/fixtures/public'), workers: { threads: 2 }, hooks, store: { kind: 'memory' } };
  const child = runMain(['--config', writeTempConfig(config)], { RESIDENT_TEST_SUSPEND_LOG: record });
  children.push(child);
  const url = await waitForStart(child);

  // One keep-alive connection per client; a new session is homed where its connection landed.
  const clients: Array<{ agent: Agent; id: string; slot: number }> = [];
  await waitFor(async () => {
    const agent = new Agent({ connections: 1 });
    const reply = await send(`${url}/inc`, { dispatcher: agent });
    const id = cookieOf(reply);
    clients.push({ agent, id, slot: slotOf(id) % 2 });
    return clients.filter((c) => c.slot === 0).length >= 2 && clients.some((c) => c.slot === 1);
  }, 10_000, 'connections on both threads');
  const [a, other, b] = [...clients.filter((c) => c.slot === 0).slice(0, 2), clients.find((c) => c.slot === 1)!] as [typeof clients[0], typeof clients[0], typeof clients[0]];

  // A slow request on each thread's own connection, and one for b's session sent over another
  // connection on thread 0 (it hops to b's home), all in flight when the signal comes.
  const slow = [
    send(`${url}/sleep?ms=800`, { headers: { cookie: `RSID=${a.id}` }, dispatcher: a.agent }),
    send(`${url}/sleep?ms=800`, { headers: { cookie: `RSID=${b.id}` }, dispatcher: b.agent }),
    send(`${url}/sleep?ms=800`, { headers: { cookie: `RSID=${b.id}` }, dispatcher: other.agent }),
  ];
  await new Promise((resolve) => setTimeout(resolve, 200));
  child.process.kill('SIGTERM');
  await waitFor(() => refused(port), 2000, 'every listener closed');
  const replies = await Promise.all(slow);
  for (const reply of replies) assert.equal(reply.status, 200, reply.text);

  const code = await Promise.race([child.exited, new Promise((resolve) => setTimeout(() => resolve('timeout'), 15_000))]);
  assert.equal(code, 0, describeChild(child));
  const calls = readFileSync(record, 'utf8').trim().split('\n').map((line) => JSON.parse(line) as { reason: string; threadId: number });
  assert.equal(calls.length, clients.length, JSON.stringify(calls));
  assert.ok(calls.every((call) => call.reason === 'shutdown'));
  assert.equal(new Set(calls.map((call) => call.threadId)).size, 2, 'contexts on both threads were suspended');
  const stopped = childLogs(child).find((line) => line.event === 'stopped');
  assert.equal(stopped?.suspended, clients.length);
  assert.equal(stopped?.lost, 0);
  await Promise.all(clients.map((c) => c.agent.close().catch(() => {})));
});
