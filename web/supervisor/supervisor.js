/* supervisor.js - queues (waiting, longest wait, service level, agents by state) from
 * GET /v1/queues, kept live by the event stream GET /v1/events (fetch() with the admin
 * bearer token): every event schedules a refresh, and a timer refreshes anyway so waits
 * keep growing on screen. Text only (textContent). */
'use strict';

(function () {
  const O = window.Omnicc;
  const { el, clear } = O;
  const KEY = 'omnicc.supervisor';
  const $ = (id) => document.getElementById(id);
  let token = sessionStorage.getItem(KEY) || '';
  let stop = null, pending = null, fetchedAt = 0, queues = [];
  const FEED_MAX = 60;

  $('signin').addEventListener('submit', (e) => {
    e.preventDefault();
    token = $('token').value.trim();
    sessionStorage.setItem(KEY, token);
    start();
  });
  $('signout').addEventListener('click', () => {
    if (stop) stop();
    sessionStorage.removeItem(KEY);
    token = '';
    showSignin('');
  });

  function showSignin(msg) {
    $('signin').hidden = false;
    $('board').hidden = true;
    $('me').hidden = true;
    $('signin-error').textContent = msg;
  }

  async function refresh() {
    pending = null;
    try {
      const r = await O.api(token, 'GET', '/v1/queues');
      queues = r.queues || [];
      fetchedAt = Date.now();
      render();
    } catch (err) {
      if (err.status === 401) {
        sessionStorage.removeItem(KEY);
        if (stop) stop();
        showSignin('Wrong admin token.');
      }
    }
  }
  function soon() {
    if (!pending) pending = setTimeout(refresh, 250);
  }

  function pct(v) {
    return v === null || v === undefined ? '–' : Math.round(v * 100) + '%';
  }

  function render() {
    const body = $('queues').querySelector('tbody');
    clear(body);
    const since = Date.now() - fetchedAt;
    for (const q of queues) {
      const w = q.waiting || {};
      const by = Object.keys(w).filter((k) => w[k]).map((k) => k + ' ' + w[k]).join(', ');
      const a = q.agents || {};
      const tr = el('tr', q.waiting_total ? 'busyq' : null);
      tr.dataset.queue = q.name;
      const cells = [q.name, q.waiting_total || 0, by || '–',
        q.waiting_total ? O.fmtDuration((q.longest_wait_ms || 0) + since) : '–',
        pct(q.service_level), q.asa_ms === null || q.asa_ms === undefined ? '–' : O.fmtDuration(q.asa_ms),
        q.offered || 0, q.accepted || 0, q.abandoned || 0,
        a.available || 0, a.busy || 0, a.away || 0, a.offline || 0];
      const names = ['name', 'waiting', 'channels', 'longest', 'sl', 'asa', 'offered', 'accepted', 'abandoned',
        'available', 'busy', 'away', 'offline'];
      cells.forEach((c, i) => tr.appendChild(el('td', 'c-' + names[i], c)));
      body.appendChild(tr);
    }
    const win = queues[0] && queues[0].window_minutes;
    $('window').textContent = win ? 'Service level, ASA and counts over the last ' + win + ' minutes.' : '';
    $('updated').textContent = fetchedAt ? 'updated ' + new Date(fetchedAt).toLocaleTimeString() : '';
  }

  function feed(ev) {
    const d = ev.data || {};
    const what = [d.interaction && (typeof d.interaction === 'string' ? d.interaction : d.interaction.id),
      d.queue, d.channel, ev.agent && 'agent ' + ev.agent, d.presence, d.by && 'by ' + d.by].filter(Boolean).join(' · ');
    const li = el('li', 'ev ev-' + String(ev.type).replace(/\W/g, '_'));
    li.appendChild(el('time', null, O.fmtTime(ev.at)));
    li.appendChild(el('span', 'ev-type', ev.type));
    li.appendChild(el('span', 'ev-what', what));
    const list = $('feed');
    list.insertBefore(li, list.firstChild);
    while (list.children.length > FEED_MAX) list.removeChild(list.lastChild);
  }

  function start() {
    $('signin').hidden = true;
    $('board').hidden = false;
    $('me').hidden = false;
    refresh();
    if (stop) stop();
    stop = O.follow({
      path: '/v1/events',
      token,
      onEvent: (ev) => {
        if (ev.type !== 'chat.typing') feed(ev);
        soon();
      },
      onState: (st) => {
        $('conn').textContent = st;
        $('conn').className = 'conn conn-' + st;
        if (st === 'live') soon();
      },
      onFatal: (err) => {
        sessionStorage.removeItem(KEY);
        showSignin(err.status === 401 ? 'Wrong admin token.' : err.message);
      },
    });
  }

  setInterval(() => { if (token && fetchedAt) render(); }, 1000);
  setInterval(() => { if (token) refresh(); }, 5000);
  if (token) start();
  else showSignin('');
})();
