import { Router } from 'express';
import type { Db } from '../db/database.js';
import { ErrorCode, GatewayError } from '../errors.js';
import { findStudy, listStudies, seriesOfStudies } from '../studies/study.repository.js';
import { versionsOfStudy } from '../studies/instance-version.repository.js';
import type { InstanceVersionRow, SeriesRow, StudyRow } from '../studies/study.table.js';
import { mount } from './api-schema.js';
import { remoteAddressOf, type StudyQueryAuditor } from '../audit/query-audit.js';
import { studiesRoutes as spec, type InstanceVersionView, type StudySummaryView, type StudyView } from './studies.schemas.js';

/** Extra parts of the study resource contributed by other domains (order, reports, decision...). */
export type StudyEnricher = (db: Db, studyInstanceUid: string) => Promise<Record<string, unknown>>;

export function studiesRouter(db: Db, enrichers: readonly StudyEnricher[] = [], auditQuery?: StudyQueryAuditor): Router {
  const r = Router();

  mount(r, spec.listStudies, async ({ query, principal }, req) => {
    const rows = await listStudies(db, query);
    const { limit: _limit, offset: _offset, ...keys } = query;
    // A search by who or what (patient, accession) is a query of patient data; a plain listing is the dashboard's.
    if (auditQuery && Object.values(keys).some((v) => v !== undefined)) {
      await auditQuery({ actor: principal.name, remoteAddress: remoteAddressOf(req), via: 'api', level: 'study', keys, results: rows.length });
    }
    const series = await seriesOfStudies(
      db,
      rows.map((s) => s.study_instance_uid),
    );
    return {
      status: 200,
      body: {
        items: rows.map((s) =>
          presentStudy(
            s,
            series.filter((x) => x.study_instance_uid === s.study_instance_uid),
          ),
        ),
      },
    };
  });

  mount(r, spec.getStudy, async ({ params }) => {
    const uid = params.studyInstanceUid;
    const s = await findStudy(db, uid);
    if (!s) throw new GatewayError(ErrorCode.notFound, 'no such study');
    const series = await seriesOfStudies(db, [uid]);
    const extra = await Promise.all(enrichers.map((e) => e(db, uid)));
    const versions = await versionsOfStudy(db, uid);
    // The enrichers (order, reports, AI results, decision, case id) are other domains' and untyped; the Study schema describes them.
    const study = Object.assign(presentStudyWithSeries(s, series), { versions: versions.map(presentVersion) }, ...extra) as StudyView;
    return { status: 200, body: study };
  });
  return r;
}

export function presentStudy(s: StudyRow, series: readonly SeriesRow[]): StudySummaryView {
  const modalities = [...new Set(series.map((x) => x.modality).filter((m): m is string => !!m))];
  return {
    studyInstanceUid: s.study_instance_uid,
    accessionNumber: s.accession_number,
    patientId: s.patient_id,
    modalities,
    bodyParts: [...new Set(series.map((x) => x.body_part_examined).filter((b): b is string => !!b))],
    studyDescription: s.study_description,
    studyDate: s.study_date,
    instanceCount: s.instance_count,
    lateInstanceCount: s.late_instance_count,
    sizeBytes: s.size_bytes,
    state: s.state,
    callingAe: s.calling_ae,
    firstReceivedAt: s.first_received_at,
    lastReceivedAt: s.last_received_at,
    stableAt: s.stable_at,
    issuerOfPatientId: s.issuer_of_patient_id,
    otherPatientIds: otherIds(s.other_patient_ids),
    holdReason: s.hold_reason,
    holdDetail: s.hold_detail,
    heldAt: s.held_at,
  };
}

/** The single-study resource adds the patient's name and birth date (decoded per the instance's Specific Character Set) and the series. */
function presentStudyWithSeries(s: StudyRow, series: readonly SeriesRow[]): StudySummaryView & Pick<StudyView, 'patientName' | 'patientBirthDate' | 'series'> {
  return {
    ...presentStudy(s, series),
    patientName: s.patient_name,
    patientBirthDate: s.patient_birth_date,
    series: series.map((x) => ({
      seriesInstanceUid: x.series_instance_uid,
      modality: x.modality,
      bodyPartExamined: x.body_part_examined,
      seriesNumber: x.series_number,
      seriesDescription: x.series_description,
      instanceCount: x.instance_count,
    })),
  };
}

function otherIds(json: string | null): { id: string; issuer: string | null; type: string | null }[] {
  if (!json) return [];
  try {
    const v = JSON.parse(json) as unknown;
    return Array.isArray(v) ? (v as { id: string; issuer: string | null; type: string | null }[]) : [];
  } catch {
    return [];
  }
}

/** One copy of a re-sent (or withdrawn) instance, with the identity it carried: what QA compares before deciding. */
export function presentVersion(v: InstanceVersionRow): InstanceVersionView {
  return {
    sopInstanceUid: v.sop_instance_uid,
    version: v.version,
    sha256: v.sha256,
    sizeBytes: Number(v.size_bytes),
    receivedAt: v.received_at,
    callingAe: v.calling_ae,
    current: v.superseded_at === null && v.rejected_at === null && v.kind === 'instance',
    supersededAt: v.superseded_at,
    kind: v.kind,
    studyInstanceUid: v.study_instance_uid,
    seriesInstanceUid: v.series_instance_uid,
    patientId: v.patient_id,
    issuerOfPatientId: v.issuer_of_patient_id,
    patientName: v.patient_name,
    patientBirthDate: v.patient_birth_date,
    accessionNumber: v.accession_number,
    identityChanges: v.identity_changes ? (JSON.parse(v.identity_changes) as string[]) : [],
    conflictState: v.conflict_state,
    rejectedAt: v.rejected_at,
    rejectionCode: v.rejection_code,
  };
}
