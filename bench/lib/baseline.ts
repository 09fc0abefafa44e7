/**
 * `--baseline <commit>`: Resident as of an earlier commit, checked out in /tmp beside this
 * one, so an optimisation's before and after are measured in the same run on the same Node.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, lstatSync, readFileSync, realpathSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, dirname, join, resolve } from 'node:path';
import { resident, type ContenderSpec } from './contender.ts';

const ROOT = resolve(import.meta.dirname, '../..');
/** Written into a baseline's own node_modules after `npm ci`: the hash of the lockfile it installed. */
const STAMP = '.resident-bench-lock';

const lockHash = (root: string) => createHash('sha256').update(readFileSync(join(root, 'package-lock.json'))).digest('hex');

export function baseline(ref: string, threads: number): ContenderSpec {
  const sha = execFileSync('git', ['rev-parse', '--short', ref], { cwd: ROOT, encoding: 'utf8' }).trim();
  const root = join(tmpdir(), `resident-bench-${sha}`);
  if (!existsSync(join(root, 'package.json'))) {
    // A checkout deleted from /tmp stays registered until pruned, and `worktree add` refuses it.
    execFileSync('git', ['worktree', 'prune'], { cwd: ROOT });
    execFileSync('git', ['worktree', 'add', '--force', '--detach', root, sha], { cwd: ROOT, stdio: 'ignore' });
  }
  install(root);
  return { ...resident(threads), name: `Resident @${sha}, ${threads} thread${threads > 1 ? 's' : ''}`, root };
}

/**
 * Gives the checkout the packages its own lockfile names. The same lockfile as ours shares our
 * node_modules (a symlink); any other gets `npm ci`, once, stamped with the lockfile's hash.
 */
function install(root: string): void {
  const modules = join(root, 'node_modules');
  const hash = lockHash(root);
  const sameLock = hash === lockHash(ROOT);
  const ours = realpathSync(join(ROOT, 'node_modules'));
  const found = lstatSync(modules, { throwIfNoEntry: false });
  if (found?.isSymbolicLink()) {
    if (sameLock && existsSync(modules) && realpathSync(modules) === ours) return;
    unlinkSync(modules); // dangling, another checkout's, or ours from before the lockfiles diverged
  } else if (found && existsSync(join(modules, STAMP)) && readFileSync(join(modules, STAMP), 'utf8') === hash) {
    return;
  }
  if (sameLock && !found?.isDirectory()) {
    symlinkSync(ours, modules);
    return;
  }
  process.stderr.write(`baseline ${root}: no node_modules for its lockfile, npm ci there\n`);
  // The bench's Node first on PATH: install scripts (better-sqlite3's build, postinstall) then
  // build for the Node the contender runs on; PWD is what .npmrc's nodedir line expands.
  const result = spawnSync('npm', ['ci', '--no-audit', '--no-fund'], {
    cwd: root,
    env: { ...process.env, PWD: root, PATH: `${dirname(process.execPath)}${delimiter}${process.env.PATH ?? ''}` },
    stdio: ['ignore', 2, 2], // npm's output on our stderr: stdout carries the results table
  });
  if (result.status !== 0) throw new Error(`npm ci in ${root} failed (${result.error ?? `exit ${result.status}`})`);
  writeFileSync(join(modules, STAMP), hash);
}
