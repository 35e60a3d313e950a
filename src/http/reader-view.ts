import { storedPseudonym, studyIdentifiers } from '../cases/case-view.repository.js';
import type { CaseRow } from '../cases/case.table.js';
import type { Db } from '../db/database.js';
import { uidPseudonyms } from '../forwarding/exclusion.repository.js';
import { deliveriesOfCases } from '../forwarding/outbox.repository.js';
import { PseudonymKind } from '../forwarding/pseudonym.service.js';
import type { Principal } from './auth.js';
import { presentCases } from './case.presenter.js';
import type { ArbitratorCaseView, CaseForCallerView, CaseView } from './cases.schemas.js';
import { arbitrationsOfCases } from '../reports/arbitration.repository.js';
import { blindCaseForArbitrator, presentArbitrationForStaff } from '../reports/arbitration.view.js';

/**
 * Cases as the caller may see them. Admin, QA and system get the real
 * identifiers; a reader whose copy of the study was de-identified sees it
 * under the pseudonyms their own system shows (what they can match), never the
 * real StudyInstanceUID, accession or patient id, nor rule evidence quoting the
 * first report. Until the delivery is planned and its pseudonyms stored, a
 * case that may go out de-identified shows null identifiers.
 */
export async function presentCasesFor(db: Db, principal: Principal, rows: readonly CaseRow[]): Promise<CaseForCallerView[]> {
  const presented = await presentCases(db, rows);
  const arbitrations = await arbitrationsOfCases(
    db,
    rows.map((r) => r.id),
  );
  const latest = (caseId: string) => arbitrations.filter((a) => a.case_id === caseId).at(-1);
  if (principal.role !== 'reader') {
    return presented.map((p, i) => {
      const a = latest(rows[i]!.id);
      return { ...p, arbitration: a ? presentArbitrationForStaff(a, rows[i]!.state) : null };
    });
  }
  return Promise.all(
    rows.map(async (row, i) => {
      const view = await readerView(db, row, presented[i]!);
      const a = latest(row.id);
      // The third reader of a case is not its second reader: blinded to both reads (arbitration.view.ts).
      // The whitelist of fields is arbitration.view.ts's; the shape is ArbitratorCase's (checked against it in the API tests).
      if (a && row.reader_id !== principal.readerId && a.arbitrator_id === principal.readerId) return blindCaseForArbitrator(view, a) as ArbitratorCaseView;
      return { ...view, arbitration: a ? { state: a.state } : null };
    }),
  );
}

/**
 * Whether a reader must see this case under pseudonyms. NULL `deidentify`
 * with no delivery yet: the destination's setting will decide; the stricter
 * answer holds until then.
 */
export function pseudonymousFor(row: Pick<CaseRow, 'deidentify'>, deliveries: readonly { deidentified: boolean }[]): boolean {
  return deliveries.some((d) => d.deidentified) || row.deidentify === 1 || (deliveries.length === 0 && row.deidentify === null);
}

/** For other reader-facing routes (e.g. the primary report): true when the reader's copy is, or may be, de-identified. */
export async function readerSeesPseudonyms(db: Db, row: CaseRow): Promise<boolean> {
  const deliveries = await deliveriesOfCases(db, [row.id]);
  return pseudonymousFor(
    row,
    deliveries.map((d) => ({ deidentified: d.deidentify === 1 })),
  );
}

export async function readerView(db: Db, row: CaseRow, presented: CaseView): Promise<CaseView> {
  const deliveries = presented.deliveries;
  const deidentified = deliveries.filter((d) => d.deidentified);
  if (!pseudonymousFor(row, deliveries)) return row.blinded === 1 ? { ...presented, reasons: withoutEvidence(presented.reasons) } : presented;

  const destinationId = (deidentified.find((d) => d.destinationId === row.destination_id) ?? deidentified[0])?.destinationId ?? row.destination_id;
  const study = await studyIdentifiers(db, row.study_instance_uid);
  const real = {
    uid: row.study_instance_uid,
    accession: row.accession_number ?? study?.accession_number ?? null,
    patientId: study?.patient_id ?? null,
  };
  const pseudo = { uid: null as string | null, accession: null as string | null, patientId: null as string | null };
  if (destinationId) {
    const wanted: [keyof typeof pseudo, string, string | null][] = [
      ['uid', PseudonymKind.uid, real.uid],
      ['accession', PseudonymKind.accession, real.accession],
      ['patientId', PseudonymKind.patientId, real.patientId],
    ];
    for (const [key, kind, original] of wanted) {
      if (!original) continue;
      pseudo[key] = await storedPseudonym(db, destinationId, kind, original);
    }
  }

  // Which instances were kept back, under the UIDs the reader got; the source's description and the finding are not theirs to read.
  const excluded = presented.excludedInstances;
  const pseudoUids = await uidPseudonyms(
    db,
    destinationId ?? '',
    excluded.map((e) => String(e.sopInstanceUid)),
  );
  const writeBack = presented.writeBack;
  const view: CaseView = {
    ...presented,
    studyInstanceUid: pseudo.uid,
    accessionNumber: pseudo.accession,
    patientId: pseudo.patientId,
    deidentified: true,
    reasons: withoutEvidence(presented.reasons),
    excludedInstances: excluded.map((e) => ({ ...e, sopInstanceUid: pseudoUids.get(String(e.sopInstanceUid)) ?? null, seriesDescription: null, detail: null })),
    // The RIS's answer is about the real study.
    writeBack: writeBack ? { state: writeBack.state, attempts: writeBack.attempts, updatedAt: writeBack.updatedAt } : null,
  };
  // Priors under the UIDs the reader got (null until sent); their dates, descriptions and accessions are the source's.
  const priors = presented.priors ?? [];
  const priorUids = await uidPseudonyms(
    db,
    destinationId ?? '',
    priors.map((p) => p.studyInstanceUid ?? ''),
  );
  view.priors = priors.map((p) => ({
    studyInstanceUid: priorUids.get(p.studyInstanceUid ?? '') ?? null,
    studyDate: null,
    modalities: p.modalities,
    studyDescription: null,
    accessionNumber: null,
    state: p.state,
    detail: null,
    report: p.report ? { resultStatus: p.report.resultStatus } : null,
  }));
  // Whatever else quotes a real identifier (an error text, a field added later) shows the pseudonym instead.
  const replacements: [string, string][] = [];
  for (const key of ['uid', 'accession', 'patientId'] as const) {
    const original = real[key];
    if (original && original.length >= 3) replacements.push([original, pseudo[key] ?? '[redacted]']);
  }
  return replaceDeep(view, replacements) as CaseView;
}

function withoutEvidence(reasons: CaseView['reasons']): CaseView['reasons'] {
  return reasons.map((r) => ({ ruleId: r.ruleId, kind: r.kind }));
}

function replaceDeep(v: unknown, replacements: readonly [string, string][]): unknown {
  if (typeof v === 'string') {
    let s = v;
    for (const [from, to] of replacements) s = s.split(from).join(to);
    return s;
  }
  if (Array.isArray(v)) return v.map((x) => replaceDeep(x, replacements));
  if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, replaceDeep(x, replacements)]));
  return v;
}
