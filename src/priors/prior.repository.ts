import type { Db } from '../db/database.js';
import { CaseState, DeliveryState, StudyState } from '../states.js';
import type { FoundStudy } from './pacs.client.js';
import { PriorState, type CasePriorRow } from './prior.table.js';

/** Records the priors found for a case (state `found`); one already recorded stays as it is. */
export async function insertFoundPriors(db: Db, caseId: string, found: readonly FoundStudy[], now: string): Promise<void> {
  for (const s of found) {
    const here = await db.selectFrom('studies').select('study_instance_uid').where('study_instance_uid', '=', s.studyInstanceUid).executeTakeFirst();
    await db
      .insertInto('case_priors')
      .values({
        case_id: caseId,
        study_instance_uid: s.studyInstanceUid,
        study_date: s.studyDate,
        modalities: JSON.stringify(s.modalities),
        study_description: s.studyDescription,
        accession_number: s.accessionNumber,
        state: PriorState.found,
        detail: null,
        instances_expected: s.numberOfInstances,
        origin: here ? 'gateway' : 'pacs',
        created_at: now,
        updated_at: now,
      })
      .onConflict((oc) => oc.columns(['case_id', 'study_instance_uid']).doNothing())
      .execute();
  }
}

export async function setPriorState(db: Db, caseId: string, studyInstanceUid: string, state: PriorState, detail: string | null, now: string): Promise<void> {
  await db
    .updateTable('case_priors')
    .set({ state, detail, updated_at: now })
    .where('case_id', '=', caseId)
    .where('study_instance_uid', '=', studyInstanceUid)
    .execute();
}

/** The report versions the RIS sent for these studies (linked to them in the gateway), oldest first. */
export async function reportsLinkedToStudies(db: Db, studyUids: readonly string[]) {
  if (studyUids.length === 0) return [];
  return db
    .selectFrom('report_versions')
    .select(['id', 'linked_study_uid', 'result_status', 'observed_at', 'received_at'])
    .where('link_state', '=', 'linked')
    .where('linked_study_uid', 'in', studyUids)
    .orderBy('received_at')
    .execute();
}

export async function priorsOfCases(db: Db, caseIds: readonly string[]): Promise<CasePriorRow[]> {
  if (caseIds.length === 0) return [];
  return db.selectFrom('case_priors').selectAll().where('case_id', 'in', caseIds).orderBy('study_date', 'desc').orderBy('study_instance_uid').execute();
}

/**
 * Whether the study came into the gateway as some case's prior: read-only context, no case and no rules of
 * its own. A study that was already here when it was found as a prior keeps its own life cycle.
 */
export async function isPriorStudy(db: Db, studyInstanceUid: string): Promise<boolean> {
  const row = await db
    .selectFrom('case_priors')
    .select('case_id')
    .where('study_instance_uid', '=', studyInstanceUid)
    .where('origin', '=', 'pacs')
    .executeTakeFirst();
  return row !== undefined;
}

/** Which of the given studies the gateway holds, with their instance counts. */
export async function localInstanceCount(db: Db, studyInstanceUid: string): Promise<number | undefined> {
  const row = await db.selectFrom('studies').select('instance_count').where('study_instance_uid', '=', studyInstanceUid).executeTakeFirst();
  return row ? Number(row.instance_count) : undefined;
}

/** Procedure codes of the orders linked to a study (OBR-4.1), for relevance. */
export async function procedureCodesOfStudy(db: Db, studyInstanceUid: string): Promise<string[]> {
  const rows = await db
    .selectFrom('orders')
    .select('procedure_code')
    .where('linked_study_uid', '=', studyInstanceUid)
    .where('procedure_code', 'is not', null)
    .execute();
  return [...new Set(rows.map((r) => r.procedure_code!))];
}

/**
 * Retrieved priors ready to go with their case: the prior study is stable (all of it is here), the case's
 * own study has a live delivery to the case's destination, and the prior has none yet. The prior goes the
 * same way as that delivery (same destination, same de-identification).
 */
export async function priorsReadyToForward(db: Db, caseId?: string) {
  let q = db
    .selectFrom('case_priors as p')
    .innerJoin('cases as c', 'c.id', 'p.case_id')
    .innerJoin('studies as s', 's.study_instance_uid', 'p.study_instance_uid')
    .innerJoin('deliveries as d', (j) => j.onRef('d.case_id', '=', 'c.id').onRef('d.study_instance_uid', '=', 'c.study_instance_uid'))
    .select(['p.case_id', 'p.study_instance_uid', 'd.destination_id', 'd.deidentify'])
    .where('p.state', '=', PriorState.retrieved)
    .where('s.state', '=', StudyState.stable)
    .where('c.state', 'in', [CaseState.forwarding, CaseState.awaitingRead, CaseState.reported])
    .where('d.state', '!=', DeliveryState.cancelled)
    .where(({ not, exists, selectFrom }) =>
      not(
        exists(
          selectFrom('deliveries as x').select('x.id').whereRef('x.case_id', '=', 'p.case_id').whereRef('x.study_instance_uid', '=', 'p.study_instance_uid'),
        ),
      ),
    );
  if (caseId !== undefined) q = q.where('p.case_id', '=', caseId);
  return q.orderBy('p.case_id').orderBy('p.study_instance_uid').execute();
}

/** Cases that retrieved this study as a prior (it may now be forwarded beside them). */
export async function casesWithRetrievedPrior(db: Db, studyInstanceUid: string): Promise<string[]> {
  const rows = await db
    .selectFrom('case_priors')
    .select('case_id')
    .where('study_instance_uid', '=', studyInstanceUid)
    .where('state', '=', PriorState.retrieved)
    .execute();
  return rows.map((r) => r.case_id);
}

export async function findCase(db: Db, caseId: string) {
  return db.selectFrom('cases').selectAll().where('id', '=', caseId).executeTakeFirst();
}

/** A delivery of a case's prior (not of the case's own study). */
export async function isPriorDelivery(db: Db, d: { case_id: string; study_instance_uid: string }): Promise<boolean> {
  const c = await db.selectFrom('cases').select('study_instance_uid').where('id', '=', d.case_id).executeTakeFirst();
  return c !== undefined && c.study_instance_uid !== d.study_instance_uid;
}
