// Rule editor: YAML (or JSON) text, validation errors inline with their line, a dry run over a chosen
// period before saving, and the version history with line diffs.
import YAML from '/console/vendor/yaml/index.js';
import { api, dateInput, errorBox, flash, fmt, h, isoFromInput, table } from './lib.js';

const toYaml = (rules) => YAML.stringify({ rules }, { lineWidth: 0 });

/** `rules[3].when.modality` -> ['rules', 3, 'when', 'modality'] */
function pathSegments(p) {
  return String(p).split(/\.|\[(\d+)\]/).filter((s) => s !== undefined && s !== '').map((s) => (/^\d+$/.test(s) ? Number(s) : s));
}

/** The 1-based line of a validation error's path in the editor's YAML, if it can be found. */
function lineOf(text, path) {
  try {
    const lineCounter = new YAML.LineCounter();
    const doc = YAML.parseDocument(text, { lineCounter });
    let segs = pathSegments(path);
    if (YAML.isSeq(doc.contents) && segs[0] === 'rules') segs = segs.slice(1);
    // The deepest node that exists: an unknown key's parent, a missing field's rule.
    while (segs.length > 0) {
      const node = doc.getIn(segs, true);
      if (node && node.range) return lineCounter.linePos(node.range[0]).line;
      segs = segs.slice(0, -1);
    }
  } catch { /* no line then */ }
  return undefined;
}

/** Line diff (LCS), enough for rule sets of a few hundred lines. */
export function diffLines(a, b) {
  const x = a.split('\n');
  const y = b.split('\n');
  const n = x.length;
  const m = y.length;
  const dp = Array.from({ length: n + 1 }, () => new Int32Array(m + 1));
  for (let i = n - 1; i >= 0; i--) for (let j = m - 1; j >= 0; j--) dp[i][j] = x[i] === y[j] ? dp[i + 1][j + 1] + 1 : Math.max(dp[i + 1][j], dp[i][j + 1]);
  const out = [];
  let i = 0;
  let j = 0;
  while (i < n && j < m) {
    if (x[i] === y[j]) { out.push([' ', x[i]]); i++; j++; } else if (dp[i + 1][j] >= dp[i][j + 1]) out.push(['-', x[i++]]); else out.push(['+', y[j++]]);
  }
  while (i < n) out.push(['-', x[i++]]);
  while (j < m) out.push(['+', y[j++]]);
  return out;
}

function diffView(a, b) {
  const lines = diffLines(a, b);
  if (!lines.some(([k]) => k !== ' ')) return h('p', { class: 'muted' }, 'no difference');
  return h('pre', { class: 'diff', 'data-testid': 'diff' }, lines.map(([k, t]) => h('span', { class: k === '+' ? 'add' : k === '-' ? 'del' : undefined }, `${k} ${t}\n`)));
}

export async function rulesView() {
  const root = h('section', { 'data-testid': 'rules' });
  const active = await api('GET', '/rules');
  const editor = h('textarea', { class: 'code', id: 'rules-text', spellcheck: 'false' });
  editor.value = toYaml(active.rules);
  const now = new Date();
  const from = h('input', { type: 'date', id: 'dry-from', value: dateInput(new Date(now.getTime() - 30 * 86400000)) });
  const to = h('input', { type: 'date', id: 'dry-to', value: dateInput(new Date(now.getTime() + 86400000)) });
  const comment = h('input', { id: 'rules-comment', size: 40, placeholder: 'what changed and why' });
  const errors = h('div', { id: 'rules-errors', 'data-testid': 'rules-errors' });
  const preview = h('div', { id: 'dry-run', 'data-testid': 'dry-run' });
  const status = h('p', { class: 'muted', 'data-k': 'version' }, `Active version ${active.version}, ${fmt.time(active.createdAt)} by ${active.createdBy}`);
  const save = h('button', { type: 'button', id: 'save-rules', disabled: true }, 'Save as new version');
  let previewedText = null;

  const parse = () => {
    const text = editor.value;
    const doc = YAML.parseDocument(text, { prettyErrors: true });
    if (doc.errors.length > 0) {
      errors.replaceChildren(h('div', { class: 'error' }, 'The text is not valid YAML:', h('ul', { class: 'errors' }, doc.errors.map((e) => h('li', {}, `line ${e.linePos?.[0]?.line ?? '?'}: ${e.message.split('\n')[0]}`)))));
      return undefined;
    }
    const value = doc.toJS();
    return Array.isArray(value) ? value : value && typeof value === 'object' && 'rules' in value ? value.rules : value;
  };
  const showServerErrors = (e) => {
    const list = e.details?.errors || [];
    if (list.length === 0) return errors.replaceChildren(errorBox(e));
    errors.replaceChildren(h('div', { class: 'error' }, `${e.message}:`, h('ul', { class: 'errors' }, list.map((x) => {
      const line = lineOf(editor.value, x.path);
      return h('li', { 'data-path': x.path }, `${line ? `line ${line}, ` : ''}${x.path}: ${x.message}`);
    }))));
  };

  const dryRun = h('button', { type: 'button', id: 'dry-run-button' }, 'Validate and preview');
  dryRun.addEventListener('click', async () => {
    errors.replaceChildren();
    preview.replaceChildren();
    save.disabled = true;
    const rules = parse();
    if (rules === undefined) return;
    try {
      const r = await api('POST', '/rules/dry-run', { rules, from: isoFromInput(from.value), to: isoFromInput(to.value) });
      previewedText = editor.value;
      save.disabled = false;
      preview.replaceChildren(
        h('div', { class: 'ok' }, h('span', { 'data-k': 'dry-flagged' }, String(r.flagged)), ` of ${r.evaluated} studies received in the period would be flagged (${r.ruleCount} rules, ${r.elapsedMs} ms). Nothing was changed.`),
        h('p', {}, Object.entries(r.byRule).map(([k, v]) => h('span', { class: 'pill' }, `${k}: ${v}`)), ' '),
        table([
          { label: 'Accession', value: (i) => i.accessionNumber ?? '' },
          { label: 'Modalities', value: (i) => i.modalities.join(', ') },
          { label: 'Radiologist', value: (i) => i.radiologistId ?? '' },
          { label: 'Priority', value: (i) => i.priority ?? '' },
          { label: 'Reasons', value: (i) => i.reasons.map((x) => `${x.ruleId}: ${x.detail ?? x.kind}`).join('; ') },
        ], r.items, { testid: 'dry-run-items', empty: 'no study would be flagged' }),
        r.truncated ? h('p', { class: 'muted' }, 'list truncated') : null,
      );
    } catch (e) {
      showServerErrors(e);
    }
  });
  editor.addEventListener('input', () => {
    if (editor.value !== previewedText) save.disabled = true;
  });
  save.addEventListener('click', async () => {
    if (editor.value !== previewedText) return;
    const rules = parse();
    if (rules === undefined) return;
    try {
      const r = await api('PUT', '/rules', { rules, comment: comment.value || undefined });
      status.textContent = r.created ? `Saved: version ${r.version}` : `No change: version ${r.version} stays active`;
      status.className = 'ok';
      flash(status.textContent);
      save.disabled = true;
      await drawHistory();
    } catch (e) {
      showServerErrors(e);
    }
  });

  const history = h('div', { 'data-testid': 'history' });
  const diffOut = h('div');
  const drawHistory = async () => {
    const { items } = await api('GET', '/rules/versions');
    history.replaceChildren(table([
      { label: 'Version', num: true, value: (v) => v.version },
      { label: 'When', value: (v) => fmt.time(v.createdAt) },
      { label: 'By', value: (v) => v.createdBy },
      { label: 'Source', value: (v) => v.source },
      { label: 'Comment', value: (v) => v.comment ?? '' },
      { label: '', value: (v) => h('span', {},
        v.version > 1 ? h('button', { type: 'button', class: 'secondary', 'data-diff': v.version, onclick: async () => {
          const [a, b] = await Promise.all([api('GET', `/rules/versions/${v.version - 1}`), api('GET', `/rules/versions/${v.version}`)]);
          diffOut.replaceChildren(h('h2', {}, `Changes from version ${v.version - 1} to ${v.version}`), diffView(toYaml(a.rules), toYaml(b.rules)));
        } }, `diff with ${v.version - 1}`) : null,
        h('button', { type: 'button', class: 'secondary', onclick: async () => {
          const x = await api('GET', `/rules/versions/${v.version}`);
          editor.value = toYaml(x.rules);
          save.disabled = true;
          flash(`version ${v.version} loaded into the editor; preview, then save to make it active again`);
        } }, 'load')) },
    ], items));
  };
  await drawHistory();

  root.append(
    h('h1', {}, 'Rules'), status,
    h('p', { class: 'muted' }, 'Edit the rule set as YAML (a JSON list works too). Validate and preview it over stored studies, then save: every save is a new, audited version.'),
    editor, errors,
    h('div', { class: 'row' }, h('label', {}, 'Preview studies received from', from), h('label', {}, 'to', to), dryRun, h('label', {}, 'Comment', comment), save),
    preview,
    h('h2', {}, 'Version history'), history, diffOut);
  return root;
}
