// Small helpers shared by the console's views: the API client and a DOM builder.
// Text always goes in as text nodes (never innerHTML), so data cannot inject markup.

const TOKEN_KEY = 'gw.token';

export const session = {
  get token() {
    return sessionStorage.getItem(TOKEN_KEY);
  },
  set token(v) {
    if (v) sessionStorage.setItem(TOKEN_KEY, v);
    else sessionStorage.removeItem(TOKEN_KEY);
  },
  me: null,
};

export class ApiError extends Error {
  constructor(status, body) {
    const e = (body && body.error) || {};
    super(e.message || `HTTP ${status}`);
    this.status = status;
    this.code = e.code;
    this.details = e.details;
  }
}

/** Calls the gateway API with the session's bearer token; throws ApiError on a non-2xx answer. */
export async function api(method, path, body) {
  const headers = { authorization: `Bearer ${session.token}` };
  if (body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(`/api${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const type = res.headers.get('content-type') || '';
  const data = type.includes('json') ? await res.json() : await res.text();
  if (res.status === 401 && path !== '/me') window.dispatchEvent(new CustomEvent('gw:unauthorized'));
  if (!res.ok) throw new ApiError(res.status, data);
  return data;
}

/** Downloads an API answer as a file (the token travels in a header, so a plain link cannot). */
export async function download(path, fallbackName) {
  const res = await fetch(`/api${path}`, { headers: { authorization: `Bearer ${session.token}` } });
  if (!res.ok) throw new ApiError(res.status, await res.json().catch(() => null));
  const name = /filename="([^"]+)"/.exec(res.headers.get('content-disposition') || '')?.[1] || fallbackName;
  const url = URL.createObjectURL(await res.blob());
  const a = h('a', { href: url, download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

/** h('div', {class: 'x', onclick: f}, 'text', child...) */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k === 'value') el.value = v;
    else if (v === true) el.setAttribute(k, '');
    else el.setAttribute(k, String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export function table(columns, rows, o = {}) {
  return h(
    'table',
    { class: o.class, 'data-testid': o.testid },
    h(
      'thead',
      {},
      h(
        'tr',
        {},
        columns.map((c) => h('th', { class: c.num ? 'num' : undefined }, c.label)),
      ),
    ),
    h(
      'tbody',
      {},
      rows.length === 0
        ? h('tr', {}, h('td', { colspan: columns.length, class: 'muted' }, o.empty || 'nothing to show'))
        : rows.map((r) =>
            h(
              'tr',
              {},
              columns.map((c) => h('td', { class: c.num ? 'num' : undefined }, c.value(r))),
            ),
          ),
    ),
  );
}

export function errorBox(err) {
  const lines = [err.status ? `${err.status} ${err.code || ''}: ${err.message}` : String(err.message || err)];
  for (const e of err.details?.errors || []) lines.push(`${e.path}: ${e.message}`);
  return h('div', { class: 'error', 'data-testid': 'error' }, lines.join('\n'));
}

export function flash(message, kind = 'ok') {
  const el = document.getElementById('flash');
  el.className = kind;
  el.textContent = message;
  clearTimeout(flash.timer);
  flash.timer = setTimeout(() => {
    el.className = 'hidden';
  }, 6000);
}

export const fmt = {
  time: (t) => (t ? new Date(t).toLocaleString() : ''),
  pct: (x) => (x === null || x === undefined ? '–' : `${(x * 100).toFixed(1)} %`),
  num: (x) => (x === null || x === undefined ? '–' : String(x)),
};

export function stateClass(state) {
  return state === 'written-back' ? 'pill good' : ['failed', 'held', 'cancelled'].includes(state) ? 'pill bad' : 'pill';
}

/** An ISO time from a datetime-local or date input's value (local time), or undefined. */
export function isoFromInput(v) {
  if (!v) return undefined;
  const t = new Date(v);
  return Number.isNaN(t.getTime()) ? undefined : t.toISOString();
}

/** A date input value (YYYY-MM-DD, local) for a Date. */
export function dateInput(d) {
  const p = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}`;
}
