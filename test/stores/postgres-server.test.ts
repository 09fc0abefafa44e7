/**
 * A real Resident on the PostgreSQL store (issue 13): sessions suspended into the table come
 * back after a restart, /readyz follows the store, and a server that cannot reach the store
 * refuses to start, naming it without its password. Each test has a table of its own.
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { decodeMemento } from '../../src/contexts/memento.ts';
import { ResidentError } from '../../src/errors.ts';
import { tableNames } from '../../src/stores/postgres-schema.ts';
import { Client, describeChild, runMain, skipOrFailOnCi, startTestServer, waitFor, writeTempConfig, type TestServer } from '../helpers.ts';
import { POSTGRES_URL, postgresUnavailable, tempTable, withClient } from './postgres-helpers.ts';
import { STORE_HOOKS, cleanup, cliConfig, cliExit, cliLogs, cliReady, clientWith, state } from './server-helpers.ts';

after(cleanup);

const TEST = { timeout: 60_000 };
/** A URL with a password (trust auth ignores it), to show it never reaches a log or an error. */
const SECRET = 'pg-s3cret-Do-Not-Print';
const withPassword = (url: string) => {
  const parsed = new URL(url);
  parsed.password = SECRET;
  return parsed.toString();
};

function startOnTable(table: string, url = POSTGRES_URL): Promise<TestServer> {
  return startTestServer({ workers: { threads: 1 }, hooks: STORE_HOOKS, store: { kind: 'postgres', url, table } });
}

/** The row of `id` as PostgreSQL holds it, read behind the server's back. */
async function row(table: string, id: string): Promise<{ memento: string; user_id: string | null; client_ip: string } | undefined> {
  const { rows } = await withClient((client) => client.query(`SELECT memento, user_id, client_ip FROM ${tableNames(table).sessions} WHERE id = $1`, [id]));
  return rows[0];
}

const unavailable = await postgresUnavailable();

if (unavailable) {
  test('postgres store through a real server', (t) => skipOrFailOnCi(t, unavailable));
} else {
  test('postgres store: a session suspended at shutdown is in the table, and resumes after a restart with its ID, memento and user', TEST, async () => {
    const table = tempTable();
    let t = await startOnTable(table, withPassword(POSTGRES_URL));
    const client = new Client(t.url);
    await state(client, '/inc');
    await state(client, '/inc');
    await state(client, '/put?key=name&value=kept-in-postgres');
    await state(client, '/user?id=alice');
    const id = client.cookie!;
    assert.deepEqual(await t.server.shutdown(), { suspended: 1, lost: 0 });
    assert.ok(!t.rawLogs().includes(SECRET), 'the password is in no log line');

    const stored = await row(table, id);
    assert.ok(stored, 'the record is in the table once shutdown resolved');
    assert.deepEqual(decodeMemento(stored.memento), { data: { n: 2, name: 'kept-in-postgres' }, mode: null });
    assert.equal(stored.user_id, 'alice');
    assert.equal(stored.client_ip, '127.0.0.1');

    t = await startOnTable(table);
    try {
      const resumed = await state(clientWith(t.url, id));
      assert.equal(resumed.id, id);
      assert.equal(resumed.resumed, true);
      assert.equal(resumed.userId, 'alice');
      assert.deepEqual(resumed.data, { n: 2, name: 'kept-in-postgres' });
      assert.equal((await state(clientWith(t.url, id), '/inc')).data.n, 3, 'the counter continues');
      assert.equal(t.server.sessions.stats.adopted, 1);
      assert.equal(t.server.sessions.stats.created, 0);
    } finally {
      await t.close();
    }
  });

  test('postgres store: a ctx.userId with U+0000 (which PostgreSQL text cannot hold) is refused by the setter, so the session is still saved', TEST, async () => {
    const table = tempTable();
    const t = await startOnTable(table);
    const client = new Client(t.url);
    try {
      await state(client, '/put?key=name&value=nul-user');
      const refused = await client.get('/user?id=a%00b');
      assert.equal(refused.status, 500, 'the hook threw the setter’s TypeError');
      assert.deepEqual(await t.server.shutdown(), { suspended: 1, lost: 0 }, 'the suspend is not lost to a user ID the store cannot keep');
    } finally {
      await t.close();
    }
    const stored = await row(table, client.cookie!);
    assert.ok(stored);
    assert.equal(stored.user_id, null);
    assert.deepEqual(decodeMemento(stored.memento), { data: { name: 'nul-user' }, mode: null });
  });

  test('postgres store: /readyz names the store, answers 503 while its table is gone and 200 once it is back', TEST, async () => {
    const table = tempTable();
    const t = await startOnTable(table);
    const probe = new Client(t.url);
    const names = tableNames(table);
    try {
      const ready = await probe.get('/readyz');
      assert.equal(ready.status, 200, ready.text);
      assert.deepEqual(ready.json().store, { kind: 'postgres', status: 'ok' });
      // Taken away behind the server's back: the store answers, but cannot serve the table.
      await withClient((c) => c.query(`ALTER TABLE ${names.sessions} RENAME TO ${table}_away`));
      const down = await waitFor(async () => {
        const reply = await probe.get('/readyz');
        return reply.status === 503 ? reply : undefined;
      }, 10_000, '/readyz 503');
      assert.ok(down);
      assert.deepEqual(down.json().store, { kind: 'postgres', status: 'unreachable' });
      await withClient((c) => c.query(`ALTER TABLE "${table}_away" RENAME TO ${table}`));
      await waitFor(async () => (await probe.get('/readyz')).status === 200, 10_000, '/readyz 200 again');
      // Served again, with no restart: a new session is created and written.
      const client = new Client(t.url);
      await state(client, '/put?key=after&value=1');
      await t.close();
      assert.ok(await row(table, client.cookie!), 'suspended into the table after the outage');
    } finally {
      await t.close();
    }
  });

  test('postgres store: startup against a port where nothing listens refuses with RESIDENT_ERR_STORE_OPEN, naming the store without the password', TEST, async () => {
    const dead = `postgres://resident:${SECRET}@127.0.0.1:1/test`;
    await assert.rejects(startOnTable('resident_sessions', dead), (error: ResidentError) => {
      assert.equal(error.code, 'RESIDENT_ERR_STORE_OPEN');
      assert.match(error.message, /PostgreSQL store at postgres:\/\/resident:\*\*\*@127\.0\.0\.1:1\/test/);
      assert.ok(!error.message.includes(SECRET), error.message);
      return true;
    });
  });

  test('the CLI with RESIDENT_STORE_URL pointing nowhere: exit 2, the store named on stderr, the password nowhere', TEST, async () => {
    const config = cliConfig(null, { store: { kind: 'postgres', table: tempTable() } });
    const child = runMain(['--config', writeTempConfig(config)], { RESIDENT_STORE_URL: `postgres://resident:${SECRET}@127.0.0.1:1/test` });
    try {
      assert.equal(await cliExit(child, 30_000), 2, describeChild(child));
      assert.match(child.stderr(), /Cannot open the PostgreSQL store at postgres:\/\/resident:\*\*\*@127\.0\.0\.1:1\/test/);
      assert.ok(!`${child.stdout()}${child.stderr()}`.includes(SECRET), 'no password in the output');
      assert.ok(!cliLogs(child).some((line) => line.event === 'started'), 'nothing listened');
    } finally {
      child.process.kill('SIGKILL');
    }
  });

  test('the CLI with RESIDENT_STORE_URL holding a password: the banner names the postgres store without it; SIGTERM suspends into the table', TEST, async () => {
    const table = tempTable();
    const config = cliConfig(null, { store: { kind: 'postgres', table } });
    const child = runMain(['--config', writeTempConfig(config)], { RESIDENT_STORE_URL: withPassword(POSTGRES_URL) });
    try {
      const url = await cliReady(child);
      const started = cliLogs(child).find((line) => line.event === 'started')!;
      assert.equal(started.store, 'postgres');
      assert.equal(started.storeUrl, withPassword(POSTGRES_URL).replace(SECRET, '***'));
      assert.ok(started.msg.includes(`store postgres at ${started.storeUrl as string}`), started.msg);
      const client = new Client(url);
      await state(client, '/put?key=via&value=cli');
      child.process.kill('SIGTERM');
      assert.equal(await cliExit(child, 30_000), 0, describeChild(child));
      assert.ok(!`${child.stdout()}${child.stderr()}`.includes(SECRET), 'no password in the output');
      const stored = await row(table, client.cookie!);
      assert.ok(stored, 'suspended into the table at SIGTERM');
      assert.deepEqual(decodeMemento(stored.memento), { data: { via: 'cli' }, mode: null });
    } finally {
      child.process.kill('SIGKILL');
    }
  });
}
