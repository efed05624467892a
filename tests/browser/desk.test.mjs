// Browser test: the agent desktop works an email. A customer's message with a photo (PNG) and
// a PDF arrives through POST /v1/email/inbound and is offered to the agent, who accepts it,
// reads it (headers, the text without its quoted part, the quoted part on demand), sees the
// photo (the thumbnail really decodes) and downloads the PDF (the same bytes), then replies
// with an attachment and copies (Cc). The SMTP server started by run_desk.py receives the
// reply threaded (In-Reply-To, References) with the attachment, and the desktop shows it as
// sent without a reload. Then a visitor of the web chat who gave no email asks for the
// transcript and is told it cannot be sent. Screenshots of every step go to $ARTIFACTS.
//
// A fax then arrives from a fax server (POST /v1/fax/inbound, signed) and the agent sees
// each of its pages as a picture.
//
// Started by tests/browser/run_desk.py: OMNICC_URL, OMNICC_TOKEN, SMTP_DIR, FAX_TIFF,
// FAX_SECRET, ARTIFACTS.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import crypto from 'node:crypto';

const require = createRequire(import.meta.url);
const { chromium } = require('playwright-core');

const BASE = process.env.OMNICC_URL;
const TOKEN = process.env.OMNICC_TOKEN;
const SMTP_DIR = process.env.SMTP_DIR;
const ARTIFACTS = process.env.ARTIFACTS;
const WAIT = 15000;
const CUSTOMER_MSGID = `<desk-${process.pid}-${Date.now()}@customer.example>`;

async function api(method, p, body, token = TOKEN, type = 'application/json') {
  const res = await fetch(BASE + p, {
    method,
    headers: { Authorization: 'Bearer ' + token, ...(body ? { 'Content-Type': type } : {}) },
    body: body ? (typeof body === 'string' || Buffer.isBuffer(body) ? body : JSON.stringify(body)) : undefined,
  });
  const text = await res.text();
  assert.ok(res.ok, `${method} ${p}: ${res.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

async function shot(page, name) {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: path.join(ARTIFACTS, name + '.png'), fullPage: true });
}

function b64lines(buf) {
  return buf.toString('base64').replace(/.{1,76}/g, '$&\r\n');
}

// A small PDF, byte for byte what the agent must get back.
const PDF = Buffer.from('%PDF-1.4\n1 0 obj <</Type /Catalog /Pages 2 0 R>> endobj\n' +
  '2 0 obj <</Type /Pages /Kids [] /Count 0>> endobj\ntrailer <</Root 1 0 R>>\n%%EOF\n' +
  'policy PL-2024-009876 ' + 'x'.repeat(700) + '\n', 'latin1');
// What the agent attaches to the reply.
const ESTIMATE = Buffer.concat([Buffer.from('%PDF-1.4\n% repair estimate\n'), Buffer.from(Array.from({ length: 3000 }, (_, i) => i % 256))]);

function inboundMessage(png) {
  return [
    'From: Marta Ruiz <marta@customer.example>',
    'Reply-To: marta.home@customer.example',
    'To: claims@insurer.example',
    'Cc: broker@agency.example',
    'Subject: Hail damage <b>urgent</b>',
    'Date: Tue, 4 Jun 2024 09:15:00 +0200',
    'Message-ID: ' + CUSTOMER_MSGID,
    'References: <older-desk@customer.example>',
    'MIME-Version: 1.0',
    'Content-Type: multipart/mixed; boundary="XYZ"',
    '',
    '--XYZ',
    'Content-Type: text/plain; charset=utf-8',
    '',
    'Hello, hail dented the roof of my car. Photo and policy attached.',
    'Marta',
    '',
    'On Mon, 3 Jun 2024, Acme Claims wrote:',
    '> Please send us a photo of the damage.',
    '> Regards',
    '--XYZ',
    'Content-Type: image/png; name="roof.png"',
    'Content-Disposition: attachment; filename="roof.png"',
    'Content-Transfer-Encoding: base64',
    '',
    b64lines(png).trimEnd(),
    '--XYZ',
    'Content-Type: application/pdf; name="policy.pdf"',
    'Content-Disposition: attachment; filename="policy.pdf"',
    'Content-Transfer-Encoding: base64',
    '',
    b64lines(PDF).trimEnd(),
    '--XYZ--',
    '',
  ].join('\r\n');
}

// The messages the SMTP server accepted (msg-N.eml), as raw text.
function received() {
  if (!fs.existsSync(SMTP_DIR)) return [];
  return fs.readdirSync(SMTP_DIR).filter((f) => /^msg-\d+\.eml$/.test(f))
    .map((f) => fs.readFileSync(path.join(SMTP_DIR, f), 'latin1'));
}

async function until(fn, what, ms = WAIT) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error('timed out waiting for ' + what);
    await new Promise((r) => setTimeout(r, 100));
  }
}

// One header of a raw message (unfolded).
function header(raw, name) {
  const head = raw.split(/\r?\n\r?\n/)[0].replace(/\r?\n[ \t]+/g, ' ');
  const m = new RegExp('^' + name + ':[ \\t]*(.*)$', 'mi').exec(head);
  return m ? m[1].trim() : null;
}

// The decoded bytes of the MIME part whose headers name `filename`.
function attachmentBytes(raw, filename) {
  const bm = /boundary="?([^";\r\n]+)"?/i.exec(raw);
  assert.ok(bm, 'a multipart message');
  for (const part of raw.split('--' + bm[1])) {
    const cut = part.search(/\r?\n\r?\n/);
    if (cut < 0) continue;
    const head = part.slice(0, cut).replace(/\r?\n[ \t]+/g, ' ');
    if (!head.includes(filename)) continue;
    assert.match(head, /Content-Transfer-Encoding:\s*base64/i);
    return Buffer.from(part.slice(cut).replace(/\s+/g, ''), 'base64');
  }
  return null;
}

test('agent desktop: an email with attachments, read and answered in a real browser', async (t) => {
  await api('POST', '/v1/agents', { id: 'bob', name: 'Bob Agent', capacity: { email: 2, fax: 1 } });
  const { token: agentToken } = await api('POST', '/v1/agents/bob/tokens');

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
    // a real PNG, drawn by the browser itself
    const painter = await (await browser.newContext({ viewport: { width: 200, height: 120 } })).newPage();
    await painter.setContent('<body style="margin:0"><div style="width:120px;height:80px;background:linear-gradient(90deg,#c33,#36c)"></div></body>');
    const png = await painter.screenshot({ clip: { x: 0, y: 0, width: 120, height: 80 } });
    await painter.context().close();

    const ctx = await browser.newContext({ viewport: { width: 1280, height: 1000 }, acceptDownloads: true });
    const agent = await ctx.newPage();
    watch(agent, 'agent');
    let ixId = null, caseId = null;

    await t.test('the email arrives and is offered to the signed-in agent', async () => {
      const r = await api('POST', '/v1/email/inbound', inboundMessage(png), TOKEN, 'message/rfc822');
      ixId = r.id;
      caseId = r.case_id;
      await agent.goto(BASE + '/agent/');
      await agent.fill('#agent-id', 'bob');
      await agent.fill('#agent-token', agentToken);
      await agent.click('#signin button[type=submit]');
      await agent.locator('#conn', { hasText: 'live' }).waitFor({ timeout: WAIT });
      await agent.selectOption('#presence', 'available');
      await agent.locator('#offers .item.ch-email').first().waitFor({ timeout: WAIT });
      await shot(agent, 'desk-email-offer');
      await agent.click('.accept');
      await agent.locator('#work .item.ch-email').first().waitFor({ timeout: WAIT });
    });

    await t.test('the message: headers, text without the quoted part, quoted part on demand', async () => {
      const headers = agent.locator('.email-headers');
      await headers.locator('.eh-from dd', { hasText: 'marta@customer.example' }).waitFor({ timeout: WAIT });
      assert.equal(await headers.locator('.eh-to dd').textContent(), 'claims@insurer.example');
      assert.equal(await headers.locator('.eh-cc dd').textContent(), 'broker@agency.example');
      assert.equal(await headers.locator('.eh-subject dd').textContent(), 'Hail damage <b>urgent</b>');
      assert.match(await headers.locator('.eh-date dd').textContent(), /4 Jun 2024/);
      assert.equal(await agent.locator('.email b, .email-headers b').count(), 0);
      const body = await agent.locator('.email-body').textContent();
      assert.match(body, /hail dented the roof of my car/);
      assert.doesNotMatch(body, /Please send us a photo/);
      const quoted = agent.locator('.email-quoted');
      assert.equal(await quoted.isVisible(), false);
      await agent.click('.quoted-toggle');
      await quoted.waitFor({ state: 'visible', timeout: WAIT });
      const q = await quoted.textContent();
      assert.match(q, /^On Mon, 3 Jun 2024, Acme Claims wrote:\n> Please send us a photo of the damage\.\n> Regards/);
      assert.doesNotMatch(q, /hail dented/);
      await shot(agent, 'desk-email-message');
    });

    await t.test('the attachments: the photo shown, the PDF downloaded byte for byte', async () => {
      const photo = agent.locator('.att', { hasText: 'roof.png' });
      await photo.waitFor({ timeout: WAIT });
      assert.equal(await photo.locator('.att-type').textContent(), 'image/png');
      assert.equal(await photo.locator('.att-size').textContent(),
        png.length < 1024 ? png.length + ' B' : (png.length / 1024).toFixed(1) + ' KB');
      const img = photo.locator('img.att-thumb');
      await agent.waitForFunction((e) => e.complete && e.naturalWidth > 0, await img.elementHandle(), { timeout: WAIT });
      const dims = await img.evaluate((e) => [e.naturalWidth, e.naturalHeight, e.src.slice(0, 5)]);
      assert.deepEqual(dims, [120, 80, 'blob:']);
      // click to enlarge
      await img.click();
      const big = agent.locator('#lightbox .lb-img');
      await big.waitFor({ state: 'visible', timeout: WAIT });
      assert.equal(await big.evaluate((e) => e.naturalWidth), 120);
      await shot(agent, 'desk-email-photo-enlarged');
      await agent.click('#lightbox .lb-close');
      await big.waitFor({ state: 'hidden', timeout: WAIT });

      const pdf = agent.locator('.att', { hasText: 'policy.pdf' });
      assert.equal(await pdf.locator('.att-type').textContent(), 'application/pdf');
      assert.equal(await pdf.locator('img').count(), 0);
      const [download] = await Promise.all([
        agent.waitForEvent('download', { timeout: WAIT }),
        pdf.locator('.att-download').click(),
      ]);
      assert.equal(download.suggestedFilename(), 'policy.pdf');
      const got = fs.readFileSync(await download.path());
      assert.ok(got.equals(PDF), `downloaded ${got.length} bytes, expected ${PDF.length}`);
    });

    await t.test('the reply, with an attachment, reaches the customer threaded', async () => {
      const form = agent.locator('.email-reply');
      assert.equal(await form.locator('.er-to').textContent(), 'marta.home@customer.example');
      assert.equal(await form.locator('.er-subject').textContent(), `Re: Hail damage <b>urgent</b> [#${caseId}]`);
      assert.match(await form.locator('.er-limits').textContent(), /up to 20 files, 10\.0 MB each, 25\.0 MB in all/);
      // Cc: the message's copies, which the agent may change
      assert.equal(await form.locator('.er-cc').inputValue(), 'broker@agency.example');
      await form.locator('.er-cc').fill('broker@agency.example, not an address');
      await form.locator('textarea').fill('x');
      await form.locator('.er-send').click();
      await form.locator('.er-error', { hasText: 'is not an email address' }).waitFor({ timeout: WAIT });
      await form.locator('.er-cc').fill('broker@agency.example, adjuster@insurer.example');
      await form.locator('textarea').fill('Dear Marta,\nan adjuster will call you tomorrow. The estimate is attached.\nBob');
      await form.locator('input[type=file]').setInputFiles({ name: 'estimate.pdf', mimeType: 'application/pdf', buffer: ESTIMATE });
      await form.locator('.er-filelist li', { hasText: 'estimate.pdf' }).waitFor({ timeout: WAIT });
      await shot(agent, 'desk-email-composing');
      await form.locator('.er-send').click();
      await form.locator('.er-status', { hasText: 'Reply queued' }).waitFor({ timeout: WAIT });
      assert.equal(await form.locator('textarea').inputValue(), '');

      const raw = await until(() => received().find((m) => header(m, 'In-Reply-To') === CUSTOMER_MSGID), 'the reply at the SMTP server');
      assert.equal(header(raw, 'References').split(/\s+/).join(' '), '<older-desk@customer.example> ' + CUSTOMER_MSGID);
      assert.match(header(raw, 'To'), /marta\.home@customer\.example/);
      assert.deepEqual(header(raw, 'Cc').split(',').map((a) => a.trim().replace(/^<(.*)>$/, '$1')),
        ['broker@agency.example', 'adjuster@insurer.example']);
      assert.match(header(raw, 'From'), /claims@insurer\.example/);
      assert.ok(header(raw, 'Subject').includes(`[#${caseId}]`), header(raw, 'Subject'));
      const att = attachmentBytes(raw, 'estimate.pdf');
      assert.ok(att && att.equals(ESTIMATE), 'the attachment as sent by the agent');
      assert.match(raw, /an adjuster will call you tomorrow/);
    });

    await t.test('the history shows the reply as sent, live', async () => {
      const out = agent.locator('.email-out-list .eo').first();
      await out.locator('.delivery', { hasText: /^sent$/ }).waitFor({ timeout: WAIT });
      assert.equal(await out.locator('.eo-to').textContent(),
        'to marta.home@customer.example, cc broker@agency.example, adjuster@insurer.example');
      assert.match(await out.locator('.eo-text').textContent(), /an adjuster will call you tomorrow/);
      await agent.locator('.timeline li', { hasText: 'email to marta.home@customer.example sent' }).waitFor({ timeout: WAIT });
      await shot(agent, 'desk-email-reply-sent');
      // a second reply the customer's server refuses for good: shown as failed, with why
      const attempts = fs.readdirSync(SMTP_DIR).filter((f) => /^attempt-\d+\.json$/.test(f)).length;
      const answers = Array(attempts).fill('250 2.0.0 OK').concat(['550 5.1.1 mailbox unavailable']);
      fs.writeFileSync(path.join(SMTP_DIR, '.script.tmp'), JSON.stringify({ data: answers }));
      fs.renameSync(path.join(SMTP_DIR, '.script.tmp'), path.join(SMTP_DIR, 'script.json'));
      const form = agent.locator('.email-reply');
      await form.locator('.er-cc').fill('');
      await form.locator('textarea').fill('One more thing: keep the receipt.');
      await form.locator('.er-send').click();
      const second = agent.locator('.email-out-list .eo', { hasText: 'keep the receipt' });
      await second.locator('.delivery', { hasText: /^failed$/ }).waitFor({ timeout: WAIT });
      assert.match(await second.locator('.eo-smtp').textContent(), /^550 5\.1\.1 mailbox unavailable/);
      assert.equal(await agent.locator('.email-out-list .eo').count(), 2);
      await agent.locator('.email-out-list .eo', { hasText: 'an adjuster will call you' }).locator('.delivery', { hasText: /^sent$/ }).waitFor();
      await shot(agent, 'desk-email-reply-failed');
      // still there after a reload
      await agent.reload();
      await agent.locator('.email-out-list .eo .delivery', { hasText: /^sent$/ }).waitFor({ timeout: WAIT });
      await agent.locator('.email-out-list .eo .delivery', { hasText: /^failed$/ }).waitFor({ timeout: WAIT });
      await agent.selectOption('.wrapup-form select', 'info_given');
      await agent.click('.wrapup-form button');
      // email has no wrap-up time here: the work ends at once
      await agent.locator('#no-work').waitFor({ state: 'visible', timeout: WAIT });
      const ix = await until(async () => {
        const v = await api('GET', '/v1/interactions/' + ixId);
        return v.state === 'completed' && v;
      }, 'the interaction completed');
      assert.equal(ix.disposition, 'info_given');
    });

    await t.test('a fax: its pages shown as pictures', async () => {
      const doc = fs.readFileSync(process.env.FAX_TIFF);
      const boundary = '----desk' + crypto.randomBytes(8).toString('hex');
      const field = (k, v) => `--${boundary}\r\nContent-Disposition: form-data; name="${k}"\r\n\r\n${v}\r\n`;
      const body = Buffer.concat([
        Buffer.from(field('gateway_id', 'desk-' + process.pid) + field('from', '+34 915 550 101') +
          field('to', '+34 910 000 000') + field('pages', '2') +
          `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="fax.tif"\r\nContent-Type: image/tiff\r\n\r\n`),
        doc, Buffer.from(`\r\n--${boundary}--\r\n`)]);
      const ts = String(Math.floor(Date.now() / 1000));
      const sig = 'sha256=' + crypto.createHmac('sha256', process.env.FAX_SECRET)
        .update(Buffer.concat([Buffer.from(ts + '.'), body])).digest('hex');
      const res = await fetch(BASE + '/v1/fax/inbound', {
        method: 'POST', body,
        headers: { 'Content-Type': 'multipart/form-data; boundary=' + boundary, 'X-Omnicc-Timestamp': ts, 'X-Omnicc-Signature': sig },
      });
      const out = await res.json();
      assert.equal(res.status, 200, JSON.stringify(out));
      assert.equal(out.pages, 2);
      await agent.locator('#offers .item.ch-fax').first().waitFor({ timeout: WAIT });
      await agent.click('.accept');
      await agent.locator('#work .item.ch-fax').first().waitFor({ timeout: WAIT });
      const att = agent.locator('.att', { hasText: 'fax.tif' });
      await att.waitFor({ timeout: WAIT });
      assert.equal(await att.locator('.att-type').textContent(), 'image/tiff');
      const pages = agent.locator('.att-pages img.att-thumb');
      await agent.locator('.att-pages', { hasText: '2 pages' }).waitFor({ timeout: WAIT });
      assert.equal(await pages.count(), 2);
      for (let i = 0; i < 2; i++) {
        await agent.waitForFunction((e) => e.complete && e.naturalWidth > 0, await pages.nth(i).elementHandle(), { timeout: WAIT });
      }
      // an A4 page, upright
      const [w, h] = await pages.first().evaluate((e) => [e.naturalWidth, e.naturalHeight]);
      assert.ok(h > w, `page ${w}x${h}`);
      await pages.nth(1).click();
      await agent.locator('#lightbox .lb-name', { hasText: 'page 2' }).waitFor({ timeout: WAIT });
      await shot(agent, 'desk-fax-page');
      await agent.click('#lightbox .lb-close');
      // the whole fax as one PDF, made by the daemon from the TIFF: one page per fax page
      const [faxPdf] = await Promise.all([
        agent.waitForEvent('download', { timeout: WAIT }),
        agent.locator('.att-pages .att-pdf').click(),
      ]);
      assert.match(faxPdf.suggestedFilename(), /^fax-[0-9a-f]{8}\.pdf$/);
      const pdfText = fs.readFileSync(await faxPdf.path()).toString('latin1');
      assert.ok(pdfText.startsWith('%PDF-'), pdfText.slice(0, 20));
      assert.match(pdfText, /\/Type\s*\/Pages[^>]*\/Count\s+2\b/);

      // what OCR found on page 1 (nothing known on this claim form), and the agent's correction
      const ocr = agent.locator('.fax-ocr');
      await ocr.locator('.of-policy dd').waitFor({ timeout: 60000 });
      assert.equal(await ocr.locator('.of-policy dd').textContent(), 'none');
      assert.match(await ocr.locator('.ocr-source').textContent(), /OCR of page 1/);
      assert.match(await ocr.locator('.ocr-link').textContent(), /Nothing found/);
      const other = await api('POST', '/v1/interactions', {
        channel: 'voice', external_id: 'desk-link-' + process.pid, from: '+34 600 999 001' });
      await ocr.locator('.link-form input').fill(other.case_id);
      await ocr.locator('.link-form button').click();
      await ocr.locator('.ocr-link', { hasText: 'Linked to ' + other.case_id + ' by agent:bob, on case:' + other.case_id })
        .waitFor({ timeout: WAIT });
      const moved = await api('GET', '/v1/interactions/' + out.interaction);
      assert.equal(moved.case_id, other.case_id);
      assert.equal(moved.customer_id, other.customer_id);
      await agent.locator('.timeline .tl-interaction_linked', { hasText: 'from ' + out.case }).waitFor({ timeout: WAIT });
      // the findings stay with the fax after the move
      assert.equal(await ocr.locator('.of-policy dd').textContent(), 'none');
      assert.equal(await ocr.locator('.of-matched dd').textContent(), 'nothing known');
      await shot(agent, 'desk-fax-linked');
    });

    await t.test('web chat: no email known, the visitor is told no transcript can be sent', async () => {
      const cust = await (await browser.newContext({ viewport: { width: 1000, height: 760 } })).newPage();
      watch(cust, 'customer');
      await cust.goto(BASE + '/chat/');
      await cust.fill('.occ-prechat input[name=name]', 'Pablo');
      await cust.fill('.occ-prechat input[name=phone]', '+34 611 222 333');
      await cust.click('.occ-start');
      await cust.locator('.occ-status', { hasText: 'Waiting for an agent' }).waitFor({ timeout: WAIT });
      await cust.fill('.occ-text', 'Please call me back.');
      await cust.click('.occ-send');
      await cust.locator('.occ-customer:not(.occ-pending) .occ-body').first().waitFor({ timeout: WAIT });
      await cust.click('.occ-end');
      await cust.locator('.occ-mailcheck').waitFor({ state: 'visible', timeout: WAIT });
      // (the box unticks itself when nothing can be sent, hence a click, not check())
      await cust.click('.occ-mailcheck');
      await cust.locator('.occ-mailnote', { hasText: 'we have no email address for you' }).waitFor({ timeout: WAIT });
      assert.equal(await cust.locator('.occ-mailcheck').isChecked(), false);
      await shot(cust, 'desk-chat-no-transcript');
      assert.equal(received().filter((m) => /chat transcript/i.test(header(m, 'Subject') || '')).length, 0);
      await cust.context().close();
    });

    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
  }
});
