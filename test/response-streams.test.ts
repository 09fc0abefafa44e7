/**
 * Streamed response bodies (issue 9, finding 5; RELIABILITY.md D6 and E3): a body that is not
 * a string or bytes streams with backpressure instead of being buffered whole; the context is
 * released when the hook returns, so a never-ending stream holds a connection and never its
 * context; a stream that fails, or whose thread dies, cuts the connection; and shutdown keeps
 * time for the suspends whatever is in flight, counting as lost only what was not saved.
 */
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { request } from 'undici';
import type { ResidentConfigInput } from '../src/config.ts';
import { FileStore } from '../src/stores/file.ts';
import { Client, ROOT, startTestServer, waitFor, withServer, type TestServer } from './helpers.ts';
import { get, headerValues, pipeline } from './wire.ts';

const HOOKS = { onConnection: `${ROOT}/test/fixtures/responses/onConnection.ts` };
const MiB = 1024 * 1024;
/** A streamed response's head comes when the hook returns, not when its body ends. */
const HEAD_WITHIN = { headersTimeout: 10_000 };

/** Collects a streamed body as it arrives, without consuming it to the end. */
function collect(body: NodeJS.ReadableStream): { until(text: string): Promise<string> } {
  let seen = '';
  let ended = false;
  body.on('data', (chunk: Buffer) => (seen += chunk.toString()));
  body.on('end', () => (ended = true));
  body.on('error', () => (ended = true));
  return {
    until: (text) =>
      waitFor((): string | undefined => {
        if (seen.includes(text)) return seen;
        if (ended) throw new Error(`the body ended before ${JSON.stringify(text)}: ${JSON.stringify(seen)}`);
        return undefined;
      }, 10_000, JSON.stringify(text)) as Promise<string>,
  };
}

async function cancelled(client: Client, key: string): Promise<boolean> {
  return (await client.get(`/cancelled?key=${key}`)).json<{ cancelled: boolean }>().cancelled;
}

/** Writes `bytes` on a raw socket and collects everything until the server closes it. */
function rawUntilClosed(port: number, bytes: string, timeoutMs = 10_000): Promise<{ raw: string; closed: boolean }> {
  return new Promise((resolve) => {
    const socket = connect({ port, host: '127.0.0.1' });
    let raw = '';
    const timer = setTimeout(() => {
      socket.destroy();
      resolve({ raw, closed: false });
    }, timeoutMs);
    socket.on('data', (chunk: Buffer) => (raw += chunk.toString('latin1')));
    socket.on('error', () => undefined);
    socket.on('close', () => {
      clearTimeout(timer);
      resolve({ raw, closed: true });
    });
    socket.on('connect', () => socket.write(bytes));
  });
}

describe('streamed response bodies (issue 9, finding 5)', () => {
  let t: TestServer;
  before(async () => {
    // One thread: the fixture's module state (bytes produced, streams cancelled) is per thread.
    t = await startTestServer({ hooks: HOOKS, workers: { threads: 1 } });
  });
  after(() => t.close());

  test('a never-ending stream: the client gets 200 and chunks, and the same session is answered meanwhile (the context is released when the hook returns)', async () => {
    const client = new Client(t.url);
    const first = (await client.get('/inc')).json<{ id: string; n: number }>();
    const stream = await request(`${t.url}/endless?key=same-session`, { headers: { cookie: `RSID=${client.cookie}` }, ...HEAD_WITHIN });
    try {
      assert.equal(stream.statusCode, 200);
      assert.equal(stream.headers['content-type'], 'text/event-stream');
      const cookies = ([] as string[]).concat(stream.headers['set-cookie'] ?? []);
      assert.equal(cookies.filter((line) => line.startsWith('RSID=')).length, 1, 'exactly one session cookie, from the main thread');
      const events = collect(stream.body);
      assert.match(await events.until('data: 2\n\n'), /^data: 0\n\ndata: 1\n\ndata: 2\n\n/);
      // The stream is still open: the context's next request is not queued behind it.
      const next = (await client.get('/inc')).json<{ id: string; n: number }>();
      assert.equal(next.id, first.id);
      assert.equal(next.n, 2);
      assert.match(await events.until('data: 4\n\n'), /data: 4/, 'and the stream goes on');
    } finally {
      stream.body.destroy();
    }
  });

  test('a client gone before the hook returned its stream: the stream is cancelled at once (red team 2, H1)', async () => {
    await new Promise<void>((resolve) => {
      const socket = connect({ port: t.server.port, host: '127.0.0.1' });
      socket.on('error', () => undefined);
      socket.on('connect', () => socket.write(get('/endless?key=early&wait=400')));
      setTimeout(() => {
        socket.destroy();
        resolve();
      }, 100);
    });
    const observer = new Client(t.url);
    await waitFor(async () => cancelled(observer, 'early'), 5000, "the stream's cancel(), though its client left before the head");
  });

  test('a client that disconnects mid-stream cancels the stream: its source sees cancel()', async () => {
    const { raw, closed } = await new Promise<{ raw: string; closed: boolean }>((resolve) => {
      const socket = connect({ port: t.server.port, host: '127.0.0.1' });
      let raw = '';
      socket.on('data', (chunk: Buffer) => {
        raw += chunk.toString('latin1');
        // Gone once the body is flowing.
        if (raw.includes('data: 1')) socket.destroy();
      });
      socket.on('error', () => undefined);
      socket.on('close', () => resolve({ raw, closed: true }));
      socket.on('connect', () => socket.write(get('/endless?key=gone')));
      setTimeout(() => resolve({ raw, closed: false }), 10_000).unref();
    });
    assert.ok(closed && raw.startsWith('HTTP/1.1 200 OK'), `the stream began: ${JSON.stringify(raw.slice(0, 80))}`);
    const observer = new Client(t.url);
    await waitFor(async () => cancelled(observer, 'gone'), 5000, "the stream's cancel()");
  });

  test('HEAD of a streamed response: the head only, and the stream is cancelled; the next pipelined requests (a Blob body, /state) are answered in order', async () => {
    const requests = [get('/endless?key=head', [], 'HEAD'), get('/blob'), get('/state')];
    const { responses, rest } = await pipeline(t.server.port, requests, requests.length, { bodiless: [true] });
    assert.equal(responses.length, 3, 'the HEAD and the next two requests all answered');
    const [head, blob, state] = responses;
    assert.equal(head!.status, 200);
    assert.deepEqual(headerValues(head!, 'content-type'), ['text/event-stream']);
    assert.equal(blob!.status, 200);
    assert.equal(blob!.body.toString(), 'a blob body', 'a Blob body streams whole, right after the head');
    assert.equal(JSON.parse(state!.body.toString()).isNew, true);
    assert.equal(rest.length, 0, 'no stray body bytes');
    await waitFor(async () => cancelled(new Client(t.url), 'head'), 5000, "the stream's cancel()");
  });

  test('backpressure (D6): a 300 MB body is pulled only as fast as the client reads; then it arrives whole', async () => {
    const observer = new Client(t.url);
    const produced = async () => (await observer.get('/produced')).json<{ produced: number }>().produced;
    const before = await produced();
    const download = await request(`${t.url}/lazy?mb=300`, HEAD_WITHIN);
    assert.equal(download.statusCode, 200);
    // The client reads nothing: production stops once the socket and its buffers are full.
    let last = -1;
    await waitFor(
      async () => {
        const now = await produced();
        const steady = now === last && now > before;
        last = now;
        return steady;
      },
      15_000,
      'production to stop while the client reads nothing',
    );
    await new Promise((resolve) => setTimeout(resolve, 500));
    const held = (await produced()) - before;
    assert.ok(held < 16 * MiB, `produced ${(held / MiB).toFixed(1)} MiB while the client read nothing`);
    let received = 0;
    for await (const chunk of download.body) received += (chunk as Buffer).length;
    assert.equal(received, 300 * MiB, 'every byte, once the client reads');
    assert.equal((await produced()) - before, 300 * MiB);
  });

  test('a stream that fails mid-way: the head and the first part arrive, then the connection closes without the end of the body; logged', async () => {
    const { raw, closed } = await rawUntilClosed(t.server.port, get('/stream-error'));
    assert.ok(closed, 'the connection was closed');
    assert.ok(raw.startsWith('HTTP/1.1 200 OK'), raw.slice(0, 80));
    assert.match(raw, /the first part, /);
    assert.ok(!raw.includes('\r\n0\r\n\r\n'), 'no last chunk: the client sees a truncated body');
    assert.ok(!raw.includes('secret'), 'the error stays out of the response');
    const logged = await waitFor(async () => t.logs.find((line) => line.event === 'stream-error'), 3000, 'the stream-error line');
    assert.equal(logged!.code, 'RESIDENT_ERR_HOOK_FAILED');
  });

  test('a stream that fails before any of it was sent: a clean 500 with a length, the connection kept', async () => {
    const { raw } = await rawUntilClosed(t.server.port, get('/stream-error-at-once') + get('/state', ['connection: close']));
    assert.ok(raw.startsWith('HTTP/1.1 500 Internal Server Error'), raw.slice(0, 80));
    assert.match(raw, /content-length: \d+/i);
    assert.ok(!raw.includes('secret'));
    assert.equal(raw.split('HTTP/1.1 ').length - 1, 2, 'the pipelined request after it is answered too');
  });
});

test('a worker dying mid-stream destroys the client connection; the server keeps serving', async () => {
  await withServer({ hooks: HOOKS, workers: { threads: 1 } }, async (t) => {
    const { raw, closed } = await rawUntilClosed(t.server.port, get('/stream-die'));
    assert.ok(closed, 'the connection was closed');
    assert.ok(raw.startsWith('HTTP/1.1 200 OK'), raw.slice(0, 80));
    assert.match(raw, /the first part, /);
    assert.ok(!raw.includes('\r\n0\r\n\r\n'), 'no last chunk');
    const logged = await waitFor(async () => t.logs.find((line) => line.event === 'stream-error'), 3000, 'the stream-error line');
    assert.equal(logged!.code, 'RESIDENT_ERR_WORKER_LOST');
    // With one thread, new connections are refused until the replacement listens (README).
    await waitFor(() => t.server.sessions.stats.workersLost === 1 && t.server.pool.edges.length === 1, 10_000, 'the replacement');
    const after = await new Client(t.url).get('/state');
    assert.equal(after.status, 200, 'a new request is served by the replacement thread');
  });
});

describe('shutdown keeps time for suspends (E3, issue 9 finding 5)', () => {
  type Stored = (ids: string[]) => Promise<Array<{ memento: string | null } | undefined>>;

  /** A server with a file store in a fresh folder, a way to read what it stored, shut down in the end. */
  async function withDurableServer(overrides: ResidentConfigInput, body: (t: TestServer, stored: Stored) => Promise<void>): Promise<void> {
    const dir = join(mkdtempSync(join(tmpdir(), 'resident-shutdown-')), 'contexts');
    const t = await startTestServer({ hooks: HOOKS, store: { kind: 'file', path: dir }, ...overrides });
    const stored: Stored = async (ids) => {
      const store = await FileStore.open({ dir });
      try {
        return await Promise.all(ids.map((id) => store.get(id)));
      } finally {
        await store.close();
      }
    };
    try {
      await body(t, stored);
    } finally {
      await t.close();
    }
  }

  async function sessions(t: TestServer, count: number): Promise<string[]> {
    const ids: string[] = [];
    for (let i = 0; i < count; i++) {
      const client = new Client(t.url);
      await client.get('/inc');
      ids.push(client.cookie!);
    }
    return ids;
  }

  test('a never-ending stream open and 3 sessions: all 3 suspended, none lost, the records stored', async () => {
    await withDurableServer({ limits: { shutdownTimeout: '5s' } }, async (t, stored) => {
      const ids = await sessions(t, 3);
      const stream = await request(`${t.url}/endless?key=shutdown`, { headers: { cookie: `RSID=${ids[0]}` }, ...HEAD_WITHIN });
      await collect(stream.body).until('data: 1');
      const started = Date.now();
      const result = await t.server.shutdown();
      assert.deepEqual(result, { suspended: 3, lost: 0 });
      assert.ok(Date.now() - started < 4000, `the open stream did not hold shutdown (${Date.now() - started} ms)`);
      const records = await stored(ids);
      for (const record of records) assert.ok(record?.memento, 'a stored memento for every session');
    });
  });

  test('one slow request in flight and 20 sessions: the 20 are suspended within the deadline; only the slow one is lost', async () => {
    await withDurableServer({ limits: { shutdownTimeout: '3s' } }, async (t, stored) => {
      const ids = await sessions(t, 20);
      const slow = new Client(t.url).get('/sleep?ms=60000').catch((error: Error) => error);
      await waitFor(async () => t.server.sessions.stats.live === 21, 5000, 'the slow request in flight');
      const started = Date.now();
      const result = await t.server.shutdown();
      const took = Date.now() - started;
      assert.deepEqual(result, { suspended: 20, lost: 1 });
      assert.ok(took < 3000 + 2000, `shutdown kept to its deadline (${took} ms)`);
      await slow;
      const records = await stored(ids);
      assert.equal(records.filter((record) => record?.memento).length, 20, 'every suspended session is in the store');
    });
  });

  test('shutdownTimeout 0 is no deadline: 10 sessions are all suspended, lost 0, and all 10 written', async () => {
    await withDurableServer({ limits: { shutdownTimeout: 0 } }, async (t, stored) => {
      const ids = await sessions(t, 10);
      assert.deepEqual(await t.server.shutdown(), { suspended: 10, lost: 0 });
      const records = await stored(ids);
      assert.equal(records.filter((record) => record?.memento).length, 10);
    });
  });
});
