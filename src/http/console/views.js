// Dashboard, worklist, case page (staff and reader), sampling, held messages and dead letters, audit.
import { samplingCellsTable } from './stats.js';
import { api, errorBox, flash, fmt, h, isoFromInput, stateClass, table } from './lib.js';

const CASE_STATES = ['flagged', 'forwarding', 'awaiting-read', 'reported', 'arbitration', 'written-back', 'held', 'failed', 'cancelled'];
const OPEN_STATES = ['flagged', 'forwarding', 'awaiting-read', 'reported', 'arbitration', 'held'];
const PRIORITIES = ['stat', 'urgent', 'routine'];
const RADPEER = [
  ['1', '1 - concur with interpretation'],
  ['2a', '2a - discrepancy not ordinarily expected; unlikely clinically significant'],
  ['2b', '2b - discrepancy not ordinarily expected; likely clinically significant'],
  ['3a', '3a - discrepancy that should be made most of the time; unlikely significant'],
  ['3b', '3b - discrepancy that should be made most of the time; likely significant'],
];
const DASHBOARD_REFRESH_MS = 3000;

function card(label, value, key, bad = false) {
  return h(
    'div',
    { class: `card${bad && value > 0 ? ' bad' : ''}` },
    h('div', { class: 'label' }, label),
    h('div', { class: 'value', 'data-k': key }, String(value)),
  );
}

export async function dashboardView(ctx) {
  const root = h('section', { 'data-testid': 'dashboard' });
  const draw = async () => {
    const d = await api('GET', '/dashboard');
    root.replaceChildren(
      h('h1', {}, 'Dashboard'),
      h(
        'p',
        { class: 'muted' },
        'Updated ',
        h('span', { 'data-k': 'generatedAt' }, fmt.time(d.generatedAt)),
        ` · refreshes every ${DASHBOARD_REFRESH_MS / 1000} s`,
      ),
      h(
        'div',
        { class: 'cards' },
        card('Studies received today', d.today.studiesReceived, 'studiesToday'),
        card('Cases opened today', d.today.casesOpened, 'casesToday'),
        card('Second reports today', d.today.secondReports, 'reportsToday'),
        card('Written back today', d.today.writtenBack, 'writtenBackToday'),
        card('SLA breaches (open)', d.slaBreaches.open, 'slaBreaches', true),
        card('Overdue (open)', d.slaBreaches.overdue, 'overdue', true),
        card('Write-back failures', d.writeBack.failed, 'writeBackFailed', true),
        card('Write-backs pending', d.writeBack.pending, 'writeBackPending'),
        card('Dead letters', d.deadLetters, 'deadLetters', true),
        card('Held HL7 messages', d.heldMessages, 'heldMessages', true),
      ),
      h('h2', {}, 'Cases by state'),
      h(
        'div',
        { class: 'cards' },
        CASE_STATES.map((s) => card(s, d.casesByState[s] ?? 0, `cases-${s}`, ['failed', 'held'].includes(s))),
      ),
      h('h2', {}, 'Queues per destination'),
      table(
        [
          { label: 'Destination', value: (q) => q.destinationId },
          {
            label: 'Queue depth (pending + sending)',
            num: true,
            value: (q) => h('span', { 'data-k': `queue-${q.destinationId}` }, String(q.pending + q.sending)),
          },
          { label: 'Delivered', num: true, value: (q) => q.delivered },
          { label: 'Held', num: true, value: (q) => q.held },
          { label: 'Dead', num: true, value: (q) => q.dead },
        ],
        d.queues,
        { testid: 'queues', empty: 'no deliveries yet' },
      ),
    );
  };
  await draw();
  let failures = 0;
  const timer = setInterval(
    () =>
      draw()
        .then(() => {
          failures = 0;
        })
        .catch((e) => {
          if (++failures === 3) flash(`dashboard refresh failed: ${e.message}`, 'error');
        }),
    DASHBOARD_REFRESH_MS,
  );
  ctx.setCleanup(() => clearInterval(timer));
  return root;
}

export async function worklistView(ctx) {
  const reader = ctx.me.role === 'reader';
  const root = h('section', { 'data-testid': 'worklist' }, h('h1', {}, reader ? 'My cases' : 'Worklist'));
  const results = h('div');
  const select = (name, values, label) =>
    h(
      'label',
      {},
      label,
      h(
        'select',
        { name },
        h('option', { value: '' }, 'any'),
        values.map((v) => h('option', { value: v[0] ?? v }, v[1] ?? v)),
      ),
    );
  const form = h(
    'form',
    { class: 'filters', id: 'case-filters' },
    select('state', CASE_STATES, 'State'),
    reader ? null : h('label', {}, 'Rule', h('input', { name: 'ruleId', size: 12 })),
    reader ? null : select('priority', PRIORITIES, 'Priority'),
    reader
      ? null
      : select(
          'readerId',
          (ctx.me.readers || []).map((r) => [r.id, `${r.id} (${r.name})`]),
          'Reader',
        ),
    reader ? null : h('label', {}, 'Modality', h('input', { name: 'modality', size: 5 })),
    h('label', {}, 'Due before', h('input', { name: 'dueBefore', type: 'datetime-local' })),
    h('button', { type: 'submit' }, 'Filter'),
  );
  const load = async () => {
    const q = new URLSearchParams();
    for (const [k, v] of new FormData(form)) {
      if (!v) continue;
      q.set(k, k === 'dueBefore' ? isoFromInput(v) : String(v));
    }
    try {
      const { items } = await api('GET', `/cases?${q}`);
      results.replaceChildren(
        table(
          [
            { label: 'Case', value: (c) => h('a', { href: `#/cases/${encodeURIComponent(c.id)}`, 'data-case': c.id }, c.id) },
            { label: 'Accession', value: (c) => c.accessionNumber ?? '' },
            { label: 'State', value: (c) => h('span', { class: stateClass(c.state) }, c.state) },
            { label: 'Rules', value: (c) => c.ruleIds.join(', ') },
            { label: 'Priority', value: (c) => c.priority },
            { label: 'Due', value: (c) => h('span', { class: c.slaBreachedAt ? 'pill bad' : undefined }, fmt.time(c.dueAt)) },
            { label: 'Reader', value: (c) => c.readerId ?? '' },
            { label: 'Discrepant', value: (c) => (c.discrepant ? h('span', { class: 'pill bad' }, 'yes') : '') },
          ],
          items,
          { testid: 'cases', empty: reader ? 'no cases assigned to you' : 'no cases match' },
        ),
      );
    } catch (e) {
      results.replaceChildren(errorBox(e));
    }
  };
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    load();
  });
  form.addEventListener('change', () => load());
  root.append(form, results);
  if (reader) {
    // Cases this reader arbitrates are not theirs to read twice: listed apart, blinded (arbitration.js).
    const { items: arbitrations } = await api('GET', '/arbitrations');
    if (arbitrations.length)
      root.append(
        h(
          'p',
          { 'data-testid': 'my-arbitrations' },
          h('a', { href: '#/arbitrations', 'data-nav-arbitrations': '' }, `Arbitrations waiting for you: ${arbitrations.length}`),
        ),
      );
  }
  await load();
  return root;
}

export async function caseView(ctx, id) {
  const root = h('section', { 'data-testid': 'case' });
  const reader = ctx.me.role === 'reader';
  let c;
  try {
    c = await api('GET', `/cases/${encodeURIComponent(id)}`);
  } catch (e) {
    return h('section', { 'data-testid': 'case' }, h('h1', {}, `Case ${id}`), errorBox(e));
  }
  const timeline = reader ? null : await api('GET', `/cases/${encodeURIComponent(id)}/timeline`);
  const primary = h('div', { 'data-testid': 'primary-report' });
  const showPrimary = h(
    'button',
    {
      type: 'button',
      class: 'secondary',
      id: 'show-primary',
      onclick: async () => {
        try {
          const r = await api('GET', `/cases/${encodeURIComponent(id)}/primary-report`);
          primary.replaceChildren(
            h('h2', {}, `First report (${r.report.status})`),
            h('pre', { class: 'report' }, r.report.text),
            h('p', { class: 'muted' }, 'This view was recorded in the audit log.'),
          );
        } catch (e) {
          primary.replaceChildren(errorBox(e));
        }
      },
    },
    reader ? 'Show the first report' : 'Show the primary report (logged)',
  );

  const refresh = () =>
    caseView(ctx, id)
      .then((n) => root.replaceWith(n))
      .catch((e) => flash(e.message, 'error'));
  const action = (label, path, body, cls) =>
    h(
      'button',
      {
        type: 'button',
        class: cls,
        'data-action': label,
        onclick: async () => {
          try {
            await api('POST', `/cases/${encodeURIComponent(id)}/${path}`, body ? body() : undefined);
            flash(`${label}: done`);
            await refresh();
          } catch (e) {
            flash(`${label}: ${e.message}`, 'error');
          }
        },
      },
      label,
    );

  const summary = h(
    'dl',
    { class: 'kv' },
    h('dt', {}, 'State'),
    h('dd', {}, h('span', { class: stateClass(c.state), 'data-k': 'state' }, c.state), c.discrepant ? h('span', { class: 'pill bad' }, ' discrepant') : null),
    h('dt', {}, 'Accession'),
    h('dd', {}, c.accessionNumber ?? ''),
    h('dt', {}, 'Study'),
    h('dd', {}, c.studyInstanceUid ?? ''),
    h('dt', {}, 'Priority / due'),
    h('dd', {}, `${c.priority} · due ${fmt.time(c.dueAt)}`, c.slaBreachedAt ? h('span', { class: 'pill bad' }, ' SLA breached') : null),
    h('dt', {}, 'Reader'),
    h('dd', {}, c.readerId ?? '–'),
    h('dt', {}, 'Blinded'),
    h('dd', { 'data-k': 'blinded' }, c.blinded ? 'yes: the first report is hidden from the reader' : 'no'),
    h('dt', {}, 'Reasons'),
    h(
      'dd',
      {},
      h(
        'ul',
        {},
        (c.reasons || []).map((r) => h('li', {}, `${r.ruleId} (${r.kind})${r.detail ? `: ${r.detail}` : ''}`)),
      ),
    ),
    h('dt', {}, 'Deliveries'),
    h(
      'dd',
      { 'data-k': 'deliveries' },
      (c.deliveries || []).map((d) =>
        h(
          'div',
          {},
          h('span', { class: d.state === 'cancelled' ? 'pill bad' : 'pill' }, d.state),
          d.state === 'cancelled'
            ? ` ${d.destinationId}: stopped, case cancelled (${d.instancesSent}/${d.instancesTotal} sent)`
            : ` ${d.destinationId} (${d.instancesSent}/${d.instancesTotal}, ${d.attempts} attempts)${d.lastError ? ` – ${d.lastError}` : ''}`,
        ),
      ),
    ),
    h('dt', {}, 'Second report'),
    h(
      'dd',
      {},
      c.secondReport
        ? `RADPEER ${c.secondReport.radpeerScore} (${c.secondReport.concordance}) by ${c.secondReport.readerId}, ${fmt.time(c.secondReport.createdAt)}`
        : '–',
    ),
    h('dt', {}, 'Write-back'),
    h('dd', { 'data-k': 'writeBack' }, writeBackText(c.writeBack)),
    c.arbitration ? h('dt', {}, 'Arbitration') : null,
    c.arbitration
      ? h(
          'dd',
          { 'data-k': 'arbitration' },
          h('a', { href: `#/arbitration/${encodeURIComponent(c.id)}` }, c.arbitration.state),
          reader
            ? null
            : ` ${c.arbitration.arbitratorId ?? 'unassigned'}${c.arbitration.verdict ? `: ${c.arbitration.verdict} (final RADPEER ${c.arbitration.finalScore})` : ''}`,
        )
      : null,
  );

  root.append(h('h1', {}, `Case ${c.id}`), summary, priorsSection(c, reader));

  if (reader) {
    const mayReveal = !c.blinded || !!c.secondReport;
    root.append(
      h('h2', {}, 'First report'),
      mayReveal ? showPrimary : h('p', { class: 'muted', 'data-k': 'blinded-note' }, 'Blinded: the first report is shown once you have sent your own read.'),
      primary,
    );
    if (c.state === 'awaiting-read' && !c.secondReport) root.append(reportForm(id, refresh));
    else if (c.secondReport) root.append(h('h2', {}, 'Your report'), h('pre', { class: 'report' }, c.secondReport.text));
    if (c.writeBack?.state === 'waiting')
      root.append(h('p', { class: 'muted', 'data-k': 'writeBack' }, 'Your report is kept; its write-back is waiting for primary report.'));
    // Follow the write-back until it settles.
    if (['reported'].includes(c.state)) {
      const t = setTimeout(refresh, 1500);
      ctx.setCleanup(() => clearTimeout(t));
    }
    return root;
  }

  const actions = h('div', { class: 'row', 'data-testid': 'actions' });
  const retryable = c.state === 'held' || (c.deliveries || []).some((d) => ['dead', 'held'].includes(d.state));
  if (retryable) actions.append(action('Retry delivery', 'retry'));
  if (c.writeBack?.state === 'failed') actions.append(action('Retry write-back', 'retry-write-back'));
  if (['forwarding', 'awaiting-read'].includes(c.state)) {
    const who = h(
      'select',
      { name: 'readerId', id: 'reassign-reader' },
      h('option', { value: '' }, 'let the rules choose'),
      (ctx.me.readers || []).filter((r) => r.id !== c.readerId).map((r) => h('option', { value: r.id }, `${r.id} (${r.name})`)),
    );
    const why = h('input', { name: 'reason', placeholder: 'reason', size: 24 });
    actions.append(
      h('label', {}, 'Reassign to', who),
      why,
      action('Reassign', 'reassign', () => ({ readerId: who.value || undefined, reason: why.value || undefined }), 'secondary'),
    );
  }
  if ([...OPEN_STATES, 'failed'].includes(c.state)) {
    // Cancelling stops deliveries after the instance in flight, drops pending write-backs and tells the pool.
    const why = h('input', { name: 'cancelReason', id: 'cancel-reason', placeholder: 'why cancel (audited)', size: 24 });
    actions.append(
      why,
      action('Cancel case', 'cancel', () => (why.value.trim() ? { reason: why.value.trim() } : {}), 'danger'),
    );
  }
  root.append(h('h2', {}, 'Actions'), actions.childNodes.length ? actions : h('p', { class: 'muted' }, 'No action applies in this state.'));
  const excluded = c.excludedInstances || [];
  if (excluded.length) {
    // Kept back from a de-identified delivery: a person looks at the instance (in the PACS) and releases it, audited.
    const release = (e) =>
      e.reason === 'phi-detected'
        ? h('span', { class: 'muted' }, 'cannot be released')
        : h(
            'button',
            {
              type: 'button',
              class: 'secondary',
              'data-action': 'release',
              'data-sop': e.sopInstanceUid,
              onclick: async () => {
                try {
                  await api(
                    'POST',
                    `/cases/${encodeURIComponent(id)}/excluded/${encodeURIComponent(e.sopInstanceUid)}/release`,
                    releaseWhy.value ? { reason: releaseWhy.value } : {},
                  );
                  flash('Released: it is sent de-identified (and verified) now');
                  await refresh();
                } catch (ex) {
                  flash(`Release: ${ex.message}`, 'error');
                }
              },
            },
            'Release',
          );
    const releaseWhy = h('input', { name: 'release-reason', id: 'release-reason', placeholder: 'why it may go (audited)', size: 40 });
    root.append(
      h('h2', {}, `Excluded instances (${excluded.length})`),
      h('p', { class: 'muted' }, 'Kept back from a de-identified delivery. Look at the instance before releasing it.'),
      h('label', {}, 'Release reason', releaseWhy),
      table(
        [
          { label: 'Series', value: (e) => e.seriesDescription ?? '' },
          { label: 'SOP class', value: (e) => h('code', {}, e.sopClassUid) },
          { label: 'Instance', value: (e) => h('code', {}, e.sopInstanceUid) },
          { label: 'Reason', value: (e) => h('span', { class: 'pill bad' }, e.reason) },
          { label: 'Detail', value: (e) => e.detail ?? '' },
          { label: 'Destination', value: (e) => e.destinationId },
          { label: '', value: release },
        ],
        excluded,
        { testid: 'excluded' },
      ),
    );
  }
  root.append(h('h2', {}, 'Primary report'), showPrimary, primary);
  root.append(
    h('h2', {}, 'Timeline'),
    table(
      [
        { label: 'When', value: (e) => fmt.time(e.at) },
        { label: 'What', value: (e) => h('span', { 'data-kind': e.kind }, e.title) },
        { label: 'By', value: (e) => e.actor ?? '' },
        { label: 'Details', value: (e) => (e.details ? h('code', {}, JSON.stringify(e.details)) : '') },
      ],
      timeline.items,
      { testid: 'timeline' },
    ),
  );
  return root;
}

/** The patient's prior studies fetched from the hospital PACS for this case; a failure is shown, never hidden. */
function priorsSection(c, reader) {
  const priors = c.priors || [];
  return h(
    'div',
    { 'data-testid': 'priors' },
    h('h2', {}, `Priors (${priors.length})`),
    priors.length === 0
      ? h('p', { class: 'muted' }, 'No prior study was found for this case (or priors are off: see the audit).')
      : table(
          [
            { label: 'Study date', value: (p) => (p.studyDate ? `${p.studyDate.slice(0, 4)}-${p.studyDate.slice(4, 6)}-${p.studyDate.slice(6, 8)}` : '') },
            { label: 'Modalities', value: (p) => (p.modalities || []).join(', ') },
            { label: 'Description', value: (p) => p.studyDescription ?? '' },
            {
              label: 'Study',
              value: (p) =>
                p.studyInstanceUid
                  ? reader
                    ? h('code', {}, p.studyInstanceUid)
                    : h('a', { href: `#/studies/${encodeURIComponent(p.studyInstanceUid)}` }, h('code', {}, p.studyInstanceUid))
                  : '–',
            },
            { label: 'State', value: (p) => h('span', { class: p.state === 'failed' ? 'pill bad' : 'pill', 'data-k': 'prior-state' }, p.state) },
            { label: 'Report', value: (p) => (p.report ? `report ${p.report.resultStatus}` : '') },
            { label: 'Detail', value: (p) => p.detail ?? '' },
          ],
          priors,
          { testid: 'priors-table' },
        ),
  );
}

/** The write-back line of a case page: a waiting one says what it waits for. */
function writeBackText(w) {
  if (!w) return '–';
  if (w.state === 'waiting') return 'waiting for primary report (the ORU is built and sent once the final report from the RIS is linked)';
  if (w.state === 'cancelled') return 'cancelled: the case was cancelled before it was sent';
  return `${w.state} (${w.attempts} attempts)${w.lastError ? ` – ${w.lastError}` : ''}`;
}

function reportForm(id, done) {
  const text = h('textarea', { name: 'text', rows: 8, required: true, id: 'report-text' });
  const score = h(
    'select',
    { name: 'radpeerScore', id: 'radpeer', required: true },
    h('option', { value: '' }, 'choose…'),
    RADPEER.map(([v, l]) => h('option', { value: v }, l)),
  );
  const out = h('div');
  const form = h(
    'form',
    {
      class: 'panel',
      id: 'report-form',
      onsubmit: async (e) => {
        e.preventDefault();
        try {
          const r = await api('POST', `/cases/${encodeURIComponent(id)}/report`, { text: text.value, radpeerScore: score.value });
          flash(`Report stored (RADPEER ${r.report.radpeerScore}); it is being written back to the RIS.`);
          await done();
        } catch (ex) {
          out.replaceChildren(errorBox(ex));
        }
      },
    },
    h('h2', {}, 'Second report'),
    h('label', {}, 'Report', text),
    h('label', {}, 'RADPEER score', score),
    h('p', {}, h('button', { type: 'submit', id: 'submit-report' }, 'Send report')),
    out,
  );
  return form;
}

/** The current period key of a sampling rule, as src/rules/sampling.ts computes it (UTC). */
function periodKey(d, period) {
  const p = (n) => String(n).padStart(2, '0');
  const y = d.getUTCFullYear();
  const m = d.getUTCMonth();
  if (period === 'day') return `${y}-${p(m + 1)}-${p(d.getUTCDate())}`;
  if (period === 'month') return `${y}-${p(m + 1)}`;
  if (period === 'quarter') return `${y}-Q${Math.floor(m / 3) + 1}`;
  const t = new Date(Date.UTC(y, m, d.getUTCDate()));
  const day = (t.getUTCDay() + 6) % 7;
  t.setUTCDate(t.getUTCDate() - day + 3);
  const firstThursday = new Date(Date.UTC(t.getUTCFullYear(), 0, 4));
  const week = 1 + Math.round(((t - firstThursday) / 86400000 - 3 + ((firstThursday.getUTCDay() + 6) % 7)) / 7);
  return `${t.getUTCFullYear()}-W${p(week)}`;
}

export async function samplingView() {
  const root = h('section', { 'data-testid': 'sampling' }, h('h1', {}, 'Sampling quotas'));
  const [{ items, cells }, rules] = await Promise.all([api('GET', '/sampling'), api('GET', '/rules')]);
  const now = new Date();
  const current = new Map(rules.rules.filter((r) => r.kind === 'sampling').map((r) => [r.id, periodKey(now, r.period)]));
  const onlyCurrent = h('input', { type: 'checkbox', checked: true, id: 'current-only' });
  const out = h('div');
  const draw = () => {
    const rows = items.filter((b) => !onlyCurrent.checked || current.get(b.ruleId) === b.period);
    out.replaceChildren(
      table(
        [
          { label: 'Rule', value: (b) => b.ruleId },
          { label: 'Radiologist', value: (b) => b.radiologistId },
          { label: 'Modality', value: (b) => b.modality },
          { label: 'Period', value: (b) => b.period },
          { label: 'Studies seen', num: true, value: (b) => b.seen },
          { label: 'Selected', num: true, value: (b) => b.selected },
          {
            label: 'Quota',
            value: (b) =>
              b.quota
                ? `${(b.quota.rate * 100).toFixed(1)} %, at least ${b.quota.minimum}${b.quota.maximum !== null ? `, at most ${b.quota.maximum}` : ''}`
                : 'rule removed',
          },
          {
            label: 'Progress',
            value: (b) => {
              if (!b.quota) return '';
              const target = Math.min(b.quota.maximum ?? Infinity, Math.max(b.quota.minimum, Math.ceil(b.quota.rate * b.seen)));
              const bar = h('span');
              bar.style.width = `${target === 0 ? 100 : Math.min(100, (b.selected / target) * 100)}%`;
              return h('div', {}, h('div', { class: 'bar' }, bar), h('span', { class: 'muted' }, `${b.selected} of ${target}`));
            },
          },
        ],
        rows,
        { empty: 'no sampling counts for this period yet' },
      ),
      h('h2', {}, 'Estimates per cell (Wilson interval) and draw probability'),
      samplingCellsTable(cells.filter((c) => !onlyCurrent.checked || current.get(c.ruleId) === c.period)),
    );
  };
  onlyCurrent.addEventListener('change', draw);
  root.append(
    h('p', { class: 'muted' }, `Current periods: ${[...current].map(([id, k]) => `${id} ${k}`).join(', ') || 'no sampling rule'}`),
    h('label', { class: 'row' }, h('span', {}, onlyCurrent, ' current period only')),
    out,
  );
  draw();
  return root;
}

export async function attentionView() {
  const root = h('section', { 'data-testid': 'attention' }, h('h1', {}, 'Held messages and dead letters'));
  const held = h('div');
  const dead = h('div');
  const load = async () => {
    const [messages, deadDeliveries, heldDeliveries] = await Promise.all([
      api('GET', '/messages?status=held'),
      api('GET', '/deliveries?state=dead'),
      api('GET', '/deliveries?state=held'),
    ]);
    held.replaceChildren(
      table(
        [
          { label: 'Received', value: (m) => fmt.time(m.receivedAt) },
          { label: 'Type', value: (m) => m.type },
          { label: 'From', value: (m) => `${m.sendingApplication}/${m.sendingFacility}` },
          { label: 'Control id', value: (m) => m.controlId },
          { label: 'Accession', value: (m) => m.accessionNumber ?? '' },
          { label: 'Reason', value: (m) => m.reason ?? '' },
          {
            label: 'Action',
            value: (m) => {
              const why = h('input', { placeholder: 'why (required)', size: 18 });
              return h(
                'span',
                {},
                why,
                h(
                  'button',
                  {
                    type: 'button',
                    class: 'secondary',
                    onclick: async () => {
                      try {
                        await api('POST', `/messages/${encodeURIComponent(m.id)}/dismiss`, { reason: why.value });
                        flash('message dismissed');
                        await load();
                      } catch (e) {
                        flash(e.message, 'error');
                      }
                    },
                  },
                  'Dismiss',
                ),
              );
            },
          },
        ],
        messages.items,
        { testid: 'held-messages', empty: 'no held messages' },
      ),
    );
    dead.replaceChildren(
      table(
        [
          { label: 'Case', value: (d) => h('a', { href: `#/cases/${encodeURIComponent(d.caseId)}` }, d.caseId) },
          { label: 'Destination', value: (d) => d.destinationId },
          { label: 'State', value: (d) => h('span', { class: 'pill bad' }, d.state) },
          { label: 'Attempts', num: true, value: (d) => d.attempts },
          { label: 'Reason', value: (d) => d.lastError ?? '' },
          { label: 'Since', value: (d) => fmt.time(d.updatedAt) },
          {
            label: 'Action',
            value: (d) =>
              h(
                'button',
                {
                  type: 'button',
                  onclick: async () => {
                    try {
                      await api('POST', `/cases/${encodeURIComponent(d.caseId)}/retry`);
                      flash('delivery queued again');
                      await load();
                    } catch (e) {
                      flash(e.message, 'error');
                    }
                  },
                },
                'Retry',
              ),
          },
        ],
        [...deadDeliveries.items, ...heldDeliveries.items],
        { testid: 'dead-letters', empty: 'no dead letters' },
      ),
    );
  };
  root.append(h('h2', {}, 'Held HL7 messages'), held, h('h2', {}, 'Dead and held deliveries'), dead);
  await load();
  return root;
}

export async function auditView() {
  const root = h('section', { 'data-testid': 'audit' }, h('h1', {}, 'Audit log'));
  const out = h('div');
  const form = h(
    'form',
    { class: 'filters' },
    h('label', {}, 'Action', h('input', { name: 'action', size: 22, placeholder: 'e.g. case.viewed' })),
    h('label', {}, 'Actor', h('input', { name: 'actor', size: 12 })),
    h(
      'label',
      {},
      'Entity type',
      h(
        'select',
        { name: 'entityType' },
        ['', 'case', 'rule-set', 'hl7-message', 'auth'].map((v) => h('option', { value: v }, v || 'any')),
      ),
    ),
    h('label', {}, 'Entity id', h('input', { name: 'entityId', size: 16 })),
    h('label', {}, 'From', h('input', { name: 'from', type: 'datetime-local' })),
    h('label', {}, 'To', h('input', { name: 'to', type: 'datetime-local' })),
    h('button', { type: 'submit' }, 'Search'),
  );
  const load = async () => {
    const q = new URLSearchParams({ limit: '500' });
    for (const [k, v] of new FormData(form)) if (v) q.set(k, k === 'from' || k === 'to' ? isoFromInput(v) : String(v));
    try {
      const { items } = await api('GET', `/audit?${q}`);
      out.replaceChildren(
        table(
          [
            { label: 'When', value: (a) => fmt.time(a.at) },
            { label: 'Actor', value: (a) => a.actor },
            { label: 'Action', value: (a) => a.action },
            {
              label: 'Entity',
              value: (a) =>
                a.entityType === 'case' && a.entityId
                  ? h('a', { href: `#/cases/${encodeURIComponent(a.entityId)}` }, `case ${a.entityId}`)
                  : `${a.entityType} ${a.entityId ?? ''}`,
            },
            { label: 'Details', value: (a) => (a.details ? h('code', {}, JSON.stringify(a.details)) : '') },
          ],
          items,
          { testid: 'audit-table' },
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
  root.append(form, out);
  await load();
  return root;
}

// Several gateways on one PostgreSQL: who is alive and what each holds (GET /api/instances).
export async function instancesView() {
  const root = h('section', { 'data-testid': 'instances' }, h('h1', {}, 'Gateway instances'));
  const { items } = await api('GET', '/instances');
  const claimsOf = (i) => [
    ...i.claims.leases.map((l) => `lease ${l.name} until ${fmt.time(l.expiresAt)}${l.expired ? ' (expired)' : ''}`),
    ...i.claims.deliveries.map(
      (d) => `delivery ${d.id} of case ${d.caseId} to ${d.destinationId}: ${d.instancesSent}/${d.instancesTotal}${d.expired ? ' (lease expired)' : ''}`,
    ),
    ...i.claims.outbound.map((m) => `${m.kind} ${m.id} of case ${m.caseId}, attempt ${m.attempts}${m.expired ? ' (lease expired)' : ''}`),
  ];
  root.append(
    h(
      'p',
      { class: 'muted' },
      "An instance is alive while its heartbeat is younger than forwarding.leaseSeconds and it has not stopped; a dead instance's claims are taken over when their leases expire.",
    ),
    table(
      [
        { label: 'Instance', value: (i) => `${i.instanceId}${i.self ? ' (this one)' : ''}` },
        { label: 'Host / pid', value: (i) => `${i.host} / ${i.pid}` },
        {
          label: 'State',
          value: (i) => h('span', { class: i.alive ? 'pill good' : 'pill bad' }, i.alive ? 'alive' : i.stoppedAt ? 'stopped' : 'not responding'),
        },
        { label: 'Started', value: (i) => fmt.time(i.startedAt) },
        { label: 'Heartbeat', value: (i) => fmt.time(i.heartbeatAt) },
        {
          label: 'Claims',
          value: (i) => {
            const c = claimsOf(i);
            return c.length === 0 ? h('span', { class: 'muted' }, 'none') : h('div', {}, ...c.map((x) => h('div', {}, x)));
          },
        },
      ],
      items,
      { testid: 'instances-table', empty: 'no instance has registered' },
    ),
  );
  return root;
}
