/**
 * Where a contender's CPU goes under the hit-counter load: runs it with --cpu-prof (one
 * profile per thread), drives it with 100 cookie-holding clients, and prints each thread's
 * busiest functions by inclusive and by self time.
 *
 *   node --import tsx bench/profile.ts [resident.ts|bare.ts|fastify.ts|express.ts] [--threads N]
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { drive } from './lib/load.ts';

const ROOT = resolve(import.meta.dirname, '..');
const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { threads: { type: 'string', default: '2' }, seconds: { type: 'string', default: '5' }, top: { type: 'string', default: '20' } },
});
const file = positionals[0] ?? 'resident.ts';
const dir = mkdtempSync(join(tmpdir(), 'resident-profile-'));

const child = spawn(process.execPath, ['--cpu-prof', `--cpu-prof-dir=${dir}`, '--import', 'tsx', join(ROOT, 'bench/contenders', file)], {
  cwd: ROOT,
  env: { ...process.env, THREADS: values.threads },
  stdio: ['pipe', 'pipe', 'inherit'],
});
const port = await new Promise<number>((ready) =>
  createInterface({ input: child.stdout! }).on('line', (line) => line.startsWith('READY ') && ready(Number(line.slice(6)))),
);
const url = `http://127.0.0.1:${port}`;
await drive(url, { connections: 100, seconds: 2 });
const result = await drive(url, { connections: 100, seconds: Number(values.seconds) });
console.log(`${file}: ${result.rps.toFixed(0)} req/s, p99 ${result.p99} ms`);
child.stdin!.end();
await new Promise((exited) => child.once('exit', exited));

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

for (const name of readdirSync(dir).sort()) {
  const profile = JSON.parse(readFileSync(join(dir, name), 'utf8')) as { nodes: ProfileNode[]; samples: number[]; timeDeltas: number[] };
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  const parent = new Map<number, number>();
  for (const node of profile.nodes) for (const childId of node.children ?? []) parent.set(childId, node.id);
  const self = new Map<number, number>();
  profile.samples.forEach((id, i) => self.set(id, (self.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0)));
  const inclusive = new Map<string, number>();
  let total = 0;
  for (const [id, time] of self) {
    total += time;
    const seen = new Set<string>();
    for (let at: number | undefined = id; at !== undefined; at = parent.get(at)) {
      const frame = byId.get(at)!.callFrame;
      const key = `${frame.functionName || '(anonymous)'} ${frame.url.split('/').slice(-2).join('/')}:${frame.lineNumber}`;
      if (key.startsWith('(root)') || seen.has(key)) continue;
      seen.add(key);
      inclusive.set(key, (inclusive.get(key) ?? 0) + time);
    }
  }
  const selfByKey = new Map<string, number>();
  for (const [id, time] of self) {
    const frame = byId.get(id)!.callFrame;
    const key = `${frame.functionName || '(anonymous)'} ${frame.url.split('/').slice(-2).join('/')}:${frame.lineNumber}`;
    selfByKey.set(key, (selfByKey.get(key) ?? 0) + time);
  }
  console.log(`\n${name} (${(total / 1e6).toFixed(1)} s sampled)`);
  const top = (figures: Map<string, number>, title: string) => {
    console.log(`  ${title}`);
    for (const [key, time] of [...figures].sort((a, b) => b[1] - a[1]).slice(0, Number(values.top))) {
      console.log(`${((time / total) * 100).toFixed(1).padStart(5)}%  ${key}`);
    }
  };
  top(inclusive, 'inclusive');
  top(selfByKey, 'self');
}
