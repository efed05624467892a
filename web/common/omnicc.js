/* omnicc.js - what the agent desktop and the supervisor page share: calls to the REST API
 * with the bearer token, an SSE reader over fetch() (EventSource cannot send the
 * Authorization header) that resumes with Last-Event-ID, and DOM helpers that only ever set
 * text (never HTML), so nothing a customer writes can become markup. */
'use strict';

(function () {
  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  async function api(token, method, path, body) {
    const headers = { Authorization: 'Bearer ' + token };
    const init = { method, headers, cache: 'no-store' };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let res;
    try {
      res = await fetch(path, init);
    } catch (e) {
      throw new ApiError(0, 'network', 'the server cannot be reached');
    }
    const text = await res.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch (e) {
      data = null;
    }
    if (!res.ok) {
      const err = (data && data.error) || {};
      throw new ApiError(res.status, err.code || 'http_' + res.status, err.message || res.statusText);
    }
    return data;
  }

  /* Read an SSE stream until it ends or fails; resolves with the last event id seen.
   * onEvent(parsed data, id, type); onLive() when the server says replay is over. */
  async function readStream(path, token, lastId, onEvent, onLive, signal) {
    const headers = { Authorization: 'Bearer ' + token, Accept: 'text/event-stream' };
    if (lastId) headers['Last-Event-ID'] = lastId;
    const res = await fetch(path, { headers, signal, cache: 'no-store' });
    if (!res.ok) {
      let msg = res.statusText;
      try {
        msg = (await res.json()).error.message;
      } catch (e) { /* not JSON */ }
      throw new ApiError(res.status, 'http_' + res.status, msg);
    }
    const reader = res.body.getReader();
    const dec = new TextDecoder();
    let buf = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return lastId;
      buf += dec.decode(value, { stream: true });
      let cut;
      while ((cut = buf.indexOf('\n\n')) >= 0) {
        const block = buf.slice(0, cut);
        buf = buf.slice(cut + 2);
        let id = null, type = 'message', data = '';
        for (const line of block.split('\n')) {
          if (line.startsWith('id: ')) id = line.slice(4);
          else if (line.startsWith('event: ')) type = line.slice(7);
          else if (line.startsWith('data: ')) data += line.slice(6);
          else if (line === ': live' && onLive) onLive();
        }
        if (!data) continue;
        let parsed;
        try {
          parsed = JSON.parse(data);
        } catch (e) {
          continue;
        }
        if (id) lastId = id;
        onEvent(parsed, id, type);
      }
    }
  }

  /* Keep a stream open: reconnect with backoff, resuming after the last event seen.
   * opts: {path, token, lastId, onEvent, onState(state), onFatal(err)}; returns stop(). */
  function follow(opts) {
    let stopped = false, ctl = null, delay = 500, lastId = opts.lastId || '';
    (async () => {
      while (!stopped) {
        ctl = new AbortController();
        try {
          opts.onState && opts.onState('connecting');
          lastId = await readStream(opts.path, opts.token, lastId,
            (ev, id, type) => { if (id) lastId = id; delay = 500; opts.onEvent(ev, id, type); },
            () => opts.onState && opts.onState('live'), ctl.signal);
        } catch (e) {
          if (stopped) return;
          if (e instanceof ApiError && e.status >= 400 && e.status < 500 && e.status !== 429) {
            opts.onState && opts.onState('failed');
            opts.onFatal && opts.onFatal(e);
            return;
          }
        }
        if (stopped) return;
        opts.onState && opts.onState('reconnecting');
        await new Promise((r) => setTimeout(r, delay));
        delay = Math.min(delay * 2, 10000);
      }
    })();
    return () => { stopped = true; if (ctl) ctl.abort(); };
  }

  /* el('li', 'cls', 'text', [children]): text only, never innerHTML. */
  function el(tag, cls, text, children) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    for (const c of children || []) if (c) e.appendChild(c);
    return e;
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }

  function fmtTime(ms) {
    if (!ms) return '';
    const d = new Date(Number(ms));
    const today = new Date();
    const t = d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });
    if (d.toDateString() === today.toDateString()) return t;
    return d.toLocaleDateString() + ' ' + t;
  }

  function fmtDuration(ms) {
    if (ms === null || ms === undefined) return '–';
    const s = Math.max(0, Math.round(ms / 1000));
    const m = Math.floor(s / 60);
    return m ? m + 'm ' + String(s % 60).padStart(2, '0') + 's' : s + 's';
  }

  window.Omnicc = { ApiError, api, readStream, follow, el, clear, fmtTime, fmtDuration };
})();
