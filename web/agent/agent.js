/* agent.js - the agent desktop: sign in with the agent token, presence, offers with their
 * screen pop and countdown, several pieces of work at once, chat replies, case notes,
 * transfer and wrap-up. Only the public REST API and the agent's SSE stream
 * (GET /v1/agents/{id}/events, read with fetch() so the bearer token travels in the
 * Authorization header). The desk survives a reload: its state and the last event id are
 * kept in sessionStorage and the stream resumes after that id; chat transcripts are
 * fetched again from the server. Every text is set with textContent.
 * Email: the message (headers, text without the quoted part, which a toggle shows), its
 * attachments, a reply composer (POST /v1/interactions/{id}/reply, files sent inline as
 * base64 within the limits the timeline gives) and the case's replies with their delivery
 * state, updated by the email.* events of the agent's stream. Attachments and fax pages are
 * fetched with the bearer token (an <img> or a link cannot send it) and shown or saved from
 * the bytes (blob: URLs); only images are ever shown, anything else is saved as a file. */
'use strict';

(function () {
  const O = window.Omnicc;
  const { el, clear } = O;
  const KEY = 'omnicc.agent';
  const $ = (id) => document.getElementById(id);

  let S = restore();          // {agent, token, lastId, presence, items: {ix: item}, selected}
  let stopStream = null;
  const chats = new Map();    // ix -> {msgs: [], ids: Set, loaded: bool}
  const timelines = new Map(); // ix -> timeline JSON
  let typingTimer = null;
  let lastTypingSent = 0;
  let detailFor = null;       // the item the detail pane was built for
  let detailState = null;
  const blobs = new Map();    // attachment path -> Promise of {url, type}

  function restore() {
    try {
      return JSON.parse(sessionStorage.getItem(KEY)) || {};
    } catch (e) {
      return {};
    }
  }
  function persist() {
    sessionStorage.setItem(KEY, JSON.stringify(S));
  }

  /* ---- signing in and out ---- */
  $('signin').addEventListener('submit', (e) => {
    e.preventDefault();
    S = { agent: $('agent-id').value.trim(), token: $('agent-token').value.trim(), lastId: '0-1', items: {} };
    persist();
    start();
  });

  $('signout').addEventListener('click', () => {
    if (stopStream) stopStream();
    stopStream = null;
    sessionStorage.removeItem(KEY);
    S = {};
    chats.clear();
    timelines.clear();
    for (const p of blobs.values()) p.then((b) => URL.revokeObjectURL(b.url), () => {});
    blobs.clear();
    showSignin('');
  });

  function showSignin(msg) {
    $('signin').hidden = false;
    $('desk').hidden = true;
    $('me').hidden = true;
    $('signin-error').textContent = msg || '';
  }

  function start() {
    $('signin').hidden = true;
    $('desk').hidden = false;
    $('me').hidden = false;
    $('who').textContent = S.agent;
    $('presence').value = S.presence || 'offline';
    render();
    if (stopStream) stopStream();
    stopStream = O.follow({
      path: '/v1/agents/' + encodeURIComponent(S.agent) + '/events',
      token: S.token,
      lastId: S.lastId || '0-1',
      onEvent: (ev, id) => {
        if (id) S.lastId = id;
        handle(ev);
        persist();
      },
      onState: (st) => {
        const c = $('conn');
        c.textContent = st === 'live' ? 'live' : st;
        c.className = 'conn conn-' + st;
      },
      onFatal: (err) => {
        sessionStorage.removeItem(KEY);
        if (stopStream) stopStream();
        stopStream = null;
        showSignin(err.status === 403 || err.status === 401 || err.status === 404
          ? 'Wrong agent id or token.' : err.message);
      },
    });
    // transcripts of the chats already open (after a reload)
    for (const it of Object.values(S.items || {})) if (it.session) loadTranscript(it);
  }

  $('presence').addEventListener('change', async (e) => {
    const want = e.target.value;
    try {
      await O.api(S.token, 'PUT', '/v1/agents/' + encodeURIComponent(S.agent) + '/state', { state: want });
      S.presence = want;
      persist();
    } catch (err) {
      e.target.value = S.presence || 'offline';
      alertError(err);
    }
  });

  function alertError(err) {
    const box = document.querySelector('.action-error');
    if (box) box.textContent = err.message;
    else window.alert(err.message);
  }

  /* ---- events ---- */
  function idNum(id) {
    const [ms, seq] = String(id).split('-');
    return [Number(ms) || 0, Number(seq) || 0];
  }
  function idLess(a, b) {
    const [am, as] = idNum(a), [bm, bs] = idNum(b);
    return am < bm || (am === bm && as < bs);
  }

  function chatOf(ix) {
    let c = chats.get(ix);
    if (!c) {
      c = { msgs: [], ids: new Set(), loaded: false };
      chats.set(ix, c);
    }
    return c;
  }

  function addMessage(ix, m) {
    const c = chatOf(ix);
    if (!m.id || c.ids.has(m.id)) return false;
    c.ids.add(m.id);
    let i = c.msgs.length;
    while (i > 0 && idLess(m.id, c.msgs[i - 1].id)) i--;
    c.msgs.splice(i, 0, m);
    return true;
  }

  function removeItem(ix) {
    delete S.items[ix];
    chats.delete(ix);
    timelines.delete(ix);
    if (S.selected === ix) {
      S.selected = null;
      const first = Object.values(S.items)[0];
      if (first) S.selected = first.id;
    }
  }

  function handle(ev) {
    const d = ev.data || {};
    S.items = S.items || {};
    const it = d.interaction && typeof d.interaction === 'string' ? S.items[d.interaction] : null;
    switch (ev.type) {
    case 'offer': {
      const ix = d.interaction || {};
      S.items[ix.id] = {
        id: ix.id, state: 'offered', reservation: d.reservation.id,
        expires_at: d.reservation.expires_at, pop: d, unread: 0,
        session: ix.channel === 'webchat' ? ix.external_id : null,
      };
      if (!S.selected || !S.items[S.selected]) S.selected = ix.id;
      if (ix.channel === 'webchat') loadTranscript(S.items[ix.id]);
      break;
    }
    case 'offer.accepted':
      if (it) {
        it.state = 'assigned';
        it.reservation = null;
        timelines.delete(it.id);
      }
      break;
    case 'offer.rejected':
    case 'offer.timeout':
    case 'offer.withdrawn':
      if (it && it.state === 'offered' && it.reservation === d.reservation) removeItem(it.id);
      break;
    case 'interaction.wrapup':
      if (it) it.state = 'wrapup';
      break;
    case 'interaction.completed':
    case 'interaction.canceled':
    case 'interaction.abandoned':
      if (it) removeItem(it.id);
      break;
    case 'interaction.transferred':
      if (it && d.agent === S.agent) removeItem(it.id);
      break;
    case 'chat.message':
      if (it && addMessage(it.id, { id: ev.id, at: ev.at, from: d.from, name: d.name, text: d.text })) {
        if (S.selected !== it.id) it.unread = (it.unread || 0) + 1;
        if (d.from === 'customer') it.typing = 0;
      }
      break;
    case 'chat.typing':
      if (it && d.from === 'customer') {
        it.typing = Date.now();
        clearTimeout(typingTimer);
        typingTimer = setTimeout(renderDetail, 4100);
      }
      break;
    case 'chat.ended':
      if (it) it.chatEnded = d.by || 'customer';
      break;
    case 'chat.customer_away':
      if (it) it.away = true;
      break;
    case 'chat.customer_back':
      if (it) it.away = false;
      break;
    case 'email.queued':
    case 'email.sent':
    case 'email.deferred':
    case 'email.failed':
    case 'fax.ocr':
    case 'interaction.linked':
      // a reply's delivery state changed, or a fax was read or moved: the history says which
      if (it) {
        timelines.delete(it.id);
        loadTimeline(it);
      }
      return;
    case 'agent.presence':
      if (d.agent === S.agent) {
        S.presence = d.presence;
        $('presence').value = d.presence;
      }
      break;
    default:
      return;
    }
    render();
  }

  async function loadTranscript(it) {
    if (!it || !it.session) return;
    try {
      const t = await O.api(S.token, 'GET', '/v1/chat/sessions/' + it.session + '/messages');
      for (const e of t.events || []) {
        if (e.type !== 'chat.message') continue;
        const d = e.data || {};
        addMessage(it.id, { id: e.id, at: e.at, from: d.from, name: d.name, text: d.text });
      }
      if (t.state === 'ended' && S.items[it.id]) S.items[it.id].chatEnded = S.items[it.id].chatEnded || 'customer';
      chatOf(it.id).loaded = true;
      if (S.selected === it.id) renderDetail();
    } catch (e) { /* the offer may have ended meanwhile */ }
  }

  const tlGen = new Map();     // ix -> number of the latest timeline request
  async function loadTimeline(it) {
    if (timelines.has(it.id)) return;
    timelines.set(it.id, null);
    const gen = (tlGen.get(it.id) || 0) + 1;
    tlGen.set(it.id, gen);
    try {
      const t = await O.api(S.token, 'GET', '/v1/interactions/' + it.id + '/timeline');
      // an answer overtaken by a later request (a delivery event meanwhile) is stale
      if (tlGen.get(it.id) !== gen) return;
      timelines.set(it.id, t);
      // fill the pane in place: what the agent is typing stays
      if (S.selected === it.id && detailFor === it.id + '/' + it.state) fillFromTimeline($('detail'), it);
    } catch (e) {
      if (tlGen.get(it.id) === gen) timelines.delete(it.id);
    }
  }

  /* ---- rendering ---- */
  function custName(it) {
    const c = (it.pop && it.pop.customer) || {};
    return c.name || (it.pop && it.pop.interaction && it.pop.interaction.from) || c.id || it.id;
  }

  function remaining(it) {
    return Math.max(0, Math.ceil((Number(it.expires_at) - Date.now()) / 1000));
  }

  function render() {
    const items = Object.values(S.items || {});
    const offers = $('offers'), work = $('work');
    clear(offers);
    clear(work);
    for (const it of items) {
      const ch = (it.pop && it.pop.interaction && it.pop.interaction.channel) || '';
      const li = el('li', 'item' + (S.selected === it.id ? ' selected' : '') + ' ch-' + ch);
      li.dataset.ix = it.id;
      const b = el('button', 'item-btn');
      b.type = 'button';
      b.appendChild(el('span', 'item-name', custName(it)));
      b.appendChild(el('span', 'item-ch', ch));
      if (it.state === 'offered') b.appendChild(el('span', 'item-count', remaining(it) + 's'));
      else b.appendChild(el('span', 'item-state', it.state));
      if (it.unread) b.appendChild(el('span', 'unread', it.unread));
      b.addEventListener('click', () => {
        S.selected = it.id;
        it.unread = 0;
        persist();
        render();
      });
      li.appendChild(b);
      (it.state === 'offered' ? offers : work).appendChild(li);
    }
    $('no-offers').hidden = offers.children.length > 0;
    $('no-work').hidden = work.children.length > 0;
    renderDetail();
  }

  function timelineText(e) {
    switch (e.type) {
    case 'interaction.received':
      return (e.channel || '') + ' ' + (e.direction || 'inbound') + (e.from ? ' from ' + e.from : '') + (e.summary ? ': ' + e.summary : '');
    case 'chat.message':
      return 'chat · ' + (e.name || e.from) + ': ' + (e.text || '');
    case 'chat.ended':
      return 'chat ended by ' + (e.by || '');
    case 'note':
      return 'note by ' + (e.by || '') + ': ' + (e.text || '');
    case 'case.opened':
      return 'case opened (' + (e.channel || '') + ')';
    case 'interaction.wrapup':
      return 'wrap-up by ' + (e.agent || '') + ': ' + (e.disposition || '') + (e.note ? ' — ' + e.note : '');
    case 'interaction.transferred':
      return 'transferred by ' + (e.agent || '') + ' to ' + (e.to_queue || e.to_agent || '');
    case 'email.queued':
      return 'email to ' + (e.to || '') + ' queued by ' + (e.by || '') + (e.subject ? ': ' + e.subject : '');
    case 'email.sent':
      return 'email to ' + (e.to || '') + ' sent' + (e.smtp ? ' (' + e.smtp + ')' : '');
    case 'email.deferred':
      return 'email to ' + (e.to || '') + ' deferred, will retry' + (e.smtp ? ' (' + e.smtp + ')' : '');
    case 'email.failed':
      return 'email to ' + (e.to || '') + ' failed' + (e.smtp ? ': ' + e.smtp : '');
    case 'fax.ocr':
      return 'fax page 1 read by OCR' + (e.matched ? ': linked on ' + e.matched : ': nothing known found');
    case 'interaction.linked':
      return (e.channel || '') + ' moved here from ' + (e.from_case || '') + ' by ' + (e.by || '') + (e.matched ? ' (' + e.matched + ')' : '');
    case 'fax.relinked':
      return 'fax moved to ' + (e.to_case || '') + ' by ' + (e.by || '');
    case 'email.bounced':
      return 'email bounced' + (e.to ? ' (' + e.to + ')' : '');
    default:
      return e.type + (e.agent ? ' (' + e.agent + ')' : '');
    }
  }

  function renderDetail(force) {
    const box = $('detail');
    const it = S.items && S.selected ? S.items[S.selected] : null;
    if (!it) {
      detailFor = null;
      clear(box);
      box.appendChild(el('p', 'empty', 'Select an offer or a piece of work.'));
      return;
    }
    const key = it.id + '/' + it.state;
    if (force || detailFor !== key) {
      buildDetail(box, it);
      detailFor = key;
    }
    updateDetail(box, it);
  }

  function buildDetail(box, it) {
    clear(box);
    const frag = $('detail-tpl').content.cloneNode(true);
    box.appendChild(frag);
    const pop = it.pop || {};
    const ix = pop.interaction || {};
    const cust = pop.customer || {};
    const tl = timelines.get(it.id);
    box.querySelector('.cust-name').textContent = custName(it);
    box.querySelector('.segment').textContent = cust.segment || 'standard';
    box.querySelector('.segment').className = 'segment seg-' + (cust.segment || 'standard');
    box.querySelector('.channel').textContent = ix.channel || '';
    box.querySelector('.state').textContent = it.state;
    box.querySelector('.subject').textContent = [ix.subject, ix.from, ix.queue && 'queue ' + ix.queue].filter(Boolean).join(' · ');
    fillFromTimeline(box, it);
    if (!tl) loadTimeline(it);

    // offer actions
    const offer = it.state === 'offered';
    box.querySelector('.offer-actions').hidden = !offer;
    box.querySelector('.accept').addEventListener('click', () => act(() =>
      O.api(S.token, 'POST', '/v1/reservations/' + it.reservation + '/accept')));
    box.querySelector('.reject').addEventListener('click', () => act(() =>
      O.api(S.token, 'POST', '/v1/reservations/' + it.reservation + '/reject')));

    // chat
    const chat = box.querySelector('.chat');
    chat.hidden = !it.session;
    if (it.session) {
      const form = box.querySelector('.reply');
      const ta = form.querySelector('textarea');
      form.hidden = it.state !== 'assigned';
      form.addEventListener('submit', (e) => {
        e.preventDefault();
        sendReply(it, ta);
      });
      ta.addEventListener('keydown', (e) => {
        if (e.key === 'Enter' && !e.shiftKey) {
          e.preventDefault();
          form.requestSubmit();
        }
      });
      ta.addEventListener('input', () => {
        const now = Date.now();
        if (now - lastTypingSent < 2000) return;
        lastTypingSent = now;
        O.api(S.token, 'POST', '/v1/chat/sessions/' + it.session + '/typing').catch(() => {});
      });
    }

    // email: the reply composer (the message itself comes with the timeline)
    const isEmail = ix.channel === 'email';
    box.querySelector('.email').hidden = !isEmail;
    box.querySelector('.email-compose').hidden = !isEmail || it.state !== 'assigned';
    if (isEmail) buildComposer(box, it);
    box.querySelector('.quoted-toggle').addEventListener('click', (e) => {
      const q = box.querySelector('.email-quoted');
      q.hidden = !q.hidden;
      e.target.textContent = q.hidden ? 'Show quoted text' : 'Hide quoted text';
      e.target.setAttribute('aria-expanded', String(!q.hidden));
    });

    // work actions
    const wa = box.querySelector('.work-actions');
    wa.hidden = it.state !== 'assigned' && it.state !== 'wrapup';
    box.querySelector('.transfer-form').hidden = it.state !== 'assigned';
    box.querySelector('.wrapup-form').hidden = it.state !== 'assigned';
    box.querySelector('.note-form').addEventListener('submit', (e) => {
      e.preventDefault();
      const ta = e.target.querySelector('textarea');
      if (!ta.value.trim()) return;
      act(async () => {
        await O.api(S.token, 'POST', '/v1/cases/' + ix.case_id + '/notes', { text: ta.value, author: S.agent });
        ta.value = '';
        timelines.delete(it.id);
        loadTimeline(it);
      });
    });
    box.querySelector('.transfer-form').addEventListener('submit', (e) => {
      e.preventDefault();
      const q = e.target.elements.queue.value.trim(), a = e.target.elements.agent.value.trim();
      const body = a ? { agent: a } : { queue: q || ix.queue };
      act(() => O.api(S.token, 'POST', '/v1/interactions/' + it.id + '/transfer', body));
    });
    box.querySelector('.wrapup-form').addEventListener('submit', (e) => {
      e.preventDefault();
      const body = { disposition: e.target.elements.disposition.value };
      if (e.target.elements.note.value.trim()) body.note = e.target.elements.note.value.trim();
      act(() => O.api(S.token, 'POST', '/v1/interactions/' + it.id + '/wrapup', body));
    });
    detailState = { shown: 0 };
  }

  /* Everything the timeline gives: identifiers, cases, the timeline, and for an email the
   * message, its attachments and the replies on its case. Called again (in place) each time
   * the timeline is fetched anew. */
  function fillFromTimeline(box, it) {
    const pop = it.pop || {};
    const ix = pop.interaction || {};
    const tl = timelines.get(it.id);
    const tix = (tl && tl.interaction) || {};
    const meta = tix.metadata || null;
    if (meta && ix.channel === 'webchat') {
      const v = box.querySelector('.verified');
      v.textContent = meta.verified ? 'identity verified' : 'identity not verified';
      v.className = 'verified ' + (meta.verified ? 'yes' : 'no');
    }
    if (tl && tl.customer) {
      box.querySelector('.ids').textContent = (tl.customer.identifiers || []).map((i) => i.type + ' ' + i.value).join(' · ');
    }
    // cases and timeline: the full timeline once loaded, the pop's history until then
    const cases = box.querySelector('.cases');
    clear(cases);
    const caseList = tl ? (Array.isArray(tl.cases) ? tl.cases : []).filter((c) => c.status === 'open') : (pop.open_cases || []);
    for (const c of Array.isArray(caseList) ? caseList : []) {
      cases.appendChild(el('li', null, c.id + (c.policy ? ' · ' + c.policy : '') + (c.last_channel ? ' · last ' + c.last_channel : '') + (c.id === ix.case_id ? ' (this one)' : '')));
    }
    const tlBox = box.querySelector('.timeline');
    clear(tlBox);
    const entries = tl ? (Array.isArray(tl.timeline) ? tl.timeline : []) : (Array.isArray(pop.history) ? pop.history : []);
    for (const e of entries) {
      const li = el('li', 'tl tl-' + String(e.type).replace(/\W/g, '_'));
      li.appendChild(el('time', null, O.fmtTime(e.at)));
      li.appendChild(el('span', 'tl-case', e.case || ''));
      li.appendChild(el('span', 'tl-text', timelineText(e)));
      tlBox.appendChild(li);
    }
    if (!tl) return;
    if (ix.channel === 'email') fillEmail(box, it, tix);
    if (ix.channel === 'fax') fillFaxOcr(box, it, tix);
    fillAttachments(box, tix);
    fillReplies(box, ix.case_id, Array.isArray(tl.timeline) ? tl.timeline : []);
  }

  function fmtSize(n) {
    n = Number(n) || 0;
    if (n < 1024) return n + ' B';
    if (n < 1024 * 1024) return (n / 1024).toFixed(n < 10240 ? 1 : 0) + ' KB';
    return (n / 1048576).toFixed(1) + ' MB';
  }

  function list(v) {
    return Array.isArray(v) ? v.filter((x) => typeof x === 'string') : [];
  }

  // what email_reply.lua makes of the subject: "Re: <subject without Re:/AW:/SV:...> [#C-n]"
  function replySubject(subject, caseId) {
    let base = subject || '';
    const prefixes = new Set(['re', 'aw', 'sv', 'antw', 'r', 'rif']);
    for (let i = 0; i < 3; i++) {
      const m = /^\s*([A-Za-z]+)\s*:\s*([\s\S]*)$/.exec(base);
      if (!m || !prefixes.has(m[1].toLowerCase())) break;
      base = m[2];
    }
    let out = 'Re: ' + base;
    const token = '[#' + caseId + ']';
    if (caseId && out.indexOf(token) < 0) out += ' ' + token;
    return out;
  }

  function fillEmail(box, it, tix) {
    const meta = tix.metadata || {};
    const head = box.querySelector('.email-headers');
    clear(head);
    const rows = [['From', tix.from || ''], ['To', list(meta.to).join(', ')], ['Cc', list(meta.cc).join(', ')],
      ['Reply-To', list(meta.reply_to).join(', ')], ['Subject', tix.subject || ''], ['Date', meta.date || '']];
    for (const [k, v] of rows) {
      if (!v) continue;
      const row = el('div', 'eh eh-' + k.toLowerCase());
      row.appendChild(el('dt', null, k));
      row.appendChild(el('dd', null, v));
      head.appendChild(row);
    }
    const full = typeof tix.body === 'string' ? tix.body : '';
    const trimmed = meta.thread && typeof meta.thread.text === 'string' ? meta.thread.text : full;
    box.querySelector('.email-body').textContent = trimmed || full;
    const hasQuoted = full.trim() !== '' && full.trim() !== (trimmed || '').trim();
    const toggle = box.querySelector('.quoted-toggle');
    const quoted = box.querySelector('.email-quoted');
    toggle.hidden = !hasQuoted;
    // what the trimming left out: the rest of the message after the text shown
    const shown = (trimmed || '').trim();
    const at = shown ? full.indexOf(shown) : -1;
    quoted.textContent = !hasQuoted ? '' : at >= 0 ? full.slice(at + shown.length).replace(/^\s+/, '') : full;
    box.querySelector('.email-loading').hidden = true;
    box.querySelector('.email-msg').hidden = false;
    // the composer: To is the Reply-To or the From, as the daemon will send it
    const to = list(meta.reply_to)[0] || tix.from || '';
    box.querySelector('.er-to').textContent = to;
    // Cc: the message's copies, without our own mailbox and the To address (once, not on
    // every refresh: the agent may have edited it)
    const ccInput = box.querySelector('.er-cc');
    if (!ccInput.dataset.filled) {
      const ours = String(meta.reply_from || '').toLowerCase();
      ccInput.value = list(meta.cc).filter((a) => a.toLowerCase() !== ours && a.toLowerCase() !== to.toLowerCase()).join(', ');
      ccInput.dataset.filled = '1';
    }
    box.querySelector('.er-subject').textContent = replySubject(tix.subject, tix.case_id);
    const form = box.querySelector('.email-reply');
    form.limits = tix.reply_limits || null;
    showLimits(form);
  }

  /* ---- attachments: fetched with the token, shown or saved from the bytes ---- */
  function fetchBlob(path) {
    let p = blobs.get(path);
    if (!p) {
      p = (async () => {
        const res = await fetch(path, { headers: { Authorization: 'Bearer ' + S.token }, cache: 'no-store' });
        if (!res.ok) throw new O.ApiError(res.status, 'http_' + res.status, 'cannot fetch the file (' + res.status + ')');
        const blob = await res.blob();
        return { url: URL.createObjectURL(blob), type: blob.type, size: blob.size, blob };
      })();
      p.catch(() => blobs.delete(path));
      blobs.set(path, p);
    }
    return p;
  }

  const IMAGE_TYPES = new Set(['image/png', 'image/jpeg', 'image/gif', 'image/webp']);

  async function saveFile(path, name) {
    const b = await fetchBlob(path);
    // saved as bytes, never opened as a page of this origin
    const url = URL.createObjectURL(new Blob([b.blob], { type: 'application/octet-stream' }));
    const a = document.createElement('a');
    a.href = url;
    a.download = name || 'attachment';
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
  }

  function enlarge(url, name) {
    const d = $('lightbox');
    d.querySelector('.lb-img').src = url;
    d.querySelector('.lb-img').alt = name;
    d.querySelector('.lb-name').textContent = name;
    if (!d.open) d.showModal();
  }
  $('lightbox').querySelector('.lb-close').addEventListener('click', () => $('lightbox').close());

  function thumb(path, name) {
    const img = el('img', 'att-thumb');
    img.alt = name;
    img.title = 'Click to enlarge';
    img.tabIndex = 0;
    fetchBlob(path).then((b) => { img.src = b.url; }, () => { img.alt = name + ' (cannot be loaded)'; });
    const open = () => { if (img.src) enlarge(img.src, name); };
    img.addEventListener('click', open);
    img.addEventListener('keydown', (e) => { if (e.key === 'Enter') open(); });
    return img;
  }

  function fillAttachments(box, tix) {
    const meta = tix.metadata || {};
    const atts = Array.isArray(meta.attachments) ? meta.attachments.filter((a) => a && /^[0-9a-f]{64}$/.test(a.sha256 || '')) : [];
    const doc = meta.document && /^[0-9a-f]{64}$/.test(meta.document.sha256 || '') ? meta.document : null;
    const sec = box.querySelector('.attachments');
    const ul = box.querySelector('.att-list');
    sec.hidden = atts.length === 0 && !doc;
    if (ul.dataset.for === tix.id) return;  // built once per interaction: no refetching
    ul.dataset.for = tix.id || '';
    clear(ul);
    for (const a of atts) {
      const path = '/v1/attachments/' + a.sha256;
      const name = a.filename || 'attachment';
      const li = el('li', 'att');
      li.dataset.sha256 = a.sha256;
      const info = el('div', 'att-info');
      info.appendChild(el('span', 'att-name', name));
      info.appendChild(el('span', 'att-type', a.content_type || ''));
      info.appendChild(el('span', 'att-size', fmtSize(a.size)));
      const dl = el('button', 'att-download', 'Download');
      dl.type = 'button';
      dl.addEventListener('click', () => act(() => saveFile(path, name)));
      info.appendChild(dl);
      li.appendChild(info);
      if (IMAGE_TYPES.has(String(a.content_type).toLowerCase())) li.appendChild(thumb(path, name));
      ul.appendChild(li);
    }
    // a fax: each page as an image, made by the daemon from the document
    if (doc && (doc.type === 'tiff' || doc.type === 'pdf')) {
      const pages = Math.min(Number(doc.pages) || 0, 50);
      const li = el('li', 'att att-pages');
      const info = el('div', 'att-info', pages + ' page' + (pages === 1 ? '' : 's'));
      // the whole fax as one PDF: made by the daemon from a TIFF, a PDF fax as received
      const pdf = el('button', 'att-pdf', 'PDF');
      pdf.type = 'button';
      pdf.addEventListener('click', () => act(() => saveFile('/v1/attachments/' + doc.sha256 + '/pdf', 'fax-' + doc.sha256.slice(0, 8) + '.pdf')));
      info.appendChild(pdf);
      li.appendChild(info);
      const strip = el('div', 'att-strip');
      for (let n = 1; n <= pages; n++) {
        strip.appendChild(thumb('/v1/attachments/' + doc.sha256 + '/pages/' + n + '.png', 'page ' + n));
      }
      li.appendChild(strip);
      ul.appendChild(li);
    }
  }

  /* A fax: what OCR found on its first page (kept on the interaction: ocr_found), what
   * that matched and who linked it, and for the agent holding it a way to move it to the
   * right case or customer (POST /v1/interactions/{id}/link). */
  function fillFaxOcr(box, it, tix) {
    const sec = box.querySelector('.fax-ocr');
    sec.hidden = false;
    // kept on the interaction by the OCR (the fax.ocr history entry stays on the case it was
    // written to, which may no longer be this customer's after a move)
    const ocr = tix.ocr_at ? tix : null;
    box.querySelector('.ocr-pending').hidden = !!ocr;
    const dl = box.querySelector('.ocr-found');
    clear(dl);
    box.querySelector('.ocr-source').textContent = ocr ? '(' + (ocr.ocr_source === 'ocr:page1' ? 'OCR of page 1' : ocr.ocr_source || '') + ')' : '';
    if (ocr) {
      const found = ocr.ocr_found && typeof ocr.ocr_found === 'object' ? ocr.ocr_found : {};
      for (const [k, label] of [['policy', 'Policy numbers'], ['case', 'Case tokens'], ['phone', 'Phone numbers']]) {
        const v = list(found[k]);
        const row = el('div', 'of of-' + k);
        row.appendChild(el('dt', null, label));
        row.appendChild(el('dd', null, v.length ? v.join(', ') : 'none'));
        dl.appendChild(row);
      }
      const row = el('div', 'of of-matched');
      row.appendChild(el('dt', null, 'Matched'));
      row.appendChild(el('dd', null, ocr.ocr_matched || 'nothing known'));
      dl.appendChild(row);
    }
    const by = tix.linked_by || '';
    const match = tix.linked_match || '';
    box.querySelector('.ocr-link').textContent = by
      ? 'Linked to ' + (tix.case_id || '') + ' by ' + (by === 'ocr' ? 'OCR' : by) + (match ? ', on ' + match : '')
      : ocr ? 'Nothing found names a known customer or case: linked by the sender number.' : '';
    const form = box.querySelector('.link-form');
    form.hidden = it.state !== 'assigned' && it.state !== 'wrapup';
    if (form.dataset.bound) return;
    form.dataset.bound = '1';
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      const v = form.elements.target.value.trim().toUpperCase();
      const body = /^C-[0-9]+$/.test(v) ? { case: v } : /^P-[0-9]+$/.test(v) ? { customer: v } : null;
      if (!body) {
        alertError(new O.ApiError(400, 'invalid_field', 'a case (C-12) or a customer (P-34)'));
        return;
      }
      act(async () => {
        await O.api(S.token, 'POST', '/v1/interactions/' + it.id + '/link', body);
        form.elements.target.value = '';
        timelines.delete(it.id);
        loadTimeline(it);
      });
    });
  }

  /* The case's outgoing emails, each with its latest delivery state. */
  function fillReplies(box, caseId, entries) {
    const out = new Map();  // message_id -> {queued entry, state, at}
    // entries are newest first: the first state seen for a message is its latest
    for (const e of entries) {
      if (e.case !== caseId || !e.message_id || !/^email\./.test(e.type)) continue;
      let m = out.get(e.message_id);
      if (!m) {
        m = { id: e.message_id, state: e.type.slice(6), at: e.at, smtp: e.smtp || '' };
        out.set(e.message_id, m);
      }
      if (e.type === 'email.queued') m.queued = e;
    }
    const sec = box.querySelector('.email-out');
    const ol = box.querySelector('.email-out-list');
    clear(ol);
    for (const m of out.values()) {
      if (!m.queued) continue;
      const li = el('li', 'eo eo-' + m.state);
      li.dataset.messageId = m.id;
      const head = el('div', 'eo-head');
      head.appendChild(el('span', 'delivery delivery-' + m.state, m.state));
      head.appendChild(el('span', 'eo-to', 'to ' + (m.queued.to || '') + (m.queued.cc ? ', cc ' + m.queued.cc : '')));
      head.appendChild(el('span', 'eo-by', 'by ' + (m.queued.by || '')));
      head.appendChild(el('time', null, O.fmtTime(m.queued.at)));
      li.appendChild(head);
      li.appendChild(el('div', 'eo-subject', m.queued.subject || ''));
      li.appendChild(el('div', 'eo-text', m.queued.text || ''));
      if (m.smtp && m.state !== 'sent') li.appendChild(el('div', 'eo-smtp', m.smtp));
      ol.appendChild(li);
    }
    sec.hidden = ol.children.length === 0;
  }

  /* ---- the reply composer ---- */
  function showLimits(form) {
    const l = form.limits;
    form.querySelector('.er-limits').textContent = l
      ? 'Attachments: up to ' + l.attachments + ' files, ' + fmtSize(l.attachment) + ' each, ' + fmtSize(l.attachments_total) + ' in all.'
      : '';
  }

  function checkFiles(form) {
    const files = Array.from(form.elements.files.files || []);
    const l = form.limits;
    const ul = form.querySelector('.er-filelist');
    clear(ul);
    let total = 0, why = '';
    for (const f of files) {
      total += f.size;
      const li = el('li', null, f.name + ' (' + fmtSize(f.size) + ')');
      if (l && f.size > l.attachment) {
        li.className = 'too-large';
        why = f.name + ' is larger than ' + fmtSize(l.attachment) + '.';
      }
      ul.appendChild(li);
    }
    if (!why && l && files.length > l.attachments) why = 'At most ' + l.attachments + ' files.';
    if (!why && l && total > l.attachments_total) why = 'The files together are larger than ' + fmtSize(l.attachments_total) + '.';
    form.querySelector('.er-error').textContent = why;
    return why ? null : files;
  }

  function readBase64(file) {
    return new Promise((resolve, reject) => {
      const r = new FileReader();
      r.onload = () => {
        const s = String(r.result);
        resolve(s.slice(s.indexOf(',') + 1));
      };
      r.onerror = () => reject(new Error('cannot read ' + file.name));
      r.readAsDataURL(file);
    });
  }

  function buildComposer(box, it) {
    const form = box.querySelector('.email-reply');
    const status = form.querySelector('.er-status');
    const send = form.querySelector('.er-send');
    form.elements.files.addEventListener('change', () => checkFiles(form));
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      const err = form.querySelector('.er-error');
      const text = form.elements.body.value;
      if (!text.trim()) {
        err.textContent = 'Write the reply first.';
        return;
      }
      const files = checkFiles(form);
      if (!files) return;
      const cc = form.elements.cc.value.split(/[,;\s]+/).map((a) => a.trim()).filter(Boolean);
      const badCc = cc.find((a) => !/^[^\s@<>()[\],;:\\"]+@[^\s@<>()[\],;:\\"]+\.[^\s@<>()[\],;:\\".]+$/.test(a));
      if (badCc) {
        err.textContent = 'Cc: "' + badCc + '" is not an email address.';
        return;
      }
      if (cc.length > 10) {
        err.textContent = 'Cc: at most 10 addresses.';
        return;
      }
      if (form.limits && new TextEncoder().encode(text).length > form.limits.body) {
        err.textContent = 'The reply is longer than ' + fmtSize(form.limits.body) + '.';
        return;
      }
      send.disabled = true;
      status.textContent = 'Sending…';
      err.textContent = '';
      try {
        const attachments = [];
        for (const f of files) {
          attachments.push({
            filename: f.name.replace(/["\\/\t\r\n]/g, '_').slice(0, 200) || 'attachment',
            content_type: /^[\w.+-]+\/[\w.+-]+$/.test(f.type) ? f.type : 'application/octet-stream',
            content_base64: await readBase64(f),
          });
        }
        // one client_id per message written: sending the same message again after an error
        // (the answer may have been lost, not the message) queues it at most once
        const sameMessage = JSON.stringify([text, cc, files.map((f) => [f.name, f.size])]);
        if (form.replyMessage !== sameMessage) {
          form.replyMessage = sameMessage;
          form.replyId = 'reply-' + randomId();
        }
        const body = { body: text, client_id: form.replyId };
        if (cc.length) body.cc = cc;
        if (attachments.length) body.attachments = attachments;
        const r = await O.api(S.token, 'POST', '/v1/interactions/' + it.id + '/reply', body);
        form.replyMessage = form.replyId = null;
        form.elements.body.value = '';
        form.elements.files.value = '';
        clear(form.querySelector('.er-filelist'));
        status.textContent = 'Reply queued (' + r.message_id + ').';
        timelines.delete(it.id);
        loadTimeline(it);
      } catch (ex) {
        status.textContent = '';
        err.textContent = 'Not sent: ' + ex.message;
      } finally {
        send.disabled = false;
      }
    });
  }

  function updateDetail(box, it) {
    const cd = box.querySelector('.countdown');
    if (cd && it.state === 'offered') cd.textContent = remaining(it) + ' s';
    if (!it.session) return;
    const c = chatOf(it.id);
    const list = box.querySelector('.transcript');
    if (list && (detailState.shown !== c.msgs.length || list.children.length !== c.msgs.length)) {
      clear(list);
      for (const m of c.msgs) {
        const li = el('li', 'msg msg-' + (m.from === 'agent' ? 'agent' : 'customer'));
        const meta = el('div', 'msg-meta');
        meta.appendChild(el('span', 'msg-name', m.name || m.from));
        meta.appendChild(el('time', null, O.fmtTime(m.at)));
        li.appendChild(meta);
        li.appendChild(el('div', 'msg-text', m.text));
        list.appendChild(li);
      }
      list.scrollTop = list.scrollHeight;
      detailState.shown = c.msgs.length;
    }
    const ty = box.querySelector('.typing');
    const typingNow = it.typing && Date.now() - it.typing < 4000;
    ty.hidden = !typingNow;
    ty.textContent = typingNow ? custName(it) + ' is typing…' : '';
    const note = box.querySelector('.chat-note');
    const msg = it.chatEnded ? (it.chatEnded === 'customer' ? 'The customer ended the chat. Wrap up when ready.' : 'The chat has ended.')
      : it.away ? 'The customer is disconnected (they may come back).' : '';
    note.hidden = !msg;
    note.textContent = msg;
    const form = box.querySelector('.reply');
    if (form) form.hidden = it.state !== 'assigned' || !!it.chatEnded;
  }

  async function act(fn) {
    const errBox = document.querySelector('.action-error');
    if (errBox) errBox.textContent = '';
    try {
      await fn();
    } catch (err) {
      alertError(err);
    }
  }

  function randomId() {
    const a = new Uint8Array(12);
    crypto.getRandomValues(a);
    return Array.from(a, (b) => b.toString(16).padStart(2, '0')).join('');
  }

  async function sendReply(it, ta) {
    const text = ta.value;
    if (!text.trim()) return;
    const cid = randomId();
    ta.value = '';
    lastTypingSent = 0;
    for (let attempt = 0; attempt < 5; attempt++) {
      try {
        const r = await O.api(S.token, 'POST', '/v1/chat/sessions/' + it.session + '/messages', { text, client_id: cid });
        if (addMessage(it.id, { id: r.id, at: Date.now(), from: 'agent', name: S.agent, text })) renderDetail();
        return;
      } catch (err) {
        if (err.status && err.status < 500 && err.status !== 429) {
          ta.value = text;
          alertError(err);
          return;
        }
        await new Promise((r) => setTimeout(r, 1000 * (attempt + 1)));
      }
    }
    ta.value = text;
    alertError(new Error('not sent: the server cannot be reached'));
  }

  // countdowns
  setInterval(() => {
    const it = S.items && S.selected ? S.items[S.selected] : null;
    for (const li of document.querySelectorAll('#offers .item')) {
      const o = S.items[li.dataset.ix];
      const c = li.querySelector('.item-count');
      if (o && c) c.textContent = remaining(o) + 's';
    }
    if (it && (it.state === 'offered' || it.typing)) renderDetail();
  }, 500);

  if (S.agent && S.token) start();
  else showSignin('');
})();
