/**
 * The HTTP edge under bad and hostile input: the session cookie (RELIABILITY.md A1, A3, A4,
 * A6–A9, A12, A13), IP binding and proxies (B1–B7, B10), limits (D3, D4, D6, D9), static
 * files, `sessions.enabled: false` and the 404 of a hook that answers nothing. Everything runs
 * against real servers over real sockets: undici where it can send the bytes, a raw
 * node:net socket where it refuses to.
 */
import assert from 'node:assert/strict';
import { connect, isIP } from 'node:net';
import { after, before, test } from 'node:test';
import { resolveConfig, type ResidentConfigInput } from '../src/config.ts';
import { hashId } from '../src/log.ts';
import { Agent } from 'undici';
import { Client, ManualClock, ROOT, send, startTestServer, waitFor, type LogLine, type Reply, type TestServer } from './helpers.ts';
import { rawRequest } from './raw-http.ts';

// ---------------------------------------------------------------------------------------------
// Plumbing

const servers: TestServer[] = [];
const clients: Array<{ close(): Promise<void> }> = [];

/** A server with `overrides`, closed in `after`. One worker thread is enough for these tests. */
async function serverWith(overrides: ResidentConfigInput = {}, clock?: ManualClock): Promise<TestServer> {
  const server = await startTestServer({ ...overrides, workers: { threads: 1, ...overrides.workers } }, clock);
  servers.push(server);
  return server;
}

type Getter = Pick<Client, 'get' | 'cookie'>;

/**
 * helpers.ts's Client hands `localAddress` to undici as `connect: { localAddress }`, which
 * undici overrides with its own (unset) `localAddress` option, so the request still leaves from
 * 127.0.0.1. This client binds the source address the way undici honours it.
 */
class LocalClient implements Getter {
  cookie: string | undefined;
  readonly #base: string;
  readonly #agent: Agent;
  constructor(base: string, localAddress: string) {
    this.#base = base;
    this.#agent = new Agent({ localAddress });
  }
  async get(path: string, init: { method?: string; headers?: Record<string, string>; body?: string } = {}): Promise<Reply> {
    const headers: Record<string, string> = { ...init.headers };
    if (this.cookie && headers.cookie === undefined) headers.cookie = `RSID=${this.cookie}`;
    const reply = await send(this.#base + path, { ...init, headers, dispatcher: this.#agent });
    for (const line of reply.setCookies) {
      const [pair] = line.split(';');
      const eq = pair!.indexOf('=');
      if (pair!.slice(0, eq) !== 'RSID') continue;
      const value = pair!.slice(eq + 1);
      this.cookie = value === '' || /max-age=0/i.test(line) ? undefined : value;
    }
    return reply;
  }
  close(): Promise<void> {
    return this.#agent.close();
  }
}

function client(base: string, localAddress?: string): Getter {
  const c = localAddress ? new LocalClient(base, localAddress) : new Client(base);
  clients.push(c);
  return c;
}

/** Every session ID issued or presented in this file: none may ever reach a log (A13). */
const seenIds = new Set<string>();

/** The Set-Cookie lines for our cookie. */
function sessionCookieLines(reply: Reply, name = 'RSID'): string[] {
  return reply.setCookies.filter((line) => line.slice(0, line.indexOf('=')).trim() === name);
}

/** The one Set-Cookie line for our cookie, parsed: value and lower-cased attribute names. */
function theSessionCookie(reply: Reply, name = 'RSID'): { value: string; attrs: Map<string, string | true>; line: string } {
  const lines = sessionCookieLines(reply, name);
  assert.equal(lines.length, 1, `exactly one Set-Cookie for ${name}, got ${JSON.stringify(reply.setCookies)}`);
  const line = lines[0]!;
  const [pair, ...rest] = line.split(';');
  const value = pair!.slice(pair!.indexOf('=') + 1).trim();
  const attrs = new Map<string, string | true>();
  for (const part of rest) {
    const eq = part.indexOf('=');
    if (eq === -1) attrs.set(part.trim().toLowerCase(), true);
    else attrs.set(part.slice(0, eq).trim().toLowerCase(), part.slice(eq + 1).trim());
  }
  // Either shape the server accepts: 22 random characters, then 2 naming the home slot (or none, an earlier version's).
  if (/^[A-Za-z0-9_-]{22}(?:[A-Za-z0-9_-]{2})?$/.test(value)) seenIds.add(value);
  return { value, attrs, line };
}

/** The session ID the response issued (asserting there is exactly one). */
function issuedId(reply: Reply): string {
  const { value } = theSessionCookie(reply);
  // 22 random characters, then 2 naming the home slot (src/contexts/ids.ts).
  assert.match(value, /^[A-Za-z0-9_-]{22}[A-Za-z0-9_-]{2}$/);
  return value;
}

interface State {
  id: string;
  isNew: boolean;
  n: number;
  clientIp: string;
}

function state(reply: Reply): State {
  assert.equal(reply.status, 200, `expected 200, got ${reply.status}: ${reply.text}`);
  const value = reply.json<State>();
  seenIds.add(value.id);
  return value;
}

/** One request whose Cookie header is exactly `cookie`. */
function withCookie(t: TestServer, path: string, cookie: string, init: { headers?: Record<string, string>; localAddress?: string } = {}) {
  return client(t.url, init.localAddress).get(path, { headers: { ...init.headers, cookie } });
}

/** A fresh session on `t` from 127.0.0.1: its ID and a client that keeps it. */
async function newSession(t: TestServer, localAddress?: string): Promise<{ id: string; owner: Getter }> {
  const owner = client(t.url, localAddress);
  const reply = await owner.get('/inc');
  const id = issuedId(reply);
  assert.equal(state(reply).id, id);
  return { id, owner };
}

function rawGet(path: string, extraHeaders: string[] = [], method = 'GET'): Buffer {
  return Buffer.from([`${method} ${path} HTTP/1.1`, 'Host: 127.0.0.1', ...extraHeaders, 'Connection: close', '', ''].join('\r\n'), 'latin1');
}

function logsWith(t: TestServer, event: string): LogLine[] {
  return t.logs.filter((line) => line.event === event);
}

const WARN = 40;

// ---------------------------------------------------------------------------------------------
// The main server: defaults, a clock only the tests move.

let main: TestServer;
const mainClock = new ManualClock();

before(async () => {
  main = await serverWith({}, mainClock);
});

after(async () => {
  await Promise.all(clients.map((c) => c.close()));
  await Promise.all(servers.map((s) => s.close()));
});

// ---------------------------------------------------------------------------------------------
// A1, issue point 10: the cookie

test('A1 / issue point 10: the first request without a cookie gets 200 and exactly one RSID cookie: Path=/, HttpOnly, SameSite=Lax, Max-Age 28800, no Domain, no Secure', async () => {
  const reply = await send(`${main.url}/state`);
  assert.equal(reply.status, 200);
  assert.equal(reply.setCookies.length, 1, JSON.stringify(reply.setCookies));
  const { value, attrs } = theSessionCookie(reply);
  assert.equal(state(reply).id, value, 'the cookie carries the context ID');
  assert.equal(attrs.get('path'), '/');
  assert.equal(attrs.get('httponly'), true);
  assert.equal(String(attrs.get('samesite')).toLowerCase(), 'lax');
  assert.equal(attrs.get('max-age'), '28800');
  assert.equal(attrs.has('domain'), false);
  assert.equal(attrs.has('secure'), false, 'plain HTTP without secureCookie: no Secure');
});

test('A1: cookieTimeout "90s" gives Max-Age=90', async () => {
  const t = await serverWith({ sessions: { cookieTimeout: '90s', processTimeout: '90s' } });
  const { attrs } = theSessionCookie(await send(`${t.url}/state`));
  assert.equal(attrs.get('max-age'), '90');
});

test('A1: cookieTimeout 0 gives a browser-session cookie: no Max-Age, no Expires', async () => {
  const t = await serverWith({ sessions: { cookieTimeout: 0 } });
  const reply = await send(`${t.url}/state`);
  assert.equal(reply.status, 200);
  const { attrs } = theSessionCookie(reply);
  assert.equal(attrs.has('max-age'), false, 'no Max-Age');
  assert.equal(attrs.has('expires'), false, 'no Expires');
  assert.equal(attrs.get('httponly'), true);
});

test('A1: sessions.secureCookie true adds Secure', async () => {
  const t = await serverWith({ sessions: { secureCookie: true } });
  const { attrs } = theSessionCookie(await send(`${t.url}/state`));
  assert.equal(attrs.get('secure'), true);
});

test('A1/B10: X-Forwarded-Proto https from a trusted proxy adds Secure; from an untrusted peer it is ignored', async () => {
  const listed = await serverWith({ sessions: { trustProxy: ['127.0.0.1'] } });
  const viaProxy = await send(`${listed.url}/state`, { headers: { 'x-forwarded-proto': 'https' } });
  assert.equal(theSessionCookie(viaProxy).attrs.get('secure'), true, 'trusted proxy 127.0.0.1 said https');

  const plainViaProxy = await send(`${listed.url}/state`, { headers: { 'x-forwarded-proto': 'http' } });
  assert.equal(theSessionCookie(plainViaProxy).attrs.has('secure'), false, 'trusted proxy said http');

  const untrustedPeer = await client(listed.url, '127.0.0.2').get('/state', { headers: { 'x-forwarded-proto': 'https' } });
  assert.equal(untrustedPeer.status, 200);
  assert.equal(theSessionCookie(untrustedPeer).attrs.has('secure'), false, '127.0.0.2 is not a trusted proxy');

  const all = await serverWith({ sessions: { trustProxy: true } });
  const viaLoopback = await send(`${all.url}/state`, { headers: { 'x-forwarded-proto': 'https' } });
  assert.equal(theSessionCookie(viaLoopback).attrs.get('secure'), true, 'trustProxy true trusts loopback');

  // trustProxy off (the main server): the header is anyone's to send.
  const spoofed = await send(`${main.url}/state`, { headers: { 'x-forwarded-proto': 'https' } });
  assert.equal(spoofed.status, 200);
  assert.equal(theSessionCookie(spoofed).attrs.has('secure'), false, 'trustProxy off ignores X-Forwarded-Proto');
});

// ---------------------------------------------------------------------------------------------
// A3, A4: strict mode

test('A3: a well-formed, never-issued ID is not adopted: 200, a new ID, and a warn line "unknown-id"', async () => {
  const forged = 'attacker_chosen_id_000';
  seenIds.add(forged);
  const before = main.server.sessions.stats.created;
  const reply = await withCookie(main, '/state', `RSID=${forged}`);
  assert.equal(reply.status, 200);
  const id = issuedId(reply);
  assert.notEqual(id, forged);
  const body = state(reply);
  assert.equal(body.id, id);
  assert.equal(body.isNew, true);
  assert.equal(main.server.sessions.stats.created, before + 1);
  const line = await waitFor(
    () => logsWith(main, 'unknown-id').find((l) => (l.presented as string[] | undefined)?.includes(hashId(forged))),
    2000,
    'the unknown-id log line',
  );
  assert.ok(line);
  assert.equal(line.level, WARN);
});

test('A4: after GET /close the old cookie is refused like an unknown one (new ID, fresh context)', async () => {
  const { id, owner } = await newSession(main);
  assert.equal(state(await owner.get('/inc')).n, 2);
  const closing = await owner.get('/close');
  assert.equal(closing.status, 200);
  const expiry = theSessionCookie(closing);
  assert.equal(expiry.value, '', 'the close response expires the cookie');
  assert.equal(expiry.attrs.get('max-age'), '0');

  const replay = await withCookie(main, '/inc', `RSID=${id}`);
  const fresh = issuedId(replay);
  assert.notEqual(fresh, id, 'a closed ID is never resurrected');
  const body = state(replay);
  assert.equal(body.id, fresh);
  assert.equal(body.n, 1, 'a fresh context, not the closed one');
  assert.equal(body.isNew, true);
  await waitFor(
    () => logsWith(main, 'unknown-id').some((l) => (l.presented as string[] | undefined)?.includes(hashId(id))),
    2000,
    'the unknown-id log line for the closed ID',
  );
});

// ---------------------------------------------------------------------------------------------
// A6, A7: malformed and injection-shaped cookies

test('A6: malformed Cookie headers start a new session (200), never a 500; a valid RSID among garbage is still found', async () => {
  const { id, owner } = await newSession(main);
  const garbage = ['RSID=', 'RSID=%', 'RSID=%zz', 'RSID=ünïcödé', 'RSID="', 'RSID=""', `RSID="${id}`, ';;;', '=', '==;=', 'RSID', ' ; ; ', 'RSID=;RSID=;'];
  for (const header of garbage) {
    const reply = await withCookie(main, '/state', header);
    assert.equal(reply.status, 200, `Cookie: ${header} → ${reply.status}`);
    const fresh = issuedId(reply);
    assert.notEqual(fresh, id, `Cookie: ${header} must not select the session`);
    assert.equal(state(reply).isNew, true, `Cookie: ${header} → a new session`);
  }
  for (const header of [`a=%zz; RSID=${id}; b="x`, `;;; RSID=${id};;;`, `=; RSID=${id}; =`, `x=ü; RSID=${id}`]) {
    const reply = await withCookie(main, '/state', header);
    const body = state(reply);
    assert.equal(body.id, id, `Cookie: ${header} → the valid session`);
    assert.equal(issuedId(reply), id, 'the cookie is renewed, not replaced');
  }
  assert.equal(state(await owner.get('/inc')).n, 2, 'the session is intact');
});

test('A6: bytes undici will not send (NUL, CR, LF, raw UTF-8) get 200 or 400, never 500, and the server keeps serving', async () => {
  const { id, owner } = await newSession(main);
  const cases: Array<[string, Buffer]> = [
    ['NUL', Buffer.from(`RSID=${id}\0`, 'latin1')],
    ['NUL alone', Buffer.from('RSID=\0', 'latin1')],
    ['lone CR', Buffer.from(`RSID=abc\rdef; RSID=${id}`, 'latin1')],
    ['lone LF', Buffer.from(`RSID=abc\ndef`, 'latin1')],
    ['UTF-8', Buffer.from('RSID=日本語🍪; a=é', 'utf8')],
    ['high bytes', Buffer.from([0x52, 0x53, 0x49, 0x44, 0x3d, 0xff, 0xfe, 0x80, 0x81])],
    ['DEL', Buffer.from('RSID=\x7f\x7f', 'latin1')],
  ];
  for (const [name, value] of cases) {
    const bytes = Buffer.concat([Buffer.from('GET /state HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: ', 'latin1'), value, Buffer.from('\r\nConnection: close\r\n\r\n', 'latin1')]);
    const reply = await rawRequest(main.server.port, bytes);
    assert.ok(reply.status === 200 || reply.status === 400, `${name}: status line ${JSON.stringify(reply.raw.split('\r\n')[0])}`);
    if (reply.status === 200) {
      const body = JSON.parse(reply.body) as State;
      seenIds.add(body.id);
      assert.notEqual(body.id, id, `${name}: the session is not selected by a malformed header`);
    }
  }
  // A valid pair next to raw UTF-8 is still found.
  const mixed = await rawRequest(
    main.server.port,
    Buffer.concat([Buffer.from('GET /state HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: a=', 'latin1'), Buffer.from('日本', 'utf8'), Buffer.from(`; RSID=${id}\r\nConnection: close\r\n\r\n`, 'latin1')]),
  );
  assert.equal(mixed.status, 200);
  assert.equal((JSON.parse(mixed.body) as State).id, id);
  assert.equal(state(await owner.get('/inc')).n, 2, 'the server still serves and the session is intact');
});

test('A7: injection-shaped IDs start a new session (200)', async () => {
  const before = main.server.sessions.stats.created;
  const values = ['../../etc/passwd', '..%2f..%2fx', "x' OR 1=1--", '*', '?', 'a'.repeat(5 * 1024), '..\\..\\x', '${jndi:x}', 'RSID*'];
  for (const value of values) {
    const reply = await withCookie(main, '/state', `RSID=${value}`);
    assert.equal(reply.status, 200, `RSID=${value.slice(0, 40)} → ${reply.status}`);
    const id = issuedId(reply);
    assert.notEqual(id, value);
    assert.equal(state(reply).isNew, true);
  }
  assert.equal(main.server.sessions.stats.created, before + values.length);
  // Dropped by the shape check before any lookup: none is ever reported as a presented ID.
  const reported = new Set(logsWith(main, 'unknown-id').flatMap((line) => (line.presented as string[] | undefined) ?? []));
  for (const value of values) assert.ok(!reported.has(hashId(value)), `${value.slice(0, 40)} reached the session lookup`);
});

// ---------------------------------------------------------------------------------------------
// A8, A9: duplicates and other channels

test('A8: duplicate RSID names: an unknown value never shadows the valid one, in either order, and no second context', async () => {
  const { id, owner } = await newSession(main);
  const unknown = 'unknown_but_wellformed';
  seenIds.add(unknown);
  const created = main.server.sessions.stats.created;
  const first = await withCookie(main, '/inc', `RSID=${unknown}; RSID=${id}`);
  assert.equal(issuedId(first), id, 'no new cookie ID');
  assert.deepEqual([state(first).id, state(first).n], [id, 2]);
  const second = await withCookie(main, '/inc', `RSID=${id}; RSID=${unknown}`);
  assert.equal(issuedId(second), id);
  assert.deepEqual([state(second).id, state(second).n], [id, 3]);
  assert.equal(main.server.sessions.stats.created, created, 'never two contexts');
  assert.equal(state(await owner.get('/inc')).n, 4);
});

test('A8: a foreign session (bound to another IP) listed first does not shadow the caller’s own', async () => {
  const mine = await newSession(main);
  const theirs = await newSession(main, '127.0.0.2');
  const reply = await withCookie(main, '/inc', `RSID=${theirs.id}; RSID=${mine.id}`);
  assert.equal(state(reply).id, mine.id);
  assert.equal(state(reply).n, 2);
  assert.equal(state(await theirs.owner.get('/state')).n, 1, 'the other session is untouched');
});

test('A9: an ID in the URL, the body or a custom header is ignored (new session)', async () => {
  const { id, owner } = await newSession(main);
  const viaQuery = await send(`${main.url}/state?RSID=${id}`);
  assert.notEqual(issuedId(viaQuery), id);
  assert.notEqual(state(viaQuery).id, id);

  const viaBody = await send(`${main.url}/echo`, { method: 'POST', body: `RSID=${id}`, headers: { 'content-type': 'application/x-www-form-urlencoded' } });
  assert.equal(viaBody.status, 200);
  assert.equal(viaBody.json().body, `RSID=${id}`, 'the body reached the hook');
  assert.notEqual(issuedId(viaBody), id);

  for (const header of ['x-session-id', 'rsid', 'authorization']) {
    const viaHeader = await send(`${main.url}/state`, { headers: { [header]: header === 'authorization' ? `Bearer ${id}` : id } });
    assert.notEqual(issuedId(viaHeader), id, header);
    assert.notEqual(state(viaHeader).id, id, header);
  }
  assert.equal(state(await owner.get('/inc')).n, 2, 'the session itself is untouched');
});

// ---------------------------------------------------------------------------------------------
// A12: the hook cannot set our cookie

test('A12: a hook setting its own RSID cookie: exactly one RSID Set-Cookie, with the real ID; its other cookie and headers pass', async () => {
  const { id, owner } = await newSession(main);
  const reply = await owner.get('/headers');
  assert.equal(reply.status, 200);
  assert.equal(reply.text, 'ok');
  const ours = theSessionCookie(reply);
  assert.equal(ours.value, id, 'the real ID, not the hook’s "hijack"');
  assert.ok(!reply.setCookies.some((line) => line.includes('hijack')), JSON.stringify(reply.setCookies));
  assert.ok(reply.setCookies.some((line) => line.startsWith('other=1')), 'the hook’s other cookie passes through');
  assert.equal(reply.setCookies.length, 2);
  assert.equal(reply.headers['x-custom'], 'yes');
  assert.equal(owner.cookie, id);
  assert.equal(state(await owner.get('/inc')).n, 2);
});

// ---------------------------------------------------------------------------------------------
// B1, B2: IP binding

/** The 400 of a refused binding expires the cookie for its sender only: one Set-Cookie, empty, Max-Age=0. */
function expiresCookieForSender(reply: Reply): void {
  assert.equal(reply.setCookies.length, 1, JSON.stringify(reply.setCookies));
  assert.match(reply.setCookies[0]!, /^RSID=;/, 'our cookie, emptied');
  assert.match(reply.setCookies[0]!, /Max-Age=0/i, 'expired at once');
  assert.match(reply.setCookies[0]!, /Path=\//, 'on the path the real cookie has');
}

test('B1: a cookie presented from another IP gets a short 400 that expires the cookie for that sender, the context untouched, and a warn line with both IPs', async () => {
  const { id, owner } = await newSession(main);
  assert.equal(state(await owner.get('/inc')).n, 2);
  const idleBefore = (await main.server.sessions.info(id))?.idleMs;
  assert.ok(idleBefore !== undefined && idleBefore !== null);
  mainClock.advance(60_000);
  const mismatchesBefore = main.server.sessions.stats.ipMismatches;

  const attacker = client(main.url, '127.0.0.2');
  const stolen = await attacker.get('/inc', { headers: { cookie: `RSID=${id}` } });
  assert.equal(stolen.status, 400);
  expiresCookieForSender(stolen);
  assert.match(String(stolen.headers['content-type']), /^text\/plain/);
  assert.ok(stolen.text.length > 0 && stolen.text.length < 200, `short body: ${stolen.text}`);
  assert.doesNotMatch(stolen.text, /\n\s+at |Error:|RESIDENT_ERR|127\.0\.0\.|node_modules|\.ts\b/);
  assert.equal(main.server.sessions.stats.ipMismatches, mismatchesBefore + 1);
  assert.equal((await main.server.sessions.info(id))?.idleMs, idleBefore + 60_000, 'no activity refresh');

  const line = await waitFor(async () => logsWith(main, 'ip-mismatch').find((l) => l.session === hashId(id)), 2000, 'the ip-mismatch log line');
  assert.ok(line);
  assert.equal(line.level, WARN);
  assert.equal(line.boundIp, '127.0.0.1');
  assert.equal(line.clientIp, '127.0.0.2');

  const back = state(await owner.get('/inc'));
  assert.equal(back.id, id);
  assert.equal(back.n, 3, 'the foreign /inc did not run: the counter continues exactly');

  // The sender's browser dropped the cookie: its reload is a new session of its own, not a
  // dead end (before, every reload repeated the 400 until the cookie expired).
  const reload = await attacker.get('/inc');
  assert.equal(reload.status, 200);
  assert.notEqual(state(reload).id, id);
  assert.equal(state(await owner.get('/inc')).n, 4, 'the owner’s session is still untouched');
});

test('B1: with sessions.bindIp false the same foreign request is served in the same session', async () => {
  const t = await serverWith({ sessions: { bindIp: false } });
  const { id } = await newSession(t);
  const foreign = await client(t.url, '127.0.0.2').get('/inc', { headers: { cookie: `RSID=${id}` } });
  assert.equal(foreign.status, 200);
  assert.equal(issuedId(foreign), id);
  assert.deepEqual([state(foreign).id, state(foreign).n], [id, 2]);
});

test('B2: trustProxy off: X-Forwarded-For, Forwarded and X-Real-IP naming the victim do not lift the 400', async () => {
  const { id, owner } = await newSession(main);
  const spoofs: Record<string, string>[] = [
    { 'x-forwarded-for': '127.0.0.1' },
    { forwarded: 'for=127.0.0.1' },
    { 'x-real-ip': '127.0.0.1' },
    { 'x-forwarded-for': '127.0.0.1', forwarded: 'for=127.0.0.1;proto=https', 'x-real-ip': '127.0.0.1', 'x-client-ip': '127.0.0.1' },
  ];
  for (const headers of spoofs) {
    const reply = await client(main.url, '127.0.0.2').get('/inc', { headers: { ...headers, cookie: `RSID=${id}` } });
    assert.equal(reply.status, 400, JSON.stringify(headers));
    expiresCookieForSender(reply);
  }
  // And from 127.0.0.1 the spoofed headers do not change the bound address either.
  const own = state(await owner.get('/inc', { headers: { 'x-forwarded-for': '9.9.9.9', 'x-real-ip': '9.9.9.9' } }));
  assert.equal(own.clientIp, '127.0.0.1');
  assert.equal(own.n, 2);
});

// ---------------------------------------------------------------------------------------------
// B3–B6: trusted proxies

test('B3: trustProxy ["127.0.0.1"]: the rightmost untrusted X-Forwarded-For address is the client IP, never the leftmost', async () => {
  const t = await serverWith({ sessions: { trustProxy: ['127.0.0.1'] } });
  const reply = await send(`${t.url}/state`, { headers: { 'x-forwarded-for': '1.2.3.4, 10.9.9.9' } });
  const body = state(reply);
  assert.equal(body.clientIp, '10.9.9.9');
  // The session is bound to that address: the same proxy relaying another client gets a 400.
  const id = issuedId(reply);
  const relayedOther = await send(`${t.url}/state`, { headers: { 'x-forwarded-for': '10.8.8.8', cookie: `RSID=${id}` } });
  assert.equal(relayedOther.status, 400);
  const relayedSame = await send(`${t.url}/state`, { headers: { 'x-forwarded-for': '7.7.7.7, 10.9.9.9', cookie: `RSID=${id}` } });
  assert.equal(state(relayedSame).id, id);
});

test('B4: trustProxy set, but a direct request from an untrusted peer: X-Forwarded-For is ignored', async () => {
  const t = await serverWith({ sessions: { trustProxy: ['127.0.0.1'] } });
  const reply = await client(t.url, '127.0.0.2').get('/state', { headers: { 'x-forwarded-for': '10.9.9.9' } });
  assert.equal(state(reply).clientIp, '127.0.0.2');
});

test('B5: several X-Forwarded-For lines are joined in order before the rightmost-untrusted walk', async () => {
  const t = await serverWith({ sessions: { trustProxy: ['127.0.0.1', '10.0.0.0/8'] } });
  // Joined: 1.2.3.4, 5.6.7.8, 10.9.9.9 → 5.6.7.8. Only the first line would give 1.2.3.4, only
  // the last 10.9.9.9.
  const reply = await rawRequest(
    t.server.port,
    rawGet('/state', ['X-Forwarded-For: 1.2.3.4', 'X-Forwarded-For: 5.6.7.8', 'X-Forwarded-For: 10.9.9.9']),
  );
  assert.equal(reply.status, 200, reply.raw);
  assert.equal((JSON.parse(reply.body) as State).clientIp, '5.6.7.8');

  const t2 = await serverWith({ sessions: { trustProxy: ['127.0.0.1'] } });
  const two = await rawRequest(t2.server.port, rawGet('/state', ['X-Forwarded-For: 10.9.9.9', 'X-Forwarded-For: 127.0.0.1']));
  assert.equal((JSON.parse(two.body) as State).clientIp, '10.9.9.9');
});

test('B6: garbage X-Forwarded-For: no crash, 200, and the client IP is a valid address', async () => {
  const t = await serverWith({ sessions: { trustProxy: ['127.0.0.1'] } });
  const garbage = [
    'not-an-ip',
    'unknown, , ,garbage',
    '1.2.3.4:8080',
    '[2001:db8::1]:443',
    'fe80::1%eth0',
    '999.999.999.999',
    '1.2.3',
    '::ffff:999.1.1.1',
    '"1.2.3.4"',
    '1,,'.repeat(3334), // 10,002 entries in 10 KB, within the 16 KiB header limit
    ','.repeat(10_000),
    `${'x'.repeat(3000)}, 1.2.3.4`,
  ];
  for (const xff of garbage) {
    const started = Date.now();
    const reply = await send(`${t.url}/state`, { headers: { 'x-forwarded-for': xff } });
    const body = state(reply);
    assert.ok(isIP(body.clientIp) !== 0, `XFF ${JSON.stringify(xff.slice(0, 40))} → clientIp ${JSON.stringify(body.clientIp)}`);
    assert.ok(Date.now() - started < 1000, 'bounded cost');
  }
  const last = state(await send(`${t.url}/state`, { headers: { 'x-forwarded-for': '1.2.3.4, not-an-ip' } }));
  assert.equal(last.clientIp, '127.0.0.1', 'a non-IP rightmost entry falls back to the peer address');
  assert.equal(state(await send(`${t.url}/state`)).clientIp, '127.0.0.1', 'still serving');
});

test('B7: a dual-stack listener ("::") reports an IPv4 client as 127.0.0.1 and keeps its cookie working', async () => {
  const t = await serverWith({ host: '::' });
  const base = `http://127.0.0.1:${t.server.port}`;
  const owner = client(base);
  const first = state(await owner.get('/inc'));
  assert.equal(first.clientIp, '127.0.0.1', 'not ::ffff:127.0.0.1');
  const second = await owner.get('/inc');
  assert.equal(second.status, 200, 'no false 400');
  assert.deepEqual([state(second).id, state(second).n], [first.id, 2]);
  // Normalising did not switch the binding off.
  const other = await client(base, '127.0.0.2').get('/inc', { headers: { cookie: `RSID=${first.id}` } });
  assert.equal(other.status, 400);
  assert.equal(logsWith(t, 'ip-mismatch').length, 1);
});

// ---------------------------------------------------------------------------------------------
// D3, D4, D6, D9: limits

test('D3: limits.headersTimeout above limits.requestTimeout is refused as invalid configuration (Node would throw at listen)', () => {
  // node:http requires headersTimeout <= requestTimeout unless requestTimeout is 0.
  assert.throws(
    () => resolveConfig({ limits: { headersTimeout: '5s', requestTimeout: '1s' } }, ROOT),
    (error: Error & { code?: string }) => error.code === 'RESIDENT_ERR_INVALID_CONFIG' && /headersTimeout/.test(error.message),
  );
  assert.doesNotThrow(() => resolveConfig({ limits: { headersTimeout: '5s', requestTimeout: 0 } }, ROOT));
});

let limited: TestServer | undefined;
async function limitedServer(): Promise<TestServer> {
  limited ??= await serverWith({ limits: { headersTimeout: '1s', requestTimeout: '2s', maxBodySize: 1024 } });
  return limited;
}

test('D3: a slowloris socket gets 408 and is closed at headersTimeout while a normal client is served quickly', async () => {
  const t = await limitedServer();
  assert.equal((await send(`${t.url}/state`)).status, 200, 'warm');
  const request = 'GET /state HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ' + 'a'.repeat(200);
  const started = Date.now();
  const chunks: Buffer[] = [];
  const socket = connect({ port: t.server.port, host: '127.0.0.1' });
  let sent = 0;
  let trickle: NodeJS.Timeout | undefined;
  socket.on('connect', () => {
    socket.write(request[sent++]!);
    trickle = setInterval(() => {
      if (!socket.destroyed && sent < request.length) socket.write(request[sent++]!);
    }, 100);
  });
  socket.on('data', (chunk: Buffer) => chunks.push(chunk));
  socket.on('error', () => undefined);
  const closed = new Promise<number>((resolve) => socket.on('close', () => resolve(Date.now() - started)));
  try {
    await new Promise((resolve) => setTimeout(resolve, 300));
    const t0 = Date.now();
    const normal = await send(`${t.url}/inc`);
    const latency = Date.now() - t0;
    assert.equal(normal.status, 200);
    assert.ok(latency < 1000, `a normal client took ${latency} ms`);
    assert.equal(socket.destroyed, false, 'the slow socket is still open while the normal client is served');

    const elapsed = await Promise.race([closed, new Promise<number>((resolve) => setTimeout(() => resolve(-1), 5000))]);
    assert.notEqual(elapsed, -1, 'the slow socket was not closed within 5 s');
    assert.match(Buffer.concat(chunks).toString('latin1'), /^HTTP\/1\.1 408 /);
    assert.ok(elapsed >= 900, `closed after ${elapsed} ms, before headersTimeout`);
    assert.ok(elapsed < 1900, `closed after ${elapsed} ms: headersTimeout (1 s) should act, not requestTimeout (2 s)`);
  } finally {
    clearInterval(trickle);
    socket.destroy();
  }
  assert.equal((await send(`${t.url}/state`)).status, 200, 'still serving');
});

test('D4: a 20 KB Cookie header gets 431 and the server keeps serving', async () => {
  const { id, owner } = await newSession(main);
  const created = main.server.sessions.stats.created;
  const reply = await rawRequest(main.server.port, rawGet('/inc', [`Cookie: RSID=${id}; pad=${'x'.repeat(20_000)}`]));
  assert.equal(reply.status, 431, reply.raw.slice(0, 100));
  assert.equal(reply.closed, true);
  assert.equal(main.server.sessions.stats.created, created, 'no context involved');
  const viaUndici = await owner.get('/state', { headers: { cookie: `RSID=${id}; pad=${'y'.repeat(20_000)}` } });
  assert.equal(viaUndici.status, 431);
  assert.deepEqual(viaUndici.setCookies, []);
  assert.equal(state(await owner.get('/inc')).n, 2, 'the oversized requests never reached the context');
});

test('D6: a body over limits.maxBodySize gets 413 quickly (declared or streamed); a body under it reaches the hook', async () => {
  const t = await limitedServer();
  const small = await send(`${t.url}/echo`, { method: 'POST', body: 'hello' });
  assert.equal(small.status, 200);
  assert.equal(small.json().body, 'hello');
  const atLimit = await send(`${t.url}/echo`, { method: 'POST', body: 'z'.repeat(1024) });
  assert.equal(atLimit.json().body.length, 1024);

  const created = t.server.sessions.stats.created;
  const declared = await rawRequest(
    t.server.port,
    Buffer.concat([Buffer.from('POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 10240\r\n\r\n', 'latin1'), Buffer.alloc(10240, 0x61)]),
  );
  assert.equal(declared.status, 413, declared.raw.slice(0, 100));
  assert.equal(declared.closed, true);

  const viaUndici = await send(`${t.url}/echo`, { method: 'POST', body: 'b'.repeat(10 * 1024) });
  assert.equal(viaUndici.status, 413);
  assert.equal(viaUndici.text, 'The request body is too large.');
  assert.deepEqual(viaUndici.setCookies, []);

  // Chunked, no Content-Length: refused while reading.
  const chunk = 'c'.repeat(600);
  const chunked = await rawRequest(
    t.server.port,
    `POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n${(600).toString(16)}\r\n${chunk}\r\n${(600).toString(16)}\r\n${chunk}\r\n0\r\n\r\n`,
  );
  assert.equal(chunked.status, 413, chunked.raw.slice(0, 100));

  // 100 MB declared, 64 KB sent, the rest never comes: answered and closed at once.
  const huge = await rawRequest(
    t.server.port,
    Buffer.from(`POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: ${100 * 1024 * 1024}\r\n\r\n`, 'latin1'),
    { keepWriting: Buffer.alloc(64 * 1024, 0x62), timeoutMs: 3000 },
  );
  assert.equal(huge.status, 413, huge.raw.slice(0, 100));
  assert.equal(huge.closed, true, 'the connection is closed, not drained');
  assert.ok(huge.elapsed < 1000, `413 after ${huge.elapsed} ms`);
  assert.equal(t.server.sessions.stats.created, created, 'no context for a refused body');

  assert.equal((await send(`${t.url}/echo`, { method: 'POST', body: 'still here' })).json().body, 'still here');
});

test('D9: 200 other cookie pairs with RSID in the middle: the right session is found', async () => {
  const { id, owner } = await newSession(main);
  const pairs = Array.from({ length: 200 }, (_, i) => `c${i}=v${i}`);
  pairs.splice(100, 0, `RSID=${id}`);
  const reply = await owner.get('/inc', { headers: { cookie: pairs.join('; ') } });
  assert.equal(issuedId(reply), id);
  assert.deepEqual([state(reply).id, state(reply).n], [id, 2]);
  // And with 200 decoy RSID values before it.
  const decoys = Array.from({ length: 200 }, (_, i) => `RSID=decoy${String(i).padStart(17, '0')}`);
  const crowded = await owner.get('/inc', { headers: { cookie: [...decoys, `RSID=${id}`].join('; ') } });
  assert.deepEqual([state(crowded).id, state(crowded).n], [id, 3]);
});

// ---------------------------------------------------------------------------------------------
// Static files, enabled: false, 404

test('static: /style.css is served without a cookie and without a context; HEAD works', async () => {
  const created = main.server.sessions.stats.created;
  const live = main.server.sessions.stats.live;
  const reply = await send(`${main.url}/style.css`);
  assert.equal(reply.status, 200);
  assert.equal(reply.text, 'body { font-family: sans-serif; }\n');
  assert.match(String(reply.headers['content-type']), /^text\/css/);
  assert.deepEqual(reply.setCookies, []);

  const head = await send(`${main.url}/style.css`, { method: 'HEAD' });
  assert.equal(head.status, 200);
  assert.equal(head.text, '');
  assert.equal(head.headers['content-length'], String(Buffer.byteLength(reply.text)));
  assert.deepEqual(head.setCookies, []);

  // A cookie on a static request is not looked at: no refresh, no new session.
  const withJunk = await send(`${main.url}/style.css`, { headers: { cookie: 'RSID=attacker_chosen_id_001' } });
  assert.equal(withJunk.status, 200);
  assert.deepEqual(withJunk.setCookies, []);
  assert.equal(main.server.sessions.stats.created, created, 'no session created for static files');
  assert.equal(main.server.sessions.stats.live, live);
});

test('static: a dotfile and path traversal are not served as files (they reach the hook: 404)', async () => {
  const hidden = await send(`${main.url}/.hidden`);
  assert.equal(hidden.status, 404);
  assert.doesNotMatch(hidden.text, /secret/);
  assert.equal(sessionCookieLines(hidden).length, 1, 'it went through the session path, not the file server');
  issuedId(hidden);

  for (const path of ['/../package.json', '/%2e%2e/package.json', '/..%2fpackage.json', '/../test/fixtures/public/.hidden', '/..%5cpackage.json']) {
    const reply = await rawRequest(main.server.port, rawGet(path));
    assert.equal(reply.status, 404, `${path}: ${reply.raw.slice(0, 80)}`);
    assert.doesNotMatch(reply.body, /"name"|"dependencies"|secret/, path);
  }
  assert.equal((await send(`${main.url}/style.css`)).status, 200);
});

test('issue point 9: sessions.enabled false: no Set-Cookie ever, a fresh context per request', async () => {
  const t = await serverWith({ sessions: { enabled: false } });
  const ids = new Set<string>();
  for (let i = 0; i < 3; i++) {
    const reply = await send(`${t.url}/inc`);
    assert.deepEqual(reply.setCookies, []);
    const body = state(reply);
    assert.equal(body.n, 1);
    assert.equal(body.isNew, true);
    ids.add(body.id);
  }
  assert.equal(ids.size, 3);
  const presented = [...ids][0]!;
  const again = await send(`${t.url}/inc`, { headers: { cookie: `RSID=${presented}` } });
  assert.deepEqual(again.setCookies, []);
  assert.equal(state(again).n, 1, 'a presented cookie selects nothing');
  assert.equal(t.server.sessions.stats.live, 0, 'nothing kept after the response');
});

test('a hook returning undefined (unknown path) gives 404', async () => {
  const reply = await send(`${main.url}/no-such-route`);
  assert.equal(reply.status, 404);
  assert.equal(reply.text, 'Not Found');
  issuedId(reply);
  const post = await send(`${main.url}/no-such-route`, { method: 'POST', body: 'x' });
  assert.equal(post.status, 404);
});

// ---------------------------------------------------------------------------------------------
// A13: last, after every case above has logged what it logs

test('A13: no raw session ID issued or presented in this file ever appears in a log; lines carry a session hash', async () => {
  assert.ok(seenIds.size > 50, `collected ${seenIds.size} IDs`);
  for (const t of servers) {
    const raw = t.rawLogs();
    for (const id of seenIds) assert.ok(!raw.includes(id), `raw ID ${id} found in the log`);
    for (const line of t.logs) {
      if (line.session !== undefined) {
        assert.match(String(line.session), /^[A-Za-z0-9_-]{8,64}$/);
        assert.ok(!seenIds.has(String(line.session)));
      }
    }
  }
  // The lines of the main server identify each session it created by that session's hash.
  const created = new Set(logsWith(main, 'created').map((line) => line.session));
  assert.ok(created.size > 10);
  const issuedOnMain: string[] = [];
  for (const id of seenIds) if (await main.server.sessions.info(id)) issuedOnMain.push(id);
  assert.ok(issuedOnMain.length > 5);
  for (const id of issuedOnMain) assert.ok(created.has(hashId(id)), 'a created line names the session by its hash');
  assert.ok(logsWith(main, 'unknown-id').length >= 2);
  assert.ok(logsWith(main, 'ip-mismatch').length >= 1);
});
