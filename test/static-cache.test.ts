/**
 * The `static` section (issue 15): the Cache-Control of publicDir's files, checked on the
 * answers of a real server, and its invalid values stopping startup with the key named.
 */
import assert from 'node:assert/strict';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { resolveConfig } from '../src/config.ts';
import { ResidentError } from '../src/errors.ts';
import { send, serverFactory } from './helpers.ts';

const BASE = join(tmpdir(), 'resident-config-base');
const server = serverFactory({ workers: { threads: 1 } });

/** resolveConfig throws RESIDENT_ERR_INVALID_CONFIG and its message names `key`. */
function refused(input: unknown, key: string): void {
  assert.throws(
    () => resolveConfig(input, BASE),
    (error: unknown) => error instanceof ResidentError && error.code === 'RESIDENT_ERR_INVALID_CONFIG' && error.message.includes(key),
    `a config naming ${key}`,
  );
}

describe('static: the config', () => {
  test('defaults: max-age 0, not immutable; durations and milliseconds both read', () => {
    assert.deepEqual({ ...resolveConfig({}, BASE).static }, { maxAge: 0, immutable: false });
    assert.equal(resolveConfig({ static: { maxAge: '1h' } }, BASE).static.maxAge, 3_600_000);
    assert.equal(resolveConfig({ static: { maxAge: 90_000 } }, BASE).static.maxAge, 90_000);
    assert.equal(resolveConfig({ static: { maxAge: '365d', immutable: true } }, BASE).static.immutable, true);
    assert.ok(Object.isFrozen(resolveConfig({}, BASE).static));
  });

  test('invalid values stop startup naming the key', () => {
    for (const maxAge of ['soon', '', -1, 1.5, '366d', null, true]) refused({ static: { maxAge } }, 'static.maxAge');
    refused({ static: { immutable: 'yes', maxAge: '1h' } }, 'static.immutable');
    // immutable with max-age=0 caches nothing: surely a forgotten maxAge.
    refused({ static: { immutable: true } }, 'static.immutable');
    refused({ static: { maxage: '1h' } }, 'static.maxage');
  });
});

describe('static: the answers', () => {
  test('by default a public file says max-age=0 and keeps its validators', async () => {
    const t = await server();
    const reply = await send(`${t.url}/style.css`);
    assert.equal(reply.status, 200);
    assert.equal(reply.headers['cache-control'], 'public, max-age=0');
    assert.ok(reply.headers.etag, 'an ETag');
    assert.ok(reply.headers['last-modified'], 'a Last-Modified');
  });

  test('maxAge and immutable reach Cache-Control; a revalidation still answers 304', async () => {
    const t = await server({ static: { maxAge: '7d', immutable: true } });
    const first = await send(`${t.url}/style.css`);
    assert.equal(first.headers['cache-control'], 'public, max-age=604800, immutable');
    const again = await send(`${t.url}/style.css`, { headers: { 'if-none-match': String(first.headers.etag) } });
    assert.equal(again.status, 304);
    assert.equal(again.headers['cache-control'], 'public, max-age=604800, immutable');
  });

  test('a number of milliseconds is rounded down to whole seconds; dynamic answers are not touched', async () => {
    const t = await server({ static: { maxAge: 90_500 } });
    assert.equal((await send(`${t.url}/style.css`)).headers['cache-control'], 'public, max-age=90');
    const dynamic = await send(`${t.url}/state`);
    assert.equal(dynamic.status, 200);
    assert.doesNotMatch(String(dynamic.headers['cache-control'] ?? ''), /max-age=90/);
  });
});
