import type { Db } from '../db/database.js';
import type { Reason, SamplingSlot } from '../rules/rule.types.js';
import { selectionWeight } from './stats.js';
import { OutboundKind, OutboundState } from '../states.js';
import { arbitrationsOfCases } from '../reports/arbitration.repository.js';
import type { CaseArbitrationRow } from '../reports/arbitration.table.js';

function arbitrationFact(a: CaseArbitrationRow | undefined, secondReaderId: string): SecondReadFact['arbitration'] {
  if (!a) return null;
  const done = a.state === 'done';
  return { triggerScore: a.trigger_score, secondReaderId, verdict: done ? a.verdict : null, finalScore: done ? a.final_score : null };
}

/** One second read, as the statistics count it: the case, its scores and the times that make its turnaround. */
export interface SecondReadFact {
  caseId: string;
  caseCreatedAt: string;
  /** The first second report (version 1). */
  reportedAt: string;
  /** The latest version's score: an addendum may change it. */
  radpeerScore: string;
  /** The second reader. */
  readerId: string;
  /** The first reader (primary radiologist, OBR-32), whose reads are being reviewed. */
  radiologistId: string | null;
  modality: string | null;
  /** When the RIS accepted the first write-back (AA). */
  writtenBackAt: string | null;
  /** When the first reader's final report was observed (OBR-22/OBR-7), else received. */
  firstReadAt?: string | null;
  /**
   * Why the study was read twice: `sampling` (a random draw), else the kinds of the rules
   * that flagged it (enrichment: oncology, discordance, high-stakes, manual), comma-joined.
   */
  selection?: string;
  /**
   * Inverse-probability weight: 1 / the probability the study had of being drawn for a
   * random sample; 1 for enrichment (every such study is read twice).
   */
  weight?: number;
  /** The case's latest arbitration (a rule sent the discrepant second read to a third reader), if any. */
  arbitration?: { triggerScore: string; secondReaderId: string; verdict: string | null; finalScore: string | null } | null;
}

const CHUNK = 500;

function chunks<T>(items: readonly T[]): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += CHUNK) out.push(items.slice(i, i + CHUNK));
  return out;
}

/**
 * Second reads whose first report was stored in [from, to). A handful of plain
 * queries joined in JS: portable between SQLite and PostgreSQL, no date functions.
 */
export async function secondReadFacts(db: Db, from: string, to: string): Promise<SecondReadFact[]> {
  const firsts = await db
    .selectFrom('second_reports')
    .select(['case_id', 'created_at', 'reader_id'])
    .where('version', '=', 1)
    .where('created_at', '>=', from)
    .where('created_at', '<', to)
    .orderBy('created_at')
    .execute();
  if (firsts.length === 0) return [];
  const caseIds = firsts.map((f) => f.case_id);
  const latest = new Map<string, { version: number; score: string; readerId: string }>();
  const cases = new Map<string, { created_at: string; study_instance_uid: string }>();
  const writtenBack = new Map<string, string>();
  const selection = new Map<string, { kinds: Set<string>; probability: number | undefined }>();
  const arbitrations = new Map<string, CaseArbitrationRow>();
  for (const ids of chunks(caseIds)) {
    for (const r of await db.selectFrom('second_reports').select(['case_id', 'version', 'radpeer_score', 'reader_id']).where('case_id', 'in', ids).execute()) {
      const seen = latest.get(r.case_id);
      if (!seen || r.version > seen.version) latest.set(r.case_id, { version: r.version, score: r.radpeer_score, readerId: r.reader_id });
    }
    for (const c of await db.selectFrom('cases').select(['id', 'created_at', 'study_instance_uid']).where('id', 'in', ids).execute()) cases.set(c.id, c);
    for (const d of await db
      .selectFrom('decisions')
      .select(['case_id', 'reasons', 'sampling_slots'])
      .where('case_id', 'in', ids)
      .where('flagged', '=', 1)
      .execute()) {
      const s = selection.get(d.case_id!) ?? { kinds: new Set<string>(), probability: undefined as number | undefined };
      for (const r of JSON.parse(d.reasons) as Reason[]) s.kinds.add(r.kind);
      for (const slot of JSON.parse(d.sampling_slots) as SamplingSlot[]) if (slot.selected && slot.probability !== undefined) s.probability = slot.probability;
      selection.set(d.case_id!, s);
    }
    for (const a of await arbitrationsOfCases(db, ids)) arbitrations.set(a.case_id, a);
    const accepted = await db
      .selectFrom('outbound_messages')
      .select(['case_id', 'updated_at'])
      .where('case_id', 'in', ids)
      .where('kind', '=', OutboundKind.writeBack)
      .where('state', '=', OutboundState.accepted)
      .execute();
    for (const a of accepted) {
      const t = writtenBack.get(a.case_id);
      if (!t || a.updated_at < t) writtenBack.set(a.case_id, a.updated_at);
    }
  }
  const studyUids = [...new Set([...cases.values()].map((c) => c.study_instance_uid))];
  const modality = new Map<string, string>();
  const radiologist = new Map<string, { id: string; rowId: string; at: string }>();
  for (const uids of chunks(studyUids)) {
    for (const s of await db
      .selectFrom('series')
      .select(['study_instance_uid', 'modality'])
      .where('study_instance_uid', 'in', uids)
      .orderBy('series_instance_uid')
      .execute()) {
      // A study's first imaging series names it; SR/PR/KO objects ride along with most studies.
      if (!s.modality || ['SR', 'PR', 'KO'].includes(s.modality)) continue;
      if (!modality.has(s.study_instance_uid)) modality.set(s.study_instance_uid, s.modality);
    }
    const reports = await db
      .selectFrom('report_versions')
      .select(['id', 'linked_study_uid', 'radiologist_id', 'observed_at', 'received_at'])
      .where('linked_study_uid', 'in', uids)
      .where('link_state', '=', 'linked')
      .where('result_status', 'in', ['F', 'C'])
      .execute();
    for (const r of reports) {
      if (!r.linked_study_uid || !r.radiologist_id) continue;
      const seen = radiologist.get(r.linked_study_uid);
      if (!seen || r.id > seen.rowId) radiologist.set(r.linked_study_uid, { id: r.radiologist_id, rowId: r.id, at: r.observed_at ?? r.received_at });
    }
  }
  return firsts.flatMap((f) => {
    const c = cases.get(f.case_id);
    if (!c) return [];
    const last = latest.get(f.case_id);
    return [
      {
        caseId: f.case_id,
        caseCreatedAt: c.created_at,
        reportedAt: f.created_at,
        radpeerScore: last?.score ?? '1',
        readerId: last?.readerId ?? f.reader_id,
        radiologistId: radiologist.get(c.study_instance_uid)?.id ?? null,
        modality: modality.get(c.study_instance_uid) ?? null,
        writtenBackAt: writtenBack.get(f.case_id) ?? null,
        firstReadAt: radiologist.get(c.study_instance_uid)?.at ?? null,
        ...selectionWeight(selection.get(f.case_id)),
        arbitration: arbitrationFact(arbitrations.get(f.case_id), f.reader_id),
      },
    ];
  });
}
