/**
 * Red team, issue 15, `resident init [DIR]` as a careless user runs it: on a DIR that is a
 * file, in a folder where `hooks` or `public` is a file, or where one of the scaffold's names
 * is a dangling symbolic link. Each time: nothing written (not half a scaffold that a second
 * `init` then refuses to complete), nothing written outside DIR, a message that names the
 * problem, exit code 2, and no stack trace. The command itself runs (src/cli.ts).
 */
import assert from 'node:assert/strict';
import { existsSync, lstatSync, mkdtempSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { loadConfigFile } from '../src/config.ts';
import { ROOT, describeChild, spawnChild } from './helpers.ts';

const scratch = mkdtempSync(join(tmpdir(), 'resident-rt15-init-'));
after(() => rmSync(scratch, { recursive: true, force: true }));

async function init(dir: string): Promise<{ code: number | null; stderr: string; output: string }> {
  const child = spawnChild(process.execPath, ['--import', 'tsx', join(ROOT, 'src/cli.ts'), 'init', dir], { cwd: ROOT, env: process.env });
  const code = await child.exited;
  return { code, stderr: child.stderr(), output: describeChild(child) };
}

function assertRefused(result: { code: number | null; stderr: string; output: string }, says: RegExp): void {
  assert.equal(result.code, 2, result.output);
  assert.match(result.stderr, says);
  assert.doesNotMatch(result.stderr, /\n\s+at /, 'no stack trace');
}

test('init on a DIR that is a file writes nothing and says so', { timeout: 30_000 }, async () => {
  const file = join(scratch, 'a-file');
  writeFileSync(file, 'mine\n');
  assertRefused(await init(file), /a-file.*not a folder/);
});

test('init where hooks/ or public/ is a file writes nothing at all, so that a second init can complete', { timeout: 30_000 }, async () => {
  for (const name of ['hooks', 'public']) {
    const dir = mkdtempSync(join(scratch, `${name}-is-a-file-`));
    writeFileSync(join(dir, name), 'mine\n');
    assertRefused(await init(dir), new RegExp(`${name}.*not a folder`));
    assert.deepEqual(readdirSync(dir), [name], 'nothing written beside it');
  }
});

test('init never writes through a dangling symbolic link to a file outside DIR', { timeout: 30_000 }, async () => {
  const dir = mkdtempSync(join(scratch, 'dangling-'));
  const outside = join(scratch, 'outside-config.json');
  symlinkSync(outside, join(dir, 'config.json'));
  assertRefused(await init(dir), /config\.json/);
  assert.equal(existsSync(outside), false, 'nothing created outside DIR');
  assert.ok(lstatSync(join(dir, 'config.json')).isSymbolicLink());
  assert.deepEqual(readdirSync(dir), ['config.json'], 'nothing written beside it');
});

test('the scaffold, which has a POST route (/notes), turns the CSRF Origin check on', { timeout: 30_000 }, async () => {
  const dir = mkdtempSync(join(scratch, 'scaffold-'));
  const result = await init(dir);
  assert.equal(result.code, 0, result.output);
  assert.equal(loadConfigFile(join(dir, 'config.json')).csrf.checkOrigin, true);
});
