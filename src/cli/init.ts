/**
 * `resident init [DIR]`: writes the scaffold (./scaffold.ts) into DIR (default: here). It
 * never overwrites: when any of its files exists already, it writes nothing and names them.
 */
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { SCAFFOLD } from './scaffold.ts';

export function init(args: string[]): number {
  if (args.length > 1 || args[0]?.startsWith('-')) {
    console.error('usage: resident init [DIR]');
    return 2;
  }
  const dir = resolve(args[0] ?? '.');
  const files = Object.keys(SCAFFOLD);
  const existing = files.filter((file) => existsSync(join(dir, file)));
  if (existing.length > 0) {
    console.error(`resident: init writes nothing: ${existing.join(', ')} exist${existing.length === 1 ? 's' : ''} already in ${dir}`);
    return 2;
  }
  for (const file of files) {
    const path = join(dir, file);
    mkdirSync(dirname(path), { recursive: true });
    writeFileSync(path, SCAFFOLD[file]!);
  }
  const where = relative(process.cwd(), dir);
  console.log(
    [
      `Wrote ${files.join(', ')} in ${dir}.`,
      `Next: ${where ? `cd ${where} && ` : ''}npx resident start   (or npx resident dev: restarts when a hook changes)`,
      'Type-check the hooks: npx tsc -p tsconfig.json (with typescript installed)',
    ].join('\n'),
  );
  return 0;
}
