/**
 * The README's error table and `ErrorCodes` say the same thing: every code in one is in the
 * other, with the same HTTP status (fastify keeps its errors reference in step the same way).
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { ErrorCodes } from '../src/errors.ts';
import { ROOT } from './helpers.ts';

/** `| \`CODE\` | status | meaning |` rows of the README's "## Errors" section. */
function readmeErrors(): Map<string, string> {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  const section = readme.slice(readme.indexOf('\n## Errors'), readme.indexOf('\n## ', readme.indexOf('\n## Errors') + 1));
  const rows = new Map<string, string>();
  for (const match of section.matchAll(/^\| `(RESIDENT_ERR_[A-Z_]+)` \| ([^|]+) \|/gm)) rows.set(match[1]!, match[2]!.trim());
  return rows;
}

test('every error code is in the README error table with its status, and the table names no other', () => {
  const rows = readmeErrors();
  assert.ok(rows.size > 10, `the table was found (${rows.size} rows)`);
  assert.deepEqual([...rows.keys()].sort(), Object.keys(ErrorCodes).sort());
  for (const [code, { status }] of Object.entries(ErrorCodes)) {
    const shown = rows.get(code)!;
    if (status === 0) assert.doesNotMatch(shown, /^\d{3}$/, `${code} never reaches a client, yet the README gives it status ${shown}`);
    else assert.equal(shown, String(status), `${code}: the README says ${shown}, the code ${status}`);
  }
});
