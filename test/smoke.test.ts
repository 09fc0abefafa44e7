import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Client, startTestServer, type TestServer } from './helpers.ts';

let t: TestServer;
before(async () => (t = await startTestServer()));
after(() => t.close());

test('a client keeps its context between requests', async () => {
  const client = new Client(t.url);
  assert.equal((await client.get('/inc')).json().n, 1);
  assert.equal((await client.get('/inc')).json().n, 2);
});
