import { expect } from 'chai';
import { compileRuleSet, evaluate, samplingBucketKeys } from '../../src/rules/evaluate.js';
import type { BucketCounters, Decision, EvaluationInput } from '../../src/rules/rule.types.js';
import { bucketKey, decideSampling, periodKey, previousPeriodKey, samplingDraw } from '../../src/rules/sampling.js';
import { seededRandom } from '../../scripts/lib/seeded-random.js';
import { finalReport, makeInput, makeOrder, makeStudy, rulesFromYaml, SECRET } from './fixtures.js';

interface SyntheticStudy {
  uid: string;
  radiologist: string;
  modality: string;
  signedAt: Date;
}

const RADIOLOGISTS = ['dr-a', 'dr-b', 'dr-c', 'dr-d', 'dr-e'];

/** 10,000 studies over Jan-Jun 2024 (UTC), in signing order, spread over 5 radiologists x CT/MR. */
function workload(count = 10_000, seed = 7): SyntheticStudy[] {
  const rnd = seededRandom(seed);
  const start = Date.UTC(2024, 0, 1);
  const span = Date.UTC(2024, 6, 1) - start;
  const out: SyntheticStudy[] = [];
  for (let i = 0; i < count; i++) {
    out.push({
      uid: `1.2.826.0.1.3680043.10.${1000 + i}.${Math.floor(rnd() * 1e9)}`,
      radiologist: RADIOLOGISTS[Math.floor(rnd() * RADIOLOGISTS.length)]!,
      modality: rnd() < 0.5 ? 'CT' : 'MR',
      signedAt: new Date(start + Math.floor(rnd() * span)),
    });
  }
  return out.sort((a, b) => a.signedAt.getTime() - b.signedAt.getTime());
}

function inputFor(s: SyntheticStudy, state: Map<string, BucketCounters>): EvaluationInput {
  return makeInput({
    study: makeStudy({ studyInstanceUid: s.uid, modalities: [s.modality] }),
    reports: [finalReport('IMPRESSION: No acute abnormality.', { radiologistId: s.radiologist, observedAt: s.signedAt })],
    samplingState: state,
    now: s.signedAt,
  });
}

/** The caller's part: persist the slots the decision asks for. */
function apply(state: Map<string, BucketCounters>, d: Decision): void {
  for (const slot of d.samplingSlots) {
    const c = state.get(slot.bucketKey) ?? { seen: 0, selected: 0 };
    state.set(slot.bucketKey, { seen: c.seen + 1, selected: c.selected + (slot.selected ? 1 : 0) });
  }
}

function simulate(yamlText: string, secret: string, studies: SyntheticStudy[]): { selected: Set<string>; state: Map<string, BucketCounters> } {
  const compiled = compileRuleSet(rulesFromYaml(yamlText), { samplingSecret: secret });
  const state = new Map<string, BucketCounters>();
  const selected = new Set<string>();
  for (const s of studies) {
    const d = evaluate(compiled, inputFor(s, state));
    apply(state, d);
    if (d.flagged) selected.add(s.uid);
  }
  return { selected, state };
}

const RATE_ONLY = `[ { id: qa, kind: sampling, priority: routine, rate: 0.05, period: quarter } ]`;

describe('rules/sampling', () => {
  describe('periods and keys', () => {
    it('uses UTC calendar periods and ISO weeks', () => {
      expect(periodKey(new Date('2024-03-31T23:59:59Z'), 'day')).to.equal('2024-03-31');
      expect(periodKey(new Date('2024-03-31T23:59:59Z'), 'month')).to.equal('2024-03');
      expect(periodKey(new Date('2024-04-01T00:00:00Z'), 'quarter')).to.equal('2024-Q2');
      expect(periodKey(new Date('2024-03-31T23:59:59Z'), 'quarter')).to.equal('2024-Q1');
      expect(periodKey(new Date('2021-01-03T12:00:00Z'), 'week')).to.equal('2020-W53');
      expect(periodKey(new Date('2021-01-04T00:00:00Z'), 'week')).to.equal('2021-W01');
      expect(periodKey(new Date('2024-12-30T08:00:00Z'), 'week')).to.equal('2025-W01');
      expect(periodKey(new Date('2024-03-12T08:00:00Z'), 'week')).to.equal('2024-W11');
    });

    it('finds the previous period', () => {
      expect(previousPeriodKey(new Date('2024-01-15T00:00:00Z'), 'month')).to.equal('2023-12');
      expect(previousPeriodKey(new Date('2025-01-01T00:00:00Z'), 'week')).to.equal('2024-W52');
      expect(previousPeriodKey(new Date('2024-04-10T00:00:00Z'), 'quarter')).to.equal('2024-Q1');
      expect(previousPeriodKey(new Date('2024-03-01T00:00:00Z'), 'day')).to.equal('2024-02-29');
    });

    it('bucket keys cannot collide through the separator', () => {
      expect(bucketKey('qa', 'dr-a', 'CT', '2024-03')).to.equal('qa|dr-a|CT|2024-03');
      expect(bucketKey('qa', 'a|b', 'CT', '2024-03')).not.to.equal(bucketKey('qa', 'a', 'b|CT', '2024-03'));
    });

    it('the draw is HMAC-SHA256 of the UID in [0, 1), keyed by the secret', () => {
      const a = samplingDraw('s1', '1.2.3');
      expect(a).to.be.within(0, 1);
      expect(samplingDraw('s1', '1.2.3')).to.equal(a);
      expect(samplingDraw('s2', '1.2.3')).not.to.equal(a);
    });
  });

  describe('decideSampling', () => {
    const p = { rate: 0.05, minimum: 3, maximum: 5 };
    it('never goes beyond the maximum', () => {
      expect(decideSampling(p, { seen: 10, selected: 5 }, 100, 0.001)).to.deep.equal({ selected: false, why: 'maximum' });
    });
    it('selects by rate', () => {
      expect(decideSampling(p, { seen: 10, selected: 4 }, 100, 0.049)).to.deep.equal({ selected: true, why: 'rate' });
      expect(decideSampling(p, { seen: 10, selected: 4 }, 100, 0.051)).to.deep.equal({ selected: false, why: 'not-drawn' });
    });
    it('front-loads the minimum without history and plans it against the previous volume with history', () => {
      expect(decideSampling(p, undefined, undefined, 0.9)).to.deep.equal({ selected: true, why: 'minimum' });
      // previous 100 -> horizon 75; 10 seen, 3 missing: probability 3/65.
      expect(decideSampling(p, { seen: 10, selected: 0 }, 100, 0.04)).to.deep.include({ selected: true });
      expect(decideSampling(p, { seen: 10, selected: 0 }, 100, 0.9)).to.deep.include({ selected: false });
      // 72 seen, 3 missing, 3 left before the horizon: must select.
      expect(decideSampling(p, { seen: 72, selected: 0 }, 100, 0.99)).to.deep.equal({ selected: true, why: 'minimum' });
      // Past the horizon (the period is busier than planned) and still short: select.
      expect(decideSampling(p, { seen: 80, selected: 1 }, 100, 0.99)).to.deep.equal({ selected: true, why: 'minimum' });
      // Minimum met: back to the plain rate.
      expect(decideSampling(p, { seen: 80, selected: 3 }, 100, 0.99)).to.deep.equal({ selected: false, why: 'not-drawn' });
    });
  });

  describe('over 10,000 synthetic studies', () => {
    const studies = workload();

    it('the selected rate per radiologist x modality is within 3 sigma of the rate', () => {
      const { state } = simulate(RATE_ONLY, SECRET, studies);
      const groups = new Map<string, BucketCounters>();
      for (const [key, c] of state) {
        const [, rad, mod] = key.split('|');
        const g = groups.get(`${rad}|${mod}`) ?? { seen: 0, selected: 0 };
        groups.set(`${rad}|${mod}`, { seen: g.seen + c.seen, selected: g.selected + c.selected });
      }
      expect(groups.size).to.equal(10);
      let seen = 0;
      let selected = 0;
      for (const [group, c] of groups) {
        const expected = c.seen * 0.05;
        const sigma = Math.sqrt(c.seen * 0.05 * 0.95);
        expect(Math.abs(c.selected - expected), `${group}: ${c.selected} of ${c.seen}`).to.be.at.most(3 * sigma);
        seen += c.seen;
        selected += c.selected;
      }
      expect(seen).to.equal(10_000);
      expect(Math.abs(selected - 500)).to.be.at.most(3 * Math.sqrt(10_000 * 0.05 * 0.95));
    });

    it('minimum and maximum hold in every bucket and period', () => {
      const quotas = `[ { id: qa, kind: sampling, priority: routine, rate: 0.01, period: month, minimum: 3, maximum: 6 } ]`;
      const { state } = simulate(quotas, SECRET, studies);
      expect(state.size).to.equal(5 * 2 * 6);
      for (const [key, c] of state) {
        expect(c.selected, key).to.be.at.least(Math.min(3, c.seen));
        expect(c.selected, key).to.be.at.most(6);
      }
      const capped = `[ { id: qa, kind: sampling, priority: routine, rate: 0.2, period: week, maximum: 4 } ]`;
      for (const [key, c] of simulate(capped, SECRET, studies).state) expect(c.selected, key).to.be.at.most(4);
    });

    it('the minimum is met for a low-volume radiologist too', () => {
      const few = workload(200, 11).map((s, i) => ({ ...s, radiologist: i % 40 === 0 ? 'dr-rare' : s.radiologist }));
      const { state } = simulate(`[ { id: qa, kind: sampling, priority: routine, rate: 0.01, period: month, minimum: 2 } ]`, SECRET, few);
      const rare = [...state].filter(([k]) => k.includes('|dr-rare|'));
      expect(rare.length).to.be.greaterThan(0);
      for (const [key, c] of rare) expect(c.selected, key).to.equal(Math.min(2, c.seen));
    });

    it('a replay with the same secret picks exactly the same studies; another secret picks others', () => {
      const first = simulate(RATE_ONLY, SECRET, studies).selected;
      const replay = simulate(RATE_ONLY, SECRET, studies).selected;
      expect([...replay]).to.deep.equal([...first]);
      const other = simulate(RATE_ONLY, 'another-secret', studies).selected;
      const overlap = [...other].filter((uid) => first.has(uid)).length;
      // Independent 5% draws overlap on about 5% of the picks.
      expect(overlap / first.size).to.be.below(0.2);
      expect(other.size).to.be.within(400, 600);
    });
  });

  describe('eligibility', () => {
    const compiled = compileRuleSet(
      rulesFromYaml(`
rules:
  - { id: manual, kind: manual, priority: urgent }
  - { id: qa, kind: sampling, priority: routine, rate: 1, period: month, excludeRadiologists: [res1, "resident-*"], when: { modality: CT } }
`),
      { samplingSecret: SECRET },
    );

    it('samples with a reason naming the bucket, and asks for the counter increment', () => {
      const d = evaluate(compiled, makeInput());
      expect(d.reasons).to.have.length(1);
      expect(d.reasons[0]!.detail).to.match(/^QA random sample for dr-smith CT 2024-03: draw 0\.\d{4} < rate 1$/);
      expect(d.samplingSlots).to.deep.equal([
        { ruleId: 'qa', bucketKey: 'qa|dr-smith|CT|2024-03', selected: true, radiologistId: 'dr-smith', modality: 'CT', periodKey: '2024-03', probability: 1 },
      ]);
      expect(d.priority).to.equal('routine');
    });

    it('lists the counters it will read, so the caller can load them first', () => {
      const withMinimum = compileRuleSet(rulesFromYaml(`[ { id: qa, kind: sampling, priority: routine, rate: 0.05, period: week, minimum: 1 } ]`), {
        samplingSecret: SECRET,
      });
      const input = makeInput({ study: makeStudy({ modalities: ['SR', 'PT', 'CT'] }) });
      expect(samplingBucketKeys(withMinimum, input)).to.deep.equal(['qa|dr-smith|PT|2024-W11', 'qa|dr-smith|PT|2024-W10']);
      const read: string[] = [];
      evaluate(withMinimum, { ...input, samplingState: { get: (k) => (read.push(k), { seen: 3, selected: 0 }) } });
      expect(read).to.deep.equal(['qa|dr-smith|PT|2024-W11', 'qa|dr-smith|PT|2024-W10']);
    });

    it('skips studies another rule flagged, now or before, without counting them', () => {
      const now = evaluate(compiled, makeInput({ manualRequests: [{ reason: 'r', requestedBy: 'u' }] }));
      expect(now.reasons.map((r) => r.ruleId)).to.deep.equal(['manual']);
      expect(now.samplingSlots).to.deep.equal([]);
      const before = evaluate(
        compiled,
        makeInput({ priorDecisions: [{ flagged: true, reasons: [{ ruleId: 'onc', kind: 'oncology', detail: 'x' }], samplingSlots: [] }] }),
      );
      expect(before.samplingSlots).to.deep.equal([]);
    });

    it('skips radiologists who are not eligible, by id or pattern, and other modalities', () => {
      for (const rad of ['res1', 'RES1', 'resident-04']) {
        expect(evaluate(compiled, makeInput({ reports: [finalReport('x', { radiologistId: rad })] })).samplingSlots).to.deep.equal([]);
      }
      expect(evaluate(compiled, makeInput({ study: makeStudy({ modalities: ['MR'] }) })).samplingSlots).to.deep.equal([]);
    });

    it('counts a study once: a re-evaluation keeps the earlier draw', () => {
      const first = evaluate(compiled, makeInput());
      const again = evaluate(
        compiled,
        makeInput({
          reports: [finalReport('a'), finalReport('b', { status: 'C' })],
          priorDecisions: [{ flagged: first.flagged, reasons: first.reasons, samplingSlots: first.samplingSlots }],
        }),
      );
      expect(again.samplingSlots).to.deep.equal([]);
      expect(again.reasons[0]!.detail).to.equal('selected for QA sampling earlier (bucket qa|dr-smith|CT|2024-03)');
    });

    it('does not sample without a final report', () => {
      expect(
        evaluate(compiled, makeInput({ reports: [{ status: 'P', text: 'prelim', radiologistId: 'dr-smith' }], order: makeOrder() })).samplingSlots,
      ).to.deep.equal([]);
    });
  });
});
