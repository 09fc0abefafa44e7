/**
 * An HAProxy in front of cluster nodes for workload (j4): one process, deploy/haproxy.cfg (the
 * shipped configuration, tested in test/cluster/haproxy.test.ts) with its ports replaced, its
 * frontend and backend once per set of nodes (three nodes; one node), the statistics listener
 * left out. Without that file, a minimal configuration with the same routing: `cookie
 * resident_node indirect preserve nocache`, round robin without the cookie, health checks on
 * /readyz, `option redispatch`.
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { freePort } from './cluster.ts';
import { processCpuMs } from './contender.ts';

const SHIPPED = resolve(import.meta.dirname, '../../deploy/haproxy.cfg');

export interface Backend {
  /** The listen section's name. */
  name: string;
  /** nodeId (the routing cookie's value) and public URL of each node behind it. */
  servers: Array<{ nodeId: string; url: string }>;
}

/**
 * deploy/haproxy.cfg for `listens`: its global and defaults sections as shipped, then for each
 * set of nodes its `frontend resident` (bind on the set's port) and `backend resident_nodes`
 * (one `server` line per node, the shipped line's form), renamed per set. Undefined when the
 * file is not there or not in the form this expects.
 */
export function shippedConfig(listens: Array<Backend & { port: number }>, path = SHIPPED): string | undefined {
  if (!existsSync(path)) return undefined;
  // Sections start at column 0 with their keyword; comments and blank lines belong to the one above.
  const sections: Array<{ head: string; lines: string[] }> = [];
  for (const line of readFileSync(path, 'utf8').split('\n')) {
    if (/^(global|defaults|frontend|backend|listen)\b/.test(line)) sections.push({ head: line.trim(), lines: [] });
    else sections.at(-1)?.lines.push(line);
  }
  const find = (head: string) => sections.find((section) => section.head === head);
  const [global, defaults, frontend, backend] = ['global', 'defaults', 'frontend resident', 'backend resident_nodes'].map(find);
  if (!global || !defaults || !frontend || !backend) return undefined;
  const serverLine = /^(\s*)server \S+ \S+ cookie \S+$/;
  const bindLine = /^(\s*)bind \S+$/;
  if (!frontend.lines.some((line) => bindLine.test(line)) || !backend.lines.some((line) => serverLine.test(line))) return undefined;
  const out = ['# deploy/haproxy.cfg, its ports replaced and its frontend and backend repeated per set of nodes (bench/lib/haproxy.ts)', global.head, ...global.lines, defaults.head, ...defaults.lines];
  for (const listen of listens) {
    out.push(`frontend resident_${listen.name}`);
    for (const line of frontend.lines) {
      if (bindLine.test(line)) out.push(line.replace(bindLine, `$1bind 127.0.0.1:${listen.port}`));
      else out.push(line.replace(/^(\s*)default_backend resident_nodes$/, `$1default_backend resident_nodes_${listen.name}`));
    }
    out.push(`backend resident_nodes_${listen.name}`);
    let indent: string | undefined;
    for (const line of backend.lines) {
      const server = serverLine.exec(line);
      if (!server) {
        out.push(line);
        continue;
      }
      // The shipped server lines give way to one per node of this set, where the first stood.
      if (indent !== undefined) continue;
      indent = server[1]!;
      for (const node of listen.servers) out.push(`${indent}server ${node.nodeId} ${new URL(node.url).host} cookie ${node.nodeId}`);
    }
  }
  return `${out.join('\n')}\n`;
}

/** The fallback when deploy/haproxy.cfg is missing: the same routing, nothing else. */
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
  /** Whether the configuration is deploy/haproxy.cfg's (else the minimal fallback). */
  readonly shipped: boolean;
  readonly #process: ChildProcess;
  readonly #dir: string;

  private constructor(urls: Map<string, string>, config: string, shipped: boolean, child: ChildProcess, dir: string) {
    this.urls = urls;
    this.config = config;
    this.shipped = shipped;
    this.#process = child;
    this.#dir = dir;
  }

  static async start(backends: Backend[]): Promise<BenchHaproxy> {
    const listens = [];
    for (const backend of backends) listens.push({ ...backend, port: await freePort() });
    const shipped = shippedConfig(listens);
    const config = shipped ?? haproxyConfig(listens);
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
    return new BenchHaproxy(new Map(listens.map((l) => [l.name, `http://127.0.0.1:${l.port}`])), config, shipped !== undefined, child, dir);
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
