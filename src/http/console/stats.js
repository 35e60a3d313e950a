// Statistics: second reads and discordance (RADPEER 2+ and 2b+) per first reader and modality,
// turnaround percentiles, over time; each table exportable as CSV from the server.
import { api, dateInput, download, errorBox, fmt, h, isoFromInput, table } from './lib.js';

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
        { type: 'line', label: 'discordance 2+ (%)', data: groups.map((g) => (g.discordanceRate ?? 0) * 100), borderColor: COLORS.d2, backgroundColor: COLORS.d2, yAxisID: 'rate' },
        { type: 'line', label: 'discordance 2b+ (%)', data: groups.map((g) => (g.significantRate ?? 0) * 100), borderColor: COLORS.d2b, backgroundColor: COLORS.d2b, yAxisID: 'rate' },
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
  { label: 'Turnaround p50 / p90 / p95 (h)', num: true, value: (g) => `${fmt.num(g.turnaroundHours.p50)} / ${fmt.num(g.turnaroundHours.p90)} / ${fmt.num(g.turnaroundHours.p95)}` },
];

export async function statsView() {
  const root = h('section', { 'data-testid': 'stats' }, h('h1', {}, 'Statistics'));
  const now = new Date();
  const from = h('input', { type: 'date', name: 'from', value: dateInput(new Date(now.getTime() - 30 * 86400000)) });
  const to = h('input', { type: 'date', name: 'to', value: dateInput(new Date(now.getTime() + 86400000)) });
  const bucket = h('select', { name: 'bucket' }, h('option', { value: 'day' }, 'per day'), h('option', { value: 'week' }, 'per week'));
  const out = h('div');
  const query = (extra = {}) => {
    const q = new URLSearchParams({ bucket: bucket.value, ...extra });
    const f = isoFromInput(from.value);
    const t = isoFromInput(to.value);
    if (f) q.set('from', f);
    if (t) q.set('to', t);
    return q;
  };
  const csv = (tableName, label) => h('button', { type: 'button', class: 'secondary', 'data-csv': tableName, onclick: () => download(`/stats?${query({ format: 'csv', table: tableName })}`, `${tableName}.csv`).catch((e) => out.prepend(errorBox(e))) }, `CSV: ${label}`);
  const load = async () => {
    let s;
    try {
      s = await api('GET', `/stats?${query()}`);
    } catch (e) {
      return out.replaceChildren(errorBox(e));
    }
    const t = s.totals;
    out.replaceChildren(
      h('div', { class: 'cards' },
        h('div', { class: 'card' }, h('div', { class: 'label' }, 'Second reads'), h('div', { class: 'value', 'data-k': 'secondReads' }, String(t.secondReads))),
        h('div', { class: 'card' }, h('div', { class: 'label' }, 'Discordance RADPEER 2+'), h('div', { class: 'value' }, fmt.pct(t.discordanceRate))),
        h('div', { class: 'card' }, h('div', { class: 'label' }, 'Discordance RADPEER 2b+'), h('div', { class: 'value' }, fmt.pct(t.significantRate))),
        h('div', { class: 'card' }, h('div', { class: 'label' }, 'Read turnaround p50 / p90 (h)'), h('div', { class: 'value' }, `${fmt.num(t.turnaroundHours.p50)} / ${fmt.num(t.turnaroundHours.p90)}`)),
        h('div', { class: 'card' }, h('div', { class: 'label' }, 'To write-back p50 / p90 (h)'), h('div', { class: 'value' }, `${fmt.num(s.writeBackTurnaroundHours.p50)} / ${fmt.num(s.writeBackTurnaroundHours.p90)}`))),
      h('div', { class: 'grid2' },
        h('div', { class: 'panel' }, h('h2', {}, 'Per first reader (radiologist reviewed)'), readsAndRates('chart-radiologist', s.byRadiologist, (g) => g.radiologistId)),
        h('div', { class: 'panel' }, h('h2', {}, 'Per modality'), readsAndRates('chart-modality', s.byModality, (g) => g.modality)),
        h('div', { class: 'panel' }, h('h2', {}, `Over time (${s.bucket})`), readsAndRates('chart-time', s.overTime, (g) => g.start.slice(0, 10))),
        h('div', { class: 'panel' }, h('h2', {}, 'Turnaround percentiles (hours)'), chart('chart-turnaround', {
          type: 'bar',
          data: {
            labels: ['case to second report', 'case to write-back'],
            datasets: ['p50', 'p90', 'p95'].map((p) => ({ label: p, backgroundColor: COLORS[p], data: [t.turnaroundHours[p] ?? 0, s.writeBackTurnaroundHours[p] ?? 0] })),
          },
          options: { scales: { y: { beginAtZero: true } } },
        }))),
      h('h2', {}, 'Per radiologist and modality'), csv('radiologist-modality', 'radiologist × modality'),
      table(groupColumns([{ label: 'Radiologist', value: (g) => g.radiologistId }, { label: 'Modality', value: (g) => g.modality }]), s.byRadiologistModality, { testid: 'stats-table' }),
      h('h2', {}, 'Per second reader'), csv('reader', 'second readers'),
      table(groupColumns([{ label: 'Second reader', value: (g) => g.readerId }]), s.byReader),
      h('p', {}, csv('radiologist', 'per radiologist'), ' ', csv('modality', 'per modality'), ' ', csv('over-time', 'over time')),
    );
  };
  const form = h('form', { class: 'filters', onsubmit: (e) => { e.preventDefault(); load(); } }, h('label', {}, 'From', from), h('label', {}, 'To', to), h('label', {}, 'Buckets', bucket), h('button', { type: 'submit' }, 'Show'));
  root.append(form, out);
  await load();
  return root;
}
