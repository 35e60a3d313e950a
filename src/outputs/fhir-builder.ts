import { createHash } from 'node:crypto';
import type { Bundle, BundleEntry, DiagnosticReport, Identifier, Observation, Patient, Practitioner, Reference } from '@medplum/fhirtypes';
import { concordanceOf, type RadpeerScore } from '../reports/oru-builder.js';
import { arbitrationCodes, PRIVATE_SCHEME, radpeerCodes, type Arbitration, Codes } from './sr-builder.js';

/**
 * The second read as FHIR R4: a DiagnosticReport (conclusion = the report,
 * performer = the second reader, basedOn = the ServiceRequest of the
 * accession, subject = the Patient by identifier with its assigning
 * authority's system) and an Observation of the RADPEER score with the
 * concordance as a component, in one transaction Bundle. Each entry is a
 * conditional create on the report's own identifier, so a retried POST after
 * a lost answer does not store a second copy.
 */

/** Our identifiers and codes; the codes are those of the DICOM SR's private scheme (sr-builder.ts, README). */
export const FhirSystems = {
  report: 'urn:second-read-gateway:second-report',
  reader: 'urn:second-read-gateway:reader',
  codes: `urn:second-read-gateway:codes:${PRIVATE_SCHEME}`,
  dicomUid: 'urn:dicom:uid',
  loinc: 'http://loinc.org',
  v2_0074: 'http://terminology.hl7.org/CodeSystem/v2-0074',
  v2_0203: 'http://terminology.hl7.org/CodeSystem/v2-0203',
} as const;

export interface FhirReportInput {
  report: { id: string; version: number; text: string; impression: string | null; radpeerScore: RadpeerScore; createdAt: Date };
  reader: { id: string; name: string };
  /** The real patient id and the system (URI) of its assigning authority. */
  patient: { id: string; system: string };
  accession: { value: string; system?: string } | null;
  studyInstanceUid: string;
  arbitration?: Arbitration;
}

/** A UUID (RFC 4122 layout) from a name: the same report gives the same fullUrls on every retry. */
function nameUuid(name: string): string {
  const h = createHash('sha256').update(name).digest('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-5${h.slice(13, 16)}-${((parseInt(h.slice(16, 18), 16) & 0x3f) | 0x80).toString(16)}${h.slice(18, 20)}-${h.slice(20, 32)}`;
}

/**
 * The FHIR system of a patient id's assigning authority: configured per
 * authority, an ISO OID as `urn:oid:`, a URI as is. None: undefined (the
 * caller refuses to send rather than name a patient by a bare id).
 */
export function patientIdentifierSystem(authority: string | null, configured: Readonly<Record<string, string>>): string | undefined {
  if (authority === null || authority === '') return configured[''];
  if (configured[authority]) return configured[authority];
  if (/^[0-2](\.(0|[1-9]\d*))+$/.test(authority)) return `urn:oid:${authority}`;
  if (/^(urn|https?):/i.test(authority)) return authority;
  return undefined;
}

export function buildFhirBundle(input: FhirReportInput): Bundle {
  const r = input.report;
  const subject: Reference<Patient> = { type: 'Patient', identifier: { system: input.patient.system, value: input.patient.id } };
  const performer: Reference<Practitioner> = {
    type: 'Practitioner',
    identifier: { system: FhirSystems.reader, value: input.reader.id },
    display: input.reader.name,
  };
  const reportIdentifier: Identifier = { system: FhirSystems.report, value: `${r.id}` };
  const observationIdentifier: Identifier = { system: FhirSystems.report, value: `${r.id}:radpeer` };
  const observationUrl = `urn:uuid:${nameUuid(`observation:${r.id}`)}`;
  const reportUrl = `urn:uuid:${nameUuid(`diagnostic-report:${r.id}`)}`;
  const status = r.version > 1 ? 'amended' : 'final';
  const issued = r.createdAt.toISOString();
  const ours = (c: { value: string; meaning: string }) => ({ system: FhirSystems.codes, code: c.value, display: c.meaning });
  const concordance = concordanceOf(r.radpeerScore) === 'CONCORDANT' ? Codes.concordant : Codes.discordant;

  const observation: Observation = {
    resourceType: 'Observation',
    identifier: [observationIdentifier],
    status,
    category: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/observation-category', code: 'imaging', display: 'Imaging' }] }],
    code: { coding: [ours(Codes.radpeerScore)], text: 'RADPEER score of the second read' },
    subject,
    effectiveDateTime: issued,
    issued,
    performer: [performer],
    valueCodeableConcept: { coding: [ours(radpeerCodes[r.radpeerScore])], text: `RADPEER ${r.radpeerScore}` },
    component: [{ code: { coding: [ours(Codes.concordance)] }, valueCodeableConcept: { coding: [ours(concordance)], text: concordance.meaning } }],
  };
  const a = input.arbitration;
  if (a) {
    observation.component!.push({
      code: { coding: [ours(Codes.arbitrationVerdict)] },
      valueCodeableConcept: { coding: [ours(arbitrationCodes[a.verdict])], text: arbitrationCodes[a.verdict].meaning },
    });
  }

  const conclusion = [r.impression ? `Impression: ${r.impression}` : undefined, r.text, a ? arbitrationText(a) : undefined]
    .filter((s): s is string => !!s)
    .join('\n\n');
  const report: DiagnosticReport = {
    resourceType: 'DiagnosticReport',
    identifier: [reportIdentifier],
    ...(input.accession
      ? {
          basedOn: [
            {
              type: 'ServiceRequest',
              identifier: {
                type: { coding: [{ system: FhirSystems.v2_0203, code: 'ACSN', display: 'Accession ID' }] },
                ...(input.accession.system ? { system: input.accession.system } : {}),
                value: input.accession.value,
              },
            },
          ],
        }
      : {}),
    status,
    category: [{ coding: [{ system: FhirSystems.v2_0074, code: 'RAD', display: 'Radiology' }] }],
    code: { coding: [{ system: FhirSystems.loinc, code: '18748-4', display: 'Diagnostic imaging study' }], text: 'Second read' },
    subject,
    effectiveDateTime: issued,
    issued,
    performer: [performer],
    resultsInterpreter: [performer],
    result: [{ reference: observationUrl }],
    imagingStudy: [{ type: 'ImagingStudy', identifier: { system: FhirSystems.dicomUid, value: `urn:oid:${input.studyInstanceUid}` } }],
    conclusion,
  };

  const entry = (fullUrl: string, resource: Observation | DiagnosticReport, id: Identifier): BundleEntry => ({
    fullUrl,
    resource,
    request: { method: 'POST', url: resource.resourceType, ifNoneExist: `identifier=${encodeURIComponent(`${id.system}|${id.value}`)}` },
  });
  return {
    resourceType: 'Bundle',
    type: 'transaction',
    entry: [entry(observationUrl, observation, observationIdentifier), entry(reportUrl, report, reportIdentifier)],
  };
}

function arbitrationText(a: Arbitration): string {
  const who = a.readerName ? ` (${a.readerName})` : '';
  return `Arbitration${who}: ${arbitrationCodes[a.verdict].meaning}${a.text ? `. ${a.text}` : ''}`;
}
