/**
 * Request bodies at the edge (issue 9, finding 9; RELIABILITY.md D6 and the D-rows on
 * malformed requests): `Expect: 100-continue` gets its `100 Continue` only when the body will
 * be read, so a body over limits.maxBodySize is refused before it is sent; a client that
 * goes away mid-upload is its own doing, logged at debug, never at error level, and never
 * counted as a failed request. Raw node:net sockets: a client library decides on its own when
 * to send a body and would not cut one short.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { send, startTestServer, waitFor, type TestServer } from './helpers.ts';
import { parseRaw, rawConversation } from './raw-http.ts';

const TOKEN = 'test-admin-token-0123456789abcdef';
const LIMIT = 1024;

let t: TestServer;
before(async () => {
  t = await startTestServer({ workers: { threads: 1 }, limits: { maxBodySize: LIMIT }, admin: { token: TOKEN } });
});
after(async () => {
  await t.close();
});

function head(path: string, headers: string[]): string {
  return [`POST ${path} HTTP/1.1`, `Host: 127.0.0.1:${t.server.port}`, ...headers, '', ''].join('\r\n');
}

/** Requests counted by the duration histogram with this status class (e.g. '5xx'), per the admin metrics. */
async function requestsWithStatus(statusClass: string): Promise<number> {
  const reply = await send(`${t.url}/_resident/metrics`, { headers: { authorization: `Bearer ${TOKEN}` } });
  assert.equal(reply.status, 200, reply.text);
  const line = reply.text.split('\n').find((l) => l.startsWith(`resident_request_duration_seconds_count{status="${statusClass}"}`));
  return line === undefined ? 0 : Number(line.split(' ').pop());
}

test('D6 (finding 9): Expect: 100-continue with a Content-Length over maxBodySize gets 413 and close, never 100 Continue', async () => {
  const conversation = await rawConversation(t.server.port);
  conversation.write(head('/body-length', ['Expect: 100-continue', `Content-Length: ${LIMIT + 1}`]));
  const first = await conversation.until((text) => text.includes('\r\n\r\n'));
  assert.match(first, /^HTTP\/1\.1 413 /, `the first bytes answer 413, got:\n${first}`);
  assert.doesNotMatch(first, /100 Continue/);
  await conversation.closed;
  const reply = parseRaw(conversation.received());
  assert.deepEqual(reply.headers.get('connection'), ['close']);
  assert.equal(reply.body, 'The request body is too large.');
  assert.doesNotMatch(conversation.received(), /100 Continue/, 'nothing asked for the body, ever');
});

test('D6 (finding 9): Expect: 100-continue within the limit gets 100 Continue, then the answer to the body sent after it', async () => {
  const conversation = await rawConversation(t.server.port);
  conversation.write(head('/body-length', ['Expect: 100-continue', 'Content-Length: 600', 'Connection: close']));
  const interim = await conversation.until((text) => text.includes('\r\n\r\n'));
  assert.equal(interim, 'HTTP/1.1 100 Continue\r\n\r\n', 'only the go-ahead before the body is sent');
  conversation.write('x'.repeat(600));
  await conversation.closed;
  const reply = parseRaw(conversation.received().slice(interim.length));
  assert.equal(reply.status, 200, conversation.received());
  assert.deepEqual(JSON.parse(reply.body), { length: 600 });

  // An expectation Resident does not know keeps node's 417.
  const other = await rawConversation(t.server.port);
  other.write(head('/body-length', ['Expect: something-else', 'Content-Length: 3', 'Connection: close']) + 'abc');
  assert.match(await other.until((text) => text.includes('\r\n\r\n')), /^HTTP\/1\.1 417 /);
  other.destroy();
});

test('D-malformed (finding 9): an upload cut off mid-body is logged at debug without a stack, counted nowhere, and the server keeps serving', async () => {
  const failedBefore = await requestsWithStatus('5xx');
  const from = t.logs.length;
  for (const reset of [false, true]) {
    const conversation = await rawConversation(t.server.port);
    // The 100 Continue proves the server is reading this body when the client goes away.
    conversation.write(head('/body-length', ['Expect: 100-continue', 'Content-Length: 1000']));
    await conversation.until((text) => text.includes('100 Continue'));
    conversation.write('y'.repeat(500));
    await new Promise((resolve) => setTimeout(resolve, 100));
    conversation.destroy(reset);
  }
  // Without the go-ahead to synchronise on: half a declared body, then a FIN.
  const plain = await rawConversation(t.server.port);
  plain.write(head('/body-length', ['Content-Length: 1000']) + 'z'.repeat(500));
  await new Promise((resolve) => setTimeout(resolve, 300));
  plain.destroy();

  const seen = () => t.logs.slice(from).filter((line) => line.event === 'client-aborted' || line.level >= 50);
  await waitFor(async () => seen().length >= 3, 5000, 'a log line for each of the three cut uploads');
  const lines = t.logs.slice(from);
  assert.deepEqual(lines.filter((line) => line.level >= 50), [], 'nothing at error level');
  const aborted = lines.filter((line) => line.event === 'client-aborted');
  assert.equal(aborted.length, 3);
  for (const line of aborted) {
    assert.ok(line.level <= 30, 'debug or info');
    assert.equal(line.err, undefined, 'no error object, no stack');
  }
  assert.equal(await requestsWithStatus('5xx'), failedBefore, 'a client that went away is no failed request');
  const after = await send(`${t.url}/body-length`, { method: 'POST', body: 'abc' });
  assert.equal(after.status, 200);
  assert.deepEqual(after.json(), { length: 3 });
});
