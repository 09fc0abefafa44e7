/**
 * The request target and the Host header, parsed once at the edge (issue 9, finding 8;
 * RELIABILITY.md D-rows on malformed requests): the hook's request.url names the path Resident
 * routed on and a validated host; an invalid Host, a non-http absolute form or an unparsable
 * target is a 400 that no hook sees; the ops routes, the static files and the hook agree on the
 * path. Raw node:net sockets throughout: undici would build its own Host and target.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { startTestServer, type TestServer } from './helpers.ts';
import { rawRequest, type RawReply } from './raw-http.ts';

const TOKEN = 'test-admin-token-0123456789abcdef';

let t: TestServer;
before(async () => {
  t = await startTestServer({ workers: { threads: 1 }, admin: { token: TOKEN } });
});
after(async () => {
  await t.close();
});

/** One request with exactly this request line and Host (none when null), on its own connection. */
function request(target: string, host: string | null, options: { method?: string; version?: string; headers?: string[] } = {}): Promise<RawReply> {
  const lines = [`${options.method ?? 'GET'} ${target} HTTP/${options.version ?? '1.1'}`];
  if (host !== null) lines.push(`Host: ${host}`);
  lines.push(...(options.headers ?? []), 'Connection: close', '', '');
  return rawRequest(t.server.port, Buffer.from(lines.join('\r\n'), 'latin1'));
}

/** The URL the fixture's /url hook reported. */
function hookUrl(reply: RawReply): string {
  assert.equal(reply.status, 200, `expected 200 from the hook, got:\n${reply.raw}`);
  return (JSON.parse(reply.body) as { url: string }).url;
}

/** Our short 400: no stack, no cookie, no hook. */
function assertBadRequest(reply: RawReply, what: string): void {
  assert.equal(reply.status, 400, `${what}: expected 400, got:\n${reply.raw}`);
  assert.equal(reply.body, 'Bad request.', what);
  assert.equal(reply.headers.get('set-cookie'), undefined, `${what}: no session for a bad request`);
}

/** Every line at pino error level or above logged since `from`. */
function errorLinesSince(from: number) {
  return t.logs.slice(from).filter((line) => line.level >= 50);
}

test('D-malformed (finding 8): a Host carrying a path is refused, never spliced into the URL the hook routes on', async () => {
  const from = t.logs.length;
  // Before: the hook saw http://x/_resident/api/overview?/public-page and routed on the admin path.
  assertBadRequest(await request('/public-page', 'x/_resident/api/overview?'), 'Host with a path');
  for (const host of ['x/y', 'user@x', 'user:pw@x', 'a b', 'x?y', 'x#y', 'x\\y', '%zz', '', 'x:99999', 'a.1']) {
    assertBadRequest(await request('/url', host), `Host ${JSON.stringify(host)}`);
  }
  assertBadRequest(await request('/url', 'x', { headers: ['Host: y'] }), 'two Host headers');
  assert.deepEqual(errorLinesSince(from), [], 'a bad Host is the client’s fault: nothing at error level');
  assert.ok(t.logs.slice(from).some((line) => line.event === 'bad-request' && line.level <= 30), 'a bad-request line at debug or info');
});

test('D-malformed (finding 8): an absolute-form target of another scheme, or an unparsable one, is a 400 without an error log', async () => {
  const from = t.logs.length;
  assertBadRequest(await request('file:///etc/passwd', 'x'), 'file: URL');
  // Before: 500 and an edge-error line with a stack.
  assertBadRequest(await request('http://%zz/', 'x'), 'http://%zz/');
  assertBadRequest(await request('http://user@x/url', 'x'), 'userinfo in the absolute form');
  assertBadRequest(await request('http:///url', 'x'), 'an empty authority');
  assertBadRequest(await request('*', 'x'), 'asterisk-form on GET');
  assert.deepEqual(errorLinesSince(from), []);
  assert.doesNotMatch(t.rawLogs(), /"event":"edge-error"/);
});

test('D-malformed (finding 8): the hook sees the validated Host and the path Resident routed on', async () => {
  const origin = `127.0.0.1:${t.server.port}`;
  assert.equal(hookUrl(await request('/url?a=b', origin)), `http://${origin}/url?a=b`);
  assert.equal(hookUrl(await request('/url', 'Example.TEST:8080')), 'http://example.test:8080/url');
  assert.equal(hookUrl(await request('/url', '[::1]:8080')), 'http://[::1]:8080/url', 'an IPv6 literal Host');
  assert.equal(hookUrl(await request('/url#fragment', origin)), `http://${origin}/url`, 'a fragment is no part of the target');
  // HTTP/1.0 may omit Host: the hook is told the listen address.
  assert.equal(hookUrl(await request('/url', null, { version: '1.0' })), `http://${origin}/url`);
});

test('D-malformed (finding 8): an absolute-form http(s) target is routed on its own path and host (RFC 9112 §3.2.2)', async () => {
  assert.equal(hookUrl(await request('http://example.test:8080/url?q=1', 'other.test')), 'http://example.test:8080/url?q=1');
  // The scheme stays how the request reached us (plain HTTP here), whatever the target said.
  assert.equal(hookUrl(await request('HTTPS://example.test/url', 'other.test')), 'http://example.test/url');
  const health = await request('http://x/healthz', 'x');
  assert.equal(health.status, 200, health.raw);
  assert.deepEqual(JSON.parse(health.body), { status: 'ok' });
});

test('D-malformed (finding 8): the admin API needs the token in absolute form and behind dot segments, as in origin form', async () => {
  for (const target of ['/_resident/api/overview', 'http://x/_resident/api/overview', '/x/../_resident/api/overview', '/%2e%2e/_resident/api/overview']) {
    const refused = await request(target, 'x');
    assert.equal(refused.status, 401, `${target} without the token:\n${refused.raw}`);
    assert.doesNotMatch(refused.body, /onConnection/, `${target}: the hook must not answer`);
    const allowed = await request(target, 'x', { headers: [`Authorization: Bearer ${TOKEN}`] });
    assert.equal(allowed.status, 200, `${target} with the token:\n${allowed.raw}`);
    assert.equal(typeof JSON.parse(allowed.body).store, 'string', `${target}: the overview`);
  }
});

test('D-malformed (finding 8): a static file and the hook agree on a path with dot segments', async () => {
  const direct = await request('/style.css', 'x');
  assert.equal(direct.status, 200, direct.raw);
  for (const target of ['/x/../style.css', '/./style.css', 'http://x/nowhere/../style.css']) {
    const reply = await request(target, 'x');
    assert.equal(reply.status, 200, `${target}:\n${reply.raw}`);
    assert.equal(reply.body, direct.body, `${target} is the file`);
    assert.equal(reply.headers.get('set-cookie'), undefined, `${target}: a file, not a session`);
  }
});

test('D-malformed (finding 8): OPTIONS * is answered by the server itself, without a session', async () => {
  const reply = await request('*', 'x', { method: 'OPTIONS' });
  assert.equal(reply.status, 204, reply.raw);
  assert.equal(reply.headers.get('set-cookie'), undefined);
});
