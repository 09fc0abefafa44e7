/**
 * The README's table of log events (README, "Logs") is the operator's list of what the server
 * can say: checked here against the source, so that an event logged but not listed, listed but
 * never logged, or listed at a level it is not logged at, fails with its name.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { test } from 'node:test';
import { ROOT } from './helpers.ts';

const LEVELS = ['debug', 'info', 'warn', 'error'] as const;

/** Every .ts file under src/, with its text. */
function sources(): Array<{ file: string; text: string }> {
  const found: Array<{ file: string; text: string }> = [];
  const walk = (dir: string) => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) walk(path);
      else if (entry.name.endsWith('.ts')) found.push({ file: relative(ROOT, path), text: readFileSync(path, 'utf8') });
    }
  };
  walk(join(ROOT, 'src'));
  return found;
}

/**
 * `event: '…'` in the source, each with the levels it is logged at where the call says so
 * (`log.warn({ event: 'x' …`); a level chosen at run time (`log[level](…)`) is not checked.
 */
function loggedEvents(): Map<string, Set<string>> {
  const events = new Map<string, Set<string>>();
  for (const { text } of sources()) {
    for (const match of text.matchAll(/event: '([^']+)'/g)) {
      const name = match[1]!;
      const levels = events.get(name) ?? new Set<string>();
      events.set(name, levels);
      const before = /\.(debug|info|warn|error)\(\s*\{\s*$/.exec(text.slice(Math.max(0, match.index - 200), match.index));
      if (before) levels.add(before[1]!);
    }
  }
  return events;
}

/** The README's Logs table: each event named in a row's first cell, with that row's level cell. */
function listedEvents(): Map<string, string> {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  const start = readme.indexOf('\n### Logs\n');
  assert.ok(start >= 0, 'the README has a "### Logs" section');
  const section = readme.slice(start + 1, readme.indexOf('\n#', start + 2));
  const listed = new Map<string, string>();
  for (const line of section.split('\n')) {
    const cells = /^\| (.+?) \| (.+?) \| .+ \|$/.exec(line);
    if (!cells || cells[1] === '`event`') continue;
    for (const [, name] of cells[1]!.matchAll(/`([^`]+)`/g)) {
      assert.ok(!listed.has(name!), `${name} is listed twice`);
      listed.set(name!, cells[2]!);
    }
  }
  return listed;
}

test('the source names each event as a literal (a computed one would escape the check below)', () => {
  const computed: string[] = [];
  for (const { file, text } of sources()) {
    for (const match of text.matchAll(/\bevent: (?!')([A-Za-z_.]+)/g)) computed.push(`${file}: event: ${match[1]}`);
  }
  // Known and checked by hand: types (WorkerEvent, the alarms' table of literals) and endings.ts'
  // `why`, which is 'closed' | 'expired' (both logged as literals elsewhere too).
  const known = ['src/contexts/pool-contract.ts: event: WorkerEvent', 'src/contexts/pool.ts: event: WorkerEvent', 'src/contexts/worker.ts: event: WorkerEvent', 'src/sessions/endings.ts: event: why', 'src/sessions/source-alarms.ts: event: string'];
  assert.deepEqual(computed.sort(), known.sort());
});

test('every event the server logs is in the README\'s Logs table, and every event listed there is logged', () => {
  const logged = loggedEvents();
  const listed = listedEvents();
  assert.ok(logged.size >= 40, `${logged.size} events found in src/`);
  assert.deepEqual([...logged.keys()].filter((name) => !listed.has(name)).sort(), [], 'logged, but not listed in the README');
  assert.deepEqual([...listed.keys()].filter((name) => !logged.has(name)).sort(), [], 'listed in the README, but never logged');
});

test('each event is listed with the levels it is logged at', () => {
  const listed = listedEvents();
  const wrong: string[] = [];
  for (const [name, levels] of loggedEvents()) {
    const cell = listed.get(name) ?? '';
    for (const level of levels) if (!new RegExp(`\\b${level}\\b`).test(cell)) wrong.push(`${name}: logged at ${level}, listed as "${cell}"`);
    const named = LEVELS.filter((level) => new RegExp(`\\b${level}\\b`).test(cell));
    if (named.length === 0) wrong.push(`${name}: no level in "${cell}"`);
  }
  assert.deepEqual(wrong, []);
});
