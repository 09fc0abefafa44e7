/**
 * Issue 9, findings 3 and 9, through a real server: session effects belong to the request that
 * asked for them (a hook still running after its 504 cannot log a user in, regenerate or close
 * through another request's response), thrown values that cannot be printed are contained,
 * and user JSON with a `__proto__` key survives a suspension. Rows H5, F6, A5.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Client, fixtureHooks, serverFactory, waitFor, type Reply } from './helpers.ts';

const serverWith = serverFactory({ workers: { threads: 1 }, hooks: fixtureHooks('effects') });

/** The session IDs our cookie is set to by this reply (empty values are expiries). */
function issued(reply: Reply): string[] {
  return reply.setCookies.filter((line) => line.startsWith('RSID=')).map((line) => line.slice(5, line.indexOf(';')));
}

const ERROR = 50;

test('finding 3: a hook that logs in and regenerates after its 504 changes nothing; the next request keeps the old ID and no user', { timeout: 30_000 }, async () => {
  const t = await serverWith({ hooks: { connectionTimeout: '1s' } });
  const victim = new Client(t.url);
  await victim.get('/inc');
  const id = victim.cookie!;

  const timedOut = await victim.get('/late-login?ms=1500');
  assert.equal(timedOut.status, 504);
  assert.deepEqual(issued(timedOut).filter((value) => value !== id), [], 'the 504 hands out no other ID');

  // The late hook has asked, and been refused, by the time this is logged.
  await waitFor(async () => t.logs.find((line) => line.event === 'worker' && /after its request was answered/.test(line.msg)), 5000, 'the refusal logged');
  const next = await new Client(t.url).get('/state', { headers: { cookie: `RSID=${id}` } });
  assert.equal(next.status, 200);
  assert.deepEqual(issued(next), [id], 'the next request renews the same ID, never a new one');
  const state = next.json<{ id: string; userId: string | null; n: number; refusals: string[] }>();
  assert.equal(state.id, id);
  assert.equal(state.userId, null, 'the late login did not happen');
  assert.equal(state.n, 1, 'same context');
  assert.deepEqual(state.refusals, ['RESIDENT_ERR_EFFECT_REFUSED'], 'the late hook was told, with a stable code');
  assert.equal((await t.server.sessions.sessionsOfUser('late-user')).length, 0, 'no session of the late user');
});

test('finding 3: a close asked after the 504 is refused; the session goes on', { timeout: 30_000 }, async () => {
  const t = await serverWith({ hooks: { connectionTimeout: '1s' } });
  const client = new Client(t.url);
  await client.get('/inc');
  const id = client.cookie!;
  assert.equal((await client.get('/late-close?ms=1500')).status, 504);
  await waitFor(async () => (await new Client(t.url).get('/state', { headers: { cookie: `RSID=${id}` } })).json().refusals.length > 0, 5000, 'the late close refused');
  const reply = await client.get('/inc');
  assert.deepEqual([reply.status, reply.json().id, reply.json().n], [200, id, 2]);
  assert.deepEqual(issued(reply), [id]);
});

test('finding 3/9: regenerate then throw a value String() cannot print: a 500 (not 502) carrying the new ID; the old ID is dead, the thread alive', { timeout: 30_000 }, async () => {
  const t = await serverWith();
  const client = new Client(t.url);
  await client.get('/inc');
  const old = client.cookie!;
  const failed = await client.get('/regenerate-then-throw');
  assert.equal(failed.status, 500);
  assert.doesNotMatch(failed.text, /\n\s+at |Object|null/);
  const [fresh] = issued(failed);
  assert.ok(fresh && fresh !== old, 'the regenerate belongs to this request and goes out with its answer');
  assert.equal(issued(failed).length, 1);

  // Whoever still holds the old ID gets a new, empty session: never the new ID (fixation).
  const stale = await new Client(t.url).get('/state', { headers: { cookie: `RSID=${old}` } });
  assert.equal(stale.status, 200);
  assert.ok(!issued(stale).includes(fresh) && stale.json().id !== fresh && stale.json().id !== old);
  // The holder of the new ID continues the same context on a thread that never died.
  const next = await client.get('/inc');
  assert.deepEqual([next.json().id, next.json().n], [fresh, 2]);
  assert.ok(!t.logs.some((line) => line.event === 'worker-lost'), 'no worker lost');
  const hookError = t.logs.find((line) => line.event === 'hook-error' && line.hook === 'onConnection');
  assert.ok(hookError, 'logged as a hook error');
});

test('finding 9: a hook throwing a plain string after setting userId answers 500 and the user is set by that request only', async () => {
  const t = await serverWith();
  const client = new Client(t.url);
  await client.get('/inc');
  const reply = await client.get('/login-then-throw');
  assert.equal(reply.status, 500);
  assert.equal((await t.server.sessions.sessionsOfUser('thrower')).length, 1);
  assert.equal((await client.get('/state')).json().userId, 'thrower');
});

test('finding 9: an unhandled rejection whose reason cannot be printed is logged and leaves the thread and its contexts alive', { timeout: 30_000 }, async () => {
  const t = await serverWith();
  const client = new Client(t.url);
  await client.get('/inc');
  assert.equal((await client.get('/stray-null-rejection')).status, 200);
  await waitFor(async () => t.logs.find((line) => line.event === 'worker' && line.msg === 'unhandled rejection in a hook'), 5000, 'the rejection logged');
  const after = await client.get('/inc');
  assert.equal(after.json().n, 3, 'the context survived: its thread did not die');
  assert.ok(!t.logs.some((line) => line.event === 'worker-lost'));
  assert.ok(!t.logs.some((line) => line.level >= ERROR && line.event !== 'worker'), 'nothing else went wrong');
});

test('finding 9: user JSON with a __proto__ key is saved and restored as data, and pollutes nothing', { timeout: 30_000 }, async () => {
  const t = await serverWith({ sessions: { suspendEveryRequest: true } });
  const client = new Client(t.url);
  assert.equal((await client.get('/user-json')).status, 200);
  await waitFor(async () => t.logs.find((line) => line.event === 'suspended'), 5000, 'the suspend');
  assert.ok(!t.logs.some((line) => line.event === 'hook-error'), `no failed suspend: ${JSON.stringify(t.logs.filter((l) => l.event === 'hook-error'))}`);
  const profile = (await client.get('/profile')).json();
  assert.deepEqual(profile, {
    resumed: true,
    keys: ['__proto__', 'name', 'nested'],
    ownProto: { admin: true },
    protoIsObject: true,
    nested: [1, 2],
    polluted: false,
  });
});

test('red team H3: ctx.close() then throwing a revoked Proxy still closes (500, cookie expired, old ID dead), no worker lost', { timeout: 30_000 }, async () => {
  const t = await serverWith();
  const client = new Client(t.url);
  await client.get('/login?user=alice');
  const id = client.cookie!;
  const reply = await client.get('/close-then-throw-revoked');
  assert.equal(reply.status, 500);
  assert.ok(reply.setCookies.some((line) => /^RSID=;.*Max-Age=0/i.test(line)), 'the cookie expired');
  const replay = await new Client(t.url).get('/state', { headers: { cookie: `RSID=${id}` } });
  assert.notEqual(replay.json().id, id);
  assert.equal((await t.server.sessions.sessionsOfUser('alice')).length, 0);
  assert.ok(!t.logs.some((line) => line.event === 'worker-lost'));
});

test('red team H4: a cycle through an object with a __proto__ key fails the suspend at once, with the reason logged, and the context stays live', { timeout: 30_000 }, async () => {
  const t = await serverWith();
  const client = new Client(t.url);
  await client.get('/inc');
  await client.get('/cycle-proto');
  assert.equal(await t.server.sessions.suspendSession(client.cookie!), 'failed');
  const line = t.logs.find((entry) => entry.event === 'hook-error' && entry.code === 'RESIDENT_ERR_MEMENTO_NOT_CLONEABLE');
  assert.match(String((line?.err as { message?: string } | undefined)?.message), /cycle/);
  assert.equal((await client.get('/inc')).json().n, 2, 'still the same live context');
});

test('red team H5: closeOtherSessions() with close() or a sign-out in the same request still signs the user out everywhere', { timeout: 60_000 }, async () => {
  const t = await serverWith();
  for (const variant of ['close=1', 'out=1']) {
    const user = `user-${variant}`;
    const others = [new Client(t.url), new Client(t.url)];
    for (const other of others) await other.get(`/login?user=${user}`);
    const here = new Client(t.url);
    await here.get(`/login?user=${user}`);
    assert.equal((await here.get(`/everywhere?${variant}`)).status, 200);
    await waitFor(async () => (await t.server.sessions.sessionsOfUser(user)).length === 0, 5000, `${variant}: every session of the user closed`);
    for (const other of others) assert.equal((await other.get('/state')).json().userId, null, `${variant}: the other session is signed out`);
  }
});

test('red team H7: closeUser while a sign-in of that user is under way closes that session too when its reply arrives', { timeout: 30_000 }, async () => {
  const t = await serverWith();
  const client = new Client(t.url);
  await client.get('/inc');
  const signingIn = client.get('/login?user=dave&ms=600');
  await new Promise((resolve) => setTimeout(resolve, 200));
  await t.server.sessions.closeUser('dave', { by: 'test' });
  const reply = await signingIn;
  assert.ok(reply.setCookies.some((line) => /^RSID=;.*Max-Age=0/i.test(line)), 'the sign-in answers with the cookie expired');
  assert.equal((await t.server.sessions.sessionsOfUser('dave')).length, 0, 'no session of dave survives the close-all');
});

test('red team H8: "sign out everywhere else" pressed in two sessions of one user at once leaves one signed in', { timeout: 60_000 }, async () => {
  const t = await serverWith();
  for (let trial = 0; trial < 10; trial++) {
    const user = `twice-${trial}`;
    const [a, b] = [new Client(t.url), new Client(t.url)];
    await a.get(`/login?user=${user}`);
    await b.get(`/login?user=${user}`);
    await Promise.all([a.get('/everywhere'), b.get('/everywhere')]);
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.equal((await t.server.sessions.sessionsOfUser(user)).length, 1, `trial ${trial}: exactly one session stays signed in`);
  }
});

test('a hook cannot change what it may only read: assigning ctx.id, isNew or userId by defineProperty throws, vars stay writable, the session goes on', { timeout: 30_000 }, async () => {
  const t = await serverWith();
  {
    const client = new Client(t.url);
    const first = (await client.get("/inc")).json() as { id: string; n: number };
    const tamperReply = await client.get("/tamper");
    assert.equal(tamperReply.status, 200, JSON.stringify(t.logs.slice(-3)));
    const tampered = tamperReply.json() as { id: string; userId: string | null; attempts: Record<string, string> };
    assert.deepEqual(tampered.attempts, { id: 'TypeError', isNew: 'TypeError', 'userId-define': 'TypeError', 'id-define': 'TypeError', 'new-field': 'TypeError', prototype: 'TypeError', vars: 'allowed' });
    assert.equal(tampered.id, first.id);
    assert.equal(tampered.userId, null);
    // The worker still finds the context under its ID, with the vars the tampering request set.
    const after = (await client.get("/inc")).json() as { id: string; n: number };
    assert.equal(after.id, first.id);
    assert.equal(after.n, 3);
    assert.equal(client.cookie, first.id);
  }
});
