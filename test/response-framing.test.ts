/**
 * Resident owns the framing of every response (issue 9, finding 2): a hook's Content-Length,
 * Transfer-Encoding and other hop-by-hop headers never reach the wire, a body fetch() decoded
 * is not labelled with the upstream's Content-Encoding, and a header value HTTP cannot carry
 * is a clean 500. Asserted on the raw bytes of keep-alive connections with pipelined requests,
 * where a wrong length would make the next response unreadable.
 */
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { brotliCompressSync, deflateSync, gunzipSync, gzipSync } from 'node:zlib';
import { ROOT, startTestServer, type TestServer } from './helpers.ts';
import { get, headerValues, pipeline, type WireResponse } from './wire.ts';

const HOOKS = { onConnection: `${ROOT}/test/fixtures/responses/onConnection.ts` };
const TEXT = 'a line the upstream compressed\n'.repeat(4000);

/** The pipelined /state after the response under test: its own, complete, well-formed answer. */
function assertStateReply(response: WireResponse | undefined): void {
  assert.ok(response, 'the pipelined request got an answer');
  assert.equal(response.status, 200);
  assert.equal(typeof JSON.parse(response.body.toString()).id, 'string', 'its body is the /state JSON');
}

/** An upstream that compresses its answer as `?coding=` says, with the compressed length. */
function upstream(): Promise<Server> {
  const server = createServer((req, res) => {
    const coding = new URL(req.url!, 'http://x').searchParams.get('coding')!;
    const encode = { gzip: gzipSync, br: brotliCompressSync, deflate: deflateSync }[coding];
    const body = encode ? encode(TEXT) : Buffer.from('bytes in a coding fetch() does not know');
    res.writeHead(200, { 'content-type': 'text/plain', 'content-encoding': coding, 'content-length': body.length, 'x-upstream': 'yes' });
    res.end(body);
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

describe('response framing (issue 9, finding 2)', () => {
  let t: TestServer;
  let origin: Server;
  let upstreamUrl: string;
  before(async () => {
    t = await startTestServer({ hooks: HOOKS });
    origin = await upstream();
    upstreamUrl = `http://127.0.0.1:${(origin.address() as AddressInfo).port}/`;
  });
  after(async () => {
    await t.close();
    origin.close();
  });

  test("a hook's Content-Length is not relayed: 20 bytes under a length of 5 are one well-framed response, and the next pipelined request gets its own", async () => {
    const { responses, rest, closed } = await pipeline(t.server.port, [get('/framing-lie'), get('/state')], 2);
    assert.equal(responses.length, 2, `two responses on one connection; got ${responses.length}`);
    const [lie, next] = responses;
    assert.equal(lie!.status, 200);
    assert.equal(lie!.body.toString(), 'A'.repeat(20));
    assert.deepEqual(headerValues(lie!, 'content-length'), ['20'], 'the length is the body actually sent');
    assert.deepEqual(headerValues(lie!, 'x-kept'), ['yes'], "the hook's other headers stay");
    assertStateReply(next);
    assert.equal(rest.length, 0, 'no stray bytes after the two responses');
    assert.equal(closed, false, 'the connection stays usable');
  });

  test("HEAD of a hook's response: its head with the body's own length and one session cookie, no body; the next pipelined request follows", async () => {
    const { responses, rest } = await pipeline(t.server.port, [get('/framing-lie', [], 'HEAD'), get('/state')], 2, { bodiless: [true] });
    assert.equal(responses.length, 2);
    const [head, next] = responses;
    assert.equal(head!.status, 200);
    assert.deepEqual(headerValues(head!, 'content-length'), ['20'], 'the length a GET would get');
    assert.equal(headerValues(head!, 'set-cookie').filter((line) => line.startsWith('RSID=')).length, 1);
    assertStateReply(next);
    assert.equal(rest.length, 0, 'no body after the HEAD response');
  });

  test('Transfer-Encoding, Connection, Upgrade, Keep-Alive, Trailer, TE and Proxy-Connection from a hook never reach the wire', async () => {
    const { responses, rest } = await pipeline(t.server.port, [get('/hop-by-hop'), get('/state')], 2);
    assert.equal(responses.length, 2);
    const [hop, next] = responses;
    assert.equal(hop!.body.toString(), 'hop body');
    assert.deepEqual(headerValues(hop!, 'content-length'), ['8']);
    assert.deepEqual(headerValues(hop!, 'transfer-encoding'), []);
    for (const name of ['upgrade', 'trailer', 'te', 'proxy-connection']) assert.deepEqual(headerValues(hop!, name), [], `${name} is dropped`);
    // node:http's own, once each: not the hook's "close", not its "timeout=99".
    assert.deepEqual(headerValues(hop!, 'connection'), ['keep-alive']);
    const keepAlive = headerValues(hop!, 'keep-alive');
    assert.ok(keepAlive.length === 1 && keepAlive[0] !== 'timeout=99', `node's own Keep-Alive only: ${keepAlive}`);
    assert.deepEqual(headerValues(hop!, 'x-kept'), ['yes']);
    assertStateReply(next);
    assert.equal(rest.length, 0);
  });

  /** A relayed body fetch() decoded: the text whole, no Content-Encoding, no upstream length. */
  function assertDecodedRelay(relayed: WireResponse | undefined, coding: string): void {
    assert.ok(relayed, `the ${coding} relay was answered`);
    assert.equal(relayed.status, 200);
    assert.equal(relayed.body.toString(), TEXT, `${coding}: the decoded text, whole`);
    assert.deepEqual(headerValues(relayed, 'content-encoding'), [], `${coding}: decoded bytes are not labelled compressed`);
    const lengths = headerValues(relayed, 'content-length');
    assert.ok(lengths.length === 0 || (lengths.length === 1 && Number(lengths[0]) === TEXT.length), `${coding}: no upstream length (${lengths})`);
    assert.deepEqual(headerValues(relayed, 'x-upstream'), ['yes'], "the upstream's other headers stay");
  }

  const relay = (coding: string) => get(`/relay?url=${encodeURIComponent(`${upstreamUrl}?coding=${coding}`)}`);

  test("fetch() from a gzip upstream is relayed decoded, without Content-Encoding or the upstream's length; the next pipelined request is answered", async () => {
    const { responses, rest } = await pipeline(t.server.port, [relay('gzip'), get('/state')], 2);
    assert.equal(responses.length, 2, `two responses on one connection; got ${responses.length}`);
    assertDecodedRelay(responses[0], 'gzip');
    assertStateReply(responses[1]);
    assert.equal(rest.length, 0);
  });

  test('Content-Encoding is dropped exactly where fetch() decoded: br and deflate relays lose it; a coding fetch() does not know, and a gzip body the hook made, keep it', async () => {
    const requests = [relay('br'), relay('deflate'), relay('x-unknown'), get('/gzip-made'), get('/state')];
    const { responses, rest } = await pipeline(t.server.port, requests, requests.length);
    assert.equal(responses.length, requests.length, `all answered on one connection; got ${responses.length}`);
    const [br, deflate, unknown, made, state] = responses;
    assertDecodedRelay(br, 'br');
    assertDecodedRelay(deflate, 'deflate');
    assert.deepEqual(headerValues(unknown!, 'content-encoding'), ['x-unknown'], 'not decoded: the header stays with the bytes it describes');
    assert.equal(unknown!.body.toString(), 'bytes in a coding fetch() does not know');
    assert.deepEqual(headerValues(made!, 'content-encoding'), ['gzip'], "the hook's own compressed body says so");
    assert.equal(gunzipSync(made!.body).toString(), 'compressed by the hook');
    assertStateReply(state);
    assert.equal(rest.length, 0);
  });

  test('a control character in a header value: 500 Internal Server Error with a framed generic body, and a log line naming the header', async () => {
    const { responses, rest } = await pipeline(t.server.port, [get('/bad-header'), get('/state')], 2);
    assert.equal(responses.length, 2);
    const [failed, next] = responses;
    assert.equal(failed!.statusLine, 'HTTP/1.1 500 Internal Server Error');
    assert.equal(failed!.body.toString(), 'Internal Server Error');
    assert.deepEqual(headerValues(failed!, 'content-length'), [String(failed!.body.length)]);
    assert.deepEqual(headerValues(failed!, 'x-fine'), [], 'nothing of the refused response is sent');
    assertStateReply(next);
    assert.equal(rest.length, 0);
    const logged = t.logs.find((line) => line.event === 'hook-error' && /"x-bad"/.test(String((line.err as { message?: string })?.message)));
    assert.ok(logged, 'a hook-error line names the header');
    assert.equal(logged.code, 'RESIDENT_ERR_HOOK_FAILED');
    assert.ok(!t.rawLogs().includes('a\\u0001b'), 'the value itself is not logged');
  });
});
