/**
 * IP binding by network (RELIABILITY.md B8: `sessions.bindIp` true, false or prefix lengths),
 * and the proxy rows B3, B5 and B6 re-checked through it: the address a session is bound to
 * (server.sessions.directory), the ip-mismatch log line, and 400 versus the same session.
 * Real servers, real sockets: source addresses from 127/8 with undici's localAddress, and
 * addresses outside it (other IPv4 networks, IPv6) through X-Forwarded-For from a trusted
 * 127.0.0.1.
 * Already covered in test/edge.test.ts and not repeated here: B1 (exact binding, 400, owner
 * untouched; bindIp false), B2 (forwarding headers ignored without trustProxy), B3 and B4 with
 * exact binding, B5 with raw header lines, B6 with garbage lists, B10 (X-Forwarded-Proto).
 */
import assert from 'node:assert/strict';
import { isIP } from 'node:net';
import { after, describe, test } from 'node:test';
import { request, type Dispatcher } from 'undici';
import { resolveConfig, type ResidentConfigInput } from '../src/config.ts';
import { hashId } from '../src/log.ts';
import { Client, childLogs, describeChild, runMain, startTestServer, waitFor, writeTempConfig, FIXTURE_HOOKS, ROOT, type Child, type FixtureState, type TestServer } from './helpers.ts';
import { join } from 'node:path';

const TEST = { timeout: 30_000 };
const MISMATCH_BODY = 'This session cookie belongs to another network address. Reload the page to start a new session.';

const servers: TestServer[] = [];
const clients: Client[] = [];
const children: Child[] = [];

after(async () => {
  for (const child of children) if (child.process.exitCode === null && child.process.signalCode === null) child.process.kill('SIGKILL');
  await Promise.all(clients.map((c) => c.close()));
  for (const server of servers) await server.close();
});

async function serverWith(sessions: NonNullable<ResidentConfigInput['sessions']>): Promise<TestServer> {
  const server = await startTestServer({ workers: { threads: 1 }, sessions });
  servers.push(server);
  return server;
}

function client(url: string, localAddress?: string): Client {
  const c = new Client(url, { localAddress });
  clients.push(c);
  return c;
}

interface Answer {
  status: number;
  text: string;
  setCookies: string[];
  json<T>(): T;
}

/**
 * One request from 127.0.0.1 with header lines given as undici's flat array, so a header may
 * repeat (several X-Forwarded-For lines reach the server as separate lines).
 */
async function raw(t: TestServer, path: string, headers: string[]): Promise<Answer> {
  const response = await request(`${t.url}${path}`, { method: 'GET', headers } as Dispatcher.RequestOptions);
  const text = await response.body.text();
  const cookies = response.headers['set-cookie'];
  const setCookies = cookies === undefined ? [] : Array.isArray(cookies) ? cookies : [cookies];
  return { status: response.statusCode, text, setCookies, json: <T>() => JSON.parse(text) as T };
}

/** Through the trusted proxy (127.0.0.1): X-Forwarded-For is `xff`, the cookie `id` if given. */
function viaProxy(t: TestServer, path: string, xff: string | string[], id?: string): Promise<Answer> {
  const headers: string[] = [];
  for (const line of Array.isArray(xff) ? xff : [xff]) headers.push('x-forwarded-for', line);
  if (id) headers.push('cookie', `RSID=${id}`);
  return raw(t, path, headers);
}

function ok(answer: Answer): FixtureState {
  assert.equal(answer.status, 200, `expected 200, got ${answer.status}: ${answer.text}`);
  return answer.json<FixtureState>();
}

/** The 400 of a refused binding: the documented body, and the cookie expired for this sender only (B1). */
function refused(answer: Answer, what: string): void {
  assert.equal(answer.status, 400, `${what}: ${answer.status} ${answer.text}`);
  assert.equal(answer.text, MISMATCH_BODY, what);
  assert.equal(answer.setCookies.length, 1, `${what}: one Set-Cookie, expiring ours: ${JSON.stringify(answer.setCookies)}`);
  assert.match(answer.setCookies[0]!, /^RSID=;.*Max-Age=0/i, `${what}: the cookie expired for the foreign sender`);
}

const lastMismatch = (t: TestServer, id: string) => t.logs.filter((line) => line.event === 'ip-mismatch' && line.session === hashId(id)).at(-1);

describe('B8: prefix binding from real source addresses (127/8)', () => {
  test('{ ipv4: 24, ipv6: 64 }: a session created from 127.0.0.1 is served from 127.0.0.2, same session; 127.0.1.1 gets 400', TEST, async () => {
    const t = await serverWith({ bindIp: { ipv4: 24, ipv6: 64 } });
    const owner = client(t.url, '127.0.0.1');
    const first = await owner.get('/inc');
    const id = owner.cookie!;
    assert.equal(first.json().clientIp, '127.0.0.1');

    const moved = client(t.url, '127.0.0.2');
    moved.cookie = id;
    const reply = await moved.get('/inc');
    assert.equal(reply.status, 200, reply.text);
    const state = reply.json<FixtureState>();
    assert.deepEqual({ id: state.id, n: state.n, isNew: state.isNew }, { id, n: 2, isNew: false }, 'the same context, no new session');
    assert.equal(moved.cookie, id, 'the same ID, renewed');
    assert.equal(t.server.sessions.stats.created, 1);
    assert.equal(t.server.sessions.stats.ipMismatches, 0);
    // The binding stays with the address that created the session.
    assert.equal((await t.server.sessions.info(id))?.clientIp, '127.0.0.1');

    const elsewhere = client(t.url, '127.0.1.1');
    const other = await elsewhere.get('/inc', { headers: { cookie: `RSID=${id}` } });
    assert.equal(other.status, 400);
    assert.equal(other.text, MISMATCH_BODY);
    assert.equal((await owner.get('/inc')).json().n, 3, 'the owner carries on');
  });

  test('{ ipv4: 32, ipv6: 64 }: the same move is a 400, and the session is untouched for its owner', TEST, async () => {
    const t = await serverWith({ bindIp: { ipv4: 32, ipv6: 64 } });
    const owner = client(t.url, '127.0.0.1');
    await owner.get('/inc');
    const id = owner.cookie!;
    const seen = async () => {
      const entry = (await t.server.sessions.info(id))!;
      return { requests: entry.requests, idleMs: entry.idleMs };
    };
    // Idle long enough that an activity refresh (idle back to ~0) cannot pass for none.
    await new Promise((resolve) => setTimeout(resolve, 100));
    const before = await seen();

    const moved = client(t.url, '127.0.0.2');
    const reply = await moved.get('/inc', { headers: { cookie: `RSID=${id}` } });
    refused(reply, 'a /32 binding from another address');
    const after = await seen();
    assert.equal(after.requests, before.requests, 'no request counted');
    assert.ok(after.idleMs! >= before.idleMs!, `no activity: idle ${before.idleMs} ms before, ${after.idleMs} ms after`);
    const line = await waitFor(async () => lastMismatch(t, id), 2000, 'the ip-mismatch line');
    assert.deepEqual({ boundIp: line?.boundIp, clientIp: line?.clientIp }, { boundIp: '127.0.0.1', clientIp: '127.0.0.2' });

    const back = await owner.get('/inc');
    assert.deepEqual([back.status, back.json().id, back.json().n], [200, id, 2], 'the foreign /inc never ran');
  });
});

describe('B8: prefix binding for addresses outside 127/8 (X-Forwarded-For from a trusted 127.0.0.1)', () => {
  const prefixes = { bindIp: { ipv4: 24, ipv6: 64 }, trustProxy: ['127.0.0.1'] };

  test('IPv4 /24: 10.1.2.3 → 10.1.2.99 same session (also as ::ffff:10.1.2.50); 10.1.3.1 and any IPv6 get 400', TEST, async () => {
    const t = await serverWith(prefixes);
    const created = ok(await viaProxy(t, '/inc', '10.1.2.3'));
    const id = created.id;
    assert.equal(created.clientIp, '10.1.2.3');

    const sameNet = ok(await viaProxy(t, '/inc', '10.1.2.99', id));
    assert.deepEqual([sameNet.id, sameNet.n], [id, 2]);
    const mapped = ok(await viaProxy(t, '/inc', '::ffff:10.1.2.50', id));
    assert.deepEqual([mapped.id, mapped.n], [id, 3], 'an IPv4-mapped IPv6 address is its IPv4 address');

    refused(await viaProxy(t, '/inc', '10.1.3.1', id), 'the next /24');
    const line = lastMismatch(t, id);
    assert.deepEqual({ boundIp: line?.boundIp, clientIp: line?.clientIp }, { boundIp: '10.1.2.3', clientIp: '10.1.3.1' });
    refused(await viaProxy(t, '/inc', '2001:db8:1:2::1', id), 'an IPv6 client');
    refused(await viaProxy(t, '/inc', '::a01:203', id), 'an IPv4-compatible IPv6 address is IPv6');

    const owner = ok(await viaProxy(t, '/inc', '10.1.2.3', id));
    assert.deepEqual([owner.id, owner.n], [id, 4], 'refused requests never ran');
    assert.equal(t.server.sessions.stats.created, 1);
    assert.equal((await t.server.sessions.info(id))?.clientIp, '10.1.2.3');
  });

  test('IPv6 /64: 2001:db8:1:2::1 → 2001:db8:1:2:ffff::9 same session; 2001:db8:1:3::1 and any IPv4 get 400', TEST, async () => {
    const t = await serverWith(prefixes);
    const created = ok(await viaProxy(t, '/inc', '2001:db8:1:2::1'));
    const id = created.id;
    assert.equal(created.clientIp, '2001:db8:1:2::1');

    const rotated = ok(await viaProxy(t, '/inc', '2001:db8:1:2:ffff::9', id));
    assert.deepEqual([rotated.id, rotated.n], [id, 2], 'a temporary address within the /64');
    const upper = ok(await viaProxy(t, '/inc', '2001:DB8:1:2:0:0:0:77', id));
    assert.deepEqual([upper.id, upper.n], [id, 3], 'written differently, same network');

    refused(await viaProxy(t, '/inc', '2001:db8:1:3::1', id), 'the next /64');
    refused(await viaProxy(t, '/inc', '10.1.2.3', id), 'an IPv4 client');
    refused(await viaProxy(t, '/inc', '::ffff:10.1.2.3', id), 'an IPv4-mapped client');
    assert.equal(ok(await viaProxy(t, '/inc', '2001:db8:1:2::1', id)).n, 4);
  });

  test('exact binding (true, or { ipv4: 32, ipv6: 128 }): 10.1.2.99 and 2001:db8:1:2::2 are other clients', TEST, async () => {
    for (const bindIp of [true, { ipv4: 32, ipv6: 128 }]) {
      const t = await serverWith({ bindIp, trustProxy: ['127.0.0.1'] });
      const v4 = ok(await viaProxy(t, '/inc', '10.1.2.3')).id;
      refused(await viaProxy(t, '/inc', '10.1.2.99', v4), `${JSON.stringify(bindIp)}: IPv4 neighbour`);
      const v6 = ok(await viaProxy(t, '/inc', '2001:db8:1:2::1')).id;
      refused(await viaProxy(t, '/inc', '2001:db8:1:2::2', v6), `${JSON.stringify(bindIp)}: IPv6 neighbour`);
      assert.equal(ok(await viaProxy(t, '/inc', '2001:DB8:1:2::1', v6)).n, 2, 'upper case is the same address');
      assert.equal(ok(await viaProxy(t, '/inc', '::ffff:10.1.2.3', v4)).n, 2, 'so is the IPv4-mapped form');
    }
  });

  test(
    'one address in any spelling is one client: non-canonical IPv6 and other IPv4-mapped forms',
    TEST,
    async () => {
      const problems: string[] = [];
      for (const bindIp of [true, { ipv4: 24, ipv6: 64 }]) {
        const t = await serverWith({ bindIp, trustProxy: ['127.0.0.1'] });
        const v4 = ok(await viaProxy(t, '/inc', '10.1.2.3')).id;
        for (const spelling of ['0:0:0:0:0:ffff:10.1.2.3', '0::ffff:10.1.2.3', '::ffff:a01:203']) {
          const reply = await viaProxy(t, '/inc', spelling, v4);
          if (reply.status !== 200) problems.push(`${JSON.stringify(bindIp)}: 10.1.2.3 written ${spelling} got ${reply.status}`);
        }
        const v6 = ok(await viaProxy(t, '/inc', '2001:db8:1:2::1')).id;
        for (const spelling of ['2001:db8:1:2:0::1', '2001:0db8:1:2::1', '2001:db8:1:2:0:0:0:1']) {
          const reply = await viaProxy(t, '/inc', spelling, v6);
          if (reply.status !== 200) problems.push(`${JSON.stringify(bindIp)}: 2001:db8:1:2::1 written ${spelling} got ${reply.status}`);
        }
      }
      assert.deepEqual(problems, []);
    },
  );

  test('IPv4 and IPv6 never match, even with { ipv4: 0, ipv6: 0 }', TEST, async () => {
    const t = await serverWith({ bindIp: { ipv4: 0, ipv6: 0 }, trustProxy: ['127.0.0.1'] });
    const v4 = ok(await viaProxy(t, '/inc', '10.1.2.3')).id;
    assert.equal(ok(await viaProxy(t, '/inc', '192.0.2.7', v4)).n, 2, 'any IPv4 address');
    refused(await viaProxy(t, '/inc', '2001:db8::1', v4), 'IPv6 for an IPv4 binding');
    const v6 = ok(await viaProxy(t, '/inc', '2001:db8:1:2::1')).id;
    assert.equal(ok(await viaProxy(t, '/inc', 'fd00::9', v6)).n, 2, 'any IPv6 address');
    refused(await viaProxy(t, '/inc', '10.1.2.3', v6), 'IPv4 for an IPv6 binding');
  });

  test('bindIp false: any address, either family, same session', TEST, async () => {
    const t = await serverWith({ bindIp: false, trustProxy: ['127.0.0.1'] });
    const id = ok(await viaProxy(t, '/inc', '10.1.2.3')).id;
    assert.equal(ok(await viaProxy(t, '/inc', '203.0.113.9', id)).n, 2);
    assert.equal(ok(await viaProxy(t, '/inc', '2001:db8::1', id)).n, 3);
    assert.equal(t.server.sessions.stats.ipMismatches, 0);
  });
});

describe('B3, B5, B6 through prefix binding', () => {
  const prefixes = { bindIp: { ipv4: 24, ipv6: 64 }, trustProxy: ['127.0.0.1'] };

  test('B3 + B5: header lines are joined in order and the rightmost untrusted address is bound, never a prepended one', TEST, async () => {
    const t = await serverWith(prefixes);
    // The client prepended 6.6.6.6 on a line of its own; the proxy's line comes last.
    const created = ok(await viaProxy(t, '/inc', ['6.6.6.6', '10.1.2.3']));
    const id = created.id;
    assert.equal((await t.server.sessions.info(id))?.clientIp, '10.1.2.3', 'bound to the address the proxy saw');

    // An attacker at 10.9.9.9 prepends an address inside the victim's /24: refused, and the log
    // names the attacker's real address.
    refused(await viaProxy(t, '/inc', ['10.1.2.3', '10.9.9.9'], id), 'a prepended in-network address');
    refused(await viaProxy(t, '/inc', '10.1.2.3, 10.9.9.9', id), 'the same on one line');
    const line = lastMismatch(t, id);
    assert.deepEqual({ boundIp: line?.boundIp, clientIp: line?.clientIp }, { boundIp: '10.1.2.3', clientIp: '10.9.9.9' });

    // The victim's phone moved within its /24, behind a client that prepends junk: served. Read
    // in the other order, or only the first line, this would be 10.9.9.9 (400).
    const moved = ok(await viaProxy(t, '/inc', ['10.9.9.9', '10.1.2.77'], id));
    assert.deepEqual([moved.id, moved.n, moved.clientIp], [id, 2, '10.1.2.3']);
    const three = ok(await viaProxy(t, '/inc', ['192.0.2.1', '198.51.100.2, 10.1.2.88'], id));
    assert.deepEqual([three.id, three.n], [id, 3]);
    assert.equal(t.server.sessions.stats.created, 1);
  });

  test('B6: garbage X-Forwarded-For falls back to the peer (127.0.0.1): never a crash, answered in bounded time, never the victim’s network', TEST, async () => {
    const t = await serverWith(prefixes);
    const victim = ok(await viaProxy(t, '/inc', '10.1.2.3')).id;
    const garbage = [
      'not-an-ip',
      '10.1.2.3:8080',
      '[2001:db8:1:2::1]:443',
      '10.1.2.3%eth0',
      '999.1.2.3',
      '10.1.2',
      '10.1.2.3.4',
      '"10.1.2.3"',
      'unknown, , ,',
      '1,,'.repeat(3334), // 10,002 entries within the 16 KiB header limit
      `${'10.1.2.3,'.repeat(1500)}junk`,
    ];
    for (const xff of garbage) {
      const what = JSON.stringify(xff.slice(0, 30));
      const started = Date.now();
      const fresh = ok(await viaProxy(t, '/state', xff));
      assert.equal(fresh.clientIp, '127.0.0.1', `${what}: bound to the peer`);
      assert.equal((await t.server.sessions.info(fresh.id))?.clientIp, '127.0.0.1');
      // With the victim's cookie, garbage never passes for the victim's network.
      refused(await viaProxy(t, '/state', xff, victim), what);
      assert.ok(Date.now() - started < 1000, `${what}: answered in ${Date.now() - started} ms`);
    }
    assert.equal(ok(await viaProxy(t, '/inc', '10.1.2.3', victim)).n, 2, 'the victim is untouched and the server still serves');
  });

  test(
    'B6: an address with a zone ID (fe80::1%eth0) falls back to the peer, like other garbage',
    TEST,
    async () => {
      const t = await serverWith(prefixes);
      const state = ok(await viaProxy(t, '/state', 'fe80::1%eth0'));
      assert.equal(state.clientIp, '127.0.0.1');
    },
  );

  test('B6: ~1,500 hops that are all trusted proxies (the longest walk) answer in bounded time with a valid address', TEST, async () => {
    const t = await serverWith({ bindIp: { ipv4: 24, ipv6: 64 }, trustProxy: true });
    const xff = `203.0.113.5, ${Array.from({ length: 1500 }, (_, i) => `10.0.${i >> 8}.${i & 255}`).join(',')}`;
    assert.ok(xff.length < 16_000);
    const started = Date.now();
    for (let i = 0; i < 10; i++) {
      const state = ok(await viaProxy(t, '/state', xff));
      assert.equal(state.clientIp, '203.0.113.5', 'the only untrusted hop');
      assert.ok(isIP(state.clientIp));
    }
    const elapsed = Date.now() - started;
    assert.ok(elapsed < 2000, `10 requests in ${elapsed} ms`);
  });
});

describe('B8: invalid sessions.bindIp stops startup naming the key', () => {
  const invalid: unknown[] = [
    { ipv4: 33, ipv6: 64 },
    { ipv4: 24, ipv6: 129 },
    { ipv4: -1, ipv6: 64 },
    { ipv4: 24.5, ipv6: 64 },
    { ipv4: '24', ipv6: 64 },
    { ipv4: 24 },
    { ipv6: 64 },
    {},
    { ipv4: 24, ipv6: 64, ipv5: 1 },
    'yes',
    'true',
    1,
    null,
    [24, 64],
  ];
  test('resolveConfig: RESIDENT_ERR_INVALID_CONFIG naming sessions.bindIp for each bad value; the valid forms pass', () => {
    for (const bindIp of invalid) {
      assert.throws(
        () => resolveConfig({ sessions: { bindIp } }, ROOT),
        (error: Error & { code?: string }) =>
          error.code === 'RESIDENT_ERR_INVALID_CONFIG' && /sessions\.bindIp\b/.test(error.message) && /must be|is not a known key/.test(error.message),
        JSON.stringify(bindIp),
      );
    }
    assert.deepEqual(resolveConfig({ sessions: { bindIp: { ipv4: 24, ipv6: 64 } } }, ROOT).sessions.bindIp, { ipv4: 24, ipv6: 64 });
    assert.deepEqual(resolveConfig({ sessions: { bindIp: { ipv4: 0, ipv6: 128 } } }, ROOT).sessions.bindIp, { ipv4: 0, ipv6: 128 });
    assert.deepEqual(resolveConfig({ sessions: { bindIp: true } }, ROOT).sessions.bindIp, { ipv4: 32, ipv6: 128 });
    assert.equal(resolveConfig({ sessions: { bindIp: false } }, ROOT).sessions.bindIp, false);
  });

  test('the CLI: { "ipv4": 24 } without ipv6 and { "ipv4": 33, … } exit 2 with stderr naming sessions.bindIp, nothing listening', TEST, async () => {
    for (const bindIp of [{ ipv4: 24 }, { ipv4: 33, ipv6: 64 }]) {
      const config = {
        host: '127.0.0.1',
        port: 0,
        publicDir: join(ROOT, 'test/fixtures/public'),
        hooks: FIXTURE_HOOKS,
        store: { kind: 'memory' },
        sessions: { bindIp },
      };
      const child = runMain(['--config', writeTempConfig(config)]);
      children.push(child);
      const code = await child.exited;
      assert.equal(code, 2, describeChild(child));
      assert.match(child.stderr(), /sessions\.bindIp/, describeChild(child));
      assert.ok(!childLogs(child).some((line) => line.event === 'started'));
    }
  });
});
