// Browser test of the reports page: contacts on several channels (some answered, one
// abandoned) through the API, then the supervisor page links to /reports/, which shows the
// KPIs, SVG charts and the table by group, filters by one channel, changes the dimension,
// and downloads the CSV. Screenshots go to $ARTIFACTS.
//
// Started by tests/browser/run_reports.py (OMNICC_URL, OMNICC_TOKEN, ARTIFACTS, DOWNLOADS).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const { chromium } = require('playwright-core');

const BASE = process.env.OMNICC_URL;
const TOKEN = process.env.OMNICC_TOKEN;
const ARTIFACTS = process.env.ARTIFACTS;
const WAIT = 15000;

async function api(method, p, body) {
  const res = await fetch(BASE + p, {
    method,
    headers: { Authorization: 'Bearer ' + TOKEN, ...(body ? { 'Content-Type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await res.text();
  assert.ok(res.ok, `${method} ${p}: ${res.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

async function shot(page, name) {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: path.join(ARTIFACTS, name + '.png'), fullPage: true });
}

async function offered(id) {
  for (let i = 0; i < 200; i++) {
    const ix = await api('GET', '/v1/interactions/' + id);
    if (ix.state === 'offered') return ix;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(id + ' never offered');
}

test('reports page: KPIs, charts, filters and CSV', async () => {
  await api('POST', '/v1/agents', { id: 'rp-alice', name: 'Alice', capacity: { voice: 5, email: 5, webchat: 5 } });
  await api('PUT', '/v1/agents/rp-alice/state', { state: 'available' });
  const plan = [['voice', 'complete'], ['voice', 'complete'], ['email', 'complete'],
    ['webchat', 'abandon'], ['voice', 'wrapup']];
  let n = 0;
  for (const [channel, how] of plan) {
    const r = await api('POST', '/v1/interactions', { channel, external_id: 'rp-' + (++n), subject: 'report ' + n });
    const ix = await offered(r.id);
    if (how === 'abandon') {
      await api('POST', `/v1/interactions/${r.id}/abandon`, { reason: 'left' });
      continue;
    }
    await api('POST', `/v1/reservations/${ix.reservation}/accept`);
    await api('POST', `/v1/interactions/${r.id}/${how}`, how === 'wrapup' ? { disposition: 'done' } : {});
  }

  const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox'] });
  try {
    const ctx = await browser.newContext({ acceptDownloads: true, viewport: { width: 1280, height: 900 } });
    const page = await ctx.newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(String(e)));
    page.on('console', (m) => { if (m.type() === 'error' && !/status of (400|404)/.test(m.text())) errors.push(m.text()); });
    // every resource answers, except the browser's own favicon probe (no favicon served)
    page.on('response', (r) => {
      if (r.status() >= 400 && !r.url().endsWith('/favicon.ico') && !r.url().includes('/v1/reports/')) {
        errors.push(r.status() + ' ' + r.url());
      }
    });

    // the supervisor page links to the reports, and the session carries over
    await page.goto(BASE + '/supervisor/');
    await page.fill('#token', TOKEN);
    await page.click('#signin button[type=submit]');
    await page.waitForSelector('#reports-link', { state: 'visible', timeout: WAIT });
    await page.click('#reports-link');
    await page.waitForURL(BASE + '/reports/', { timeout: WAIT });
    await page.waitForSelector('#board:not([hidden])', { timeout: WAIT });

    const kpi = async (label) => page.textContent(`.kpi[data-kpi="${label}"] b`);
    await page.waitForFunction(() => document.querySelectorAll('.kpi').length > 0, null, { timeout: WAIT });
    assert.equal(await kpi('Offered'), '5');
    assert.equal(await kpi('Answered'), '4');
    assert.equal(await kpi('Abandoned'), '1');
    assert.equal(await kpi('Abandon rate'), '20.0 %');
    assert.equal(await kpi('Service level'), '80.0 %');
    assert.ok(await page.locator('#chart-volume rect').count() > 3, 'volume chart has bars');
    assert.ok(await page.locator('#chart-sl circle').count() >= 1, 'service level chart has points');
    const keys = await page.locator('#groups tbody tr td:first-child').allTextContents();
    assert.deepEqual(keys, ['email', 'voice', 'webchat']);
    await shot(page, 'reports-by-channel');

    // one channel only
    await page.selectOption('#only', 'voice');
    assert.equal(await kpi('Offered'), '3');
    assert.deepEqual(await page.locator('#groups tbody tr td:first-child').allTextContents(), ['voice']);
    await shot(page, 'reports-voice-only');

    // by segment, by hour
    await page.selectOption('#interval', 'hour');
    await page.selectOption('#group_by', 'segment');
    await page.waitForFunction(() => document.getElementById('dim-name').textContent === 'segment', null, { timeout: WAIT });
    assert.deepEqual(await page.locator('#groups tbody tr td:first-child').allTextContents(), ['standard']);
    assert.equal(await kpi('Offered'), '5');
    await shot(page, 'reports-by-segment-hourly');

    // CSV download of what is on screen
    const [dl] = await Promise.all([page.waitForEvent('download', { timeout: WAIT }), page.click('#csv')]);
    const file = path.join(process.env.DOWNLOADS, 'report.csv');
    await dl.saveAs(file);
    const csv = fs.readFileSync(file, 'utf8').trim().split('\n');
    assert.match(csv[0], /^period_start,period_end,segment,offered,answered,abandoned/);
    const totals = csv.slice(1).filter((l) => l.includes('"(total)"'));
    assert.equal(totals.reduce((s, l) => s + Number(l.split(',')[3]), 0), 5);

    // a refused range shows the error, not a blank page
    await page.fill('#from', '2000-01-01');
    await page.click('#run');
    await page.waitForSelector('#error:not(:empty)', { timeout: WAIT });
    await shot(page, 'reports-error');
    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
  }
});
