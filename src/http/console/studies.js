// Studies: the held ones with their reason (identity conflicts, IOCM), and one study's page with the
// copies of its re-sent instances and QA's Release / Reject decision (both audited by the server).
import { api, errorBox, flash, fmt, h, stateClass, table } from './lib.js';

export async function studiesView() {
  const root = h('section', { 'data-testid': 'studies' }, h('h1', {}, 'Studies'));
  const out = h('div');
  const form = h(
    'form',
    { class: 'filters', id: 'study-filters' },
    h(
      'label',
      {},
      'State',
      h(
        'select',
        { name: 'state' },
        ['held', 'receiving', 'stable', ''].map((v) => h('option', { value: v }, v || 'any')),
      ),
    ),
    h('label', {}, 'Accession', h('input', { name: 'accessionNumber', size: 12 })),
    h('button', { type: 'submit' }, 'Filter'),
  );
  const load = async () => {
    const q = new URLSearchParams();
    for (const [k, v] of new FormData(form)) if (v) q.set(k, String(v));
    try {
      const { items } = await api('GET', `/studies?${q}`);
      out.replaceChildren(
        table(
          [
            {
              label: 'Study',
              value: (s) => h('a', { href: `#/studies/${encodeURIComponent(s.studyInstanceUid)}`, 'data-study': s.studyInstanceUid }, s.studyInstanceUid),
            },
            { label: 'Accession', value: (s) => s.accessionNumber ?? '' },
            { label: 'State', value: (s) => h('span', { class: stateClass(s.state) }, s.state) },
            { label: 'Hold reason', value: (s) => (s.holdReason ? h('span', { class: 'pill bad', 'data-k': 'holdReason' }, s.holdReason) : '') },
            { label: 'What changed', value: (s) => s.holdDetail ?? '' },
            { label: 'Held since', value: (s) => (s.heldAt ? fmt.time(s.heldAt) : '') },
            { label: 'Instances', num: true, value: (s) => s.instanceCount },
          ],
          items,
          { testid: 'study-list', empty: 'no studies match' },
        ),
      );
    } catch (e) {
      out.replaceChildren(errorBox(e));
    }
  };
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    load();
  });
  form.addEventListener('change', () => load());
  root.append(form, out);
  await load();
  return root;
}

export async function studyView(ctx, uid) {
  let s;
  try {
    s = await api('GET', `/studies/${encodeURIComponent(uid)}`);
  } catch (e) {
    return h('section', { 'data-testid': 'study' }, h('h1', {}, 'Study'), errorBox(e));
  }
  const root = h('section', { 'data-testid': 'study' });
  const decide = (action) => {
    const why = h('input', { placeholder: 'why (required)', size: 28, id: `${action}-reason` });
    return h(
      'span',
      {},
      why,
      h(
        'button',
        {
          type: 'button',
          id: `study-${action}`,
          class: action === 'reject' ? 'secondary' : undefined,
          onclick: async () => {
            try {
              await api('POST', `/studies/${encodeURIComponent(uid)}/${action}`, { reason: why.value });
              flash(action === 'release' ? 'study released' : 'conflicting copies rejected');
              root.replaceWith(await studyView(ctx, uid));
            } catch (e) {
              flash(e.message, 'error');
            }
          },
        },
        action === 'release' ? 'Release' : 'Reject',
      ),
    );
  };
  root.append(
    h('h1', {}, `Study ${s.accessionNumber ?? ''}`),
    h(
      'dl',
      { class: 'facts' },
      h('dt', {}, 'Study'),
      h('dd', {}, s.studyInstanceUid),
      h('dt', {}, 'State'),
      h('dd', {}, h('span', { class: stateClass(s.state), 'data-k': 'state' }, s.state)),
      h('dt', {}, 'Patient'),
      h('dd', {}, `${s.patientName ?? ''} · ${s.patientId ?? ''}${s.issuerOfPatientId ? ` (${s.issuerOfPatientId})` : ''}`),
      h('dt', {}, 'Other ids'),
      h('dd', {}, (s.otherPatientIds || []).map((o) => `${o.id}${o.issuer ? ` (${o.issuer})` : ''}`).join(', ')),
      h('dt', {}, 'Instances'),
      h('dd', {}, String(s.instanceCount)),
      s.holdReason ? [h('dt', {}, 'Held'), h('dd', { 'data-k': 'hold' }, `${s.holdReason}: ${s.holdDetail ?? ''} (since ${fmt.time(s.heldAt)})`)] : null,
      // MPPS: what the modality said it produced against what arrived; without MPPS the quiet period decides.
      h('dt', {}, 'Completeness'),
      h(
        'dd',
        { 'data-k': 'completeness' },
        s.completeness
          ? `${s.completeness.verdict}: ${s.completeness.arrived} of ${s.completeness.referenced} instances listed by MPPS arrived · steps: ${s.completeness.mpps.map((m) => m.status).join(', ')}`
          : 'no MPPS: complete after the quiet period',
      ),
    ),
    s.state === 'held' && ['admin', 'qa'].includes(ctx.me.role)
      ? h(
          'div',
          { class: 'panel', 'data-testid': 'hold-actions' },
          h(
            'p',
            {},
            'Release: the newest copies are right; the study goes on and the rules run again. Reject: discard the copies that caused the hold; the prior copies are current again.',
          ),
          h('p', {}, decide('release'), ' ', decide('reject')),
        )
      : null,
    h('h2', {}, 'Re-sent and withdrawn instances'),
    table(
      [
        { label: 'SOP instance', value: (v) => v.sopInstanceUid },
        { label: 'Version', num: true, value: (v) => v.version },
        { label: 'Current', value: (v) => (v.current ? 'yes' : '') },
        { label: 'Received', value: (v) => fmt.time(v.receivedAt) },
        { label: 'Patient', value: (v) => `${v.patientName ?? ''} · ${v.patientId ?? ''}` },
        { label: 'Accession', value: (v) => v.accessionNumber ?? '' },
        { label: 'Changed', value: (v) => v.identityChanges.join(', ') },
        { label: 'Conflict', value: (v) => v.conflictState ?? '' },
        { label: 'IOCM', value: (v) => (v.kind === 'iocm-rejection' ? 'rejection note' : v.rejectionCode ? `rejected ${v.rejectionCode}` : '') },
        { label: 'SHA-256', value: (v) => v.sha256.slice(0, 12) },
      ],
      s.versions || [],
      { testid: 'versions', empty: 'every instance was received once' },
    ),
  );
  return root;
}
