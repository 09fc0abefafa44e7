/**
 * Request bodies reach the hook byte for byte. Text in UTF-8 crosses to the worker as a
 * string and everything else as bytes (src/http/body.ts): whichever way, the hook reads
 * exactly what the client sent, under the content type it sent.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { after, before, test } from 'node:test';
import { Client, send, startTestServer, type TestServer } from './helpers.ts';

let t: TestServer;
before(async () => {
  t = await startTestServer();
});
after(() => t.close());

const cases: Array<{ name: string; contentType: string; body: Buffer }> = [
  { name: 'JSON with characters outside ASCII', contentType: 'application/json', body: Buffer.from(JSON.stringify({ name: 'Zoë', mood: '😀', n: 1 })) },
  { name: 'text with a byte-order mark', contentType: 'text/plain; charset=utf-8', body: Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from('after the mark')]) },
  { name: 'text that is not valid UTF-8', contentType: 'text/plain', body: Buffer.from([0x61, 0xff, 0xfe, 0x62, 0xc3]) },
  { name: 'Latin-1 text', contentType: 'text/plain; charset=ISO-8859-1', body: Buffer.from([0x63, 0x61, 0x66, 0xe9]) },
  { name: 'a form', contentType: 'application/x-www-form-urlencoded', body: Buffer.from('a=1&b=%C3%A9&c=d+e') },
  { name: 'a vendor JSON type', contentType: 'application/vnd.api+json', body: Buffer.from('{"data":[]}') },
  { name: 'random bytes', contentType: 'application/octet-stream', body: randomBytes(70_000) },
  { name: 'a lone surrogate encoded as bytes (not UTF-8)', contentType: 'application/json', body: Buffer.from([0x22, 0xed, 0xa0, 0x80, 0x22]) },
];

for (const { name, contentType, body } of cases) {
  test(`POST ${name}: the hook reads the same bytes under the same content type`, async () => {
    const reply = await send(`${t.url}/body-digest`, { method: 'POST', headers: { 'content-type': contentType }, body });
    assert.equal(reply.status, 200, reply.text);
    const seen = reply.json<{ digest: string; length: number; contentType: string }>();
    assert.equal(seen.length, body.byteLength);
    assert.equal(seen.digest, createHash('sha256').update(body).digest('hex'));
    assert.equal(seen.contentType, contentType);
  });
}

test('a text body sent twice in a row on one connection arrives twice, each whole', async () => {
  for (const text of ['first é', 'second ü']) {
    const reply = await send(`${t.url}/echo`, { method: 'POST', headers: { 'content-type': 'text/plain' }, body: text });
    assert.equal(reply.json<{ body: string }>().body, text);
  }
});

test('a POST queued behind its session\'s close is served afresh with its whole body (bytes and text)', { timeout: 20_000 }, async () => {
  for (const [contentType, body] of [['application/octet-stream', randomBytes(5_000)], ['text/plain', Buffer.from('queued text é')]] as const) {
    const client = new Client(t.url);
    assert.equal((await client.get('/inc')).status, 200);
    const closing = client.get('/slow-close?ms=300');
    await new Promise((resolve) => setTimeout(resolve, 50));
    // Sent under the closing session's cookie: the worker refuses it on the closed context
    // and the main thread sends the same request again to a fresh session.
    const queued = await send(`${t.url}/body-digest`, { method: 'POST', headers: { 'content-type': contentType, cookie: `RSID=${client.cookie}` }, body });
    assert.equal((await closing).status, 200);
    assert.equal(queued.status, 200, queued.text);
    assert.equal(queued.json<{ digest: string }>().digest, createHash('sha256').update(body).digest('hex'));
    assert.ok(queued.setCookies.some((line) => line.startsWith('RSID=') && !line.startsWith(`RSID=${client.cookie};`)), 'a new session');
  }
});
