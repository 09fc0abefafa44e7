/**
 * The log (pino): one line per lifecycle event naming the session by a salted hash, never by
 * its ID (RELIABILITY.md A13, scanned over every line for every raw cookie value the tests saw,
 * including unknown (A3), malformed (A6) and foreign (B1) ones); `log.level`; `log.format`
 * through the command line (JSON lines, readable lines, and "auto" under a real pseudo-terminal
 * made by util-linux `script`); and the startup banner, with RESIDENT_ADMIN_TOKEN.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { after, describe, test } from 'node:test';
import { hashId } from '../src/log.ts';
import {
  Client,
  ManualClock,
  ROOT,
  childLogs,
  cliConfig,
  describeChild,
  runMain,
  send,
  skipOrFailOnCi,
  startTestServer,
  waitFor,
  waitForStart,
  writeTempConfig,
  type Child,
  type LogLine,
  type Reply,
  type TestServer,
} from './helpers.ts';

const OPS_HOOK = join(ROOT, 'test/fixtures/ops/onConnection.ts');
const TEST = { timeout: 30_000 };
const DEBUG = 20;
const INFO = 30;
const WARN = 40;

const servers: TestServer[] = [];
const clients: Client[] = [];
const children: Child[] = [];
const ptys: ChildProcessWithoutNullStreams[] = [];
const tempDirs: string[] = [];

after(async () => {
  for (const child of children) if (child.process.exitCode === null && child.process.signalCode === null) child.process.kill('SIGKILL');
  for (const pty of ptys) if (pty.exitCode === null && pty.signalCode === null) process.kill(-pty.pid!, 'SIGKILL');
  await Promise.all(clients.map((c) => c.close()));
  for (const server of servers) await server.close();
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
});

function client(url: string, localAddress?: string): Client {
  const c = new Client(url, { localAddress });
  clients.push(c);
  return c;
}

/** Every raw cookie value sent or received by the tests of this file. */
const rawValues = new Set<string>();

/** Remembers every RSID value a reply set. */
function collect(reply: Reply): Reply {
  for (const line of reply.setCookies) {
    const match = /^RSID=([^;]*)/.exec(line);
    if (match?.[1]) rawValues.add(match[1]);
  }
  return reply;
}

async function get(c: Client, path: string, init?: Parameters<Client['get']>[1]): Promise<Reply> {
  if (init?.headers?.cookie) rawValues.add(init.headers.cookie.replace(/^RSID=/, ''));
  else if (c.cookie) rawValues.add(c.cookie);
  return collect(await c.get(path, init));
}

/**
 * Asserts no raw value collected so far appears anywhere in `text`; for session-ID-shaped values
 * not even half of one (any 11 consecutive characters: 66 bits of the ID).
 */
function assertNoRawValue(text: string, where: string): void {
  assert.ok(rawValues.size > 0);
  for (const value of rawValues) {
    assert.ok(!text.includes(value), `${where}: the raw cookie value ${JSON.stringify(value)} appears in the log`);
    // Either shape the server accepts: 22 random characters and 2 naming the home slot, or an earlier version's 22.
    if (!/^[A-Za-z0-9_-]{22}(?:[A-Za-z0-9_-]{2})?$/.test(value)) continue;
    for (let i = 0; i + 11 <= value.length; i++) {
      const part = value.slice(i, i + 11);
      assert.ok(!text.includes(part), `${where}: ${JSON.stringify(part)}, part of the raw ID ${JSON.stringify(value)}, appears in the log`);
    }
  }
}

function linesWith(t: TestServer, event: string, id?: string): LogLine[] {
  return t.logs.filter((line) => line.event === event && (id === undefined || line.session === hashId(id)));
}

const ANSI = /\x1b\[[0-9;]*m/g;
const stripAnsi = (text: string) => text.replace(ANSI, '');

/** The lines of `text` that parse as JSON objects. */
function jsonLines(text: string): unknown[] {
  return text
    .split(/\r?\n/)
    .filter((line) => line.trim())
    .flatMap((line) => {
      try {
        const value = JSON.parse(line) as unknown;
        return typeof value === 'object' && value !== null ? [value] : [];
      } catch {
        return [];
      }
    });
}

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'resident-logs-'));
  tempDirs.push(dir);
  return dir;
}

function start(config: unknown, env: Record<string, string> = {}): Child {
  const child = runMain(['--config', writeTempConfig(config)], env);
  children.push(child);
  return child;
}

async function exitOf(child: Child, ms = 15_000): Promise<number | null> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      child.exited,
      new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`no exit within ${ms} ms\n${describeChild(child)}`)), ms))),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

async function stop(child: Child): Promise<void> {
  child.process.kill('SIGTERM');
  assert.equal(await exitOf(child), 0, describeChild(child));
}

/** The readable "started" line's URL, from human-readable output. */
async function readableStart(output: () => string, alive: () => boolean, what: string): Promise<string> {
  const match = await waitFor(
    () => {
      if (!alive()) throw new Error(`${what} exited before listening:\n${output()}`);
      return /Resident listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(stripAnsi(output()));
    },
    15_000,
    `${what}: "Resident listening on"`,
  );
  return match![1]!;
}

// ---------------------------------------------------------------------------------------------

describe('lifecycle lines (in process)', () => {
  test('created, suspended (evicted, admin, idle, shutdown), resumed, regenerated, closed, expired, ip-mismatch, unknown-id: each names the session by its hash', TEST, async () => {
    const clock = new ManualClock();
    const t = await startTestServer(
      {
        workers: { threads: 1 },
        sessions: { processTimeout: '10m', cookieTimeout: '1h', maxContexts: 3 },
        hooks: { onConnection: OPS_HOOK },
        log: { level: 'trace' },
      },
      clock,
    );
    servers.push(t);
    const { sessions } = t.server;
    const [a, b, c, d] = [client(t.url), client(t.url), client(t.url), client(t.url)];

    // created: A, B, C, D (D evicts A, the least recently active: maxContexts 3)
    const ids: string[] = [];
    for (const who of [a, b, c, d]) {
      await get(who, '/inc');
      ids.push(who.cookie!);
      clock.advance(1000);
    }
    const [idA, idB, idC, idD] = ids as [string, string, string, string];
    for (const id of ids) {
      const [line] = linesWith(t, 'created', id);
      assert.ok(line, `a created line for ${hashId(id)}`);
      // At debug: a cookieless flood makes one per request.
      assert.deepEqual({ level: line.level, clientIp: line.clientIp }, { level: DEBUG, clientIp: '127.0.0.1' });
    }
    await waitFor(async () => linesWith(t, 'suspended', idA).find((l) => l.reason === 'evicted'), 3000, 'A evicted');

    // resumed: A comes back (and B, now least recently active, is evicted)
    assert.equal((await get(a, '/state')).json().resumed, true);
    const [resumedA] = linesWith(t, 'resumed', idA);
    assert.deepEqual({ level: resumedA?.level, memento: resumedA?.memento }, { level: INFO, memento: true });
    await waitFor(async () => linesWith(t, 'suspended', idB).find((l) => l.reason === 'evicted'), 3000, 'B evicted');

    // admin: an operator suspends C
    assert.equal(await sessions.suspendSession(idC), 'suspended');
    assert.ok(linesWith(t, 'suspended', idC).find((l) => l.reason === 'admin'));

    // idle: A and D after processTimeout
    clock.advance(10 * 60_000);
    await waitFor(async () => [idA, idD].every((id) => linesWith(t, 'suspended', id).some((l) => l.reason === 'idle')), 3000, 'idle suspends');

    // regenerated: D resumes, then renews its ID; ctx.idHash is the hash the log uses
    const regen = await get(d, '/regenerate');
    assert.equal(regen.status, 200);
    assert.equal(regen.json().idHash, hashId(idD), 'ctx.idHash is the log hash');
    const idD2 = d.cookie!;
    assert.notEqual(idD2, idD);
    const [regenerated] = linesWith(t, 'regenerated', idD2);
    assert.deepEqual({ level: regenerated?.level, previous: regenerated?.previous }, { level: INFO, previous: hashId(idD) });

    // closed: A closes itself
    assert.equal((await get(a, '/close')).status, 200);
    assert.equal(linesWith(t, 'closed', idA)[0]?.level, INFO);

    // ip-mismatch (B1): D's cookie from 127.0.0.2
    const thief = client(t.url, '127.0.0.2');
    assert.equal((await get(thief, '/inc', { headers: { cookie: `RSID=${idD2}` } })).status, 400);
    const [mismatch] = linesWith(t, 'ip-mismatch', idD2);
    assert.deepEqual(
      { level: mismatch?.level, boundIp: mismatch?.boundIp, clientIp: mismatch?.clientIp },
      { level: WARN, boundIp: '127.0.0.1', clientIp: '127.0.0.2' },
    );

    // unknown-id (A3): well-formed, never issued; and the old ID of D after regenerate (A4-like)
    const forged = 'NeverIssuedButWellForm';
    const stranger = client(t.url);
    await get(stranger, '/state', { headers: { cookie: `RSID=${forged}` } });
    await get(client(t.url), '/state', { headers: { cookie: `RSID=${idD}` } });
    const unknown = t.logs.filter((line) => line.event === 'unknown-id');
    assert.ok(unknown.some((line) => JSON.stringify(line.presented) === JSON.stringify([hashId(forged)])), 'the forged ID by its hash');
    assert.ok(unknown.some((line) => JSON.stringify(line.presented) === JSON.stringify([hashId(idD)])), 'the dead ID by its hash');
    // The first from this source in the window at warn, the rest at debug: a client cannot fill the log.
    assert.deepEqual(unknown.map((line) => line.level), [WARN, DEBUG]);

    // A6: malformed values never reach a log, whatever happens to them
    const malformed = [
      'sEcReT%zzmalformed-value',
      '"QuotedSecretValue_12345"',
      'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA', // 32 characters: the wrong length
      'short_secret',
      'secret;;;value=x',
      'Ünïcödé-secret-valüe',
    ];
    for (const value of malformed) {
      const reply = await get(client(t.url), '/state', { headers: { cookie: `RSID=${value}` } });
      assert.ok(reply.status === 200 || reply.status === 400, `${value}: ${reply.status}`);
    }

    // expired: B and C, suspended, outlive their cookie
    clock.advance(60 * 60_000);
    await waitFor(async () => [idB, idC].every((id) => linesWith(t, 'expired', id).length === 1), 3000, 'B and C expired');

    // shutdown: E, live at the end, is suspended
    const e = client(t.url);
    await get(e, '/inc');
    const idE = e.cookie!;
    await t.close();
    assert.ok(linesWith(t, 'suspended', idE).some((l) => l.reason === 'shutdown'));
    for (const reason of ['evicted', 'admin', 'idle', 'shutdown']) {
      assert.ok(linesWith(t, 'suspended').some((l) => l.reason === reason && l.level === INFO), reason);
    }

    // A13: no raw value seen by this test, in any line; every session field is a 16-character hash.
    for (const id of [...ids, idD2, idE, forged, ...malformed]) rawValues.add(id);
    assertNoRawValue(t.rawLogs(), 'in-process log');
    const hashes = t.logs.filter((line) => line.session !== undefined).map((line) => String(line.session));
    assert.ok(hashes.length >= 15, `${hashes.length} lines name a session`);
    for (const hash of hashes) assert.match(hash, /^[A-Za-z0-9_-]{16}$/);
  });

  test('log.level: "warn" keeps warnings and drops info lines; "silent" writes nothing', TEST, async () => {
    const forged = 'ForgedForTheLevelTest0';
    rawValues.add(forged);
    for (const level of ['warn', 'silent'] as const) {
      const t = await startTestServer({ workers: { threads: 1 }, log: { level } });
      servers.push(t);
      const owner = client(t.url);
      await get(owner, '/inc');
      await get(client(t.url), '/inc', { headers: { cookie: `RSID=${forged}` } });
      await get(client(t.url, '127.0.0.2'), '/inc', { headers: { cookie: `RSID=${owner.cookie}` } });
      if (level === 'warn') {
        assert.deepEqual(t.logs.filter((line) => line.level < WARN), [], 'no info or debug line');
        assert.deepEqual(t.logs.map((line) => line.event).sort(), ['ip-mismatch', 'unknown-id']);
        assertNoRawValue(t.rawLogs(), 'warn-level log');
      } else {
        assert.equal(t.rawLogs(), '');
      }
    }
  });
});

// ---------------------------------------------------------------------------------------------

describe('log.format through the command line', () => {
  test('"pretty" (piped): readable lines, not JSON, no colour codes; the session hash is there, the raw ID is not', TEST, async () => {
    const child = start(cliConfig({ log: { format: 'pretty', level: 'debug' } }));
    const url = await readableStart(child.stdout, () => child.process.exitCode === null, 'the pretty CLI');
    const c = client(url);
    await get(c, '/inc');
    const id = c.cookie!;
    await waitFor(async () => child.stdout().includes('session created'), 5000, 'the created line');
    await stop(child);
    const out = child.stdout();
    assert.match(out, /INFO/);
    assert.match(out, /Resident listening on http:\/\/127\.0\.0\.1:\d+/);
    assert.match(out, /server stopped/, 'the last line is flushed before exit');
    assert.deepEqual(jsonLines(out), [], 'no JSON line');
    assert.doesNotMatch(out, ANSI, 'no colour codes when stdout is not a terminal');
    assert.match(out, /session: "[A-Za-z0-9_-]{16}"/, 'the created line names the session by its hash');
    assert.ok(!out.includes(id));
    assertNoRawValue(out + child.stderr(), 'pretty output');
  });

  test('the hash is salted per process: one session across a restart has another hash in each run, and neither is the unsalted SHA-256 of its ID', TEST, async () => {
    const path = join(tempDir(), 'contexts.db');
    const config = cliConfig({ store: { kind: 'sqlite', path }, log: { level: 'debug' } });
    const first = start(config);
    const c = client(await waitForStart(first));
    await get(c, '/inc');
    const id = c.cookie!;
    await stop(first); // suspended into the store
    const second = start(config);
    const again = client(await waitForStart(second));
    const resumed = await get(again, '/inc', { headers: { cookie: `RSID=${id}` } });
    assert.equal(resumed.status, 200);
    await waitFor(async () => childLogs(second).some((line) => line.event === 'resumed'), 5000, 'the resumed line');
    await stop(second);
    const created = childLogs(first).find((line) => line.event === 'created')?.session;
    const suspended = childLogs(first).find((line) => line.event === 'suspended')?.session;
    const back = childLogs(second).find((line) => line.event === 'resumed')?.session;
    assert.match(String(created), /^[A-Za-z0-9_-]{16}$/);
    assert.equal(suspended, created, 'one hash for the session within a run');
    assert.match(String(back), /^[A-Za-z0-9_-]{16}$/);
    assert.notEqual(back, created, 'another salt in another run');
    const unsalted = createHash('sha256').update(id).digest('base64url').slice(0, 16);
    assert.ok(created !== unsalted && back !== unsalted, 'not a plain hash of the ID');
  });

  test('"json": every line is a JSON object with level, time, msg; "auto" through a pipe is the same', TEST, async () => {
    for (const format of ['json', 'auto']) {
      const child = start(cliConfig({ log: { format, level: 'debug' } }));
      const url = await waitForStart(child);
      const c = client(url);
      await get(c, '/inc');
      await waitFor(async () => childLogs(child).some((line) => line.event === 'created'), 5000, 'the created line');
      await stop(child);
      const lines = child.stdout().split('\n').filter((line) => line.trim());
      assert.ok(lines.length >= 4, child.stdout());
      for (const line of lines) {
        const parsed = JSON.parse(line) as LogLine;
        assert.equal(typeof parsed.level, 'number', line);
        assert.equal(typeof parsed.time, 'number', line);
        assert.equal(typeof parsed.msg, 'string', line);
      }
      const created = childLogs(child).find((line) => line.event === 'created');
      assert.match(String(created?.session), /^[A-Za-z0-9_-]{16}$/);
      assertNoRawValue(child.stdout() + child.stderr(), `${format} output`);
    }
  });

  test('"auto" in a real terminal (a pseudo-terminal from `script`): readable, coloured lines, not JSON; Ctrl-C stops it cleanly', TEST, async (t) => {
    const which = spawn('script', ['--version']);
    const hasScript = await new Promise<boolean>((resolve) => {
      which.on('error', () => resolve(false));
      which.on('exit', (code) => resolve(code === 0));
    });
    if (!hasScript) {
      skipOrFailOnCi(t, 'util-linux script is not installed');
      return;
    }
    const config = writeTempConfig(cliConfig({ log: { format: 'auto', level: 'debug' } }));
    const quote = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
    // script runs the command through $SHELL -c: SHELL is set to /bin/sh so the user's shell
    // (or a login-less one) plays no part, and `exec` replaces it, because a shell that stays
    // in between (dash) dies of the Ctrl-C itself and takes script with it.
    const command = `exec ${[process.execPath, '--import', 'tsx', join(ROOT, 'src/main.ts'), '--config', config].map(quote).join(' ')}`;
    // -e: exit with the child's code; -f: flush as it comes; -q: no "Script started" chatter.
    const pty = spawn('script', ['-qfec', command, '/dev/null'], { cwd: ROOT, detached: true, env: { ...process.env, SHELL: '/bin/sh', TERM: 'xterm' } });
    ptys.push(pty);
    let out = '';
    pty.stdout.on('data', (chunk: Buffer) => (out += chunk.toString('utf8')));
    pty.stderr.on('data', (chunk: Buffer) => (out += chunk.toString('utf8')));
    const exited = new Promise<number | null>((resolve) => pty.on('exit', (code) => resolve(code)));
    const url = await readableStart(() => out, () => pty.exitCode === null, 'the CLI under a pty');
    const c = client(url);
    await get(c, '/inc');
    await waitFor(async () => stripAnsi(out).includes('session created'), 5000, 'the created line');
    // Ctrl-C typed at the terminal: the pty turns it into SIGINT for the server.
    pty.stdin.write('\x03');
    let timer: NodeJS.Timeout | undefined;
    const code = await Promise.race([exited, new Promise<string>((resolve) => (timer = setTimeout(() => resolve('no exit'), 15_000)))]);
    clearTimeout(timer);
    assert.equal(code, 0, out);
    const text = stripAnsi(out);
    assert.match(text, /INFO/);
    assert.match(text, /server stopped/);
    assert.deepEqual(jsonLines(text), [], 'no JSON line in a terminal');
    assert.match(out, ANSI, 'coloured in a terminal');
    assertNoRawValue(out, 'terminal output');
  });
});

// ---------------------------------------------------------------------------------------------

describe('the startup banner', () => {
  test('sqlite, 2 threads, default timeouts: URL, store kind and path, threads, both timeouts; no admin or metrics URL', TEST, async () => {
    const dir = tempDir();
    const path = join(dir, 'data', 'contexts.db');
    const child = start(cliConfig({ workers: { threads: 2 }, store: { kind: 'sqlite', path } }));
    const url = await waitForStart(child);
    const line = childLogs(child).find((l) => l.event === 'started')!;
    assert.equal(
      line.msg,
      `Resident listening on ${url} · store sqlite at ${relative(ROOT, path)}, 2 worker threads · contexts suspend after 8 hours idle; cookies last 8 hours`,
    );
    assert.match(url, /^http:\/\/127\.0\.0\.1:\d+$/);
    assert.deepEqual(
      { threads: line.threads, store: line.store, storePath: line.storePath, processTimeout: line.processTimeout, cookieTimeout: line.cookieTimeout, admin: line.admin, metrics: line.metrics },
      { threads: 2, store: 'sqlite', storePath: path, processTimeout: 28_800_000, cookieTimeout: 28_800_000, admin: null, metrics: null },
    );
    assert.equal((await send(`${url}/healthz`)).status, 200, 'the URL is where it listens');
    await stop(child);
  });

  test('RESIDENT_ADMIN_TOKEN turns the admin view on: the banner names its URL and the metrics URL, never the token', TEST, async () => {
    const dir = tempDir();
    const path = join(dir, 'contexts');
    const token = 'banner-test-token-7f3a9c2e41d8';
    const child = start(
      cliConfig({ store: { kind: 'file', path }, sessions: { processTimeout: '30m', cookieTimeout: 0 } }),
      { RESIDENT_ADMIN_TOKEN: token },
    );
    const url = await waitForStart(child);
    const line = childLogs(child).find((l) => l.event === 'started')!;
    assert.equal(
      line.msg,
      `Resident listening on ${url} · store file at ${relative(ROOT, path)}, 1 worker thread · contexts suspend after 30 minutes idle; cookies last the browser session · admin view at ${url}/_resident/ · metrics at ${url}/_resident/metrics`,
    );
    assert.deepEqual({ admin: line.admin, metrics: line.metrics }, { admin: `${url}/_resident/`, metrics: `${url}/_resident/metrics` });
    await stop(child);
    assert.ok(!(child.stdout() + child.stderr()).includes(token), 'the token is never logged');
  });

  test('memory store, processTimeout 0, metrics on a port of their own: the banner says so, and that URL answers', TEST, async () => {
    const child = start(cliConfig({ sessions: { processTimeout: 0 }, metrics: { port: 0 } }));
    const url = await waitForStart(child);
    const line = childLogs(child).find((l) => l.event === 'started')!;
    const msg = String(line.msg);
    assert.ok(msg.startsWith(`Resident listening on ${url} · store memory (volatile), 1 worker thread · `), msg);
    assert.match(msg, /never/, 'contexts are never suspended for idleness');
    assert.match(msg, /cookies last 8 hours/);
    const metrics = /metrics at (http:\/\/127\.0\.0\.1:(\d+)\/metrics)$/.exec(msg);
    assert.ok(metrics, msg);
    assert.notEqual(metrics[2], '0', 'the real port, not the configured 0');
    assert.equal(line.metrics, metrics[1]);
    assert.equal((await send(metrics[1]!)).status, 200);
    await stop(child);
  });

  test('a RESIDENT_ADMIN_TOKEN that is too short: exit 2, stderr names admin.token (not the value), nothing listening', TEST, async () => {
    const child = start(cliConfig(), { RESIDENT_ADMIN_TOKEN: 'tooShort42' });
    assert.equal(await exitOf(child), 2, describeChild(child));
    assert.match(child.stderr(), /admin\.token must be at least 16 characters/);
    assert.ok(!child.stderr().includes('tooShort42'), 'the secret is not echoed');
    assert.ok(!childLogs(child).some((l) => l.event === 'started'));
  });
});
