/**
 * Real filesystem faults for store tests: a small tmpfs (needs root or CAP_SYS_ADMIN; callers
 * skip with the reason otherwise) and filling it until the kernel says ENOSPC.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export function run(command: string, args: string[]): { ok: boolean; output: string } {
  const result = spawnSync(command, args, { encoding: 'utf8' });
  return { ok: result.status === 0, output: `${result.stdout ?? ''}${result.stderr ?? ''}${result.error?.message ?? ''}`.trim() };
}

export function unmount(path: string): void {
  // A lazy unmount if a failed test left a file open there.
  if (!run('umount', [path]).ok) run('umount', ['-l', path]);
  rmSync(path, { recursive: true, force: true });
}

/** Mounts a tmpfs of `size` on a fresh folder, unmounted by `cleanups`; a string says why it cannot. */
export function mountTmpfs(size: string, cleanups: Array<() => void>): { dir: string } | string {
  const dir = mkdtempSync(join(tmpdir(), 'resident-tmpfs-'));
  const mounted = run('mount', ['-t', 'tmpfs', '-o', `size=${size},mode=0700`, 'tmpfs', dir]);
  if (!mounted.ok) {
    rmSync(dir, { recursive: true, force: true });
    return `cannot mount a tmpfs (needs root or CAP_SYS_ADMIN): ${mounted.output}`;
  }
  cleanups.push(() => unmount(dir));
  return { dir };
}

/** Writes into `dir` until the filesystem refuses with ENOSPC; returns the filler's path. */
export function fillUp(dir: string): string {
  const path = join(dir, 'filler');
  const fd = openSync(path, 'a');
  try {
    for (const size of [1 << 20, 64 << 10, 4 << 10, 512, 1]) {
      const chunk = Buffer.alloc(size, 0x5a);
      try {
        for (;;) writeSync(fd, chunk);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'ENOSPC') throw error;
      }
    }
  } finally {
    closeSync(fd);
  }
  assert.throws(() => writeFileSync(join(dir, 'probe'), 'x'), { code: 'ENOSPC' }, 'the disk is really full');
  return path;
}
