/**
 * Red team, issue 15, the static cache options: conditional and Range requests on a public file
 * that `send` refuses after it has begun the answer (412, 416) must still be answered, with or
 * without `static.maxAge`, for GET and HEAD alike. Real server, real client.
 */
import assert from 'node:assert/strict';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { request, type Dispatcher } from 'undici';
import { resolveConfig } from '../src/config.ts';
import { ResidentError } from '../src/errors.ts';
import { serverFactory } from './helpers.ts';

const server = serverFactory({ workers: { threads: 1 } });

/** The status of one request to /style.css, or 'no answer' when none came within 3 s. */
async function statusOf(base: string, headers: Record<string, string>, method: Dispatcher.HttpMethod = 'GET'): Promise<{ status: number | 'no answer'; headers: Record<string, unknown>; text: string }> {
  try {
    const reply = await request(`${base}/style.css`, { method, headers, signal: AbortSignal.timeout(3_000) });
    return { status: reply.statusCode, headers: reply.headers, text: await reply.body.text() };
  } catch (error) {
    if ((error as Error).name === 'TimeoutError') return { status: 'no answer', headers: {}, text: '' };
    throw error;
  }
}

for (const cache of [{}, { maxAge: '7d', immutable: true }]) {
  test(`static ${JSON.stringify(cache)}: an unsatisfiable Range is answered 416 with its Content-Range, not left hanging`, { timeout: 30_000 }, async () => {
    const t = await server({ static: cache });
    const reply = await statusOf(t.url, { range: 'bytes=999999-' });
    assert.equal(reply.status, 416);
    assert.equal(reply.headers['content-range'], 'bytes */34');
    const head = await statusOf(t.url, { range: 'bytes=999999-' }, 'HEAD');
    assert.equal(head.status, 416);
    // The server still answers on: nothing was left half-written.
    assert.equal((await statusOf(t.url, {})).status, 200);
  });

  test(`static ${JSON.stringify(cache)}: a failed precondition (If-Match, If-Unmodified-Since) is answered 412, not left hanging`, { timeout: 30_000 }, async () => {
    const t = await server({ static: cache });
    const ifMatch = await statusOf(t.url, { 'if-match': '"not-this-one"' });
    assert.equal(ifMatch.status, 412);
    assert.equal(ifMatch.headers['cache-control'], 'no-store', 'an error is not cached for the file’s max-age');
    assert.equal((await statusOf(t.url, { 'if-unmodified-since': 'Mon, 01 Jan 2001 00:00:00 GMT' })).status, 412);
  });
}

test('immutable with a maxAge under a second (max-age=0 once rounded down) is refused like immutable without one', () => {
  // send writes max-age in whole seconds: 999 ms would say "max-age=0, immutable".
  assert.throws(
    () => resolveConfig({ static: { maxAge: 999, immutable: true } }, join(tmpdir(), 'resident-config-base')),
    (error: unknown) => error instanceof ResidentError && error.code === 'RESIDENT_ERR_INVALID_CONFIG' && error.message.includes('static.immutable'),
  );
  assert.equal(resolveConfig({ static: { maxAge: '1s', immutable: true } }, join(tmpdir(), 'resident-config-base')).static.maxAge, 1000);
});
