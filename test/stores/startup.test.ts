/**
 * Startup refuses a store it cannot use, through the CLI: exit 2 with a message naming the
 * problem, and nothing listening (issue 3, "Restarts without loss").
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { after, test } from 'node:test';
import Database from 'better-sqlite3';
import { SqliteStore } from '../../src/stores/sqlite.ts';
import { writeTempConfig } from '../helpers.ts';
import { cliConfig, cliExit, cliLogs, cliReady, describeChild, cleanup, startCli, startCliWithConfigFile, tempDir } from './server-helpers.ts';

after(cleanup);

const TEST = { timeout: 30_000 };

/** Starts the CLI with `config`, expects exit 2 without listening, and returns stderr. */
async function refused(config: unknown): Promise<string> {
  const child = startCli(config);
  const code = await cliExit(child, 20_000);
  assert.equal(code, 2, describeChild(child));
  assert.ok(!cliLogs(child).some((line) => line.event === 'started'), 'nothing listened');
  return child.stderr();
}

test('a sqlite store path under a regular file: exit 2 naming the store and the path', TEST, async () => {
  const dir = tempDir();
  const file = join(dir, 'plain-file');
  writeFileSync(file, 'not a folder');
  const path = join(file, 'contexts.db');
  const stderr = await refused(cliConfig(null, { store: { kind: 'sqlite', path } }));
  assert.match(stderr, /SQLite store/);
  assert.ok(stderr.includes(path), stderr);
  assert.match(stderr, /not a directory|ENOTDIR|EEXIST/i);
  assert.ok(stderr.includes(`'${file}'`), 'names the file in the way');
  assert.equal(readFileSync(file, 'utf8'), 'not a folder', 'the file is untouched');
});

test('a sqlite store path inside /etc/hostname (a regular file): exit 2', TEST, async () => {
  const stderr = await refused(cliConfig(null, { store: { kind: 'sqlite', path: '/etc/hostname/x.db' } }));
  assert.match(stderr, /Cannot open the SQLite store at \/etc\/hostname\/x\.db/);
});

test('a sqlite store path that is a folder: exit 2, cannot be opened', TEST, async () => {
  const dir = tempDir();
  const stderr = await refused(cliConfig(null, { store: { kind: 'sqlite', path: dir } }));
  assert.match(stderr, /Cannot open the SQLite store/);
  assert.match(stderr, /cannot be opened/);
});

test('a file store folder under a regular file, or that is a regular file: exit 2 naming the folder', TEST, async () => {
  const dir = tempDir();
  const file = join(dir, 'plain-file');
  writeFileSync(file, 'not a folder');
  for (const path of [join(file, 'contexts'), file]) {
    const stderr = await refused(cliConfig(null, { store: { kind: 'file', path } }));
    assert.match(stderr, /file store folder/);
    assert.ok(stderr.includes(path), stderr);
    assert.match(stderr, /not a directory|ENOTDIR|EEXIST/i);
  }
  assert.equal(readFileSync(file, 'utf8'), 'not a folder');
});

test('a corrupt SQLite file at the default data/contexts.db next to the config: exit 2, "not a valid SQLite database", the file kept', TEST, async () => {
  const configPath = writeTempConfig({ ...cliConfig(null), store: { kind: 'sqlite' } });
  const db = join(dirname(configPath), 'data/contexts.db');
  mkdirSync(dirname(db), { recursive: true });
  const garbage = randomBytes(8192);
  writeFileSync(db, garbage);
  const child = startCliWithConfigFile(configPath);
  assert.equal(await cliExit(child, 20_000), 2, describeChild(child));
  assert.ok(child.stderr().includes(db), child.stderr());
  assert.match(child.stderr(), /not a valid SQLite database/);
  assert.deepEqual(readFileSync(db), garbage, 'the evidence is not overwritten');
});

test('a database locked by another connection (BEGIN EXCLUSIVE): exit 2 after the busy timeout, "locked"; starts once released', TEST, async () => {
  const dir = tempDir();
  const path = join(dir, 'contexts.db');
  await new SqliteStore({ path }).close();
  const holder = new Database(path);
  holder.exec('BEGIN EXCLUSIVE');
  const config = cliConfig(null, { store: { kind: 'sqlite', path } });
  let child;
  const started = Date.now();
  try {
    child = startCli(config);
    assert.equal(await cliExit(child, 25_000), 2, describeChild(child));
  } finally {
    holder.exec('ROLLBACK');
    holder.close();
  }
  const waited = Date.now() - started;
  assert.ok(waited >= 4500, `gave up after ${waited} ms, before the 5 s busy timeout`);
  assert.match(child.stderr(), /Cannot open the SQLite store/);
  assert.match(child.stderr(), /locked/);

  const again = startCli(config);
  await cliReady(again);
  again.process.kill('SIGTERM');
  assert.equal(await cliExit(again), 0);
});
