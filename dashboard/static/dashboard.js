// nanogate dashboard. Reads the admin JSON APIs, and changes keys and teams through them, with the admin key as
// a bearer token; the key lives in sessionStorage (this tab only) and never goes into a URL or a cookie. Every
// piece of data is put in the page with textContent or SVG attributes, never parsed as HTML: team and key names
// come from the config or the API. The page's Content-Security-Policy enforces it (Trusted Types with no policy:
// assigning markup as a string throws). A key's secret, shown once after it is made or rotated, lives in one
// text node until its box is closed, and is never stored.
'use strict';

(() => {
  const STORAGE_KEY = 'nanogate.adminKey';
  const REFRESH_MS = 3000;
  const BUDGET_NEAR = 0.8; // red from here
  const BUDGET_WARN = 0.6; // amber from here

  const $ = (id) => document.getElementById(id);
  let timer = 0;
  let inFlight = false;
  let lastOK = null;
  // session counts sign-ins and sign-outs: an answer that arrives after the key changed is dropped.
  let session = 0;

  // ---------- DOM helpers (text only) ----------

  function el(tag, className, text) {
    const e = document.createElement(tag);
    if (className) e.className = className;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  function td(text, className) {
    return el('td', className, text);
  }

  const SVG_NS = 'http://www.w3.org/2000/svg';
  function svg(tag, attrs, text) {
    const e = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
    if (text !== undefined) e.textContent = String(text);
    return e;
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }

  // ---------- formats ----------

  const usdFormats = new Map();
  function usd(v) {
    const n = Number(v) || 0;
    const digits = Math.abs(n) >= 1 || n === 0 ? 2 : 4; // fractions of a cent matter at $0.035 an image
    if (!usdFormats.has(digits)) {
      usdFormats.set(digits, new Intl.NumberFormat('en-US', {
        style: 'currency', currency: 'USD', minimumFractionDigits: digits, maximumFractionDigits: digits,
      }));
    }
    return usdFormats.get(digits).format(n);
  }

  const intFormat = new Intl.NumberFormat('en-US');
  function int(v) {
    return intFormat.format(Number(v) || 0);
  }

  function pct(ratio) {
    return (ratio * 100).toFixed(ratio < 0.1 && ratio > 0 ? 1 : 0) + '%';
  }

  function ms(v, seen) {
    if (!seen) return '–';
    if (v >= 1000) return (v / 1000).toFixed(v >= 10000 ? 0 : 1) + ' s';
    return (v < 10 ? v.toFixed(1) : Math.round(v)) + ' ms';
  }

  // Days are UTC, as the gateway's accounting buckets are.
  function utcDay(d) {
    return d.toISOString().slice(0, 10);
  }

  function monthDays(today) {
    const [y, m] = today.split('-').map(Number);
    const last = new Date(Date.UTC(y, m, 0)).getUTCDate();
    const out = [];
    for (let d = 1; d <= last; d++) out.push(today.slice(0, 8) + String(d).padStart(2, '0'));
    return out;
  }

  // ---------- the admin API ----------

  class AuthError extends Error {}

  // APIError is a refusal in OpenAI's envelope: its message is the gateway's own, shown as it is.
  class APIError extends Error {
    constructor(message, status) {
      super(message);
      this.status = status;
    }
  }

  // api calls the admin API. Every call says it comes from the dashboard (x-nanogate-actor), so that the audit
  // trail tells the page's changes from scripts'. body, when given, is sent as JSON.
  async function api(path, method, body) {
    const key = sessionStorage.getItem(STORAGE_KEY);
    if (!key) throw new AuthError('Sign in with the admin key.');
    const headers = { Authorization: 'Bearer ' + key, 'x-nanogate-actor': 'dashboard' };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    let resp;
    try {
      resp = await fetch(path, {
        method: method || 'GET',
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: 'no-store',
        credentials: 'omit',
        redirect: 'error',
      });
    } catch (e) {
      throw new Error('the gateway did not answer (' + e.message + ')');
    }
    if (resp.ok) return resp;
    let message = 'HTTP ' + resp.status;
    try {
      const answer = await resp.json();
      if (answer && answer.error && answer.error.message) message = answer.error.message;
    } catch (_) { /* not JSON */ }
    if (resp.status === 401) throw new AuthError('The admin key was refused (' + message + ')');
    if (resp.status === 404 && /admin/i.test(message)) throw new AuthError(message);
    throw new APIError(message, resp.status);
  }

  function usageQuery(today) {
    return 'from=' + today.slice(0, 8) + '01&to=' + today;
  }

  // ---------- views ----------

  function renderKPIs(usage) {
    $('period').textContent = usage.from && usage.to ? usage.from + ' → ' + usage.to + ' (UTC)' : '';
    $('kpi-cost').textContent = usd(usage.cost_usd);
    $('kpi-list').textContent = usd(usage.list_cost_usd);
    const saved = Number(usage.savings_usd) || 0;
    const share = usage.list_cost_usd > 0 ? ' (' + pct(saved / usage.list_cost_usd) + ')' : '';
    $('kpi-savings').textContent = usd(saved) + share;
    $('kpi-requests').textContent = int(usage.requests);
    $('kpi-images').textContent = int(usage.images);
  }

  // niceStep rounds max/ticks up to 1, 2, 2.5 or 5 times a power of ten.
  function niceStep(max, ticks) {
    const raw = max / ticks;
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * mag >= raw) return m * mag;
    return 10 * mag;
  }

  // axisUSD writes a tick with as few decimals as the step needs ($0.05, $0.075, $1,500).
  function axisUSD(v, step) {
    if (step >= 1) return '$' + int(Math.round(v));
    let d = 2;
    while (d < 6 && Math.abs(Number(step.toFixed(d)) - step) > step * 1e-6) d++;
    return '$' + v.toFixed(d);
  }

  function renderChart(usage, today) {
    const byDay = new Map();
    for (const team of usage.teams || []) {
      for (const d of team.days || []) {
        const cur = byDay.get(d.day) || { cost: 0, list: 0, requests: 0, images: 0 };
        cur.cost += Number(d.cost_usd) || 0;
        cur.list += Number(d.list_cost_usd) || 0;
        cur.requests += Number(d.requests) || 0;
        cur.images += Number(d.images) || 0;
        byDay.set(d.day, cur);
      }
    }
    const days = monthDays(today);
    const W = 1000, H = 260, left = 64, right = 12, top = 12, bottom = 28;
    const plotW = W - left - right, plotH = H - top - bottom;
    let max = 0;
    for (const v of byDay.values()) max = Math.max(max, v.cost, v.list);
    const step = niceStep(max > 0 ? max : 0.04, 4);
    const yMax = step * Math.max(1, Math.ceil(max / step));
    const y = (v) => top + plotH - (v / yMax) * plotH;

    const root = svg('svg', {
      viewBox: '0 0 ' + W + ' ' + H, role: 'img', 'aria-label': 'Cost and list cost per day this month',
      preserveAspectRatio: 'xMidYMid meet',
    });
    for (let v = 0; v <= yMax + step / 2; v += step) {
      root.appendChild(svg('line', { class: 'grid-line', x1: left, x2: W - right, y1: y(v), y2: y(v) }));
      root.appendChild(svg('text', { class: 'axis-label', x: left - 8, y: y(v) + 4, 'text-anchor': 'end' }, axisUSD(v, step)));
    }
    const slot = plotW / days.length;
    days.forEach((day, i) => {
      const x = left + i * slot;
      const v = byDay.get(day) || { cost: 0, list: 0, requests: 0, images: 0 };
      const g = svg('g', { class: 'day', 'data-day': day, 'data-cost': v.cost, 'data-list': v.list });
      if (day > today) g.appendChild(svg('rect', { class: 'future', x: x + 1, y: top, width: slot - 2, height: plotH }));
      if (day === today) g.appendChild(svg('rect', { class: 'today-mark', x: x + 1, y: top, width: slot - 2, height: plotH }));
      const listW = slot * 0.72, costW = slot * 0.44;
      if (v.list > 0) {
        g.appendChild(svg('rect', {
          class: 'bar-list', x: x + (slot - listW) / 2, y: y(v.list), width: listW, height: top + plotH - y(v.list),
        }));
      }
      if (v.cost > 0) {
        g.appendChild(svg('rect', {
          class: 'bar-cost', x: x + (slot - costW) / 2, y: y(v.cost), width: costW, height: top + plotH - y(v.cost),
        }));
      }
      // A transparent cover, so that the whole column shows the tooltip.
      g.appendChild(svg('rect', { x, y: top, width: slot, height: plotH, fill: 'transparent' }));
      g.appendChild(svg('title', {}, day + ': cost ' + usd(v.cost) + ', list cost ' + usd(v.list) + ', saved ' +
        usd(v.list - v.cost) + ' · ' + int(v.requests) + ' requests, ' + int(v.images) + ' images'));
      const n = i + 1;
      if (n === 1 || n % 5 === 0 || n === days.length || day === today) {
        g.appendChild(svg('text', {
          class: 'axis-label', x: x + slot / 2, y: H - 8, 'text-anchor': 'middle',
        }, day === today ? day.slice(5) : String(n)));
      }
      root.appendChild(g);
    });
    const box = $('chart');
    clear(box);
    box.appendChild(root);
  }

  function budgetCell(team) {
    const cell = el('td', 'budget-col');
    if (team.budget_usd === undefined) {
      cell.appendChild(el('span', 'muted', 'no budget'));
      return cell;
    }
    const used = (Number(team.budget_spent_usd) || 0) + (Number(team.reserved_usd) || 0);
    const ratio = team.budget_usd > 0 ? used / team.budget_usd : 1;
    const wrap = el('div', 'budget' + (ratio >= BUDGET_NEAR ? ' near' : ratio >= BUDGET_WARN ? ' warn' : ''));
    wrap.dataset.ratio = ratio.toFixed(4);
    const track = el('div', 'track');
    const fill = el('div', 'fill');
    fill.style.width = Math.min(100, ratio * 100).toFixed(1) + '%'; // CSSOM, allowed by the CSP
    track.appendChild(fill);
    wrap.appendChild(track);
    wrap.appendChild(el('span', 'label', pct(ratio) + ' of ' + usd(team.budget_usd) + ' ' + team.budget_period));
    let title = usd(team.budget_spent_usd) + ' spent';
    if (Number(team.reserved_usd) > 0) title += ' + ' + usd(team.reserved_usd) + ' in flight';
    title += ' in ' + team.budget_current_period + '; ' + usd(team.remaining_usd) + ' left';
    if (team.budget_resets_at) title += '; resets ' + team.budget_resets_at;
    wrap.title = title;
    cell.appendChild(wrap);
    return cell;
  }

  function totalsCells(row, t) {
    row.appendChild(td(int(t.requests), 'num requests'));
    row.appendChild(td(int(t.failed), 'num failed'));
    row.appendChild(td(int(t.images), 'num images'));
    const tokens = td(int((Number(t.prompt_tokens) || 0) + (Number(t.completion_tokens) || 0)), 'num tokens');
    tokens.title = int(t.prompt_tokens) + ' prompt + ' + int(t.completion_tokens) + ' completion (' +
      int(t.image_tokens) + ' for images)';
    row.appendChild(tokens);
    row.appendChild(td(usd(t.cost_usd), 'num cost'));
    row.appendChild(td(usd(t.savings_usd), 'num saved'));
  }

  function renderTeams(usage) {
    const body = $('teams').tBodies[0];
    clear(body);
    const teams = usage.teams || [];
    if (teams.length === 0) {
      const row = el('tr', 'empty');
      const c = td('No teams configured and no usage yet.');
      c.colSpan = 8;
      row.appendChild(c);
      body.appendChild(row);
    }
    for (const team of teams) {
      const row = el('tr', 'team');
      row.dataset.team = team.name;
      row.appendChild(td(team.name, 'name'));
      row.appendChild(budgetCell(team));
      totalsCells(row, team);
      body.appendChild(row);
      for (const key of team.keys || []) {
        const kr = el('tr', 'key');
        kr.dataset.team = team.name;
        kr.dataset.key = key.name;
        kr.appendChild(td(key.name, 'name'));
        kr.appendChild(td('', 'budget-col'));
        totalsCells(kr, key);
        body.appendChild(kr);
      }
    }
  }

  function renderSizes(usage) {
    const body = $('sizes').tBodies[0];
    clear(body);
    for (const s of usage.sizes || []) {
      const row = el('tr', 'size');
      row.dataset.model = s.model;
      row.dataset.size = s.size;
      row.appendChild(td(s.model, 'name'));
      row.appendChild(td(s.size, 'size'));
      totalsCells(row, s);
      body.appendChild(row);
    }
  }

  function renderProviders(data) {
    const body = $('providers').tBodies[0];
    clear(body);
    for (const p of data.providers || []) {
      const row = el('tr', 'provider');
      row.dataset.provider = p.name;
      row.dataset.state = p.state;
      row.appendChild(td(p.name, 'name'));
      row.appendChild(td(p.kind, 'kind'));
      const state = el('td', 'state-cell');
      state.appendChild(el('span', 'state ' + (['healthy', 'open', 'half_open'].includes(p.state) ? p.state : ''), p.state));
      if (p.state === 'open' && p.trial_in_seconds > 0) {
        state.appendChild(el('span', 'muted', ' trial in ' + Math.ceil(p.trial_in_seconds) + ' s'));
      }
      if (p.benched_for_seconds > 0) {
        state.appendChild(el('span', 'muted', ' benched ' + Math.ceil(p.benched_for_seconds) + ' s (429)'));
      }
      row.appendChild(state);
      row.appendChild(td(usd(p.price_per_image_usd), 'num price'));
      row.appendChild(td(int(p.requests), 'num requests'));
      row.appendChild(td(int(p.failures), 'num failures'));
      const rate = p.requests > 0 ? p.failures / p.requests : 0;
      row.appendChild(td(p.requests > 0 ? pct(rate) : '–', 'num failure-rate' + (rate >= 0.1 ? ' rate-bad' : '')));
      row.appendChild(td(ms(p.p50_ms, p.requests > 0), 'num p50'));
      row.appendChild(td(ms(p.p99_ms, p.requests > 0), 'num p99'));
      const err = td(p.last_error || '', 'error-text');
      if (p.last_error) err.title = p.last_error + (p.last_error_at ? ' (' + p.last_error_at + ')' : '');
      row.appendChild(err);
      body.appendChild(row);
    }
  }

  function renderBatches(data) {
    const body = $('batches').tBodies[0];
    clear(body);
    const rows = data.batches || [];
    $('batches-summary').textContent = rows.length === 0 ? 'no batches yet' :
      int(data.queued_lines || 0) + ' lines queued';
    for (const b of rows) {
      const row = el('tr', 'batch');
      row.dataset.batch = b.id;
      row.dataset.status = b.status;
      row.appendChild(td(b.id, 'name'));
      row.appendChild(td((b.team || '–') + ' / ' + b.key, 'owner'));
      row.appendChild(td(b.endpoint, 'kind'));
      row.appendChild(td(b.status, 'state-cell'));
      const cell = el('td');
      const done = (b.completed || 0) + (b.failed || 0);
      const share = b.total > 0 ? done / b.total : 0;
      const prog = el('div', 'budget' + (b.failed > 0 ? ' warn' : ''));
      const track = el('div', 'track');
      const fill = el('div', 'fill');
      fill.style.width = Math.min(100, Math.round(share * 100)) + '%';
      track.appendChild(fill);
      prog.appendChild(track);
      prog.appendChild(el('span', 'label', int(done) + ' of ' + int(b.total)));
      cell.appendChild(prog);
      row.appendChild(cell);
      row.appendChild(td(int(b.completed), 'num completed'));
      row.appendChild(td(int(b.failed), 'num failed'));
      row.appendChild(td(int(b.left), 'num left'));
      row.appendChild(td((b.lines_per_second || 0).toFixed(1), 'num rate'));
      body.appendChild(row);
    }
  }

  // ---------- keys and teams (the admin API of /admin/keys and /admin/teams) ----------

  // UTC, to the minute: what the API stores, whatever the viewer's zone.
  function when(iso) {
    if (!iso) return '–';
    const d = new Date(iso);
    return isNaN(d) ? String(iso) : d.toISOString().slice(0, 16).replace('T', ' ') + ' UTC';
  }

  function limits(x) {
    const parts = [];
    if (x.rpm > 0) parts.push(int(x.rpm) + ' rpm');
    if (x.tpm > 0) parts.push(int(x.tpm) + ' tpm');
    return parts.length ? parts.join(' · ') : 'no limit';
  }

  function budgetText(b) {
    return b ? usd(b.usd) + ' ' + (b.period || 'monthly') : '–';
  }

  function showError(id, message) {
    const e = $(id);
    e.textContent = message || '';
    e.hidden = !message;
  }

  // The secret on display: held here and in one text node until the box closes, then dropped from both.
  let secret = null;

  function showSecret(what, name, value) {
    secret = value;
    $('secret-what').textContent = what;
    $('secret-name').textContent = name;
    $('secret-value').textContent = value;
    $('secret-copied').textContent = '';
    $('secret-panel').hidden = false;
    $('secret-copy').focus();
  }

  function dismissSecret() {
    secret = null;
    clear($('secret-value'));
    $('secret-name').textContent = '';
    $('secret-copied').textContent = '';
    $('secret-panel').hidden = true;
    const sel = window.getSelection();
    if (sel) sel.removeAllRanges();
  }

  async function copySecret() {
    if (!secret) return;
    try {
      await navigator.clipboard.writeText(secret);
      $('secret-copied').textContent = 'Copied to the clipboard.';
    } catch (_) {
      // No clipboard permission (a plain-HTTP page away from localhost, a locked-down browser): select it.
      const range = document.createRange();
      range.selectNodeContents($('secret-value'));
      const sel = window.getSelection();
      sel.removeAllRanges();
      sel.addRange(range);
      $('secret-copied').textContent = 'Selected: press Ctrl+C (⌘C on a Mac) to copy it.';
    }
  }

  let teamsJSON = '';
  let keysJSON = '';
  // changes counts the page's own changes: a refresh that began before one would show the lists as they were.
  let changes = 0;
  let teamsByName = new Map();

  function actionButton(label, className, onClick) {
    const b = el('button', className, label);
    b.type = 'button';
    b.addEventListener('click', onClick);
    return b;
  }

  function readOnlyCell(text) {
    const c = el('td', 'actions');
    c.appendChild(el('span', 'muted', text));
    return c;
  }

  function renderKeyList(list) {
    const json = JSON.stringify(list.data || []);
    if (json === keysJSON) return; // unchanged: keep the rows (and a button about to be clicked)
    keysJSON = json;
    const body = $('key-list').tBodies[0];
    clear(body);
    const now = Date.now();
    for (const k of list.data || []) {
      const expired = k.expires_at && new Date(k.expires_at).getTime() <= now;
      const state = k.revoked_at ? 'revoked' : expired ? 'expired' : 'active';
      const row = el('tr', 'api-key ' + state);
      row.dataset.keyId = k.id;
      row.dataset.name = k.name;
      row.dataset.source = k.source;
      row.appendChild(td(k.name, 'name'));
      row.appendChild(td(k.team || '–', 'team'));
      row.appendChild(td(k.prefix ? k.prefix + '…' : '–', 'prefix'));
      row.appendChild(td(limits(k), 'limits'));
      row.appendChild(td(budgetText(k.budget), 'budget-cap'));
      row.appendChild(td(when(k.expires_at), 'expires'));
      row.appendChild(td(when(k.last_used_at), 'last-used'));
      row.appendChild(td(k.source, 'source'));
      const status = el('td', 'status');
      status.appendChild(el('span', 'state ' + state, state));
      if (k.revoked_at) status.appendChild(el('span', 'muted', ' ' + when(k.revoked_at)));
      if (k.previous_key_valid_until) {
        status.appendChild(el('span', 'muted', ' · old secret until ' + when(k.previous_key_valid_until)));
      }
      row.appendChild(status);
      if (k.source === 'config') {
        row.appendChild(readOnlyCell('read-only'));
      } else if (k.revoked_at) {
        row.appendChild(td('', 'actions'));
      } else {
        const c = el('td', 'actions');
        c.appendChild(actionButton('Rotate', 'rotate', () => rotateKey(k)));
        c.appendChild(actionButton('Revoke', 'revoke danger', () => revokeKey(k)));
        row.appendChild(c);
      }
      body.appendChild(row);
    }
  }

  function renderTeamList(list) {
    const teams = list.data || [];
    teamsByName = new Map(teams.map((t) => [t.name, t]));
    const json = JSON.stringify(teams);
    if (json === teamsJSON) return;
    teamsJSON = json;
    const body = $('team-list').tBodies[0];
    clear(body);
    for (const t of teams) {
      const row = el('tr', 'api-team');
      row.dataset.teamName = t.name;
      row.dataset.source = t.source;
      row.appendChild(td(t.name, 'name'));
      row.appendChild(td(t.rpm > 0 ? int(t.rpm) : '–', 'num rpm'));
      row.appendChild(td(t.tpm > 0 ? int(t.tpm) : '–', 'num tpm'));
      row.appendChild(td(budgetText(t.budget), 'budget-cap'));
      row.appendChild(td(t.models && t.models.length ? t.models.join(', ') : 'every model', 'models'));
      const alerts = t.budget ? (t.alert_thresholds && t.alert_thresholds.length ? t.alert_thresholds : [50, 80, 100]) : [];
      row.appendChild(td(alerts.length ? alerts.map((p) => p + '%').join(', ') : '–', 'alerts'));
      row.appendChild(td(t.source, 'source'));
      if (t.source === 'config') {
        row.appendChild(readOnlyCell('read-only'));
      } else {
        const c = el('td', 'actions');
        c.appendChild(actionButton('Edit', 'edit', () => editTeam(t.name)));
        row.appendChild(c);
      }
      body.appendChild(row);
    }
    // The key form's team choice follows the list, keeping what was chosen.
    const select = $('key-team');
    const chosen = select.value;
    clear(select);
    for (const t of teams) {
      const o = el('option', '', t.name);
      o.value = t.name;
      select.appendChild(o);
    }
    if (teamsByName.has(chosen)) select.value = chosen;
  }

  function clearAdminLists() {
    teamsJSON = '';
    keysJSON = '';
    teamsByName = new Map();
    clear($('key-list').tBodies[0]);
    clear($('team-list').tBodies[0]);
    clear($('key-team'));
    $('team-edit').hidden = true;
    showError('keys-error', '');
    showError('teams-error', '');
    dismissSecret();
  }

  async function reloadAdminLists() {
    const [k, t] = await Promise.all([
      api('/admin/keys').then((r) => r.json()),
      api('/admin/teams').then((r) => r.json()),
    ]);
    renderKeyList(k);
    renderTeamList(t);
  }

  // change runs one admin call from the page: its refusal goes in the section's error line; a refused admin
  // key signs out.
  async function change(errorId, fn) {
    changes++;
    showError(errorId, '');
    try {
      await fn();
    } catch (e) {
      if (e instanceof AuthError) {
        signOut(e.message);
        return false;
      }
      showError(errorId, e.message);
      return false;
    }
    changes++;
    try {
      await reloadAdminLists();
    } catch (_) { /* the next refresh says what is wrong */ }
    return true;
  }

  // numberField reads a number field: '' is absent; what is not a number goes as typed, for the API to refuse
  // with its own message.
  function numberField(id) {
    const v = $(id).value.trim();
    if (v === '') return undefined;
    const n = Number(v);
    return Number.isFinite(n) ? n : v;
  }

  function createKey(ev) {
    ev.preventDefault();
    const body = { name: $('key-name').value.trim(), team: $('key-team').value };
    for (const [field, id] of [['rpm', 'key-rpm'], ['tpm', 'key-tpm']]) {
      const n = numberField(id);
      if (n !== undefined) body[field] = n;
    }
    const usd = numberField('key-budget');
    if (usd !== undefined) body.budget = { usd, period: $('key-period').value };
    const expires = $('key-expires').value;
    if (expires) {
      const d = new Date(expires); // the viewer's local time
      body.expires_at = isNaN(d) ? expires : d.toISOString();
    }
    const models = $('key-models').value.split(',').map((m) => m.trim()).filter(Boolean);
    if (models.length) body.models = models;
    return change('keys-error', async () => {
      const k = await (await api('/admin/keys', 'POST', body)).json();
      $('key-form').reset();
      showSecret('New key', k.name, k.key);
    });
  }

  function revokeKey(k) {
    if (!window.confirm('Revoke the key "' + k.name + '"? Requests with it are refused at once. This cannot be undone.')) return;
    return change('keys-error', () => api('/admin/keys/' + encodeURIComponent(k.id), 'DELETE'));
  }

  function rotateKey(k) {
    if (!window.confirm('Rotate the key "' + k.name + '"? A new secret is shown once; the old one keeps working for 24 hours.')) return;
    return change('keys-error', async () => {
      const r = await (await api('/admin/keys/' + encodeURIComponent(k.id) + '/rotate', 'POST', {})).json();
      showSecret('New secret of', r.name, r.key);
    });
  }

  function teamBody(prefix) {
    const body = {};
    for (const field of ['rpm', 'tpm']) {
      const n = numberField(prefix + '-' + field);
      body[field] = n === undefined ? 0 : n; // empty: no limit
    }
    const usd = numberField(prefix + '-budget');
    body.budget = usd === undefined ? null : { usd, period: $(prefix + '-period').value };
    return body;
  }

  function createTeam(ev) {
    ev.preventDefault();
    const body = teamBody('team');
    body.name = $('team-name').value.trim();
    if (body.budget === null) delete body.budget;
    return change('teams-error', async () => {
      await api('/admin/teams', 'POST', body);
      $('team-form').reset();
    });
  }

  let editing = '';

  function editTeam(name) {
    const t = teamsByName.get(name);
    if (!t) return;
    editing = name;
    $('team-edit-name').textContent = name;
    $('edit-rpm').value = t.rpm > 0 ? String(t.rpm) : '';
    $('edit-tpm').value = t.tpm > 0 ? String(t.tpm) : '';
    $('edit-budget').value = t.budget ? String(t.budget.usd) : '';
    $('edit-period').value = t.budget && t.budget.period ? t.budget.period : 'monthly';
    showError('teams-error', '');
    $('team-edit').hidden = false;
    $('edit-budget').focus();
  }

  function saveTeam(ev) {
    ev.preventDefault();
    if (!editing) return;
    const name = editing;
    return change('teams-error', async () => {
      await api('/admin/teams/' + encodeURIComponent(name), 'PATCH', teamBody('edit'));
      editing = '';
      $('team-edit').hidden = true;
    });
  }

  // ---------- sign-in, refresh ----------

  function showSignIn(message) {
    session++;
    clearInterval(timer);
    timer = 0;
    lastOK = null;
    $('dashboard').hidden = true;
    $('signout').hidden = true;
    $('status').textContent = '';
    // Whatever the previous key showed goes away with it.
    clear($('teams').tBodies[0]);
    clear($('sizes').tBodies[0]);
    clear($('providers').tBodies[0]);
    clear($('batches').tBodies[0]);
    clear($('chart'));
    clearAdminLists();
    $('signin').hidden = false;
    const err = $('signin-error');
    err.textContent = message || '';
    err.hidden = !message;
    $('admin-key').focus();
  }

  function signOut(message) {
    sessionStorage.removeItem(STORAGE_KEY);
    showSignIn(message);
  }

  async function refresh() {
    if (inFlight || !sessionStorage.getItem(STORAGE_KEY)) return;
    inFlight = true;
    const mine = session;
    const changesBefore = changes;
    try {
      const today = utcDay(new Date());
      const [usage, providers, batches, apiKeys, teams] = await Promise.allSettled([
        api('/admin/usage?' + usageQuery(today)).then((r) => r.json()),
        api('/admin/providers').then((r) => r.json()),
        api('/admin/batches?limit=20').then((r) => r.json()),
        api('/admin/keys').then((r) => r.json()),
        api('/admin/teams').then((r) => r.json()),
      ]);
      if (mine !== session) return;
      // A gateway that cannot manage keys at run time answers 404: its sections are hidden, not an error.
      const managed = !(apiKeys.status === 'rejected' && apiKeys.reason.status === 404);
      $('keys-card').hidden = !managed;
      $('teams-card').hidden = !managed;
      const failed = [usage, providers, batches, apiKeys, teams].filter((r) => r.status === 'rejected' &&
        (managed || r.reason.status !== 404)).map((r) => r.reason);
      const auth = failed.find((e) => e instanceof AuthError);
      if (auth) {
        signOut(auth.message);
        return;
      }
      if (usage.status === 'fulfilled') {
        renderKPIs(usage.value);
        renderChart(usage.value, today);
        renderTeams(usage.value);
        renderSizes(usage.value);
      }
      if (providers.status === 'fulfilled') renderProviders(providers.value);
      if (batches.status === 'fulfilled') renderBatches(batches.value);
      if (changes === changesBefore) {
        if (apiKeys.status === 'fulfilled') renderKeyList(apiKeys.value);
        if (teams.status === 'fulfilled') renderTeamList(teams.value);
      }
      $('signin').hidden = true;
      $('dashboard').hidden = false;
      $('signout').hidden = false;
      const banner = $('refresh-error');
      const status = $('status');
      if (failed.length > 0) {
        banner.textContent = 'Could not refresh: ' + failed.map((e) => e.message).join('; ') +
          (lastOK ? ' (showing data from ' + lastOK.toLocaleTimeString() + ')' : '');
        banner.hidden = false;
        status.classList.add('stale');
      } else {
        lastOK = new Date();
        banner.hidden = true;
        status.classList.remove('stale');
        status.textContent = 'updated ' + lastOK.toLocaleTimeString();
      }
    } finally {
      if (mine === session) inFlight = false;
    }
  }

  function start() {
    clearInterval(timer);
    timer = setInterval(() => {
      if (!document.hidden) refresh();
    }, REFRESH_MS);
    return refresh();
  }

  async function downloadCSV() {
    const button = $('csv');
    button.disabled = true;
    try {
      const today = utcDay(new Date());
      const resp = await api('/admin/usage?format=csv&' + usageQuery(today));
      const blob = await resp.blob();
      const url = URL.createObjectURL(blob);
      const a = document.createElement('a');
      a.href = url;
      a.download = 'nanogate-usage-' + today.slice(0, 7) + '.csv';
      document.body.appendChild(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
    } catch (e) {
      if (e instanceof AuthError) {
        signOut(e.message);
        return;
      }
      const banner = $('refresh-error');
      banner.textContent = 'CSV download failed: ' + e.message;
      banner.hidden = false;
    } finally {
      button.disabled = false;
    }
  }

  document.addEventListener('DOMContentLoaded', () => {
    $('signin-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      const input = $('admin-key');
      const key = input.value.trim();
      input.value = '';
      if (!key) return;
      sessionStorage.setItem(STORAGE_KEY, key);
      session++;
      inFlight = false; // an answer still on its way belongs to the previous key and is dropped
      $('signin-error').hidden = true;
      start();
    });
    $('signout').addEventListener('click', () => signOut(''));
    $('csv').addEventListener('click', downloadCSV);
    $('key-form').addEventListener('submit', createKey);
    $('team-form').addEventListener('submit', createTeam);
    $('team-edit').addEventListener('submit', saveTeam);
    $('team-edit-cancel').addEventListener('click', () => {
      editing = '';
      $('team-edit').hidden = true;
    });
    $('secret-copy').addEventListener('click', copySecret);
    $('secret-done').addEventListener('click', dismissSecret);
    document.addEventListener('visibilitychange', () => {
      if (!document.hidden && timer) refresh();
    });
    if (sessionStorage.getItem(STORAGE_KEY)) start();
    else showSignIn('');
  });
})();
