/**
 * E2 and E3 (RELIABILITY.md) through the real server, the CLI as `npm start` runs it, for any
 * durable store: sessions suspended (logged) just before `kill -9` resume after a restart, and
 * SIGTERM with 20 live contexts suspends all 20, which all resume after a restart.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { Client, FIXTURE_HOOKS, ROOT, childLogs, describeChild, fixtureState, skipOrFailOnCi, waitFor, waitForStart, writeTempConfig, type Child } from '../helpers.ts';
import { cleanup, cliExit, startCliWithConfigFile as startCli } from './server-helpers.ts';

/** Generous: at load 20 on 2 cores a cold start through tsx has taken over 30 s. */
const STARTUP_MS = 60_000;
const CLI_TEST = { timeout: 180_000 };

// Kills any server a failed test left running.
after(cleanup);

const started = (child: Child) => waitForStart(child, STARTUP_MS);
const exited = (child: Child) => cliExit(child, 20_000);

function cliConfig(store: Record<string, unknown>, sessions: Record<string, unknown>) {
  return {
    host: '127.0.0.1',
    port: 0,
    publicDir: join(ROOT, 'test/fixtures/public'),
    workers: { threads: 2 },
    hooks: { ...FIXTURE_HOOKS },
    sessions,
    store,
    log: { level: 'info' },
  };
}

/** `count` clients, client i having made i+1 /inc requests; returns them with their session IDs. */
async function clientsWithCounts(url: string, count: number): Promise<Array<{ client: Client; id: string; n: number }>> {
  const clients = [];
  for (let i = 0; i < count; i++) {
    const client = new Client(url);
    let state;
    for (let k = 0; k <= i; k++) state = await fixtureState(client, '/inc');
    assert.equal(state!.n, i + 1);
    assert.equal(state!.id, client.cookie);
    clients.push({ client, id: state!.id, n: i + 1 });
  }
  assert.equal(new Set(clients.map((c) => c.id)).size, count, 'every client has its own session');
  return clients;
}

/** The same browsers, talking to the restarted server: each must find its session and memento. */
async function assertResumed(url: string, clients: Array<{ id: string; n: number }>, reason: string): Promise<void> {
  for (const { id, n } of clients) {
    const client = new Client(url);
    client.cookie = id;
    const state = await fixtureState(client);
    assert.equal(state.id, id, 'same session ID after the restart');
    assert.equal(state.resumed, true, `session ${id} resumed`);
    assert.deepEqual(
      { n: (state.saved as { n?: unknown })?.n, reason: (state.saved as { reason?: unknown })?.reason },
      { n, reason },
      `session ${id} resumed with its memento`,
    );
    await client.close();
  }
}

/**
 * The CLI's E2 and E3 tests on the store `store()` describes (a fresh one per test: a folder, a
 * table, a key prefix). With `unavailable` set (the store's server does not answer) they skip,
 * or fail on CI.
 */
export function cliCrashTests(label: string, store: () => Record<string, unknown>, unavailable?: string): void {
  describe(`${label} store through the CLI`, () => {
    test(`E2: kill -9 right after sessions were suspended (logged): all resume after a restart`, CLI_TEST, async (t) => {
      if (unavailable) return skipOrFailOnCi(t, unavailable);
      const config = writeTempConfig(cliConfig(store(), { processTimeout: '1s' }));
      const first = startCli(config);
      const clients = await clientsWithCounts(await started(first), 5);
      // SIGKILL from the data handler, the moment the fifth 'suspended' line arrives: no
      // graceful anything after the acknowledgement.
      const suspendedCount = () => childLogs(first).filter((l) => l.event === 'suspended').length;
      let killed = false;
      const check = () => {
        if (!killed && suspendedCount() >= clients.length) {
          killed = first.process.kill('SIGKILL');
          first.process.stdout.off('data', check);
        }
      };
      first.process.stdout.on('data', check);
      check();
      await waitFor(async () => killed, 10_000, 'five "suspended" log lines').catch((error: Error) =>
        assert.fail(`${error.message}\n${describeChild(first)}`),
      );
      await exited(first);
      assert.equal(first.process.signalCode, 'SIGKILL', describeChild(first));
      assert.ok(childLogs(first).every((l) => l.event !== 'stopping'), 'no graceful shutdown happened');
      for (const c of clients) await c.client.close();

      const second = startCli(config);
      await assertResumed(await started(second), clients, 'idle');
      second.process.kill('SIGTERM');
      assert.equal(await exited(second), 0, describeChild(second));
    });

    test(`E3: SIGTERM with 20 live contexts: all 20 suspended, exit 0, all resume after a restart`, CLI_TEST, async (t) => {
      if (unavailable) return skipOrFailOnCi(t, unavailable);
      const config = writeTempConfig(cliConfig(store(), {}));
      const first = startCli(config);
      const clients = await clientsWithCounts(await started(first), 20);
      assert.equal(childLogs(first).filter((l) => l.event === 'suspended').length, 0, 'every context live before the signal');
      first.process.kill('SIGTERM');
      assert.equal(await exited(first), 0, describeChild(first));
      const suspended = childLogs(first).filter((l) => l.event === 'suspended');
      assert.equal(suspended.length, 20, describeChild(first));
      assert.ok(suspended.every((l) => l.reason === 'shutdown'));
      assert.equal(new Set(suspended.map((l) => l.session)).size, 20, 'twenty distinct sessions suspended');
      for (const c of clients) await c.client.close();

      const second = startCli(config);
      await assertResumed(await started(second), clients, 'shutdown');
      second.process.kill('SIGTERM');
      assert.equal(await exited(second), 0, describeChild(second));
    });
  });
}
