/**
 * `npm run dev [-- --config PATH]` (`resident dev` in the package): the server under `tsx watch`, restarted when a hook
 * module changes. Hooks run in worker threads, which tsx's watcher does not follow, so the
 * folders of the hooks the config names are added with --include. A restart is a graceful
 * shutdown (tsx sends SIGTERM and waits 5 s): contexts are suspended into the store and
 * resume in the new process, so a browser keeps its session across an edit.
 */
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import { dirname, join, relative } from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { loadConfigFile } from './config.ts';

/** Signals closer together than this are one Ctrl-C seen twice. */
const DUPLICATE_SIGNAL_MS = 1_000;

const { values } = parseArgs({ options: { config: { type: 'string' } }, strict: true });
const configPath = values.config ?? 'config.json';
let folders: string[];
try {
  const config = loadConfigFile(configPath);
  folders = [...new Set([dirname(config.hooks.onConnection), dirname(config.hooks.onSessionSuspend)])];
} catch (error) {
  console.error(`resident: ${(error as Error).message}`);
  process.exit(2);
}

const tsx = createRequire(import.meta.url).resolve('tsx/cli');
// This file is src/dev.ts in the repository and dist/dev.js in the package: main is beside it.
const main = fileURLToPath(new URL(import.meta.url.endsWith('.ts') ? './main.ts' : './main.js', import.meta.url));
const include = folders.flatMap((folder) => ['--include', join(relative(process.cwd(), folder) || '.', '**')]);
// In a process group of its own: Ctrl-C in the terminal reaches this process only, which hands
// tsx exactly one signal. tsx reads a second one as "force kill", so letting the terminal's
// signal reach it as well would SIGKILL the server before it suspends its contexts.
const child = spawn(process.execPath, [tsx, 'watch', '--clear-screen=false', ...include, main, '--config', configPath], {
  stdio: 'inherit',
  detached: true,
});
// tsx relays the signal to the server and waits for its graceful shutdown. A signal that
// arrives twice at once (the terminal's and a wrapper's relay of the same Ctrl-C) is passed on
// once; pressing Ctrl-C again later forces the stop. SIGHUP (the terminal closed) only reaches
// this process, since the child has a session of its own; it is passed on as SIGTERM, because
// tsx relays only SIGINT and SIGTERM and would die of a SIGHUP, leaving the server running.
const RELAYED = { SIGINT: 'SIGINT', SIGTERM: 'SIGTERM', SIGHUP: 'SIGTERM' } as const;
let lastSignalAt = -Infinity;
for (const [signal, relayed] of Object.entries(RELAYED)) {
  process.on(signal, () => {
    const now = performance.now();
    if (now - lastSignalAt > DUPLICATE_SIGNAL_MS) child.kill(relayed);
    lastSignalAt = now;
  });
}
// Detached, the child outlives this process unless told: whatever ends this process that can
// be caught (the child's exit below, an uncaught error, any process.exit) stops the child's
// whole group, tsx and the server in it, so no server is left holding the port. SIGKILL cannot
// be caught. After a normal stop the group is gone already and the kill finds no one.
process.on('exit', () => {
  if (child.pid === undefined) return;
  try {
    process.kill(-child.pid, 'SIGTERM');
  } catch {
    // the group has ended already
  }
});
child.on('exit', (code, signal) => process.exit(code ?? (signal ? 1 : 0)));
