/**
 * ctx.log against a real server: a hook's lines come out of the server's logger (pino on the
 * main thread) with the session's hash, the thread and the hook's name; Errors keep their type;
 * lines below log.level are never built; one line is bounded; and through the command line, the
 * lines are JSON like the server's own, or readable with log.format "pretty".
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { hashId } from '../src/log.ts';
import { MAX_LOG_FIELDS, MAX_LOG_MESSAGE } from '../src/contexts/hook-log.ts';
import {
  childLogs,
  closedAfterTests,
  cliConfig,
  describeChild,
  fixtureHooks,
  runMain,
  serverFactory,
  waitFor,
  writeTempConfig,
  type Child,
  type LogLine,
  type TestServer,
} from './helpers.ts';

const HOOKS = fixtureHooks('hook-tools');
const TEST = { timeout: 30_000 };
const start = serverFactory({ hooks: HOOKS, workers: { threads: 1 } });

const { client, children } = closedAfterTests();

/** The lines with message `msg`, once the worker threads' lines are all in. */
async function linesSaying(t: TestServer, msg: string): Promise<LogLine[]> {
  await t.settle();
  return t.logs.filter((line) => line.msg === msg);
}

describe('ctx.log in process', () => {
  test('a line carries the session hash, the thread and the hook; fields named like Resident\'s own are kept under a "_" prefix', TEST, async () => {
    const t = await start();
    const c = client(t.url);
    const plain = (await c.get('/log/plain')).json<{ session: string; threadId: number }>();
    assert.equal(plain.session, hashId(c.cookie!), 'ctx.idHash is the hash the server logs');
    assert.ok(
      t.logs.some((l) => l.msg === 'a plain line'),
      'written before the response was sent',
    );
    const [line, ...more] = await linesSaying(t, 'a plain line');
    assert.deepEqual(more, []);
    assert.equal(line!.level, 30);
    assert.equal(line!.name, 'resident');
    assert.equal(line!.session, plain.session);
    assert.equal(line!.threadId, plain.threadId);
    assert.equal(line!.hook, 'onConnection');
    assert.ok(!t.rawLogs().includes(c.cookie!), 'never the raw ID');

    await c.get('/log/fields');
    const [warn] = await linesSaying(t, 'with fields');
    assert.equal(warn!.level, 40, "the hook's `level` field does not change the line's level");
    assert.equal(warn!.session, plain.session);
    assert.equal(warn!.order, 42);
    assert.equal(warn!._level, 'mine');
    assert.equal(warn!._session, 'mine');
  });

  test('an Error keeps its type, message, stack and cause, in fields (`err`) or as the first argument (with or without a message)', TEST, async () => {
    const t = await start();
    await client(t.url).get('/log/errors');
    type Err = { type: string; message: string; stack: string; cause?: Err };
    const [inFields] = await linesSaying(t, 'in fields');
    const err = inFields!.err as Err;
    assert.equal(inFields!.level, 50);
    assert.equal(err.type, 'TypeError');
    assert.equal(err.message, 'bad input');
    assert.match(err.stack, /^TypeError: bad input\n\s+at /);
    assert.equal(err.cause?.type, 'RangeError');
    assert.equal(err.cause?.message, 'too far');
    const [direct] = await linesSaying(t, 'as the first argument');
    assert.equal((direct!.err as Err).type, 'SyntaxError');
    assert.equal((direct!.err as Err).message, 'direct');
    const [alone] = await linesSaying(t, 'its own message');
    assert.equal(alone!.level, 40, 'an Error without a message: the line says its message, as pino does');
    assert.equal((alone!.err as Err).type, 'EvalError');
  });

  test('below log.level a line costs nothing: its fields are never read, nothing is sent; at the level they are', TEST, async () => {
    const quiet = await start({ log: { level: 'info' } });
    const skipped = (await client(quiet.url).get('/log/debug')).json<{ reads: number; enabled: boolean }>();
    assert.deepEqual(skipped, { reads: 0, enabled: false });
    assert.deepEqual(await linesSaying(quiet, 'a debug line'), []);

    const verbose = await start({ log: { level: 'debug' } });
    const logged = (await client(verbose.url).get('/log/debug')).json<{ reads: number; enabled: boolean }>();
    assert.equal(logged.enabled, true);
    assert.ok(logged.reads >= 1);
    const [line] = await linesSaying(verbose, 'a debug line');
    assert.equal(line!.level, 20);
    assert.equal(line!.costly, 'computed');
  });

  test(`one line is bounded: the message to ${MAX_LOG_MESSAGE} characters, fields longer than ${MAX_LOG_FIELDS} as JSON replaced by their length`, TEST, async () => {
    const t = await start();
    const c = client(t.url);
    const { session } = (await c.get('/log/huge')).json<{ session: string }>();
    await t.settle();
    const line = t.logs.find((l) => l.hook === 'onConnection' && l.session === session);
    assert.ok(line, 'the line is written');
    assert.equal(line.msg.length, MAX_LOG_MESSAGE);
    assert.match(line.msg, /^y+…$/);
    assert.equal(line.blob, undefined);
    assert.equal(typeof line.truncated, 'number');
    assert.ok((line.truncated as number) > 20_000);
    assert.ok(t.rawLogs().length < 4 * (MAX_LOG_MESSAGE + MAX_LOG_FIELDS), 'nothing near the 30,000 characters the hook passed');
  });

  test('onSessionSuspend logs too, named as such', TEST, async () => {
    const t = await start();
    const c = client(t.url);
    await c.get('/log/plain');
    assert.equal(await t.server.sessions.suspendSession(c.cookie!), 'suspended');
    const [line] = await linesSaying(t, 'suspending');
    assert.equal(line!.hook, 'onSessionSuspend');
    assert.equal(line!.session, hashId(c.cookie!));
    assert.equal(line!.reason, 'admin');
  });
});

// ---------------------------------------------------------------------------------------------

describe('ctx.log through the command line', () => {
  function startCli(format: 'json' | 'pretty'): Child {
    const child = runMain(['--config', writeTempConfig(cliConfig({ hooks: HOOKS, log: { format, level: 'info' } }))]);
    children.push(child);
    return child;
  }

  async function stop(child: Child): Promise<void> {
    child.process.kill('SIGTERM');
    assert.equal(await child.exited, 0, describeChild(child));
  }

  test('JSON: a hook\'s line is a JSON line like the server\'s own', TEST, async () => {
    const child = startCli('json');
    const started = await waitFor(() => childLogs(child).find((l) => l.event === 'started'), 15_000, 'the started line');
    const { session } = (await client(String(started!.url)).get('/log/errors')).json<{ session: string }>();
    const line = (await waitFor(() => childLogs(child).find((l) => l.msg === 'in fields'), 5000, 'the hook line'))!;
    assert.equal(line.session, session);
    assert.equal((line.err as { type: string }).type, 'TypeError');
    await stop(child);
  });

  test('pretty: a hook\'s line is readable, with its session and hook, and no JSON', TEST, async () => {
    const child = startCli('pretty');
    const match = await waitFor(() => /Resident listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(child.stdout()), 15_000, 'the listening line');
    const { session } = (await client(match!.at(1)!).get('/log/plain')).json<{ session: string }>();
    await waitFor(() => child.stdout().includes('a plain line'), 5000, 'the hook line');
    await stop(child);
    const out = child.stdout();
    const at = out.indexOf('a plain line');
    const block = out.slice(at, out.indexOf('\n[', at) === -1 ? undefined : out.indexOf('\n[', at));
    assert.match(out.slice(out.lastIndexOf('\n', at), at), /INFO/);
    assert.match(block, new RegExp(`session: "${session}"`));
    assert.match(block, /hook: "onConnection"/);
    assert.deepEqual(childLogs(child), [], 'no JSON line');
  });
});
