import type { Db } from '../db/database.js';
import { deliveriesOfCases } from '../forwarding/outbox.repository.js';
import { uidPseudonyms } from '../forwarding/exclusion.repository.js';
import { PseudonymKind } from '../forwarding/pseudonym.service.js';
import type { CaseRow } from '../cases/case.table.js';
import type { Principal } from './auth.js';
import { presentCases } from './cases.routes.js';

type Json = Record<string, unknown>;

/**
 * Cases as the caller may see them. Admin, QA and system get the real
 * identifiers; a reader whose copy of the study was de-identified sees it
 * under the pseudonyms their own system shows (what they can match), never the
 * real StudyInstanceUID, accession or patient id, nor rule evidence quoting the
 * first report. Until the delivery is planned and its pseudonyms stored, a
 * case that may go out de-identified shows null identifiers.
 */
export async function presentCasesFor(db: Db, principal: Principal, rows: readonly CaseRow[]): Promise<Json[]> {
  const presented = await presentCases(db, rows);
  if (principal.role !== 'reader') return presented;
  return Promise.all(rows.map((row, i) => readerView(db, row, presented[i]!)));
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
  return pseudonymousFor(row, deliveries.map((d) => ({ deidentified: d.deidentify === 1 })));
}

interface DeliveryView {
  destinationId: string;
  deidentified: boolean;
}

export async function readerView(db: Db, row: CaseRow, presented: Json): Promise<Json> {
  const deliveries = (presented['deliveries'] ?? []) as DeliveryView[];
  const deidentified = deliveries.filter((d) => d.deidentified);
  if (!pseudonymousFor(row, deliveries)) return row.blinded === 1 ? { ...presented, reasons: withoutEvidence(presented['reasons']) } : presented;

  const destinationId = (deidentified.find((d) => d.destinationId === row.destination_id) ?? deidentified[0])?.destinationId ?? row.destination_id;
  const study = await db.selectFrom('studies').select(['patient_id', 'accession_number']).where('study_instance_uid', '=', row.study_instance_uid).executeTakeFirst();
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
      const p = await db
        .selectFrom('pseudonyms')
        .select('pseudonym')
        .where('destination_id', '=', destinationId)
        .where('kind', '=', kind)
        .where('original', '=', original)
        .executeTakeFirst();
      pseudo[key] = p?.pseudonym ?? null;
    }
  }

  const view: Json = {
    ...presented,
    studyInstanceUid: pseudo.uid,
    accessionNumber: pseudo.accession,
    patientId: pseudo.patientId,
    deidentified: true,
    reasons: withoutEvidence(presented['reasons']),
  };
  // Which instances were kept back, under the UIDs the reader got; the source's description and the finding are not theirs to read.
  const excluded = (presented['excludedInstances'] ?? []) as Json[];
  const pseudoUids = await uidPseudonyms(db, destinationId ?? '', excluded.map((e) => String(e['sopInstanceUid'])));
  view['excludedInstances'] = excluded.map((e) => ({ ...e, sopInstanceUid: pseudoUids.get(String(e['sopInstanceUid'])) ?? null, seriesDescription: null, detail: null }));
  // Priors under the UIDs the reader got (null until sent); their dates, descriptions and accessions are the source's.
  const priors = (presented['priors'] ?? []) as Json[];
  const priorUids = await uidPseudonyms(db, destinationId ?? '', priors.map((p) => String(p['studyInstanceUid'])));
  view['priors'] = priors.map((p) => ({
    studyInstanceUid: priorUids.get(String(p['studyInstanceUid'])) ?? null,
    studyDate: null,
    modalities: p['modalities'],
    studyDescription: null,
    accessionNumber: null,
    state: p['state'],
    detail: null,
    report: p['report'] ? { resultStatus: (p['report'] as Json)['resultStatus'] } : null,
  }));
  const writeBack = presented['writeBack'] as Json | null | undefined;
  // The RIS's answer is about the real study.
  if (writeBack) view['writeBack'] = { state: writeBack['state'], attempts: writeBack['attempts'], updatedAt: writeBack['updatedAt'] };
  // Whatever else quotes a real identifier (an error text, a field added later) shows the pseudonym instead.
  const replacements: [string, string][] = [];
  for (const key of ['uid', 'accession', 'patientId'] as const) {
    const original = real[key];
    if (original && original.length >= 3) replacements.push([original, pseudo[key] ?? '[redacted]']);
  }
  return replaceDeep(view, replacements) as Json;
}

function withoutEvidence(reasons: unknown): unknown {
  return Array.isArray(reasons) ? reasons.map((r: Json) => ({ ruleId: r['ruleId'], kind: r['kind'] })) : reasons;
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
