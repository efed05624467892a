// Browser test: a customer on the insurer's site (another origin) chats through the embedded
// widget; an agent in another browser context gets the offer with the screen pop (the
// customer's earlier phone call and email in one timeline), accepts, and they exchange
// messages; reloading either page loses nothing; markup typed by the customer renders as
// text; the supervisor sees the queue change. Screenshots of every page go to $ARTIFACTS.
//
// Started by tests/browser/run.py, which runs redis-server and omniccd and passes:
// OMNICC_URL, OMNICC_TOKEN, ARTIFACTS. Debian's chromium, driven by playwright-core.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const { chromium } = require('playwright-core');

const BASE = process.env.OMNICC_URL;
const TOKEN = process.env.OMNICC_TOKEN;
const SITE_PORT = Number(process.env.SITE_PORT);
const ARTIFACTS = process.env.ARTIFACTS;
const SITE = `http://localhost:${SITE_PORT}`;
const WAIT = 15000;
const XSS = 'Hello <b>bold</b> <img src=x onerror="window.__xss=1"><script>window.__xss=2</script> & co';

async function api(method, p, body, token = TOKEN) {
  const res = await fetch(BASE + p, {
    method,
    headers: { Authorization: 'Bearer ' + token, ...(body ? { 'Content-Type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await res.text();
  assert.ok(res.ok, `${method} ${p}: ${res.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

// The insurer's page, on its own origin, with the one script tag.
function startSite() {
  const page = `<!doctype html><html><head><meta charset="utf-8"><title>Insurer</title></head>
<body><h1>Example Insurance</h1><p>Your policy, your claims, your questions.</p>
<script src="${BASE}/chat/widget.js" async data-title="Chat with Example Insurance"></script>
</body></html>`;
  const server = http.createServer((req, res) => {
    res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' });
    res.end(page);
  });
  return new Promise((resolve) => server.listen(SITE_PORT, '127.0.0.1', () => resolve(server)));
}

async function shot(page, name) {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: path.join(ARTIFACTS, name + '.png'), fullPage: true });
}

test('web chat, agent desktop and supervisor in a real browser', async (t) => {
  // -- the customer's history before the chat: a phone call and an email
  await api('POST', '/v1/agents', { id: 'alice', name: 'Alice Agent', capacity: { webchat: 3 } });
  const { token: agentToken } = await api('POST', '/v1/agents/alice/tokens');
  await api('POST', '/v1/interactions', {
    channel: 'voice', external_id: 'CA-browser-1', from: '+34 600 111 222',
    customer: { policy: 'PL-2024-001234', name: 'Ana García' }, subject: 'Windscreen broken',
  });
  await api('POST', '/v1/interactions', {
    channel: 'email', external_id: '<browser-1@mail.example>', from: 'ana@example.com',
    customer: { policy: 'PL-2024-001234' }, subject: 'Photos of the windscreen', body: 'Photos attached',
  });

  const site = await startSite();
  const browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--headless', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--no-first-run'],
  });
  const errors = [];
  const watch = (page, who) => {
    page.on('pageerror', (e) => errors.push(`${who}: ${e.message}`));
    page.on('dialog', (d) => { errors.push(`${who}: dialog ${d.message()}`); d.dismiss(); });
  };
  try {
    const sup = await (await browser.newContext({ viewport: { width: 1280, height: 720 } })).newPage();
    const agent = await (await browser.newContext({ viewport: { width: 1280, height: 860 } })).newPage();
    const cust = await (await browser.newContext({ viewport: { width: 1000, height: 760 } })).newPage();
    watch(sup, 'supervisor');
    watch(agent, 'agent');
    watch(cust, 'customer');
    const claimsRow = sup.locator('tr[data-queue="claims"]');

    await t.test('supervisor signs in and sees the queues', async () => {
      await sup.goto(BASE + '/supervisor/');
      await sup.fill('#token', TOKEN);
      await sup.click('#signin button[type=submit]');
      await claimsRow.locator('.c-waiting').filter({ hasText: /^0$/ }).waitFor({ timeout: WAIT });
      await sup.locator('#conn', { hasText: 'live' }).waitFor({ timeout: WAIT });
      await shot(sup, 'supervisor-idle');
    });

    await t.test('agent signs in (offline)', async () => {
      await agent.goto(BASE + '/agent/');
      await agent.fill('#agent-id', 'alice');
      await agent.fill('#agent-token', agentToken);
      await agent.click('#signin button[type=submit]');
      await agent.locator('#conn', { hasText: 'live' }).waitFor({ timeout: WAIT });
      await shot(agent, 'agent-signed-in');
    });

    await t.test('the stand-alone chat page shows the pre-chat form', async () => {
      const p = await (await browser.newContext()).newPage();
      watch(p, 'chat page');
      await p.goto(BASE + '/chat/');
      await p.locator('.occ-prechat input[name=name]').waitFor({ timeout: WAIT });
      await p.locator('.occ-prechat select option[value=claims]').waitFor({ state: 'attached', timeout: WAIT });
      await shot(p, 'chat-page');
      await p.context().close();
    });

    await t.test('customer opens the widget on the insurer site and writes', async () => {
      await cust.goto(SITE + '/');
      await cust.click('.occ-launcher');
      await cust.fill('.occ-prechat input[name=name]', 'Ana García');
      await cust.fill('.occ-prechat input[name=email]', 'ana@example.com');
      await cust.fill('.occ-prechat input[name=policy]', 'PL-2024-001234');
      await cust.selectOption('.occ-prechat select', 'claims');
      await shot(cust, 'customer-prechat');
      await cust.click('.occ-start');
      await cust.locator('.occ-status', { hasText: 'Waiting for an agent' }).waitFor({ timeout: WAIT });
      await cust.fill('.occ-text', XSS);
      await cust.click('.occ-send');
      await cust.locator('.occ-customer:not(.occ-pending) .occ-body').first().waitFor({ timeout: WAIT });
      await shot(cust, 'customer-waiting');
    });

    await t.test('supervisor sees the chat waiting', async () => {
      await claimsRow.locator('.c-waiting').filter({ hasText: /^1$/ }).waitFor({ timeout: WAIT });
      await shot(sup, 'supervisor-waiting');
    });

    await t.test('agent gets the offer with the screen pop and one timeline', async () => {
      await agent.selectOption('#presence', 'available');
      await agent.locator('#offers .item').first().waitFor({ timeout: WAIT });
      await agent.locator('.cust-name', { hasText: 'Ana García' }).waitFor({ timeout: WAIT });
      const cd = await agent.locator('.countdown').textContent();
      assert.match(cd, /^\d+ s$/);
      // the phone call and the email come before the chat, in one timeline
      await agent.locator('.timeline li', { hasText: 'voice inbound from +34 600 111 222: Windscreen broken' }).waitFor({ timeout: WAIT });
      await agent.locator('.timeline li', { hasText: 'email inbound from ana@example.com' }).waitFor({ timeout: WAIT });
      await agent.locator('.verified', { hasText: 'identity not verified' }).waitFor({ timeout: WAIT });
      // the customer's message, markup and all, as text
      await agent.locator('.transcript .msg-text', { hasText: '<b>bold</b>' }).waitFor({ timeout: WAIT });
      await shot(agent, 'agent-offer');
    });

    await t.test('agent accepts; they exchange messages', async () => {
      await agent.click('.accept');
      await agent.locator('#work .item').first().waitFor({ timeout: WAIT });
      await cust.locator('.occ-sys', { hasText: 'Alice Agent joined the chat' }).waitFor({ timeout: WAIT });
      await agent.fill('.reply textarea', 'Hi Ana, I can see your windscreen claim.');
      await agent.click('.reply button');
      await cust.locator('.occ-agent .occ-body', { hasText: 'I can see your windscreen claim' }).waitFor({ timeout: WAIT });
      // the customer types: the agent sees it
      // typing is announced at most every 2 s by the widget and 1 s by the server
      await cust.locator('.occ-text').pressSequentially('Thank', { delay: 600 });
      await agent.locator('.typing', { hasText: 'is typing' }).waitFor({ timeout: WAIT });
      await cust.locator('.occ-text').pressSequentially('s!');
      await cust.locator('.occ-text').press('Enter');
      await agent.locator('.transcript .msg-text', { hasText: 'Thanks!' }).waitFor({ timeout: WAIT });
      await shot(agent, 'agent-chatting');
      await shot(cust, 'customer-chatting');
    });

    await t.test('text is never markup', async () => {
      for (const p of [agent, cust]) {
        assert.equal(await p.evaluate(() => window.__xss), undefined);
      }
      assert.equal(await agent.locator('.transcript b, .transcript img, .transcript script').count(), 0);
      assert.equal(await cust.locator('.occ-log b, .occ-log img, .occ-log script').count(), 0);
      const shown = await cust.locator('.occ-customer .occ-body').first().textContent();
      assert.equal(shown, XSS);
    });

    await t.test('supervisor sees the queue drained and the agent busy', async () => {
      await claimsRow.locator('.c-waiting').filter({ hasText: /^0$/ }).waitFor({ timeout: WAIT });
      await claimsRow.locator('.c-busy').filter({ hasText: /^1$/ }).waitFor({ timeout: WAIT });
      await shot(sup, 'supervisor-busy');
    });

    await t.test('reloading either page loses nothing', async () => {
      await cust.reload();
      for (const text of ['<b>bold</b>', 'I can see your windscreen claim', 'Thanks!']) {
        await cust.locator('.occ-body', { hasText: text }).waitFor({ timeout: WAIT });
      }
      await cust.locator('.occ-sys', { hasText: 'Alice Agent joined the chat' }).waitFor({ timeout: WAIT });
      assert.equal(await cust.locator('.occ-msg').count(), 3);

      await agent.reload();
      await agent.locator('#conn', { hasText: 'live' }).waitFor({ timeout: WAIT });
      await agent.locator('#work .item').first().waitFor({ timeout: WAIT });
      for (const text of ['<b>bold</b>', 'I can see your windscreen claim', 'Thanks!']) {
        await agent.locator('.transcript .msg-text', { hasText: text }).waitFor({ timeout: WAIT });
      }
      assert.equal(await agent.locator('.transcript .msg').count(), 3);
      // and the conversation goes on
      await agent.fill('.reply textarea', 'Still here after the reload.');
      await agent.click('.reply button');
      await cust.locator('.occ-agent .occ-body', { hasText: 'Still here after the reload.' }).waitFor({ timeout: WAIT });
      await cust.fill('.occ-text', 'Me too.');
      await cust.click('.occ-send');
      await agent.locator('.transcript .msg-text', { hasText: 'Me too.' }).waitFor({ timeout: WAIT });
      assert.equal(await cust.locator('.occ-msg').count(), 5);
    });

    await t.test('agent adds a note and wraps up; the customer sees the end', async () => {
      await agent.fill('.note-form textarea', 'Customer sent photos; windscreen claim opened.');
      await agent.click('.note-form button');
      await agent.locator('.timeline li', { hasText: 'note by alice: Customer sent photos' }).waitFor({ timeout: WAIT });
      await shot(agent, 'agent-note');
      await agent.selectOption('.wrapup-form select', 'claim_opened');
      await agent.click('.wrapup-form button');
      await cust.locator('.occ-endedtext', { hasText: 'The agent ended the chat' }).waitFor({ timeout: WAIT });
      await agent.locator('#no-work').waitFor({ state: 'visible', timeout: WAIT });
      await shot(cust, 'customer-ended');
      // the end screen offers the transcript by email (no SMTP relay here: not available)
      // (the box unticks itself when nothing can be sent, hence a click, not check())
      await cust.click('.occ-mailcheck');
      await cust.locator('.occ-mailnote', { hasText: 'Transcripts by email are not available here' }).waitFor({ timeout: WAIT });
      assert.equal(await cust.locator('.occ-mailcheck').isChecked(), false);
      await shot(agent, 'agent-after-wrapup');
      await claimsRow.locator('.c-accepted').filter({ hasText: /^1$/ }).waitFor({ timeout: WAIT });
      await shot(sup, 'supervisor-after');
    });

    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
    site.close();
  }
});
