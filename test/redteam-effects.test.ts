/**
 * Red team: session effects that race each other through a real server (the effects fixture).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Client, fixtureHooks, serverFactory } from './helpers.ts';

const serverWith = serverFactory({ workers: { threads: 2 }, hooks: fixtureHooks('effects') });

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

test('red team: "sign out everywhere else" while another sign-in of that user is under way closes that sign-in too', { timeout: 30_000 }, async () => {
  const t = await serverWith();
  const here = new Client(t.url);
  await here.get('/login?user=erin');
  const attacker = new Client(t.url);
  await attacker.get('/inc');
  // The attacker's sign-in (old password) names the user, then takes a while (a slow hash).
  const signingIn = attacker.get('/login?user=erin&ms=600');
  await sleep(200);
  // The owner changes the password and signs out everywhere else meanwhile.
  assert.equal((await here.get('/everywhere')).status, 200);
  const reply = await signingIn;
  await sleep(200);
  const left = await t.server.sessions.sessionsOfUser('erin');
  assert.deepEqual(left.map((s) => s.id), [here.cookie], 'only the session that signed the others out stays signed in');
  assert.ok(reply.setCookies.some((line) => /^RSID=;.*Max-Age=0/i.test(line)), 'the late sign-in answers with the cookie expired');
});

test('red team: sessions.maxPerUser 1 and two sign-ins of one user at once (20 rounds): exactly one session stays signed in', { timeout: 60_000 }, async () => {
  const t = await serverWith({ sessions: { maxPerUser: 1 } });
  for (let round = 0; round < 20; round++) {
    const user = `pair-${round}`;
    const [a, b] = [new Client(t.url), new Client(t.url)];
    await a.get('/inc');
    await b.get('/inc');
    await Promise.all([a.get(`/login?user=${user}`), b.get(`/login?user=${user}`)]);
    await sleep(100);
    assert.equal((await t.server.sessions.sessionsOfUser(user)).length, 1, `round ${round}: sessions of the user left`);
  }
});
