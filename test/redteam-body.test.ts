/**
 * Red team: request bodies that could be mangled on their way to the worker (src/http/body.ts),
 * sent byte for byte over raw sockets where a client library would tidy them.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { after, before, test } from 'node:test';
import { Client, send, startTestServer, type TestServer } from './helpers.ts';
import { rawRequest } from './raw-http.ts';

let t: TestServer;
let port: number;
before(async () => {
  t = await startTestServer({ limits: { maxBodySize: 1 << 20 } });
  port = Number(new URL(t.url).port);
});
after(() => t.close());

const sha = (bytes: Buffer) => createHash('sha256').update(bytes).digest('hex');

function chunked(parts: Buffer[]): Buffer {
  return Buffer.concat([...parts.flatMap((part) => [Buffer.from(`${part.length.toString(16)}\r\n`), part, Buffer.from('\r\n')]), Buffer.from('0\r\n\r\n')]);
}

test('a chunked UTF-8 body whose characters are split across chunks arrives whole, as the same bytes', async () => {
  const text = Buffer.from('é😀ü'.repeat(50));
  const parts = [text.subarray(0, 1), text.subarray(1, 7), text.subarray(7)];
  const head = `POST /body-digest HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain; charset=UTF-8\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n`;
  const reply = await rawRequest(port, Buffer.concat([Buffer.from(head), chunked(parts)]));
  assert.equal(reply.status, 200, reply.raw);
  const seen = JSON.parse(reply.body) as { digest: string; length: number };
  assert.deepEqual([seen.length, seen.digest], [text.length, sha(text)]);
});

for (const [name, contentType, body] of [
  ['UTF-16LE JSON with its BOM', 'application/json', Buffer.from('\ufeff{"a":1}', 'utf16le')],
  ['UTF-16LE text without a BOM (valid UTF-8 bytes, NULs)', 'text/plain', Buffer.from('plain', 'utf16le')],
  ['a charset in quotes with spaces', 'text/plain ; charset = "utf-8"', Buffer.from('quoted ü')],
  ['an overlong encoding of /', 'text/plain', Buffer.from([0x2f, 0xc0, 0xaf, 0x2f])],
  ['a code point past U+10FFFF', 'application/json', Buffer.from([0x22, 0xf4, 0x90, 0x80, 0x80, 0x22])],
  ['a lone BOM', 'text/plain', Buffer.from([0xef, 0xbb, 0xbf])],
  ['text/plain with a declared UTF-16 charset but ASCII bytes', 'text/plain; charset=utf-16', Buffer.from('ascii')],
  ['a body at exactly the limit', 'text/plain', Buffer.alloc(1 << 20, 'é'.charCodeAt(0) & 0x7f)],
] as const) {
  test(`POST ${name}: the hook reads the same bytes`, async () => {
    const reply = await send(`${t.url}/body-digest`, { method: 'POST', headers: { 'content-type': contentType }, body });
    assert.equal(reply.status, 200, reply.text);
    const seen = reply.json<{ digest: string; length: number }>();
    assert.deepEqual([seen.length, seen.digest], [body.length, sha(body)]);
  });
}

test('a body one byte over the limit, chunked, gets 413 and never reaches the hook', async () => {
  const body = Buffer.alloc((1 << 20) + 1, 0x61);
  const head = `POST /body-digest HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n`;
  const reply = await rawRequest(port, Buffer.concat([Buffer.from(head), chunked([body.subarray(0, 1 << 19), body.subarray(1 << 19)])]));
  assert.equal(reply.status, 413);
});

test('an empty POST with a text type and Content-Length 0 reads as an empty body', async () => {
  const reply = await rawRequest(port, `POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`);
  assert.equal(reply.status, 200, reply.raw);
  assert.equal(JSON.parse(reply.body).body, '');
});

test('Expect: 100-continue with a text body: one 100, then the answer to exactly the bytes sent', async () => {
  const body = Buffer.from('{"é":"😀"}');
  const head = `POST /body-digest HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n`;
  const reply = await rawRequest(port, head, { keepWriting: body });
  assert.match(reply.raw, /^HTTP\/1\.1 100 Continue\r\n\r\nHTTP\/1\.1 200/);
  const json = reply.raw.slice(reply.raw.indexOf('{'));
  const seen = JSON.parse(json.slice(0, json.lastIndexOf('}') + 1)) as { digest: string };
  assert.equal(seen.digest, sha(body));
});

test('a body retried after its session closed under it (20 rounds) reaches the fresh session whole', { timeout: 30_000 }, async () => {
  for (let round = 0; round < 20; round++) {
    const client = new Client(t.url);
    await client.get('/inc');
    const body = Buffer.from(`round ${round} ü`.repeat(100));
    const closing = client.get('/slow-close?ms=30');
    const queued = send(`${t.url}/body-digest`, { method: 'POST', headers: { 'content-type': 'text/plain', cookie: `RSID=${client.cookie}` }, body });
    assert.equal((await closing).status, 200);
    const reply = await queued;
    assert.equal(reply.status, 200, reply.text);
    assert.equal(reply.json<{ digest: string }>().digest, sha(body), `round ${round}`);
  }
});
