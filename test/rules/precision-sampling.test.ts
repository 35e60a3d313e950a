import { expect } from 'chai';
import { compileRuleSet, evaluate } from '../../src/rules/evaluate.js';
import { validateRuleSet } from '../../src/rules/rule.schema.js';
import type { BucketCounters } from '../../src/rules/rule.types.js';
import { samplingCells } from '../../src/rules/sampling-cells.js';
import {
  planningRate,
  precisionDrawProbability,
  previousPeriodKeyOf,
  selectionProbability,
  wilsonHalfWidth,
  wilsonInterval,
  wilsonSampleSize,
  zForConfidence,
} from '../../src/rules/sampling.js';
import { seededRandom } from '../../scripts/lib/seeded-random.js';
import { finalReport, makeInput, makeStudy, rulesFromYaml, SECRET } from './fixtures.js';

describe('rules/sampling: precision mode', () => {
  describe('the arithmetic, against hand-worked values', () => {
    it('z of 95 % and 90 % two-sided', () => {
      expect(zForConfidence(0.95)).to.be.closeTo(1.959964, 1e-6);
      expect(zForConfidence(0.9)).to.be.closeTo(1.644854, 1e-6);
      expect(zForConfidence(0.99)).to.be.closeTo(2.575829, 1e-6);
    });

    it('Wilson interval of 5 in 100 at 95 %', () => {
      // centre = (0.05 + 3.8415/200) / (1 + 3.8415/100) = 0.069207 / 1.038415 = 0.066647
      // half   = 1.96 / 1.038415 * sqrt(0.0475/100 + 3.8415/40000) = 1.887459 * 0.023899 = 0.045108
      const ci = wilsonInterval(5, 100, 0.95);
      expect(ci.rate).to.equal(0.05);
      expect(ci.low).to.be.closeTo(0.021539, 1e-5);
      expect(ci.high).to.be.closeTo(0.111755, 1e-5);
      expect(wilsonInterval(0, 0, 0.95)).to.deep.equal({ rate: null, low: null, high: null });
    });

    it('sample size for +/- 5 points at 95 % around a 5 % rate is 83', () => {
      // n = 83: z^2/n = 3.841459/83 = 0.046283; p(1-p)/n = 0.0475/83 = 5.7229e-4; z^2/(4n^2) = 1.3941e-4
      //         half = 1.959964 / 1.046283 * sqrt(7.1170e-4) = 1.873264 * 0.026678 = 0.049975 <= 0.05
      // n = 82: half = 1.959964 / 1.046848 * sqrt(7.2210e-4) = 1.872253 * 0.026872 = 0.050312 >  0.05
      expect(wilsonSampleSize(0.05, 0.05, 0.95)).to.equal(83);
      expect(wilsonHalfWidth(0.05, 83, 0.95)).to.be.closeTo(0.049975, 1e-5);
      expect(wilsonHalfWidth(0.05, 82, 0.95)).to.be.closeTo(0.050312, 1e-5);
      // The example, +/- 2 points: Wald would say 1.96^2 x 0.0475 / 0.0004 = 456.2; Wilson needs a little more.
      expect(wilsonSampleSize(0.05, 0.02, 0.95)).to.equal(469);
    });

    it('draw probability: the reviews still needed spread over the studies the period is still expected to see', () => {
      // 3 of 96 reviewed discrepant: planning rate (3 + 2) / (96 + 4) = 0.05 -> 83 needed.
      // 20 drawn after 100 of last period's 1000 studies: (83 - 20) / (1000 - 100) = 63 / 900 = 0.07.
      expect(planningRate({ reviewed: 96, discrepant: 3 })).to.equal(0.05);
      const p = precisionDrawProbability({ targetHalfWidth: 0.05, confidence: 0.95, rate: 0.05 }, { seen: 100, selected: 20 }, 1000, {
        reviewed: 96,
        discrepant: 3,
      });
      expect(p.needed).to.equal(83);
      expect(p.probability).to.be.closeTo(0.07, 1e-12);
      // first period: the rule's rate; target already drawn: 0
      expect(
        precisionDrawProbability({ targetHalfWidth: 0.05, confidence: 0.95, rate: 0.1 }, { seen: 5, selected: 1 }, undefined, { reviewed: 0, discrepant: 0 })
          .probability,
      ).to.equal(0.1);
      expect(
        precisionDrawProbability({ targetHalfWidth: 0.05, confidence: 0.95, rate: 0.1 }, { seen: 500, selected: 90 }, 1000, { reviewed: 96, discrepant: 3 })
          .probability,
      ).to.equal(0);
      // ... and the rule's minimum and maximum bound it
      expect(selectionProbability({ rate: 0, minimum: 5, maximum: 10 }, { seen: 700, selected: 2 }, 1000)).to.be.closeTo(3 / 50, 1e-12); // horizon 750
      expect(selectionProbability({ rate: 0, minimum: 5, maximum: 10 }, { seen: 748, selected: 2 }, 1000)).to.equal(1);
      expect(selectionProbability({ rate: 0.9, minimum: 0, maximum: 10 }, { seen: 70, selected: 10 }, 1000)).to.equal(0);
    });

    it('finds the period before a period key', () => {
      expect(previousPeriodKeyOf('2024-03')).to.equal('2024-02');
      expect(previousPeriodKeyOf('2024-01-01')).to.equal('2023-12-31');
      expect(previousPeriodKeyOf('2024-Q1')).to.equal('2023-Q4');
      expect(previousPeriodKeyOf('2024-W01')).to.equal('2023-W52');
      expect(previousPeriodKeyOf('2021-W01')).to.equal('2020-W53');
      expect(previousPeriodKeyOf('nonsense')).to.equal(undefined);
    });
  });

  describe('validation', () => {
    const base = { id: 's', kind: 'sampling', priority: 'routine', rate: 0.05, period: 'month' };
    it('precision needs targetHalfWidth; the fields need the mode; bounds are checked', () => {
      expect(validateRuleSet([{ ...base, mode: 'precision', targetHalfWidth: 0.02, confidence: 0.95 }]).ok).to.equal(true);
      const missing = validateRuleSet([{ ...base, mode: 'precision' }]);
      expect(missing.ok).to.equal(false);
      if (!missing.ok) expect(missing.errors[0]!.path).to.equal('rules[0].targetHalfWidth');
      const stray = validateRuleSet([{ ...base, targetHalfWidth: 0.02 }]);
      expect(stray.ok).to.equal(false);
      if (!stray.ok) expect(stray.errors[0]!.path).to.equal('rules[0].mode');
      const wide = validateRuleSet([{ ...base, mode: 'precision', targetHalfWidth: 0.7 }]);
      expect(wide.ok).to.equal(false);
      if (!wide.ok) expect(wide.errors[0]!.message).to.match(/at most 0.5/);
    });
  });

  describe('a seeded stream of studies with known discrepancy rates, through evaluate()', () => {
    const TRUE_RATE: Record<string, number> = { 'dr-low': 0.03, 'dr-mid': 0.08, 'dr-high': 0.2 };
    const TARGET = 0.05;
    const rules = rulesFromYaml(`
- id: precision
  kind: sampling
  priority: routine
  rate: 0.1
  period: month
  mode: precision
  targetHalfWidth: ${TARGET}
  confidence: 0.95
`);
    const compiled = compileRuleSet(rules, { samplingSecret: SECRET });
    const state = new Map<string, BucketCounters>();
    const drawnProbabilities: number[] = [];
    const outcomes = new Map<string, { reviewed: number; discrepant: number }>();
    before(() => {
      const rnd = seededRandom(19);
      // Six months, 900 CTs a month per radiologist, signed in order; each drawn study is read at once.
      for (let month = 0; month < 6; month++) {
        for (let i = 0; i < 900; i++) {
          for (const rad of Object.keys(TRUE_RATE)) {
            const signedAt = new Date(Date.UTC(2024, month, 1) + Math.floor((i / 900) * 28 * 86_400_000));
            const uid = `2.25.${month}${i}${rad.length}${Math.floor(rnd() * 1e12)}`;
            const d = evaluate(
              compiled,
              makeInput({
                study: makeStudy({ studyInstanceUid: uid, modalities: ['CT'] }),
                reports: [finalReport('no acute findings', { radiologistId: rad, observedAt: signedAt })],
                samplingState: state,
                now: signedAt,
              }),
            );
            for (const slot of d.samplingSlots) {
              const c = state.get(slot.bucketKey) ?? { seen: 0, selected: 0 };
              const next: BucketCounters = { ...c, seen: c.seen + 1, selected: c.selected + (slot.selected ? 1 : 0) };
              if (slot.selected) {
                drawnProbabilities.push(slot.probability!);
                const discrepant = rnd() < TRUE_RATE[rad]! ? 1 : 0;
                next.reviewed = (c.reviewed ?? 0) + 1;
                next.discrepant = (c.discrepant ?? 0) + discrepant;
                outcomes.set(slot.bucketKey, { reviewed: next.reviewed, discrepant: next.discrepant });
              }
              state.set(slot.bucketKey, next);
            }
          }
        }
      }
    });

    it('from the second month on, every cell reaches the target width, and its interval holds the true rate', () => {
      const buckets = [...state.entries()].map(([key, c]) => {
        const [ruleId, radiologistId, modality, periodKey] = key.split('|') as [string, string, string, string];
        return { ruleId, radiologistId, modality, periodKey, seen: c.seen, selected: c.selected };
      });
      const cells = samplingCells(buckets, outcomes, rules);
      expect(cells).to.have.length(18);
      let covered = 0;
      for (const c of cells.filter((x) => x.period !== '2024-01')) {
        const half = (c.ciHigh! - c.ciLow!) / 2;
        expect(half, `${c.radiologist} ${c.period}`).to.be.at.most(TARGET + 0.003);
        if (c.ciLow! <= TRUE_RATE[c.radiologist]! && TRUE_RATE[c.radiologist]! <= c.ciHigh!) covered++;
        expect(c.mode).to.equal('precision');
      }
      // 15 cells at 95 %: at most a couple may miss the true rate.
      expect(covered).to.be.at.least(13);
    });

    it('the drawn fraction of each cell is the sample size the formula gives, not a fixed rate', () => {
      const rate = (rad: string, period: string) => {
        const c = state.get(`precision|${rad}|CT|${period}`)!;
        return c.selected / c.seen;
      };
      for (const period of ['2024-04', '2024-05', '2024-06']) {
        for (const rad of Object.keys(TRUE_RATE)) {
          const prev = state.get(`precision|${rad}|CT|${previousPeriodKeyOf(period)}`)!;
          const cur = state.get(`precision|${rad}|CT|${period}`)!;
          // The plan is remade before every study from the reviews so far (this and the previous period pooled),
          // so a period ends having drawn the sample size at its final planning rate, give or take the draws' luck.
          const needed = wilsonSampleSize(
            planningRate({ reviewed: prev.reviewed! + cur.reviewed!, discrepant: prev.discrepant! + cur.discrepant! }),
            TARGET,
            0.95,
          );
          expect(cur.selected, `${rad} ${period}: drawn ${cur.selected}, formula ${needed}`).to.be.within(needed * 0.93, needed * 1.07);
          expect(rate(rad, period)).to.be.closeTo(needed / 900, 0.01);
        }
      }
      // A higher rate needs a larger sample: p(1-p) grows towards 0.5.
      expect(rate('dr-high', '2024-06')).to.be.greaterThan(rate('dr-mid', '2024-06'));
      expect(rate('dr-mid', '2024-06')).to.be.greaterThan(rate('dr-low', '2024-06'));
      // The first month had no volume estimate: the rule's rate.
      expect(rate('dr-mid', '2024-01')).to.be.closeTo(0.1, 0.03);
      expect(drawnProbabilities.every((p) => p > 0 && p <= 1)).to.equal(true);
    });
  });
});
