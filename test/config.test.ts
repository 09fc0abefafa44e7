/**
 * config.json: defaults (the public contract), freezing, durations, and every kind of
 * invalid input. Invalid input must throw RESIDENT_ERR_INVALID_CONFIG with a message that names
 * the offending key; we match on the code and the key path, never on the whole message text.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { describe, test } from 'node:test';
import { loadConfigFile, resolveConfig, type ResidentConfig } from '../src/config.ts';
import { ResidentError } from '../src/errors.ts';
import { writeTempConfig } from './helpers.ts';

const BASE = join(tmpdir(), 'resident-config-base');

const escape = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/** True when `key` appears as a whole key path: "port" not inside "sessions.trustProxy", "sessions.maxContext" not as a prefix of "sessions.maxContexts". */
function namesKey(message: string, key: string): boolean {
  return new RegExp(`(?<![\\w.])${escape(key)}(?![\\w])`).test(message);
}

/** Asserts `fn` throws RESIDENT_ERR_INVALID_CONFIG whose message names every key in `keys`. */
function assertInvalid(fn: () => unknown, ...keys: string[]): ResidentError {
  let caught: unknown;
  try {
    fn();
  } catch (error) {
    caught = error;
  }
  assert.ok(caught !== undefined, `expected an invalid-config error naming ${keys.join(', ') || 'the file'}, but nothing was thrown`);
  assert.ok(caught instanceof ResidentError, `expected a ResidentError, got ${String((caught as Error)?.stack ?? caught)}`);
  assert.equal(caught.code, 'RESIDENT_ERR_INVALID_CONFIG');
  for (const key of keys) assert.ok(namesKey(caught.message, key), `message should name "${key}": ${caught.message}`);
  return caught;
}

const invalid = (input: unknown, ...keys: string[]) => assertInvalid(() => resolveConfig(input, BASE), ...keys);

describe('defaults (the public contract)', () => {
  const config = resolveConfig({}, BASE);

  test('top-level keys', () => {
    assert.equal(config.host, '0.0.0.0');
    assert.equal(config.port, 8080);
    assert.equal(config.publicDir, join(BASE, 'public'));
    assert.equal(config.baseDir, BASE);
  });

  test('sessions: 4D defaults (480 minutes each, 100 contexts)', () => {
    const s = config.sessions;
    assert.equal(s.enabled, true);
    assert.equal(s.cookieName, 'RSID');
    assert.equal(s.cookieTimeout, 480 * 60 * 1000);
    assert.equal(s.cookieTimeout, 28_800_000);
    assert.equal(s.processTimeout, 28_800_000);
    assert.equal(s.maxContexts, 100);
    assert.equal(s.maxQueuedRequests, 100);
    assert.deepEqual(s.bindIp, { ipv4: 32, ipv6: 128 });
    assert.deepEqual(s.trustProxy, []);
    assert.equal(s.secureCookie, false);
  });

  test('workers and hooks', () => {
    assert.equal(config.workers.threads, 2);
    assert.equal(config.workers.stallTimeout, 10_000);
    assert.equal(config.workers.maxHeapMb, 0, "0: Node's own heap limit");
    assert.equal(config.hooks.onConnection, join(BASE, 'src/hooks/onConnection.ts'));
    assert.equal(config.hooks.onSessionSuspend, join(BASE, 'src/hooks/onSessionSuspend.ts'));
  });

  test('null and undefined input mean "all defaults"', () => {
    for (const input of [undefined, null]) {
      const c = resolveConfig(input, BASE);
      assert.equal(c.port, 8080);
      assert.equal(c.sessions.maxContexts, 100);
      assert.equal(c.workers.threads, 2);
    }
  });

  test('a section given partly keeps the defaults of its other keys', () => {
    const c = resolveConfig({ sessions: { maxContexts: 7 }, workers: {} }, BASE);
    assert.equal(c.sessions.maxContexts, 7);
    assert.equal(c.sessions.cookieTimeout, 28_800_000);
    assert.deepEqual(c.sessions.bindIp, { ipv4: 32, ipv6: 128 });
    assert.equal(c.workers.threads, 2);
  });
});

describe('explicit values', () => {
  test('every public key is taken as given', () => {
    const c = resolveConfig(
      {
        host: '127.0.0.1',
        port: 3000,
        publicDir: 'www',
        sessions: {
          enabled: false,
          cookieName: '__Host-sid',
          cookieTimeout: '24h',
          processTimeout: '4h',
          maxContexts: 5,
          maxQueuedRequests: 3,
          bindIp: false,
          trustProxy: ['10.0.0.0/8', 'loopback'],
          secureCookie: true,
        },
        workers: { threads: 4 },
        hooks: { onConnection: 'hooks/on.ts', onSessionSuspend: '/abs/suspend.js' },
      },
      BASE,
    );
    assert.equal(c.host, '127.0.0.1');
    assert.equal(c.port, 3000);
    assert.equal(c.publicDir, join(BASE, 'www'));
    assert.equal(c.sessions.enabled, false);
    assert.equal(c.sessions.cookieName, '__Host-sid');
    assert.equal(c.sessions.cookieTimeout, 24 * 3_600_000);
    assert.equal(c.sessions.processTimeout, 4 * 3_600_000);
    assert.equal(c.sessions.maxContexts, 5);
    assert.equal(c.sessions.maxQueuedRequests, 3);
    assert.equal(c.sessions.bindIp, false);
    assert.deepEqual([...c.sessions.trustProxy], ['10.0.0.0/8', 'loopback']);
    assert.equal(c.sessions.secureCookie, true);
    assert.equal(c.workers.threads, 4);
    assert.equal(c.hooks.onConnection, join(BASE, 'hooks/on.ts'));
    assert.equal(c.hooks.onSessionSuspend, '/abs/suspend.js');
  });

  test('trustProxy: true trusts the private ranges', () => {
    const list = [...resolveConfig({ sessions: { trustProxy: true } }, BASE).sessions.trustProxy];
    assert.ok(list.includes('loopback'), String(list));
    assert.ok(list.length > 0);
  });

  test('trustProxy: false means an empty list', () => {
    assert.deepEqual([...resolveConfig({ sessions: { trustProxy: false } }, BASE).sessions.trustProxy], []);
  });

  test('__Host- and __Secure- names are accepted with secureCookie', () => {
    assert.equal(resolveConfig({ sessions: { cookieName: '__Secure-x', secureCookie: true } }, BASE).sessions.cookieName, '__Secure-x');
    assert.equal(resolveConfig({ sessions: { cookieName: 'my_cookie.v2' } }, BASE).sessions.cookieName, 'my_cookie.v2');
  });
});

describe('durations', () => {
  const cases: Array<[string, number]> = [
    ['90s', 90_000],
    ['30m', 1_800_000],
    ['8h', 28_800_000],
    ['480m', 28_800_000],
    ['1d', 86_400_000],
    ['500ms', 500],
  ];
  for (const [text, millis] of cases) {
    test(`"${text}" is ${millis} ms`, () => {
      const c = resolveConfig({ sessions: { cookieTimeout: text, processTimeout: text }, hooks: { connectionTimeout: text } }, BASE);
      assert.equal(c.sessions.cookieTimeout, millis);
      assert.equal(c.sessions.processTimeout, millis);
      assert.equal(c.hooks.connectionTimeout, millis);
    });
  }

  test('the number 0 ("no timeout") is allowed and survives (not replaced by the default)', () => {
    const c = resolveConfig({ sessions: { cookieTimeout: 0, processTimeout: 0 } }, BASE);
    assert.equal(c.sessions.cookieTimeout, 0);
    assert.equal(c.sessions.processTimeout, 0);
  });

  test('port 0 (any free port) survives', () => {
    assert.equal(resolveConfig({ port: 0 }, BASE).port, 0);
  });

  for (const key of ['cookieTimeout', 'processTimeout'] as const) {
    for (const value of ['banana', 5, '-5m', '', 'x'.repeat(200), true, [], '30 parsecs']) {
      test(`sessions.${key} = ${JSON.stringify(value).slice(0, 30)} is refused, naming the key`, () => {
        invalid({ sessions: { [key]: value } }, `sessions.${key}`);
      });
    }
  }

  test('null is a wrong type for a duration, not "use the default"', () => {
    // Only undefined means "not given" (config.ts's own rule); `"processTimeout": null` must
    // not silently become 480m.
    invalid({ sessions: { processTimeout: null } }, 'sessions.processTimeout');
    invalid({ sessions: { cookieTimeout: null } }, 'sessions.cookieTimeout');
  });

  test('hook and limit durations are validated too', () => {
    invalid({ hooks: { suspendTimeout: 'soon' } }, 'hooks.suspendTimeout');
    invalid({ limits: { shutdownTimeout: '-1s' } }, 'limits.shutdownTimeout');
  });
});

describe('frozen result', () => {
  const sections = ['sessions', 'workers', 'hooks', 'limits', 'log'] as const;

  function assertFrozen(c: ResidentConfig) {
    assert.ok(Object.isFrozen(c), 'the config object');
    for (const name of sections) assert.ok(Object.isFrozen(c[name]), `config.${name}`);
    assert.ok(Object.isFrozen(c.sessions.trustProxy), 'config.sessions.trustProxy');
    // ESM is strict mode: writes to frozen objects throw.
    assert.throws(() => ((c as { port: number }).port = 1), TypeError);
    assert.throws(() => ((c.sessions as { maxContexts: number }).maxContexts = 1), TypeError);
    assert.throws(() => ((c.workers as { threads: number }).threads = 9), TypeError);
    assert.throws(() => ((c.hooks as { onConnection: string }).onConnection = '/evil.ts'), TypeError);
    assert.throws(() => (c.sessions.trustProxy as string[]).push('0.0.0.0/0'), TypeError);
  }

  test('resolveConfig freezes the object and every section', () => {
    assertFrozen(resolveConfig({}, BASE));
    assertFrozen(resolveConfig({ sessions: { trustProxy: ['loopback'] }, workers: { threads: 1 } }, BASE));
  });

  test('loadConfigFile freezes too', () => {
    assertFrozen(loadConfigFile(writeTempConfig({ port: 1234 })));
  });
});

describe('invalid values name the key', () => {
  test('unknown top-level key (a typo)', () => {
    invalid({ prot: 8080 }, 'prot');
    invalid({ session: {} }, 'session');
  });

  test('unknown nested key (sessions.maxContext for maxContexts)', () => {
    invalid({ sessions: { maxContext: 5 } }, 'sessions.maxContext');
    invalid({ workers: { thread: 2 } }, 'workers.thread');
    invalid({ hooks: { onConnect: 'x.ts' } }, 'hooks.onConnect');
  });

  test('wrong types', () => {
    invalid({ port: 'abc' }, 'port');
    invalid({ port: '8080' }, 'port');
    invalid({ port: 80.5 }, 'port');
    invalid({ workers: { threads: 'x' } }, 'workers.threads');
    invalid({ sessions: { bindIp: 'yes' } }, 'sessions.bindIp');
    invalid({ sessions: { enabled: 1 } }, 'sessions.enabled');
    invalid({ sessions: { secureCookie: 'true' } }, 'sessions.secureCookie');
    invalid({ sessions: { maxContexts: '100' } }, 'sessions.maxContexts');
    invalid({ host: 127 }, 'host');
    invalid({ publicDir: 5 }, 'publicDir');
    invalid({ hooks: { onConnection: 42 } }, 'hooks.onConnection');
    invalid({ sessions: 5 }, 'sessions');
    invalid({ sessions: null }, 'sessions');
    invalid({ workers: [] }, 'workers');
  });

  test('a config that is not an object', () => {
    invalid([]);
    invalid('port: 80');
    invalid(42);
  });

  test('negative or out-of-range numbers', () => {
    invalid({ port: -1 }, 'port');
    invalid({ port: 65536 }, 'port');
    invalid({ sessions: { maxContexts: 0 } }, 'sessions.maxContexts');
    invalid({ sessions: { maxContexts: -5 } }, 'sessions.maxContexts');
    invalid({ sessions: { maxQueuedRequests: 0 } }, 'sessions.maxQueuedRequests');
    invalid({ workers: { threads: 0 } }, 'workers.threads');
    invalid({ workers: { stallTimeout: 'soon' } }, 'workers.stallTimeout');
    invalid({ workers: { stallTimeout: -1 } }, 'workers.stallTimeout');
    invalid({ workers: { maxHeapMb: 16 } }, 'workers.maxHeapMb');
    invalid({ workers: { maxHeapMb: 64.5 } }, 'workers.maxHeapMb');
    assert.equal(resolveConfig({ workers: { stallTimeout: 0 } }, BASE).workers.stallTimeout, 0, '0 turns the watchdog off');
    assert.equal(resolveConfig({ workers: { stallTimeout: '1500ms', maxHeapMb: 64 } }, BASE).workers.maxHeapMb, 64);
    invalid({ limits: { maxBodySize: -1 } }, 'limits.maxBodySize');
  });

  test('the shared stores: kind, url, table, callTimeout', () => {
    const redis = resolveConfig({ store: { kind: 'redis' } }, BASE).store;
    assert.deepEqual({ url: redis.url, prefix: redis.prefix, callTimeout: redis.callTimeout }, { url: 'redis://127.0.0.1:6379', prefix: 'resident:', callTimeout: 2000 });
    const postgres = resolveConfig({ store: { kind: 'postgres', table: 'app.sessions' } }, BASE).store;
    assert.deepEqual({ url: postgres.url, table: postgres.table }, { url: 'postgres://127.0.0.1:5432/postgres', table: 'app.sessions' });
    invalid({ store: { kind: 'redis', callTimeout: 0 } }, 'store.callTimeout');
    invalid({ store: { kind: 'postgres', table: 'sessions; DROP TABLE x' } }, 'store.table');
    invalid({ store: { kind: 'postgres', table: 'Sessions' } }, 'store.table');
    invalid({ store: { kind: 'redis', url: 'http://127.0.0.1:6379' } }, 'store.url');
    invalid({ store: { kind: 'mongo' } }, 'store.kind');
    // A URL with a password that is not valid never has its text echoed back.
    assert.throws(() => resolveConfig({ store: { kind: 'redis', url: 'ftp://user:s3cret-pass@host' } }, BASE), (error: Error) => !error.message.includes('s3cret-pass'));
  });

  test('empty strings where a value is needed', () => {
    invalid({ host: '' }, 'host');
    invalid({ hooks: { onConnection: '' } }, 'hooks.onConnection');
    invalid({ hooks: { onSessionSuspend: '' } }, 'hooks.onSessionSuspend');
  });

  // RELIABILITY A11: nothing in the cookie name may break out of the Set-Cookie header.
  for (const name of ['a;b', 'a=b', 'a b', 'RSID\r\nSet-Cookie: evil=1', 'a\nb', 'a\rb', 'a\tb', 'a,b', '', 'é']) {
    test(`sessions.cookieName ${JSON.stringify(name)} is refused`, () => {
      invalid({ sessions: { cookieName: name } }, 'sessions.cookieName');
    });
  }

  test('sessions.cookieName of the wrong type', () => {
    invalid({ sessions: { cookieName: 7 } }, 'sessions.cookieName');
  });

  test('a __Host- or __Secure- name without secureCookie', () => {
    const error = invalid({ sessions: { cookieName: '__Host-sid' } }, 'sessions.cookieName');
    assert.ok(namesKey(error.message, 'sessions.secureCookie'), error.message);
    invalid({ sessions: { cookieName: '__Host-sid', secureCookie: false } }, 'sessions.cookieName');
    invalid({ sessions: { cookieName: '__Secure-sid' } }, 'sessions.cookieName');
  });

  test('bad trustProxy entries', () => {
    invalid({ sessions: { trustProxy: ['not-an-ip'] } }, 'sessions.trustProxy');
    invalid({ sessions: { trustProxy: ['10.0.0.0/99'] } }, 'sessions.trustProxy');
    invalid({ sessions: { trustProxy: [5] } }, 'sessions.trustProxy');
    invalid({ sessions: { trustProxy: 'yes' } }, 'sessions.trustProxy');
    invalid({ sessions: { trustProxy: 1 } }, 'sessions.trustProxy');
  });

  // The bearer check reads `Bearer (\S+)` from a header Node decodes as latin1: a token with a
  // space or a character outside printable ASCII would pass here and then fail every request.
  for (const token of ['correct horse battery staple', 'tab\tseparated-0123456789', 'mot-de-passe-\u00e9t\u00e9-2024', 'emoji-token-\u{1F511}-0123456789', 'line\nbreak-0123456789', 'del\u007f-character-0123456789']) {
    test(`admin.token ${JSON.stringify(token)} is refused, naming the key and not echoing the value`, () => {
      const error = invalid({ admin: { token } }, 'admin.token');
      assert.match(error.message, /printable ASCII without spaces/);
      assert.ok(!error.message.includes(token), error.message);
    });
  }

  test('admin.token: 16 or more printable ASCII characters are accepted, punctuation included', () => {
    for (const token of ['x'.repeat(16), '!"#$%&\'()*+,-./0123456789:;<=>?@AZ[\\]^_`az{|}~']) {
      assert.equal(resolveConfig({ admin: { token } }, BASE).admin.token, token);
    }
  });

  test('log.level must be a known level', () => {
    invalid({ log: { level: 'loud' } }, 'log.level');
  });

  test('several bad keys are all named in one message', () => {
    invalid({ bogus: 1, port: 'x', sessions: { bindIp: 'yes', maxContext: 1 } }, 'bogus', 'port', 'sessions.bindIp', 'sessions.maxContext');
  });
});

describe('loadConfigFile', () => {
  test('paths are relative to the config file folder, not the working directory', () => {
    const path = writeTempConfig({
      publicDir: 'www',
      hooks: { onConnection: 'hooks/onConnection.ts', onSessionSuspend: '../shared/suspend.ts' },
    });
    const dir = dirname(path);
    assert.notEqual(dir, process.cwd());
    const c = loadConfigFile(path);
    assert.equal(c.baseDir, dir);
    assert.equal(c.publicDir, join(dir, 'www'));
    assert.equal(c.hooks.onConnection, join(dir, 'hooks/onConnection.ts'));
    assert.equal(c.hooks.onSessionSuspend, join(dir, '../shared/suspend.ts'));
  });

  test('default hook paths are relative to the config file folder too', () => {
    const path = writeTempConfig({});
    const c = loadConfigFile(path);
    assert.equal(c.hooks.onConnection, join(dirname(path), 'src/hooks/onConnection.ts'));
    assert.equal(c.hooks.onSessionSuspend, join(dirname(path), 'src/hooks/onSessionSuspend.ts'));
    assert.equal(c.publicDir, join(dirname(path), 'public'));
    assert.equal(c.port, 8080);
  });

  test('a relative config path is read from the working directory', () => {
    const path = writeTempConfig({ port: 4321 });
    const c = loadConfigFile(relative(process.cwd(), path));
    assert.equal(c.port, 4321);
    assert.equal(c.baseDir, dirname(path));
  });

  test('absolute hook paths are kept', () => {
    const c = loadConfigFile(writeTempConfig({ hooks: { onConnection: '/opt/app/on.ts' } }));
    assert.equal(c.hooks.onConnection, '/opt/app/on.ts');
  });

  test('overrides (PORT) replace the file value and are validated', () => {
    const path = writeTempConfig({ port: 9000 });
    assert.equal(loadConfigFile(path).port, 9000);
    assert.equal(loadConfigFile(path, { port: 1234 }).port, 1234);
    assertInvalid(() => loadConfigFile(path, { port: 'abc' }), 'port');
  });

  test('an admin.token override (RESIDENT_ADMIN_TOKEN) is validated like the file value', () => {
    const path = writeTempConfig({ admin: { token: 'file-token-0123456789' } });
    assert.equal(loadConfigFile(path, { 'admin.token': 'env-token-0123456789' }).admin.token, 'env-token-0123456789');
    const token = 'env token with spaces 0123456789';
    const error = assertInvalid(() => loadConfigFile(path, { 'admin.token': token }), 'admin.token');
    assert.ok(!error.message.includes(token), error.message);
  });

  test('invalid content names the key', () => {
    assertInvalid(() => loadConfigFile(writeTempConfig({ sessions: { maxContext: 1 } })), 'sessions.maxContext');
    assertInvalid(() => loadConfigFile(writeTempConfig({ port: -1 })), 'port');
  });

  test('a file that is not JSON', () => {
    const path = writeTempConfig('{ "port": 8080, }');
    const error = assertInvalid(() => loadConfigFile(path));
    assert.ok(error.message.includes(path), error.message);
    assert.match(error.message, /JSON/);
  });

  test('a file that holds a JSON array, null or a number', () => {
    for (const text of ['[]', '[{"port": 80}]', 'null', '42', '"config"']) {
      const path = writeTempConfig(text);
      const error = assertInvalid(() => loadConfigFile(path));
      assert.ok(error.message.includes(path), error.message);
      assert.match(error.message, /object/i, `${text}: ${error.message}`);
    }
  });

  test('a missing file', () => {
    const path = join(mkdtempSync(join(tmpdir(), 'resident-test-')), 'missing.json');
    const error = assertInvalid(() => loadConfigFile(path));
    assert.ok(error.message.includes(path), error.message);
  });

  test('a folder instead of a file', () => {
    const dir = mkdtempSync(join(tmpdir(), 'resident-test-'));
    const error = assertInvalid(() => loadConfigFile(dir));
    assert.ok(error.message.includes(dir), error.message);
  });

  test('an empty file', () => {
    const dir = mkdtempSync(join(tmpdir(), 'resident-test-'));
    const path = join(dir, 'config.json');
    writeFileSync(path, '');
    assertInvalid(() => loadConfigFile(path));
  });
});

describe('cluster (issue 14)', () => {
  const secret = 's'.repeat(32);
  test('off by default; its keys have defaults; the nodeId defaults to the host name and port', () => {
    const { cluster } = resolveConfig({}, BASE);
    assert.equal(cluster.enabled, false);
    assert.equal(cluster.leaseTimeout, 10_000);
    assert.equal(cluster.forwardTimeout, 30_000);
    assert.equal(cluster.port, 0);
    assert.equal(cluster.routingCookie, 'resident_node');
    assert.match(cluster.nodeId, /:8080$/);
    assert.ok(Object.isFrozen(cluster));
  });

  test('enabled needs a shared store and a secret of 32 characters; the environment variable overrides the file', () => {
    invalid({ cluster: { enabled: true, secret } }, 'cluster.enabled', 'store.kind');
    invalid({ store: { kind: 'redis' }, cluster: { enabled: true } }, 'cluster.secret');
    invalid({ store: { kind: 'postgres' }, cluster: { enabled: true, secret: 'short' } }, 'cluster.secret');
    const ok = resolveConfig({ store: { kind: 'redis' }, cluster: { enabled: true, secret, nodeId: 'n1' } }, BASE);
    assert.equal(ok.cluster.nodeId, 'n1');
    process.env.RESIDENT_CLUSTER_SECRET = 'e'.repeat(40);
    try {
      assert.equal(resolveConfig({ store: { kind: 'redis' }, cluster: { enabled: true } }, BASE).cluster.secret, 'e'.repeat(40));
    } finally {
      delete process.env.RESIDENT_CLUSTER_SECRET;
    }
  });

  test('bad cluster values name their key', () => {
    invalid({ cluster: { nodeId: 'a#b' } }, 'cluster.nodeId');
    invalid({ cluster: { advertise: 'ftp://x' } }, 'cluster.advertise');
    invalid({ cluster: { leaseTimeout: 'soon' } }, 'cluster.leaseTimeout');
    invalid({ cluster: { port: 70000 } }, 'cluster.port');
    invalid({ cluster: { routingCookie: 'a b' } }, 'cluster.routingCookie');
    invalid({ cluster: { bogus: 1 } }, 'cluster.bogus');
    invalid({ store: { kind: 'redis' }, cluster: { enabled: true, secret, leaseTimeout: '100ms' } }, 'cluster.leaseTimeout');
    invalid({ store: { kind: 'redis' }, cluster: { enabled: true, secret, routingCookie: 'RSID' } }, 'cluster.routingCookie');
  });
});
