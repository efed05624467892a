/* agent.js - the agent desktop: sign in with the agent token, presence, offers with their
 * screen pop and countdown, several pieces of work at once, chat replies, case notes,
 * transfer and wrap-up. Only the public REST API and the agent's SSE stream
 * (GET /v1/agents/{id}/events, read with fetch() so the bearer token travels in the
 * Authorization header). The desk survives a reload: its state and the last event id are
 * kept in sessionStorage and the stream resumes after that id; chat transcripts are
 * fetched again from the server. Every text is set with textContent. */
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

  async function loadTimeline(it) {
    if (timelines.has(it.id)) return;
    timelines.set(it.id, null);
    try {
      const t = await O.api(S.token, 'GET', '/v1/interactions/' + it.id + '/timeline');
      timelines.set(it.id, t);
      if (S.selected === it.id) renderDetail(true);
    } catch (e) {
      timelines.delete(it.id);
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
    const meta = tl && tl.interaction && tl.interaction.metadata;
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
    const caseList = tl ? (Array.isArray(tl.cases) ? tl.cases : []).filter((c) => c.status === 'open') : (pop.open_cases || []);
    for (const c of Array.isArray(caseList) ? caseList : []) {
      cases.appendChild(el('li', null, c.id + (c.policy ? ' · ' + c.policy : '') + (c.last_channel ? ' · last ' + c.last_channel : '') + (c.id === ix.case_id ? ' (this one)' : '')));
    }
    const tlBox = box.querySelector('.timeline');
    const entries = tl ? (Array.isArray(tl.timeline) ? tl.timeline : []) : (Array.isArray(pop.history) ? pop.history : []);
    for (const e of entries) {
      const li = el('li', 'tl tl-' + String(e.type).replace(/\W/g, '_'));
      li.appendChild(el('time', null, O.fmtTime(e.at)));
      li.appendChild(el('span', 'tl-case', e.case || ''));
      li.appendChild(el('span', 'tl-text', timelineText(e)));
      tlBox.appendChild(li);
    }
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
