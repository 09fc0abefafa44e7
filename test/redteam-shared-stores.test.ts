/**
 * Red team of issue 13's shared stores (Redis, PostgreSQL), through real servers on the real
 * services: what a hostile client or a hostile environment can do to the guarantees the README
 * states under "The Redis keys" and "PostgreSQL". Each test asserts the correct behaviour.
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { ResidentError } from '../src/errors.ts';
import { describeChild, runMain, skipOrFailOnCi, startTestServer, writeTempConfig } from './helpers.ts';
import { POSTGRES_URL, postgresUnavailable, tempTable } from './stores/postgres-helpers.ts';
import { STORE_HOOKS, cleanup, cliConfig, cliExit, cliLogs, cliReady } from './stores/server-helpers.ts';

after(cleanup);

const TEST = { timeout: 60_000 };
const SECRET = 'redteam-QueryPass-9f3b';
const pgUnavailable = await postgresUnavailable();

/** The same server, with the password where libpq and node-postgres also take it: the query string. */
const withQueryPassword = (url: string) => {
  const parsed = new URL(url);
  parsed.searchParams.set('password', SECRET);
  return parsed.toString();
};

test('postgres: a password given as ?password= in the store URL never reaches an error (startup failure)', TEST, async (t) => {
  if (pgUnavailable) return skipOrFailOnCi(t, pgUnavailable);
  const dead = withQueryPassword('postgres://resident@127.0.0.1:1/test');
  await assert.rejects(
    startTestServer({ workers: { threads: 1 }, hooks: STORE_HOOKS, store: { kind: 'postgres', url: dead, table: tempTable() } }),
    (error: ResidentError) => {
      assert.equal(error.code, 'RESIDENT_ERR_STORE_OPEN');
      assert.ok(!error.message.includes(SECRET), `the password is in the error: ${error.message}`);
      return true;
    },
  );
});

test('postgres: a password given as ?password= in RESIDENT_STORE_URL never reaches the banner or the logs', TEST, async (t) => {
  if (pgUnavailable) return skipOrFailOnCi(t, pgUnavailable);
  const config = cliConfig(null, { store: { kind: 'postgres', table: tempTable() } });
  const child = runMain(['--config', writeTempConfig(config)], { RESIDENT_STORE_URL: withQueryPassword(POSTGRES_URL) });
  try {
    await cliReady(child);
    const started = cliLogs(child).find((line) => line.event === 'started')!;
    assert.equal(started.store, 'postgres');
    child.process.kill('SIGTERM');
    assert.equal(await cliExit(child, 30_000), 0, describeChild(child));
    assert.ok(!`${child.stdout()}${child.stderr()}`.includes(SECRET), `the password is in the output: ${String(started.storeUrl)}`);
  } finally {
    child.process.kill('SIGKILL');
  }
});
