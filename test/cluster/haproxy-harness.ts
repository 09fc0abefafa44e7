/**
 * A real HAProxy in front of the test's nodes, run from the shipped deploy/haproxy.cfg with only
 * its ports replaced (so the file that ships is the file that is tested), and a client that
 * keeps its cookies (the session's and the routing cookie) as a browser does.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Agent, request } from 'undici';
import { ROOT, freePort, waitFor } from '../helpers.ts';

export const SHIPPED_CFG = join(ROOT, 'deploy/haproxy.cfg');

/** Why HAProxy cannot run here, or undefined when `haproxy -v` answers. */
export function haproxyUnavailable(): string | undefined {
  const probe = spawnSync('haproxy', ['-v'], { encoding: 'utf8' });
  if (probe.error || probe.status !== 0) return `haproxy is not installed (${probe.error?.message ?? `exit ${probe.status}`})`;
  return undefined;
}

/**
 * deploy/haproxy.cfg with its ports replaced: the public bind, the stats bind, and each node's
 * address (`server <name> 127.0.0.1:<port>`). Throws when the file no longer has the lines
 * this replaces, so a change to the shipped file cannot leave the test on a stale copy.
 */
export function configFrom(shipped: string, ports: { front: number; stats: number; nodes: Record<string, string> }): string {
  let text = shipped;
  const swap = (pattern: RegExp, replacement: string, what: string) => {
    const found = text.match(new RegExp(pattern.source, 'gm'))?.length ?? 0;
    if (found !== 1) throw new Error(`deploy/haproxy.cfg: expected one ${what}, found ${found}`);
    text = text.replace(new RegExp(pattern.source, 'm'), replacement);
  };
  swap(/^(\s*)bind \*:8080$/, `$1bind 127.0.0.1:${ports.front}`, 'public bind *:8080');
  swap(/^(\s*)bind 127\.0\.0\.1:8404$/, `$1bind 127.0.0.1:${ports.stats}`, 'stats bind 127.0.0.1:8404');
  for (const [name, url] of Object.entries(ports.nodes)) {
    const { host } = new URL(url);
    swap(new RegExp(`^(\\s*)server ${name} 127\\.0\\.0\\.1:808\\d cookie ${name}$`), `$1server ${name} ${host} cookie ${name}`, `server line for node ${name}`);
  }
  return text;
}

export class TestHaproxy {
  readonly url: string;
  readonly statsUrl: string;
  readonly #process: ChildProcess;
  readonly #dir: string;
  #output = '';

  private constructor(url: string, statsUrl: string, process: ChildProcess, dir: string) {
    this.url = url;
    this.statsUrl = statsUrl;
    this.#process = process;
    this.#dir = dir;
    const keep = (chunk: Buffer) => (this.#output += chunk.toString());
    process.stdout?.on('data', keep);
    process.stderr?.on('data', keep);
  }

  /** Checks the generated file (`haproxy -c`: valid, no warning), starts it, waits until every node is UP. */
  static async start(nodes: Record<string, string>): Promise<TestHaproxy> {
    const front = await freePort();
    const stats = await freePort();
    const dir = mkdtempSync(join(tmpdir(), 'resident-haproxy-'));
    const path = join(dir, 'haproxy.cfg');
    writeFileSync(path, configFrom(readFileSync(SHIPPED_CFG, 'utf8'), { front, stats, nodes }));
    const check = spawnSync('haproxy', ['-c', '-f', path], { encoding: 'utf8' });
    const said = `${check.stdout}${check.stderr}`;
    if (check.status !== 0 || /\[(WARNING|ALERT)\]/.test(said)) throw new Error(`haproxy -c refused the generated configuration:\n${said}`);
    const child = spawn('haproxy', ['-f', path, '-db'], { stdio: ['ignore', 'pipe', 'pipe'] });
    const haproxy = new TestHaproxy(`http://127.0.0.1:${front}`, `http://127.0.0.1:${stats}`, child, dir);
    await haproxy.waitStatus(Object.fromEntries(Object.keys(nodes).map((name) => [name, 'UP'])), 30_000);
    return haproxy;
  }

  /** Each server's status as HAProxy sees it now (UP, DOWN, "UP 1/2", ...). */
  async status(): Promise<Record<string, string>> {
    const answer = await request(`${this.statsUrl}/;csv`);
    const lines = (await answer.body.text()).trim().split('\n');
    const head = lines[0]!.replace(/^# /, '').split(',');
    const [px, sv, st] = ['pxname', 'svname', 'status'].map((name) => head.indexOf(name));
    const out: Record<string, string> = {};
    for (const line of lines.slice(1)) {
      const cells = line.split(',');
      if (cells[px!] === 'resident_nodes' && cells[sv!] !== 'BACKEND') out[cells[sv!]!] = cells[st!]!;
    }
    return out;
  }

  /** Waits until every named server has the given status. */
  async waitStatus(want: Record<string, string>, timeoutMs: number): Promise<void> {
    try {
      await waitFor(async () => {
        if (this.#process.exitCode !== null) throw new Error(`haproxy exited (${this.#process.exitCode})`);
        const now = await this.status().catch(() => ({}) as Record<string, string>);
        return Object.entries(want).every(([name, status]) => now[name] === status);
      }, timeoutMs, `haproxy to see ${JSON.stringify(want)}`);
    } catch (error) {
      throw new Error(`${(error as Error).message}\n${this.output().slice(-4000)}`);
    }
  }

  /** What HAProxy logged (its request log and health check changes). */
  output(): string {
    return this.#output;
  }

  async stop(): Promise<void> {
    if (this.#process.exitCode === null && this.#process.signalCode === null) {
      const exited = new Promise((resolve) => this.#process.once('exit', resolve));
      this.#process.kill('SIGTERM');
      await exited;
    }
    rmSync(this.#dir, { recursive: true, force: true });
  }
}

export interface BalancedReply {
  /** 0: no HTTP answer at all (the connection failed or was cut). */
  status: number;
  retryAfter: number | undefined;
  text: string;
  /** The node that answered (the fixture hook's `node`), for a 200. */
  body: any;
}

/**
 * A browser-like client: connections of its own (bound to `localAddress`), and a cookie jar
 * of every cookie the answers set (the session's and the routing cookie).
 */
export class BalancedClient {
  readonly cookies = new Map<string, string>();
  readonly #base: string;
  readonly #agent: Agent;

  constructor(base: string, localAddress?: string) {
    this.#base = base;
    this.#agent = new Agent(localAddress ? { localAddress } : {});
  }

  async get(path: string, headers: Record<string, string> = {}): Promise<BalancedReply> {
    const cookie = [...this.cookies].map(([name, value]) => `${name}=${value}`).join('; ');
    try {
      const answer = await request(`${this.#base}${path}`, { headers: { ...headers, ...(cookie && { cookie }) }, dispatcher: this.#agent });
      const text = await answer.body.text();
      const raw = answer.headers['set-cookie'];
      for (const line of raw === undefined ? [] : Array.isArray(raw) ? raw : [raw]) {
        const [pair] = line.split(';');
        const eq = pair!.indexOf('=');
        const value = pair!.slice(eq + 1);
        if (value === '' || /max-age=0/i.test(line)) this.cookies.delete(pair!.slice(0, eq));
        else this.cookies.set(pair!.slice(0, eq), value);
      }
      const retry = answer.headers['retry-after'];
      let body: unknown;
      if (answer.statusCode === 200) body = JSON.parse(text);
      return { status: answer.statusCode, retryAfter: retry === undefined ? undefined : Number(retry), text, body };
    } catch (error) {
      return { status: 0, retryAfter: undefined, text: String((error as Error).message), body: undefined };
    }
  }

  close(): Promise<void> {
    return this.#agent.close();
  }
}
