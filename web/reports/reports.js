/* reports.js - the service report (GET /v1/reports/service, docs/ANALYTICS.md): filters by
 * date range, interval, dimension and one key of it (channel, queue, segment, branch,
 * agent), KPI tiles, two SVG charts drawn by hand (no framework, no inline styles: the CSP
 * allows none) and the table by group; CSV download of the same report. Text only. */
'use strict';

(function () {
  const O = window.Omnicc;
  const { el, clear } = O;
  const KEY = 'omnicc.supervisor'; // the same admin session as the supervisor page
  const SVG = 'http://www.w3.org/2000/svg';
  const $ = (id) => document.getElementById(id);
  let token = sessionStorage.getItem(KEY) || '';
  let last = null;

  const day = (d) => d.toISOString().slice(0, 10);
  const now = new Date();
  $('from').value = day(new Date(now.getTime() - 6 * 86400000));
  $('to').value = day(new Date(now.getTime() + 86400000));

  $('signin').addEventListener('submit', (e) => {
    e.preventDefault();
    token = $('token').value.trim();
    sessionStorage.setItem(KEY, token);
    load();
  });
  $('signout').addEventListener('click', () => {
    sessionStorage.removeItem(KEY);
    token = '';
    showSignin('');
  });
  $('filters').addEventListener('submit', (e) => { e.preventDefault(); load(); });
  $('group_by').addEventListener('change', () => { $('only').value = ''; load(); });
  $('only').addEventListener('change', () => render(last));
  $('csv').addEventListener('click', downloadCsv);

  function showSignin(msg) {
    $('signin').hidden = false;
    $('board').hidden = true;
    $('me').hidden = true;
    $('signin-error').textContent = msg;
  }

  function query(fmt) {
    const p = new URLSearchParams({ from: $('from').value, to: $('to').value,
      interval: $('interval').value, group_by: $('group_by').value });
    if (fmt) p.set('format', fmt);
    return '/v1/reports/service?' + p.toString();
  }

  async function load() {
    $('error').textContent = '';
    try {
      last = await O.api(token, 'GET', query());
    } catch (e) {
      if (e.status === 401) return showSignin('That token was refused.');
      $('signin').hidden = true;
      $('board').hidden = false;
      $('me').hidden = false;
      $('error').textContent = e.message;
      return;
    }
    $('signin').hidden = true;
    $('board').hidden = false;
    $('me').hidden = false;
    fillOnly(last);
    render(last);
  }

  function fillOnly(rep) {
    const sel = $('only'), keep = sel.value;
    clear(sel);
    sel.appendChild(el('option', null, '(all)'));
    sel.firstChild.value = '';
    for (const g of rep.groups) {
      const o = el('option', null, g.key);
      o.value = g.key;
      sel.appendChild(o);
    }
    sel.value = rep.groups.some((g) => g.key === keep) ? keep : '';
  }

  const fmt = (v, digits) => (v === null || v === undefined ? '–' :
    (digits === undefined ? String(v) : Number(v).toFixed(digits)));
  const pct = (v) => (v === null || v === undefined ? '–' : (100 * v).toFixed(1) + ' %');

  function pick(period, only) {
    if (!only) return period.total;
    return period.groups.find((g) => g.key === only) || null;
  }

  function render(rep) {
    if (!rep) return;
    const only = $('only').value;
    const tot = only ? (rep.groups.find((g) => g.key === only) || {}) : rep.total;
    $('meta').textContent = rep.from + ' → ' + rep.to + ' (' + rep.timezone + '), ' +
      rep.periods.length + ' periods by ' + rep.interval;
    $('dim-name').textContent = rep.group_by;
    const kpis = $('kpis');
    clear(kpis);
    const tiles = [['Offered', fmt(tot.offered)], ['Answered', fmt(tot.answered)],
      ['Abandoned', fmt(tot.abandoned)], ['Abandon rate', pct(tot.abandon_rate)],
      ['Service level', pct(tot.service_level)], ['ASA', fmt(tot.asa_seconds, 1) + ' s'],
      ['AHT', fmt(tot.aht_seconds, 1) + ' s'], ['Transfers', fmt(tot.transfers)],
      ['Contacts / case', fmt(tot.contacts_per_case, 2)]];
    for (const [label, value] of tiles) {
      const t = el('div', 'kpi', null, [el('b', null, value), el('span', null, label)]);
      t.dataset.kpi = label;
      kpis.appendChild(t);
    }
    const rows = rep.periods.map((p) => ({ label: label(p.start, rep.interval), v: pick(p, only) }));
    bars($('chart-volume'), rows, [['offered', '#8aa4c1'], ['answered', '#1f8a4c'], ['abandoned', '#b3261e']]);
    lines($('chart-sl'), rows);
    const tb = $('groups').querySelector('tbody');
    clear(tb);
    for (const g of rep.groups) {
      if (only && g.key !== only) continue;
      tb.appendChild(el('tr', null, null, [el('td', null, g.key), el('td', null, fmt(g.offered)),
        el('td', null, fmt(g.answered)), el('td', null, fmt(g.abandoned)),
        el('td', null, pct(g.abandon_rate)), el('td', null, pct(g.service_level)),
        el('td', null, fmt(g.asa_seconds, 1)), el('td', null, fmt(g.aht_seconds, 1)),
        el('td', null, fmt(g.transfers)), el('td', null, fmt(g.contacts_per_case, 2))]));
    }
    if (!tb.firstChild) tb.appendChild(el('tr', null, null, [el('td', null, 'No contacts in this period.')]));
  }

  function label(iso, interval) {
    return interval === 'hour' ? iso.slice(5, 16).replace('T', ' ') : iso.slice(0, 10);
  }

  function svgEl(tag, attrs, text) {
    const e = document.createElementNS(SVG, tag);
    for (const k in attrs) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function frame(svg) {
    clear(svg);
    const w = svg.clientWidth || 800, h = svg.clientHeight || 220;
    svg.setAttribute('viewBox', '0 0 ' + w + ' ' + h);
    return { w, h, l: 44, r: 10, t: 10, b: 34 };
  }

  function axis(svg, f, max, rows, fmtTick) {
    for (let i = 0; i <= 4; i++) {
      const y = f.t + (f.h - f.t - f.b) * (1 - i / 4);
      svg.appendChild(svgEl('line', { x1: f.l, x2: f.w - f.r, y1: y, y2: y, stroke: '#e3e8ee' }));
      svg.appendChild(svgEl('text', { x: f.l - 4, y: y + 4, 'text-anchor': 'end' }, fmtTick(max * i / 4)));
    }
    const step = Math.max(1, Math.ceil(rows.length / 12));
    const bw = (f.w - f.l - f.r) / Math.max(1, rows.length);
    rows.forEach((r, i) => {
      if (i % step) return;
      svg.appendChild(svgEl('text', { x: f.l + bw * i + bw / 2, y: f.h - f.b + 14, 'text-anchor': 'middle' }, r.label));
    });
    return bw;
  }

  function bars(svg, rows, series) {
    const f = frame(svg);
    let max = 1;
    for (const r of rows) for (const [k] of series) if (r.v && r.v[k] > max) max = r.v[k];
    const bw = axis(svg, f, max, rows, (v) => String(Math.round(v)));
    const inner = f.h - f.t - f.b;
    rows.forEach((r, i) => {
      series.forEach(([k, color], j) => {
        const v = r.v ? r.v[k] || 0 : 0;
        const bh = inner * v / max;
        const w = Math.max(1, (bw * 0.8) / series.length);
        const rect = svgEl('rect', { x: f.l + bw * i + bw * 0.1 + w * j, y: f.t + inner - bh,
          width: w, height: bh, fill: color });
        rect.appendChild(svgEl('title', {}, r.label + ' ' + k + ': ' + v));
        svg.appendChild(rect);
      });
    });
    series.forEach(([k, color], j) => {
      svg.appendChild(svgEl('rect', { x: f.l + j * 90, y: f.h - 12, width: 10, height: 10, fill: color }));
      svg.appendChild(svgEl('text', { x: f.l + j * 90 + 14, y: f.h - 3 }, k));
    });
  }

  function lines(svg, rows) {
    const f = frame(svg);
    const bw = axis(svg, f, 1, rows, (v) => Math.round(v * 100) + '%');
    const inner = f.h - f.t - f.b;
    let maxAsa = 1;
    for (const r of rows) if (r.v && r.v.asa_seconds > maxAsa) maxAsa = r.v.asa_seconds;
    const series = [['service_level', '#0b5cad', 1], ['asa_seconds', '#b35c00', maxAsa]];
    for (const [k, color, scale] of series) {
      let d = '';
      rows.forEach((r, i) => {
        const v = r.v ? r.v[k] : null;
        if (v === null || v === undefined) return;
        const x = f.l + bw * i + bw / 2, y = f.t + inner * (1 - v / scale);
        d += (d ? ' L' : 'M') + x.toFixed(1) + ' ' + y.toFixed(1);
        const c = svgEl('circle', { cx: x, cy: y, r: 3, fill: color });
        c.appendChild(svgEl('title', {}, r.label + ' ' + k + ': ' + v));
        svg.appendChild(c);
      });
      if (d) svg.appendChild(svgEl('path', { d, fill: 'none', stroke: color, 'stroke-width': 2 }));
    }
    svg.appendChild(svgEl('text', { x: f.l, y: f.h - 3 }, 'service level (%)'));
    svg.appendChild(svgEl('text', { x: f.l + 140, y: f.h - 3 }, 'ASA (0 – ' + maxAsa.toFixed(1) + ' s)'));
  }

  async function downloadCsv() {
    $('error').textContent = '';
    try {
      const res = await fetch(query('csv'), { headers: { Authorization: 'Bearer ' + token }, cache: 'no-store' });
      if (!res.ok) throw new Error('HTTP ' + res.status);
      const blob = await res.blob();
      const a = document.createElement('a');
      a.href = URL.createObjectURL(blob);
      a.download = 'service-report-' + $('from').value + '-' + $('to').value + '-' + $('group_by').value + '.csv';
      document.body.appendChild(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(a.href), 1000);
    } catch (e) {
      $('error').textContent = 'CSV download failed: ' + e.message;
    }
  }

  if (token) load(); else showSignin('');
})();
