/**
 * Red team 2: the worker's Fetch objects (src/contexts/lazy-request.ts, light-response.ts,
 * fetch-globals.ts, fetch-objects.ts) against what a native Request or Response does in plain
 * Node 24, through a real server. A difference a hook can observe is a finding; the most
 * harmful ones are those that reach the wire.
 */
import assert from 'node:assert/strict';
import { createServer, type AddressInfo } from 'node:net';
import { after, before, test } from 'node:test';
import { ROOT, send, startTestServer, type TestServer } from './helpers.ts';
import { rawRequest } from './raw-http.ts';

const HOOKS = { onConnection: `${ROOT}/test/fixtures/redteam2/onConnection.ts` };

let t: TestServer;
let port: number;
before(async () => {
  // One thread: every request shares the hook module's state, as a hostile hook would want.
  t = await startTestServer({ workers: { threads: 1 }, hooks: HOOKS });
  port = Number(new URL(t.url).port);
});
after(() => t.close());

const get = (path: string, init: Parameters<typeof send>[1] = {}) => send(`${t.url}${path}`, init);

/** `first` then a GET /multibyte pipelined behind it on one connection: what each one got. */
async function pipelined(first: string): Promise<{ statuses: number[]; raw: string }> {
  const reply = await rawRequest(port, `GET ${first} HTTP/1.1\r\nHost: a.test\r\n\r\nGET /multibyte HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n`);
  const statuses = [...reply.raw.matchAll(/HTTP\/1\.1 (\d{3})/g)].map((match) => Number(match[1]));
  return { statuses, raw: reply.raw };
}

test('F1 (high): a Response whose status a hook redefined to 1xx is a 500, never an interim answer that hands the next response on the connection to this request', async () => {
  for (const kind of ['', '&native=1']) {
    for (const status of [100, 101, 103]) {
      const { statuses, raw } = await pipelined(`/fake-status?status=${status}${kind}`);
      assert.deepEqual(statuses, [500, 200], `status ${status}${kind}:\n${raw}`);
    }
  }
});

test('F1 (high): a redefined status a Response cannot have with a body (204, 205, 304), or none node:http can write, is a 500; one without a body passes, and fetch()\'s 600-999 from an upstream are still relayed', async () => {
  for (const status of [204, 205, 304, 1000, 199.5]) {
    assert.equal((await get(`/fake-status?status=${status}`)).status, 500, `status ${status}`);
  }
  assert.equal((await get('/fake-status?status=204&null=1')).status, 204);
  const upstream = createServer((socket) => socket.once('data', () => socket.end('HTTP/1.1 999 Odd\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi')));
  await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve));
  try {
    const relayed = await get(`/relay?to=${encodeURIComponent(`http://127.0.0.1:${(upstream.address() as AddressInfo).port}/`)}`);
    assert.deepEqual([relayed.status, relayed.text], [999, 'hi']);
  } finally {
    upstream.close();
  }
});

test('F9 (high): headers that are not a Headers (an own property on the Response) cannot put a second length, a Transfer-Encoding or the session cookie on the wire', async () => {
  const framing = await pipelined('/fake-headers?kind=framing');
  assert.deepEqual(framing.statuses, [200, 200], framing.raw);
  assert.doesNotMatch(framing.raw, /transfer-encoding|content-length: 1\r/i, framing.raw);
  for (const kind of ['cookie', 'cookie-list']) {
    const reply = await get(`/fake-headers?kind=${kind}`);
    assert.equal(reply.setCookies.length, 1, `${kind}: ${reply.setCookies.join(' | ')}`);
    assert.doesNotMatch(reply.setCookies[0]!, /planted/);
  }
  const list = await get('/fake-headers?kind=list');
  assert.deepEqual([list.status, list.headers['x-list']], [200, 'a,b']);
});

test('F9 (high): a hook that patches the builtins a header filter calls (Set.prototype.has) still cannot put framing headers on the wire (the edge filters through builtins taken before the hooks loaded)', async () => {
  const patched = await pipelined('/patched-builtins');
  assert.deepEqual(patched.statuses, [200, 200], patched.raw);
  const first = patched.raw.slice(0, patched.raw.indexOf('HTTP/1.1', 1));
  assert.doesNotMatch(first, /transfer-encoding|content-length: 1\r|connection: close/i, patched.raw);
  assert.match(first, /x-seen: yes/i);
  await new Promise((resolve) => setTimeout(resolve, 150));
});

test('F2 (medium): a Content-Type the hook deleted does not grow back in clone(), new Request(request) or a cloned Response; a read typeless body never gains one', async () => {
  // Native: a Request or Response built from bytes has no type unless its headers say one.
  const forwarded = await get('/forward-without-type', { method: 'POST', body: 'abc', headers: { 'content-type': 'text/plain' } });
  assert.deepEqual(forwarded.json(), { contentType: null, rebuilt: null });
  const afterRead = await get('/content-type-after-read', { method: 'POST', body: Buffer.from([1, 2, 3]) });
  assert.deepEqual(afterRead.json(), { contentType: null });
  const response = await get('/response-without-type');
  assert.deepEqual([response.text, response.headers['x-kind'], response.headers['content-type']], ['no type', 'typeless', undefined]);
});

test('F3 (medium): a Response built on a detached ArrayBuffer, or a view of one, is an empty 200 as the native class makes it, not a hook failure', async () => {
  for (const path of ['/detached', '/detached?view=1']) {
    const reply = await get(path);
    assert.deepEqual([reply.status, reply.text, reply.headers['content-length']], [200, '', '0'], path);
  }
});

test('F4 (low): in a worker, every Request and Response (native ones too: clone(), new Request(url), a stream body) has the global class as its constructor', async () => {
  assert.deepEqual((await get('/constructor')).json(), {
    lazy: true,
    clone: true,
    made: true,
    protoRequest: true,
    light: true,
    native: true,
    cloned: true,
    protoResponse: true,
  });
});

test('F5 (low): structuredClone() of the hook\'s request and of a light Response throws DataCloneError, as for native ones', async () => {
  assert.deepEqual((await get('/structured-clone')).json(), { request: 'DataCloneError', response: 'DataCloneError' });
});

test('F6 (low): a member borrowed from Request.prototype or Response.prototype (a method, a getter) works on the stand-ins as on native objects', async () => {
  const seen = await get('/borrowed', { method: 'POST', body: 'borrowed', headers: { 'content-type': 'text/plain' } });
  assert.deepEqual(seen.json(), { method: 'POST', text: 'borrowed', status: 201, body: 'light body', native: 202 });
});

test('F8 (low): for…in over the stand-ins finds what it finds on native objects (a copy made that way keeps method, url, headers, status…), and their methods are named as native ones', async () => {
  const seen = (await get('/enumerate')).json();
  assert.deepEqual(seen.request, seen.nativeRequest);
  assert.deepEqual(seen.response, seen.nativeResponse);
  assert.ok(seen.request.includes('url') && seen.response.includes('status'));
  assert.deepEqual(seen.names, ['clone', 0, 'clone']);
});

test('F7 (low): headers handed out before the real Request was built, changed through Headers.prototype.set.call, reach clone(); they have no own members a native Headers lacks', async () => {
  assert.deepEqual((await get('/mirror-bypass')).json(), { own: 'yes', clone: 'yes', ownMembers: [] });
});

test('held: lengths are byte lengths (multi-byte, a lone surrogate, 50 MB), Set-Cookie stays several lines, a bad header or a body sent twice is a 500 and the thread serves on', async () => {
  const multibyte = await get('/multibyte');
  assert.equal(multibyte.text, 'héllo € 😀 \uFFFD end');
  assert.equal(multibyte.headers['content-length'], String(Buffer.byteLength(multibyte.text)));
  const head = await get('/multibyte', { method: 'HEAD' });
  assert.deepEqual([head.headers['content-length'], head.text], [multibyte.headers['content-length'], '']);
  const huge = await get('/huge');
  assert.deepEqual([huge.headers['content-length'], huge.text.length], ['50000000', 25_000_000]);
  assert.deepEqual((await get('/set-cookies')).setCookies.slice(0, 3), ['a=1', 'b=2', 'c=3']);
  assert.equal((await get('/bad-header')).status, 500);
  assert.equal((await get('/twice')).text, 'once');
  assert.equal((await get('/twice')).status, 500);
  assert.equal((await get('/bytes-view')).text, 'cd');
});
