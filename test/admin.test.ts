/**
 * The admin view and API (src/ops/admin.ts) against real servers over real sockets: off without
 * a token, the page and its assets, the bearer token (every near miss refused), the overview,
 * live and suspended listings with their cursors, a user's sessions, closing and suspending by
 * handle, and what the admin view must never do: show a full session ID, create a session,
 * set a cookie, or hand a request to the hooks.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test, type TestContext } from 'node:test';
import type { ResidentConfigInput } from '../src/config.ts';
import { hashId } from '../src/log.ts';
import { Client, ManualClock, fixtureState, send, startTestServer, testConfig, waitFor, type Reply, type TestServer } from './helpers.ts';

const TOKEN = 'test-admin-token-0123456789abcdef';
const AUTH = { authorization: `Bearer ${TOKEN}` };
/** The fixture memento's `at`, after JSON. */
const EPOCH = new Date(0).toISOString();

// ---------------------------------------------------------------------------------------------
// Plumbing

const servers = new Set<TestServer>();
const clients = new Set<Client>();
const tempDirs: string[] = [];
after(async () => {
  await Promise.all([...clients].map((c) => c.close()));
  await Promise.all([...servers].map((s) => s.close()));
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
});

/** Every session ID a test client was ever given, and every admin response seen. */
const issuedIds = new Set<string>();
const adminReplies: Array<{ what: string; reply: Reply }> = [];
let checkedReplies = 0;

/** A browser-like client whose every cookie value is remembered for the leak checks. */
class TrackedClient extends Client {
  override async get(path: string, init: Parameters<Client['get']>[1] = {}): Promise<Reply> {
    const reply = await super.get(path, init);
    if (this.cookie) issuedIds.add(this.cookie);
    return reply;
  }
}

async function adminServer(overrides: ResidentConfigInput = {}, clock?: ManualClock): Promise<TestServer> {
  const t = await startTestServer({ workers: { threads: 2 }, ...overrides, admin: { token: TOKEN, ...overrides.admin } }, clock);
  servers.add(t);
  return t;
}

async function plainServer(overrides: ResidentConfigInput = {}): Promise<TestServer> {
  const t = await startTestServer({ workers: { threads: 1 }, ...overrides });
  servers.add(t);
  return t;
}

function client(t: TestServer, options: ConstructorParameters<typeof Client>[1] = {}): TrackedClient {
  const c = new TrackedClient(t.url, options);
  clients.add(c);
  return c;
}

/** Several clients, each with a session (one /inc each). */
async function sessionsOn(t: TestServer, count: number): Promise<TrackedClient[]> {
  const made: TrackedClient[] = [];
  for (let i = 0; i < count; i++) {
    const c = client(t);
    assert.equal((await c.get('/inc')).status, 200);
    made.push(c);
  }
  return made;
}

/** One request to the admin view (path relative to admin.path), recorded for the leak checks. */
async function admin(
  t: TestServer,
  path: string,
  init: { method?: string; headers?: Record<string, string>; token?: string | null } = {},
): Promise<Reply> {
  const token = init.token === undefined ? TOKEN : init.token;
  const headers: Record<string, string> = { ...(token === null ? {} : { authorization: `Bearer ${token}` }), ...init.headers };
  const url = `${t.server.adminUrl ?? `${t.url}/_resident/`}${path}`;
  const reply = await send(url, { method: init.method ?? 'GET', headers });
  adminReplies.push({ what: `${init.method ?? 'GET'} ${path}`, reply });
  return reply;
}

/** An authorized API call that must answer `status`; returns its JSON. */
async function api<T = any>(t: TestServer, method: string, path: string, status = 200): Promise<T> {
  const reply = await admin(t, `api/${path}`, { method });
  assert.equal(reply.status, status, `${method} api/${path} answered ${reply.status}: ${reply.text}`);
  assert.match(String(reply.headers['content-type']), /^application\/json/);
  return reply.json<T>();
}

interface SessionView {
  handle: string;
  maskedId: string;
  userId: string | null;
  clientIp: string;
  state: string;
  createdAt: string;
  lastActivityAt: string;
  workerId: number | null;
  requests: number | null;
  mementoBytes: number;
}
interface Page {
  sessions: SessionView[];
  next: string | null;
}

const listLive = (t: TestServer, query = '') => api<Page>(t, 'GET', `sessions?state=live${query}`);
const listSuspended = (t: TestServer, query = '') => api<Page>(t, 'GET', `sessions?state=suspended${query}`);

/** Every page of a listing, following `next`. */
async function allPages(t: TestServer, state: 'live' | 'suspended', limit: number): Promise<Page[]> {
  const pages: Page[] = [];
  let cursor: string | null = null;
  do {
    const query: string = `&limit=${limit}${cursor === null ? '' : `&cursor=${encodeURIComponent(cursor)}`}`;
    const page: Page = state === 'live' ? await listLive(t, query) : await listSuspended(t, query);
    pages.push(page);
    cursor = page.next;
    assert.ok(pages.length < 100, 'the cursor never ends');
  } while (cursor !== null);
  return pages;
}

const masked = (id: string) => `${id.slice(0, 4)}…`;
const idOf = (c: Client) => {
  assert.ok(c.cookie, 'the client holds a session cookie');
  return c.cookie;
};

/**
 * No admin response since the last check (bodies and headers), and no server log, holds a full
 * session ID: every ID a client was given, and every ID any server knows now.
 */
async function assertNoIdLeaks(): Promise<void> {
  const replies = adminReplies.splice(0);
  checkedReplies += replies.length;
  const ids = new Set(issuedIds);
  for (const t of servers) {
    for (const id of (await t.server.sessions.list({ state: 'live' })).map((s) => s.id)) ids.add(id);
    for (const id of (await t.server.sessions.list({ state: 'suspended' })).map((s) => s.id)) ids.add(id);
  }
  for (const { what, reply } of replies) {
    const text = `${reply.text}\n${JSON.stringify(reply.headers)}`;
    for (const id of ids) assert.ok(!text.includes(id), `the admin response to ${what} holds a full session ID`);
    // An admin response never sets a cookie, ours or any other.
    assert.deepEqual(reply.setCookies, [], `the admin response to ${what} set a cookie`);
  }
  for (const t of servers) {
    const logs = t.rawLogs();
    for (const id of ids) assert.ok(!logs.includes(id), 'a server log line holds a full session ID');
  }
}

/** Flips the case of every letter. */
const swapCase = (text: string) => [...text].map((ch) => (ch === ch.toUpperCase() ? ch.toLowerCase() : ch.toUpperCase())).join('');

// ---------------------------------------------------------------------------------------------

test('without a token the admin view is off: its path is an ordinary path for the hooks', async () => {
  assert.throws(() => testConfig({ admin: { token: 'fifteen-chars!!' } }), /admin\.token must be at least 16 characters/);
  assert.throws(() => testConfig({ admin: { token: TOKEN, path: '/no-trailing-slash' } }), /admin\.path must be a URL path/);

  const t = await plainServer();
  assert.equal(t.server.adminUrl, null);
  const c = client(t);
  for (const path of ['/_resident/', '/_resident/api/overview', '/_resident/admin.js', '/_resident']) {
    const reply = await c.get(path, { headers: AUTH });
    assert.equal(reply.status, 200, `${path}: ${reply.text}`);
    assert.deepEqual(reply.json(), { hook: 'onConnection', path, n: 0 });
  }
  // One session carried through all four: the hooks had them, with the cookie.
  assert.equal(t.server.sessions.stats.created, 1);
  assert.equal((await t.server.sessions.info(idOf(c)))?.requests, 4);
});

test('the page, its script and stylesheet load without the token, hold no data and set no cookie', async () => {
  const t = await adminServer();
  assert.equal(t.server.adminUrl, `${t.url}/_resident/`);
  const [someone] = await sessionsOn(t, 1);
  const created = t.server.sessions.stats.created;

  const page = await admin(t, '', { token: null });
  assert.equal(page.status, 200);
  assert.match(String(page.headers['content-type']), /^text\/html/);
  const csp = String(page.headers['content-security-policy']);
  assert.match(csp, /default-src 'none'/);
  assert.match(csp, /script-src 'self'/);
  assert.match(csp, /frame-ancestors 'none'/);
  assert.equal(page.headers['x-frame-options'], 'DENY');
  assert.equal(page.headers['cache-control'], 'no-store');
  assert.match(page.text, /<script src="\/_resident\/admin\.js" defer><\/script>/);
  assert.match(page.text, /id="token"/);
  // No data: not even the masked ID of the session that exists.
  assert.ok(!page.text.includes(masked(idOf(someone!))));

  const script = await admin(t, 'admin.js', { token: null });
  assert.equal(script.status, 200);
  assert.match(String(script.headers['content-type']), /^text\/javascript/);
  assert.match(script.text, /Bearer/);
  assert.ok(script.headers['content-security-policy']);
  const style = await admin(t, 'admin.css', { token: null });
  assert.equal(style.status, 200);
  assert.match(String(style.headers['content-type']), /^text\/css/);

  const head = await admin(t, '', { method: 'HEAD', token: null });
  assert.equal(head.status, 200);
  assert.equal(head.text, '');

  // Without the trailing slash: a permanent redirect to the page, query or not.
  for (const path of ['/_resident', '/_resident?x=1']) {
    const reply = await send(t.url + path);
    adminReplies.push({ what: `GET ${path}`, reply });
    assert.equal(reply.status, 308, path);
    assert.equal(reply.headers.location, '/_resident/');
    assert.deepEqual(reply.setCookies, []);
  }
  // Only GET and HEAD load the page without the token.
  assert.equal((await admin(t, '', { method: 'POST', token: null })).status, 401);

  assert.equal(t.server.sessions.stats.created, created, 'no session was created');
  await assertNoIdLeaks();
});

test('a custom admin.path moves the view; the default path goes back to the hooks', async () => {
  const t = await adminServer({ admin: { path: '/ops-admin/x/' } });
  assert.equal(t.server.adminUrl, `${t.url}/ops-admin/x/`);
  const page = await admin(t, '', { token: null });
  assert.equal(page.status, 200);
  assert.match(page.text, /data-base="\/ops-admin\/x\/"/);
  assert.match(page.text, /href="\/ops-admin\/x\/admin\.css"/);
  assert.equal((await admin(t, 'api/overview')).status, 200);
  assert.equal((await admin(t, 'api/overview', { token: null })).status, 401);
  const redirect = await send(`${t.url}/ops-admin/x`);
  assert.equal(redirect.status, 308);
  assert.equal(redirect.headers.location, '/ops-admin/x/');

  const c = client(t);
  const reply = await c.get('/_resident/api/overview', { headers: AUTH });
  assert.equal(reply.status, 200);
  assert.deepEqual(reply.json(), { hook: 'onConnection', path: '/_resident/api/overview', n: 0 });
  await assertNoIdLeaks();
});

test('every other admin route needs exactly "Bearer <token>": near misses get 401 and change nothing', async () => {
  const t = await adminServer();
  const [victim] = await sessionsOn(t, 1);
  assert.equal((await victim!.get('/as-user?user=ada')).status, 200);
  const [listed] = (await listLive(t)).sessions;
  assert.ok(listed);
  const handle = encodeURIComponent(listed.handle);

  const routes: Array<[string, string]> = [
    ['GET', 'api/overview'],
    ['GET', 'api/sessions'],
    ['GET', 'api/sessions?state=suspended'],
    ['GET', 'api/users/ada/sessions'],
    ['POST', 'api/users/ada/close'],
    ['POST', `api/sessions/${handle}/close`],
    ['POST', `api/sessions/${handle}/suspend`],
    ['GET', 'metrics'],
    ['GET', 'api/no-such-route'],
    ['GET', 'no-such-page'],
  ];
  const refused: Array<Record<string, string>> = [
    {},
    { authorization: '' },
    { authorization: 'Bearer' },
    { authorization: 'Bearer ' },
    { authorization: `Bearer ${TOKEN.slice(0, -1)}` }, // a prefix of the token
    { authorization: `Bearer ${TOKEN.slice(0, 16)}` },
    { authorization: `Bearer ${TOKEN}x` }, // the token plus one character
    { authorization: `Bearer ${TOKEN}${TOKEN}` },
    { authorization: `Bearer ${swapCase(TOKEN)}` }, // the token, case flipped
    { authorization: `Bearer ${TOKEN.toUpperCase()}` },
    { authorization: `Bearer ${TOKEN} ${TOKEN}` },
    { authorization: `Bearer x ${TOKEN}` },
    { authorization: TOKEN }, // no scheme
    { authorization: `Basic ${TOKEN}` },
    { authorization: `Basic ${Buffer.from(`admin:${TOKEN}`).toString('base64')}` },
    { authorization: `Token ${TOKEN}` },
    { authorization: `Bearer: ${TOKEN}` },
    { authorization: `XBearer ${TOKEN}` },
    { 'x-admin-token': TOKEN },
    { cookie: `token=${TOKEN}` },
  ];
  for (const [method, path] of routes) {
    for (const headers of refused) {
      const reply = await admin(t, path, { method, headers, token: null });
      const what = `${method} ${path} with ${JSON.stringify(headers)}`;
      assert.equal(reply.status, 401, what);
      assert.match(String(reply.headers['www-authenticate']), /^Bearer\b/, what);
      assert.match(String(reply.headers['content-type']), /^application\/json/, what);
      assert.match(reply.json<{ error: string }>().error, /Authorization: Bearer/, what);
    }
  }
  // Nothing happened to the session the refused calls named.
  assert.equal(t.server.sessions.stats.closed, 0);
  assert.equal(t.server.sessions.stats.suspended.admin, 0);
  const state = await fixtureState(victim!, '/inc');
  assert.equal(state.n, 2);
  assert.equal(state.isNew, false);
  assert.equal(state.id, idOf(victim!));

  // The exact token works; the scheme's case does not matter (RFC 7235), nor trailing spaces.
  for (const authorization of [`Bearer ${TOKEN}`, `bearer ${TOKEN}`, `BEARER ${TOKEN}`, `Bearer   ${TOKEN}  `]) {
    const reply = await admin(t, 'api/overview', { headers: { authorization }, token: null });
    assert.equal(reply.status, 200, authorization);
  }
  await assertNoIdLeaks();
});

test('admin requests never create a session, set a cookie, or reach the hooks', async () => {
  const t = await adminServer();
  const [c] = await sessionsOn(t, 1);
  const id = idOf(c!);
  const before = { created: t.server.sessions.stats.created, requests: (await t.server.sessions.info(id))!.requests, logs: t.logs.length };

  const withCookie = { cookie: `RSID=${id}` };
  const unknownCookie = { cookie: 'RSID=AAAAAAAAAAAAAAAAAAAAAA' };
  for (const headers of [{}, withCookie, unknownCookie]) {
    for (const [path, token, status] of [
      ['', null, 200],
      ['admin.js', null, 200],
      ['api/overview', TOKEN, 200],
      ['api/sessions', TOKEN, 200],
      ['api/overview', null, 401],
      // Paths under admin.path the admin view does not know: its own 404, not the hook's.
      ['anything', TOKEN, 404],
      ['api/anything', TOKEN, 404],
      ['anything', null, 401],
    ] as const) {
      const reply = await admin(t, path, { headers, token });
      assert.equal(reply.status, status, `${path} ${token ? 'with' : 'without'} the token`);
      assert.ok(!reply.text.includes('"hook"'), `the hook answered ${path}`);
      if (status === 404) assert.match(reply.json<{ error: string }>().error, /no such admin/);
    }
  }
  assert.equal(t.server.sessions.stats.created, before.created, 'no session was created');
  assert.equal((await t.server.sessions.info(id))?.requests, before.requests, "the client's session saw none of them");
  const lines = t.logs.slice(before.logs);
  assert.deepEqual(
    lines.filter((l) => ['created', 'unknown-id', 'hook-error'].includes(String(l.event))),
    [],
    'no session lookup or hook call was logged',
  );
  await assertNoIdLeaks();
});

test('overview: the store, session counts, every worker and the counters', async () => {
  const t = await adminServer({ workers: { threads: 2 } });
  const empty = await api(t, 'GET', 'overview');
  assert.equal(empty.store, 'memory');
  assert.deepEqual(empty.sessions, { live: 0, unproven: 0, proven: 0, suspendedKnown: 0 });
  assert.equal(empty.workers.length, 2);
  for (const worker of empty.workers) assert.deepEqual(Object.keys(worker).sort(), ['contexts', 'queued', 'slot', 'threadId']);
  assert.deepEqual(new Set(empty.workers.map((w: { threadId: number }) => w.threadId)), new Set(t.server.pool.threadIds));
  assert.equal(empty.counters.created, 0);

  const made = await sessionsOn(t, 4);
  // Until a client presents its cookie back, its session is unproven (see "Hostile traffic").
  assert.deepEqual((await api(t, 'GET', 'overview')).sessions, { live: 4, unproven: 4, proven: 0, suspendedKnown: 0 });
  const threads = await Promise.all(made.map(async (c) => (await fixtureState(c)).threadId));
  const overview = await api(t, 'GET', 'overview');
  assert.deepEqual(overview.sessions, { live: 4, unproven: 0, proven: 4, suspendedKnown: 0 });
  assert.equal(overview.counters.created, 4);
  for (const worker of overview.workers as Array<{ threadId: number; contexts: number; queued: number }>) {
    assert.equal(worker.contexts, threads.filter((id) => id === worker.threadId).length, `contexts on thread ${worker.threadId}`);
    assert.equal(worker.queued, 0);
  }

  // A request in flight shows as queued on its worker.
  const busy = made[0]!;
  const slow = busy.get('/sleep?ms=1000');
  const loaded = await waitFor(async () => {
    const o = await api(t, 'GET', 'overview');
    return o.workers.find((w: { threadId: number; queued: number }) => w.threadId === threads[0] && w.queued >= 1);
  }, 3000, 'the request in flight to show as queued');
  assert.ok(loaded);
  assert.equal((await slow).status, 200);

  const [listed] = (await listLive(t, '&limit=1')).sessions;
  await api(t, 'POST', `sessions/${encodeURIComponent(listed!.handle)}/suspend`);
  const after = await api(t, 'GET', 'overview');
  assert.deepEqual(after.sessions, { live: 3, unproven: 0, proven: 3, suspendedKnown: 1 });
  assert.equal(after.counters.suspended.admin, 1);
  assert.equal(after.workers.reduce((sum: number, w: { contexts: number }) => sum + w.contexts, 0), 3);
  await assertNoIdLeaks();
});

test('live sessions: every field, least recently active first, paged with the cursor, bad queries refused', async () => {
  const clock = new ManualClock();
  const t = await adminServer({}, clock);
  const started = Date.now();
  const [a, b, c, d] = await sessionsOn(t, 4);
  // Past the directory's reordering granularity, A becomes the most recently active.
  clock.advance(1000);
  const stateA = await fixtureState(a!, '/as-user?user=ada');
  const order = [b!, c!, d!, a!].map(idOf);

  const whole = await listLive(t);
  assert.equal(whole.next, null);
  assert.deepEqual(
    whole.sessions.map((s) => s.handle),
    order.map((id) => hashId(id)),
    'least recently active first; the handle is the hash the logs carry',
  );
  const viewA = whole.sessions[3]!;
  assert.deepEqual(Object.keys(viewA).sort(), [
    'clientIp', 'createdAt', 'handle', 'lastActivityAt', 'maskedId', 'mementoBytes', 'requests', 'state', 'userId', 'workerId',
  ]);
  assert.equal(viewA.maskedId, masked(idOf(a!)));
  assert.equal(viewA.maskedId.length, 5);
  assert.equal(viewA.userId, 'ada');
  assert.equal(viewA.clientIp, '127.0.0.1');
  assert.equal(viewA.state, 'live');
  assert.equal(viewA.workerId, stateA.threadId);
  assert.equal(viewA.requests, 2);
  assert.equal(viewA.mementoBytes, 0);
  assert.equal(viewA.createdAt, stateA.createdAt);
  const createdAt = Date.parse(viewA.createdAt);
  assert.ok(createdAt >= started - 5 && createdAt <= Date.now(), viewA.createdAt);
  // Activity is measured on the server's clock: A's last request came 1 s (of that clock) later.
  const gap = Date.parse(viewA.lastActivityAt) - Date.parse(whole.sessions[0]!.lastActivityAt);
  assert.ok(gap >= 990 && gap <= 1100, `lastActivityAt gap ${gap}`);
  for (const view of whole.sessions.slice(0, 3)) assert.equal(view.userId, null);

  // Pages of 3 then 1; of 1 each; and one page of exactly all.
  const byThree = await allPages(t, 'live', 3);
  assert.deepEqual(byThree.map((p) => p.sessions.length), [3, 1]);
  assert.equal(byThree[0]!.next, '3');
  assert.deepEqual(byThree.flatMap((p) => p.sessions.map((s) => s.handle)), order.map((id) => hashId(id)));
  const byOne = await allPages(t, 'live', 1);
  assert.deepEqual(byOne.flatMap((p) => p.sessions.map((s) => s.handle)), order.map((id) => hashId(id)));
  assert.equal((await listLive(t, '&limit=4')).next, null);
  assert.equal((await listLive(t, '&limit=1000')).sessions.length, 4);
  // No state means live.
  assert.deepEqual((await api<Page>(t, 'GET', 'sessions')).sessions.map((s) => s.handle), order.map((id) => hashId(id)));

  for (const query of ['state=live&limit=0', 'state=live&limit=1001', 'limit=abc', 'limit=2.5', 'limit=-1', 'limit=', 'state=suspended&limit=0', 'state=gone', 'state=LIVE', 'state=', 'cursor=-1', 'cursor=x']) {
    const reply = await admin(t, `api/sessions?${query}`);
    assert.equal(reply.status, 400, `${query}: ${reply.text}`);
    assert.ok(reply.json<{ error: string }>().error, query);
  }
  await assertNoIdLeaks();
});

test('suspended sessions: from the store in ID order, paged by handle, live ones skipped, and after a restart', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'resident-admin-'));
  tempDirs.push(dir);
  const store = { kind: 'sqlite' as const, path: join(dir, 'contexts.db') };
  const t = await adminServer({ store });
  const made = await sessionsOn(t, 5);
  await fixtureState(made[0]!, '/as-user?user=grace');
  for (const view of (await listLive(t)).sessions) {
    const done = await api(t, 'POST', `sessions/${encodeURIComponent(view.handle)}/suspend`);
    assert.deepEqual(done, { handle: view.handle, state: 'suspended' });
  }
  assert.equal(t.server.sessions.stats.suspendedKnown, 5);
  assert.deepEqual((await listLive(t)).sessions, []);

  const sortedIds = made.map(idOf).sort();
  const pages = await allPages(t, 'suspended', 2);
  assert.deepEqual(pages.map((p) => p.sessions.length), [2, 2, 1]);
  const listed = pages.flatMap((p) => p.sessions);
  assert.deepEqual(listed.map((s) => s.handle), sortedIds.map((id) => hashId(id)), 'in ID order');
  assert.deepEqual(listed.map((s) => s.maskedId), sortedIds.map(masked));
  // The cursor is the handle of the last ID of the page, never an ID.
  assert.equal(pages[0]!.next, listed[1]!.handle);
  assert.equal(pages[1]!.next, listed[3]!.handle);
  for (const view of listed) {
    assert.equal(view.state, 'suspended');
    assert.equal(view.workerId, null);
    assert.equal(view.requests, view.handle === hashId(idOf(made[0]!)) ? 2 : 1);
    assert.ok(view.mementoBytes > 0, 'the memento is in the store');
    assert.equal(view.userId, view.handle === hashId(idOf(made[0]!)) ? 'grace' : null);
  }
  // A page that ends exactly at the last record still offers a cursor; the next page is empty.
  const fives = await allPages(t, 'suspended', 5);
  assert.deepEqual(fives.map((p) => p.sessions.length), [5, 0]);
  assert.equal((await admin(t, 'api/sessions?state=suspended&cursor=not-a-handle')).status, 404);

  // A resumed session is live again: the suspended listing skips it, the live one has it.
  const back = await fixtureState(made[2]!);
  assert.equal(back.resumed, true);
  const resumedHandle = hashId(idOf(made[2]!));
  const again = (await allPages(t, 'suspended', 2)).flatMap((p) => p.sessions);
  assert.deepEqual(again.map((s) => s.handle), sortedIds.filter((id) => id !== idOf(made[2]!)).map((id) => hashId(id)));
  assert.deepEqual((await listLive(t)).sessions.map((s) => s.handle), [resumedHandle]);

  // After a restart on the same store, every session is suspended and only the store knows it.
  await t.close();
  servers.delete(t);
  const restarted = await adminServer({ store });
  assert.deepEqual((await listLive(restarted)).sessions, []);
  const stored = (await allPages(restarted, 'suspended', 3)).flatMap((p) => p.sessions);
  assert.deepEqual(stored.map((s) => s.handle), sortedIds.map((id) => hashId(id)));
  for (const view of stored) {
    assert.equal(view.state, 'suspended');
    assert.equal(view.requests, null, 'a session this process has not seen');
    assert.equal(view.workerId, null);
  }
  const grace = await api(restarted, 'GET', 'users/grace/sessions');
  assert.deepEqual(grace.sessions.map((s: SessionView) => s.handle), [hashId(idOf(made[0]!))]);
  // Closing a session only the store knows: its client starts afresh.
  const target = made[4]!;
  await api(restarted, 'POST', `sessions/${encodeURIComponent(hashId(idOf(target)))}/close`);
  const oldId = idOf(target);
  const fresh = await fixtureState(retarget(target, restarted));
  assert.equal(fresh.isNew, true);
  assert.equal(fresh.resumed, false);
  assert.notEqual(fresh.id, oldId);
  // The others resume on the restarted server.
  const other = await fixtureState(retarget(made[1]!, restarted));
  assert.equal(other.resumed, true);
  assert.equal(other.id, idOf(made[1]!));
  await assertNoIdLeaks();
});

/** A client of another server holding `c`'s cookie (the same browser after a restart). */
function retarget(c: Client, t: TestServer): TrackedClient {
  const moved = client(t);
  moved.cookie = c.cookie;
  return moved;
}

test("a user's sessions, live and suspended, and closing them all", async () => {
  const t = await adminServer();
  const [ada1, ada2, bob, odd] = await sessionsOn(t, 4);
  for (const [c, user] of [[ada1, 'ada'], [ada2, 'ada'], [bob, 'bob'], [odd, 'x/y z?é']] as const) {
    assert.equal((await c!.get(`/as-user?user=${encodeURIComponent(user)}`)).status, 200);
  }
  const handleOf = (c: Client) => hashId(idOf(c));
  await listLive(t); // the listing teaches the view its handles
  await api(t, 'POST', `sessions/${encodeURIComponent(handleOf(ada2!))}/suspend`);

  const found = await api(t, 'GET', 'users/ada/sessions');
  assert.equal(found.userId, 'ada');
  const views = found.sessions as SessionView[];
  assert.deepEqual(views.map((s) => s.handle).sort(), [handleOf(ada1!), handleOf(ada2!)].sort());
  assert.deepEqual(Object.fromEntries(views.map((s) => [s.handle, s.state])), { [handleOf(ada1!)]: 'live', [handleOf(ada2!)]: 'suspended' });
  for (const view of views) {
    assert.equal(view.userId, 'ada');
    assert.equal(view.maskedId.length, 5);
  }
  const oddUser = await api(t, 'GET', `users/${encodeURIComponent('x/y z?é')}/sessions`);
  assert.equal(oddUser.userId, 'x/y z?é');
  assert.deepEqual(oddUser.sessions.map((s: SessionView) => s.handle), [handleOf(odd!)]);
  assert.deepEqual((await api(t, 'GET', 'users/nobody/sessions')).sessions, []);

  const before = { ada1: idOf(ada1!), ada2: idOf(ada2!) };
  const closed = await api(t, 'POST', 'users/ada/close');
  assert.deepEqual(closed, { userId: 'ada', closed: 2 });
  assert.equal((await t.server.sessions.info(before.ada1)), undefined);
  assert.equal((await t.server.sessions.info(before.ada2)), undefined);
  for (const [c, old] of [[ada1!, before.ada1], [ada2!, before.ada2]] as const) {
    const next = await fixtureState(c);
    assert.equal(next.isNew, true);
    assert.equal(next.resumed, false, 'not even the suspended one comes back');
    assert.equal(next.n, 0);
    assert.notEqual(next.id, old);
  }
  // Bob and the odd user were not touched.
  const bobState = await fixtureState(bob!, '/inc');
  assert.equal(bobState.n, 2);
  assert.equal(bobState.isNew, false);
  assert.equal((await fixtureState(odd!)).isNew, false);
  assert.deepEqual(await api(t, 'POST', 'users/ada/close'), { userId: 'ada', closed: 0 });
  assert.deepEqual(await api(t, 'POST', 'users/nobody/close'), { userId: 'nobody', closed: 0 });

  // Logged with the user and hashes only.
  const line = t.logs.find((l) => l.event === 'admin-close-user' && l.closed === 2);
  assert.ok(line, 'the user-wide close is logged');
  assert.equal(line.userId, 'ada');
  const closedLines = t.logs.filter((l) => l.event === 'closed' && l.by === 'admin');
  assert.deepEqual(closedLines.map((l) => l.session).sort(), [hashId(before.ada1), hashId(before.ada2)].sort());

  // Wrong methods and shapes.
  assert.equal((await admin(t, 'api/users/ada/close')).status, 404);
  assert.equal((await admin(t, 'api/users/ada/sessions', { method: 'POST' })).status, 404);
  assert.equal((await admin(t, 'api/users/ada')).status, 404);
  await assertNoIdLeaks();
});

test('closing a session by handle: the client starts afresh; unknown handles get 404', async () => {
  const t = await adminServer();
  const [a, b, bystander] = await sessionsOn(t, 3);
  await a!.get('/inc');
  const oldA = idOf(a!);
  const handleA = hashId(oldA);
  // Handles are learnt from listings: one never shown is unknown, even if it is a real hash.
  assert.equal((await admin(t, `api/sessions/${encodeURIComponent(handleA)}/close`, { method: 'POST' })).status, 404);
  assert.ok((await t.server.sessions.info(oldA)), 'nothing was closed');

  await listLive(t);
  const closedBefore = t.server.sessions.stats.closed;
  assert.deepEqual(await api(t, 'POST', `sessions/${encodeURIComponent(handleA)}/close`), { handle: handleA, closed: true });
  assert.equal((await t.server.sessions.info(oldA)), undefined);
  assert.equal(t.server.sessions.stats.closed, closedBefore + 1);
  assert.equal(t.server.sessions.stats.suspended.closed, 1, "onSessionSuspend(ctx, 'closed') ran");
  const log = t.logs.find((l) => l.event === 'closed' && l.session === handleA);
  assert.equal(log?.by, 'admin');

  const next = await fixtureState(a!);
  assert.equal(next.isNew, true);
  assert.equal(next.resumed, false);
  assert.equal(next.n, 0);
  assert.notEqual(next.id, oldA);
  assert.equal(idOf(a!), next.id, 'the client was given the new session');
  // Closing it again, or anything unknown: 404.
  assert.equal((await admin(t, `api/sessions/${encodeURIComponent(handleA)}/close`, { method: 'POST' })).status, 404);
  assert.equal((await admin(t, 'api/sessions/nope/close', { method: 'POST' })).status, 404);
  assert.equal((await admin(t, 'api/sessions//close', { method: 'POST' })).status, 404);
  // GET is not an action.
  const handleB = hashId(idOf(b!));
  assert.equal((await admin(t, `api/sessions/${encodeURIComponent(handleB)}/close`)).status, 404);
  assert.equal((await admin(t, `api/sessions/${encodeURIComponent(handleB)}/explode`, { method: 'POST' })).status, 404);
  assert.ok((await t.server.sessions.info(idOf(b!))), 'B is still there');

  // A suspended session closes too, and does not come back resumed.
  await api(t, 'POST', `sessions/${encodeURIComponent(handleB)}/suspend`);
  const oldB = idOf(b!);
  await api(t, 'POST', `sessions/${encodeURIComponent(handleB)}/close`);
  const nextB = await fixtureState(b!);
  assert.equal(nextB.isNew, true);
  assert.equal(nextB.resumed, false);
  assert.notEqual(nextB.id, oldB);

  const still = await fixtureState(bystander!, '/inc');
  assert.equal(still.n, 2);
  assert.equal(still.isNew, false);
  await assertNoIdLeaks();
});

test('suspending a session by handle: it resumes on its next request; 409 when busy or not live', async () => {
  const t = await adminServer();
  const [a] = await sessionsOn(t, 1);
  await a!.get('/set?value=kept');
  const id = idOf(a!);
  const handle = encodeURIComponent(hashId(id));
  assert.equal((await admin(t, `api/sessions/${handle}/suspend`, { method: 'POST' })).status, 404, 'a handle never listed');
  await listLive(t);

  assert.deepEqual(await api(t, 'POST', `sessions/${handle}/suspend`), { handle: hashId(id), state: 'suspended' });
  assert.ok(((await t.server.sessions.info(id))?.state === 'suspended'));
  assert.equal(t.server.sessions.stats.suspended.admin, 1);
  const logged = t.logs.find((l) => l.event === 'suspended' && l.reason === 'admin');
  assert.equal(logged?.session, hashId(id));
  const [view] = (await listSuspended(t)).sessions;
  assert.equal(view?.handle, hashId(id));

  // Not live: 409, and nothing changes.
  const notLive = await admin(t, `api/sessions/${handle}/suspend`, { method: 'POST' });
  assert.equal(notLive.status, 409);
  assert.match(notLive.json<{ error: string }>().error, /not live/);

  const back = await fixtureState(a!);
  assert.equal(back.id, id, 'the same session');
  assert.equal(back.isNew, true);
  assert.equal(back.resumed, true);
  assert.deepEqual(back.saved, { n: 1, value: 'kept', reason: 'admin', at: EPOCH });
  assert.equal(t.server.sessions.stats.resumed, 1);

  // Busy: a request in flight.
  const slow = a!.get('/sleep?ms=1000');
  await waitFor(async () => ((await t.server.sessions.info(id))?.inFlight ?? 0) > 0, 2000, 'the request in flight');
  const busy = await admin(t, `api/sessions/${handle}/suspend`, { method: 'POST' });
  assert.equal(busy.status, 409);
  assert.match(busy.json<{ error: string }>().error, /in flight/);
  assert.equal((await slow).status, 200);
  assert.equal(t.server.sessions.stats.suspended.admin, 1, 'the busy session was not suspended');
  assert.deepEqual(await api(t, 'POST', `sessions/${handle}/suspend`), { handle: hashId(id), state: 'suspended' });
  const again = await fixtureState(a!);
  assert.equal(again.resumed, true);
  assert.equal(again.id, id);

  assert.equal((await admin(t, 'api/sessions/nope/suspend', { method: 'POST' })).status, 404);
  // A closed session is not live.
  await api(t, 'POST', `sessions/${handle}/close`);
  assert.equal((await admin(t, `api/sessions/${handle}/suspend`, { method: 'POST' })).status, 409);
  await assertNoIdLeaks();
});

test('no admin response, in any route, ever holds a full session ID', async (t: TestContext) => {
  const s = await adminServer({ sessions: { maxContexts: 3 } });
  const made = await sessionsOn(s, 6); // three live, three evicted into the store
  await fixtureState(made[5]!, '/as-user?user=ada');
  // Evictions finish after the responses that caused them: until they have, a session can be
  // listed live (suspending) and, a moment later, suspended.
  await waitFor(async () => (await s.server.sessions.list({ state: 'live' })).every((entry) => entry.state === 'live'), 3000, 'the evictions settled');
  const live = await listLive(s);
  const suspended = await listSuspended(s);
  assert.equal(live.sessions.length + suspended.sessions.length, 6);
  const paths = [
    '',
    'admin.js',
    'admin.css',
    'api/overview',
    'api/sessions',
    'api/sessions?state=live&limit=1',
    'api/sessions?state=suspended&limit=1',
    `api/sessions?state=suspended&limit=1&cursor=${encodeURIComponent(suspended.sessions[0]!.handle)}`,
    'api/users/ada/sessions',
    'metrics',
  ];
  for (const path of paths) {
    const reply = await admin(s, path);
    assert.equal(reply.status, 200, path);
  }
  await api(s, 'POST', `sessions/${encodeURIComponent(live.sessions[0]!.handle)}/suspend`);
  await api(s, 'POST', `sessions/${encodeURIComponent(suspended.sessions[0]!.handle)}/close`);
  await api(s, 'POST', 'users/ada/close');
  assert.ok(issuedIds.size >= 6);
  await assertNoIdLeaks();
  t.diagnostic(`${checkedReplies} admin responses checked against ${issuedIds.size} session IDs`);
});

// ---------------------------------------------------------------------------------------------

test('a malformed percent-escape in an admin API path is a 400, not a 500', async () => {
  const t = await adminServer();
  for (const path of ['api/users/%E0%A4%A/sessions', 'api/users/%/close', 'api/sessions/%zz/close']) {
    const reply = await admin(t, path, { method: path.endsWith('close') ? 'POST' : 'GET' });
    assert.equal(reply.status, 400, `${path}: ${reply.status} ${reply.text}`);
  }
  assert.deepEqual(t.logs.filter((l) => l.event === 'admin-error'), []);
  await assertNoIdLeaks();
});

test('a response in flight when the admin closes its session does not renew the dead cookie', async () => {
  const t = await adminServer({ workers: { threads: 1 } });
  const [c] = await sessionsOn(t, 1);
  const id = idOf(c!);
  await listLive(t);
  const slow = c!.get('/sleep?ms=400');
  await waitFor(async () => ((await t.server.sessions.info(id))?.inFlight ?? 0) > 0, 2000, 'the request in flight');
  await api(t, 'POST', `sessions/${encodeURIComponent(hashId(id))}/close`);
  const reply = await slow;
  assert.equal((await t.server.sessions.info(id)), undefined, 'the session is closed');
  const renewed = reply.setCookies.filter((line) => line.startsWith(`RSID=${id};`) && !/max-age=0/i.test(line));
  assert.deepEqual(renewed, [], `the response renewed the closed session's cookie: ${reply.setCookies.join(' | ')}`);
  await assertNoIdLeaks();
});
