// Browser side of scripts/bench-web: opens the real-time cluster view and the history view in
// headless Chromium and prints what a user waits for.
//   BASE_URL, USER, PASSWORD, CLUSTER, SECONDS (how long to watch the live view), CHROMIUM
import { chromium } from 'playwright-core';

const BASE = process.env.BASE_URL;
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage'],
});
const page = await (await browser.newContext({ viewport: { width: 1400, height: 1000 } })).newPage();
await page.goto(`${BASE}/`);
await page.waitForSelector('#login-form');
await page.fill('#login-user', process.env.USER_NAME);
await page.fill('#login-password', process.env.PASSWORD);
await page.click('#login-form button[type=submit]');
await page.waitForSelector('#who button#logout');

// Real time: one resource class across every node of the cluster.
await page.goto(`${BASE}/#/cluster/${process.env.CLUSTER}`);
await page.waitForFunction(() => window.gridmonFrames.count > 2, null, { timeout: 60000 });
await page.evaluate(() => Object.assign(window.gridmonFrames, { count: 0, maxMs: 0, totalMs: 0 }));
await page.waitForTimeout(Number(process.env.SECONDS || 20) * 1000);
const f = await page.evaluate(() => window.gridmonFrames);
const nodes = await page.$$eval('#nodes tbody tr', (r) => r.length);
console.log(`live cluster view: ${nodes} nodes, ${f.count} frames of ${(f.bytes / 1024).toFixed(0)} KiB, `
  + `parse+draw mean ${(f.totalMs / Math.max(1, f.count)).toFixed(1)} ms, max ${f.maxMs.toFixed(1)} ms`);

// History: 7 days, every cluster; from navigation to the charts drawn.
const times = [];
for (let i = 0; i < 5; i++) {
  await page.goto(`${BASE}/#/`);
  await page.waitForSelector('#clusters');
  const t0 = Date.now();
  await page.goto(`${BASE}/#/history?range=7d`);
  await page.waitForFunction(() => Number(document.querySelector('#trend-cpu')?.dataset.points) > 0
    && document.querySelector('#fault-days tbody tr'), null, { timeout: 60000 });
  times.push(Date.now() - t0);
}
const info = await page.$eval('#h-info', (el) => el.textContent);
console.log(`history view, 7 days: loaded in ${times.join(', ')} ms (${info})`);
await browser.close();
