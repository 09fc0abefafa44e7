/**
 * Red team: hooks that misbehave on their worker thread, through a real server.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { Client, FIXTURE_HOOKS, ROOT, startTestServer, type TestServer } from './helpers.ts';

const HOOKS = { ...FIXTURE_HOOKS, onConnection: join(ROOT, 'test/fixtures/redteam/onConnection.ts') };

const servers: TestServer[] = [];
after(() => Promise.all(servers.map((t) => t.close())));

async function serverWith(overrides: Parameters<typeof startTestServer>[0] = {}): Promise<TestServer> {
  const t = await startTestServer({ workers: { threads: 1 }, ...overrides, hooks: { ...HOOKS, ...overrides.hooks } });
  servers.push(t);
  return t;
}

async function timed<T>(work: Promise<T>): Promise<{ value: T; ms: number }> {
  const start = performance.now();
  const value = await work;
  return { value, ms: performance.now() - start };
}

test('red team F3: a hook that never yields its thread is answered near connectionTimeout, and other sessions on that thread go on', { timeout: 30_000 }, async () => {
  const t = await serverWith({ hooks: { connectionTimeout: '1s' } });
  const bystander = new Client(t.url);
  await bystander.get('/inc');
  const spinner = new Client(t.url);
  const spinning = timed(spinner.get('/spin?ms=8000'));
  await new Promise((resolve) => setTimeout(resolve, 100));
  const other = await timed(bystander.get('/inc'));
  const spun = await spinning;
  assert.ok(spun.ms < 4000, `the spinning request was answered after ${Math.round(spun.ms)} ms (connectionTimeout 1 s)`);
  assert.ok(other.ms < 5000, `a bystander on the same thread waited ${Math.round(other.ms)} ms`);
});

test('red team: a ctx kept from an answered request refuses every effect when used from another session, and that session is untouched', { timeout: 30_000 }, async () => {
  const t = await serverWith();
  const owner = new Client(t.url);
  await owner.get('/inc');
  const ownerId = owner.cookie;
  await owner.get('/keep');
  const other = new Client(t.url);
  const used = (await other.get('/use-kept')).json<{ attempts: Record<string, string> }>();
  assert.deepEqual(used.attempts, {
    close: 'RESIDENT_ERR_EFFECT_REFUSED',
    regenerate: 'RESIDENT_ERR_EFFECT_REFUSED',
    userId: 'RESIDENT_ERR_EFFECT_REFUSED',
    closeOthers: 'RESIDENT_ERR_EFFECT_REFUSED',
  });
  const state = (await owner.get('/inc')).json<{ id: string; n: number }>();
  assert.equal(state.id, ownerId);
  assert.equal(state.n, 2);
  assert.equal(owner.cookie, ownerId);
});
