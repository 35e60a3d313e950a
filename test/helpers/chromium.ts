import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { chromium, type BrowserContext, type Page } from 'playwright-core';

const CHROMIUM = '/usr/bin/chromium';
const ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--no-first-run',
  '--disable-sync',
];

export interface ChromiumProfile {
  context: BrowserContext;
  /** Closes the browser and removes its profile folder. */
  close(): Promise<void>;
}

/**
 * Headless Chromium in a throw-away profile. Called from a `before` hook with
 * its `this`: where no Chromium is installed the suite is skipped, not failed.
 */
export async function launchChromium(hook: Mocha.Context): Promise<ChromiumProfile> {
  if (!existsSync(CHROMIUM)) {
    console.log('skipped: chromium not installed');
    hook.skip();
  }
  const profile = mkdtempSync(path.join(tmpdir(), 'gw-chromium-'));
  const remove = () => rmSync(profile, { recursive: true, force: true });
  let context: BrowserContext;
  try {
    context = await chromium.launchPersistentContext(profile, { executablePath: CHROMIUM, headless: true, args: ARGS });
  } catch (e) {
    remove();
    throw e;
  }
  return {
    context,
    async close() {
      await context.close();
      remove();
    },
  };
}

/**
 * Records the page's script errors and console errors (CSP violations among
 * them) into `errors`. Refused API calls (400/401/403) are part of the
 * scenarios, so their console lines are not recorded.
 */
export function collectPageErrors(page: Page, errors: string[]): void {
  page.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error' && !/the server responded with a status of 40[013]/.test(m.text())) errors.push(`console: ${m.text()}`);
  });
}
