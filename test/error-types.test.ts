/**
 * Errors keep their type on the way from a worker thread to the log (issue 15): a hook's error
 * crosses the thread boundary as a plain object, which pino would name "Object". Each line is
 * read as the server wrote it (JSON): the original class (TypeError, SqliteError, a hook's own
 * class), its message, its code and a stack into the hook module.
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { hashId } from '../src/log.ts';
import { Client, fixtureHooks, startTestServer, waitFor, type LogLine, type TestServer } from './helpers.ts';

const HOOKS = fixtureHooks('error-types');
const clients: Client[] = [];
let server: TestServer | undefined;

after(async () => {
  await Promise.all(clients.map((c) => c.close()));
  await server?.close();
});

async function started(): Promise<TestServer> {
  server ??= await startTestServer({ hooks: HOOKS, workers: { threads: 2 } });
  return server;
}

function client(url: string): Client {
  const c = new Client(url);
  clients.push(c);
  return c;
}

type LoggedErr = { type?: string; message?: string; code?: string; stack?: string };

/** The one line of `event` whose err says `message`, once the threads' lines are in. */
async function lineWith(s: TestServer, event: string, message: string): Promise<LogLine & { err: LoggedErr }> {
  const found = await waitFor(
    async () => {
      await s.settle();
      return s.logs.find((line) => line.event === event && (line.err as LoggedErr | undefined)?.message === message);
    },
    5000,
    `a ${event} line for "${message}"`,
  ).catch((error: Error) => assert.fail(`${error.message}\n${s.rawLogs().slice(-4000)}`));
  return found as LogLine & { err: LoggedErr };
}

function assertStackInto(err: LoggedErr, file: string): void {
  assert.equal(typeof err.stack, 'string', JSON.stringify(err));
  assert.ok(err.stack!.includes(file), `a stack into ${file}: ${err.stack}`);
}

test('onConnection throwing a TypeError: the hook-error line says TypeError, with its message and a stack into the hook', async () => {
  const s = await started();
  const reply = await client(s.url).get('/type-error');
  assert.equal(reply.status, 500);
  const line = await lineWith(s, 'hook-error', "Cannot read properties of undefined (reading 'field')");
  assert.equal(line.err.type, 'TypeError');
  assert.equal(line.code, 'RESIDENT_ERR_HOOK_FAILED');
  assertStackInto(line.err, HOOKS.onConnection);
  assert.ok(!s.rawLogs().includes('"type":"Object"'), s.rawLogs().slice(-4000));
});

test("onConnection throwing better-sqlite3's SqliteError: its class and its code (SQLITE_ERROR) are logged", async () => {
  const s = await started();
  assert.equal((await client(s.url).get('/sqlite')).status, 500);
  const line = await lineWith(s, 'hook-error', 'near "SELEKT": syntax error');
  assert.equal(line.err.type, 'SqliteError');
  assert.equal(line.err.code, 'SQLITE_ERROR');
  assert.equal(line.code, 'SQLITE_ERROR');
  assertStackInto(line.err, HOOKS.onConnection);
});

test("onSessionSuspend throwing the hook's own error class: its name, code and stack are logged", async () => {
  const s = await started();
  const c = client(s.url);
  // Proven (its cookie came back): a failed suspend keeps it live rather than drop it.
  assert.equal((await c.get('/hello')).status, 200);
  assert.equal((await c.get('/suspend-fails')).status, 200);
  const outcome = await s.server.sessions.suspendSession(c.cookie!);
  assert.equal(outcome, 'failed');
  const line = await lineWith(s, 'hook-error', 'the cart cannot be saved');
  assert.equal(line.session, hashId(c.cookie!));
  assert.equal(line.err.type, 'CartError');
  assert.equal(line.err.code, 'E_CART_UNSAVED');
  assertStackInto(line.err, HOOKS.onSessionSuspend);
});

test('a stray rejection in a hook: the worker line says RangeError', async () => {
  const s = await started();
  assert.equal((await client(s.url).get('/stray')).status, 200);
  const line = await lineWith(s, 'worker', 'nobody awaits this');
  assert.equal(line.level, 50);
  assert.equal(line.err.type, 'RangeError');
  assertStackInto(line.err, HOOKS.onConnection);
});

test("a response body whose stream fails after its head: the stream-error line has the stream's error type", async () => {
  const s = await started();
  await client(s.url)
    .get('/stream-fails')
    .catch(() => undefined);
  const line = await lineWith(s, 'stream-error', 'the stream broke');
  assert.equal(line.err.type, 'TypeError');
});

test('an uncaught exception that ends a thread: the worker-uncaught line, logged on that thread, says EvalError', async () => {
  const s = await started();
  assert.equal((await client(s.url).get('/uncaught')).status, 200);
  const line = await lineWith(s, 'worker-uncaught', 'thrown outside any request');
  assert.equal(line.err.type, 'EvalError');
  assertStackInto(line.err, HOOKS.onConnection);
});
