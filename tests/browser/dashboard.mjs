// Drives Debian's Chromium (headless) through the gridmon dashboard, for tests/it/web.rs.
//
// Environment: BASE_URL; OPERATOR / OPERATOR_PASSWORD and VIEWER / VIEWER_PASSWORD (logins);
// AGENT_NODE (c/g/n of a real agent) with PROGRAM (a program it supervises); SIM_NODE (a
// simulated node with a process table); CLUSTER (a simulated cluster); EXPECT_DAYS (comma-
// separated YYYY-MM-DD the history must show); SCREENSHOT_DIR (optional: where to save one PNG
// per view); CHROMIUM (default /usr/bin/chromium).
//
// Prints one line per check and exits non-zero at the first failure.
import { chromium } from 'playwright-core';

const env = (k, d) => {
  const v = process.env[k] ?? d;
  if (v === undefined) throw new Error(`${k} is not set`);
  return v;
};
const BASE = env('BASE_URL');
const AGENT_NODE = env('AGENT_NODE');
const PROGRAM = env('PROGRAM');
const SIM_NODE = env('SIM_NODE');
const CLUSTER = env('CLUSTER');
const DAYS = env('EXPECT_DAYS').split(',').filter(Boolean);
const SHOTS = process.env.SCREENSHOT_DIR;

// This machine has no outside network: everything that would reach for it is off.
const browser = await chromium.launch({
  executablePath: env('CHROMIUM', '/usr/bin/chromium'),
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage'],
});

let failed = false;
function check(ok, what, detail = '') {
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${what}${detail ? `: ${detail}` : ''}`);
  if (!ok) failed = true;
  return ok;
}

async function session(user, password) {
  const context = await browser.newContext({ viewport: { width: 1400, height: 1000 } });
  const page = await context.newPage();
  const errors = [];
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto(`${BASE}/`);
  await page.waitForSelector('#login-form', { timeout: 15000 });
  await page.fill('#login-user', user);
  await page.fill('#login-password', password);
  await page.click('#login-form button[type=submit]');
  await page.waitForSelector('#who button#logout', { timeout: 15000 });
  return { context, page, errors };
}

async function view(s, name, hash, ready, arg = null) {
  s.errors.length = 0;
  await s.page.goto(`${BASE}/${hash}`);
  await s.page.waitForFunction(ready, arg, { timeout: 30000 });
  await s.page.waitForTimeout(1500);
  check(s.errors.length === 0, `${name} view loads without console errors`, s.errors.join(' | '));
  if (SHOTS) await s.page.screenshot({ path: `${SHOTS}/${name}.png` });
}

try {
  const op = await session(env('OPERATOR'), env('OPERATOR_PASSWORD'));
  check(true, 'operator logs in');

  await view(op, 'grid', '#/', () => document.querySelectorAll('#clusters .card').length >= 2
    && document.querySelectorAll('#static tbody tr[data-cluster]').length >= 1);
  await view(op, 'cluster', `#/cluster/${CLUSTER}`, () => document.querySelector('#trend')?.dataset.lastT
    && document.querySelectorAll('#nodes tbody tr').length > 0);

  // The live chart's newest point moves while the simulator publishes.
  const first = await op.page.$eval('#trend', (el) => Number(el.dataset.lastT));
  let moved = false;
  for (let i = 0; i < 40 && !moved; i++) {
    await op.page.waitForTimeout(500);
    moved = (await op.page.$eval('#trend', (el) => Number(el.dataset.lastT))) > first;
  }
  check(moved, 'the live chart\'s latest point changes', `first ${first}`);

  await view(op, 'node', `#/node/${AGENT_NODE}`, (p) => document.querySelector('#chart-cpu')?.dataset.lastT
    && document.querySelector(`#programs tr[data-program="${p}"]`), PROGRAM);

  // Sorting the process table: by name, then by CPU (descending).
  await view(op, 'processes', `#/procs/${SIM_NODE}`, () => document.querySelectorAll('#procs tbody tr').length > 5);
  await op.page.click('#procs th[data-sort=name]');
  const names = await op.page.$$eval('#procs tbody td.name', (tds) => tds.map((t) => t.textContent));
  check(names.every((n, i) => i === 0 || names[i - 1].localeCompare(n) <= 0), 'sorted by name', names.slice(0, 5).join(','));
  await op.page.click('#procs th[data-sort=cpu]');
  const cpu = await op.page.$$eval('#procs tbody td.cpu', (tds) => tds.map((t) => Number(t.textContent)));
  check(cpu.length > 5 && cpu.every((v, i) => i === 0 || cpu[i - 1] >= v), 'sorted by CPU, highest first', cpu.slice(0, 8).join(','));
  check(cpu[0] > cpu[cpu.length - 1], 'the CPU column varies', `${cpu[0]} .. ${cpu[cpu.length - 1]}`);

  // History: the days the test loaded, trends and faults per day.
  await view(op, 'history', '#/history?range=7d', () => document.querySelectorAll('#fault-days tbody tr[data-day]').length > 0
    && Number(document.querySelector('#trend-cpu')?.dataset.points) > 0);
  const days = await op.page.$$eval('#fault-days tbody tr[data-day]', (trs) => trs.map((t) => t.dataset.day));
  for (const d of DAYS) check(days.includes(d), `history shows ${d}`, days.join(','));

  // An operator restart through the signed-command path.
  await op.page.goto(`${BASE}/#/procs/${AGENT_NODE}`);
  const button = `#programs button[data-act=restart][data-program="${PROGRAM}"]`;
  await op.page.waitForSelector(button, { timeout: 30000 });
  const pidBefore = await op.page.$eval(`#programs tr[data-program="${PROGRAM}"] td[data-pid]`, (td) => td.textContent);
  await op.page.click(button);
  await op.page.waitForSelector('#modal:not([hidden])');
  await op.page.click('#confirm-yes');
  await op.page.waitForFunction(() => /ok|failed|\d{3}/.test(document.querySelector('#action-result')?.className + document.querySelector('#action-result')?.textContent)
    && !document.querySelector('#action-result').textContent.endsWith('sent…'), null, { timeout: 30000 });
  const result = await op.page.$eval('#action-result', (el) => ({ cls: el.className, text: el.textContent }));
  check(result.cls === 'ok', 'the operator restart succeeds', result.text);
  let pidAfter = pidBefore;
  for (let i = 0; i < 60 && pidAfter === pidBefore; i++) {
    await op.page.waitForTimeout(500);
    pidAfter = await op.page.$eval(`#programs tr[data-program="${PROGRAM}"] td[data-pid]`, (td) => td.textContent);
  }
  check(pidAfter !== pidBefore && pidAfter !== '–', 'the program has a new pid', `${pidBefore} -> ${pidAfter}`);
  let audited = false;
  for (let i = 0; i < 60 && !audited; i++) {
    await op.page.waitForTimeout(1000);
    audited = await op.page.$$eval('#audit tbody tr', (trs, who) => trs.some((tr) => tr.textContent.includes('restart') && tr.textContent.includes(who)), env('OPERATOR'));
  }
  check(audited, 'the restart appears in the command audit with the user\'s name');
  if (SHOTS) await op.page.screenshot({ path: `${SHOTS}/processes-action.png` });

  // A viewer sees no actions, and the API refuses one anyway.
  const viewer = await session(env('VIEWER'), env('VIEWER_PASSWORD'));
  await viewer.page.goto(`${BASE}/#/procs/${AGENT_NODE}`);
  await viewer.page.waitForSelector(`#programs tr[data-program="${PROGRAM}"]`, { timeout: 30000 });
  check((await viewer.page.$$('#programs button[data-act]')).length === 0, 'a viewer sees no action buttons');
  const status = await viewer.page.evaluate(async ([node, program]) => {
    const s = await (await fetch('/api/session')).json();
    const r = await fetch(`/api/nodes/${node}/command`, {
      method: 'POST', headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': s.csrf },
      body: JSON.stringify({ op: 'restart', program }),
    });
    return r.status;
  }, [AGENT_NODE, PROGRAM]);
  check(status === 403, 'a viewer cannot restart (403)', String(status));
} catch (e) {
  check(false, 'browser run', e.stack || String(e));
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
