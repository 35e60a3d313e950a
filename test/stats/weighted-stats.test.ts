import { expect } from 'chai';
import { seededRandom } from '../../scripts/lib/seeded-random.js';
import { compileRuleSet, evaluate } from '../../src/rules/evaluate.js';
import type { SecondReadFact } from '../../src/stats/stats.repository.js';
import { computeStats, PEER_REVIEW_COLUMNS, peerReviewCsv, selectionWeight } from '../../src/stats/stats.js';
import { finalReport, makeInput, makeOrder, makeStudy, rulesFromYaml, SECRET } from '../rules/fixtures.js';

describe('statistics with enrichment: inverse-probability weights', () => {
  it('a random draw weighs 1/p, enrichment 1', () => {
    expect(selectionWeight({ kinds: new Set(['sampling']), probability: 0.05 })).to.deep.equal({ selection: 'sampling', weight: 20 });
    expect(selectionWeight({ kinds: new Set(['oncology', 'discordance']), probability: undefined })).to.deep.equal({
      selection: 'discordance,oncology',
      weight: 1,
    });
    expect(selectionWeight(undefined)).to.deep.equal({ selection: 'unknown', weight: 1 });
  });

  it("recovers each radiologist's simulated rate with oncology enrichment on, where the plain rate is biased", () => {
    // Oncology studies (30 %) are all read twice and are harder (25 % discrepant); the rest are
    // drawn at 10 % and 5 % (dr-a) or 10 % (dr-b) are discrepant. The rules and draws are the engine's.
    const rules = rulesFromYaml(`
- { id: oncology, kind: oncology, priority: urgent, codes: { include: [C00-C96], sources: [DG1] }, keywords: [] }
- { id: qa, kind: sampling, priority: routine, rate: 0.1, period: quarter }
`);
    const compiled = compileRuleSet(rules, { samplingSecret: SECRET });
    const base: Record<string, number> = { 'dr-a': 0.05, 'dr-b': 0.1 };
    const rnd = seededRandom(42);
    const facts: SecondReadFact[] = [];
    const truth: Record<string, { n: number; d: number }> = { 'dr-a': { n: 0, d: 0 }, 'dr-b': { n: 0, d: 0 } };
    for (let i = 0; i < 40_000; i++) {
      const rad = i % 2 === 0 ? 'dr-a' : 'dr-b';
      const oncology = rnd() < 0.3;
      const discrepant = rnd() < (oncology ? 0.25 : base[rad]!);
      truth[rad]!.n++;
      if (discrepant) truth[rad]!.d++;
      const d = evaluate(
        compiled,
        makeInput({
          study: makeStudy({ studyInstanceUid: `2.25.${i}${Math.floor(rnd() * 1e9)}` }),
          order: makeOrder({ diagnoses: oncology ? [{ code: 'C34.90', source: 'DG1' }] : [] }),
          reports: [finalReport('No acute abnormality.', { radiologistId: rad })],
        }),
      );
      if (!d.flagged) continue;
      const slot = d.samplingSlots.find((s) => s.selected);
      const { selection, weight } = selectionWeight({ kinds: new Set(d.reasons.map((r) => r.kind)), probability: slot?.probability });
      facts.push({
        caseId: `c${i}`,
        caseCreatedAt: '2024-03-12T12:00:00.000Z',
        reportedAt: '2024-03-12T12:30:00.000Z',
        radpeerScore: discrepant ? '2a' : '1',
        readerId: 'dr-z',
        radiologistId: rad,
        modality: 'CT',
        writtenBackAt: null,
        selection,
        weight,
      });
    }
    const s = computeStats(facts, { from: '2024-03-01T00:00:00.000Z', to: '2024-04-01T00:00:00.000Z', bucket: 'week' });
    for (const rad of ['dr-a', 'dr-b']) {
      const g = s.byRadiologist.find((x) => x.radiologistId === rad)!;
      const rate = truth[rad]!.d / truth[rad]!.n; // dr-a: 0.3 x 0.25 + 0.7 x 0.05 = 0.11; dr-b: 0.145
      expect(g.weightedDiscordanceRate!, rad).to.be.closeTo(rate, 0.015);
      expect(g.discordanceCiLow!).to.be.at.most(rate);
      expect(g.discordanceCiHigh!).to.be.at.least(rate);
      // The plain rate over the enriched mix is far off.
      expect(g.discordanceRate! - rate, rad).to.be.greaterThan(0.05);
    }
    const bySelection = Object.fromEntries(s.enrichment.map((e) => [e.selection, e]));
    expect(bySelection['oncology']).to.deep.include({ meanWeight: 1, minWeight: 1, maxWeight: 1 });
    expect(bySelection['sampling']!.meanWeight).to.equal(10);
    expect(bySelection['sampling']!.secondReads).to.be.closeTo(2800, 200);
  });

  it('turnaround keeps seconds and minutes (four decimals of an hour)', () => {
    const f: SecondReadFact = {
      caseId: 'c',
      caseCreatedAt: '2026-03-02T08:00:00.000Z',
      reportedAt: '2026-03-02T08:00:45.000Z',
      radpeerScore: '1',
      readerId: 'r',
      radiologistId: 'x',
      modality: 'CT',
      writtenBackAt: null,
    };
    const s = computeStats([f], { from: '2026-03-01T00:00:00.000Z', to: '2026-03-03T00:00:00.000Z', bucket: 'day' });
    expect(s.totals.turnaroundHours.p50).to.equal(0.0125);
  });

  it('peer-review CSV: one row per second read in the documented columns, arbitrated false', () => {
    const facts: SecondReadFact[] = [
      {
        caseId: 'c1',
        caseCreatedAt: '2026-03-02T08:00:00.000Z',
        reportedAt: '2026-03-02T09:00:00.000Z',
        radpeerScore: '2b',
        readerId: 'dr-b',
        radiologistId: 'RAD7',
        modality: 'CT',
        writtenBackAt: null,
        firstReadAt: '2026-03-02T07:00:00.000Z',
        selection: 'sampling',
        weight: 20,
      },
      {
        caseId: 'c2',
        caseCreatedAt: '2026-03-03T08:00:00.000Z',
        reportedAt: '2026-03-03T10:00:00.000Z',
        radpeerScore: '1',
        readerId: 'dr-a',
        radiologistId: null,
        modality: 'MR',
        writtenBackAt: null,
        selection: 'oncology',
        weight: 1,
      },
    ];
    const lines = peerReviewCsv(facts).split('\r\n');
    expect(lines[0]).to.equal(PEER_REVIEW_COLUMNS.join(','));
    expect(lines[0]).to.equal(
      'case_id,first_reader,second_reader,modality,radpeer_score,discrepant_2plus,significant_2b_plus,first_read_at,case_opened_at,second_read_at,arbitrated,selection,weight',
    );
    expect(lines[1]).to.equal('c1,RAD7,dr-b,CT,2b,true,true,2026-03-02T07:00:00.000Z,2026-03-02T08:00:00.000Z,2026-03-02T09:00:00.000Z,false,sampling,20');
    expect(lines[2]).to.equal('c2,,dr-a,MR,1,false,false,,2026-03-03T08:00:00.000Z,2026-03-03T10:00:00.000Z,false,oncology,1');
    expect(lines).to.have.length(4);
  });
});
