/** A server under test, as its own process: started, commanded over stdin, measured, stopped. */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { assertSameNode, type NodeBinary } from './announce-node.ts';

const ROOT = resolve(import.meta.dirname, '../..');
/** Linux reports process times in clock ticks; 100 per second on every kernel we run. */
const TICK_MS = 10;

export interface ContenderSpec {
  name: string;
  file: string;
  env?: Record<string, string>;
  /** A checkout of another commit to run the contender from (see baseline.ts). */
  root?: string;
}

export const PEERS: ContenderSpec[] = [
  { name: 'bare node:http + Map', file: 'bare.ts' },
  { name: 'express + express-session', file: 'express.ts' },
  { name: 'fastify + @fastify/session', file: 'fastify.ts' },
];

export const resident = (threads: number, env: Record<string, string> = {}): ContenderSpec => ({
  name: `Resident, ${threads} thread${threads > 1 ? 's' : ''}`,
  file: 'resident.ts',
  env: { THREADS: String(threads), ...env },
});

/** CPU time (user + system) of process `pid`, every thread included, in ms, from /proc. */
export function processCpuMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // The command name may contain spaces: fields are counted after its closing parenthesis.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) * TICK_MS;
}

export class Contender {
  readonly spec: ContenderSpec;
  port = 0;
  /** The Node binary the process runs, read from /proc once it is listening. */
  node: NodeBinary | undefined;
  #child: ChildProcessWithoutNullStreams | undefined;
  #replies: Array<(line: string) => void> = [];

  constructor(spec: ContenderSpec) {
    this.spec = spec;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  get pid(): number {
    return this.#child!.pid!;
  }

  /** Starts the process; resolves with the ms from spawn to listening. */
  async start(): Promise<number> {
    const started = performance.now();
    const root = this.spec.root ?? ROOT;
    // process.execPath, never `node` from PATH: every contender runs on the runner's own Node.
    const child = spawn(process.execPath, ['--expose-gc', '--import', 'tsx', join(root, 'bench/contenders', this.spec.file)], {
      cwd: root,
      env: { ...process.env, ...this.spec.env },
    });
    this.#child = child;
    child.stderr.on('data', (chunk) => process.stderr.write(`[${this.spec.name}] ${chunk}`));
    const lines = createInterface({ input: child.stdout });
    await new Promise<void>((resolvePort, reject) => {
      child.once('exit', (code) => reject(new Error(`${this.spec.name} exited with ${code} before it was ready`)));
      lines.on('line', (line) => {
        if (line.startsWith('READY ')) {
          this.port = Number(line.slice(6));
          resolvePort();
        } else if (isReply(line)) {
          this.#replies.shift()?.(line);
        } else if (line.trim()) {
          // Resident logs JSON lines to stdout too (pino): a log line is never a command's reply.
          process.stderr.write(`[${this.spec.name}] ${line}\n`);
        }
      });
    });
    this.node = assertSameNode(this.spec.name, child.pid!);
    return performance.now() - started;
  }

  async command<T = any>(cmd: string, extra: Record<string, unknown> = {}): Promise<T> {
    const reply = new Promise<string>((resolveLine) => this.#replies.push(resolveLine));
    this.#child!.stdin.write(`${JSON.stringify({ cmd, ...extra })}\n`);
    const parsed = JSON.parse(await reply) as { ok: boolean; result: T; error?: string };
    if (!parsed.ok) throw new Error(`${this.spec.name}: ${parsed.error}`);
    return parsed.result;
  }

  /** CPU time of the whole process, every thread included, in ms. */
  cpuMs(): number {
    return processCpuMs(this.pid);
  }

  /** Resident set size of the whole process now and at its peak (VmRSS, VmHWM), in bytes. */
  rss(): { now: number; peak: number } {
    const status = readFileSync(`/proc/${this.pid}/status`, 'utf8');
    const kb = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1]) * 1024;
    return { now: kb('VmRSS'), peak: kb('VmHWM') };
  }

  async stop(): Promise<void> {
    const child = this.#child;
    if (!child || child.exitCode !== null) return;
    const exited = new Promise((resolveExit) => child.once('exit', resolveExit));
    child.stdin.end();
    const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
    await exited;
    clearTimeout(timer);
  }
}

/** A line serveControl wrote in answer to a command (./../contenders/control.ts): `{"ok": …}`. */
function isReply(line: string): boolean {
  if (!line.startsWith('{"ok":')) return false;
  try {
    return typeof (JSON.parse(line) as { ok?: unknown }).ok === 'boolean';
  } catch {
    return false;
  }
}
