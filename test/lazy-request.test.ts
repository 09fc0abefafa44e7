/**
 * The worker's Fetch objects (issue 10): the hook's Request is a stand-in built from the wire
 * request and a Response built from a string or bytes keeps its body (src/contexts/lazy-request.ts,
 * light-response.ts). Through a real server, a hook must not be able to tell: the request is a
 * Request in every way a hook uses one, and every kind of Response still reaches the client.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { request } from 'undici';
import { ROOT, startTestServer, type TestServer } from './helpers.ts';

const HOOKS = { onConnection: `${ROOT}/test/fixtures/fetch/onConnection.ts` };

let t: TestServer;
before(async () => {
  t = await startTestServer({ hooks: HOOKS });
});
after(() => t.close());

async function call(path: string, init: { method?: 'GET' | 'HEAD' | 'POST' | 'PUT'; headers?: Record<string, string>; body?: string | Buffer } = {}) {
  const reply = await request(`${t.url}${path}`, { method: init.method ?? 'GET', headers: init.headers, body: init.body });
  const body = Buffer.from(await reply.body.arrayBuffer());
  return { status: reply.statusCode, headers: reply.headers, body, text: body.toString(), json: () => JSON.parse(body.toString()) };
}

describe("the hook's Request", () => {
  test('is a Request (instanceof, its class, its tag) with its method, url and headers; a text body reads once, the second read fails as undici says', async () => {
    const seen = (await call('/probe?as=text', { method: 'POST', headers: { 'content-type': 'text/plain', 'x-probe': 'here' }, body: 'héllo' })).json();
    assert.deepEqual(seen, {
      isRequest: true,
      sameClass: true,
      tag: '[object Request]',
      method: 'POST',
      url: `${t.url}/probe?as=text`,
      probe: 'here',
      usedBefore: false,
      body: 'héllo',
      usedAfter: true,
      secondRead: 'TypeError: Body is unusable: Body has already been read',
      cloneAfterRead: seen.cloneAfterRead,
      signal: true,
    });
    assert.match(seen.cloneAfterRead, /^TypeError: /, 'clone() of a read request throws');
  });

  test('json(), and bytes() of a binary body, arrive intact; a GET has no body, read as often as asked', async () => {
    const data = { name: 'Zoë', list: [1, 2, 3] };
    const asJson = (await call('/probe?as=json', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(data) })).json();
    assert.deepEqual(asJson.body, data);
    const bytes = Buffer.concat([randomBytes(2000), Buffer.from([0, 0xff, 0xfe])]);
    const asBytes = (await call('/probe?as=bytes', { method: 'PUT', headers: { 'content-type': 'application/octet-stream' }, body: bytes })).json();
    assert.deepEqual(asBytes.body, [...bytes]);
    assert.equal(asBytes.method, 'PUT');
    const get = (await call('/probe?as=text')).json();
    assert.deepEqual([get.body, get.usedAfter, get.secondRead], ['', false, 'no error']);
  });

  test('clone() before a read gives readable bodies, to new Request(clone) too', async () => {
    const seen = (await call('/clone', { method: 'POST', headers: { 'content-type': 'text/plain' }, body: 'twice' })).json();
    assert.deepEqual(seen, { copy: 'twice', original: 'twice', rebuilt: 'twice' });
  });

  test('formData() reads a urlencoded form and a multipart one', async () => {
    const urlencoded = await call('/form', { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'a=1&b=%C3%A9' });
    assert.deepEqual(urlencoded.json().entries, [['a', '1'], ['b', 'é']]);
    const form = new FormData();
    form.append('field', 'value');
    form.append('upload', new Blob(['file text']), 'notes.txt');
    const multipart = await fetch(`${t.url}/form`, { method: 'POST', body: form });
    assert.deepEqual(((await multipart.json()) as { entries: unknown }).entries, [['field', 'value'], ['upload', 'file notes.txt: file text']]);
  });

  test('its headers change as a real Request\'s do, before and after the real one is built, and new Request(request) sees both changes', async () => {
    assert.deepEqual((await call('/headers')).json(), { before: '1', after: '2', same: true });
  });

  test('fetch(request) from inside a hook reaches a server with the body and a header the hook added, and its Response passes through', async () => {
    const reply = await call('/forward', { method: 'POST', headers: { 'content-type': 'text/plain' }, body: 'relayed' });
    assert.equal(reply.status, 200);
    assert.deepEqual(reply.json(), { method: 'POST', body: 'relayed', added: 'yes' });
  });
});

describe("the hook's Response", () => {
  test('built from a ReadableStream still streams (chunked, no length)', async () => {
    const reply = await call('/stream');
    assert.equal(reply.status, 200);
    assert.equal(reply.text, 'chunk chunk chunk ');
    assert.equal(reply.headers['transfer-encoding'], 'chunked');
    assert.equal(reply.headers['content-length'], undefined);
    assert.equal(reply.headers['x-kind'], 'stream');
  });

  test('Response.json() keeps its status and headers, and goes whole with its length', async () => {
    const reply = await call('/json');
    assert.equal(reply.status, 201);
    assert.equal(reply.headers['content-type'], 'application/json');
    assert.equal(reply.headers['x-kind'], 'json');
    assert.equal(reply.headers['content-length'], String(reply.body.byteLength));
    assert.deepEqual(reply.json(), { made: 'by Response.json' });
  });

  test('HEAD: the hook sees HEAD, the client gets the head with the body\'s length and no body', async () => {
    const reply = await call('/head', { method: 'HEAD' });
    assert.equal(reply.status, 200);
    assert.equal(reply.headers['x-method'], 'HEAD');
    assert.equal(reply.headers['content-length'], '5');
    assert.equal(reply.body.byteLength, 0);
  });

  test('headers set after it was built, bytes changed after it was built (the Response keeps its copy), a subclass and a clone all arrive as built', async () => {
    const late = await call('/late-headers');
    assert.deepEqual([late.text, late.headers['x-late'], late.headers['content-type']], ['late', 'yes', 'text/plain;charset=UTF-8']);
    assert.deepEqual([...(await call('/bytes-reused')).body], [1, 2, 3]);
    assert.equal((await call('/subclass')).text, 'from a subclass');
    const clone = await call('/clone-response');
    assert.deepEqual([clone.text, clone.headers['x-kind']], ['cloned', 'clone']);
  });

  test('one whose body the hook made a stream goes through that stream; one the hook read itself is a 500, as a read body always was', async () => {
    const touched = await call('/body-touched');
    assert.deepEqual([touched.status, touched.text], [200, 'through its stream']);
    assert.equal((await call('/read-first')).status, 500);
  });
});
