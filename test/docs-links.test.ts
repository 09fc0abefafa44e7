/**
 * Every relative link of the README and of docs/ leads somewhere: to a file of the repository
 * and, with a `#fragment` into a Markdown page, to one of its headings (issue 15: the README
 * cited a RELIABILITY.md the repository did not hold).
 */
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { test } from 'node:test';
import { ROOT } from './helpers.ts';

const PAGES = [join(ROOT, 'README.md'), ...readdirSync(join(ROOT, 'docs')).filter((n) => n.endsWith('.md')).map((n) => join(ROOT, 'docs', n))];

/** The text outside fenced code blocks, where a `](…)` is code, not a link. */
function prose(markdown: string): string {
  return markdown.replace(/^```[\s\S]*?^```/gm, '');
}

/** GitHub's anchors: lower case, punctuation dropped, spaces as '-', repeats numbered. */
function anchors(markdown: string): Set<string> {
  const seen = new Map<string, number>();
  const result = new Set<string>();
  for (const [, title] of prose(markdown).matchAll(/^#{1,6} (.+)$/gm)) {
    const slug = title!.trim().toLowerCase().replace(/[^\p{L}\p{N} _-]/gu, '').replaceAll(' ', '-');
    const count = seen.get(slug) ?? 0;
    seen.set(slug, count + 1);
    result.add(count === 0 ? slug : `${slug}-${count}`);
  }
  return result;
}

test('relative links in the README and docs/ reach a file and, in a Markdown page, a heading', () => {
  const broken: string[] = [];
  for (const page of PAGES) {
    const text = readFileSync(page, 'utf8');
    for (const [, target] of prose(text).matchAll(/\]\(([^)\s]+)\)/g)) {
      if (/^[a-z]+:/i.test(target!)) continue;
      const [path, fragment] = target!.split('#') as [string, string | undefined];
      const file = path === '' ? page : join(dirname(page), path);
      const where = `${relative(ROOT, page)} → ${target}`;
      if (!existsSync(file)) broken.push(`${where}: no such file`);
      else if (fragment !== undefined && file.endsWith('.md') && !anchors(readFileSync(file, 'utf8')).has(fragment)) broken.push(`${where}: no such heading`);
    }
  }
  assert.deepEqual(broken, []);
});

test('the docs index lists every page of docs/', () => {
  const index = readFileSync(join(ROOT, 'docs/README.md'), 'utf8');
  for (const name of readdirSync(join(ROOT, 'docs')).filter((n) => n !== 'README.md')) {
    assert.ok(index.includes(`](${name})`), `docs/README.md links ${name}`);
  }
  assert.match(readFileSync(join(ROOT, 'README.md'), 'utf8'), /\]\(docs\/README\.md\)/, 'the README links the docs index');
});
