/**
 * Real-browser plumbing for the browser suites: Debian's Chromium driven by playwright-core
 * (which downloads no browser of its own), a fresh profile per launch, a skip-or-fail rule for
 * machines without Chromium, screenshots, and small waits on page content.
 *
 * RESIDENT_CHROMIUM points the suites at another Chromium (default /usr/bin/chromium).
 */
import { accessSync, constants, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { IN_CI, ROOT } from '../helpers.ts';

export const CHROMIUM_PATH = process.env.RESIDENT_CHROMIUM || '/usr/bin/chromium';
export const ARTIFACTS_DIR = join(ROOT, 'test-artifacts/browser');

function chromiumMissing(): string | undefined {
  try {
    accessSync(CHROMIUM_PATH, constants.X_OK);
    return undefined;
  } catch (error) {
    return `no executable Chromium at ${CHROMIUM_PATH} (${(error as NodeJS.ErrnoException).code}); install it (apt-get install chromium) or set RESIDENT_CHROMIUM`;
  }
}

/**
 * The `skip` option for the browser suites: a reason when Chromium is missing, else false.
 * On CI a missing browser must not pass as a quiet skip, so importing this module throws there.
 */
export const browserSkip: string | false = (() => {
  const missing = chromiumMissing();
  if (missing === undefined) return false;
  if (IN_CI) throw new Error(`browser tests cannot run on CI: ${missing}`);
  return `browser tests skipped: ${missing}`;
})();

export interface LaunchedChromium {
  browser: Browser;
  /** Closes the browser and removes its profile folder. */
  close(): Promise<void>;
}

/**
 * Launches headless Chromium on a fresh profile folder of our own. `chromium.launch` refuses a
 * --user-data-dir argument, so the browser comes from launchPersistentContext (which takes the
 * folder) and each test still opens its own isolated context with `browser.newContext()`.
 */
export async function launchChromium(): Promise<LaunchedChromium> {
  const userDataDir = mkdtempSync(join(tmpdir(), 'resident-chromium-'));
  try {
    const persistent = await chromium.launchPersistentContext(userDataDir, {
      executablePath: CHROMIUM_PATH,
      headless: true,
      args: [
        '--no-sandbox', // containers often lack the user namespaces the sandbox needs
        '--disable-gpu',
        // No traffic of its own: only the pages we load talk to the network.
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        '--no-first-run',
        '--disable-quic',
      ],
    });
    const browser = persistent.browser();
    if (!browser) throw new Error('launchPersistentContext gave no Browser to open contexts on');
    return {
      browser,
      close: async () => {
        // Closing the persistent context ends the browser process, which lets go of the folder.
        await persistent.close();
        rmSync(userDataDir, { recursive: true, force: true });
      },
    };
  } catch (error) {
    rmSync(userDataDir, { recursive: true, force: true });
    throw error;
  }
}

/**
 * A full-page PNG into test-artifacts/browser/ (gitignored); `alsoTo` (relative to the repository
 * root) writes the same image somewhere else too. Returns the artifact's path.
 */
export async function screenshot(page: Page, name: string, alsoTo?: string): Promise<string> {
  const path = join(ARTIFACTS_DIR, name);
  mkdirSync(ARTIFACTS_DIR, { recursive: true });
  const png = await page.screenshot({ path, fullPage: true });
  if (alsoTo) {
    const copy = join(ROOT, alsoTo);
    mkdirSync(dirname(copy), { recursive: true });
    writeFileSync(copy, png);
  }
  return path;
}

/** The trimmed text of the first element matching `selector` (waits for it to exist). */
export async function textOf(page: Page, selector: string): Promise<string> {
  return ((await page.locator(selector).first().textContent()) ?? '').trim();
}

/** The trimmed texts of every element matching `selector`, e.g. the cart's lines. */
export async function textsOf(page: Page, selector: string): Promise<string[]> {
  return (await page.locator(selector).allTextContents()).map((text) => text.trim());
}

// Only what the in-page functions below use; tsconfig has no DOM lib.
declare const document: {
  cookie: string;
  querySelector(selector: string): { textContent: string | null } | null;
};

/**
 * Waits until `selector`'s trimmed text is `expected`, across navigations: after a click on a
 * form button the old page is still there for a moment, so reading at once could see it.
 */
export async function waitForText(page: Page, selector: string, expected: string, timeout = 5000): Promise<void> {
  try {
    // Polled on a timer: polling on animation frames would stall in a page that is not painted.
    await page.waitForFunction(
      ([sel, text]) => document.querySelector(sel)?.textContent?.trim() === text,
      [selector, expected] as const,
      { timeout, polling: 25 },
    );
  } catch (error) {
    const actual = await page.locator(selector).first().textContent({ timeout: 1000 }).catch(() => '(no such element)');
    throw new Error(`${selector} never read ${JSON.stringify(expected)} (last: ${JSON.stringify(actual)}): ${(error as Error).message}`);
  }
}

/** What the page's own scripts see as cookies. */
export function documentCookie(page: Page): Promise<string> {
  return page.evaluate(() => document.cookie);
}

/** A page script tries to overwrite a cookie; returns what document.cookie reads afterwards. */
export function writeDocumentCookie(page: Page, cookie: string): Promise<string> {
  return page.evaluate((value) => {
    document.cookie = value;
    return document.cookie;
  }, cookie);
}
