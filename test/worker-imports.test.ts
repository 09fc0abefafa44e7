/**
 * What a worker thread loads: every thread imports this graph before its hooks, once per
 * thread and again for every replacement, so the logger (pino, pino-pretty and their
 * dependencies) stays on the main thread. Walked on the source: type-only imports load nothing.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { test } from 'node:test';

const ENTRY = resolve(import.meta.dirname, '../src/contexts/worker-entry.mjs');

/** Every module the entry loads at run time: relative files and the packages they name. */
function runtimeGraph(entry: string): { files: Set<string>; packages: Set<string> } {
  const files = new Set<string>();
  const packages = new Set<string>();
  const visit = (file: string) => {
    if (files.has(file)) return;
    files.add(file);
    const code = readFileSync(file, 'utf8').replace(/\/\*[\s\S]*?\*\//g, '').replace(/^\s*\/\/.*$/gm, '');
    const specifiers = [
      ...[...code.matchAll(/^\s*(?:import|export)\s+(?!type\b)(?:[^'";]*?\sfrom\s+)?'([^']+)'/gm)].map((match) => match[1]!),
      ...[...code.matchAll(/\bimport\(\s*'([^']+)'\s*\)/g)].map((match) => match[1]!),
    ];
    // A module named by URL and imported by it (the entry picks worker.ts, or worker.js in the
    // package): the ones that exist here are loaded.
    for (const match of code.matchAll(/\bnew URL\(\s*'(\.[^']+)'\s*,\s*import\.meta\.url\s*\)/g)) {
      if (existsSync(join(dirname(file), match[1]!))) specifiers.push(match[1]!);
    }
    for (const specifier of specifiers) {
      if (specifier.startsWith('.')) visit(join(dirname(file), specifier));
      else if (!specifier.startsWith('node:')) packages.add(specifier.split('/')[0]!.startsWith('@') ? specifier.split('/').slice(0, 2).join('/') : specifier.split('/')[0]!);
    }
  };
  visit(entry);
  return { files, packages };
}

test('a worker thread does not load the logger', () => {
  const { files, packages } = runtimeGraph(ENTRY);
  assert.ok(files.size >= 8, `walked ${files.size} files: the walk found the worker's imports`);
  assert.ok([...files].some((file) => file.endsWith('contexts/context.ts')), 'the walk reaches the context');
  assert.ok(packages.has('devalue'), 'the walk sees packages (the memento codec)');
  for (const logger of ['pino', 'pino-pretty']) assert.ok(!packages.has(logger), `the worker loads ${logger}`);
  assert.ok(![...files].some((file) => file.endsWith('src/log.ts')), 'the worker loads src/log.ts');
});

test('src/hooks-api.ts (the package\'s `resident/hooks`, imported by hook modules in every thread) loads nothing at run time', () => {
  const { files, packages } = runtimeGraph(resolve(import.meta.dirname, '../src/hooks-api.ts'));
  assert.deepEqual([...files].map((file) => file.slice(file.indexOf('src/'))), ['src/hooks-api.ts']);
  assert.deepEqual([...packages], []);
});
