/**
 * An HAProxy in front of cluster nodes for workload (j4): one process, a `listen` section per
 * backend set, each routing on the cluster's routing cookie as the README's cluster chapter
 * says (`cookie resident_node indirect preserve nocache`: the node sets it, HAProxy only reads
 * it; a client without one goes round robin), health checks on /readyz, `option redispatch`.
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from './cluster.ts';
import { processCpuMs } from './contender.ts';

export interface Backend {
  /** The listen section's name. */
  name: string;
  /** nodeId (the routing cookie's value) and public URL of each node behind it. */
  servers: Array<{ nodeId: string; url: string }>;
}

export function haproxyConfig(listens: Array<Backend & { port: number }>, routingCookie = 'resident_node'): string {
  const lines = [
    'global',
    '  maxconn 4000',
    'defaults',
    '  mode http',
    '  option http-keep-alive',
    '  option redispatch',
    '  retries 2',
    '  timeout connect 5s',
    '  timeout client 60s',
    '  timeout server 60s',
    '  timeout http-keep-alive 60s',
  ];
  for (const listen of listens) {
    lines.push(
      `listen ${listen.name}`,
      `  bind 127.0.0.1:${listen.port}`,
      '  balance roundrobin',
      `  cookie ${routingCookie} indirect preserve nocache`,
      '  option httpchk GET /readyz',
      ...listen.servers.map((server) => {
        const { hostname, port } = new URL(server.url);
        return `  server ${server.nodeId} ${hostname}:${port} cookie ${server.nodeId} check inter 2s`;
      }),
    );
  }
  return `${lines.join('\n')}\n`;
}

export class BenchHaproxy {
  readonly urls: Map<string, string>;
  readonly config: string;
  readonly #process: ChildProcess;
  readonly #dir: string;

  private constructor(urls: Map<string, string>, config: string, child: ChildProcess, dir: string) {
    this.urls = urls;
    this.config = config;
    this.#process = child;
    this.#dir = dir;
  }

  static async start(backends: Backend[]): Promise<BenchHaproxy> {
    const listens = [];
    for (const backend of backends) listens.push({ ...backend, port: await freePort() });
    const config = haproxyConfig(listens);
    const dir = mkdtempSync(join(tmpdir(), 'resident-bench-haproxy-'));
    const path = join(dir, 'haproxy.cfg');
    writeFileSync(path, config);
    execFileSync('haproxy', ['-c', '-q', '-f', path]);
    // -db: in the foreground, not a daemon, so the bench owns the process and reads its CPU.
    const child = spawn('haproxy', ['-db', '-f', path], { stdio: ['ignore', 'ignore', 'pipe'] });
    child.stderr!.on('data', (chunk) => process.stderr.write(`[haproxy] ${chunk}`));
    for (const listen of listens) {
      const deadline = performance.now() + 10_000;
      while (!(await accepts(listen.port))) {
        if (child.exitCode !== null) throw new Error(`haproxy exited with ${child.exitCode}`);
        if (performance.now() > deadline) throw new Error(`haproxy does not listen on ${listen.port}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    }
    return new BenchHaproxy(new Map(listens.map((l) => [l.name, `http://127.0.0.1:${l.port}`])), config, child, dir);
  }

  url(name: string): string {
    return this.urls.get(name)!;
  }

  cpuMs(): number {
    return processCpuMs(this.#process.pid!);
  }

  async stop(): Promise<void> {
    if (this.#process.exitCode === null && this.#process.signalCode === null) {
      const exited = new Promise((r) => this.#process.once('exit', r));
      this.#process.kill('SIGTERM');
      await exited;
    }
    rmSync(this.#dir, { recursive: true, force: true });
  }
}

function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}
