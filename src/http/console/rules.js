// Rule editor: YAML (or JSON) text, validation errors inline with their line, a dry run over a chosen
// period before saving, and the version history with line diffs.
import YAML from '/console/vendor/yaml/index.js';
import { api, dateInput, errorBox, flash, fmt, h, isoFromInput, table } from './lib.js';

const toYaml = (rules) => YAML.stringify({ rules }, { lineWidth: 0 });

/** `rules[3].when.modality` -> ['rules', 3, 'when', 'modality'] */
function pathSegments(p) {
  return String(p)
    .split(/\.|\[(\d+)\]/)
    .filter((s) => s !== undefined && s !== '')
    .map((s) => (/^\d+$/.test(s) ? Number(s) : s));
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
  } catch {
    /* no line then */
  }
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
    if (x[i] === y[j]) {
      out.push([' ', x[i]]);
      i++;
      j++;
    } else if (dp[i + 1][j] >= dp[i][j + 1]) out.push(['-', x[i++]]);
    else out.push(['+', y[j++]]);
  }
  while (i < n) out.push(['-', x[i++]]);
  while (j < m) out.push(['+', y[j++]]);
  return out;
}

function diffView(a, b) {
  const lines = diffLines(a, b);
  if (!lines.some(([k]) => k !== ' ')) return h('p', { class: 'muted' }, 'no difference');
  return h(
    'pre',
    { class: 'diff', 'data-testid': 'diff' },
    lines.map(([k, t]) => h('span', { class: k === '+' ? 'add' : k === '-' ? 'del' : undefined }, `${k} ${t}\n`)),
  );
}

// ---------------------------------------------------------------------------
// Rule builder: a form per rule kind over the same YAML document the advanced
// editor shows. A form edit changes only the nodes it touches (comments and
// untouched keys stay), so the YAML reads the same after a round trip.

const KINDS = ['oncology', 'discordance', 'sampling', 'high-stakes', 'manual'];
const MODALITIES = ['CT', 'MR', 'CR', 'DX', 'US', 'MG', 'NM', 'PT', 'XA', 'RF'];
const ORDER_PRIORITIES = ['S', 'A', 'R'];
const isObj = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);
const keyOf = (k) => (YAML.isScalar(k) ? k.value : k);

/** Sets `value` at `path` of the document, touching only what differs. */
function applyTo(doc, path, value) {
  const node = path.length === 0 ? doc.contents : doc.getIn(path, true);
  if (value === undefined) {
    doc.deleteIn(path);
    return;
  }
  if (isObj(value) && YAML.isMap(node)) {
    for (const pair of [...node.items]) if (!(keyOf(pair.key) in value)) node.delete(keyOf(pair.key));
    for (const [k, v] of Object.entries(value)) applyTo(doc, [...path, k], v);
    return;
  }
  if (!isObj(value) && !Array.isArray(value) && YAML.isScalar(node)) {
    if (node.value !== value) node.value = value;
    return;
  }
  if (Array.isArray(value) && YAML.isSeq(node)) {
    if (JSON.stringify(node.toJSON()) === JSON.stringify(value)) return;
    if (node.items.length === value.length && value.some(isObj)) {
      value.forEach((v, i) => applyTo(doc, [...path, i], v));
      return;
    }
  }
  doc.setIn(path, doc.createNode(value, { flow: Array.isArray(value) && value.every((x) => !isObj(x)) }));
}

const listText = (v) => (Array.isArray(v) ? v.join(', ') : '');
const listOf = (text) =>
  text
    .split(',')
    .map((x) => x.trim())
    .filter((x) => x !== '');

/** Checks of one rule the form can make at once (the server checks everything again on preview and save). */
function fieldProblems(rule, all) {
  const p = {};
  if (!rule.id || !/^\S+$/.test(String(rule.id))) p.id = 'an id without spaces is required';
  else if (all.filter((r) => r.id === rule.id).length > 1) p.id = `duplicate rule id "${rule.id}"`;
  if (rule.kind === 'sampling') {
    if (!(typeof rule.rate === 'number' && rule.rate > 0 && rule.rate <= 1)) p.rate = 'a fraction greater than 0 and at most 1 (5 % is 0.05)';
    if (rule.minimum !== undefined && !(Number.isInteger(rule.minimum) && rule.minimum >= 0)) p.minimum = 'a whole number, 0 or more';
    if (rule.maximum !== undefined && !(Number.isInteger(rule.maximum) && rule.maximum > 0)) p.maximum = 'a whole number above 0';
    else if (rule.maximum !== undefined && rule.maximum < (rule.minimum ?? 0)) p.maximum = `below the minimum ${rule.minimum}`;
    if (rule.mode === 'precision') {
      if (!(typeof rule.targetHalfWidth === 'number' && rule.targetHalfWidth > 0 && rule.targetHalfWidth <= 0.5))
        p.targetHalfWidth = 'a half-width above 0 and at most 0.5 (+/- 2 points is 0.02)';
      if (rule.confidence !== undefined && !(rule.confidence >= 0.5 && rule.confidence <= 0.999)) p.confidence = 'between 0.5 and 0.999';
    }
  }
  if (rule.kind === 'discordance') {
    const ids = new Set();
    for (const key of ['aiFindings', 'extraAiFindings']) {
      for (const [j, f] of (Array.isArray(rule[key]) ? rule[key] : []).entries()) {
        if (!f || !f.id || !/^\S+$/.test(String(f.id))) p[key] ??= `finding ${j + 1}: an id without spaces is required`;
        else if (!Array.isArray(f.synonyms) || f.synonyms.length === 0) p[key] ??= `finding "${f.id}": at least one synonym`;
        else if (ids.has(f.id)) p[key] ??= `duplicate finding id "${f.id}"`;
        if (f?.id) ids.add(f.id);
      }
    }
  }
  if (rule.slaHours !== undefined && !(typeof rule.slaHours === 'number' && rule.slaHours > 0)) p.slaHours = 'hours above 0';
  return p;
}

/** A sentence tried against the rule's keywords as the engine reads it: which are affirmed, and which negated. */
function negationPreview(keywordsOf) {
  const sentence = h('input', { id: 'rb-try-text', size: 60, placeholder: 'e.g. No evidence of metastatic disease.' });
  const out = h('div', { 'data-testid': 'negation-preview' });
  const run = h(
    'button',
    {
      type: 'button',
      class: 'secondary',
      id: 'rb-try',
      onclick: async () => {
        const keywords = keywordsOf();
        if (!sentence.value.trim() || keywords.length === 0)
          return out.replaceChildren(h('span', { class: 'muted' }, 'type a sentence; the rule needs keywords'));
        try {
          const { items } = await api('POST', '/rules/keyword-preview', { text: sentence.value, keywords });
          const found = items.filter((x) => x.class !== 'absent');
          out.replaceChildren(
            ...(found.length === 0
              ? [h('span', { class: 'muted' }, 'no keyword in this text')]
              : found.map((x) =>
                  h(
                    'span',
                    { class: x.class === 'affirmed' || x.class === 'uncertain' ? 'pill good' : 'pill bad', 'data-keyword': x.keyword, 'data-class': x.class },
                    `${x.keyword}: ${x.class}`,
                  ),
                )),
          );
        } catch (e) {
          out.replaceChildren(errorBox(e));
        }
      },
    },
    'Try',
  );
  return h('div', { class: 'row' }, h('label', {}, 'Negation preview: a sentence', sentence), run, out);
}

function ruleBuilder(getText, setText, defaults = {}) {
  const root = h('div', { class: 'panel', 'data-testid': 'rule-builder' });
  let doc;
  let rules = [];
  let selected = 0;
  const rulesPath = () => (YAML.isSeq(doc.contents) ? [] : ['rules']);
  const load = () => {
    const d = YAML.parseDocument(getText());
    if (d.errors.length > 0) return false;
    doc = d;
    if (doc.contents === null || doc.contents === undefined) doc.contents = doc.createNode({ rules: [] });
    const js = doc.toJS();
    rules = Array.isArray(js) ? js : Array.isArray(js?.rules) ? js.rules : [];
    if (selected >= rules.length) selected = Math.max(0, rules.length - 1);
    return true;
  };
  const commit = (i) => {
    applyTo(doc, [...rulesPath(), i], rules[i]);
    setText(String(doc));
  };

  const picker = h('select', { id: 'rb-rule' });
  const newKind = h(
    'select',
    { id: 'rb-new-kind' },
    KINDS.map((k) => h('option', { value: k }, k)),
  );
  const form = h('div', { id: 'rb-form' });

  const field = (rule, i, name, label, input, hint) => {
    const problem = h('span', { class: 'field-error', 'data-field-error': name });
    const wrap = h('label', { 'data-field': name }, label, input, hint ? h('span', { class: 'muted' }, hint) : null, problem);
    return wrap;
  };
  const showProblems = () => {
    const rule = rules[selected];
    if (!rule) return;
    const p = fieldProblems(rule, rules);
    for (const el of form.querySelectorAll('[data-field-error]')) el.textContent = p[el.dataset.fieldError] || '';
  };
  const update = (rule, i, mutate) => {
    mutate(rule);
    commit(i);
    showProblems();
    drawPicker();
  };
  const text = (rule, i, key, label, o = {}) => {
    const input = h('input', { id: `rb-${key}`, value: rule[key] ?? '', size: o.size || 24, placeholder: o.placeholder });
    input.addEventListener('input', () =>
      update(rule, i, (r) => {
        if (input.value === '') delete r[key];
        else r[key] = input.value;
      }),
    );
    return field(rule, i, key, label, input, o.hint);
  };
  const num = (rule, i, key, label, o = {}) => {
    const input = h('input', { id: `rb-${key}`, type: 'text', inputmode: 'decimal', value: rule[key] ?? '', size: 8, placeholder: o.placeholder });
    input.addEventListener('input', () =>
      update(rule, i, (r) => {
        const v = input.value.trim();
        if (v === '') delete r[key];
        else r[key] = Number.isNaN(Number(v)) ? v : Number(v);
      }),
    );
    return field(rule, i, key, label, input, o.hint);
  };
  const select = (rule, i, key, label, options, o = {}) => {
    const input = h(
      'select',
      { id: `rb-${key}` },
      o.optional ? h('option', { value: '' }, o.optional) : null,
      options.map((x) => h('option', { value: x, selected: rule[key] === x }, x)),
    );
    input.addEventListener('change', () =>
      update(rule, i, (r) => {
        if (input.value === '') delete r[key];
        else r[key] = input.value;
      }),
    );
    return field(rule, i, key, label, input, o.hint);
  };
  const check = (obj, key, label, id, onChange, dflt = false) => {
    const input = h('input', { type: 'checkbox', id, checked: obj?.[key] ?? dflt });
    input.addEventListener('change', () => onChange(input.checked));
    return h('label', { class: 'inline' }, h('span', {}, input, ' ', label));
  };
  /** A comma-separated list bound to `get(rule)` / `set(rule, list)`. */
  const list = (rule, i, name, label, get, set, hint) => {
    const input = h('input', { id: `rb-${name}`, value: listText(get(rule)), size: 40 });
    input.addEventListener('input', () => update(rule, i, (r) => set(r, listOf(input.value))));
    return field(rule, i, name, label, input, hint);
  };
  const sub = (r, key) => (isObj(r[key]) ? r[key] : (r[key] = {}));
  const prune = (r, key) => {
    if (isObj(r[key]) && Object.keys(r[key]).length === 0) delete r[key];
  };

  /**
   * A list of findings (`aiFindings` or `extraAiFindings`) as rows of id, OBX-3 codes and synonyms.
   * `builtIn`: the list a rule uses while it leaves this key out, shown until the user customizes it.
   */
  const findings = (rule, i, key, label, builtIn) => {
    const box = h('fieldset', { 'data-testid': `rb-${key}` }, h('legend', {}, label));
    const rows = Array.isArray(rule[key]) ? rule[key] : undefined;
    const redraw = () => drawForm();
    if (!rows && builtIn) {
      box.append(
        h('p', { class: 'muted' }, `built-in: ${builtIn.map((f) => f.id).join(', ')}`),
        h(
          'button',
          {
            type: 'button',
            class: 'secondary',
            id: `rb-${key}-customize`,
            onclick: () => {
              update(rule, i, (r) => {
                r[key] = builtIn.map((f) => ({ ...f, synonyms: [...f.synonyms] }));
              });
              redraw();
            },
          },
          'Edit the list',
        ),
      );
    } else {
      (rows ?? []).forEach((f, j) => {
        const input = (name, value, size, set) => {
          const el = h('input', { id: `rb-${key}-${j}-${name}`, value, size });
          el.addEventListener('input', () => update(rule, i, (r) => set(r[key][j], el.value)));
          return h('label', {}, name, el);
        };
        box.append(
          h(
            'div',
            { class: 'row', 'data-finding': String(j) },
            input('id', f?.id ?? '', 20, (x, v) => {
              x.id = v.trim();
            }),
            input('codes', listText(f?.codes), 20, (x, v) => {
              const l = listOf(v);
              if (l.length) x.codes = l;
              else delete x.codes;
            }),
            input('synonyms', listText(f?.synonyms), 40, (x, v) => {
              x.synonyms = listOf(v);
            }),
            h(
              'button',
              {
                type: 'button',
                class: 'secondary',
                id: `rb-${key}-${j}-remove`,
                onclick: () => {
                  update(rule, i, (r) => {
                    r[key].splice(j, 1);
                    if (r[key].length === 0 && !builtIn) delete r[key];
                  });
                  redraw();
                },
              },
              'Remove',
            ),
          ),
        );
      });
      box.append(
        h(
          'div',
          { class: 'row' },
          h(
            'button',
            {
              type: 'button',
              class: 'secondary',
              id: `rb-${key}-add`,
              onclick: () => {
                update(rule, i, (r) => {
                  r[key] = [...(Array.isArray(r[key]) ? r[key] : []), { id: '', synonyms: [] }];
                });
                redraw();
              },
            },
            'Add a finding',
          ),
          builtIn
            ? h(
                'button',
                {
                  type: 'button',
                  class: 'secondary',
                  id: `rb-${key}-builtin`,
                  onclick: () => {
                    update(rule, i, (r) => {
                      delete r[key];
                    });
                    redraw();
                  },
                },
                'Use the built-in list',
              )
            : null,
        ),
      );
    }
    box.append(h('span', { class: 'field-error', 'data-field-error': key }));
    return box;
  };

  const conditions = (rule, i) => {
    const when = isObj(rule.when) ? rule.when : {};
    const modalityBoxes = MODALITIES.map((m) =>
      check({ x: (when.modality || []).includes(m) }, 'x', m, `rb-when-modality-${m}`, (on) =>
        update(rule, i, (r) => {
          const w = sub(r, 'when');
          const set = new Set(w.modality || []);
          if (on) set.add(m);
          else set.delete(m);
          if (set.size === 0) delete w.modality;
          else w.modality = MODALITIES.filter((x) => set.has(x)).concat([...set].filter((x) => !MODALITIES.includes(x)));
          prune(r, 'when');
        }),
      ),
    );
    const priorityBoxes = ORDER_PRIORITIES.map((p) =>
      check({ x: (when.orderPriority || []).includes(p) }, 'x', p, `rb-when-priority-${p}`, (on) =>
        update(rule, i, (r) => {
          const w = sub(r, 'when');
          const set = new Set(w.orderPriority || []);
          if (on) set.add(p);
          else set.delete(p);
          if (set.size === 0) delete w.orderPriority;
          else w.orderPriority = [...set];
          prune(r, 'when');
        }),
      ),
    );
    const whenList = (key, label, hint) =>
      list(
        rule,
        i,
        `when-${key}`,
        label,
        (r) => r.when?.[key],
        (r, v) => {
          const w = sub(r, 'when');
          if (v.length === 0) delete w[key];
          else w[key] = v;
          prune(r, 'when');
        },
        hint,
      );
    const tod = when.timeOfDay || {};
    const timeInput = (key) => {
      const input = h('input', { type: 'time', id: `rb-when-time-${key}`, value: tod[key] ?? '' });
      input.addEventListener('change', () =>
        update(rule, i, (r) => {
          const w = sub(r, 'when');
          const t = { ...(isObj(w.timeOfDay) ? w.timeOfDay : {}) };
          if (input.value === '') delete t[key];
          else t[key] = input.value;
          if (t.from === undefined && t.to === undefined) delete w.timeOfDay;
          else w.timeOfDay = t;
          prune(r, 'when');
        }),
      );
      return input;
    };
    const zone = h('input', { id: 'rb-when-time-zone', value: tod.timeZone ?? '', size: 16, placeholder: 'UTC' });
    zone.addEventListener('input', () =>
      update(rule, i, (r) => {
        const w = sub(r, 'when');
        if (!isObj(w.timeOfDay)) {
          prune(r, 'when');
          return;
        }
        if (zone.value.trim() === '') delete w.timeOfDay.timeZone;
        else w.timeOfDay.timeZone = zone.value.trim();
      }),
    );
    return h(
      'fieldset',
      { 'data-testid': 'rb-conditions' },
      h('legend', {}, 'Conditions (all must hold; none = every study)'),
      h(
        'div',
        { class: 'row' },
        h('span', { class: 'muted' }, 'Time of day the first report was signed'),
        h('label', {}, 'from', timeInput('from')),
        h('label', {}, 'to (after from: overnight)', timeInput('to')),
        h('label', {}, 'time zone', zone),
        h('span', { class: 'field-error', 'data-field-error': 'when' }),
      ),
      h('div', { class: 'row' }, h('span', { class: 'muted' }, 'Modality'), modalityBoxes),
      h('div', { class: 'row' }, h('span', { class: 'muted' }, 'Order priority (ORC-7)'), priorityBoxes),
      h(
        'div',
        { class: 'row' },
        whenList('bodyPart', 'Body part', 'e.g. CHEST, HEAD'),
        whenList('referringService', 'Referring service'),
        whenList('procedureCode', 'Procedure code', '* is a wildcard'),
      ),
    );
  };

  const kindFields = (rule, i) => {
    switch (rule.kind) {
      case 'oncology':
        return [
          h(
            'div',
            { class: 'row' },
            list(
              rule,
              i,
              'codes-include',
              'ICD-10 codes and ranges',
              (r) => r.codes?.include,
              (r, v) => {
                const c = sub(r, 'codes');
                if (v.length) c.include = v;
                else delete c.include;
                prune(r, 'codes');
              },
              'e.g. C00-C96, D00-D09 (empty: the built-in list)',
            ),
            list(
              rule,
              i,
              'codes-exclude',
              'Excluded codes',
              (r) => r.codes?.exclude,
              (r, v) => {
                const c = sub(r, 'codes');
                if (v.length) c.exclude = v;
                else delete c.exclude;
                prune(r, 'codes');
              },
            ),
            check(
              rule.codes,
              'personalHistory',
              'Z85 personal history counts',
              'rb-personalHistory',
              (on) =>
                update(rule, i, (r) => {
                  sub(r, 'codes').personalHistory = on;
                }),
              true,
            ),
          ),
          h(
            'div',
            { class: 'row' },
            list(
              rule,
              i,
              'extraKeywords',
              'Extra keywords',
              (r) => r.extraKeywords,
              (r, v) => {
                if (v.length) r.extraKeywords = v;
                else delete r.extraKeywords;
              },
              'added to the built-in list; a negated mention ("no evidence of metastasis") does not count',
            ),
            check(rule, 'prospective', 'decide on the order alone', 'rb-prospective', (on) =>
              update(rule, i, (r) => {
                r.prospective = on;
              }),
            ),
          ),
          negationPreview(() => [...(rule.keywords ?? defaults.oncologyKeywords ?? []), ...(rule.extraKeywords ?? [])]),
        ];
      case 'discordance':
        return [
          h(
            'div',
            { class: 'row' },
            check(
              rule.checks,
              'aiFinding',
              'AI finding not in the report',
              'rb-check-ai',
              (on) =>
                update(rule, i, (r) => {
                  sub(r, 'checks').aiFinding = on;
                }),
              true,
            ),
            check(
              rule.checks,
              'indicationNegative',
              'indication asked, report negative',
              'rb-check-indication',
              (on) =>
                update(rule, i, (r) => {
                  sub(r, 'checks').indicationNegative = on;
                }),
              true,
            ),
            check(
              rule.checks,
              'correctedReport',
              'corrected report',
              'rb-check-corrected',
              (on) =>
                update(rule, i, (r) => {
                  sub(r, 'checks').correctedReport = on;
                }),
              true,
            ),
          ),
          h(
            'p',
            { class: 'muted', 'data-testid': 'rb-ai-senders' },
            (defaults.aiSenders ?? []).length > 0
              ? `AI senders (hl7.aiSenders in the configuration): ${defaults.aiSenders.join(', ')}`
              : 'AI senders (hl7.aiSenders in the configuration): none configured, so no AI results are read',
          ),
          findings(rule, i, 'aiFindings', 'AI findings (replace the built-in list)', defaults.aiFindings),
          findings(rule, i, 'extraAiFindings', 'Extra AI findings (added to the list above)'),
        ];
      case 'sampling':
        return [
          h(
            'div',
            { class: 'row' },
            num(rule, i, 'rate', 'Rate', { hint: 'fraction drawn, 0.05 = 5 %' }),
            select(rule, i, 'period', 'Period', ['day', 'week', 'month', 'quarter']),
            num(rule, i, 'minimum', 'Minimum per radiologist x modality x period'),
            num(rule, i, 'maximum', 'Maximum'),
          ),
          h(
            'div',
            { class: 'row' },
            select(rule, i, 'mode', 'Mode', ['quota', 'precision'], { hint: 'precision: draw as many as the target needs' }),
            num(rule, i, 'targetHalfWidth', 'Target +/- (precision)', { hint: '0.02 = +/- 2 points' }),
            num(rule, i, 'confidence', 'Confidence', { placeholder: '0.95' }),
            list(
              rule,
              i,
              'excludeRadiologists',
              'Excluded radiologists',
              (r) => r.excludeRadiologists,
              (r, v) => {
                if (v.length) r.excludeRadiologists = v;
                else delete r.excludeRadiologists;
              },
            ),
          ),
        ];
      case 'high-stakes':
        return [
          h(
            'div',
            { class: 'row' },
            list(
              rule,
              i,
              'procedureCodes',
              'Procedure codes',
              (r) => r.procedureCodes,
              (r, v) => {
                r.procedureCodes = v;
              },
              '* is a wildcard',
            ),
            list(
              rule,
              i,
              'extraKeywords',
              'Extra keywords',
              (r) => r.extraKeywords,
              (r, v) => {
                if (v.length) r.extraKeywords = v;
                else delete r.extraKeywords;
              },
              'e.g. transplant evaluation',
            ),
          ),
          negationPreview(() => [...(rule.keywords ?? defaults.highStakesKeywords ?? []), ...(rule.extraKeywords ?? [])]),
        ];
      case 'manual':
        return [
          h(
            'div',
            { class: 'row' },
            check(
              rule.sources,
              'api',
              'requests in the console/API',
              'rb-source-api',
              (on) =>
                update(rule, i, (r) => {
                  sub(r, 'sources').api = on;
                }),
              true,
            ),
            check(
              rule.sources,
              'orderFlag',
              'second opinion flag on the order',
              'rb-source-order',
              (on) =>
                update(rule, i, (r) => {
                  sub(r, 'sources').orderFlag = on;
                }),
              true,
            ),
          ),
        ];
      default:
        return [h('p', { class: 'muted' }, `kind ${rule.kind}: edit it in YAML`)];
    }
  };

  // A discrepant second read (RADPEER scores listed) goes to a blinded third reader; the write-back waits for the verdict.
  const arbitrationFields = (rule, i) =>
    h(
      'div',
      { class: 'row', 'data-testid': 'rb-arbitration' },
      list(
        rule,
        i,
        'arbitration',
        'Arbitration at RADPEER',
        (r) => r.arbitration?.when,
        (r, v) => {
          if (v.length) sub(r, 'arbitration').when = v;
          else delete r.arbitration;
        },
        'e.g. 2b, 3a, 3b: a third reader decides (empty: no arbitration)',
      ),
      (() => {
        const input = h('input', { id: 'rb-arbitration-readerGroup', value: rule.arbitration?.readerGroup ?? '', size: 12 });
        input.addEventListener('input', () =>
          update(rule, i, (r) => {
            if (input.value === '') {
              if (isObj(r.arbitration)) delete r.arbitration.readerGroup;
            } else sub(r, 'arbitration').readerGroup = input.value;
          }),
        );
        return field(rule, i, 'arbitration-readerGroup', 'Third reader group', input, 'subspecialty the third reader must have');
      })(),
    );

  const drawForm = () => {
    const rule = rules[selected];
    if (!rule) {
      form.replaceChildren(h('p', { class: 'muted' }, 'No rules yet: add one.'));
      return;
    }
    const i = selected;
    const enabled = check(
      rule,
      'enabled',
      'enabled',
      'rb-enabled',
      (on) =>
        update(rule, i, (r) => {
          r.enabled = on;
        }),
      true,
    );
    form.replaceChildren(
      h('h3', {}, `${rule.kind} rule`),
      h(
        'div',
        { class: 'row' },
        text(rule, i, 'id', 'Id'),
        select(rule, i, 'priority', 'Priority', ['stat', 'urgent', 'routine']),
        num(rule, i, 'slaHours', 'SLA hours', { placeholder: 'by priority' }),
        text(rule, i, 'readerGroup', 'Reader group', { size: 12 }),
        enabled,
      ),
      h('div', { class: 'row' }, text(rule, i, 'description', 'Description', { size: 70 })),
      ...kindFields(rule, i),
      arbitrationFields(rule, i),
      conditions(rule, i),
      h(
        'div',
        { class: 'row' },
        h(
          'button',
          {
            type: 'button',
            class: 'danger',
            id: 'rb-remove',
            onclick: () => {
              rules.splice(i, 1);
              doc.deleteIn([...rulesPath(), i]);
              setText(String(doc));
              selected = Math.max(0, i - 1);
              drawPicker();
              drawForm();
            },
          },
          'Remove this rule',
        ),
      ),
    );
    showProblems();
  };
  const drawPicker = () => {
    picker.replaceChildren(...rules.map((r, i) => h('option', { value: String(i), selected: i === selected }, `${r.id ?? '(no id)'} · ${r.kind}`)));
  };
  picker.addEventListener('change', () => {
    selected = Number(picker.value);
    drawForm();
  });
  const add = h(
    'button',
    {
      type: 'button',
      id: 'rb-add',
      class: 'secondary',
      onclick: () => {
        const kind = newKind.value;
        const base = { id: `${kind}-${rules.length + 1}`, kind, priority: kind === 'oncology' ? 'urgent' : 'routine' };
        const extra = kind === 'sampling' ? { rate: 0.05, period: 'month', minimum: 0 } : kind === 'high-stakes' ? { procedureCodes: [] } : {};
        const rule = { ...base, ...extra };
        rules.push(rule);
        const rp = rulesPath();
        if (rp.length > 0 && !doc.hasIn(rp)) doc.setIn(rp, doc.createNode([]));
        doc.addIn(rp, doc.createNode(rule));
        setText(String(doc));
        selected = rules.length - 1;
        drawPicker();
        drawForm();
      },
    },
    'Add rule',
  );

  root.append(h('h2', {}, 'Rule builder'), h('div', { class: 'row' }, h('label', {}, 'Rule', picker), h('label', {}, 'New rule of kind', newKind), add), form);
  return {
    root,
    /** Re-reads the YAML (after an edit there); false while it does not parse. */
    refresh() {
      if (!load()) {
        form.replaceChildren(h('p', { class: 'error' }, 'The YAML does not parse: fix it in the YAML view to use the form again.'));
        return false;
      }
      drawPicker();
      drawForm();
      return true;
    },
    /** Server validation errors of the selected rule next to their fields. */
    showServerErrors(list) {
      for (const x of list) {
        const m = /^rules\[(\d+)\]\.([A-Za-z]+)/.exec(x.path);
        if (!m || Number(m[1]) !== selected) continue;
        const el = form.querySelector(`[data-field-error="${m[2]}"]`);
        if (el) el.textContent = x.message;
      }
    },
  };
}

export async function rulesView() {
  const root = h('section', { 'data-testid': 'rules' });
  const active = await api('GET', '/rules');
  const editor = h('textarea', { class: 'code', id: 'rules-text', spellcheck: 'false' });
  // The stored text keeps the comments of whoever wrote it; older versions saved as JSON are regenerated.
  editor.value = active.yaml ?? toYaml(active.rules);
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
      errors.replaceChildren(
        h(
          'div',
          { class: 'error' },
          'The text is not valid YAML:',
          h(
            'ul',
            { class: 'errors' },
            doc.errors.map((e) => h('li', {}, `line ${e.linePos?.[0]?.line ?? '?'}: ${e.message.split('\n')[0]}`)),
          ),
        ),
      );
      return undefined;
    }
    const value = doc.toJS();
    return Array.isArray(value) ? value : value && typeof value === 'object' && 'rules' in value ? value.rules : value;
  };
  const builder = ruleBuilder(
    () => editor.value,
    (text) => {
      editor.value = text;
      if (editor.value !== previewedText) save.disabled = true;
    },
    active.defaults,
  );
  const showServerErrors = (e) => {
    const list = e.details?.errors || [];
    builder.showServerErrors(list);
    if (list.length === 0) return errors.replaceChildren(errorBox(e));
    errors.replaceChildren(
      h(
        'div',
        { class: 'error' },
        `${e.message}:`,
        h(
          'ul',
          { class: 'errors' },
          list.map((x) => {
            const line = lineOf(editor.value, x.path);
            return h('li', { 'data-path': x.path }, `${line ? `line ${line}, ` : ''}${x.path}: ${x.message}`);
          }),
        ),
      ),
    );
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
        h(
          'div',
          { class: 'ok' },
          h('span', { 'data-k': 'dry-flagged' }, String(r.flagged)),
          ` of ${r.evaluated} studies received in the period would be flagged (${r.ruleCount} rules, ${r.elapsedMs} ms). Nothing was changed.`,
        ),
        h(
          'p',
          {},
          Object.entries(r.byRule).map(([k, v]) => h('span', { class: 'pill' }, `${k}: ${v}`)),
          ' ',
        ),
        table(
          [
            { label: 'Accession', value: (i) => i.accessionNumber ?? '' },
            { label: 'Modalities', value: (i) => i.modalities.join(', ') },
            { label: 'Radiologist', value: (i) => i.radiologistId ?? '' },
            { label: 'Priority', value: (i) => i.priority ?? '' },
            { label: 'Reasons', value: (i) => i.reasons.map((x) => `${x.ruleId}: ${x.detail ?? x.kind}`).join('; ') },
          ],
          r.items,
          { testid: 'dry-run-items', empty: 'no study would be flagged' },
        ),
        r.truncated ? h('p', { class: 'muted' }, 'list truncated') : null,
        forecastView(r),
      );
    } catch (e) {
      showServerErrors(e);
    }
  });
  editor.addEventListener('input', () => {
    if (editor.value !== previewedText) save.disabled = true;
  });
  // Back from the YAML view: the form shows what the text now says. It is redrawn when the pointer or
  // focus comes to it, not when the editor loses focus: a redraw then would move the buttons under a click.
  let formStale = false;
  editor.addEventListener('input', () => {
    formStale = true;
  });
  const refreshIfStale = () => {
    if (!formStale) return;
    formStale = false;
    builder.refresh();
  };
  builder.root.addEventListener('pointerenter', refreshIfStale);
  builder.root.addEventListener('focusin', refreshIfStale);
  save.addEventListener('click', async () => {
    if (editor.value !== previewedText) return;
    const rules = parse();
    if (rules === undefined) return;
    try {
      // The text goes as written, so its comments are kept with the version.
      const r = await api('PUT', '/rules', { yaml: editor.value, comment: comment.value || undefined });
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
    history.replaceChildren(
      table(
        [
          { label: 'Version', num: true, value: (v) => v.version },
          { label: 'When', value: (v) => fmt.time(v.createdAt) },
          { label: 'By', value: (v) => v.createdBy },
          { label: 'Source', value: (v) => v.source },
          { label: 'Comment', value: (v) => v.comment ?? '' },
          {
            label: '',
            value: (v) =>
              h(
                'span',
                {},
                v.version > 1
                  ? h(
                      'button',
                      {
                        type: 'button',
                        class: 'secondary',
                        'data-diff': v.version,
                        onclick: async () => {
                          const [a, b] = await Promise.all([api('GET', `/rules/versions/${v.version - 1}`), api('GET', `/rules/versions/${v.version}`)]);
                          diffOut.replaceChildren(
                            h('h2', {}, `Changes from version ${v.version - 1} to ${v.version}`),
                            diffView(toYaml(a.rules), toYaml(b.rules)),
                          );
                        },
                      },
                      `diff with ${v.version - 1}`,
                    )
                  : null,
                h(
                  'button',
                  {
                    type: 'button',
                    class: 'secondary',
                    onclick: async () => {
                      const x = await api('GET', `/rules/versions/${v.version}`);
                      editor.value = x.yaml ?? toYaml(x.rules);
                      builder.refresh();
                      save.disabled = true;
                      flash(`version ${v.version} loaded into the editor; preview, then save to make it active again`);
                    },
                  },
                  'load',
                ),
              ),
          },
        ],
        items,
      ),
    );
  };
  await drawHistory();

  builder.refresh();
  root.append(
    h('h1', {}, 'Rules'),
    status,
    h(
      'p',
      { class: 'muted' },
      'Build rules in the form, or edit the YAML below (advanced; comments are kept). Validate and preview over stored studies, then save: every save is a new, audited version.',
    ),
    builder.root,
    h('h2', {}, 'YAML (advanced)'),
    editor,
    errors,
    h(
      'div',
      { class: 'row' },
      h('label', {}, 'Preview studies received from', from),
      h('label', {}, 'to', to),
      dryRun,
      h('label', {}, 'Comment', comment),
      save,
    ),
    preview,
    h('h2', {}, 'Version history'),
    history,
    diffOut,
  );
  return root;
}

/** The forecast of a dry run: cases per day per rule and in total, reader load, quota use, and the difference from the active version. */
function forecastView(r) {
  const f = r.forecast;
  const d = r.diff;
  const uidList = (uids, testid) =>
    h(
      'ul',
      { 'data-testid': testid },
      uids.length === 0
        ? h('li', { class: 'muted' }, 'none')
        : uids.map((u) =>
            h(
              'li',
              {},
              h(
                'a',
                {
                  href: `/api/studies/${encodeURIComponent(u)}`,
                  'data-study': u,
                  onclick: async (e) => {
                    e.preventDefault();
                    const s = await api('GET', `/studies/${encodeURIComponent(u)}`);
                    flash(`${u}: accession ${s.accessionNumber ?? '-'}, ${s.state}${s.caseId ? `, case ${s.caseId}` : ''}`);
                  },
                },
                u,
              ),
            ),
          ),
    );
  return h(
    'div',
    { 'data-testid': 'forecast' },
    h('h2', {}, 'Forecast'),
    h('p', {}, h('span', { 'data-k': 'cases-per-day' }, String(f.casesPerDay)), ` cases a day over ${f.days} days`),
    table(
      [
        { label: 'Rule', value: (x) => x.ruleId },
        { label: 'Studies flagged', num: true, value: (x) => x.flagged },
        { label: 'Cases / day', num: true, value: (x) => x.casesPerDay },
      ],
      f.byRule,
      { testid: 'forecast-rules', empty: 'no rule fires' },
    ),
    h('h3', {}, 'Reader load'),
    table(
      [
        { label: 'Reader group', value: (x) => x.readerGroup ?? '(any)' },
        { label: 'Peak open cases', num: true, value: (x) => x.openCasesPeak },
        { label: 'Capacity (maxOpenCases)', num: true, value: (x) => (x.capacity === null ? 'no reader configured' : x.capacity) },
        { label: '', value: (x) => (x.capacity !== null && x.openCasesPeak > x.capacity ? h('span', { class: 'pill bad' }, 'over capacity') : '') },
      ],
      f.readerLoad,
      { testid: 'forecast-load', empty: 'no cases' },
    ),
    h('h3', {}, 'Quota use'),
    table(
      [
        { label: 'Rule', value: (x) => x.ruleId },
        { label: 'Radiologist', value: (x) => x.radiologist },
        { label: 'Modality', value: (x) => x.modality },
        { label: 'Period', value: (x) => x.period },
        { label: 'Seen', num: true, value: (x) => x.seen },
        { label: 'Drawn', num: true, value: (x) => x.drawn },
        { label: 'Min', num: true, value: (x) => x.min },
        { label: 'Max', num: true, value: (x) => x.max ?? '' },
      ],
      f.quota,
      { testid: 'forecast-quota', empty: 'no sampling rule' },
    ),
    h('h3', {}, `Difference from the active version ${d.activeVersion}`),
    h(
      'div',
      { class: 'grid2' },
      h('div', {}, h('strong', {}, `Newly flagged (${d.newlyFlagged.length})`), uidList(d.newlyFlagged, 'diff-new')),
      h('div', {}, h('strong', {}, `No longer flagged (${d.noLongerFlagged.length})`), uidList(d.noLongerFlagged, 'diff-gone')),
    ),
    d.truncated ? h('p', { class: 'muted' }, 'lists truncated') : null,
  );
}
