// Arbitration: a third reader's worklist and page (blinded to both earlier reads), and the staff view.
// The third reader sees neither read, score nor reader until they ask for the two readings (audited).
import { api, errorBox, flash, fmt, h, stateClass, table } from './lib.js';

const STAFF = ['admin', 'qa'];
const VERDICTS = [
  ['agree-first', 'agree with the first read'],
  ['agree-second', 'agree with the second read'],
  ['other', 'neither: my own finding'],
];
const RADPEER = ['1', '2a', '2b', '3a', '3b'];

export async function arbitrationsView(ctx) {
  const staff = STAFF.includes(ctx.me.role);
  const root = h('section', { 'data-testid': 'arbitrations' }, h('h1', {}, staff ? 'Arbitrations' : 'My arbitrations'));
  const { items } = await api('GET', '/arbitrations');
  const link = (a) => h('a', { href: `#/arbitration/${encodeURIComponent(a.caseId)}`, 'data-arbitration': a.caseId }, a.caseId);
  const columns = staff
    ? [
        { label: 'Case', value: link },
        { label: 'State', value: (a) => h('span', { class: stateClass(a.state) }, a.state) },
        { label: 'Second read', value: (a) => `RADPEER ${a.triggerScore}` },
        { label: 'Third reader', value: (a) => a.arbitratorId ?? h('span', { class: 'pill bad' }, 'unassigned') },
        { label: 'Verdict', value: (a) => (a.verdict ? `${a.verdict} (final ${a.finalScore})` : '') },
        { label: 'Opened', value: (a) => fmt.time(a.createdAt) },
      ]
    : [
        { label: 'Case', value: link },
        { label: 'State', value: (a) => a.state },
        { label: 'Opened', value: (a) => fmt.time(a.createdAt) },
      ];
  root.append(table(columns, items, { testid: 'arbitration-list', empty: staff ? 'no arbitrations' : 'no arbitration is waiting for you' }));
  return root;
}

export async function arbitrationView(ctx, caseId) {
  const staff = STAFF.includes(ctx.me.role);
  const root = h('section', { 'data-testid': 'arbitration' }, h('h1', {}, `Arbitration of case ${caseId}`));
  let a;
  try {
    a = await api('GET', `/cases/${encodeURIComponent(caseId)}/arbitration`);
  } catch (e) {
    root.append(errorBox(e));
    return root;
  }
  const refresh = () =>
    arbitrationView(ctx, caseId)
      .then((n) => root.replaceWith(n))
      .catch((e) => flash(e.message, 'error'));
  const c = a.case || {};
  root.append(
    h(
      'dl',
      { class: 'kv' },
      h('dt', {}, 'State'),
      h('dd', {}, h('span', { class: stateClass(a.state), 'data-k': 'arbitration-state' }, a.state)),
      staff ? null : h('dt', {}, 'Accession'),
      staff ? null : h('dd', { 'data-k': 'accession' }, c.accessionNumber ?? ''),
      staff ? null : h('dt', {}, 'Study'),
      staff ? null : h('dd', {}, c.studyInstanceUid ?? ''),
      staff ? null : h('dt', {}, 'Due'),
      staff ? null : h('dd', {}, c.dueAt ? fmt.time(c.dueAt) : ''),
      staff ? h('dt', {}, 'Second read') : null,
      staff ? h('dd', {}, `RADPEER ${a.triggerScore} (rules ${a.ruleIds.join(', ')})`) : null,
      h('dt', {}, 'Third reader'),
      h('dd', { 'data-k': 'arbitrator' }, a.arbitratorId ?? `unassigned${a.unassignedReason ? `: ${a.unassignedReason}` : ''}`),
      a.verdict ? h('dt', {}, 'Verdict') : null,
      a.verdict ? h('dd', { 'data-k': 'verdict' }, `${a.verdict} (RADPEER of the first read after arbitration: ${a.finalScore})`) : null,
      a.text ? h('dt', {}, 'Comment') : null,
      a.text ? h('dd', {}, h('pre', { class: 'report' }, a.text)) : null,
    ),
  );
  if (!staff && a.state === 'open') {
    root.append(
      h(
        'p',
        { class: 'muted', 'data-k': 'blinded-note' },
        'Blinded: read the study first. The two earlier readings are shown on request, without their scores or readers; the request is logged.',
      ),
    );
  }
  const readings = h('div', { 'data-testid': 'readings' });
  const open = a.state === 'open' || (staff && a.state === 'unassigned');
  if (open) {
    root.append(
      h(
        'button',
        {
          type: 'button',
          class: 'secondary',
          id: 'show-readings',
          onclick: async () => {
            try {
              const r = await api('GET', `/cases/${encodeURIComponent(caseId)}/arbitration/readings`);
              readings.replaceChildren(
                h('h2', {}, 'First reading'),
                r.first ? h('pre', { class: 'report' }, r.first.text) : h('p', { class: 'muted' }, r.firstWithheld || 'not available'),
                h('h2', {}, 'Second reading'),
                r.second ? h('pre', { class: 'report' }, r.second.text) : h('p', { class: 'muted' }, 'not available'),
                h('p', { class: 'muted' }, 'This view was recorded in the audit log.'),
              );
            } catch (e) {
              readings.replaceChildren(errorBox(e));
            }
          },
        },
        'Show the two readings (logged)',
      ),
      readings,
      verdictForm(caseId, refresh),
    );
  }
  if (staff && open) {
    const who = h(
      'select',
      { name: 'readerId', id: 'arbitrator' },
      h('option', { value: '' }, 'let the rules choose'),
      (ctx.me.readers || []).map((r) => h('option', { value: r.id }, `${r.id} (${r.name})`)),
    );
    root.append(
      h('h2', {}, 'Third reader'),
      h(
        'div',
        { class: 'row' },
        h('label', {}, 'Assign to', who),
        h(
          'button',
          {
            type: 'button',
            class: 'secondary',
            'data-action': 'assign-arbitrator',
            onclick: async () => {
              try {
                await api('POST', `/cases/${encodeURIComponent(caseId)}/arbitration/assign`, who.value ? { readerId: who.value } : {});
                flash('Third reader assigned');
                await refresh();
              } catch (e) {
                flash(`Assign: ${e.message}`, 'error');
              }
            },
          },
          'Assign',
        ),
      ),
    );
  }
  return root;
}

function verdictForm(caseId, done) {
  const verdict = h(
    'select',
    { name: 'verdict', id: 'verdict', required: true },
    h('option', { value: '' }, 'choose…'),
    VERDICTS.map(([v, l]) => h('option', { value: v }, l)),
  );
  const score = h(
    'select',
    { name: 'radpeerScore', id: 'arbitration-score' },
    h('option', { value: '' }, 'as the verdict implies'),
    RADPEER.map((v) => h('option', { value: v }, v)),
  );
  const text = h('textarea', { name: 'text', id: 'verdict-text', rows: 5, required: true });
  const out = h('div');
  return h(
    'form',
    {
      class: 'panel',
      id: 'verdict-form',
      onsubmit: async (e) => {
        e.preventDefault();
        try {
          await api('POST', `/cases/${encodeURIComponent(caseId)}/arbitration`, {
            verdict: verdict.value,
            text: text.value,
            ...(score.value ? { radpeerScore: score.value } : {}),
          });
          flash('Verdict stored; the result is being written back to the RIS.');
          await done();
        } catch (ex) {
          out.replaceChildren(errorBox(ex));
        }
      },
    },
    h('h2', {}, 'Verdict'),
    h('label', {}, 'Verdict', verdict),
    h('label', {}, 'RADPEER score of the first read (required for "neither")', score),
    h('label', {}, 'Comment', text),
    h('p', {}, h('button', { type: 'submit', id: 'submit-verdict' }, 'Send verdict')),
    out,
  );
}
