/**
 * A store that does not answer, as on a hung network mount, without mocking it: every thread
 * of libuv's pool is parked in open(2) on a FIFO that no one writes to, so every fs call of
 * this process (the server under test runs in it) waits behind them. `release` opens the
 * writers, and the parked calls, and everything queued behind them, complete. Always release
 * (in a finally): until then every later test of the file waits too.
 */
import { execFileSync } from 'node:child_process';
import { closeSync, constants, mkdtempSync, openSync } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export async function parkThreadPool(): Promise<() => Promise<void>> {
  const dir = mkdtempSync(join(tmpdir(), 'resident-parked-'));
  const size = Number(process.env.UV_THREADPOOL_SIZE ?? 4);
  const fifos = Array.from({ length: size }, (_, i) => join(dir, `fifo-${i}`));
  for (const fifo of fifos) execFileSync('mkfifo', [fifo]);
  const readers = fifos.map((fifo) => open(fifo, 'r'));
  // The opens are under way in the pool: a plain fs call now waits behind them.
  await new Promise((resolve) => setTimeout(resolve, 50));
  let released = false;
  return async () => {
    if (released) return;
    released = true;
    for (const fifo of fifos) closeSync(openSync(fifo, constants.O_WRONLY | constants.O_NONBLOCK));
    for (const handle of await Promise.all<FileHandle>(readers)) await handle.close();
  };
}
