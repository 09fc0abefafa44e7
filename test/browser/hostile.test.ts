/**
 * A real visitor during a cookieless flood (issue 12 "Tests", README "Hostile traffic"): the
 * shipped demo on two edge threads with a cap of 16 live contexts, flooded from another
 * loopback address by a client that never sends its cookie back, while Chromium (from
 * 127.0.0.1) visits. A session is unproven after its first page, so it is exactly what the cap
 * evicts first and what a flood competes with: the visitor must still keep it.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test, type TestContext } from 'node:test';
import type { Page } from 'playwright-core';
import { DEMO_OPTIONS, startTestServer, testConfig, type TestServer } from '../helpers.ts';
import { flood } from '../flood-client.ts';
import { get } from '../wire.ts';
import { browserSkip, launchChromium, textOf, textsOf, waitForText, type LaunchedChromium } from './browser.ts';

const MAX_CONTEXTS = 16;
const FLOODER = '127.0.0.3';
const cookieName = testConfig(DEMO_OPTIONS).sessions.cookieName;

// Only what the in-page function below uses; tsconfig has no DOM lib.
declare function fetch(url: string, init: { method: string; body: unknown; redirect: string }): Promise<{ status: number; type: string }>;
declare class URLSearchParams {
  constructor(init: Record<string, string>);
}

describe('a browser visit during a cookieless flood', { skip: browserSkip, timeout: 60_000 }, () => {
  let chromium: LaunchedChromium | undefined;
  let server: TestServer | undefined;
  let demoDir: string | undefined;

  before(async () => {
    // The demo's SQLite data in a temp folder; worker threads inherit the variable.
    demoDir = mkdtempSync(join(tmpdir(), 'resident-browser-hostile-'));
    process.env.RESIDENT_DEMO_DB = join(demoDir, 'demo.db');
    server = await startTestServer({ ...DEMO_OPTIONS, log: { level: 'warn' }, workers: { threads: 2 }, sessions: { maxContexts: MAX_CONTEXTS } });
    chromium = await launchChromium();
  });

  after(async () => {
    await chromium?.close();
    await server?.close();
    if (demoDir) rmSync(demoDir, { recursive: true, force: true });
  });

  /**
   * Runs `visit` in a fresh browser context while FLOODER sends cookieless requests for the
   * demo's page, 8 at a time (fewer than the cap: the flood's own contexts are not all busy,
   * so the README promises that it evicts itself), and checks that the flood made many times
   * the cap's sessions meanwhile: the visit was under pressure.
   */
  async function duringFlood(t: TestContext, visit: (page: Page) => Promise<void>): Promise<void> {
    const context = await chromium!.browser.newContext({ baseURL: server!.url });
    t.after(() => context.close());
    const page = await context.newPage();
    const statuses = new Map<number, number>();
    const createdBefore = server!.server.sessions.stats.created;
    let visiting = true;
    const flooding = flood({
      port: Number(new URL(server!.url).port),
      sources: [FLOODER],
      sockets: 8,
      depth: 1,
      total: Number.MAX_SAFE_INTEGER,
      stop: () => !visiting,
      request: () => get('/'),
      onAnswer: (status) => statuses.set(status, (statuses.get(status) ?? 0) + 1),
    });
    try {
      // The flood first fills the cap, so the visit's first page is already under pressure.
      const began = Date.now();
      while (server!.server.sessions.stats.created - createdBefore < 4 * MAX_CONTEXTS && Date.now() - began < 10_000) await new Promise((r) => setTimeout(r, 20));
      await visit(page);
    } finally {
      visiting = false;
      await flooding;
    }
    const { created, resumed } = server!.server.sessions.stats;
    const cookie = (await context.cookies(server!.url)).find((c) => c.name === cookieName);
    t.diagnostic(JSON.stringify({ floodStatuses: Object.fromEntries(statuses), sessionsCreatedMeanwhile: created - createdBefore, resumedSoFar: resumed, cookie: cookie?.value.slice(0, 4) }));
    assert.ok(created - createdBefore > 8 * MAX_CONTEXTS, `the flood made only ${created - createdBefore} sessions meanwhile`);
    assert.deepEqual([...statuses.keys()], [200], 'the flood itself was served');
  }

  test('the first page gets a working session: what page 1 sets is there on page 2, same session, never resumed', async (t) => {
    await duringFlood(t, async (page) => {
      await page.goto('/');
      assert.deepEqual([await textOf(page, '#hits'), await textOf(page, '#state')], ['1', 'new']);
      const session = await textOf(page, '#session-id');
      // Page 1 sets state: a mug in the cart (the form's POST carries the cookie back: proven).
      await page.click('button[name="sku"][value="mug"]');
      await waitForText(page, '#hits', '2');
      // Many flood sessions come and go while the visitor reads the page.
      await new Promise((r) => setTimeout(r, 1000));
      await page.goto('/');
      assert.deepEqual(
        { hits: await textOf(page, '#hits'), state: await textOf(page, '#state'), session: await textOf(page, '#session-id'), cart: await textsOf(page, '#cart li[data-sku]') },
        { hits: '3', state: 'continuing', session, cart: ['1 × Stoneware mug'] },
      );
    });
  });

  test('a first page that sends five requests at once shares one session: every one lands in it, none lost to the flood', async (t) => {
    await duringFlood(t, async (page) => {
      await page.goto('/');
      assert.equal(await textOf(page, '#state'), 'new');
      const session = await textOf(page, '#session-id');
      // What a page's own script does on load: several calls at once, the first that carry
      // the cookie back. `manual`: the 303 is not followed (that would count page hits).
      const answers = await page.evaluate(() =>
        Promise.all(
          Array.from({ length: 5 }, () =>
            fetch('/cart/add', { method: 'POST', body: new URLSearchParams({ sku: 'tea' }), redirect: 'manual' }).then((r) => r.type),
          ),
        ),
      );
      assert.deepEqual(answers, Array(5).fill('opaqueredirect'), 'every call got the 303');
      await page.goto('/');
      assert.deepEqual(
        { hits: await textOf(page, '#hits'), state: await textOf(page, '#state'), session: await textOf(page, '#session-id'), cart: await textsOf(page, '#cart li[data-sku]') },
        { hits: '2', state: 'continuing', session, cart: ['5 × Green tea'] },
      );
    });
  });
});
