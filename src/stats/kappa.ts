import type { SecondReadFact } from './stats.repository.js';

/**
 * A 2x2 table of two raters on the same items, RADPEER 1 ("agree") vs 2+ ("discrepant"):
 * `agreeAgree` both 1; `agreeDiscrepant` rater 1 said 1, rater 2 said 2+; and so on.
 */
export interface AgreementTable {
  agreeAgree: number;
  agreeDiscrepant: number;
  discrepantAgree: number;
  discrepantDiscrepant: number;
}

export interface KappaResult {
  n: number;
  /** Share of items both raters put in the same category. */
  observedAgreement: number | null;
  /** Agreement expected by chance from each rater's own proportions. */
  chanceAgreement: number | null;
  /** Cohen's kappa; null when undefined (no items, or both raters used one and the same category only). */
  kappa: number | null;
}

/**
 * Cohen's kappa of a 2x2 table: po = (a + d) / n, pe = ((a + b)(a + c) + (c + d)(b + d)) / n^2,
 * kappa = (po - pe) / (1 - pe). Hand-written: a few lines of textbook arithmetic, and a search of
 * the npm package list for kappa / Cohen found no maintained package that computes it.
 */
export function cohensKappa(t: AgreementTable): KappaResult {
  const a = t.agreeAgree;
  const b = t.agreeDiscrepant;
  const c = t.discrepantAgree;
  const d = t.discrepantDiscrepant;
  const n = a + b + c + d;
  if (n === 0) return { n, observedAgreement: null, chanceAgreement: null, kappa: null };
  const po = (a + d) / n;
  const pe = ((a + b) * (a + c) + (c + d) * (b + d)) / (n * n);
  const r4 = (x: number) => Math.round(x * 10_000) / 10_000;
  return { n, observedAgreement: r4(po), chanceAgreement: r4(pe), kappa: pe === 1 ? null : r4((po - pe) / (1 - pe)) };
}

export interface PairAgreement extends KappaResult {
  /** The first reader (primary radiologist) whose read both rated. */
  radiologistId: string | null;
  /** The second reader. */
  readerId: string;
  modality: string | null;
  table: AgreementTable;
}

export interface ArbitrationStats {
  /** Second reads of the period that a rule sent to arbitration. */
  requested: number;
  decided: number;
  confirmedFirst: number;
  confirmedSecond: number;
  other: number;
  /** confirmedSecond / decided: how often the third reader upheld the second read. */
  confirmedSecondShare: number | null;
}

export interface AgreementStats {
  /**
   * Inter-reader agreement on the first read, RADPEER 1 vs 2+, between the second reader (their score)
   * and the third reader (the score after arbitration: agree-first = 1, agree-second = the second read's,
   * other = the arbitrator's), per first reader, second reader and modality; over decided arbitrations.
   */
  interReaderAgreement: PairAgreement[];
  /** The same over every decided arbitration of the period. */
  interReaderAgreementTotal: KappaResult & { table: AgreementTable };
  arbitration: ArbitrationStats;
}

const emptyTable = (): AgreementTable => ({ agreeAgree: 0, agreeDiscrepant: 0, discrepantAgree: 0, discrepantDiscrepant: 0 });

function add(t: AgreementTable, first: string, second: string): void {
  const one = first === '1';
  const two = second === '1';
  if (one && two) t.agreeAgree++;
  else if (one) t.agreeDiscrepant++;
  else if (two) t.discrepantAgree++;
  else t.discrepantDiscrepant++;
}

export function agreementStats(facts: readonly SecondReadFact[]): AgreementStats {
  const groups = new Map<string, PairAgreement>();
  const total = emptyTable();
  const arb: ArbitrationStats = { requested: 0, decided: 0, confirmedFirst: 0, confirmedSecond: 0, other: 0, confirmedSecondShare: null };
  for (const f of facts) {
    const a = f.arbitration;
    if (!a) continue;
    arb.requested++;
    if (!a.verdict || !a.finalScore) continue;
    arb.decided++;
    if (a.verdict === 'agree-first') arb.confirmedFirst++;
    else if (a.verdict === 'agree-second') arb.confirmedSecond++;
    else arb.other++;
    const key = JSON.stringify([f.radiologistId, a.secondReaderId, f.modality]);
    let g = groups.get(key);
    if (!g) {
      g = {
        radiologistId: f.radiologistId,
        readerId: a.secondReaderId,
        modality: f.modality,
        table: emptyTable(),
        n: 0,
        observedAgreement: null,
        chanceAgreement: null,
        kappa: null,
      };
      groups.set(key, g);
    }
    add(g.table, a.triggerScore, a.finalScore);
    add(total, a.triggerScore, a.finalScore);
  }
  arb.confirmedSecondShare = arb.decided === 0 ? null : Math.round((arb.confirmedSecond / arb.decided) * 10_000) / 10_000;
  const pairs = [...groups.values()]
    .map((g) => ({ ...g, ...cohensKappa(g.table) }))
    .sort(
      (x, y) =>
        (x.radiologistId ?? '').localeCompare(y.radiologistId ?? '') ||
        x.readerId.localeCompare(y.readerId) ||
        (x.modality ?? '').localeCompare(y.modality ?? ''),
    );
  return { interReaderAgreement: pairs, interReaderAgreementTotal: { ...cohensKappa(total), table: total }, arbitration: arb };
}
