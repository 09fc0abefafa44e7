/**
 * The demo's sign-in in a real Chromium: a wrong password signs nobody in; the right one shows
 * the user, renews the session cookie (ctx.regenerate(), RELIABILITY.md A5) and keeps the
 * context (the cart added before signing in is still there); the old cookie value brings
 * nothing back; signing out renews it again; and "Sign out my other sessions" in one browser
 * signs the other browser out (ctx.closeOtherSessions()). test/users.test.ts checks the same
 * machinery over undici; this suite checks what a browser does with the 303s and its cookie jar.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test, type TestContext } from 'node:test';
import type { BrowserContext, Page } from 'playwright-core';
import { NOTICES } from '../../src/hooks/page.ts';
import { DEMO_OPTIONS, startTestServer, testConfig, waitFor, type TestServer } from '../helpers.ts';
import { browserSkip, launchChromium, screenshot, textOf, textsOf, waitForText, type LaunchedChromium } from './browser.ts';

const demoOptions = DEMO_OPTIONS;
const cookieName = testConfig(demoOptions).sessions.cookieName;
/** An issued session ID: 22 random characters, then 2 naming its home slot (src/contexts/ids.ts). */
const ID_SHAPE = /^[A-Za-z0-9_-]{22}[A-Za-z0-9_-]{2}$/;

describe('signing in to the demo in a real browser', { skip: browserSkip, timeout: 60_000 }, () => {
  let chromium: LaunchedChromium | undefined;
  let demoDir: string | undefined;
  const servers: TestServer[] = [];

  before(async () => {
    // The demo's SQLite data (with its users table) in a temp folder; worker threads inherit it.
    demoDir = mkdtempSync(join(tmpdir(), 'resident-browser-login-'));
    process.env.RESIDENT_DEMO_DB = join(demoDir, 'demo.db');
    chromium = await launchChromium();
  });

  after(async () => {
    await chromium?.close();
    await Promise.all(servers.map((server) => server.close()));
    if (demoDir) rmSync(demoDir, { recursive: true, force: true });
  });

  /** A demo server of the test's own, so one user's sessions are only the test's. */
  async function startDemo(): Promise<TestServer> {
    const server = await startTestServer(demoOptions);
    servers.push(server);
    assert.match(server.url, /^http:\/\/127\.0\.0\.1:\d+$/);
    return server;
  }

  /** A fresh browser context (its own cookie jar) closed when the test ends, and a page in it. */
  async function openPage(t: TestContext, server: TestServer): Promise<{ context: BrowserContext; page: Page }> {
    const context = await chromium!.browser.newContext({ baseURL: server.url, viewport: { width: 760, height: 900 } });
    t.after(() => context.close());
    return { context, page: await context.newPage() };
  }

  async function sessionCookie(context: BrowserContext, server: TestServer): Promise<string | undefined> {
    return (await context.cookies(server.url)).find((cookie) => cookie.name === cookieName)?.value;
  }

  const cartLines = (page: Page) => textsOf(page, '#cart li[data-sku]');

  async function addToCart(page: Page, sku: string): Promise<void> {
    const next = String(Number(await textOf(page, '#hits')) + 1);
    await page.click(`button[name="sku"][value="${sku}"]`);
    await waitForText(page, '#hits', next);
  }

  /** Fills the login form and submits it; waits for the page the 303 leads to. */
  async function signIn(page: Page, username: string, password: string, expectedNotice: string): Promise<void> {
    await page.fill('#username', username);
    await page.fill('#password', password);
    await page.click('#login button[type="submit"]');
    await waitForText(page, '#notice', expectedNotice);
  }

  /** "Signed in as …", the row of the context table, with its whitespace collapsed. */
  async function signedInRow(page: Page): Promise<string> {
    // innerText, as rendered: the header and data cells come apart (textContent runs them together).
    const row = await page.locator('#context tr', { has: page.locator('#user') }).innerText();
    return row.replace(/\s+/g, ' ').trim();
  }

  test('a wrong password shows the failure notice and signs nobody in', async (t) => {
    const server = await startDemo();
    const { context, page } = await openPage(t, server);
    await page.goto('/');
    assert.equal(await textOf(page, '#user'), 'nobody');
    const cookie = await sessionCookie(context, server);
    assert.ok(cookie);

    await signIn(page, 'ada', 'difference-engine', NOTICES['login-failed']);
    assert.equal(await textOf(page, '#notice'), 'Wrong username or password.');
    assert.equal(await textOf(page, '#user'), 'nobody');
    assert.equal(await signedInRow(page), 'Signed in as nobody');
    assert.equal(await page.locator('#login').count(), 1, 'the login form is still offered');
    assert.equal(await page.locator('#logout').count(), 0);
    assert.equal(await sessionCookie(context, server), cookie, 'no new ID without a sign-in');
    assert.equal(await textOf(page, '#state'), 'continuing');
    assert.deepEqual(await server.server.sessions.sessionsOfUser('ada'), []);
    assert.equal((await server.server.sessions.info(cookie))?.userId, null);
    // An unknown user fails the same way.
    await signIn(page, 'mallory', 'analytical-engine', NOTICES['login-failed']);
    assert.equal(await textOf(page, '#user'), 'nobody');
    await screenshot(page, 'login-failed.png');
  });

  test('the right password shows "Signed in as Ada Lovelace", renews the cookie and keeps the cart; the old cookie brings nothing back', async (t) => {
    const server = await startDemo();
    const { context, page } = await openPage(t, server);
    await page.goto('/');
    await addToCart(page, 'tea');
    await addToCart(page, 'tea');
    await addToCart(page, 'mug');
    const cart = ['2 × Green tea', '1 × Stoneware mug'];
    assert.deepEqual(await cartLines(page), cart);
    const hitsBefore = Number(await textOf(page, '#hits'));
    const thread = await textOf(page, '#thread');
    const before = await sessionCookie(context, server);
    assert.ok(before);

    await signIn(page, 'ada', 'analytical-engine', NOTICES['signed-in']);
    await waitForText(page, '#user', 'Ada Lovelace');
    assert.equal(await signedInRow(page), 'Signed in as Ada Lovelace');
    const afterLogin = await sessionCookie(context, server);
    assert.ok(afterLogin);
    assert.match(afterLogin, ID_SHAPE);
    assert.notEqual(afterLogin, before, 'the session cookie changed at sign-in');
    assert.equal(await textOf(page, '#session-id'), `${afterLogin.slice(0, 4)}…`);
    // The same context: its cart, its hit counter, its thread.
    assert.deepEqual(await cartLines(page), cart);
    assert.equal(await textOf(page, '#state'), 'continuing');
    assert.equal(await textOf(page, '#hits'), String(hitsBefore + 1));
    assert.equal(await textOf(page, '#thread'), thread);
    assert.equal(await page.locator('#login').count(), 0);
    assert.equal(await textOf(page, '#logout'), 'Sign out ada');
    assert.equal(await textOf(page, '#logout-others'), 'Sign out my other sessions');
    await screenshot(page, 'login.png');

    const sessions = server.server.sessions;
    assert.equal((await sessions.info(before)), undefined, 'the old ID is dead');
    assert.equal((await sessions.info(afterLogin))?.userId, 'ada');
    assert.deepEqual((await sessions.sessionsOfUser('ada')).map((info) => info.id), [afterLogin]);

    // The pre-login cookie value, replayed in another browser (a fixated or stolen cookie).
    const attacker = await openPage(t, server);
    await attacker.context.addCookies([{ name: cookieName, value: before, url: server.url, httpOnly: true, sameSite: 'Lax' }]);
    await attacker.page.goto('/');
    assert.equal(await textOf(attacker.page, '#user'), 'nobody');
    assert.equal(await textOf(attacker.page, '#state'), 'new');
    assert.equal(await textOf(attacker.page, '#hits'), '1');
    assert.deepEqual(await cartLines(attacker.page), []);
    const attackerCookie = await sessionCookie(attacker.context, server);
    assert.ok(attackerCookie && attackerCookie !== before && attackerCookie !== afterLogin);

    // Still signed in after a reload; signing out renews the ID again and keeps the cart.
    await page.reload();
    assert.equal(await textOf(page, '#user'), 'Ada Lovelace');
    assert.equal(await sessionCookie(context, server), afterLogin);
    await page.click('#logout');
    await waitForText(page, '#notice', NOTICES['signed-out']);
    assert.equal(await textOf(page, '#user'), 'nobody');
    const afterLogout = await sessionCookie(context, server);
    assert.ok(afterLogout && afterLogout !== afterLogin && afterLogout !== before);
    assert.deepEqual(await cartLines(page), cart);
    assert.equal(await textOf(page, '#state'), 'continuing');
    assert.deepEqual(await sessions.sessionsOfUser('ada'), []);
    await screenshot(page, 'logout.png');
  });

  test('two browsers signed in as ada: "Sign out my other sessions" in one signs the other out', async (t) => {
    const server = await startDemo();
    const first = await openPage(t, server);
    const second = await openPage(t, server);
    await first.page.goto('/');
    await addToCart(first.page, 'tea');
    await signIn(first.page, 'ada', 'analytical-engine', NOTICES['signed-in']);
    await second.page.goto('/');
    await addToCart(second.page, 'book');
    await signIn(second.page, 'ada', 'analytical-engine', NOTICES['signed-in']);
    assert.equal(await textOf(first.page, '#user'), 'Ada Lovelace');
    assert.equal(await textOf(second.page, '#user'), 'Ada Lovelace');
    const firstCookie = await sessionCookie(first.context, server);
    const secondCookie = await sessionCookie(second.context, server);
    assert.ok(firstCookie && secondCookie && firstCookie !== secondCookie);
    const sessions = server.server.sessions;
    const adaSessions = async () => (await sessions.sessionsOfUser('ada')).map((info) => info.id).sort();
    assert.deepEqual(await adaSessions(), [firstCookie, secondCookie].sort());

    await first.page.click('#logout-others');
    await waitForText(first.page, '#notice', NOTICES['others-closed']);
    assert.equal(await textOf(first.page, '#user'), 'Ada Lovelace');
    await waitFor(async () => (await adaSessions()).length === 1, 5000, "the second browser's session closed");
    assert.deepEqual(await adaSessions(), [firstCookie]);
    await screenshot(first.page, 'logout-others-first.png');

    // The second browser's next page load is a fresh session: signed out, empty cart.
    await second.page.goto('/');
    assert.equal(await textOf(second.page, '#user'), 'nobody');
    assert.equal(await textOf(second.page, '#state'), 'new');
    assert.equal(await textOf(second.page, '#hits'), '1');
    assert.deepEqual(await cartLines(second.page), []);
    assert.equal(await second.page.locator('#login').count(), 1);
    const secondNow = await sessionCookie(second.context, server);
    assert.ok(secondNow && secondNow !== secondCookie, 'a new session cookie');
    await screenshot(second.page, 'logout-others-second.png');

    // The first browser stays signed in, same session, cart intact.
    await first.page.goto('/');
    assert.equal(await textOf(first.page, '#user'), 'Ada Lovelace');
    assert.equal(await textOf(first.page, '#state'), 'continuing');
    assert.deepEqual(await cartLines(first.page), ['1 × Green tea']);
    assert.equal(await sessionCookie(first.context, server), firstCookie);
  });
});
