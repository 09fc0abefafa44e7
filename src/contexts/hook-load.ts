/**
 * A hook module that fails to load, in words its author can act on: which hook, which module,
 * the file and line that threw (the user's own code, not Resident's or a package's), the
 * original error's type, code and message, and what to do. Runs in the worker thread, where the
 * original error is; the text crosses to the main thread in a ResidentError, which survives the
 * trip (a SqliteError does not: it is not an Error to the structured clone, and arrives without
 * its message).
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { ResidentError } from '../errors.ts';
import { errorType } from './protocol.ts';

export type HookName = 'onConnection' | 'onSessionSuspend';

/**
 * The context runtime's folder (this loader, the worker): its frames are the import's, not the
 * thrower's. Not the whole of src/: the demo's hooks live in src/hooks/.
 */
const OWN_SOURCE = fileURLToPath(new URL('.', import.meta.url));

const SIGNATURES: Record<HookName, string> = {
  onConnection: 'export default async function onConnection(ctx, request) { … }',
  onSessionSuspend: 'export default async function onSessionSuspend(ctx, reason) { … }',
};

/** Imports the hook module at `path` and returns its default export; throws RESIDENT_ERR_HOOK_LOAD saying why not. */
export async function loadHook<T>(path: string, hook: HookName): Promise<T> {
  if (!existsSync(path)) {
    throw failure(hook, path, {
      error: 'the file does not exist',
      fix: `correct hooks.${hook} in the config file (a relative path is taken from the config file's folder)`,
    });
  }
  let module: Record<string, unknown>;
  try {
    module = (await import(pathToFileURL(path).href)) as Record<string, unknown>;
  } catch (error) {
    throw failure(hook, path, describe(error, path));
  }
  if (typeof module.default !== 'function') {
    const exported = Object.keys(module).filter((name) => name !== 'default');
    const has = module.default === undefined ? 'no default export' : `a default export that is ${module.default === null ? 'null' : `${typeof module.default === 'object' ? 'an' : 'a'} ${typeof module.default}`}, not a function`;
    throw failure(hook, path, {
      error: `the module has ${has}${exported.length > 0 ? ` (it exports ${exported.join(', ')})` : ''}`,
      fix: `export the hook as the module's default: ${SIGNATURES[hook]}`,
    });
  }
  return module.default as T;
}

export interface Described {
  error: string;
  thrown?: string;
  fix: string;
}

export function failure(hook: HookName, path: string, what: Described): ResidentError {
  const lines = [`the ${hook} hook failed to load (RESIDENT_ERR_HOOK_LOAD)`, `  module: ${path} (hooks.${hook})`, `  error:  ${what.error.replaceAll('\n', '\n          ')}`];
  if (what.thrown) lines.push(`  thrown: ${what.thrown}`);
  lines.push(`  fix:    ${what.fix}`);
  return new ResidentError('RESIDENT_ERR_HOOK_LOAD', lines.join('\n'));
}

/** What an import threw: never throws itself (a module may throw anything, a Proxy included). */
function describe(thrown: unknown, path: string): Described {
  let type = 'a value';
  let code: unknown;
  let message = '';
  let stack = '';
  try {
    type = errorType(thrown);
    const fields = (typeof thrown === 'object' && thrown !== null ? thrown : {}) as { code?: unknown; message?: unknown; stack?: unknown };
    code = fields.code;
    message = typeof fields.message === 'string' ? fields.message : String(thrown);
    stack = typeof fields.stack === 'string' ? fields.stack : '';
  } catch {
    message ||= 'a value that cannot be described';
  }
  // esbuild (through tsx) puts the place in the message: "Transform failed with 1 error:\n<file>:<line>:<col>: ERROR: <text>".
  const transform = /^Transform failed with \d+ errors?:\n([^\n]+?):(\d+):(\d+): ERROR: ([^\n]+)/.exec(message);
  if (transform) message = transform[4]!;
  // require() (a CommonJS module) lists its importers under the message: the first is the one that asked.
  const required = /\nRequire stack:\n- ([^\n]+)/.exec(message);
  if (required) message = message.slice(0, required.index);
  const place = transform ? `${transform[1]}:${transform[2]}:${transform[3]}` : (userFrame(stack) ?? required?.[1] ?? importer(message));
  let where = place && `${place} (${place === path || place.startsWith(`${path}:`) ? 'the hook module itself' : 'a module the hook module imports'})`;
  if (!where && type === 'SyntaxError') where = syntaxErrorAt(path);
  const withCode = typeof code === 'string' || typeof code === 'number' ? ` [${code}]` : '';
  const error = isErrorLike(thrown) ? `${type}${withCode}: ${message}` : `a ${type} was thrown, not an Error: ${message}`;
  return { error, ...(where && { thrown: where }), fix: fixFor(type, code, message, transform !== null) };
}

function isErrorLike(thrown: unknown): boolean {
  return typeof thrown === 'object' && thrown !== null;
}

function fixFor(type: string, code: unknown, message: string, transform: boolean): string {
  if (code === 'ERR_MODULE_NOT_FOUND' || code === 'MODULE_NOT_FOUND') {
    const missing = /Cannot find (?:module|package) '([^']+)'/.exec(message)?.[1];
    if (!missing || /^[./]/.test(missing)) return 'correct the import: the file it names does not exist';
    return `install ${missing} where the hook module can import it (npm install ${missing}, in the app's folder), or correct the import`;
  }
  if (transform || type === 'SyntaxError') return 'correct the syntax at that place';
  return "the module's top-level code runs as each worker thread starts: make it succeed there, or move what may fail into the hook";
}

/** The first frame of the stack in the user's code: not Node's, not a package's, not Resident's own. */
function userFrame(stack: string): string | undefined {
  for (const line of stack.split('\n')) {
    const frame = /^\s+at (?:.*? \()?(.+?):(\d+):(\d+)\)?$/.exec(line);
    if (!frame) continue;
    let file = frame[1]!;
    if (file.startsWith('file://')) file = fileURLToPath(file);
    if (file.startsWith('node:') || file.includes('/node_modules/') || file.startsWith(OWN_SOURCE) || !file.startsWith('/')) continue;
    return `${file}:${frame[2]}:${frame[3]}`;
  }
  return undefined;
}

/** A module or package not found names the module that imported it. */
function importer(message: string): string | undefined {
  const from = / imported from (\S+)$/m.exec(message)?.[1];
  if (!from) return undefined;
  const file = from.startsWith('file://') ? fileURLToPath(from) : from;
  return file.startsWith(OWN_SOURCE) ? undefined : file;
}

/**
 * Node does not put the place of a JavaScript module's syntax error in the error (only in what
 * it prints for an uncaught one): `node --check` on the hook module finds it when it is there.
 */
function syntaxErrorAt(path: string): string {
  const elsewhere = 'a module the hook module imports (Node does not say which: `node --check FILE` finds it)';
  if (!/\.[cm]?js$/.test(path)) return elsewhere;
  const checked = spawnSync(process.execPath, ['--check', path], { encoding: 'utf8', timeout: 5_000 });
  if (checked.status === 0) return elsewhere;
  const first = checked.stderr?.split('\n')[0] ?? '';
  return /^.+:\d+$/.test(first) ? `${first} (the hook module itself)` : `the hook module itself (\`node --check ${path}\` shows where)`;
}
