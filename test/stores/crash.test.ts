/**
 * Crashes against the local durable stores (RELIABILITY.md E1, E2, E3), with real processes and
 * real signals, nothing mocked:
 *  - E1/E2 at the store level (crash-kills.ts): a child process writes records through the
 *    shipped SqliteStore / FileStore as fast as it can and is killed with SIGKILL at a random
 *    instant; every record read back afterwards is whole, self-consistent, never older than the
 *    last acknowledged write and never newer than the last attempted one. ≥ 100 kills per store.
 *  - E2 through the CLI: a session suspended (logged) just before `kill -9` resumes after a restart.
 *  - E3 through the CLI: SIGTERM with 20 live contexts suspends all 20; all resume after a restart.
 * The shared stores (Redis, PostgreSQL) have the same tests in crash-shared.test.ts.
 */
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import Database from 'better-sqlite3';
import { newSessionId } from '../../src/contexts/ids.ts';
import { FileStore } from '../../src/stores/file.ts';
import { SqliteStore } from '../../src/stores/sqlite.ts';
import type { SessionRecord } from '../../src/stores/store.ts';
import { crashRecord } from '../fixtures/crash/records.ts';
import { cliCrashTests } from './crash-cli.ts';
import { killTest, tempDir, type CrashTarget } from './crash-kills.ts';

type Kind = 'sqlite' | 'file';

const storePath = (kind: Kind, dir: string) => (kind === 'sqlite' ? join(dir, 'contexts.db') : join(dir, 'contexts'));

/** A lane's own database file or folder, written by the writer and read back as below. */
function lane(kind: Kind): CrashTarget {
  const path = storePath(kind, tempDir(`crash-${kind}`));
  return { store: [kind, path], readBack: (ids) => readBack(kind, path, ids) };
}

/** Reads every record back the way a restarted server would, checking what the kill left behind. */
async function readBack(kind: Kind, path: string, ids: string[]): Promise<{ records: Map<string, SessionRecord>; tempsLeft: number }> {
  const records = new Map<string, SessionRecord>();
  const corrupt: string[] = [];
  const onCorrupt = (id: string, reason: string) => corrupt.push(`${id}: ${reason}`);
  let tempsLeft = 0;
  if (kind === 'sqlite') {
    // The shipped store opens the database first, as a restarted server would (WAL recovery).
    const store = new SqliteStore({ path, onCorrupt });
    try {
      for (const id of ids) {
        const record = await store.get(id);
        if (record) records.set(id, record);
      }
      // SQLite's own check of every page and index, on what the store now sees.
      const raw = new Database(path, { readonly: true });
      try {
        assert.equal(raw.pragma('integrity_check', { simple: true }), 'ok', 'SQLite integrity_check after kill -9');
      } finally {
        raw.close();
      }
    } finally {
      await store.close();
    }
    const check = new Database(path, { readonly: true });
    try {
      assert.equal((check.prepare('SELECT count(*) AS n FROM quarantine').get() as { n: number }).n, 0, 'nothing quarantined');
      const stray = check.prepare('SELECT id FROM sessions').all() as Array<{ id: string }>;
      assert.ok(stray.every((row) => ids.includes(row.id)), 'only the written IDs are stored');
    } finally {
      check.close();
    }
  } else {
    // What the kill left on disk, before the store touches it.
    const temps = existsSync(path) ? readdirSync(path).filter((name) => name.startsWith('.tmp-')) : [];
    tempsLeft = temps.length;
    const onDisk = new Map<string, string>();
    for (const id of ids) {
      const file = join(path, `${id}.json`);
      if (existsSync(file)) onDisk.set(id, readFileSync(file, 'utf8'));
    }
    const store = await FileStore.open({ dir: path, onCorrupt });
    try {
      assert.deepEqual(
        readdirSync(path).filter((name) => name.startsWith('.tmp-')),
        [],
        'opening the file store removes every leftover temp file',
      );
      for (const id of ids) {
        const record = await store.get(id);
        const file = onDisk.get(id);
        // A temp file is never data: get returns exactly the renamed file, or nothing.
        if (file === undefined) assert.equal(record, undefined, `${id}: no record file, yet get returned one`);
        else {
          let onDiskRecord: unknown;
          try {
            onDiskRecord = JSON.parse(file);
          } catch (error) {
            assert.fail(`${id}: torn record file on disk (${file.length} bytes): ${(error as Error).message}`);
          }
          assert.deepEqual(record, onDiskRecord, `${id}: get returns the record file as it was on disk`);
        }
        if (record) records.set(id, record);
      }
    } finally {
      await store.close();
    }
    assert.deepEqual(readdirSync(join(path, 'quarantine')), [], 'nothing quarantined');
  }
  assert.deepEqual(corrupt, [], 'no record reported corrupt');
  return { records, tempsLeft };
}

describe('E1/E2: kill -9 at a random instant during heavy writes, ≥ 100 times per store', () => {
  test('sqlite: every record whole and readable, none older than its last acknowledged write', { timeout: 240_000 }, async (t) => {
    await killTest(t, 'sqlite', () => lane('sqlite'));
  });

  test('file: every record whole and readable, no temp file ever read as data', { timeout: 240_000 }, async (t) => {
    const stats = await killTest(t, 'file', () => lane('file'));
    // Kills between the temp file's creation and its rename did happen, so the temp-file
    // checks above were exercised for real.
    assert.ok(stats.killsLeavingTemp > 0, 'no kill ever left a temp file behind');
  });

  test('file: a leftover temp file holding a newer (or the only) record is removed at open, never returned', async () => {
    const dir = join(tempDir('crash-file-temp'), 'contexts');
    const store = await FileStore.open({ dir });
    const kept = crashRecord(newSessionId(), 1);
    await store.set(kept);
    await store.close();
    const orphan = newSessionId();
    // What a writer killed before its rename leaves: whole, valid-looking records in temp files.
    writeFileSync(join(dir, `.tmp-${kept.id}-0a1b2c3d`), JSON.stringify(crashRecord(kept.id, 2)));
    writeFileSync(join(dir, `.tmp-${orphan}-4e5f6a7b`), JSON.stringify(crashRecord(orphan, 3)));
    writeFileSync(join(dir, `.tmp-${orphan}-deadbeef`), JSON.stringify(crashRecord(orphan, 4)).slice(0, 100)); // torn
    const again = await FileStore.open({ dir });
    try {
      assert.deepEqual(readdirSync(dir).filter((name) => name.startsWith('.tmp-')), []);
      assert.deepEqual(await again.get(kept.id), kept);
      assert.equal(await again.get(orphan), undefined);
    } finally {
      await again.close();
    }
  });
});

for (const kind of ['sqlite', 'file'] as const) cliCrashTests(kind, () => ({ kind, path: storePath(kind, tempDir(`cli-${kind}`)) }));
