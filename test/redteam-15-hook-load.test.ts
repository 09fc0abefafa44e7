/**
 * Red team, issue 15, hook load errors: a hook module whose top-level code never finishes (a
 * top-level await on something that never comes, or a loop) must fail the start as every
 * other load failure does (src/contexts/hook-load.ts): exit 2, one message naming the hook and
 * the module, and nothing of Resident's own workings (no pool-error line, no piscina stack).
 * The command itself runs (src/main.ts, what `resident start` runs).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { FIXTURE_HOOKS, cliConfig, describeChild, freePort, runMain, writeTempConfig, type Child } from './helpers.ts';

const children: Child[] = [];
after(() => {
  for (const child of children) if (child.process.exitCode === null && child.process.signalCode === null) child.process.kill('SIGKILL');
});

function tempHook(source: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'resident-rt15-hook-'));
  writeFileSync(join(dir, 'package.json'), '{ "type": "module" }');
  writeFileSync(join(dir, 'onSessionSuspend.mjs'), source);
  return join(dir, 'onSessionSuspend.mjs');
}

const CASES = {
  'a top-level await that never settles': 'await new Promise(() => {});\nexport default function onSessionSuspend() {}\n',
  'a top-level await that never settles, with a timer keeping the thread busy': 'setInterval(() => {}, 100);\nawait new Promise(() => {});\nexport default function onSessionSuspend() {}\n',
  'a loop at load': 'for (;;) {}\nexport default function onSessionSuspend() {}\n',
};

for (const [what, source] of Object.entries(CASES)) {
  test(`a hook module with ${what}: exit 2 naming the hook and the module, no stack`, { timeout: 60_000 }, async () => {
    const hook = tempHook(source);
    const config = cliConfig({ port: await freePort(), hooks: { ...FIXTURE_HOOKS, onSessionSuspend: hook }, workers: { threads: 1, stallTimeout: '2s' } });
    const child = runMain(['--config', writeTempConfig(config)]);
    children.push(child);
    const code = await Promise.race([child.exited, new Promise((resolve) => setTimeout(() => resolve('still running after 30 s'), 30_000))]);
    assert.equal(code, 2, describeChild(child));
    const stderr = child.stderr();
    assert.ok(stderr.includes('hooks.onSessionSuspend'), stderr);
    assert.ok(stderr.includes(hook), `the module is named\n${stderr}`);
    assert.match(stderr, /RESIDENT_ERR_HOOK_LOAD/);
    assert.doesNotMatch(stderr + child.stdout(), /piscina|pool-error|    at /, describeChild(child));
  });
}
