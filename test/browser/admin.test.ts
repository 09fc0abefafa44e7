/**
 * The admin page (src/ops/admin-page.ts) in a real Chromium, against the shipped demo: browser
 * contexts are the clients (one of them signed in), another context is the operator. The page
 * asks for the token, shows the workers and the live sessions, and its Suspend, Close and
 * Close user buttons act on the clients, which see the effect on their next page load. The
 * page never holds a full session ID, and the operator's browser never gets a session cookie.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test, type TestContext } from 'node:test';
import type { BrowserContext, Page } from 'playwright-core';
import type { ResidentConfigInput } from '../../src/config.ts';
import { hashId } from '../../src/log.ts';
import { DEMO_OPTIONS, ROOT, startTestServer, testConfig, type TestServer } from '../helpers.ts';
import { browserSkip, launchChromium, screenshot, textOf, textsOf, waitForText, type LaunchedChromium } from './browser.ts';

const TOKEN = 'browser-admin-token-0123456789';

// Only what the in-page functions below use; tsconfig has no DOM lib.
declare const document: { querySelectorAll(selector: string): { length: number } };
interface WebStorage {
  readonly length: number;
  key(index: number): string | null;
  getItem(key: string): string | null;
}
declare const sessionStorage: WebStorage;
declare const localStorage: WebStorage;
const demoOptions: ResidentConfigInput = {
  ...DEMO_OPTIONS,
  workers: { threads: 2 },
  admin: { token: TOKEN },
};
const cookieName = testConfig(demoOptions).sessions.cookieName;

/** The README's picture of the admin view; rewritten only when missing or asked for. */
const DOCS_SCREENSHOT = 'docs/admin.png';
const updateDocs = process.env.RESIDENT_UPDATE_DOCS === '1' || !existsSync(join(ROOT, DOCS_SCREENSHOT));

describe('the admin page in a real browser', { skip: browserSkip, timeout: 60_000 }, () => {
  let chromium: LaunchedChromium | undefined;
  let server: TestServer | undefined;
  let demoDir: string | undefined;
  /** Every session cookie value any client context held, for the leak checks. */
  const seenIds = new Set<string>();

  before(async () => {
    demoDir = mkdtempSync(join(tmpdir(), 'resident-browser-admin-'));
    process.env.RESIDENT_DEMO_DB = join(demoDir, 'demo.db');
    server = await startTestServer(demoOptions);
    assert.equal(server.server.adminUrl, `${server.url}/_resident/`);
    chromium = await launchChromium();
  });

  after(async () => {
    await chromium?.close();
    await server?.close();
    if (demoDir) rmSync(demoDir, { recursive: true, force: true });
  });

  async function openPage(t: TestContext, width = 760): Promise<{ context: BrowserContext; page: Page }> {
    const context = await chromium!.browser.newContext({ baseURL: server!.url, viewport: { width, height: 640 } });
    t.after(() => context.close());
    return { context, page: await context.newPage() };
  }

  async function sessionCookie(context: BrowserContext): Promise<string> {
    const value = (await context.cookies(server!.url)).find((cookie) => cookie.name === cookieName)?.value;
    assert.ok(value, 'the client holds a session cookie');
    seenIds.add(value);
    return value;
  }

  /** The operator's page, logged in with `token` (the page asks for it first). */
  async function openAdmin(t: TestContext, token: string): Promise<{ context: BrowserContext; page: Page }> {
    const admin = await openPage(t, 1360);
    await admin.page.goto(server!.server.adminUrl!);
    assert.equal(await admin.page.isVisible('#login'), true, 'the page asks for the token');
    assert.equal(await admin.page.isVisible('#main'), false, 'and shows nothing before it');
    await admin.page.fill('#token', token);
    await admin.page.click('#login button[type="submit"]');
    return admin;
  }

  /** Waits until `selector` matches exactly `count` elements. */
  async function waitForCount(page: Page, selector: string, count: number, timeout = 5000): Promise<void> {
    try {
      // A function, not a string: the page's CSP (no 'unsafe-eval') refuses string predicates.
      await page.waitForFunction(([sel, n]) => document.querySelectorAll(sel).length === n, [selector, count] as const, { timeout, polling: 25 });
    } catch (error) {
      throw new Error(`${selector}: ${await page.locator(selector).count()} elements, not ${count}: ${(error as Error).message}`);
    }
  }

  const row = (handle: string, table = '#live') => `${table} tr[data-handle="${handle}"]`;

  /** Clicks a row's button and waits for the page's message and its refresh. */
  async function clickAction(page: Page, handle: string, label: string, message: string): Promise<void> {
    await page.locator(row(handle)).getByRole('button', { name: label, exact: true }).click();
    await waitForText(page, '#message', message);
  }

  /**
   * Every entry of the page's sessionStorage and localStorage, which any page of the origin can
   * read: the admin token must never be among them.
   */
  async function webStorage(page: Page): Promise<string[]> {
    return page.evaluate(() =>
      [sessionStorage, localStorage].flatMap((storage) =>
        Array.from({ length: storage.length }, (_, i) => {
          const key = storage.key(i) ?? '';
          return `${key}=${storage.getItem(key) ?? ''}`;
        }),
      ),
    );
  }

  async function assertTokenNotStored(page: Page): Promise<void> {
    const entries = await webStorage(page);
    assert.ok(!entries.some((entry) => entry.includes(TOKEN)), `the token is in web storage: ${entries.join(', ')}`);
  }

  /** The page's HTML holds no session ID any client has held. */
  async function assertNoIds(page: Page): Promise<void> {
    const html = await page.content();
    assert.ok(seenIds.size > 0);
    for (const id of seenIds) assert.ok(!html.includes(id), 'the admin page holds a full session ID');
  }

  test('a wrong token is refused on the page, and nothing is shown', async (t) => {
    const { context, page } = await openAdmin(t, `${TOKEN}x`);
    await waitForText(page, '#login-error', 'That token was refused.');
    assert.equal(await page.isVisible('#main'), false);
    assert.equal(await page.isVisible('#login'), true);
    assert.deepEqual(await webStorage(page), [], 'the refused token is not stored');
    assert.deepEqual(await textsOf(page, '#live tr[data-handle]'), []);
    assert.deepEqual(await context.cookies(), [], 'the admin page sets no cookie');
    await screenshot(page, 'admin-refused.png');
  });

  test('the page lists real browsers’ sessions, and Suspend, Close and Close user act on them', async (t) => {
    // Two visitors: one anonymous, one signed in as ada (the login regenerates its ID).
    const visitor = await openPage(t);
    await visitor.page.goto('/');
    assert.equal(await textOf(visitor.page, '#hits'), '1');
    const visitorId = await sessionCookie(visitor.context);

    const ada = await openPage(t);
    await ada.page.goto('/');
    const adaFirstId = await sessionCookie(ada.context);
    await ada.page.fill('#username', 'ada');
    await ada.page.fill('#password', 'analytical-engine');
    await ada.page.click('#login button[type="submit"]');
    await waitForText(ada.page, '#hits', '2');
    assert.equal(await textOf(ada.page, '#user'), 'Ada Lovelace');
    const adaId = await sessionCookie(ada.context);
    assert.notEqual(adaId, adaFirstId, 'signing in gave a new ID');

    // The operator.
    const { context: adminContext, page } = await openAdmin(t, TOKEN);
    await waitForCount(page, '#live tr[data-handle]', 2);
    assert.equal(await page.isVisible('#login'), false);
    // Signed in, and the token is in no storage another page of the app's origin could read.
    await assertTokenNotStored(page);
    assert.deepEqual(await webStorage(page), []);
    assert.equal(await page.inputValue('#token'), '', 'nor left in the form');
    assert.equal(await textOf(page, '#store'), 'store: memory');
    assert.equal(await textOf(page, '#totals'), '2 live, 0 suspended known to this process');
    // One row per worker thread, with its contexts.
    const workerRows = await page.locator('#workers tbody tr').evaluateAll((rows) =>
      rows.map((r) => Array.from((r as unknown as { cells: ArrayLike<{ textContent: string | null }> }).cells, (c) => c.textContent ?? '')),
    );
    assert.deepEqual(workerRows.map((cells) => Number(cells[0])).sort(), [...server!.server.pool.threadIds].sort());
    assert.equal(workerRows.reduce((sum, cells) => sum + Number(cells[1]), 0), 2, 'two contexts across the workers');

    // The rows are named by handle (the log hash) and show the masked ID the visitor sees too.
    const visitorHandle = hashId(visitorId);
    const adaHandle = hashId(adaId);
    const visitorCells = await textsOf(page, `${row(visitorHandle)} td`);
    const adaCells = await textsOf(page, `${row(adaHandle)} td`);
    assert.equal(visitorCells[0], await textOf(visitor.page, '#session-id'));
    assert.equal(visitorCells[0], `${visitorId.slice(0, 4)}…`);
    assert.equal(visitorCells[1], '—', 'no user');
    assert.equal(visitorCells[2], '127.0.0.1');
    assert.equal(visitorCells[3], 'live');
    assert.equal(adaCells[0], await textOf(ada.page, '#session-id'));
    assert.equal(adaCells[1], 'ada');
    assert.match(adaCells[9] ?? '', /Close user/);
    assert.doesNotMatch(visitorCells[9] ?? '', /Close user/);
    await assertNoIds(page);
    await screenshot(page, 'admin.png', updateDocs ? DOCS_SCREENSHOT : undefined);

    // Suspend the anonymous visitor: it moves to the suspended table; its next load resumes.
    await clickAction(page, visitorHandle, 'Suspend', `Suspended ${visitorId.slice(0, 4)}…`);
    await waitForCount(page, '#suspended tr[data-handle]', 1);
    await waitForCount(page, '#live tr[data-handle]', 1);
    assert.equal((await textsOf(page, `${row(visitorHandle, '#suspended')} td`))[3], 'suspended');
    assert.ok(((await server!.server.sessions.info(visitorId))?.state === 'suspended'));
    await visitor.page.reload();
    assert.equal(await textOf(visitor.page, '#state'), 'resumed');
    assert.equal(await textOf(visitor.page, '#hits'), '2');
    assert.equal(await sessionCookie(visitor.context), visitorId, 'the same session');
    await screenshot(visitor.page, 'admin-visitor-resumed.png');

    // Refresh: live again. Close it: its next load is a fresh session.
    await page.click('#refresh');
    await waitForCount(page, '#live tr[data-handle]', 2);
    await waitForCount(page, '#suspended tr[data-handle]', 0);
    await clickAction(page, visitorHandle, 'Close', `Closed ${visitorId.slice(0, 4)}…`);
    await waitForCount(page, '#live tr[data-handle]', 1);
    assert.equal((await server!.server.sessions.info(visitorId)), undefined);
    await visitor.page.reload();
    assert.equal(await textOf(visitor.page, '#hits'), '1');
    assert.equal(await textOf(visitor.page, '#state'), 'new');
    const visitorNewId = await sessionCookie(visitor.context);
    assert.notEqual(visitorNewId, visitorId);

    // Close every session of ada: her next load is signed out and fresh.
    await page.click('#refresh');
    await waitForCount(page, '#live tr[data-handle]', 2);
    await clickAction(page, adaHandle, 'Close user', 'Closed 1 session(s) of ada');
    await waitForCount(page, `${row(adaHandle)}`, 0);
    await ada.page.reload();
    assert.equal(await textOf(ada.page, '#hits'), '1');
    assert.equal(await textOf(ada.page, '#state'), 'new');
    assert.equal(await textOf(ada.page, '#user'), 'nobody');
    assert.notEqual(await sessionCookie(ada.context), adaId);

    // The token lives in a variable of the page only: a reload asks for it again.
    await page.reload();
    assert.equal(await page.isVisible('#login'), true, 'a reload asks for the token again');
    assert.equal(await page.isVisible('#main'), false);
    // A page of the app opened next in the tab (a static file: no session) finds no token in
    // the origin's storage.
    const app = await page.goto('/style.css');
    assert.equal(app?.status(), 200);
    assert.deepEqual(await webStorage(page), []);
    await page.goto(server!.server.adminUrl!);
    assert.equal(await page.isVisible('#login'), true);
    await page.fill('#token', TOKEN);
    await page.click('#login button[type="submit"]');
    await waitForCount(page, '#live tr[data-handle]', 2);
    assert.equal(await page.isVisible('#login'), false);
    await assertNoIds(page);
    await assertTokenNotStored(page);
    assert.deepEqual(await adminContext.cookies(), [], 'the operator never got a session cookie');
    // "Forget the token" asks for it again, and the next call is refused until it is given.
    await page.click('#logout');
    assert.equal(await page.isVisible('#login'), true);
    assert.equal(await page.isVisible('#main'), false);
    await assertTokenNotStored(page);
  });
});
