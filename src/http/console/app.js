// The console's shell: login, role-aware navigation and a hash router.
// What a role may see is enforced by the server; the menu only hides what would be refused.
import { api, errorBox, h, session } from './lib.js';
import { dashboardView, worklistView, caseView, samplingView, attentionView, auditView, instancesView } from './views.js';
import { rulesView } from './rules.js';
import { statsView } from './stats.js';
import { studiesView, studyView } from './studies.js';
import { arbitrationsView, arbitrationView } from './arbitration.js';

const STAFF = ['admin', 'qa'];
const ROUTES = [
  { path: 'dashboard', label: 'Dashboard', roles: STAFF, view: dashboardView },
  { path: 'cases', label: 'Worklist', roles: STAFF, view: worklistView },
  { path: 'studies', label: 'Held studies', roles: STAFF, view: studiesView },
  { path: 'my-cases', label: 'My cases', roles: ['reader'], view: worklistView },
  { path: 'arbitrations', label: 'Arbitrations', roles: STAFF, view: arbitrationsView },
  { path: 'rules', label: 'Rules', roles: STAFF, view: rulesView },
  { path: 'sampling', label: 'Sampling', roles: STAFF, view: samplingView },
  { path: 'stats', label: 'Statistics', roles: STAFF, view: statsView },
  { path: 'attention', label: 'Held & dead letters', roles: STAFF, view: attentionView },
  { path: 'audit', label: 'Audit', roles: STAFF, view: auditView },
  { path: 'instances', label: 'Instances', roles: STAFF, view: instancesView },
];

const main = document.getElementById('main');
let cleanup = null;
/** Counts navigations: a view whose data arrives after a later navigation must not replace the later page. */
let navigation = 0;

function home(role) {
  return role === 'reader' ? '#/my-cases' : STAFF.includes(role) ? '#/dashboard' : '#/none';
}

function renderNav() {
  const nav = document.getElementById('nav');
  const who = document.getElementById('who');
  const logout = document.getElementById('logout');
  nav.replaceChildren();
  const me = session.me;
  if (!me) {
    who.textContent = '';
    logout.classList.add('hidden');
    return;
  }
  const current = location.hash.split('/')[1] || '';
  for (const r of ROUTES.filter((x) => x.roles.includes(me.role))) {
    nav.append(h('a', { href: `#/${r.path}`, class: current === r.path ? 'active' : undefined, 'data-nav': r.path }, r.label));
  }
  who.textContent = `${me.name} (${me.role}${me.readerId ? ` · ${me.readerId}` : ''})`;
  who.dataset.role = me.role;
  logout.classList.remove('hidden');
}

function loginView(message) {
  const input = h('input', { type: 'password', name: 'token', id: 'token', autocomplete: 'off', required: true, 'aria-label': 'Access token' });
  const err = h('div');
  const form = h(
    'form',
    {
      class: 'panel login',
      id: 'login-form',
      onsubmit: async (e) => {
        e.preventDefault();
        session.token = input.value.trim();
        try {
          session.me = await api('GET', '/me');
          location.hash = home(session.me.role);
          await route();
        } catch (ex) {
          session.token = null;
          session.me = null;
          err.replaceChildren(errorBox(ex.status === 401 ? { message: 'That token was not accepted.', status: 401, code: 'unauthorized' } : ex));
        }
      },
    },
    h('h1', {}, 'Sign in'),
    h('p', { class: 'muted' }, 'Paste the access token you were given. It is kept for this browser tab only.'),
    message ? h('div', { class: 'error' }, message) : null,
    h('label', {}, 'Access token', input),
    h('p', {}, h('button', { type: 'submit', id: 'login' }, 'Sign in')),
    err,
  );
  main.replaceChildren(form);
  input.focus();
}

async function route() {
  const seq = ++navigation;
  const current = () => seq === navigation;
  if (cleanup) {
    try {
      cleanup();
    } catch {
      /* a view's timer */
    }
    cleanup = null;
  }
  if (!session.token) {
    renderNav();
    return loginView();
  }
  if (!session.me) {
    try {
      session.me = await api('GET', '/me');
    } catch (ex) {
      session.token = null;
      renderNav();
      return loginView(ex.status === 401 ? 'Your session has ended; sign in again.' : ex.message);
    }
    if (!current()) return;
  }
  const parts = location.hash.replace(/^#\/?/, '').split('/');
  const [first, id] = parts;
  if (!first) {
    location.hash = home(session.me.role);
    return;
  }
  renderNav();
  const ctx = {
    me: session.me,
    // A view left behind by a later navigation stops its timers at once instead of taking the new view's place.
    setCleanup: (f) => {
      if (current()) cleanup = f;
      else f();
    },
  };
  main.replaceChildren(h('p', { class: 'muted' }, 'Loading…'));
  try {
    let view;
    if (first === 'cases' && id) view = () => caseView(ctx, decodeURIComponent(id));
    else if (first === 'arbitration' && id) view = () => arbitrationView(ctx, decodeURIComponent(id));
    // A reader reaches their arbitrations from "My cases" (no menu entry of its own).
    else if (first === 'arbitrations' && session.me.role === 'reader') view = () => arbitrationsView(ctx);
    else if (first === 'studies' && id && STAFF.includes(session.me.role)) view = () => studyView(ctx, decodeURIComponent(id));
    else {
      const r = ROUTES.find((x) => x.path === first);
      if (!r) {
        main.replaceChildren(h('p', {}, 'Nothing here for your role.'));
        return;
      }
      if (!r.roles.includes(session.me.role)) {
        main.replaceChildren(errorBox({ status: 403, code: 'forbidden', message: `the ${session.me.role} role may not open ${r.label}` }));
        return;
      }
      view = () => r.view(ctx);
    }
    const node = await view();
    if (current()) main.replaceChildren(node);
  } catch (ex) {
    if (current()) main.replaceChildren(errorBox(ex));
  }
}

document.getElementById('logout').addEventListener('click', () => {
  session.token = null;
  session.me = null;
  location.hash = '#/';
  route();
});
window.addEventListener('gw:unauthorized', () => {
  session.token = null;
  session.me = null;
  loginView('Your session has ended; sign in again.');
  renderNav();
});
window.addEventListener('hashchange', route);
route();
