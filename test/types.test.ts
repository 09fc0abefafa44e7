/**
 * The typed hook contract, checked by the real compiler: tsc on test/fixtures/types (its own
 * tsconfig, as a user's project would have) must accept the good hooks (typed vars, typed
 * saved, a suspend hook returning the memento, the untyped hooks of before) and refuse each
 * bad one with the expected error, at the expected place.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { ROOT } from './helpers.ts';

const FIXTURES = join(ROOT, 'test/fixtures/types');
const TSC = join(ROOT, 'node_modules/typescript/bin/tsc');

interface Diagnostic {
  file: string;
  line: number;
  code: string;
  text: string;
}

/** Runs tsc over the fixtures; its diagnostics, by file name. */
async function compileFixtures(): Promise<{ exitCode: number; diagnostics: Diagnostic[]; output: string }> {
  const result = await promisify(execFile)(process.execPath, [TSC, '--noEmit', '--pretty', 'false', '-p', join(FIXTURES, 'tsconfig.json')], { cwd: ROOT }).then(
    ({ stdout }) => ({ exitCode: 0, output: stdout }),
    (error: { code?: number; stdout?: string; stderr?: string }) => ({ exitCode: error.code ?? -1, output: `${error.stdout ?? ''}${error.stderr ?? ''}` }),
  );
  const diagnostics = [...result.output.matchAll(/^test\/fixtures\/types\/([\w.-]+)\((\d+),\d+\): error (TS\d+): (.*)$/gm)].map(([, file, line, code, text]) => ({
    file: file!,
    line: Number(line),
    code: code!,
    text: text!,
  }));
  return { ...result, diagnostics };
}

test('tsc accepts the typed hooks and refuses each bad one with the expected error', { timeout: 120_000 }, async () => {
  const { exitCode, diagnostics, output } = await compileFixtures();
  assert.equal(exitCode, 2, `tsc reports errors (exit 2)\n${output}`);

  const good = readdirSync(FIXTURES).filter((name) => name.endsWith('.ts') && !name.startsWith('bad-'));
  assert.ok(good.length >= 4, 'state, two typed hooks, the direct and untyped types');
  for (const file of good) assert.deepEqual(diagnostics.filter((d) => d.file === file), [], `${file} compiles`);

  const expected = [
    // A typo in a var's name: Vars has no `stpe`.
    { file: 'bad-var-typo.ts', line: 5, code: 'TS2339', names: 'stpe' },
    // The memento's `step` is a string: not the Memento onSessionSuspend must return.
    { file: 'bad-memento-shape.ts', line: 4, code: 'TS2322', names: 'Memento' },
    // ctx.saved read as if every session had suspended before.
    { file: 'bad-saved-unchecked.ts', line: 4, code: 'TS18048', names: 'ctx.saved' },
  ];
  const bad = readdirSync(FIXTURES).filter((name) => name.startsWith('bad-'));
  assert.deepEqual(bad.sort(), expected.map((e) => e.file).sort(), 'every must-fail fixture has its expectation');
  for (const { file, line, code, names } of expected) {
    const errors = diagnostics.filter((d) => d.file === file);
    assert.deepEqual(
      errors.map((d) => ({ line: d.line, code: d.code })),
      [{ line, code }],
      `${file}: exactly one ${code} at line ${line}\n${output}`,
    );
    assert.ok(errors[0]!.text.includes(names), `${file}: the error names ${names}: ${errors[0]!.text}`);
  }
  assert.equal(diagnostics.length, expected.length, output);
});
