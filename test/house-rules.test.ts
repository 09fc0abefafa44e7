/**
 * The rules of the house (README, "Project layout"), checked on the source so that a change
 * that breaks one fails here with the file that broke it, rather than as a race weeks later.
 * The behaviour behind each rule is tested through real servers elsewhere; this holds the
 * shape that makes those tests mean something.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { SessionsView } from '../src/edge/sessions-view.ts';
import { Client, startTestServer } from './helpers.ts';

const ROOMS = join(import.meta.dirname, '../src/sessions');
const rooms = readdirSync(ROOMS)
  .filter((name) => name.endsWith('.ts'))
  .map((name) => ({ name, text: readFileSync(join(ROOMS, name), 'utf8') }));

/** The rooms whose code (comments aside) matches `pattern`. */
function roomsMatching(pattern: RegExp): string[] {
  const code = (text: string) => text.replace(/\/\*[\s\S]*?\*\//g, '').replace(/\/\/.*$/gm, '');
  return rooms.filter(({ text }) => pattern.test(code(text))).map(({ name }) => name).sort();
}

test('src/sessions/ holds the rooms, none over 250 lines', () => {
  assert.ok(rooms.length >= 10, `${rooms.length} files`);
  for (const { name, text } of rooms) {
    const lines = text.split('\n').length;
    assert.ok(lines <= 250, `${name} has ${lines} lines`);
  }
});

test('only the lifecycle room (lifecycle.ts, checkpoints.ts, endings.ts, records.ts) writes records or asks a worker for a memento, through ownership (fenced in a cluster)', () => {
  assert.deepEqual(roomsMatching(/\bownership\.(save|remove)\(/), ['checkpoints.ts', 'endings.ts', 'lifecycle.ts', 'records.ts']);
  // The store itself: written by ownership.ts (one node's plain writes) and endings.ts (quarantine) alone.
  assert.deepEqual(roomsMatching(/\bstore\.(set|setIf|delete|deleteIf|quarantine)\(/), ['endings.ts', 'ownership.ts']);
  assert.deepEqual(roomsMatching(/type: 'suspend'/), ['lifecycle.ts']);
});

test("only the directory changes a session's state", () => {
  assert.deepEqual(roomsMatching(/\.(state|ending|workerId|userId)\s*=[^=]/), ['directory.ts']);
});

test('the rooms know no thread: no worker_threads, piscina or pool import', () => {
  assert.deepEqual(roomsMatching(/from '(node:worker_threads|piscina)'|contexts\/pool\.ts/), []);
});

test('outside src/sessions/, only the facade is imported', () => {
  const outside = ['../src/server.ts', '../src/ops/admin.ts', '../src/ops/metrics.ts'];
  for (const file of outside) {
    const text = readFileSync(join(import.meta.dirname, file), 'utf8');
    for (const [, path] of text.matchAll(/from '([^']*sessions\/[^']*)'/g)) assert.match(path!, /sessions\/index\.ts$/, `${file} imports ${path}`);
  }
});

test('sessions.stats and sessions.info are read-only views: writing through them changes nothing', async () => {
  const t = await startTestServer();
  try {
    const { sessions } = t.server;
    assert.ok(sessions instanceof SessionsView);
    const client = new Client(t.url);
    assert.equal((await client.get('/inc')).status, 200);
    const id = client.cookie;
    assert.ok(id, 'a session cookie');
    const created = sessions.stats.created;
    assert.throws(() => {
      (sessions.stats as { created: number }).created = 0;
    }, TypeError);
    assert.throws(() => {
      (sessions.stats.suspended as { idle: number }).idle = 99;
    }, TypeError);
    assert.equal(sessions.stats.created, created);
    const info = (await sessions.info(id))!;
    info.state = 'suspended';
    info.id = 'x';
    assert.equal((await sessions.info(id))?.state, 'live', 'a copy: the session is untouched');
    assert.equal((await sessions.list({ state: 'live' })).length, 1);
    assert.deepEqual({ ...sessions.stats }.live, 1, 'spreading gives the values');
  } finally {
    await t.close();
  }
});
