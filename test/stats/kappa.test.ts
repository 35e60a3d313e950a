import { expect } from 'chai';
import { agreementStats, cohensKappa } from '../../src/stats/kappa.js';
import { peerReviewCsv } from '../../src/stats/stats.js';
import type { SecondReadFact } from '../../src/stats/stats.repository.js';

describe("Cohen's kappa and arbitration statistics", () => {
  it('matches a hand-worked 2x2 table', () => {
    //                         rater 2: 1   rater 2: 2+  | rater 1 total
    //   rater 1: RADPEER 1        20            5       |     25
    //   rater 1: RADPEER 2+       10           15       |     25
    //   rater 2 total             30           20       |     50
    // po = (20 + 15) / 50 = 0.7
    // pe = (25 * 30 + 25 * 20) / 50^2 = (750 + 500) / 2500 = 0.5
    // kappa = (0.7 - 0.5) / (1 - 0.5) = 0.4
    const r = cohensKappa({ agreeAgree: 20, agreeDiscrepant: 5, discrepantAgree: 10, discrepantDiscrepant: 15 });
    expect(r).to.deep.equal({ n: 50, observedAgreement: 0.7, chanceAgreement: 0.5, kappa: 0.4 });
  });

  it('is 1 for perfect agreement, negative below chance, and undefined when both raters use one category only', () => {
    // 10 / 0 / 0 / 10: po = 1, pe = (10*10 + 10*10) / 400 = 0.5, kappa = 1.
    expect(cohensKappa({ agreeAgree: 10, agreeDiscrepant: 0, discrepantAgree: 0, discrepantDiscrepant: 10 }).kappa).to.equal(1);
    // 0 / 5 / 5 / 0: po = 0, pe = (5*5 + 5*5) / 100 = 0.5, kappa = (0 - 0.5) / 0.5 = -1.
    expect(cohensKappa({ agreeAgree: 0, agreeDiscrepant: 5, discrepantAgree: 5, discrepantDiscrepant: 0 }).kappa).to.equal(-1);
    // Every item 2+ by both: pe = 1, kappa has no value.
    expect(cohensKappa({ agreeAgree: 0, agreeDiscrepant: 0, discrepantAgree: 0, discrepantDiscrepant: 7 })).to.deep.equal({
      n: 7,
      observedAgreement: 1,
      chanceAgreement: 1,
      kappa: null,
    });
    expect(cohensKappa({ agreeAgree: 0, agreeDiscrepant: 0, discrepantAgree: 0, discrepantDiscrepant: 0 }).kappa).to.equal(null);
  });

  it('groups arbitrated reads per first reader, second reader and modality, and counts confirmed second reads', () => {
    const base = { caseCreatedAt: '2026-03-02T08:00:00.000Z', reportedAt: '2026-03-02T09:00:00.000Z', writtenBackAt: null };
    const f = (i: number, o: Partial<SecondReadFact>): SecondReadFact => ({
      ...base,
      caseId: `c${i}`,
      radpeerScore: '2b',
      readerId: 'dr-a',
      radiologistId: 'RAD7',
      modality: 'CT',
      ...o,
    });
    const arb = (triggerScore: string, verdict: string | null, finalScore: string | null, secondReaderId = 'dr-a') => ({
      triggerScore,
      secondReaderId,
      verdict,
      finalScore,
    });
    const facts = [
      // RAD7 / dr-a / CT: second reader 2+ (2b, 3a, 2a) and 1; arbitrator: 1 (agree-first), 2b (agree-second), 2a (other), 1 (agree-first).
      f(1, { arbitration: arb('2b', 'agree-first', '1') }),
      f(2, { arbitration: arb('3a', 'agree-second', '3a') }),
      f(3, { arbitration: arb('2a', 'other', '2a') }),
      f(4, { radpeerScore: '1', arbitration: arb('1', 'agree-first', '1') }),
      // Another pair; one still open (requested, not decided); one never arbitrated.
      f(5, { readerId: 'dr-b', modality: 'MR', arbitration: arb('3b', 'agree-second', '3b', 'dr-b') }),
      f(6, { arbitration: arb('2b', null, null) }),
      f(7, { radpeerScore: '1', arbitration: null }),
    ];
    const s = agreementStats(facts);
    expect(s.arbitration).to.deep.equal({ requested: 6, decided: 5, confirmedFirst: 2, confirmedSecond: 2, other: 1, confirmedSecondShare: 0.4 });
    const ct = s.interReaderAgreement.find((g) => g.readerId === 'dr-a')!;
    // table: both 1 = case 4; second 2+ / arbitrator 1 = case 1; both 2+ = cases 2, 3.
    expect(ct.table).to.deep.equal({ agreeAgree: 1, agreeDiscrepant: 0, discrepantAgree: 1, discrepantDiscrepant: 2 });
    // po = 3/4 = 0.75; pe = (1*2 + 3*2) / 16 = 0.5; kappa = 0.25 / 0.5 = 0.5
    expect(ct).to.include({ radiologistId: 'RAD7', modality: 'CT', n: 4, observedAgreement: 0.75, chanceAgreement: 0.5, kappa: 0.5 });
    const mr = s.interReaderAgreement.find((g) => g.readerId === 'dr-b')!;
    expect(mr).to.include({ modality: 'MR', n: 1, kappa: null });
    expect(s.interReaderAgreementTotal.n).to.equal(5);
    // The peer-review export marks the decided ones (an open arbitration is not yet one).
    const arbitrated = peerReviewCsv(facts)
      .trim()
      .split('\r\n')
      .slice(1)
      .map((l) => l.split(',')[10]);
    expect(arbitrated).to.deep.equal(['true', 'true', 'true', 'true', 'true', 'false', 'false']);
  });
});
