// Holds PAGES dashboard pages open in headless Chromium for SECONDS (scripts/bench-web with
// CLIENTS_KIND=chromium): the real-time views real browsers would show. Prints each page's frame
// count and parse+draw times at the end.
//   BASE_URL, USER_NAME, PASSWORD, VIEWS (comma-separated hash routes), SECONDS, CHROMIUM
import { chromium } from 'playwright-core';

const BASE = process.env.BASE_URL;
const views = process.env.VIEWS.split(',');
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage'],
});
const pages = [];
for (const view of views) {
  const page = await (await browser.newContext({ viewport: { width: 1400, height: 1000 } })).newPage();
  await page.goto(`${BASE}/`);
  await page.waitForSelector('#login-form');
  await page.fill('#login-user', process.env.USER_NAME);
  await page.fill('#login-password', process.env.PASSWORD);
  await page.click('#login-form button[type=submit]');
  await page.waitForSelector('#who button#logout');
  await page.goto(`${BASE}/${view}`);
  pages.push([view, page]);
}
console.log(`ready: ${pages.length} pages`);
await new Promise((r) => setTimeout(r, Number(process.env.SECONDS || 60) * 1000));
for (const [view, page] of pages) {
  const f = await page.evaluate(() => window.gridmonFrames);
  console.log(`page ${view}: ${f.count} frames of ${(f.bytes / 1024).toFixed(0)} KiB, parse+draw mean `
    + `${(f.totalMs / Math.max(1, f.count)).toFixed(1)} ms, max ${f.maxMs.toFixed(1)} ms`);
}
await browser.close();
