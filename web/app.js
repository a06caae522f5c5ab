// Sluice's operator dashboard (API.md "Operations endpoints"), served under
// /ui/ on the admin port. It talks only to the admin port: the admin API,
// the queue and event-log routes served there under /admin with the admin
// token, and GET /metrics, which it polls every POLL_MS and charts. Every
// piece of data reaches the page through textContent or setAttribute, never
// as markup: message bodies and events are user input.
'use strict';

const ROOT = location.pathname.replace(/ui\/[^/]*$/, ''); // "/" unless behind a prefix
const API = ROOT + 'admin/api/v1';
const POLL_MS = 2000;
const HISTORY = 90; // samples kept per chart: three minutes
const TOKEN_KEY = 'sluice.adminToken';
const ACCOUNT_KEY = 'sluice.account';
const SVG = 'http://www.w3.org/2000/svg';

const $ = (sel) => document.querySelector(sel);

let token = sessionStorage.getItem(TOKEN_KEY);
let generation = 0; // bumped at logout: answers to older requests are dropped
let timer = null, busy = false, again = false;
let account = sessionStorage.getItem(ACCOUNT_KEY);
let selected = null; // the queue shown in detail
let prev = null; // the scrape that rates are taken against: {t, m}
let scrapes = []; // the last few scrapes
let lastStats = new Map(); // queue name -> QueueStatistics of the last tick
let evQuery = null; // the event query being paged: {params, continuation, page}
const history = new Map(); // queue name -> samples, for the charts
const storeHistory = [];

// A request that was answered after a logout, or that logged out (401).
class Dropped extends Error {}

// --- DOM helpers ------------------------------------------------------------

// An element with attributes and children; strings become text nodes.
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) if (v != null) el.setAttribute(k, v);
  for (const c of children) el.append(c == null ? '' : c);
  return el;
}

function svg(tag, attrs) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  return el;
}

function setText(sel, text) {
  $(sel).textContent = text;
}

// Brings tbody's rows (keyed by the attribute key) in line with items:
// rows are made once by make and updated in place by update, so that a
// button under the pointer survives the next poll.
function syncRows(tbody, key, items, id, make, update) {
  const old = new Map([...tbody.children].map((tr) => [tr.getAttribute(key), tr]));
  let at = tbody.firstElementChild;
  for (const item of items) {
    let tr = old.get(id(item));
    old.delete(id(item));
    if (!tr) tr = make(item);
    if (tr !== at) tbody.insertBefore(tr, at);
    else at = at.nextElementSibling;
    update(tr, item);
  }
  for (const tr of old.values()) tr.remove();
}

// --- Formatting -------------------------------------------------------------

function num(v) {
  if (v == null || Number.isNaN(v)) return '–';
  if (Number.isInteger(v)) return v.toLocaleString('en-US');
  return v < 10 ? v.toFixed(1) : Math.round(v).toLocaleString('en-US');
}

function age(s) {
  if (s == null) return '–';
  if (s < 120) return Math.round(s) + ' s';
  if (s < 7200) return Math.round(s / 60) + ' min';
  if (s < 172800) return Math.round(s / 3600) + ' h';
  return Math.round(s / 86400) + ' d';
}

function bytes(b) {
  if (b == null) return '–';
  return b < 1048576 ? Math.round(b / 1024) + ' KiB' : (b / 1048576).toFixed(1) + ' MiB';
}

// --- The API ----------------------------------------------------------------

async function api(method, path, body) {
  const gen = generation;
  const init = {method, headers: {Authorization: 'Bearer ' + token}, cache: 'no-store'};
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const r = await fetch(path, init);
  if (gen !== generation) throw new Dropped('logged out');
  if (r.status === 401) {
    logout('The admin token was refused: ' + (await errorMessage(r)));
    throw new Dropped('401');
  }
  if (!r.ok) throw new Error(`${r.status}: ${await errorMessage(r)}`);
  if (r.status === 204) return null;
  return (r.headers.get('Content-Type') || '').includes('json') ? r.json() : r.text();
}

async function errorMessage(r) {
  const text = await r.text();
  try {
    const e = JSON.parse(text).error;
    if (e && e.message) return e.message;
  } catch (_) { /* not the API's error JSON */ }
  return text.slice(0, 200) || r.statusText;
}

const enc = encodeURIComponent;
const acctPath = () => `${API}/accounts/${enc(account)}`;
const queuePath = (q) => `${acctPath()}/queues/${enc(q)}`;

// --- Metrics ----------------------------------------------------------------

// The Prometheus text format: Map name -> [{labels, value}].
function parseMetrics(text) {
  const out = new Map();
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) continue; // comments, blank lines
    const labels = {};
    for (const l of (m[2] || '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g))
      labels[l[1]] = l[2].replace(/\\(.)/g, (_, c) => (c === 'n' ? '\n' : c));
    const value = /^[+]?Inf$/.test(m[3]) ? Infinity : Number(m[3]);
    if (!out.has(m[1])) out.set(m[1], []);
    out.get(m[1]).push({labels, value});
  }
  return out;
}

// The sum of name's samples whose labels include want; null if it has none.
function sum(m, name, want = {}) {
  let total = null;
  for (const s of m.get(name) || [])
    if (Object.entries(want).every(([k, v]) => s.labels[k] === v)) total = (total || 0) + s.value;
  return total;
}

// Per second since the previous scrape; null on the first.
function rate(m, now, name, want) {
  if (!prev) return null;
  const a = sum(m, name, want), b = sum(prev.m, name, want);
  if (a == null) return null;
  return Math.max(0, (a - (b || 0)) / ((now - prev.t) / 1000));
}

// --- Charts -----------------------------------------------------------------

function niceCeil(v) {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  return [1, 2, 5, 10].map((k) => k * p).find((c) => c >= v);
}

// A line chart of series [{label, cls, key}] over samples [{t, ...}].
function drawChart(el, legend, samples, series) {
  const W = 600, H = 170, L = 44, R = 10, T = 10, B = 20;
  // The window: the samples kept (at least 20 s), up to three minutes.
  const now = performance.now();
  const span = Math.min(HISTORY * POLL_MS, Math.max(20000, samples.length ? now - samples[0].t : 0));
  let max = 0;
  for (const s of samples) for (const {key} of series) max = Math.max(max, s[key] || 0);
  max = niceCeil(max);
  const x = (t) => L + (W - L - R) * (1 - (now - t) / span);
  const y = (v) => T + (H - T - B) * (1 - v / max);
  el.setAttribute('viewBox', `0 0 ${W} ${H}`);
  el.replaceChildren();
  for (const f of [0, 0.5, 1]) {
    el.append(svg('line', {class: 'grid', x1: L, x2: W - R, y1: y(max * f), y2: y(max * f)}));
    const label = svg('text', {class: 'axis', x: L - 6, y: y(max * f) + 4, 'text-anchor': 'end'});
    label.textContent = num(max * f);
    el.append(label);
  }
  const ago = span >= 90000 ? `−${Math.round(span / 60000)} min` : `−${Math.round(span / 1000)} s`;
  for (const [t, text, anchor] of [[now - span, ago, 'start'], [now, 'now', 'end']]) {
    const label = svg('text', {class: 'axis', x: x(t), y: H - 4, 'text-anchor': anchor});
    label.textContent = text;
    el.append(label);
  }
  for (const {cls, key} of series) {
    const pts = samples.filter((s) => s[key] != null && now - s.t <= span)
      .map((s) => `${x(s.t).toFixed(1)},${y(s[key]).toFixed(1)}`);
    if (pts.length) el.append(svg('polyline', {class: 'line ' + cls, points: pts.join(' ')}));
  }
  if (!legend.children.length)
    for (const {label, cls} of series) legend.append(h('li', {class: cls}, label));
}

// The total depth over the samples kept, spread over the whole width.
function sparkline(el, samples) {
  const max = niceCeil(Math.max(0, ...samples.map((s) => s.depth)));
  const pts = samples.map((s, i) =>
    `${(100 * i / Math.max(1, samples.length - 1)).toFixed(1)},${(22 - 20 * s.depth / max).toFixed(1)}`);
  el.replaceChildren(svg('polyline', {class: 'line depth', points: pts.join(' ')}));
}

function record(list, sample) {
  list.push(sample);
  if (list.length > HISTORY) list.splice(0, list.length - HISTORY);
}

// --- Polling ----------------------------------------------------------------

// One poll, then the next in POLL_MS. Called early (after an action, a
// click) it polls now, or right after the poll under way.
async function tick() {
  clearTimeout(timer);
  if (busy) {
    again = true;
    return;
  }
  busy = true;
  const gen = generation;
  try {
    await refresh();
    setText('#poll-status', 'Updated ' + new Date().toLocaleTimeString());
    $('#poll-status').classList.remove('bad');
  } catch (e) {
    if (!(e instanceof Dropped)) {
      setText('#poll-status', 'Update failed: ' + e.message);
      $('#poll-status').classList.add('bad');
    }
  }
  busy = false;
  if (gen === generation) timer = setTimeout(tick, again ? 0 : POLL_MS);
  again = false;
}

async function refresh() {
  const [text, accounts] = await Promise.all([api('GET', ROOT + 'metrics'), api('GET', API + '/accounts')]);
  const now = performance.now(), m = parseMetrics(text);
  // Rates over at least a second, also when an action polls early.
  prev = [...scrapes].reverse().find((s) => now - s.t >= 1000) || scrapes[0] || null;
  scrapes = [...scrapes.slice(-4), {t: now, m}];
  renderAccounts(accounts);
  const acct = account;
  if (acct) {
    const [queues, subs] = await Promise.all([api('GET', acctPath() + '/queues'),
      api('GET', acctPath() + '/subscriptions')]);
    // The depth comes from the metrics; a queue they do not cover yet (and
    // the one shown in detail, for its exact figures) from its statistics.
    const need = queues.filter((q) => q.queueName === selected ||
      sum(m, 'sluice_queue_messages', {account, queue: q.queueName}) == null);
    const stats = await Promise.all(need.map((q) => api('GET', queuePath(q.queueName) + '/statistics')
      .catch((e) => (e instanceof Dropped ? Promise.reject(e) : null))));
    if (account !== acct) return; // another was chosen meanwhile: the next tick shows it
    lastStats = new Map(need.map((q, i) => [q.queueName, stats[i]]));
    renderQueues(queues, m, now);
    renderSubscriptions(subs.subscriptions || [], m);
  }
  renderStore(m, now);
}

// --- Accounts and queues ----------------------------------------------------

function renderAccounts(accounts) {
  const names = accounts.map((a) => a.accountName);
  if (!names.includes(account)) selectAccount(names.includes('dev') ? 'dev' : names[0] || null);
  syncRows($('#accounts'), 'data-account', accounts, (a) => a.accountName,
    (a) => h('li', {'data-account': a.accountName},
      h('button', {type: 'button', class: 'link', title: 'created ' + a.createdAt}, a.accountName)),
    (li, a) => li.firstChild.setAttribute('aria-current', a.accountName === account ? 'true' : 'false'));
}

function selectAccount(name) {
  if (name === account && name != null) return;
  account = name;
  if (name) sessionStorage.setItem(ACCOUNT_KEY, name);
  selectQueue(null);
  history.clear();
  $('#queues tbody').replaceChildren();
  $('#subscriptions tbody').replaceChildren();
  $('#events tbody').replaceChildren();
  evQuery = null;
  $('#ev-next').disabled = true;
  setText('#ev-info', '');
  setText('#account-name', name || '–');
}

// The figures of queue q: the metrics' gauges when they have them, else
// its statistics; rates from the counters.
function queueFigures(q, m, now) {
  const want = {account, queue: q};
  const st = lastStats.get(q);
  const gauge = (state, field) => {
    const v = sum(m, 'sluice_queue_messages', {...want, state});
    return v != null ? v : st ? st[field] : null;
  };
  const oldest = sum(m, 'sluice_queue_oldest_message_age_seconds', want);
  const f = {
    t: now, visible: gauge('visible', 'visible'), inFlight: gauge('in_flight', 'inFlight'),
    delayed: gauge('delayed', 'delayed'), oldest: oldest != null ? oldest : st ? st.oldestMessageAgeSeconds : null,
    puts: rate(m, now, 'sluice_queue_puts_total', want),
    deliveries: rate(m, now, 'sluice_queue_deliveries_total', want),
    acks: rate(m, now, 'sluice_queue_acks_total', want),
    deadLetters: rate(m, now, 'sluice_queue_dead_letters_total', want),
  };
  f.depth = (f.visible || 0) + (f.inFlight || 0) + (f.delayed || 0);
  if (!f.depth) f.oldest = null; // no message, no age
  return f;
}

function queueRow(q) {
  const name = q.queueName;
  const cells = ['visible', 'in-flight', 'delayed', 'oldest', 'puts', 'deliveries', 'acks']
    .map((c) => h('td', {class: 'num ' + c}, '–'));
  const spark = svg('svg', {class: 'spark', viewBox: '0 0 100 24', 'aria-hidden': 'true'});
  const btn = (cls, label, aria) => h('button', {type: 'button', class: cls, 'aria-label': `${aria} ${name}`}, label);
  return h('tr', {'data-queue': name},
    h('th', {scope: 'row', class: 'name'}, btn('link select', name, 'Show queue'), h('span', {class: 'rel'})),
    ...cells, h('td', {class: 'spark-cell'}, spark),
    h('td', {class: 'actions'}, btn('peek', 'Peek', 'Peek at'), h('span', {class: 'redrives'}),
      btn('purge warn', 'Purge', 'Purge'), btn('delete danger', 'Delete', 'Delete')));
}

function renderQueues(queues, m, now) {
  const sources = new Map(); // DLQ name -> the queues that dead-letter into it
  for (const q of queues) if (q.dlqName) sources.set(q.dlqName, [...(sources.get(q.dlqName) || []), q.queueName]);
  const seen = new Set();
  syncRows($('#queues tbody'), 'data-queue', queues, (q) => q.queueName, queueRow, (tr, q) => {
    const name = q.queueName, f = queueFigures(name, m, now);
    seen.add(name);
    if (!history.has(name)) history.set(name, []);
    const hist = history.get(name);
    record(hist, f);
    const set = (cls, v) => (tr.querySelector('.' + cls).textContent = v);
    set('visible', num(f.visible));
    set('in-flight', num(f.inFlight));
    set('delayed', num(f.delayed));
    set('oldest', age(f.oldest));
    set('puts', num(f.puts));
    set('deliveries', num(f.deliveries));
    set('acks', num(f.acks));
    sparkline(tr.querySelector('.spark'), hist);
    const from = sources.get(name) || [];
    set('rel', from.length ? `DLQ of ${from.join(', ')}` : q.dlqName ? `dead letters → ${q.dlqName}` : '');
    tr.classList.toggle('dlq', from.length > 0);
    tr.classList.toggle('selected', name === selected);
    const box = tr.querySelector('.redrives');
    if (box.dataset.to !== from.join(',')) {
      box.dataset.to = from.join(',');
      box.replaceChildren(...from.map((to) => h('button', {type: 'button', class: 'redrive', 'data-to': to,
        'aria-label': `Redrive ${name} to ${to}`}, from.length > 1 ? `Redrive → ${to}` : 'Redrive')));
    }
    if (name === selected) renderDetail(q, f, hist);
  });
  for (const name of history.keys()) if (!seen.has(name)) history.delete(name);
  $('#no-queues').hidden = queues.length > 0;
  if (selected && !seen.has(selected)) selectQueue(null);
}

function selectQueue(name) {
  selected = name;
  $('#queue-detail').hidden = !name;
  $('#peek-results').replaceChildren();
  for (const tr of $('#queues tbody').children) tr.classList.toggle('selected', tr.dataset.queue === name);
  if (!name) return;
  setText('#detail-name', name);
  setText('#detail-config', '');
  $('#detail-stats').replaceChildren();
  for (const c of ['#chart-depth', '#chart-rates']) $(c).replaceChildren();
  tick();
}

function figures(dl, pairs) {
  dl.replaceChildren(...pairs.map(([k, v, id]) => h('div', null, h('dt', null, k), h('dd', {id}, v))));
}

function renderDetail(q, f, hist) {
  const st = lastStats.get(q.queueName) || {};
  setText('#detail-config', `max deliveries ${q.maxDeliveryCount}` +
    (q.dlqName ? `, dead letters to ${q.dlqName}` : ', no dead-letter queue') +
    `, visibility ${q.visibilityTimeoutSeconds} s, retention ${age(q.retentionSeconds)}` +
    (q.strictFifo ? ', strict FIFO' : '') + `, created ${q.createdAt}`);
  figures($('#detail-stats'), [['Visible', num(f.visible), 'd-visible'], ['In flight', num(f.inFlight), 'd-in-flight'],
    ['Delayed', num(f.delayed), 'd-delayed'], ['Not yet acked', num(st.size), 'd-size'],
    ['Dead-lettered', num(st.deadLettered), 'd-dead-lettered'], ['Oldest', age(f.oldest), 'd-oldest']]);
  drawChart($('#chart-depth'), $('#legend-depth'), hist, [{label: 'visible', cls: 's1', key: 'visible'},
    {label: 'in flight', cls: 's2', key: 'inFlight'}, {label: 'delayed', cls: 's3', key: 'delayed'}]);
  drawChart($('#chart-rates'), $('#legend-rates'), hist, [{label: 'puts', cls: 's1', key: 'puts'},
    {label: 'deliveries', cls: 's2', key: 'deliveries'}, {label: 'acks', cls: 's3', key: 'acks'},
    {label: 'dead letters', cls: 's4', key: 'deadLetters'}]);
}

async function peek() {
  const count = Math.min(32, Math.max(1, parseInt($('#peek-count').value, 10) || 10));
  const page = await api('GET', `${queuePath(selected)}/messages/peek?count=${count}`);
  const list = $('#peek-results');
  list.replaceChildren(...page.messages.map((msg) => h('li', {class: 'message', 'data-message-id': msg.messageId},
    h('div', {class: 'meta'}, h('code', {class: 'msg-id'}, msg.messageId),
      ` · delivered ${msg.deliveryCount}× · enqueued ${msg.enqueuedAt}`,
      Object.keys(msg.attributes || {}).length ? ' · attributes ' + JSON.stringify(msg.attributes) : ''),
    h('pre', {class: 'body'}, msg.message))));
  if (!page.messages.length) list.append(h('li', {class: 'muted empty'}, 'No visible message.'));
}

// --- Confirmation and actions -----------------------------------------------

function confirmAction(title, text, ok) {
  const dlg = $('#confirm');
  setText('#confirm-title', title);
  setText('#confirm-text', text);
  setText('#confirm-ok', ok);
  dlg.returnValue = '';
  dlg.showModal();
  $('#confirm-cancel').focus();
  return new Promise((resolve) => dlg.addEventListener('close', () => resolve(dlg.returnValue === 'ok'), {once: true}));
}

// Runs an action of the user's: its outcome goes to #notice, its failure to #error.
async function act(fn) {
  setText('#error', '');
  try {
    const msg = await fn();
    if (msg) setText('#notice', msg);
  } catch (e) {
    if (!(e instanceof Dropped)) setText('#error', e.message);
  }
}

async function onQueueClick(e) {
  const btn = e.target.closest('button'), tr = e.target.closest('tr[data-queue]');
  if (!btn || !tr) return;
  const q = tr.dataset.queue;
  if (btn.classList.contains('select')) selectQueue(q);
  else if (btn.classList.contains('peek')) {
    selectQueue(q);
    act(peek);
  } else if (btn.classList.contains('redrive')) {
    const to = btn.dataset.to;
    if (!(await confirmAction(`Redrive ${q}?`, `Every message in ${q} moves back to ${to}, delivery count 0.`,
      'Redrive'))) return;
    act(async () => {
      const r = await api('POST', queuePath(q) + '/redrive', {to});
      tick();
      return `Moved ${r.moved} message${r.moved === 1 ? '' : 's'} from ${q} to ${to}.`;
    });
  } else if (btn.classList.contains('purge')) {
    if (!(await confirmAction(`Purge ${q}?`, `Every message in ${q} is deleted. This cannot be undone.`,
      'Purge'))) return;
    act(async () => {
      await api('POST', queuePath(q) + '/purge');
      tick();
      return `Purged ${q}.`;
    });
  } else if (btn.classList.contains('delete')) {
    if (!(await confirmAction(`Delete ${q}?`, `The queue ${q} and all its messages are deleted. This cannot be undone.`,
      'Delete'))) return;
    act(async () => {
      await api('DELETE', queuePath(q));
      if (selected === q) selectQueue(null);
      tick();
      return `Deleted ${q}.`;
    });
  }
}

// --- The event log ----------------------------------------------------------

const words = (s) => s.split(/[\s,]+/).filter(Boolean);

async function queryEvents(first) {
  if (first) {
    const p = new URLSearchParams();
    for (const [id, name] of [['#ev-start', 'start'], ['#ev-end', 'end']])
      if ($(id).value.trim()) p.set(name, $(id).value.trim());
    for (const t of words($('#ev-type').value)) p.append('type', t);
    for (const t of words($('#ev-tag').value)) p.append('tag', t);
    p.set('order', $('#ev-order').value);
    evQuery = {params: p, continuation: null, page: 0};
  }
  const p = new URLSearchParams(evQuery.params);
  p.set('limit', $('#ev-limit').value || '50');
  if (!first) p.set('continuation', evQuery.continuation);
  const page = await api('GET', `${acctPath()}/events?${p}`);
  evQuery.continuation = page.continuation;
  evQuery.page++;
  $('#events tbody').replaceChildren(...page.events.map((ev) => {
    const data = ev.data === null ? '' : JSON.stringify(ev.data);
    return h('tr', {'data-event-id': ev.id}, h('td', null, ev.recordedAt), h('td', {class: 'type'}, ev.type),
      h('td', {class: 'id'}, ev.id), h('td', null, ev.source || ''), h('td', null, ev.subject || ''),
      h('td', {class: 'tags'}, (ev.tags || []).join(', ')),
      h('td', {class: 'data', title: data.slice(0, 2000)}, data.length > 200 ? data.slice(0, 200) + '…' : data));
  }));
  $('#ev-next').disabled = !page.continuation;
  setText('#ev-info', `Page ${evQuery.page}: ${page.events.length} event${page.events.length === 1 ? '' : 's'}` +
    ` up to ${page.end}; ` + (page.continuation ? 'more on the next page.' : 'the end of the query.'));
}

// --- Subscriptions, the store -----------------------------------------------

function renderSubscriptions(subs, m) {
  syncRows($('#subscriptions tbody'), 'data-subscription', subs, (s) => s.subscriptionName,
    (s) => h('tr', {'data-subscription': s.subscriptionName}, ...Array.from({length: 8}, () => h('td'))),
    (tr, s) => {
      const lag = sum(m, 'sluice_subscription_lag_seconds', {account, subscription: s.subscriptionName});
      const f = s.filter || {};
      [s.subscriptionName, s.queueName, (f.types || []).join(', ') || 'any', (f.tags || []).join(', ') || 'any',
        s.state, s.position, num(s.delivered), age(lag)].forEach((v, i) => (tr.children[i].textContent = v));
      tr.children[4].className = s.state === 'active' ? 'ok' : 'bad';
      tr.children[6].className = tr.children[7].className = 'num';
    });
  $('#no-subscriptions').hidden = subs.length > 0;
}

function renderStore(m, now) {
  const d = (name) => (prev ? (sum(m, name) || 0) - (sum(prev.m, name) || 0) : null);
  const nodes = [...new Set((m.get('sluice_cql_node_up') || []).map((s) => s.labels.node))];
  const commits = d('sluice_store_commits_total'), dur = d('sluice_store_commit_duration_seconds_sum');
  const cassandra = nodes.length > 0;
  const start = sum(m, 'process_start_time_seconds'), cpu = rate(m, now, 'process_cpu_seconds_total');
  const pairs = [['Store', cassandra ? `Apache Cassandra, ${nodes.length} node${nodes.length > 1 ? 's' : ''}`
    : m.has('sluice_store_commits_total') ? 'embedded SQLite' : '–', 'store-kind']];
  if (!cassandra) {
    pairs.push(['Commits/s', num(rate(m, now, 'sluice_store_commits_total')), 'store-commits'],
      ['Requests per commit', commits ? num(d('sluice_store_committed_requests_total') / commits) : '–'],
      ['Commit time (mean)', commits ? (1000 * dur / commits).toFixed(2) + ' ms' : '–'],
      ['Pending writes', num(sum(m, 'sluice_store_pending_writes'))]);
  }
  pairs.push(['HTTP requests/s', num(rate(m, now, 'sluice_http_requests_total')), 'http-rate'],
    ['Open connections', num(sum(m, 'sluice_http_connections'))],
    ['Events ingested/s', num(rate(m, now, 'sluice_events_ingested_total'))],
    ['Memory', bytes(sum(m, 'process_resident_memory_bytes'))],
    ['CPU', cpu == null ? '–' : (100 * cpu).toFixed(0) + ' %'], ['Open files', num(sum(m, 'process_open_fds'))],
    ['Up for', start ? age(Date.now() / 1000 - start) : '–']);
  figures($('#store-figures'), pairs);
  record(storeHistory, {t: now, http: rate(m, now, 'sluice_http_requests_total'),
    store: rate(m, now, cassandra ? 'sluice_cql_requests_total' : 'sluice_store_commits_total')});
  drawChart($('#chart-store'), $('#legend-store'), storeHistory, [{label: 'HTTP requests', cls: 's1', key: 'http'},
    {label: 'store commits or CQL requests', cls: 's2', key: 'store'}]);
  $('#nodes').hidden = !cassandra;
  syncRows($('#nodes tbody'), 'data-node', nodes, (n) => n,
    (n) => h('tr', {'data-node': n}, ...Array.from({length: 8}, (_, i) => h('td', {class: i > 2 ? 'num' : null}))),
    (tr, n) => {
      const want = {node: n}, up = sum(m, 'sluice_cql_node_up', want);
      const dc = m.get('sluice_cql_node_up').find((s) => s.labels.node === n).labels.dc;
      const rates = ['requests', 'errors', 'timeouts', 'retries']
        .map((c) => rate(m, now, `sluice_cql_${c}_total`, want));
      [n, dc || '–', up ? 'up' : 'down', sum(m, 'sluice_cql_connections', want), ...rates]
        .forEach((v, i) => (tr.children[i].textContent = i < 3 ? v : num(v)));
      tr.children[2].className = up ? 'ok' : 'bad';
    });
}

// --- Login and start --------------------------------------------------------

function showLogin(message) {
  $('#login-view').hidden = false;
  $('#app').hidden = true;
  $('#logout').hidden = true;
  setText('#login-error', message || '');
  setText('#poll-status', '');
  $('#token').focus();
}

// Forgets the token and every figure the page holds; message says why.
function logout(message) {
  generation++;
  clearTimeout(timer);
  busy = again = false;
  token = null;
  sessionStorage.removeItem(TOKEN_KEY);
  prev = null;
  scrapes = [];
  storeHistory.length = 0;
  account = null;
  selectAccount(null);
  $('#accounts').replaceChildren();
  for (const id of ['#store-figures', '#nodes tbody', '#notice', '#error']) $(id).replaceChildren();
  if ($('#confirm').open) $('#confirm').close();
  showLogin(message);
}

function start() {
  $('#login-view').hidden = true;
  $('#app').hidden = false;
  $('#logout').hidden = false;
  account = sessionStorage.getItem(ACCOUNT_KEY);
  setText('#account-name', account || '–');
  tick();
}

document.addEventListener('DOMContentLoaded', () => {
  $('#login-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const t = $('#token').value.trim();
    if (!t) return showLogin('Enter the admin token.');
    token = t;
    sessionStorage.setItem(TOKEN_KEY, t);
    $('#token').value = '';
    start();
  });
  $('#logout').addEventListener('click', () => logout(''));
  $('#accounts').addEventListener('click', (e) => {
    const li = e.target.closest('li[data-account]');
    if (li) {
      selectAccount(li.dataset.account);
      tick();
    }
  });
  $('#queues tbody').addEventListener('click', onQueueClick);
  $('#peek-form').addEventListener('submit', (e) => {
    e.preventDefault();
    act(peek);
  });
  $('#events-form').addEventListener('submit', (e) => {
    e.preventDefault();
    act(() => queryEvents(true));
  });
  $('#ev-next').addEventListener('click', () => act(() => queryEvents(false)));
  if (token) start();
  else showLogin('');
});
