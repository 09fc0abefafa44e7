/**
 * The command line (`src/main.ts`, what `npm start` runs), as a real child process: config
 * selection, PORT, exit codes, and graceful shutdown on SIGTERM/SIGINT.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { Client, FIXTURE_HOOKS, ROOT, childLogs, describeChild, waitForStart, runMain, send, waitFor, writeTempConfig, type Child } from './helpers.ts';

const CLI_CONNECTION_HOOK = join(ROOT, 'test/fixtures/cli/onConnection.ts');
const CLI_SUSPEND_HOOK = join(ROOT, 'test/fixtures/cli/onSessionSuspend.ts');
const NO_DEFAULT_HOOK = join(ROOT, 'test/fixtures/cli/no-default.ts');
const STARTUP_MS = 10_000;
const EXIT_MS = 10_000;
const TEST = { timeout: 30_000 };

const children: Child[] = [];

after(() => {
  for (const child of children) {
    if (child.process.exitCode === null && child.process.signalCode === null) child.process.kill('SIGKILL');
  }
});

function start(args: string[], env: Record<string, string> = {}): Child {
  const child = runMain(args, env);
  children.push(child);
  return child;
}

/** `count` distinct ports that were free a moment ago, on loopback. */
async function freePorts(count: number): Promise<number[]> {
  // All held open at once, so the OS cannot hand out the same port twice.
  const servers = Array.from({ length: count }, () => createServer());
  await Promise.all(servers.map((server) => new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))));
  const ports = servers.map((server) => (server.address() as { port: number }).port);
  await Promise.all(servers.map((server) => new Promise<void>((resolve) => server.close(() => resolve()))));
  return ports;
}

async function freePort(): Promise<number> {
  return (await freePorts(1))[0]!;
}

/** What happens when connecting to 127.0.0.1:port: 'connected' or the error code. */
function probe(port: number): Promise<string> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve('connected');
    });
    socket.once('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? error.message));
  });
}



/** Resolves with the exit code, or fails after `ms`. */
async function exitCode(child: Child, ms = EXIT_MS): Promise<number | null> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`child did not exit within ${ms} ms\n${describeChild(child)}`)), ms);
  });
  try {
    return await Promise.race([child.exited, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

const started = (child: Child) => waitForStart(child, STARTUP_MS);

/** A hook module written to a fresh folder of an ES-module app (its package.json says so). */
function tempHook(name: string, source: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'resident-hook-'));
  writeFileSync(join(dir, 'package.json'), '{ "type": "module" }');
  writeFileSync(join(dir, name), source);
  return join(dir, name);
}

/**
 * Waits for a start that fails on a hook module: exit 2, and on stderr one message naming the
 * hook, the module as configured and the stable code; nothing of Resident's own workings (no
 * pool-error line, no piscina or worker.ts stack). Returns stderr for the case's own checks.
 */
async function failedToLoad(child: Child, hook: string, module: string): Promise<string> {
  assert.equal(await exitCode(child), 2, describeChild(child));
  const stderr = child.stderr();
  assert.ok(stderr.startsWith(`resident: the ${hook} hook failed to load (RESIDENT_ERR_HOOK_LOAD)\n  module: ${module} (hooks.${hook})\n`), stderr);
  assert.equal(stderr.match(/RESIDENT_ERR_HOOK_LOAD/g)?.length, 1, stderr);
  assert.doesNotMatch(stderr + child.stdout(), /piscina|src\/contexts\/worker\.ts|pool-error|    at /, describeChild(child));
  return stderr;
}

/** A valid config on 127.0.0.1:port with the fixture hooks (absolute paths). */
function validConfig(port: number, overrides: { hooks?: Record<string, string>; sessions?: Record<string, unknown> } = {}) {
  return {
    host: '127.0.0.1',
    port,
    publicDir: join(ROOT, 'test/fixtures/public'),
    workers: { threads: 2 },
    hooks: { ...FIXTURE_HOOKS, ...overrides.hooks },
    sessions: { ...overrides.sessions },
  };
}

/** A file the CLI hooks append one JSON line to per call. */
function recordFile(name: string): string {
  return join(mkdtempSync(join(tmpdir(), 'resident-cli-')), name);
}

function readRecords<T = { reason: string; n: number; mode: string | null }>(path: string): T[] {
  let text = '';
  try {
    text = readFileSync(path, 'utf8');
  } catch {
    return [];
  }
  return text
    .split('\n')
    .filter(Boolean)
    .map((line) => JSON.parse(line));
}

/** Starts the CLI with the recording suspend hook and `count` clients, client i having made i+1 requests. */
async function startWithClients(count: number, extraEnv: Record<string, string> = {}) {
  const port = await freePort();
  const record = recordFile('suspends.jsonl');
  const requests = recordFile('requests.jsonl');
  const hooks = { onConnection: CLI_CONNECTION_HOOK, onSessionSuspend: CLI_SUSPEND_HOOK };
  const child = start(['--config', writeTempConfig(validConfig(port, { hooks }))], {
    RESIDENT_TEST_SUSPEND_LOG: record,
    RESIDENT_TEST_REQUEST_LOG: requests,
    ...extraEnv,
  });
  const url = await started(child);
  const clients = Array.from({ length: count }, () => new Client(url));
  for (const [i, client] of clients.entries()) {
    for (let k = 0; k <= i; k++) {
      const reply = await client.get('/inc');
      assert.equal(reply.status, 200);
      assert.equal(reply.json().n, k + 1);
    }
  }
  assert.equal(new Set(clients.map((c) => c.cookie)).size, count, 'each client has its own session');
  assert.deepEqual(readRecords(record), [], 'nothing suspended before the signal');
  return { child, url, clients, record, requests };
}

const suspendedLines = (child: Child, reason: string) => childLogs(child).filter((l) => l.event === 'suspended' && l.reason === reason);

describe('invalid startup', () => {
  test('an invalid config file: exit 2, stderr names the key, nothing listening', TEST, async () => {
    const port = await freePort();
    const path = writeTempConfig({ ...validConfig(port), sessions: { maxContext: 5 } });
    const child = start(['--config', path]);
    assert.equal(await exitCode(child), 2, describeChild(child));
    assert.match(child.stderr(), /sessions\.maxContext\b/);
    assert.equal(childLogs(child).find((l) => l.event === 'started'), undefined);
    assert.equal(await probe(port), 'ECONNREFUSED');
  });

  test('a wrong type in the config file: exit 2 naming the key', TEST, async () => {
    const port = await freePort();
    const child = start(['--config', writeTempConfig({ ...validConfig(port), workers: { threads: 'x' } })]);
    assert.equal(await exitCode(child), 2, describeChild(child));
    assert.match(child.stderr(), /workers\.threads/);
    assert.equal(await probe(port), 'ECONNREFUSED');
  });

  test('an empty duration string: exit 2 naming the key', TEST, async () => {
    const port = await freePort();
    const child = start(['--config', writeTempConfig({ ...validConfig(port), sessions: { processTimeout: '' } })]);
    assert.equal(await exitCode(child), 2, describeChild(child));
    assert.match(child.stderr(), /sessions\.processTimeout/);
    assert.equal(await probe(port), 'ECONNREFUSED');
  });

  test('a config file that is not JSON: exit 2 naming the file', TEST, async () => {
    const path = writeTempConfig('{ "port": ');
    const child = start(['--config', path]);
    assert.equal(await exitCode(child), 2, describeChild(child));
    assert.ok(child.stderr().includes(path), child.stderr());
  });

  test('a missing config file: exit 2 naming the file', TEST, async () => {
    const path = join(mkdtempSync(join(tmpdir(), 'resident-test-')), 'nope.json');
    const child = start(['--config', path]);
    assert.equal(await exitCode(child), 2, describeChild(child));
    assert.ok(child.stderr().includes(path), child.stderr());
  });

  test('PORT=abc: exit 2 naming port, nothing listening', TEST, async () => {
    const port = await freePort();
    const child = start(['--config', writeTempConfig(validConfig(port))], { PORT: 'abc' });
    assert.equal(await exitCode(child), 2, describeChild(child));
    assert.match(child.stderr(), /\bport\b/);
    assert.equal(await probe(port), 'ECONNREFUSED');
  });

  test('PORT out of range: exit 2 naming port', TEST, async () => {
    const port = await freePort();
    const child = start(['--config', writeTempConfig(validConfig(port))], { PORT: '70000' });
    assert.equal(await exitCode(child), 2, describeChild(child));
    assert.match(child.stderr(), /\bport\b/);
    assert.equal(await probe(port), 'ECONNREFUSED');
  });

  // No Authorization header could carry these (the bearer check reads `\S+` from latin1).
  test('an admin.token with a space in the config file: exit 2 naming admin.token, not echoing it, nothing listening', TEST, async () => {
    const port = await freePort();
    const token = 'correct horse battery staple';
    const child = start(['--config', writeTempConfig({ ...validConfig(port), admin: { token } })]);
    assert.equal(await exitCode(child), 2, describeChild(child));
    assert.match(child.stderr(), /admin\.token must be printable ASCII without spaces/);
    assert.ok(!child.stderr().includes(token), 'the secret is not echoed');
    assert.ok(!child.stderr().includes('correct horse'), 'not even part of it');
    assert.equal(await probe(port), 'ECONNREFUSED');
  });

  test('a RESIDENT_ADMIN_TOKEN with a non-ASCII character: exit 2 naming admin.token, not echoing it, nothing listening', TEST, async () => {
    const port = await freePort();
    const token = 'mot-de-passe-\u00e9t\u00e9-0123456789';
    const child = start(['--config', writeTempConfig(validConfig(port))], { RESIDENT_ADMIN_TOKEN: token });
    assert.equal(await exitCode(child), 2, describeChild(child));
    assert.match(child.stderr(), /admin\.token must be printable ASCII without spaces/);
    assert.ok(!child.stderr().includes('mot-de-passe'), 'the secret is not echoed');
    assert.equal(childLogs(child).find((l) => l.event === 'started'), undefined);
    assert.equal(await probe(port), 'ECONNREFUSED');
  });

  test('a hook module that cannot be found: exit 2 naming the hook, the module and the config key, nothing listening', TEST, async () => {
    const port = await freePort();
    const missing = join(mkdtempSync(join(tmpdir(), 'resident-test-')), 'onConnection.ts');
    const child = start(['--config', writeTempConfig(validConfig(port, { hooks: { onConnection: missing } }))]);
    const stderr = await failedToLoad(child, 'onConnection', missing);
    assert.match(stderr, /error: {2}the file does not exist/);
    assert.match(stderr, /correct hooks\.onConnection in the config file/);
    assert.equal(childLogs(child).find((l) => l.event === 'started'), undefined);
    assert.equal(await probe(port), 'ECONNREFUSED');
  });

  test('a hook module whose loading throws a SqliteError: exit 2, naming the module as the file that threw, with the error\'s type, code and message', TEST, async () => {
    const port = await freePort();
    const failing = join(ROOT, 'test/fixtures/failing-load/onConnection.ts');
    const child = start(['--config', writeTempConfig(validConfig(port, { hooks: { onConnection: failing } }))]);
    const stderr = await failedToLoad(child, 'onConnection', failing);
    assert.ok(stderr.includes('error:  SqliteError [SQLITE_CANTOPEN]: unable to open database file'), stderr);
    // The line of the hook module that opened the database (source-mapped: the .ts line).
    assert.ok(stderr.includes(`thrown: ${failing}:9:1 (the hook module itself)`), stderr);
    assert.ok(!stderr.includes('[object Object]'), stderr);
    assert.equal(await probe(port), 'ECONNREFUSED');
  });

  test('a module the hook imports throws as it loads: the message names that module, not the hook module or Resident\'s', TEST, async () => {
    const hook = join(ROOT, 'test/fixtures/failing-load/imports-failing.ts');
    const child = start(['--config', writeTempConfig(validConfig(await freePort(), { hooks: { onSessionSuspend: hook } }))]);
    const stderr = await failedToLoad(child, 'onSessionSuspend', hook);
    assert.ok(stderr.includes('error:  SqliteError [SQLITE_CANTOPEN]: unable to open database file'), stderr);
    const thrower = join(ROOT, 'test/fixtures/failing-load/open-database.ts');
    assert.ok(stderr.includes(`thrown: ${thrower}:6:19 (a module the hook module imports)`), stderr);
    assert.match(stderr, /fix: {4}the module's top-level code runs as each worker thread starts/);
  });

  test('a TypeScript hook module with a syntax error: exit 2 naming the file, line and column', TEST, async () => {
    const hook = tempHook('onConnection.ts', 'export default function onConnection() {\n  if (true) {\n    return undefined;\n');
    const child = start(['--config', writeTempConfig(validConfig(await freePort(), { hooks: { onConnection: hook } }))]);
    const stderr = await failedToLoad(child, 'onConnection', hook);
    assert.ok(stderr.includes('error:  TransformError: Unexpected end of file'), stderr);
    assert.ok(stderr.includes(`thrown: ${hook}:4:0 (the hook module itself)`), stderr);
    assert.match(stderr, /correct the syntax/);
  });

  test('a JavaScript hook module with a syntax error: exit 2 naming the file and line (Node\'s error does not)', TEST, async () => {
    const hook = tempHook('onConnection.mjs', 'export default function onConnection() {\n  return 1 +;\n}\n');
    const child = start(['--config', writeTempConfig(validConfig(await freePort(), { hooks: { onConnection: hook } }))]);
    const stderr = await failedToLoad(child, 'onConnection', hook);
    assert.ok(stderr.includes("error:  SyntaxError: Unexpected token ';'"), stderr);
    assert.ok(stderr.includes(`thrown: ${hook}:2 (the hook module itself)`), stderr);
  });

  test('a hook module that imports a package not installed: exit 2 naming the package, the importing file and the fix', TEST, async () => {
    const hook = tempHook('onConnection.ts', "import { helper } from 'resident-no-such-package';\nexport default function onConnection() {\n  return helper();\n}\n");
    const child = start(['--config', writeTempConfig(validConfig(await freePort(), { hooks: { onConnection: hook } }))]);
    const stderr = await failedToLoad(child, 'onConnection', hook);
    assert.ok(stderr.includes("error:  Error [ERR_MODULE_NOT_FOUND]: Cannot find package 'resident-no-such-package' imported from"), stderr);
    assert.ok(stderr.includes(`thrown: ${hook} (the hook module itself)`), stderr);
    assert.match(stderr, /fix: {4}install resident-no-such-package /);
  });

  test('a hook module without a default export: exit 2 naming the hook, what it exports and the signature to export', TEST, async () => {
    const port = await freePort();
    const child = start(['--config', writeTempConfig(validConfig(port, { hooks: { onSessionSuspend: NO_DEFAULT_HOOK } }))]);
    const stderr = await failedToLoad(child, 'onSessionSuspend', NO_DEFAULT_HOOK);
    assert.match(stderr, /error: {2}the module has no default export \(it exports onConnection\)/);
    assert.match(stderr, /export default async function onSessionSuspend\(ctx, reason\)/);
    assert.equal(await probe(port), 'ECONNREFUSED');
  });

  test('an unknown command-line flag: exit 2 with usage', TEST, async () => {
    const child = start(['--bogus']);
    assert.equal(await exitCode(child), 2, describeChild(child));
    assert.match(child.stderr(), /--bogus/);
    assert.match(child.stderr(), /usage/i);
  });

  test('--config without a value, or a stray argument: exit 2', TEST, async () => {
    const noValue = start(['--config']);
    const stray = start(['--config', writeTempConfig(validConfig(await freePort())), 'extra.json']);
    assert.equal(await exitCode(noValue), 2, describeChild(noValue));
    assert.match(noValue.stderr(), /--config/);
    assert.equal(await exitCode(stray), 2, describeChild(stray));
    assert.match(stray.stderr(), /extra\.json/);
  });
});

describe('starting', () => {
  test('--config selects the file: the server listens where that file says', TEST, async () => {
    const port = await freePort();
    const child = start(['--config', writeTempConfig(validConfig(port))]);
    const url = await started(child);
    assert.equal(url, `http://127.0.0.1:${port}`);
    const reply = await new Client(url).get('/state');
    assert.equal(reply.status, 200);
    assert.equal(reply.json().n, 0);
    // Static files from the configured publicDir.
    assert.equal((await send(`${url}/style.css`)).status, 200);
    child.process.kill('SIGTERM');
    assert.equal(await exitCode(child), 0, describeChild(child));
  });

  test('--config=PATH works too', TEST, async () => {
    const port = await freePort();
    const child = start([`--config=${writeTempConfig(validConfig(port))}`]);
    assert.equal(await started(child), `http://127.0.0.1:${port}`);
    child.process.kill('SIGTERM');
    assert.equal(await exitCode(child), 0, describeChild(child));
  });

  test('PORT overrides the config file port', TEST, async () => {
    const [configPort, envPort] = (await freePorts(2)) as [number, number];
    assert.notEqual(configPort, envPort);
    const child = start(['--config', writeTempConfig(validConfig(configPort))], { PORT: String(envPort) });
    const url = await started(child);
    assert.equal(url, `http://127.0.0.1:${envPort}`);
    const client = new Client(url);
    assert.equal((await client.get('/inc')).json().n, 1);
    assert.equal((await client.get('/inc')).json().n, 2);
    assert.equal(await probe(configPort), 'ECONNREFUSED');
    child.process.kill('SIGTERM');
    assert.equal(await exitCode(child), 0, describeChild(child));
  });
});

describe('shutdown', () => {
  test('SIGTERM suspends every live context with reason "shutdown" and exits 0', TEST, async () => {
    const { child, record } = await startWithClients(5);
    child.process.kill('SIGTERM');
    assert.equal(await exitCode(child), 0, describeChild(child));

    // The hook itself ran once per context, with reason 'shutdown' and the context's variables alive.
    const calls = readRecords(record);
    assert.equal(calls.length, 5, JSON.stringify(calls));
    assert.ok(calls.every((c) => c.reason === 'shutdown'), JSON.stringify(calls));
    assert.deepEqual(calls.map((c) => c.n).sort(), [1, 2, 3, 4, 5]);

    // And the log says so.
    const suspended = suspendedLines(child, 'shutdown');
    assert.equal(suspended.length, 5, describeChild(child));
    assert.equal(new Set(suspended.map((l) => l.session)).size, 5);
    const stopped = childLogs(child).filter((l) => l.event === 'stopped');
    assert.equal(stopped.length, 1, describeChild(child));
    assert.equal(stopped[0]!.suspended, 5);
    assert.equal(stopped[0]!.lost, 0);
  });

  test('SIGINT twice: one shutdown, 5 suspends (not 10), exit 0', TEST, async () => {
    // Each suspend takes 800 ms, so the second SIGINT lands while the first shutdown runs.
    const { child, record } = await startWithClients(5, { RESIDENT_TEST_SUSPEND_DELAY_MS: '800' });
    child.process.kill('SIGINT');
    await waitFor(async () => readRecords(record).length > 0, 5000, 'the first suspend hook call');
    assert.equal(child.process.exitCode, null, 'still shutting down when the second signal is sent');
    child.process.kill('SIGINT');
    assert.equal(await exitCode(child), 0, describeChild(child));

    const stopping = childLogs(child).filter((l) => l.event === 'stopping');
    assert.equal(stopping.length, 2, `both signals were handled\n${describeChild(child)}`);
    const calls = readRecords(record);
    assert.equal(calls.length, 5, JSON.stringify(calls));
    assert.ok(calls.every((c) => c.reason === 'shutdown'), JSON.stringify(calls));
    assert.equal(suspendedLines(child, 'shutdown').length, 5, describeChild(child));
    assert.equal(childLogs(child).filter((l) => l.event === 'stopped').length, 1, describeChild(child));
  });

  test('SIGTERM with a request in flight: the request finishes before its context is suspended', TEST, async () => {
    const { child, record, clients, requests } = await startWithClients(2);
    const slow = clients[0]!.get('/sleep?ms=600');
    await waitFor(async () => readRecords<{ path: string }>(requests).some((r) => r.path === '/sleep'), 5000, 'the slow request to reach its hook');
    child.process.kill('SIGTERM');
    const reply = await slow;
    assert.equal(reply.status, 200);
    assert.equal(reply.json().n, 1);
    assert.equal(await exitCode(child), 0, describeChild(child));
    const calls = readRecords(record);
    assert.equal(calls.length, 2, JSON.stringify(calls));
    assert.ok(calls.every((c) => c.reason === 'shutdown'));
  });

  test('a suspend hook that throws at shutdown: the loss is logged and the exit code is 1', TEST, async () => {
    const { child, clients, record } = await startWithClients(2);
    assert.equal((await clients[0]!.get('/mode?value=throw')).status, 200);
    child.process.kill('SIGTERM');
    assert.equal(await exitCode(child), 1, describeChild(child));

    const calls = readRecords(record);
    assert.equal(calls.length, 2, JSON.stringify(calls));
    assert.ok(calls.every((c) => c.reason === 'shutdown'), JSON.stringify(calls));
    assert.deepEqual(calls.map((c) => c.mode).sort(), ['throw', null].sort());

    const errors = childLogs(child).filter((l) => l.level >= 50);
    const loss = errors.find((l) => /onSessionSuspend/.test(String(l.hook ?? l.msg)) && /lost/i.test(l.msg));
    assert.ok(loss, `an error line naming the lost suspend\n${describeChild(child)}`);
    assert.match(String(loss.hook ?? loss.msg), /shutdown/);
    // The other context was suspended normally.
    assert.equal(suspendedLines(child, 'shutdown').length, 1, describeChild(child));
    const stopped = childLogs(child).find((l) => l.event === 'stopped');
    assert.equal(stopped?.lost, 1, describeChild(child));
    assert.equal(stopped?.suspended, 1);
  });
});
