// gridmon dashboard: one page, hash routes, data from the JSON API (docs/web-api.md), real-time
// frames over Server-Sent Events, charts by uPlot. Every string from the server is escaped.
'use strict';

const RES = ['cpu', 'mem', 'swap', 'disk'];
const TABLE_ROWS = 100;
const RES_LABEL = { cpu: 'CPU %', mem: 'Memory %', swap: 'Swap %', disk: 'Disk busy %' };
const COLORS = ['#2563eb', '#dc2626', '#16a34a', '#d97706', '#7c3aed', '#0891b2', '#be185d', '#4d7c0f'];

window.gridmonFrames = { count: 0, bytes: 0, lastMs: 0, maxMs: 0, totalMs: 0 };
const S = { session: null, es: null, charts: [], timers: [], procs: null, procSort: { key: 'cpu', desc: true } };

function esc(s) {
  return String(s ?? '').replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));
}
const $ = (sel, root = document) => root.querySelector(sel);
const fmtPct = (v) => (v == null ? '–' : v.toFixed(1));
function fmtBytes(b) {
  if (b == null) return '–';
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let i = 0;
  while (b >= 1024 && i < u.length - 1) { b /= 1024; i++; }
  return `${b.toFixed(i ? 1 : 0)} ${u[i]}`;
}
function fmtDur(s) {
  if (s == null) return '–';
  if (s < 60) return `${s.toFixed(0)} s`;
  if (s < 3600) return `${(s / 60).toFixed(0)} min`;
  if (s < 86400) return `${(s / 3600).toFixed(1)} h`;
  return `${(s / 86400).toFixed(1)} d`;
}
const fmtTime = (ms) => (ms ? new Date(ms).toLocaleString() : '–');
const enc = encodeURIComponent;

async function api(path, opts = {}) {
  const headers = {};
  if (opts.body) headers['Content-Type'] = 'application/json';
  if (opts.method === 'POST' && S.session && S.session.csrf) headers['X-CSRF-Token'] = S.session.csrf;
  const r = await fetch(path, { credentials: 'same-origin', ...opts, headers });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) {
    const e = new Error(body.message || r.statusText);
    e.status = r.status;
    e.kind = body.error;
    throw e;
  }
  return body;
}

function cleanup() {
  if (S.es) { S.es.close(); S.es = null; }
  S.charts.forEach((c) => c.destroy());
  S.charts = [];
  S.timers.forEach((t) => clearInterval(t));
  S.timers = [];
}

function live(params, onFrame) {
  const es = new EventSource(`/api/live?${params}`);
  S.es = es;
  es.addEventListener('frame', (e) => {
    const started = performance.now();
    let f;
    try { f = JSON.parse(e.data); } catch (err) { setStatus('bad frame', true); return; }
    setStatus(`live ${new Date(f.ts_ms).toLocaleTimeString()}`);
    onFrame(f);
    // How long a frame takes to parse and draw: the fluidity figure of docs/benchmarks.md.
    const ms = performance.now() - started;
    const st = window.gridmonFrames;
    st.count += 1;
    st.bytes = e.data.length;
    st.lastMs = ms;
    st.maxMs = Math.max(st.maxMs, ms);
    st.totalMs += ms;
  });
  es.onerror = () => setStatus('reconnecting…', true);
}

function setStatus(text, bad) {
  const el = $('#live-status');
  el.textContent = text;
  el.className = bad ? 'bad' : 'muted';
}

function crumbs(parts) {
  $('#crumbs').innerHTML = parts.map(([label, href]) => (href ? `<a href="${esc(href)}">${esc(label)}</a>` : esc(label))).join(' / ');
}

function chart(el, opts, data) {
  const u = new uPlot({ width: Math.max(300, el.clientWidth - 4), height: 220, ...opts }, data, el);
  S.charts.push(u);
  return u;
}

function lineOpts(title, series, yRange) {
  return {
    title,
    scales: { x: { time: true }, y: yRange ? { range: yRange } : {} },
    series: [{}, ...series.map((s, i) => ({ label: s, stroke: COLORS[i % COLORS.length], width: 1.5, spanGaps: false, points: { size: 3 } }))],
    axes: [{}, { size: 50 }],
  };
}

// Marks a chart's container with its newest point, for people (title) and for tests.
function markLatest(el, t, v) {
  if (t == null) return;
  el.dataset.lastT = String(t);
  el.dataset.lastV = v == null ? '' : String(v);
}

// ---------------------------------------------------------------------------------------------
// Session
// ---------------------------------------------------------------------------------------------

function showBus() {
  const bus = S.session && S.session.bus;
  $('#bus-status').textContent = bus && bus !== 'connected' ? `NATS ${bus}: live data is not arriving` : '';
}

async function loadSession() {
  S.session = await api('/api/session');
  showBus();
  const who = $('#who');
  if (S.session.user) {
    who.innerHTML = `${esc(S.session.user)} <span class="muted">(${esc(S.session.role)})</span> <button id="logout" type="button">Log out</button>`;
    $('#logout').onclick = async () => { await api('/api/logout', { method: 'POST' }); location.reload(); };
  } else if (S.session.login_enabled) {
    who.textContent = '';
  } else {
    who.innerHTML = '<span class="muted">read-only</span>';
  }
}

function loginPage() {
  crumbs([['Log in']]);
  $('#main').innerHTML = `<form class="panel login" id="login-form">
    <h2>Log in</h2>
    <label>User <input name="user" id="login-user" autocomplete="username" required></label>
    <label>Password <input name="password" id="login-password" type="password" autocomplete="current-password" required></label>
    <button type="submit">Log in</button> <span id="login-error" class="bad"></span></form>`;
  $('#login-form').onsubmit = async (e) => {
    e.preventDefault();
    try {
      await api('/api/login', { method: 'POST', body: JSON.stringify({ user: $('#login-user').value, password: $('#login-password').value }) });
      await loadSession();
      route();
    } catch (err) {
      $('#login-error').textContent = err.message;
    }
  };
}

// ---------------------------------------------------------------------------------------------
// Grid: static view, per-cluster real time, faults, alarms
// ---------------------------------------------------------------------------------------------

function faultRows(faults, hardware) {
  const rows = faults.filter((f) => f.hardware === hardware);
  if (!rows.length) return '<tr><td class="muted" colspan="4">none</td></tr>';
  return rows.map((f) => `<tr class="fault"><td><a href="#/node/${esc(f.node)}">${esc(f.node)}</a></td><td class="bad">${esc(f.kind)}</td><td>${esc(f.instance)}</td><td class="num">${esc(hardware ? f.value.toFixed(1) : f.value.toFixed(0))}</td></tr>`).join('');
}

function alarmRows(alarms) {
  if (!alarms.length) return '<tr><td class="muted" colspan="4">none</td></tr>';
  return alarms.map((a) => `<tr><td class="${a.severity === 'critical' ? 'bad' : 'warn'}">${esc(a.severity)}</td><td>${esc(a.scope)}</td><td>${esc(a.rule)}${a.instance ? ` (${esc(a.instance)})` : ''}</td><td class="muted">${esc(fmtTime(a.raised_ms))}</td></tr>`).join('');
}

function eventRows(events) {
  if (!events.length) return '<tr><td class="muted" colspan="3">none</td></tr>';
  return events.slice(0, 20).map((e) => `<tr><td class="muted">${esc(new Date(e.ts_ms).toLocaleTimeString())}</td><td>${esc(e.scope)}</td><td>${esc(e.kind)}: ${esc(e.message)}</td></tr>`).join('');
}

function panels() {
  return `<div class="row">
    <div class="panel"><h2>Hardware faults</h2><div class="scroll"><table id="hw-faults"><thead><tr><th>Node</th><th>Fault</th><th>Sensor</th><th class="num">Value</th></tr></thead><tbody></tbody></table></div></div>
    <div class="panel"><h2>Program faults</h2><div class="scroll"><table id="sw-faults"><thead><tr><th>Node</th><th>State</th><th>Program</th><th class="num">Restarts</th></tr></thead><tbody></tbody></table></div></div>
  </div>
  <div class="row">
    <div class="panel"><h2>Active alarms</h2><div class="scroll"><table id="alarms"><thead><tr><th>Severity</th><th>Scope</th><th>Rule</th><th>Since</th></tr></thead><tbody></tbody></table></div></div>
    <div class="panel"><h2>Recent events</h2><div class="scroll"><table id="events"><tbody></tbody></table></div></div>
  </div>`;
}

function fillPanels(f) {
  $('#hw-faults tbody').innerHTML = faultRows(f.faults, true);
  $('#sw-faults tbody').innerHTML = faultRows(f.faults, false);
  $('#alarms tbody').innerHTML = alarmRows(f.alarms);
  $('#events tbody').innerHTML = eventRows(f.events);
}

function bar(v) {
  const w = v == null ? 0 : Math.max(0, Math.min(100, v));
  return `<div class="bar"><span class="${w > 90 ? 'hot' : ''}" style="width:${w}%"></span></div>`;
}

async function gridPage() {
  crumbs([['Grid']]);
  $('#main').innerHTML = `
    <div class="panel" id="static-panel"><h2>Static view: capacity per cluster</h2><table id="static"><thead><tr>
      <th>Cluster</th><th class="num">Nodes</th><th class="num">CPU cores</th><th class="num">Memory</th><th class="num">Swap</th><th class="num">Disk capacity</th><th>Updated</th></tr></thead><tbody><tr><td class="muted" colspan="7">loading…</td></tr></tbody></table></div>
    <div class="panel"><h2>Real time: clusters</h2><div class="cards" id="clusters"></div></div>
    ${panels()}`;
  if (S.session.history) {
    api('/api/static').then((d) => {
      $('#static tbody').innerHTML = d.clusters.length ? d.clusters.map((c) => `<tr data-cluster="${esc(c.cluster)}"><td><a href="#/cluster/${esc(c.cluster)}">${esc(c.cluster)}</a></td><td class="num">${c.nodes}</td><td class="num">${c.cpu_cores}</td><td class="num">${esc(fmtBytes(c.memory_bytes))}</td><td class="num">${esc(fmtBytes(c.swap_bytes))}</td><td class="num">${esc(fmtBytes(c.disk_capacity_bytes))}</td><td class="muted">${esc(fmtTime(c.updated_ms))}</td></tr>`).join('')
        : '<tr><td class="muted" colspan="7">no inventory yet</td></tr>';
    }).catch((e) => { $('#static tbody').innerHTML = `<tr><td class="bad" colspan="7">${esc(e.message)}</td></tr>`; });
  } else {
    $('#static tbody').innerHTML = '<tr><td class="muted" colspan="7">no ClickHouse configured</td></tr>';
  }
  live('view=grid', (f) => {
    $('#clusters').innerHTML = f.clusters.map((c) => `<div class="card" data-cluster="${esc(c.name)}">
      <h3>${esc(c.name)}</h3>
      <div><span class="ok">${c.online} online</span>${c.stale ? ` <span class="warn">${c.stale} stale</span>` : ''}${c.offline ? ` <span class="bad">${c.offline} offline</span>` : ''}
      ${c.faults ? ` <span class="bad">⚠ ${c.faults} faults</span>` : ''}${c.alarms ? ` <span class="warn">${c.alarms} alarms</span>` : ''}</div>
      ${RES.map((r, i) => `<div class="muted">${RES_LABEL[r]}: ${fmtPct(c.mean[i])} mean, ${fmtPct(c.max[i])} max</div>${bar(c.mean[i])}`).join('')}
    </div>`).join('') || '<span class="muted">no nodes heard from yet</span>';
    document.querySelectorAll('#clusters .card').forEach((el) => { el.onclick = () => { location.hash = `#/cluster/${el.dataset.cluster}`; }; });
    fillPanels(f);
  });
}

// ---------------------------------------------------------------------------------------------
// Cluster: one resource class across all of a cluster's nodes
// ---------------------------------------------------------------------------------------------

function clusterPage(cluster, res) {
  const ri = Math.max(0, RES.indexOf(res));
  crumbs([['Grid', '#/'], [cluster]]);
  $('#main').innerHTML = `
    <div class="panel"><div class="tabs" id="res-tabs">${RES.map((r, i) => `<button type="button" data-res="${r}" class="${i === ri ? 'on' : ''}">${RES_LABEL[r]}</button>`).join('')}</div>
      <div id="bars"></div><div id="trend"></div></div>
    ${panels()}
    <div class="panel"><h2>Nodes</h2><p>Find: <input id="node-filter" placeholder="group/node"> <span id="node-count" class="muted"></span></p><div class="scroll"><table id="nodes"><thead><tr><th>Node</th><th>Status</th>${RES.map((r) => `<th class="num">${RES_LABEL[r]}</th>`).join('')}<th class="num">Temp max °C</th><th class="num">Faults</th></tr></thead><tbody></tbody></table></div></div>`;
  document.querySelectorAll('#res-tabs button').forEach((b) => { b.onclick = () => { location.hash = `#/cluster/${cluster}/${b.dataset.res}`; }; });
  let bars = null;
  let trend = null;
  let ids = [];
  live(`view=cluster&cluster=${enc(cluster)}`, (f) => {
    ids = f.nodes.map((n) => n.id);
    const x = f.nodes.map((_, i) => i);
    const y = f.nodes.map((n) => n.v[ri]);
    if (!bars) {
      bars = chart($('#bars'), {
        title: `${RES_LABEL[RES[ri]]} per node (${f.nodes.length} nodes)`,
        scales: { x: { time: false, range: () => [-0.5, Math.max(0.5, ids.length - 0.5)] }, y: { range: [0, 100] } },
        series: [{ label: 'node', value: (u, v) => (v == null ? '' : ids[v] ?? '') }, { label: RES_LABEL[RES[ri]], fill: '#2563eb88', stroke: '#2563eb', paths: uPlot.paths.bars({ size: [0.9, 40] }), points: { show: false } }],
        axes: [{ splits: () => (ids.length <= 40 ? ids.map((_, i) => i) : []), values: (u, vals) => vals.map((v) => ids[v] ?? '') }, { size: 50 }],
      }, [x, y]);
      bars.over.addEventListener('click', () => {
        const i = bars.cursor.idx;
        if (i != null && ids[i]) location.hash = `#/node/${cluster}/${ids[i]}`;
      });
    } else {
      bars.setData([x, y]);
    }
    const t = f.series.t.map((ms) => ms / 1000);
    const data = [t, f.series.mean[ri] || [], f.series.max[ri] || []];
    if (!trend) {
      trend = chart($('#trend'), lineOpts(`${RES_LABEL[RES[ri]]} over time (mean and max of online nodes)`, ['mean', 'max'], [0, 100]), data);
    } else {
      trend.setData(data);
    }
    markLatest($('#trend'), f.series.t[f.series.t.length - 1], (f.series.mean[ri] || []).slice(-1)[0]);
    // The table: the busiest TABLE_ROWS for this resource plus every node in trouble, or the
    // nodes matching the filter; the bar chart has them all (click a bar to open its node).
    const find = ($('#node-filter').value || '').trim();
    let sorted = [...f.nodes].sort((a, b) => (b.v[ri] ?? -1) - (a.v[ri] ?? -1));
    sorted = find ? sorted.filter((n) => n.id.includes(find))
      : sorted.filter((n, i) => i < TABLE_ROWS || n.status !== 'online' || n.faults || n.programs_failed);
    $('#node-count').textContent = `${sorted.length} of ${f.nodes.length} nodes shown`;
    $('#nodes tbody').innerHTML = sorted.map((n) => `<tr class="${n.faults ? 'fault' : ''} ${n.status !== 'online' ? n.status : ''}"><td><a href="#/node/${esc(cluster)}/${esc(n.id)}">${esc(n.id)}</a></td><td class="${n.status === 'online' ? 'ok' : 'bad'}">${esc(n.status)}</td>${n.v.map((v) => `<td class="num">${fmtPct(v)}</td>`).join('')}<td class="num">${n.temp_max == null ? '–' : n.temp_max.toFixed(0)}</td><td class="num ${n.faults ? 'bad' : ''}">${n.faults}</td></tr>`).join('');
    fillPanels(f);
  });
}

// ---------------------------------------------------------------------------------------------
// Node: one node in full
// ---------------------------------------------------------------------------------------------

function programRows(programs, node, actions) {
  if (!programs || !programs.length) return '<tr><td class="muted" colspan="6">no supervised programs</td></tr>';
  return programs.map((p) => {
    const bad = p.state === 'crashed' || p.state === 'error';
    const acts = actions ? ['start', 'stop', 'restart', 'degrade', 'undegrade'].map((a) => `<button type="button" data-act="${a}" data-program="${esc(p.name)}">${a}</button>`).join(' ') : '';
    return `<tr data-program="${esc(p.name)}" class="${bad ? 'fault' : ''}"><td>${esc(p.name)}</td><td class="${bad ? 'bad' : p.state === 'running' ? 'ok' : 'warn'}" data-state>${esc(p.state)}</td><td class="num" data-pid>${p.pid ?? '–'}</td><td class="num">${p.restarts}</td><td>${esc(p.version ?? '')}</td><td class="muted">${esc(p.detail)}</td>${actions ? `<td>${acts}</td>` : ''}</tr>`;
  }).join('');
}

function nodePage(id) {
  const [c, g, n] = id.split('/');
  crumbs([['Grid', '#/'], [c, `#/cluster/${c}`], [`${g}/${n}`]]);
  $('#main').innerHTML = `
    <div class="panel"><h2>${esc(id)} <span id="node-status"></span> <a href="#/procs/${esc(id)}">processes and programs →</a></h2><div class="kv" id="host"></div></div>
    <div class="row quad">${RES.map((r) => `<div class="panel"><div id="chart-${r}"></div></div>`).join('')}</div>
    <div class="row">
      <div class="panel"><h2>Sensors</h2><div class="scroll"><table id="sensors"><thead><tr><th>Sensor</th><th>Kind</th><th class="num">Value</th><th class="num">Min</th><th class="num">Max</th><th class="num">Crit</th></tr></thead><tbody></tbody></table></div></div>
      <div class="panel"><h2>Supervised programs</h2><table id="programs"><thead><tr><th>Program</th><th>State</th><th class="num">PID</th><th class="num">Restarts</th><th>Release</th><th>Detail</th></tr></thead><tbody></tbody></table></div>
    </div>
    ${panels()}`;
  const charts = {};
  live(`view=node&node=${enc(id)}`, (f) => {
    const st = $('#node-status');
    st.textContent = f.found ? f.status : 'no report yet';
    st.className = f.status === 'online' ? 'ok' : 'bad';
    const t = f.series.t.map((ms) => ms / 1000);
    RES.forEach((r, i) => {
      const data = [t, f.series.mean[i] || []];
      if (!charts[r]) charts[r] = chart($(`#chart-${r}`), lineOpts(RES_LABEL[r], [r], [0, 100]), data);
      else charts[r].setData(data);
      markLatest($(`#chart-${r}`), f.series.t[f.series.t.length - 1], (f.series.mean[i] || []).slice(-1)[0]);
    });
    const rep = f.report && f.report.body;
    if (rep && rep.host) {
      const h = rep.host;
      $('#host').innerHTML = `
        <span>CPU</span><span>${fmtPct(h.cpu.total_pct)} % of ${h.cpu.per_core_pct.length} cores, load ${h.cpu.load1.toFixed(2)} / ${h.cpu.load5.toFixed(2)} / ${h.cpu.load15.toFixed(2)}</span>
        <span>Memory</span><span>${esc(fmtBytes(h.memory.used_bytes))} of ${esc(fmtBytes(h.memory.total_bytes))}</span>
        <span>Swap</span><span>${esc(fmtBytes(h.memory.swap_used_bytes))} of ${esc(fmtBytes(h.memory.swap_total_bytes))}</span>
        <span>Disks</span><span>${h.disks.map((d) => `${esc(d.name)} ${fmtPct(d.busy_pct)} % busy`).join(', ') || '–'}</span>
        <span>Network</span><span>${h.nets.filter((x) => x.name !== 'lo').map((x) => `${esc(x.name)} ↓${esc(fmtBytes(x.rx_bytes_ps))}/s ↑${esc(fmtBytes(x.tx_bytes_ps))}/s`).join(', ') || '–'}</span>
        <span>Up</span><span>${(h.uptime_s / 3600).toFixed(1)} h; agent ${esc(rep.agent.version)}</span>`;
    }
    $('#sensors tbody').innerHTML = rep && rep.sensors.length ? rep.sensors.map((s) => `<tr class="${s.alarm ? 'fault' : ''}"><td>${esc(s.label)} <span class="muted">${esc(s.id)}</span></td><td>${esc(s.kind)}</td><td class="num ${s.alarm ? 'bad' : ''}">${s.value.toFixed(1)}</td><td class="num">${s.min ?? '–'}</td><td class="num">${s.max ?? '–'}</td><td class="num">${s.crit ?? '–'}</td></tr>`).join('') : '<tr><td class="muted" colspan="6">no sensors</td></tr>';
    $('#programs tbody').innerHTML = programRows(rep && rep.programs, id, false);
    f.faults = f.faults.map((x) => ({ ...x, node: id }));
    fillPanels(f);
  });
}

// ---------------------------------------------------------------------------------------------
// Process management: process table (sortable) and supervised programs (actions)
// ---------------------------------------------------------------------------------------------

function sortProcs(rows) {
  const { key, desc } = S.procSort;
  const val = { name: (r) => r.name, pid: (r) => r.pid, cpu: (r) => r.cpu_pct, mem: (r) => r.rss_bytes }[key];
  return [...rows].sort((a, b) => {
    const x = val(a); const y = val(b);
    const o = typeof x === 'string' ? x.localeCompare(y) : x - y;
    return (desc ? -o : o) || a.pid - b.pid;
  });
}

function renderProcs() {
  if (!S.procs) return;
  const filter = ($('#proc-filter').value || '').toLowerCase();
  const rows = sortProcs(S.procs.rows.filter((r) => !filter || r.name.toLowerCase().includes(filter) || r.cmdline.toLowerCase().includes(filter)));
  document.querySelectorAll('#procs th[data-sort]').forEach((th) => {
    th.classList.toggle('sorted', th.dataset.sort === S.procSort.key);
    th.classList.toggle('asc', th.dataset.sort === S.procSort.key && !S.procSort.desc);
  });
  $('#proc-count').textContent = `${rows.length} of ${S.procs.total} processes, table of ${fmtTime(S.procs.ts_ms)}`;
  $('#procs tbody').innerHTML = rows.map((r) => `<tr class="${r.state === 'zombie' ? 'fault' : ''}"><td class="num pid">${r.pid}</td><td class="name">${esc(r.name)}</td><td>${esc(r.user)}</td><td>${esc(r.state)}</td><td class="num cpu">${r.cpu_pct.toFixed(1)}</td><td class="num mem" data-bytes="${r.rss_bytes}">${esc(fmtBytes(r.rss_bytes))}</td><td class="num">${r.threads}</td><td class="num">${r.fds ?? '–'}</td><td class="num">${r.nice}</td><td class="num">${esc(fmtDur(r.run_time_s))}</td><td class="muted">${esc(r.cmdline.slice(0, 80))}</td></tr>`).join('');
}

function confirmAction(text) {
  return new Promise((resolve) => {
    $('#modal-text').textContent = text;
    $('#modal').hidden = false;
    const done = (v) => { $('#modal').hidden = true; resolve(v); };
    $('#confirm-yes').onclick = () => done(true);
    $('#confirm-no').onclick = () => done(false);
  });
}

async function act(id, op, program, extra) {
  const label = extra && extra.version ? `${op} ${program} to ${extra.version}` : `${op} ${program}`;
  if (!(await confirmAction(`${label} on ${id}?`))) return;
  const out = $('#action-result');
  out.className = 'muted';
  out.textContent = `${label}: sent…`;
  const [c, g, n] = id.split('/');
  const payload = { op: op === 'undegrade' ? 'degrade' : op, program, ...(extra || {}) };
  if (op === 'undegrade') payload.on = false;
  try {
    const r = await api(`/api/nodes/${enc(c)}/${enc(g)}/${enc(n)}/command`, { method: 'POST', body: JSON.stringify(payload) });
    out.className = r.reply.ok ? 'ok' : 'bad';
    out.textContent = `${label}: ${r.reply.ok ? 'ok' : `failed (${r.reply.error})`} ${r.reply.message} (${r.elapsed_ms} ms)`;
  } catch (e) {
    out.className = 'bad';
    out.textContent = `${label}: ${e.status || ''} ${e.message}`;
  }
}

function procsPage(id) {
  const [c, g, n] = id.split('/');
  crumbs([['Grid', '#/'], [c, `#/cluster/${c}`], [`${g}/${n}`, `#/node/${id}`], ['processes']]);
  const canAct = S.session.can_act;
  $('#main').innerHTML = `
    <div class="panel"><h2>Supervised programs on ${esc(id)}</h2>
      ${canAct ? '' : `<p class="muted">${S.session.login_enabled ? 'Actions need the operator role.' : 'Read-only dashboard (no users configured).'}</p>`}
      <table id="programs"><thead><tr><th>Program</th><th>State</th><th class="num">PID</th><th class="num">Restarts</th><th>Release</th><th>Detail</th>${canAct ? '<th>Actions</th>' : ''}</tr></thead><tbody></tbody></table>
      ${canAct ? `<p>Release: <input id="release-version" placeholder="version" size="12"> <select id="release-program"></select>
        <button type="button" id="do-deploy">deploy</button> <button type="button" id="do-upgrade">upgrade</button> <button type="button" id="do-rollback">rollback</button></p>` : ''}
      <p id="action-result"></p></div>
    <div class="panel"><h2>Processes</h2><p>Filter: <input id="proc-filter" placeholder="name or command"> <span id="proc-count" class="muted"></span></p>
      <div class="scroll"><table id="procs"><thead><tr><th class="num" data-sort="pid">PID</th><th data-sort="name">Name</th><th>User</th><th>State</th><th class="num" data-sort="cpu">CPU %</th><th class="num" data-sort="mem">Memory</th><th class="num">Threads</th><th class="num">FDs</th><th class="num">Nice</th><th class="num">Run time</th><th>Command</th></tr></thead><tbody></tbody></table></div></div>
    ${S.session.history ? '<div class="panel"><h2>Command audit</h2><div class="scroll"><table id="audit"><thead><tr><th>Time</th><th>Phase</th><th>Op</th><th>Program</th><th>By</th><th>Result</th></tr></thead><tbody></tbody></table></div></div>' : ''}`;
  document.querySelectorAll('#procs th[data-sort]').forEach((th) => {
    th.onclick = () => {
      const key = th.dataset.sort;
      S.procSort = S.procSort.key === key ? { key, desc: !S.procSort.desc } : { key, desc: key === 'cpu' || key === 'mem' };
      renderProcs();
    };
  });
  $('#proc-filter').oninput = renderProcs;
  $('#programs').onclick = (e) => {
    const b = e.target.closest('button[data-act]');
    if (b) act(id, b.dataset.act, b.dataset.program);
  };
  if (canAct) {
    for (const op of ['deploy', 'upgrade', 'rollback']) {
      $(`#do-${op}`).onclick = () => {
        const version = $('#release-version').value.trim();
        act(id, op, $('#release-program').value, version ? { version } : undefined);
      };
    }
  }
  const loadProcs = () => api(`/api/nodes/${enc(c)}/${enc(g)}/${enc(n)}/processes?limit=5000`)
    .then((d) => { S.procs = d; renderProcs(); })
    .catch((e) => { $('#proc-count').textContent = e.message; });
  const loadAudit = () => S.session.history && api(`/api/audit?node=${enc(id)}&limit=20`).then((d) => {
    $('#audit tbody').innerHTML = d.records.map((r) => `<tr><td class="muted">${esc(fmtTime(r.ts_ms))}</td><td>${esc(r.phase)}</td><td>${esc(r.op)}</td><td>${esc(r.program)}</td><td>${esc(r.on_behalf_of || r.issuer_name)}</td><td class="${r.ok ? 'ok' : 'bad'}">${r.ok ? 'ok' : esc(r.error)} ${esc(r.message)}</td></tr>`).join('') || '<tr><td class="muted" colspan="6">none</td></tr>';
  }).catch(() => {});
  S.procs = null;
  loadProcs();
  loadAudit();
  S.timers.push(setInterval(loadProcs, 5000), setInterval(loadAudit, 5000));
  let programsKey = '';
  live(`view=node&node=${enc(id)}`, (f) => {
    const progs = (f.report && f.report.body.programs) || [];
    const key = JSON.stringify(progs.map((p) => [p.name, p.state, p.pid, p.restarts, p.version, p.detail]));
    if (key !== programsKey) {
      programsKey = key;
      $('#programs tbody').innerHTML = programRows(progs, id, canAct);
      const sel = $('#release-program');
      if (sel) sel.innerHTML = progs.map((p) => `<option>${esc(p.name)}</option>`).join('');
    }
  });
}

// ---------------------------------------------------------------------------------------------
// History: per-cluster trends, fault points, faults per day
// ---------------------------------------------------------------------------------------------

async function historyPage(params) {
  crumbs([['History']]);
  const range = params.get('range') || '7d';
  const cluster = params.get('cluster') || '';
  $('#main').innerHTML = `
    <div class="panel"><h2>History</h2>
      Range: <select id="h-range">${['1h', '6h', '24h', '7d', '30d'].map((r) => `<option ${r === range ? 'selected' : ''}>${r}</option>`).join('')}</select>
      Cluster: <select id="h-cluster"><option value="">all</option></select>
      <span id="h-info" class="muted"></span></div>
    <div class="row quad">${RES.map((r) => `<div class="panel"><div id="trend-${r}"></div></div>`).join('')}</div>
    <div class="row">
      <div class="panel"><div id="fault-points"></div></div>
      <div class="panel"><div id="fault-freq"></div>
        <table id="fault-days"><thead><tr><th>Day</th><th class="num">Hardware</th><th class="num">Software</th></tr></thead><tbody></tbody></table></div>
    </div>
    <div class="panel"><h2>Fault points</h2><div class="scroll"><table id="fault-list"><thead><tr><th>Time</th><th>Node</th><th>Kind</th><th>Rule</th><th>Instance</th><th class="num">Value</th></tr></thead><tbody></tbody></table></div></div>`;
  const go = () => { location.hash = `#/history?range=${enc($('#h-range').value)}${$('#h-cluster').value ? `&cluster=${enc($('#h-cluster').value)}` : ''}`; };
  $('#h-range').onchange = go;
  $('#h-cluster').onchange = go;
  if (!S.session.history) { $('#h-info').textContent = 'no ClickHouse configured'; return; }
  api('/api/static').then((d) => {
    $('#h-cluster').innerHTML = '<option value="">all</option>' + d.clusters.map((c) => `<option ${c.cluster === cluster ? 'selected' : ''}>${esc(c.cluster)}</option>`).join('');
  }).catch(() => {});
  let h;
  try {
    h = await api(`/api/history?range=${enc(range)}${cluster ? `&cluster=${enc(cluster)}` : ''}`);
  } catch (e) {
    $('#h-info').textContent = e.message;
    $('#h-info').className = 'bad';
    return;
  }
  $('#h-info').textContent = `${h.trends.length} clusters, ${h.step_s / 60} min steps from ${h.table}, ${h.faults.length} fault points, queried in ${h.query_ms} ms`;
  // One time axis for all clusters: every step of the range, so a gap in the data shows as one.
  const stepMs = h.step_s * 1000;
  const ts = [];
  for (let t = Math.floor(h.from_ms / stepMs) * stepMs; t < h.to_ms; t += stepMs) ts.push(t);
  const at = new Map(ts.map((t, i) => [t, i]));
  RES.forEach((r, ri) => {
    const cols = h.trends.map((tr) => {
      const col = new Array(ts.length).fill(null);
      tr.t.forEach((t, i) => { if (at.has(t)) col[at.get(t)] = tr.mean[ri][i]; });
      return col;
    });
    const el = $(`#trend-${r}`);
    chart(el, lineOpts(`${RES_LABEL[r]}, mean per cluster`, h.trends.map((t) => t.cluster), [0, 100]), [ts.map((t) => t / 1000), ...cols]);
    el.dataset.points = String(cols.reduce((n, c) => n + c.filter((v) => v != null).length, 0));
  });
  // Fault points: time against cluster, hardware and software apart.
  const clusters = [...new Set(h.faults.map((f) => f.cluster))].sort();
  const pts = [...h.faults].sort((a, b) => a.ts_ms - b.ts_ms);
  const fx = pts.map((f) => f.ts_ms / 1000);
  const hw = pts.map((f) => (f.hardware ? clusters.indexOf(f.cluster) + 0.1 : null));
  const sw = pts.map((f) => (f.hardware ? null : clusters.indexOf(f.cluster) - 0.1));
  chart($('#fault-points'), {
    title: 'Fault points (by cluster)',
    scales: { x: { time: true }, y: { range: [-0.5, Math.max(0.5, clusters.length - 0.5)] } },
    series: [{}, { label: 'hardware', stroke: '#dc2626', paths: () => null, points: { show: true, size: 7, fill: '#dc2626' } },
      { label: 'software', stroke: '#2563eb', paths: () => null, points: { show: true, size: 7, fill: '#2563eb' } }],
    axes: [{}, { size: 60, splits: () => clusters.map((_, i) => i), values: (u, v) => v.map((i) => clusters[i] ?? '') }],
  }, [fx, hw, sw]);
  const days = h.fault_days;
  chart($('#fault-freq'), {
    title: 'Faults per day',
    scales: { x: { time: false, range: [-0.6, Math.max(0.6, days.length - 0.4)] }, y: { range: (u, min, max) => [0, Math.max(1, max)] } },
    series: [{ label: 'day', value: (u, v) => days[v]?.day ?? '' },
      { label: 'hardware', fill: '#dc262688', stroke: '#dc2626', paths: uPlot.paths.bars({ size: [0.4, 40], align: -1 }) },
      { label: 'software', fill: '#2563eb88', stroke: '#2563eb', paths: uPlot.paths.bars({ size: [0.4, 40], align: 1 }) }],
    axes: [{ splits: () => days.map((_, i) => i), values: (u, v) => v.map((i) => (days[i] ? days[i].day.slice(5) : '')) }, { size: 40 }],
  }, [days.map((_, i) => i), days.map((d) => d.hardware), days.map((d) => d.software)]);
  $('#fault-days tbody').innerHTML = days.map((d) => `<tr data-day="${esc(d.day)}"><td>${esc(d.day)}</td><td class="num">${d.hardware}</td><td class="num">${d.software}</td></tr>`).join('') || '<tr><td class="muted" colspan="3">no faults in this range</td></tr>';
  $('#fault-list tbody').innerHTML = [...h.faults].reverse().slice(0, 500).map((f) => `<tr><td class="muted">${esc(fmtTime(f.ts_ms))}</td><td>${esc(`${f.cluster}/${f.group}/${f.node}`)}</td><td class="${f.hardware ? 'bad' : 'warn'}">${f.hardware ? 'hardware' : 'software'}</td><td>${esc(f.rule)}</td><td>${esc(f.instance)}</td><td class="num">${f.value.toFixed(1)}</td></tr>`).join('');
}

// ---------------------------------------------------------------------------------------------
// Routing
// ---------------------------------------------------------------------------------------------

async function route() {
  cleanup();
  const hash = location.hash.replace(/^#/, '') || '/';
  const [path, query] = hash.split('?');
  const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  document.querySelectorAll('header nav a').forEach((a) => a.classList.toggle('active', a.dataset.nav === (parts[0] === 'history' ? 'history' : 'grid')));
  if (S.session.login_enabled && !S.session.user) { loginPage(); return; }
  try {
    if (parts[0] === 'cluster' && parts[1]) clusterPage(parts[1], parts[2] || 'cpu');
    else if (parts[0] === 'node' && parts.length === 4) nodePage(parts.slice(1).join('/'));
    else if (parts[0] === 'procs' && parts.length === 4) procsPage(parts.slice(1).join('/'));
    else if (parts[0] === 'history') await historyPage(new URLSearchParams(query || ''));
    else await gridPage();
  } catch (e) {
    $('#main').innerHTML = `<div class="panel bad">${esc(e.message)}</div>`;
  }
}

window.addEventListener('hashchange', route);
window.addEventListener('DOMContentLoaded', async () => {
  try {
    await loadSession();
  } catch (e) {
    $('#main').innerHTML = `<div class="panel bad">cannot reach the dashboard API: ${esc(e.message)}</div>`;
    return;
  }
  route();
  // The bus connection, every 5 s (the frames keep coming from the server either way).
  setInterval(() => api('/api/session').then((s) => { S.session.bus = s.bus; showBus(); }).catch(() => {}), 5000);
});
