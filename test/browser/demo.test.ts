/**
 * The shipped demo driven by a real Chromium: what a visitor sees across page loads, that the
 * session cookie is out of reach of page scripts, that two browser profiles are two clients,
 * that "Close my session" really ends the session, and that a suspended visitor comes back
 * resumed. test/demo.test.ts checks the same hooks over undici; this suite checks what only a
 * browser does (its cookie jar, HttpOnly, following the form's 303).
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test, type TestContext } from 'node:test';
import type { BrowserContext, Page } from 'playwright-core';
import { DEMO_OPTIONS, ManualClock, ROOT, startTestServer, testConfig, waitFor, type TestServer } from '../helpers.ts';
import {
  browserSkip,
  documentCookie,
  launchChromium,
  screenshot,
  textOf,
  textsOf,
  waitForText,
  writeDocumentCookie,
  type LaunchedChromium,
} from './browser.ts';

const demoOptions = DEMO_OPTIONS;
const cookieName = testConfig(demoOptions).sessions.cookieName;

/** The README's picture; rewritten only when missing or asked for, so test runs leave git clean. */
const DOCS_SCREENSHOT = 'docs/demo.png';
const updateDocs = process.env.RESIDENT_UPDATE_DOCS === '1' || !existsSync(join(ROOT, DOCS_SCREENSHOT));

describe('the demo in a real browser', { skip: browserSkip, timeout: 60_000 }, () => {
  let chromium: LaunchedChromium | undefined;
  let server: TestServer | undefined;
  let demoDir: string | undefined;

  before(async () => {
    // The demo's SQLite data lives in a temp folder; worker threads inherit the variable.
    demoDir = mkdtempSync(join(tmpdir(), 'resident-browser-demo-'));
    process.env.RESIDENT_DEMO_DB = join(demoDir, 'demo.db');
    server = await startTestServer(demoOptions);
    // The browser reaches the server exactly where it listens (loopback, from the test config).
    assert.match(server.url, /^http:\/\/127\.0\.0\.1:\d+$/);
    chromium = await launchChromium();
  });

  after(async () => {
    await chromium?.close();
    await server?.close();
    if (demoDir) rmSync(demoDir, { recursive: true, force: true });
  });

  /** A fresh browser context (its own cookie jar) closed when the test ends, and a page in it. */
  async function openPage(t: TestContext, target: TestServer = server!): Promise<{ context: BrowserContext; page: Page }> {
    const context = await chromium!.browser.newContext({ baseURL: target.url, viewport: { width: 760, height: 640 } });
    t.after(() => context.close());
    return { context, page: await context.newPage() };
  }

  async function sessionCookie(context: BrowserContext, target: TestServer = server!) {
    return (await context.cookies(target.url)).find((cookie) => cookie.name === cookieName);
  }

  /** Clicks a form button and waits for the page the 303 leads to (it shows the next hit count). */
  async function submit(page: Page, button: string, nextHits: number): Promise<void> {
    await page.click(button);
    await waitForText(page, '#hits', String(nextHits));
  }

  const addToCart = (page: Page, sku: string, nextHits: number) => submit(page, `button[name="sku"][value="${sku}"]`, nextHits);
  const cartLines = (page: Page) => textsOf(page, '#cart li[data-sku]');

  test('state is kept across page loads: hits, cart, session', async (t) => {
    const { context, page } = await openPage(t);
    await page.goto('/');
    assert.equal(await textOf(page, '#hits'), '1');
    assert.equal(await textOf(page, '#state'), 'new');
    const maskedId = await textOf(page, '#session-id');
    const cookie = (await sessionCookie(context))?.value;
    assert.ok(cookie, 'the first response set the session cookie');
    // The page shows a masked ID: the cookie's first characters, never the whole value.
    assert.equal(maskedId, `${cookie.slice(0, 4)}…`);

    await page.reload();
    assert.equal(await textOf(page, '#hits'), '2');
    assert.equal(await textOf(page, '#state'), 'continuing');
    await page.reload();
    assert.equal(await textOf(page, '#hits'), '3');

    await addToCart(page, 'tea', 4);
    assert.deepEqual(await cartLines(page), ['1 × Green tea']);
    await page.reload();
    assert.equal(await textOf(page, '#hits'), '5');
    assert.deepEqual(await cartLines(page), ['1 × Green tea']);
    assert.equal(await textOf(page, '#session-id'), maskedId);
    assert.equal((await sessionCookie(context))?.value, cookie);
    await screenshot(page, 'demo-state.png');
  });

  test('the session cookie is HttpOnly: page scripts can neither read nor replace it', async (t) => {
    const { context, page } = await openPage(t);
    await page.goto('/');
    const cookie = await sessionCookie(context);
    assert.ok(cookie, 'the browser holds the session cookie');
    assert.equal(cookie.httpOnly, true);
    assert.equal(cookie.sameSite, 'Lax');
    assert.equal(cookie.path, '/');
    assert.equal(cookie.secure, false); // plain http on loopback
    assert.equal(cookie.domain, '127.0.0.1'); // host-only: no Domain attribute
    assert.ok(cookie.expires > Date.now() / 1000, 'a persistent cookie (Max-Age), not a browser-session one');

    const seen = await documentCookie(page);
    assert.ok(!seen.includes(`${cookieName}=`), `document.cookie shows the session cookie: ${seen}`);
    assert.ok(!seen.includes(cookie.value));

    // A script cannot shadow it with a readable cookie of the same name either.
    const afterWrite = await writeDocumentCookie(page, `${cookieName}=forged; path=/`);
    assert.ok(!afterWrite.includes(`${cookieName}=`), `the script wrote a session cookie: ${afterWrite}`);
    assert.equal((await sessionCookie(context))?.value, cookie.value);
    await page.reload();
    assert.equal(await textOf(page, '#hits'), '2', 'the same session continues');
    await screenshot(page, 'demo-cookie.png');
  });

  test('a second browser context is a different client with its own state', async (t) => {
    const first = await openPage(t);
    await first.page.goto('/');
    await addToCart(first.page, 'mug', 2);
    const firstCookie = (await sessionCookie(first.context))?.value;
    const firstMasked = await textOf(first.page, '#session-id');

    const second = await openPage(t);
    await second.page.goto('/');
    const secondCookie = (await sessionCookie(second.context))?.value;
    assert.ok(firstCookie && secondCookie);
    assert.notEqual(secondCookie, firstCookie);
    // Masked IDs are 4 random characters of 64: equal by chance once in 16 million runs.
    assert.notEqual(await textOf(second.page, '#session-id'), firstMasked);
    assert.equal(await textOf(second.page, '#hits'), '1');
    assert.equal(await textOf(second.page, '#state'), 'new');
    assert.deepEqual(await cartLines(second.page), []);
    assert.deepEqual(await textsOf(second.page, '#cart li'), ['empty']);
    await screenshot(second.page, 'demo-second-client.png');

    // The first client did not notice.
    await first.page.reload();
    assert.equal(await textOf(first.page, '#hits'), '3');
    assert.equal(await textOf(first.page, '#state'), 'continuing');
    assert.equal(await textOf(first.page, '#session-id'), firstMasked);
    assert.deepEqual(await cartLines(first.page), ['1 × Stoneware mug']);
    assert.equal((await sessionCookie(first.context))?.value, firstCookie);
  });

  test('the close button ends the session, and its old cookie brings nothing back', async (t) => {
    const { context, page } = await openPage(t);
    await page.goto('/');
    await addToCart(page, 'book', 2);
    const oldCookie = (await sessionCookie(context))?.value;
    assert.ok(oldCookie);

    // The 303 after closing expires the cookie, so the page it leads to is a new session.
    await submit(page, '#close', 1);
    assert.equal(await textOf(page, '#state'), 'new');
    assert.deepEqual(await cartLines(page), []);
    const newCookie = (await sessionCookie(context))?.value;
    assert.ok(newCookie, 'the fresh session has a cookie');
    assert.notEqual(newCookie, oldCookie);
    assert.notEqual(await textOf(page, '#session-id'), `${oldCookie.slice(0, 4)}…`);
    assert.equal((await server!.server.sessions.info(oldCookie)), undefined, 'the server forgot the closed session');
    await screenshot(page, 'demo-closed.png');

    // Replaying the old value (as a stolen or stale cookie would be) gets yet another session.
    await context.addCookies([{ name: cookieName, value: oldCookie, url: server!.url, httpOnly: true, sameSite: 'Lax' }]);
    await page.reload();
    assert.equal(await textOf(page, '#hits'), '1');
    assert.equal(await textOf(page, '#state'), 'new');
    assert.deepEqual(await cartLines(page), []);
    const replaced = (await sessionCookie(context))?.value;
    assert.ok(replaced && replaced !== oldCookie && replaced !== newCookie, 'the old value was not adopted');
  });

  test('after an idle suspension the page shows the session resumed with its cart', async (t) => {
    // A server of its own whose contexts leave memory after 1 s idle; the cookie lives on. Idle
    // time is judged on a clock the test moves, so a slow click cannot suspend the context
    // half-way through filling the cart.
    const clock = new ManualClock();
    const short = await startTestServer({ ...demoOptions, sessions: { processTimeout: '1s', cookieTimeout: '1h' } }, clock);
    t.after(() => short.close());
    const { context, page } = await openPage(t, short);
    await page.goto('/');
    await page.selectOption('#employee', '1');
    await submit(page, 'form[action="/me"] button', 2);
    await addToCart(page, 'tea', 3);
    await addToCart(page, 'tea', 4);
    await addToCart(page, 'mug', 5);
    await addToCart(page, 'book', 6);
    const cart = ['2 × Green tea', '1 × Stoneware mug', '1 × The 4D handbook'];
    assert.deepEqual(await cartLines(page), cart);
    const cookie = (await sessionCookie(context, short))?.value;
    assert.ok(cookie);

    assert.equal(short.server.sessions.stats.suspended.idle, 0, 'no suspend while the clock stands still');
    clock.advance(1_500);
    await waitFor(async () => ((await short.server.sessions.info(cookie))?.state === 'suspended'), 5000, 'the idle suspend');
    assert.equal(short.server.sessions.stats.suspended.idle, 1);
    await page.reload();
    assert.equal(await textOf(page, '#state'), 'resumed');
    assert.equal(await textOf(page, '#hits'), '7');
    assert.deepEqual(await cartLines(page), cart);
    assert.match(await textOf(page, '#preferences'), /^Preferences of Ada Lovelace: theme light, language en\.$/);
    assert.equal((await sessionCookie(context, short))?.value, cookie, 'the same session, not a new one');
    assert.equal(short.server.sessions.stats.resumed, 1);
    await screenshot(page, 'demo-resumed.png', updateDocs ? DOCS_SCREENSHOT : undefined);
  });
});
