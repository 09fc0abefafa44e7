/**
 * `npm run cluster`: a three-node Resident cluster on this machine, for trying the cluster out.
 * Nodes a, b and c (the demo's hooks and public folder) on ports 8081-8083, their private
 * listeners on 9081-9083, all on the local Redis (127.0.0.1:6379, keys under `demo-cluster:`),
 * and, when `haproxy` is installed, HAProxy on 8080 with deploy/haproxy.cfg as shipped.
 *
 * Each node's config.json is written to a fresh temp folder (with a secret generated for this
 * run), and its log goes to a file there; warnings, errors and a few milestones are echoed here.
 * Kill a node yourself (kill -9, or SIGTERM to drain it) to watch its sessions move: the demo
 * keeps the others running. Ctrl-C (SIGINT) or SIGTERM stops everything: SIGTERM to each node
 * (it drains: every session suspended and released, the lease deleted), then HAProxy; a second
 * Ctrl-C kills what is left.
 *
 * Exit codes: 0 every node it stopped exited 0; 1 a node failed its shutdown (exit 1: a suspend
 * was lost) or had to be killed; 2 the demo could not start (Redis down, a port taken).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createWriteStream, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { createClient } from 'redis';

const ROOT = resolve(import.meta.dirname, '..');
const REDIS_URL = 'redis://127.0.0.1:6379';
const PREFIX = 'demo-cluster:';
const NODES = [
  { name: 'a', port: 8081, privatePort: 9081 },
  { name: 'b', port: 8082, privatePort: 9082 },
  { name: 'c', port: 8083, privatePort: 9083 },
];
const BALANCER = { port: 8080, stats: 8404, config: join(ROOT, 'deploy/haproxy.cfg') };
/** A cold start through tsx on a busy machine can take a while. */
const STARTUP_MS = 120_000;
/** Above the nodes' limits.shutdownTimeout (30 s): then a node that has not exited is killed. */
const STOP_MS = 45_000;

interface Running {
  name: string;
  process: ChildProcess;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Set when the demo itself signalled it (so its exit is not reported as a surprise). */
  stopping: boolean;
  /** Every line the child writes, after the log file and the echo. */
  lines: Array<(line: string) => void>;
}

const running: Running[] = [];
let stopping = false;

function say(line: string): void {
  process.stdout.write(`${line}\n`);
}

/** Starts a child in a process group of its own: a Ctrl-C reaches the demo only, which stops the children in order. */
function launch(name: string, command: string, args: string[], logPath: string, echo: (line: string) => string | undefined, env: NodeJS.ProcessEnv = process.env): Running {
  const child = spawn(command, args, { cwd: ROOT, env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  const log = createWriteStream(logPath);
  for (const stream of [child.stdout!, child.stderr!]) {
    createInterface({ input: stream }).on('line', (line) => {
      log.write(`${line}\n`);
      const shown = echo(line);
      if (shown !== undefined) say(`[${name}] ${shown}`);
      for (const listener of entry.lines) listener(line);
    });
  }
  const entry: Running = {
    name,
    process: child,
    stopping: false,
    lines: [],
    exited: new Promise((done) => child.once('exit', (code, signal) => done({ code, signal }))),
  };
  void entry.exited.then(({ code, signal }) => {
    log.end();
    if (entry.stopping || stopping) return;
    say(`[${name}] exited (${signal ?? `code ${code}`}); log: ${logPath}`);
    if (running.every((one) => one.name === 'haproxy' || one.process.exitCode !== null || one.process.signalCode !== null)) {
      say('cluster demo: no node is left');
      stop('no node left', 1);
    }
  });
  running.push(entry);
  return entry;
}

/** A node's JSON log line, echoed when it is a warning, an error or a milestone. */
function nodeEcho(line: string): string | undefined {
  if (!line.startsWith('{')) return line;
  try {
    const entry = JSON.parse(line) as { level?: number; msg?: string; event?: string };
    if ((entry.level ?? 0) >= 40 || ['started', 'cluster-joined', 'stopping', 'lease-lost', 'lease-acquired'].includes(entry.event ?? '')) {
      return `${entry.event ?? ''} ${entry.msg ?? ''}`.trim();
    }
  } catch {
    return line;
  }
  return undefined;
}

function waitForStart(node: Running): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`node ${node.name} did not start within ${STARTUP_MS / 1000} s`)), STARTUP_MS);
    node.lines.push((line) => {
      if (line.includes('"event":"started"')) {
        clearTimeout(timer);
        resolve();
      }
    });
    void node.exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`node ${node.name} exited while starting (${signal ?? `code ${code}`})`));
    });
  });
}

async function redisAnswers(): Promise<string | undefined> {
  const client = createClient({ url: REDIS_URL, socket: { reconnectStrategy: false, connectTimeout: 2_000 } });
  client.on('error', () => {});
  try {
    await client.connect();
    await client.ping();
    return undefined;
  } catch (error) {
    return (error as Error).message;
  } finally {
    await client.close().catch(() => {});
  }
}

/** Stops every child still running: the nodes first (each drains), then HAProxy. Resolves with the exit code. */
async function stopAll(): Promise<number> {
  let code = 0;
  const stopOne = async (entry: Running, signal: NodeJS.Signals) => {
    if (entry.process.exitCode !== null || entry.process.signalCode !== null) return;
    entry.stopping = true;
    entry.process.kill(signal);
    let timer: NodeJS.Timeout | undefined;
    const result = await Promise.race([entry.exited, new Promise<null>((done) => (timer = setTimeout(() => done(null), STOP_MS)))]);
    clearTimeout(timer);
    if (result === null) {
      say(`[${entry.name}] still running ${STOP_MS / 1000} s after ${signal}: killed`);
      entry.process.kill('SIGKILL');
      await entry.exited;
      code = 1;
    } else if (entry.name !== 'haproxy' && result.code !== 0) {
      say(`[${entry.name}] exited ${result.signal ?? `with code ${result.code}`}`);
      code = 1;
    }
  };
  await Promise.all(running.filter((entry) => entry.name !== 'haproxy').map((entry) => stopOne(entry, 'SIGTERM')));
  await Promise.all(running.filter((entry) => entry.name === 'haproxy').map((entry) => stopOne(entry, 'SIGTERM')));
  return code;
}

function killAll(): void {
  for (const entry of running) {
    if (entry.process.exitCode === null && entry.process.signalCode === null) entry.process.kill('SIGKILL');
  }
}

async function main(): Promise<number> {
  const redisDown = await redisAnswers();
  if (redisDown !== undefined) {
    say(`cluster demo: Redis does not answer at ${REDIS_URL} (${redisDown}); start it (redis-server) and try again`);
    return 2;
  }
  const dir = mkdtempSync(join(tmpdir(), 'resident-cluster-demo-'));
  const secret = randomBytes(32).toString('base64url');
  const adminToken = randomBytes(24).toString('base64url');
  const nodes = NODES.map(({ name, port, privatePort }) => {
    const path = join(dir, `${name}.json`);
    const config = {
      host: '127.0.0.1',
      port,
      publicDir: join(ROOT, 'public'),
      hooks: { onConnection: join(ROOT, 'src/hooks/onConnection.ts'), onSessionSuspend: join(ROOT, 'src/hooks/onSessionSuspend.ts') },
      // One worker thread each: three nodes share this machine.
      workers: { threads: 1 },
      sessions: {
        cookieTimeout: '480m',
        processTimeout: '480m',
        // HAProxy on this machine adds X-Forwarded-For (deploy/haproxy.cfg): trust loopback.
        trustProxy: ['loopback'],
        // A node killed with kill -9 loses at most the last 2 s of its sessions.
        checkpointInterval: '2s',
      },
      store: { kind: 'redis', url: REDIS_URL, prefix: PREFIX },
      cluster: { enabled: true, nodeId: name, host: '127.0.0.1', port: privatePort, secret, leaseTimeout: '5s' },
      admin: { token: adminToken },
      log: { level: 'info' },
    };
    // The folder is the caller's alone (mkdtemp: 0700); the file holds the secret and the token.
    writeFileSync(path, JSON.stringify(config, null, 2), { mode: 0o600 });
    const node = launch(name, process.execPath, ['--import', 'tsx', join(ROOT, 'src/main.ts'), '--config', path], join(dir, `${name}.log`), nodeEcho);
    return { name, port, privatePort, path, node };
  });
  try {
    await Promise.all(nodes.map(({ node }) => waitForStart(node)));
  } catch (error) {
    // Stopped by a signal meanwhile: the handler exits once everything has stopped.
    if (stopping) return new Promise<never>(() => {});
    say(`cluster demo: ${(error as Error).message} (logs in ${dir})`);
    stopping = true;
    await stopAll();
    return 2;
  }
  if (stopping) return new Promise<never>(() => {});
  const haproxy = spawnSync('haproxy', ['-v'], { encoding: 'utf8' });
  let balanced = false;
  if (haproxy.error || haproxy.status !== 0) {
    say('cluster demo: haproxy is not installed: no balancer on 8080 (each node answers on its own port; forwarding does the rest)');
  } else {
    const balancer = launch('haproxy', 'haproxy', ['-f', BALANCER.config, '-db'], join(dir, 'haproxy.log'), (line) =>
      /\bis (UP|DOWN)\b|\[ALERT\]/.test(line) && !line.startsWith('[WARNING]') ? line : undefined,
    );
    // HAProxy exits at once when it cannot bind; otherwise it is up.
    const early = await Promise.race([balancer.exited, new Promise<null>((done) => setTimeout(() => done(null), 1_500))]);
    if (stopping) return new Promise<never>(() => {});
    if (early !== null) {
      say(`cluster demo: HAProxy exited at start (${early.signal ?? `code ${early.code}`}); see ${join(dir, 'haproxy.log')}`);
      stopping = true;
      await stopAll();
      return 2;
    }
    balanced = true;
  }
  say('');
  say(`Resident cluster demo: 3 nodes on Redis ${REDIS_URL} (keys under ${PREFIX})`);
  if (balanced) {
    say(`  http://127.0.0.1:${BALANCER.port}/   HAProxy (deploy/haproxy.cfg): routes on the resident_node cookie`);
    say(`  http://127.0.0.1:${BALANCER.stats}/   HAProxy's statistics (which nodes are up)`);
  }
  for (const { name, port, privatePort, node } of nodes) {
    say(`  http://127.0.0.1:${port}/   node ${name} (pid ${node.process.pid}, private listener 127.0.0.1:${privatePort})`);
  }
  say(`  admin view: http://127.0.0.1:${nodes[0]!.port}/_resident/  token ${adminToken}`);
  say(`  configs and logs: ${dir}`);
  say(`  drain a node: kill -TERM <pid>; crash one: kill -9 <pid>; restart it: npm start -- --config ${join(dir, '<name>.json')}`);
  say('Ctrl-C stops everything.');
  // The signal handlers (below) stop everything and exit from here on.
  return new Promise<never>(() => {});
}

/**
 * The first signal stops everything in order (also while the nodes are still starting: what
 * has started is stopped); a second one kills what is left.
 */
function stop(why: string, failed = 0): void {
  if (stopping) {
    say(`cluster demo: ${why} again: killing what is left`);
    killAll();
    process.exit(130);
  }
  stopping = true;
  say(`cluster demo: ${why}: stopping the nodes (each drains its sessions), then HAProxy`);
  void stopAll().then((code) => {
    say(code === 0 && failed === 0 ? 'cluster demo: stopped' : 'cluster demo: stopped, not cleanly');
    process.exit(code || failed);
  });
}

process.on('SIGINT', () => stop('SIGINT'));
process.on('SIGTERM', () => stop('SIGTERM'));
main().then(
  (code) => process.exit(code),
  (error) => {
    say(`cluster demo: ${(error as Error).stack ?? error}`);
    killAll();
    process.exit(1);
  },
);
