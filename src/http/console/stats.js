// Statistics: second reads and discordance (RADPEER 2+ and 2b+) per first reader and modality,
// turnaround percentiles, over time; each table exportable as CSV from the server.
import { api, dateInput, download, errorBox, fmt, h, isoFromInput, table } from './lib.js';

/** A duration given in hours, in the unit that reads right: seconds, minutes, hours or days. */
export function duration(hours) {
  if (hours === null || hours === undefined) return '–';
  const sec = hours * 3600;
  if (sec < 90) return `${Math.round(sec)} s`;
  if (sec < 90 * 60) return `${Math.round(sec / 60)} min`;
  if (hours < 48) return `${hours.toFixed(1)} h`;
  return `${(hours / 24).toFixed(1)} d`;
}

/** The unit a chart of durations (given in hours) reads right in, chosen from its largest value. */
export function durationUnit(maxHours) {
  const sec = (maxHours ?? 0) * 3600;
  if (sec < 90) return { label: 'seconds', perHour: 3600 };
  if (sec < 90 * 60) return { label: 'minutes', perHour: 60 };
  if (maxHours < 48) return { label: 'hours', perHour: 1 };
  return { label: 'days', perHour: 1 / 24 };
}

const durations = (p) => `${duration(p.p50)} / ${duration(p.p90)} / ${duration(p.p95)}`;
const interval = (lo, hi) => (lo === null || lo === undefined ? '' : ` (95 % CI ${fmt.pct(lo)}–${fmt.pct(hi)})`);

/** Sampling cells with their estimate, interval and draw probability (GET /api/sampling `cells`). */
export function samplingCellsTable(cells, o = {}) {
  return table(
    [
      { label: 'Rule', value: (c) => `${c.ruleId}${c.mode === 'precision' ? ` (±${(c.targetHalfWidth * 100).toFixed(1)} pts)` : ''}` },
      { label: 'Radiologist', value: (c) => h('a', { href: `#/stats/${encodeURIComponent(c.radiologist)}` }, c.radiologist) },
      { label: 'Modality', value: (c) => c.modality },
      { label: 'Period', value: (c) => c.period },
      { label: 'Seen', num: true, value: (c) => c.seen },
      { label: 'Drawn', num: true, value: (c) => c.selected },
      { label: 'Reviewed', num: true, value: (c) => `${c.reviewed}${c.needed !== null ? ` of ${c.needed} needed` : ''}` },
      { label: 'RADPEER 2+', num: true, value: (c) => (c.rate === null ? '–' : `${fmt.pct(c.rate)}${interval(c.ciLow, c.ciHigh)}`) },
      { label: 'Draw probability', num: true, value: (c) => fmt.pct(c.drawProbability) },
    ],
    cells,
    { testid: o.testid ?? 'sampling-cells', empty: 'no sampling cells yet' },
  );
}

const COLORS = { reads: '#1f5fa8', d2: '#d08700', d2b: '#b3261e', p50: '#1f5fa8', p90: '#d08700', p95: '#b3261e' };

function chart(id, config) {
  const canvas = h('canvas', { id, 'data-testid': id });
  const box = h('div', { class: 'chart-box' }, canvas);
  // Drawn once the canvas is in the page (Chart.js measures its parent).
  requestAnimationFrame(() => {
    if (!window.Chart) return box.replaceChildren(h('p', { class: 'error' }, 'chart library not loaded'));
    new window.Chart(canvas, { ...config, options: { responsive: true, maintainAspectRatio: false, animation: false, ...config.options } });
  });
  return box;
}

function readsAndRates(id, groups, labelOf) {
  return chart(id, {
    data: {
      labels: groups.map(labelOf),
      datasets: [
        { type: 'bar', label: 'second reads', data: groups.map((g) => g.secondReads), backgroundColor: COLORS.reads, yAxisID: 'y' },
        {
          type: 'line',
          label: 'discordance 2+ (%)',
          data: groups.map((g) => (g.discordanceRate ?? 0) * 100),
          borderColor: COLORS.d2,
          backgroundColor: COLORS.d2,
          yAxisID: 'rate',
        },
        {
          type: 'line',
          label: 'discordance 2b+ (%)',
          data: groups.map((g) => (g.significantRate ?? 0) * 100),
          borderColor: COLORS.d2b,
          backgroundColor: COLORS.d2b,
          yAxisID: 'rate',
        },
      ],
    },
    options: {
      scales: {
        y: { beginAtZero: true, title: { display: true, text: 'second reads' }, ticks: { precision: 0 } },
        rate: { beginAtZero: true, position: 'right', suggestedMax: 20, title: { display: true, text: '%' }, grid: { drawOnChartArea: false } },
      },
    },
  });
}

const groupColumns = (first) => [
  ...first,
  { label: 'Second reads', num: true, value: (g) => g.secondReads },
  { label: 'RADPEER 2+', num: true, value: (g) => `${g.discordant} (${fmt.pct(g.discordanceRate)})` },
  { label: 'RADPEER 2b+', num: true, value: (g) => `${g.significant} (${fmt.pct(g.significantRate)})` },
  {
    label: 'Weighted 2+ (enrichment corrected)',
    num: true,
    value: (g) => `${fmt.pct(g.weightedDiscordanceRate)}${interval(g.discordanceCiLow, g.discordanceCiHigh)}`,
  },
  { label: 'Turnaround p50 / p90 / p95', num: true, value: (g) => durations(g.turnaroundHours) },
];

const radiologistLink = (g) =>
  g.radiologistId && g.radiologistId !== '(unknown)'
    ? h('a', { href: `#/stats/${encodeURIComponent(g.radiologistId)}`, 'data-radiologist': g.radiologistId }, g.radiologistId)
    : g.radiologistId;

export async function statsView() {
  // #/stats/<radiologist>: one first reader's page.
  const radiologist = decodeURIComponent(location.hash.replace(/^#\/?/, '').split('/')[1] || '') || undefined;
  const root = h(
    'section',
    { 'data-testid': radiologist ? 'stats-radiologist' : 'stats' },
    h('h1', {}, radiologist ? `Statistics: ${radiologist}` : 'Statistics'),
    radiologist ? h('p', {}, h('a', { href: '#/stats' }, '← all radiologists')) : null,
  );
  const now = new Date();
  const from = h('input', { type: 'date', name: 'from', value: dateInput(new Date(now.getTime() - 30 * 86400000)) });
  const to = h('input', { type: 'date', name: 'to', value: dateInput(new Date(now.getTime() + 86400000)) });
  const bucket = h('select', { name: 'bucket' }, h('option', { value: 'day' }, 'per day'), h('option', { value: 'week' }, 'per week'));
  const out = h('div');
  const query = (extra = {}) => {
    const q = new URLSearchParams({ bucket: bucket.value, ...extra });
    if (radiologist) q.set('radiologist', radiologist);
    const f = isoFromInput(from.value);
    const t = isoFromInput(to.value);
    if (f) q.set('from', f);
    if (t) q.set('to', t);
    return q;
  };
  const csv = (tableName, label) =>
    h(
      'button',
      {
        type: 'button',
        class: 'secondary',
        'data-csv': tableName,
        onclick: () => download(`/stats?${query({ format: 'csv', table: tableName })}`, `${tableName}.csv`).catch((e) => out.prepend(errorBox(e))),
      },
      `CSV: ${label}`,
    );
  const load = async () => {
    let s;
    let cells = [];
    try {
      s = await api('GET', `/stats?${query()}`);
      if (radiologist) cells = (await api('GET', '/sampling')).cells.filter((c) => c.radiologist === radiologist);
    } catch (e) {
      return out.replaceChildren(errorBox(e));
    }
    if (radiologist) {
      const t = s.totals;
      out.replaceChildren(
        h(
          'div',
          { class: 'cards' },
          h(
            'div',
            { class: 'card' },
            h('div', { class: 'label' }, 'Second reads'),
            h('div', { class: 'value', 'data-k': 'secondReads' }, String(t.secondReads)),
          ),
          h(
            'div',
            { class: 'card' },
            h('div', { class: 'label' }, 'RADPEER 2+ (weighted)'),
            h('div', { class: 'value', 'data-k': 'weighted' }, fmt.pct(t.weightedDiscordanceRate)),
            h('div', { class: 'label', 'data-k': 'interval' }, interval(t.discordanceCiLow, t.discordanceCiHigh).trim()),
          ),
          h('div', { class: 'card' }, h('div', { class: 'label' }, 'RADPEER 2+ (as read)'), h('div', { class: 'value' }, fmt.pct(t.discordanceRate))),
          h(
            'div',
            { class: 'card' },
            h('div', { class: 'label' }, 'Read turnaround p50 / p90'),
            h('div', { class: 'value', 'data-k': 'turnaround' }, `${duration(t.turnaroundHours.p50)} / ${duration(t.turnaroundHours.p90)}`),
          ),
        ),
        h('h2', {}, 'Per modality'),
        table(groupColumns([{ label: 'Modality', value: (g) => g.modality }]), s.byModality, { testid: 'stats-table' }),
        h('h2', {}, 'Sampling cells'),
        samplingCellsTable(cells),
        h('h2', {}, 'Why the second reads were done'),
        enrichmentTable(s.enrichment),
        h('p', {}, csv('peer-review', 'peer-review data (one row per second read)')),
      );
      return;
    }
    const t = s.totals;
    out.replaceChildren(
      h(
        'div',
        { class: 'cards' },
        h('div', { class: 'card' }, h('div', { class: 'label' }, 'Second reads'), h('div', { class: 'value', 'data-k': 'secondReads' }, String(t.secondReads))),
        h('div', { class: 'card' }, h('div', { class: 'label' }, 'Discordance RADPEER 2+'), h('div', { class: 'value' }, fmt.pct(t.discordanceRate))),
        h('div', { class: 'card' }, h('div', { class: 'label' }, 'Discordance RADPEER 2b+'), h('div', { class: 'value' }, fmt.pct(t.significantRate))),
        h(
          'div',
          { class: 'card' },
          h('div', { class: 'label' }, 'RADPEER 2+ weighted (enrichment corrected)'),
          h('div', { class: 'value' }, fmt.pct(t.weightedDiscordanceRate)),
        ),
        h(
          'div',
          { class: 'card' },
          h('div', { class: 'label' }, 'Read turnaround p50 / p90'),
          h('div', { class: 'value', 'data-k': 'turnaround' }, `${duration(t.turnaroundHours.p50)} / ${duration(t.turnaroundHours.p90)}`),
        ),
        h(
          'div',
          { class: 'card' },
          h('div', { class: 'label' }, 'To write-back p50 / p90'),
          h('div', { class: 'value' }, `${duration(s.writeBackTurnaroundHours.p50)} / ${duration(s.writeBackTurnaroundHours.p90)}`),
        ),
      ),
      h(
        'div',
        { class: 'grid2' },
        h(
          'div',
          { class: 'panel' },
          h('h2', {}, 'Per first reader (radiologist reviewed)'),
          readsAndRates('chart-radiologist', s.byRadiologist, (g) => g.radiologistId),
        ),
        h(
          'div',
          { class: 'panel' },
          h('h2', {}, 'Per modality'),
          readsAndRates('chart-modality', s.byModality, (g) => g.modality),
        ),
        h(
          'div',
          { class: 'panel' },
          h('h2', {}, `Over time (${s.bucket})`),
          readsAndRates('chart-time', s.overTime, (g) => g.start.slice(0, 10)),
        ),
        turnaroundPanel(t.turnaroundHours, s.writeBackTurnaroundHours),
      ),
      h('h2', {}, 'Per radiologist and modality'),
      csv('radiologist-modality', 'radiologist × modality'),
      table(
        groupColumns([
          { label: 'Radiologist', value: radiologistLink },
          { label: 'Modality', value: (g) => g.modality },
        ]),
        s.byRadiologistModality,
        { testid: 'stats-table' },
      ),
      h('h2', {}, 'Why the second reads were done (inverse-probability weights)'),
      enrichmentTable(s.enrichment),
      h('h2', {}, 'Arbitration and inter-reader agreement'),
      agreementPanel(s),
      h('h2', {}, 'Per second reader'),
      csv('reader', 'second readers'),
      table(groupColumns([{ label: 'Second reader', value: (g) => g.readerId }]), s.byReader),
      h(
        'p',
        {},
        csv('radiologist', 'per radiologist'),
        ' ',
        csv('modality', 'per modality'),
        ' ',
        csv('over-time', 'over time'),
        ' ',
        csv('peer-review', 'peer-review data (one row per second read)'),
      ),
    );
  };
  const form = h(
    'form',
    {
      class: 'filters',
      onsubmit: (e) => {
        e.preventDefault();
        load();
      },
    },
    h('label', {}, 'From', from),
    h('label', {}, 'To', to),
    h('label', {}, 'Buckets', bucket),
    h('button', { type: 'submit' }, 'Show'),
  );
  root.append(form, out);
  await load();
  return root;
}

/** Turnaround percentiles in one unit for both bars, the one that fits the largest (seconds for a demo, days for a backlog). */
function turnaroundPanel(read, writeBack) {
  const values = ['p50', 'p90', 'p95'].flatMap((p) => [read[p], writeBack[p]]).filter((v) => typeof v === 'number');
  const unit = durationUnit(Math.max(0, ...values));
  const inUnit = (v) => (typeof v === 'number' ? Number((v * unit.perHour).toPrecision(3)) : 0);
  return h(
    'div',
    { class: 'panel' },
    h('h2', {}, `Turnaround percentiles (${unit.label})`),
    chart('chart-turnaround', {
      type: 'bar',
      data: {
        labels: ['case to second report', 'case to write-back'],
        datasets: ['p50', 'p90', 'p95'].map((p) => ({ label: p, backgroundColor: COLORS[p], data: [inUnit(read[p]), inUnit(writeBack[p])] })),
      },
      options: { scales: { y: { beginAtZero: true, title: { display: true, text: unit.label } } } },
    }),
  );
}

function enrichmentTable(rows) {
  return table(
    [
      {
        label: 'Selected by',
        value: (e) => (e.selection === 'sampling' ? 'random sample' : e.selection === 'unknown' ? 'unknown' : `enrichment: ${e.selection}`),
      },
      { label: 'Second reads', num: true, value: (e) => e.secondReads },
      { label: 'Weight (mean, range)', num: true, value: (e) => `${e.meanWeight} (${e.minWeight}–${e.maxWeight})` },
    ],
    rows,
    { testid: 'enrichment', empty: 'no second reads' },
  );
}

/** Arbitrations of the period and Cohen's kappa (RADPEER 1 vs 2+, second reader vs third reader) per reader pair and modality. */
function agreementPanel(s) {
  const a = s.arbitration || { requested: 0, decided: 0, confirmedFirst: 0, confirmedSecond: 0, other: 0, confirmedSecondShare: null };
  const kappa = (k) => (k === null || k === undefined ? 'undefined' : k.toFixed(2));
  const total = s.interReaderAgreementTotal;
  return h(
    'div',
    { 'data-testid': 'agreement' },
    h(
      'div',
      { class: 'cards' },
      h(
        'div',
        { class: 'card' },
        h('div', { class: 'label' }, 'Arbitrations (decided of requested)'),
        h('div', { class: 'value', 'data-k': 'arbitrations' }, `${a.decided} of ${a.requested}`),
      ),
      h(
        'div',
        { class: 'card' },
        h('div', { class: 'label' }, 'Confirmed the second read'),
        h('div', { class: 'value', 'data-k': 'confirmedSecondShare' }, fmt.pct(a.confirmedSecondShare)),
        h('div', { class: 'label' }, `first ${a.confirmedFirst} · second ${a.confirmedSecond} · neither ${a.other}`),
      ),
      h(
        'div',
        { class: 'card' },
        h('div', { class: 'label' }, "Cohen's kappa, all pairs"),
        h('div', { class: 'value', 'data-k': 'kappaTotal' }, total ? kappa(total.kappa) : '–'),
      ),
    ),
    table(
      [
        { label: 'First reader', value: (g) => g.radiologistId ?? '(unknown)' },
        { label: 'Second reader', value: (g) => g.readerId },
        { label: 'Modality', value: (g) => g.modality ?? '(unknown)' },
        { label: 'Arbitrated', num: true, value: (g) => g.n },
        {
          label: '1/1 · 1/2+ · 2+/1 · 2+/2+',
          num: true,
          value: (g) => `${g.table.agreeAgree} · ${g.table.agreeDiscrepant} · ${g.table.discrepantAgree} · ${g.table.discrepantDiscrepant}`,
        },
        { label: 'Observed agreement', num: true, value: (g) => fmt.pct(g.observedAgreement) },
        { label: "Cohen's kappa", num: true, value: (g) => kappa(g.kappa) },
      ],
      s.interReaderAgreement || [],
      { testid: 'agreement-table', empty: 'no decided arbitrations in this period' },
    ),
  );
}
