/* omnicc web chat widget: plain JS, no framework. Embed on any page of an allowed origin:
 *
 *   <script src="https://omnicc.example/chat/widget.js" async></script>
 *
 * optional attributes: data-title="Chat with us", data-mode="launcher" (floating button,
 * default) or "page" (fills #omnicc-chat, used by /chat/), data-identity='{"type":"policy",
 * "id":"PL-2024-001234","hash":"<HMAC from your backend>","name":"Ana García"}' for a
 * logged-in policyholder (docs/API.md, "Web chat").
 *
 * The widget lives in a shadow root (its CSS cannot leak into the page or the page's into
 * it), talks to the omnicc API next to this script (CORS), keeps its session in
 * localStorage so a reload resumes the conversation, follows the session's event stream
 * over fetch() with Last-Event-ID, and renders every text with textContent. */
(function () {
  'use strict';
  const script = document.currentScript;
  if (!script) return;
  const base = new URL('.', script.src);          // .../chat/
  const apiBase = new URL('/v1/chat/', base).href; // .../v1/chat/
  const mode = script.dataset.mode === 'page' ? 'page' : 'launcher';
  const title = script.dataset.title || 'Chat with us';
  const storeKey = 'omnicc.chat:' + base.origin;
  let identity = null;
  try {
    identity = script.dataset.identity ? JSON.parse(script.dataset.identity) : null;
  } catch (e) {
    identity = null;
  }

  /* ---- state kept across reloads ---- */
  function load() {
    try {
      return JSON.parse(localStorage.getItem(storeKey)) || {};
    } catch (e) {
      return {};
    }
  }
  let saved = load();
  function save() {
    try {
      localStorage.setItem(storeKey, JSON.stringify(saved));
    } catch (e) { /* private mode: the cookie still identifies the visitor */ }
  }

  /* ---- DOM (text only) ---- */
  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function field(label, input) {
    const l = el('label', 'occ-field');
    l.appendChild(el('span', 'occ-label', label));
    l.appendChild(input);
    return l;
  }
  function input(type, name, attrs) {
    const i = el('input', 'occ-input');
    i.type = type;
    i.name = name;
    for (const k of Object.keys(attrs || {})) i.setAttribute(k, attrs[k]);
    return i;
  }

  const host = mode === 'page' ? (document.getElementById('omnicc-chat') || document.body) : el('div');
  if (mode !== 'page') document.body.appendChild(host);
  const root = host.attachShadow({ mode: 'open' });
  const css = el('link');
  css.rel = 'stylesheet';
  css.href = new URL('widget.css', base).href;
  root.appendChild(css);

  const wrap = el('div', 'occ-root occ-mode-' + mode);
  root.appendChild(wrap);
  const launcher = el('button', 'occ-launcher', title);
  launcher.type = 'button';
  const panel = el('section', 'occ-panel');
  panel.setAttribute('role', 'dialog');
  panel.setAttribute('aria-label', title);
  if (mode === 'launcher') {
    wrap.appendChild(launcher);
    panel.hidden = true;
  }
  wrap.appendChild(panel);

  const head = el('header', 'occ-head');
  const headText = el('div', 'occ-headtext');
  headText.appendChild(el('div', 'occ-title', title));
  const status = el('div', 'occ-status', '');
  headText.appendChild(status);
  head.appendChild(headText);
  const endBtn = el('button', 'occ-end', 'End chat');
  endBtn.type = 'button';
  endBtn.hidden = true;
  head.appendChild(endBtn);
  if (mode === 'launcher') {
    const min = el('button', 'occ-min', '×');
    min.type = 'button';
    min.setAttribute('aria-label', 'Minimise');
    min.addEventListener('click', () => { panel.hidden = true; launcher.hidden = false; });
    head.appendChild(min);
  }
  panel.appendChild(head);

  // pre-chat form
  const pre = el('form', 'occ-prechat');
  pre.noValidate = false;
  const intro = el('p', 'occ-intro', 'Tell us who you are and what it is about; an agent will be with you shortly.');
  const fName = input('text', 'name', { required: '', maxlength: '200', autocomplete: 'name' });
  const fEmail = input('email', 'email', { maxlength: '254', autocomplete: 'email' });
  const fPhone = input('tel', 'phone', { maxlength: '40', autocomplete: 'tel' });
  const fPolicy = input('text', 'policy', { maxlength: '40' });
  const fTopic = el('select', 'occ-input');
  fTopic.name = 'topic';
  const preErr = el('p', 'occ-error');
  preErr.setAttribute('role', 'alert');
  const startBtn = el('button', 'occ-start', 'Start chat');
  startBtn.type = 'submit';
  pre.appendChild(intro);
  const who = el('div', 'occ-who');
  if (identity && identity.name) {
    pre.appendChild(el('p', 'occ-signedin', 'Signed in as ' + identity.name));
  } else {
    who.appendChild(field('Name', fName));
    who.appendChild(field('Email', fEmail));
    who.appendChild(field('or phone', fPhone));
    who.appendChild(field('Policy number (optional)', fPolicy));
    pre.appendChild(who);
  }
  pre.appendChild(field('Topic', fTopic));
  pre.appendChild(preErr);
  pre.appendChild(startBtn);
  panel.appendChild(pre);

  // conversation
  const conv = el('div', 'occ-conv');
  conv.hidden = true;
  const log = el('ol', 'occ-log');
  log.setAttribute('aria-live', 'polite');
  const typing = el('div', 'occ-typing', '');
  typing.hidden = true;
  const compose = el('form', 'occ-compose');
  const text = el('textarea', 'occ-text');
  text.name = 'text';
  text.rows = 2;
  text.placeholder = 'Write a message…';
  text.setAttribute('aria-label', 'Message');
  const sendBtn = el('button', 'occ-send', 'Send');
  sendBtn.type = 'submit';
  const sendErr = el('p', 'occ-error');
  sendErr.setAttribute('role', 'alert');
  compose.appendChild(text);
  compose.appendChild(sendBtn);
  conv.appendChild(log);
  conv.appendChild(typing);
  conv.appendChild(sendErr);
  conv.appendChild(compose);
  panel.appendChild(conv);

  // end of chat
  const ended = el('div', 'occ-ended');
  ended.hidden = true;
  const endedText = el('p', 'occ-endedtext', 'The chat has ended.');
  const saveBtn = el('button', 'occ-save', 'Save transcript');
  saveBtn.type = 'button';
  const newBtn = el('button', 'occ-new', 'Start a new chat');
  newBtn.type = 'button';
  const mailBox = document.createElement('input');
  mailBox.type = 'checkbox';
  mailBox.className = 'occ-mailcheck';
  const mailLabel = el('label', 'occ-mail');
  mailLabel.appendChild(mailBox);
  mailLabel.appendChild(document.createTextNode(' Email me a transcript'));
  const mailNote = el('p', 'occ-mailnote');
  mailNote.setAttribute('role', 'status');
  ended.appendChild(endedText);
  ended.appendChild(mailLabel);
  ended.appendChild(mailNote);
  ended.appendChild(saveBtn);
  ended.appendChild(newBtn);
  panel.appendChild(ended);

  /* ---- API ---- */
  function headers(json) {
    const h = {};
    if (json) h['Content-Type'] = 'application/json';
    if (saved.token) h['X-Omnicc-Visitor'] = saved.token;
    return h;
  }
  async function call(method, path, body) {
    const init = { method, headers: headers(body !== undefined), credentials: 'include', cache: 'no-store' };
    if (body !== undefined) init.body = JSON.stringify(body);
    const res = await fetch(apiBase + path, init);
    const t = await res.text();
    let data = null;
    try {
      data = t ? JSON.parse(t) : null;
    } catch (e) {
      data = null;
    }
    if (!res.ok) {
      const err = new Error((data && data.error && data.error.message) || res.statusText || 'request failed');
      err.status = res.status;
      throw err;
    }
    return data;
  }

  function prettyTopic(t) {
    const s = t.replace(/[_-]+/g, ' ');
    return s.charAt(0).toUpperCase() + s.slice(1);
  }

  async function loadConfig() {
    try {
      const cfg = await call('GET', 'config');
      while (fTopic.firstChild) fTopic.removeChild(fTopic.firstChild);
      for (const t of cfg.topics || []) {
        const o = el('option', null, prettyTopic(t));
        o.value = t;
        fTopic.appendChild(o);
      }
      if ((cfg.topics || []).length < 2) fTopic.parentNode.hidden = true;
      if (cfg.max_message) text.maxLength = cfg.max_message;
    } catch (e) {
      preErr.textContent = 'The chat is not available right now. ' + e.message;
    }
  }

  /* ---- conversation state ---- */
  const seen = new Set();          // event ids rendered
  let startClientId = null;        // the client_id of the chat being started, until it is
  const pending = new Map();       // client_id -> <li> of a message not yet confirmed
  let outbox = [];                 // {client_id, text} waiting to be sent
  let sending = false;
  let stopStream = null;
  let typingTimer = null;
  let lastTypingSent = 0;
  let agentName = '';
  let chatEnded = false;

  function scroll() {
    log.scrollTop = log.scrollHeight;
  }

  function sys(textLine) {
    log.appendChild(el('li', 'occ-sys', textLine));
    scroll();
  }

  function msgItem(from, name, body, at) {
    const li = el('li', 'occ-msg occ-' + (from === 'agent' ? 'agent' : 'customer'));
    const meta = el('div', 'occ-meta');
    meta.appendChild(el('span', 'occ-name', from === 'agent' ? name : 'You'));
    if (at) meta.appendChild(el('time', 'occ-time', new Date(at).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' })));
    li.appendChild(meta);
    li.appendChild(el('div', 'occ-body', body));
    return li;
  }

  function setStatus(s) {
    status.textContent = s;
  }

  function showEnded(by) {
    chatEnded = true;
    saved.ended = true;
    save();
    conv.hidden = false;
    compose.hidden = true;
    typing.hidden = true;
    endBtn.hidden = true;
    ended.hidden = false;
    endedText.textContent = by === 'customer' ? 'You ended the chat.'
      : by === 'agent' ? 'The agent ended the chat. Thank you for contacting us.'
        : 'The chat has ended.';
    setStatus('Chat ended');
    if (stopStream) {
      stopStream();
      stopStream = null;
    }
  }

  function onEvent(ev) {
    if (ev.id && seen.has(ev.id)) return;
    if (ev.id) seen.add(ev.id);
    if (ev.id) {
      saved.last = ev.id;
    }
    const d = ev.data || {};
    switch (ev.type) {
    case 'chat.opened':
      setStatus(agentName ? 'Chatting with ' + agentName : 'Waiting for an agent…');
      if (!agentName) sys('Thanks! An agent will be with you shortly.');
      break;
    case 'chat.message': {
      const li = d.client_id && pending.get(d.client_id);
      if (li) {
        li.classList.remove('occ-pending');
        pending.delete(d.client_id);
        if (!li.isConnected) log.appendChild(li);
      } else {
        log.appendChild(msgItem(d.from, d.name, d.text, ev.at));
      }
      if (d.from === 'agent') typing.hidden = true;
      scroll();
      break;
    }
    case 'chat.typing':
      if (d.from === 'agent' && !chatEnded) {
        typing.textContent = (agentName || 'The agent') + ' is typing…';
        typing.hidden = false;
        clearTimeout(typingTimer);
        typingTimer = setTimeout(() => { typing.hidden = true; }, 4000);
      }
      break;
    case 'chat.agent_joined':
      agentName = d.name || 'An agent';
      sys(agentName + ' joined the chat');
      setStatus('Chatting with ' + agentName);
      break;
    case 'chat.agent_left':
      sys((d.name || 'The agent') + ' left the chat' + (d.reason === 'transferred' ? '; transferring you to a colleague' : ''));
      if (d.reason === 'transferred') setStatus('Waiting for an agent…');
      agentName = '';
      break;
    case 'chat.ended':
      showEnded(d.by);
      break;
    default:
      break;
    }
    save();
  }

  function follow() {
    if (stopStream) stopStream();
    let stopped = false, ctl = null, delay = 1000;
    stopStream = () => { stopped = true; if (ctl) ctl.abort(); };
    (async () => {
      while (!stopped) {
        ctl = new AbortController();
        try {
          const h = headers(false);
          h.Accept = 'text/event-stream';
          // replay from the start of the session on a (re)load, else after the last event
          h['Last-Event-ID'] = seen.size ? (saved.last || '0-1') : '0-1';
          const res = await fetch(apiBase + 'sessions/' + saved.session + '/events',
            { headers: h, credentials: 'include', cache: 'no-store', signal: ctl.signal });
          if (res.status === 401 || res.status === 403 || res.status === 404) {
            reset();
            return;
          }
          if (!res.ok) throw new Error('stream ' + res.status);
          panel.classList.remove('occ-offline');
          delay = 1000;
          const reader = res.body.getReader();
          const dec = new TextDecoder();
          let buf = '';
          for (;;) {
            const { value, done } = await reader.read();
            if (done) break;
            buf += dec.decode(value, { stream: true });
            let cut;
            while ((cut = buf.indexOf('\n\n')) >= 0) {
              const block = buf.slice(0, cut);
              buf = buf.slice(cut + 2);
              let data = '';
              for (const line of block.split('\n')) if (line.startsWith('data: ')) data += line.slice(6);
              if (!data) continue;
              try {
                onEvent(JSON.parse(data));
              } catch (e) { /* a frame we cannot read: skip it */ }
            }
          }
        } catch (e) {
          if (stopped) return;
        }
        if (stopped) return;
        panel.classList.add('occ-offline');
        setStatus('Reconnecting…');
        await new Promise((r) => setTimeout(r, delay));
        delay = Math.min(delay * 2, 10000);
      }
    })();
  }

  async function flush() {
    if (sending) return;
    sending = true;
    try {
      while (outbox.length) {
        const m = outbox[0];
        try {
          await call('POST', 'sessions/' + saved.session + '/messages', { text: m.text, client_id: m.client_id });
          outbox.shift();
          sendErr.textContent = '';
        } catch (e) {
          if (e.status && e.status < 500 && e.status !== 429) {
            // refused for good (ended, too large): say so and drop it
            outbox.shift();
            const li = pending.get(m.client_id);
            if (li) li.classList.add('occ-failed');
            pending.delete(m.client_id);
            sendErr.textContent = e.message;
          } else {
            sendErr.textContent = e.status === 429 ? e.message : 'Not sent yet; retrying…';
            await new Promise((r) => setTimeout(r, 2000));
          }
        }
        saved.outbox = outbox;
        save();
      }
    } finally {
      sending = false;
    }
  }

  function randomId() {
    const a = new Uint8Array(12);
    crypto.getRandomValues(a);
    return Array.from(a, (b) => b.toString(16).padStart(2, '0')).join('');
  }

  function showConversation() {
    pre.hidden = true;
    ended.hidden = true;
    conv.hidden = false;
    compose.hidden = false;
    endBtn.hidden = false;
  }

  function reset() {
    if (stopStream) stopStream();
    stopStream = null;
    saved = { token: saved.token };
    save();
    seen.clear();
    pending.clear();
    outbox = [];
    agentName = '';
    chatEnded = false;
    while (log.firstChild) log.removeChild(log.firstChild);
    conv.hidden = true;
    ended.hidden = true;
    mailBox.checked = false;
    mailBox.disabled = false;
    mailNote.textContent = '';
    endBtn.hidden = true;
    pre.hidden = false;
    setStatus('');
  }

  /* ---- user actions ---- */
  pre.addEventListener('submit', async (e) => {
    e.preventDefault();
    preErr.textContent = '';
    const body = { topic: fTopic.value || undefined, page: location.href.slice(0, 1000) };
    if (identity) {
      body.identity = identity;
    } else {
      body.name = fName.value.trim();
      if (fEmail.value.trim()) body.email = fEmail.value.trim();
      if (fPhone.value.trim()) body.phone = fPhone.value.trim();
      if (fPolicy.value.trim()) body.policy = fPolicy.value.trim();
      if (!body.email && !body.phone) {
        preErr.textContent = 'Please give your email or your phone number.';
        return;
      }
    }
    startBtn.disabled = true;
    // one client_id per chat the visitor starts: a retry of a request whose answer was lost
    // (network, 503) finds the same session instead of opening a second one
    if (!startClientId) startClientId = randomId();
    body.client_id = startClientId;
    try {
      let s = null;
      for (let attempt = 0; ; attempt++) {
        try {
          s = await call('POST', 'sessions', body);
          break;
        } catch (err) {
          const passing = err.status === undefined || err.status === 502 || err.status === 503 || err.status === 504;
          if (!passing || attempt >= 3) throw err;
          await new Promise((ok) => setTimeout(ok, 1000 * (attempt + 1)));
        }
      }
      startClientId = null;
      saved = { session: s.session, token: s.visitor_token };
      save();
      showConversation();
      setStatus('Waiting for an agent…');
      follow();
      text.focus();
    } catch (err) {
      preErr.textContent = err.message;
    } finally {
      startBtn.disabled = false;
    }
  });

  compose.addEventListener('submit', (e) => {
    e.preventDefault();
    const body = text.value;
    if (!body.trim() || chatEnded) return;
    const m = { client_id: randomId(), text: body };
    const li = msgItem('customer', 'You', body, Date.now());
    li.classList.add('occ-pending');
    log.appendChild(li);
    pending.set(m.client_id, li);
    scroll();
    text.value = '';
    lastTypingSent = 0; // the next keystroke announces typing again at once
    outbox.push(m);
    saved.outbox = outbox;
    save();
    flush();
  });

  text.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey) {
      e.preventDefault();
      compose.requestSubmit();
    }
  });

  text.addEventListener('input', () => {
    const now = Date.now();
    if (now - lastTypingSent < 2000 || !saved.session || chatEnded) return;
    lastTypingSent = now;
    call('POST', 'sessions/' + saved.session + '/typing').catch(() => {});
  });

  endBtn.addEventListener('click', async () => {
    endBtn.disabled = true;
    try {
      await call('POST', 'sessions/' + saved.session + '/close');
      showEnded('customer');
    } catch (e) {
      sendErr.textContent = e.message;
    } finally {
      endBtn.disabled = false;
    }
  });

  // the transcript by email: a close that asks for it (sent once, even if asked again); the
  // answer says whether it could be sent, and the visitor is told either way
  const TRANSCRIPT_NOTES = {
    requested: 'We will email the transcript to the address you gave.',
    no_email: 'We cannot email a transcript: we have no email address for you. Use "Save transcript" to keep a copy.',
    automatic: 'We cannot email a transcript to that address. Use "Save transcript" to keep a copy.',
    unavailable: 'Transcripts by email are not available here. Use "Save transcript" to keep a copy.',
  };
  mailBox.addEventListener('change', async () => {
    if (!mailBox.checked || !saved.session) return;
    mailBox.disabled = true;
    try {
      const r = await call('POST', 'sessions/' + saved.session + '/close', { transcript: true });
      const outcome = (r && r.transcript) || 'unavailable';
      mailNote.textContent = TRANSCRIPT_NOTES[outcome] || TRANSCRIPT_NOTES.unavailable;
      mailNote.className = 'occ-mailnote occ-mail-' + (outcome === 'requested' ? 'ok' : 'no');
      if (outcome !== 'requested') mailBox.checked = false;
    } catch (e) {
      mailNote.textContent = e.message;
      mailBox.checked = false;
      mailBox.disabled = false;
    }
  });

  saveBtn.addEventListener('click', () => {
    const lines = [];
    for (const li of log.children) {
      const name = li.querySelector('.occ-name');
      const tm = li.querySelector('.occ-time');
      const body = li.querySelector('.occ-body');
      if (body) lines.push('[' + (tm ? tm.textContent : '') + '] ' + (name ? name.textContent : '') + ': ' + body.textContent);
      else lines.push('— ' + li.textContent);
    }
    const blob = new Blob([lines.join('\n') + '\n'], { type: 'text/plain' });
    const a = document.createElement('a');
    a.href = URL.createObjectURL(blob);
    a.download = 'chat-transcript.txt';
    a.click();
    setTimeout(() => URL.revokeObjectURL(a.href), 1000);
  });

  newBtn.addEventListener('click', () => reset());

  launcher.addEventListener('click', () => {
    panel.hidden = false;
    launcher.hidden = true;
    if (!saved.session) (fName.isConnected ? fName : fTopic).focus();
  });

  /* ---- start: resume a conversation kept from before the reload ---- */
  loadConfig();
  if (saved.session) {
    if (mode === 'launcher') {
      panel.hidden = false;
      launcher.hidden = true;
    }
    showConversation();
    // messages written but not confirmed before the reload go out again (same client_id:
    // the server drops duplicates)
    outbox = Array.isArray(saved.outbox) ? saved.outbox : [];
    for (const m of outbox) {
      const li = msgItem('customer', 'You', m.text, Date.now());
      li.classList.add('occ-pending');
      pending.set(m.client_id, li);
    }
    if (saved.ended) {
      // replay to show the transcript, then the end
      chatEnded = true;
      compose.hidden = true;
    }
    setStatus('Reconnecting…');
    follow();
    // replayed events come first; pending ones are appended once the replay has begun
    setTimeout(() => { for (const li of pending.values()) log.appendChild(li); flush(); }, 300);
  }
})();
