/**
 * The DICOMweb service (src/dicomweb/, PS3.18) under /dicom-web, described in the registry so the
 * OpenAPI document covers it. Its routes are mounted by src/dicomweb/dicomweb.routes.ts, not with
 * `mount`: bodies are DICOM (multipart/related) and DICOM JSON, and query keys are DICOM attributes
 * (keyword or tag), which that router reads itself. These specs describe; they do not parse.
 */
import { z } from 'zod';
import { Role } from '../config/schema.js';
import { ALL_ROLES, defineRoute, described, queryInt, type ResponseSpec } from './api-schema.js';

const DicomJsonDataset = z
  .record(z.string(), z.unknown())
  .meta({ id: 'DicomJsonDataset', description: 'a dataset in the DICOM JSON model (PS3.18 F.2): tag (8 hex digits) -> {vr, Value}' });

const dicomJson = (description: string): ResponseSpec => ({ description, media: { 'application/dicom+json': z.array(DicomJsonDataset) } });
const dicomMultipart = (description: string): ResponseSpec => ({
  description: `${description}: multipart/related; type="application/dicom", one part per instance, the bytes as stored (a reader's de-identified copy when their case's is)`,
  media: { 'multipart/related': described(z.string(), 'parts of type application/dicom') },
});
const stowResponse = (description: string): ResponseSpec => ({ description, media: { 'application/dicom+json': DicomJsonDataset } });
const stowResponses = {
  200: stowResponse('every instance stored'),
  202: stowResponse('some instances stored, some failed'),
  409: stowResponse('no instance stored'),
  503: stowResponse('no instance stored: out of resources'),
};
const stowErrors = { 400: 'a body without any part, or a malformed multipart body', 415: 'not multipart/related; type="application/dicom"' };
const stowDescription =
  'STOW-RS. Body: multipart/related; type="application/dicom"; boundary=..., one Part 10 instance per part, streamed to the spool and stored like a C-STORE (success per instance only after fsync and commit). ' +
  'Answer: ReferencedSOPSequence (stored), FailedSOPSequence with FailureReason (C-STORE status codes) for parts that failed (truncated, unreadable, study mismatch, out of resources); 200 all stored, 202 some failed, 409 none stored, 503 none stored for lack of resources.';

/** Match keys are DICOM attributes by keyword or tag (e.g. PatientID or 00100020); these are the ones evaluated. */
const qido = z.object({
  PatientID: z.string().optional(),
  PatientName: described(z.string(), 'wildcards * and ?, case-insensitive').optional(),
  AccessionNumber: z.string().optional(),
  StudyDate: described(z.string(), 'YYYYMMDD, or a range YYYYMMDD-YYYYMMDD with either end open').optional(),
  ModalitiesInStudy: described(z.string(), 'comma-separated').optional(),
  Modality: z.string().optional(),
  StudyInstanceUID: described(z.string(), 'comma-separated list').optional(),
  SeriesInstanceUID: described(z.string(), 'comma-separated list').optional(),
  SOPInstanceUID: described(z.string(), 'comma-separated list').optional(),
  includefield: described(z.string(), 'keywords or tags, comma-separated or repeated; `all` for every attribute held').optional(),
  limit: described(z.coerce.number().int().min(1).default(1000), 'at most 1000 matches are answered, whatever is asked'),
  offset: queryInt(0, 0, Number.MAX_SAFE_INTEGER),
});
const study = described(z.string(), 'StudyInstanceUID (a reader gives the one they see: the pseudonym when their copy is de-identified)');
const series = described(z.string(), 'SeriesInstanceUID');
const sop = described(z.string(), 'SOPInstanceUID');
const inStudy = z.object({ study });
const inSeries = z.object({ study, series });
const ofInstance = z.object({ study, series, sop });
const read = { tag: 'dicomweb', roles: ALL_ROLES } as const;
const notJson = 'Accept names no DICOM JSON media type';
const notMultipart = 'Accept names no multipart/related application/dicom';

export const dicomwebRoutes = {
  dicomwebSearchStudies: defineRoute({
    method: 'get',
    path: '/dicom-web/studies',
    operationId: 'dicomwebSearchStudies',
    summary: 'QIDO-RS: search studies',
    ...read,
    query: qido,
    responses: { 200: dicomJson('matching studies') },
    errors: { 406: notJson },
  }),
  dicomwebStoreInstances: defineRoute({
    method: 'post',
    path: '/dicom-web/studies',
    operationId: 'dicomwebStoreInstances',
    summary: 'STOW-RS: store instances',
    description: stowDescription,
    tag: 'dicomweb',
    roles: [Role.admin, Role.system],
    responses: stowResponses,
    errors: stowErrors,
  }),
  dicomwebRetrieveStudy: defineRoute({
    method: 'get',
    path: '/dicom-web/studies/:study',
    operationId: 'dicomwebRetrieveStudy',
    summary: 'WADO-RS: the instances of a study',
    ...read,
    params: inStudy,
    responses: { 200: dicomMultipart('the instances') },
    errors: { 404: "no such study (or not the caller's)", 406: notMultipart },
  }),
  dicomwebStoreStudyInstances: defineRoute({
    method: 'post',
    path: '/dicom-web/studies/:study',
    operationId: 'dicomwebStoreStudyInstances',
    summary: 'STOW-RS: store instances of one study',
    description: `${stowDescription} An instance of another study fails with FailureReason 0xA900.`,
    tag: 'dicomweb',
    roles: [Role.admin, Role.system],
    params: inStudy,
    responses: stowResponses,
    errors: stowErrors,
  }),
  dicomwebRetrieveStudyMetadata: defineRoute({
    method: 'get',
    path: '/dicom-web/studies/:study/metadata',
    operationId: 'dicomwebRetrieveStudyMetadata',
    summary: "WADO-RS: the headers of a study's instances",
    ...read,
    params: inStudy,
    responses: { 200: dicomJson('one dataset per instance, without bulk data') },
    errors: { 404: "no such study (or not the caller's)", 406: notJson },
  }),
  dicomwebSearchStudySeries: defineRoute({
    method: 'get',
    path: '/dicom-web/studies/:study/series',
    operationId: 'dicomwebSearchStudySeries',
    summary: 'QIDO-RS: search the series of a study',
    ...read,
    params: inStudy,
    query: qido,
    responses: { 200: dicomJson('matching series') },
    errors: { 404: "no such study (or not the caller's)", 406: notJson },
  }),
  dicomwebSearchStudyInstances: defineRoute({
    method: 'get',
    path: '/dicom-web/studies/:study/instances',
    operationId: 'dicomwebSearchStudyInstances',
    summary: 'QIDO-RS: search the instances of a study',
    ...read,
    params: inStudy,
    query: qido,
    responses: { 200: dicomJson('matching instances') },
    errors: { 404: "no such study (or not the caller's)", 406: notJson },
  }),
  dicomwebRetrieveSeries: defineRoute({
    method: 'get',
    path: '/dicom-web/studies/:study/series/:series',
    operationId: 'dicomwebRetrieveSeries',
    summary: 'WADO-RS: the instances of a series',
    ...read,
    params: inSeries,
    responses: { 200: dicomMultipart('the instances') },
    errors: { 404: "no such series (or not the caller's)", 406: notMultipart },
  }),
  dicomwebRetrieveSeriesMetadata: defineRoute({
    method: 'get',
    path: '/dicom-web/studies/:study/series/:series/metadata',
    operationId: 'dicomwebRetrieveSeriesMetadata',
    summary: "WADO-RS: the headers of a series' instances",
    ...read,
    params: inSeries,
    responses: { 200: dicomJson('one dataset per instance') },
    errors: { 404: "no such series (or not the caller's)", 406: notJson },
  }),
  dicomwebSearchSeriesInstances: defineRoute({
    method: 'get',
    path: '/dicom-web/studies/:study/series/:series/instances',
    operationId: 'dicomwebSearchSeriesInstances',
    summary: 'QIDO-RS: search the instances of a series',
    ...read,
    params: inSeries,
    query: qido,
    responses: { 200: dicomJson('matching instances') },
    errors: { 404: "no such series (or not the caller's)", 406: notJson },
  }),
  dicomwebRetrieveInstance: defineRoute({
    method: 'get',
    path: '/dicom-web/studies/:study/series/:series/instances/:sop',
    operationId: 'dicomwebRetrieveInstance',
    summary: 'WADO-RS: one instance',
    ...read,
    params: ofInstance,
    responses: { 200: dicomMultipart('the instance') },
    errors: { 404: "no such instance (or not the caller's)", 406: notMultipart },
  }),
  dicomwebRetrieveInstanceMetadata: defineRoute({
    method: 'get',
    path: '/dicom-web/studies/:study/series/:series/instances/:sop/metadata',
    operationId: 'dicomwebRetrieveInstanceMetadata',
    summary: 'WADO-RS: the header of one instance',
    ...read,
    params: ofInstance,
    responses: { 200: dicomJson('the dataset') },
    errors: { 404: "no such instance (or not the caller's)", 406: notJson },
  }),
  dicomwebSearchSeries: defineRoute({
    method: 'get',
    path: '/dicom-web/series',
    operationId: 'dicomwebSearchSeries',
    summary: 'QIDO-RS: search series',
    ...read,
    query: qido,
    responses: { 200: dicomJson('matching series') },
    errors: { 406: notJson },
  }),
  dicomwebSearchInstances: defineRoute({
    method: 'get',
    path: '/dicom-web/instances',
    operationId: 'dicomwebSearchInstances',
    summary: 'QIDO-RS: search instances',
    ...read,
    query: qido,
    responses: { 200: dicomJson('matching instances') },
    errors: { 406: notJson },
  }),
};
