/**
 * A Node.js older than 22.12 is refused: by the command line with a sentence and exit 2, and
 * by startServer with RESIDENT_ERR_NODE_VERSION. The refusals run on a real older Node: the
 * system's, which stays beside the Node 24 that `npm install` brings on Linux x64.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { accessSync, constants, realpathSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { unsupportedNode } from '../src/node-version.ts';
import { FIXTURE_HOOKS, ROOT, skipOrFailOnCi, writeTempConfig } from './helpers.ts';

const START_SERVER = join(ROOT, 'test/fixtures/cli/start-server.ts');
const TEST = { timeout: 60_000 };

/** A `node` on PATH (or in /usr/bin, /usr/local/bin) older than 22.12, other than this one. */
function olderNode(): { path: string; version: string } | undefined {
  const seen = new Set([realpathSync(process.execPath)]);
  for (const dir of [...(process.env.PATH ?? '').split(delimiter), '/usr/bin', '/usr/local/bin']) {
    let path: string;
    try {
      path = realpathSync(join(dir, 'node'));
      accessSync(path, constants.X_OK);
    } catch {
      continue;
    }
    if (seen.has(path)) continue;
    seen.add(path);
    const version = execFileSync(path, ['-p', 'process.versions.node'], { encoding: 'utf8' }).trim();
    const [major = 0, minor = 0] = version.split('.').map(Number);
    if (major < 22 || (major === 22 && minor < 12)) return { path, version };
  }
  return undefined;
}

function needOlderNode(t: TestContext): { path: string; version: string } | undefined {
  const found = olderNode();
  if (!found) skipOrFailOnCi(t, 'no Node.js older than 22.12 on this machine');
  return found;
}

/** Runs `node --import tsx ...args` from the project root; resolves with its exit code and output. */
function run(node: string, args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(node, ['--import', 'tsx', ...args], { cwd: ROOT });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk) => (stdout += chunk));
  child.stderr.on('data', (chunk) => (stderr += chunk));
  const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
  return new Promise((resolve) =>
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    }),
  );
}

test('22.12 and every later version are accepted; anything older is refused, naming both versions', () => {
  for (const version of ['22.12.0', '22.22.1', '23.1.0', '24.22.3', '26.0.0', '100.0.0']) {
    assert.equal(unsupportedNode(version), undefined, version);
  }
  for (const version of ['22.11.0', '22.0.0', '21.7.3', '20.20.2', '18.20.8', '0.12.18', 'not a version']) {
    const refusal = unsupportedNode(version);
    assert.equal(refusal?.code, 'RESIDENT_ERR_NODE_VERSION', version);
    assert.match(refusal.message, /^Resident needs Node\.js 22\.12 or newer/);
    assert.ok(refusal.message.includes(`runs on Node.js ${version} `), refusal.message);
  }
});

test('the suite runs on a Node.js Resident accepts (npm test uses the Node that npm install brought)', () => {
  assert.equal(unsupportedNode(), undefined, `this suite runs on Node.js ${process.version}`);
});

test('the command line on an older Node.js: exit 2 and one sentence naming the version needed, nothing started', TEST, async (t) => {
  const old = needOlderNode(t);
  if (!old) return;
  const config = writeTempConfig({ host: '127.0.0.1', port: 0, store: { kind: 'memory' }, hooks: FIXTURE_HOOKS });
  const { code, stdout, stderr } = await run(old.path, [join(ROOT, 'src/main.ts'), '--config', config]);
  assert.equal(code, 2, `exit ${code}\nstdout:\n${stdout}\nstderr:\n${stderr}`);
  assert.equal(stderr.trim().split('\n').length, 1, `one line, no stack trace:\n${stderr}`);
  assert.match(stderr, new RegExp(`^resident: Resident needs Node\\.js 22\\.12 or newer .*runs on Node\\.js ${old.version.replaceAll('.', '\\.')} `));
  assert.equal(stdout, '', 'the server never started (no log line)');
});

test('startServer on an older Node.js rejects with RESIDENT_ERR_NODE_VERSION', TEST, async (t) => {
  const old = needOlderNode(t);
  if (!old) return;
  const { code, stdout, stderr } = await run(old.path, [START_SERVER]);
  assert.equal(code, 0, `exit ${code}\nstderr:\n${stderr}`);
  const outcome = JSON.parse(stdout.trim().split('\n').at(-1) ?? '{}');
  assert.equal(outcome.code, 'RESIDENT_ERR_NODE_VERSION', stdout);
  assert.match(outcome.message, new RegExp(`needs Node\\.js 22\\.12 or newer .*runs on Node\\.js ${old.version.replaceAll('.', '\\.')} `));
});

test('startServer on this Node.js starts (the fixture that proves the refusal can also succeed)', TEST, async () => {
  const { code, stdout, stderr } = await run(process.execPath, [START_SERVER]);
  assert.equal(code, 0, `exit ${code}\nstderr:\n${stderr}`);
  assert.match(stdout, /"started":"http:\/\/127\.0\.0\.1:\d+"/);
});
