/**
 * Keeps `npm run bench` from rotting: one quick round of the hit counter against every
 * contender. It asserts that the run completes and reports every contender, never a speed.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { ROOT } from './helpers.ts';

test('a quick bench run drives every contender and writes its table', { timeout: 120_000 }, async () => {
  const out = mkdtempSync(join(tmpdir(), 'resident-bench-'));
  const { stdout } = await promisify(execFile)(
    process.execPath,
    ['--import', 'tsx', 'bench/run.ts', '--quick', '--workloads', 'a', '--seconds', '1', '--warmup', '0.5', '--out', out],
    { cwd: ROOT, maxBuffer: 10 * 1024 * 1024 },
  );
  for (const contender of ['bare node:http + Map', 'express + express-session', 'fastify + @fastify/session', 'Resident, 1 thread', 'Resident, 2 threads']) {
    const row = stdout.split('\n').find((line) => line.startsWith(`| ${contender} |`));
    assert.ok(row, `the table has a row for ${contender}`);
    const rps = Number(row.split('|')[2]);
    assert.ok(rps > 0, `${contender} answered requests (${row})`);
  }
  const files = readdirSync(out);
  const json = files.find((file) => file.endsWith('.json'));
  assert.ok(json && files.some((file) => file.endsWith('.md')), `results written: ${files.join(', ')}`);
  const results = JSON.parse(readFileSync(join(out, json), 'utf8'));
  assert.equal(results.rows.filter((row: { workload: string }) => row.workload === 'a').length, 5);
});
