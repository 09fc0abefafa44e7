/**
 * `resident init [DIR]`: writes the scaffold (./scaffold.ts) into DIR (default: here). It
 * never overwrites: when any of its files exists already (a dangling symbolic link counts: it
 * would be written through, outside DIR), or a folder it needs is a file, it writes nothing and
 * names them.
 */
import { lstatSync, mkdirSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { SCAFFOLD } from './scaffold.ts';

export function init(args: string[]): number {
  if (args.length > 1 || args[0]?.startsWith('-')) {
    console.error('usage: resident init [DIR]');
    return 2;
  }
  const dir = resolve(args[0] ?? '.');
  const files = Object.keys(SCAFFOLD);
  // lstat: a symbolic link is there, whether or not what it points to is.
  const present = (path: string) => lstatSync(path, { throwIfNoEntry: false });
  // A link to a folder is one; a dangling link is not.
  const notFolder = (path: string) => present(path) !== undefined && statSync(path, { throwIfNoEntry: false })?.isDirectory() !== true;
  // DIR first: inside a file, every other path is ENOTDIR.
  const notFolders = notFolder(dir) ? [dir] : [...new Set(files.map((file) => dirname(join(dir, file))))].filter(notFolder);
  if (notFolders.length > 0) {
    console.error(`resident: init writes nothing: ${notFolders.join(', ')} ${notFolders.length === 1 ? 'is' : 'are'} not a folder`);
    return 2;
  }
  const existing = files.filter((file) => present(join(dir, file)) !== undefined);
  if (existing.length > 0) {
    console.error(`resident: init writes nothing: ${existing.join(', ')} exist${existing.length === 1 ? 's' : ''} already in ${dir}`);
    return 2;
  }
  try {
    for (const file of files) {
      const path = join(dir, file);
      mkdirSync(dirname(path), { recursive: true });
      // 'wx': a file that appeared since the check is not overwritten either.
      writeFileSync(path, SCAFFOLD[file]!, { flag: 'wx' });
    }
  } catch (error) {
    // No permission, a full disk: said in a line, not a stack.
    console.error(`resident: init could not write in ${dir}: ${(error as Error).message}`);
    return 2;
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
