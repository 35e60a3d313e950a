import { createHash } from 'node:crypto';
import dcmjs from 'dcmjs';
import { concordanceOf, type RadpeerScore } from '../reports/oru-builder.js';
import { IMPLEMENTATION_CLASS_UID, SopClass, TransferSyntax } from '../dicom/uids.js';

/**
 * The second read as DICOM objects stored in the study it reads: a Basic Text
 * SR (report text, RADPEER score, concordance, the second reader as observer,
 * the arbitration when there was one) and a Key Object Selection of the images
 * the reader marked. Pure: the caller gathers the real (never pseudonymised)
 * patient and study attributes and the study's instances.
 */

export const BASIC_TEXT_SR = SopClass.basicTextSr;
export const KEY_OBJECT_SELECTION = SopClass.keyObjectSelection;

/**
 * No coding scheme of the ACR has RADPEER scores (RADPEER is published as a
 * scoring table, not as codes), so they, the concordance and the arbitration
 * verdicts are coded in this private scheme, declared in every object's
 * Coding Scheme Identification Sequence and listed in the README.
 */
export const PRIVATE_SCHEME = '99SRGW';
const PRIVATE_SCHEME_NAME = 'Second-read gateway codes';

export interface Code {
  value: string;
  scheme: string;
  meaning: string;
}
const code = (value: string, scheme: string, meaning: string): Code => ({ value, scheme, meaning });

export const Codes = {
  diagnosticImagingReport: code('18748-4', 'LN', 'Diagnostic Imaging Report'),
  observerType: code('121005', 'DCM', 'Observer Type'),
  person: code('121006', 'DCM', 'Person'),
  personObserverName: code('121008', 'DCM', 'Person Observer Name'),
  findings: code('121070', 'DCM', 'Findings'),
  finding: code('121071', 'DCM', 'Finding'),
  impressions: code('121072', 'DCM', 'Impressions'),
  impression: code('121073', 'DCM', 'Impression'),
  ofInterest: code('113000', 'DCM', 'Of Interest'),
  keyObjectDescription: code('113012', 'DCM', 'Key Object Description'),
  peerReview: code('PEERREV', PRIVATE_SCHEME, 'Peer review of the first read'),
  radpeerScore: code('RADPEER', PRIVATE_SCHEME, 'RADPEER score'),
  concordance: code('SRCONC', PRIVATE_SCHEME, 'Second read concordance'),
  concordant: code('CONCORDANT', PRIVATE_SCHEME, 'Concordant'),
  discordant: code('DISCORDANT', PRIVATE_SCHEME, 'Discordant'),
  addendum: code('ADDENDUM', PRIVATE_SCHEME, 'Addendum to the second read'),
  arbitration: code('ARBITR', PRIVATE_SCHEME, 'Arbitration'),
  arbitrationVerdict: code('ARBVERD', PRIVATE_SCHEME, 'Arbitration verdict'),
  arbitratingReader: code('ARBREAD', PRIVATE_SCHEME, 'Arbitrating reader'),
  arbitrationComment: code('ARBTEXT', PRIVATE_SCHEME, 'Arbitration comment'),
} as const;

/** RADPEER 2016 (ACR): the scores' wording, shortened to a Code Meaning (LO, 64 characters). */
export const radpeerCodes: Record<RadpeerScore, Code> = {
  '1': code('1', PRIVATE_SCHEME, 'RADPEER 1: concur with interpretation'),
  '2a': code('2a', PRIVATE_SCHEME, 'RADPEER 2a: understandable miss, unlikely significant'),
  '2b': code('2b', PRIVATE_SCHEME, 'RADPEER 2b: understandable miss, likely significant'),
  '3a': code('3a', PRIVATE_SCHEME, 'RADPEER 3a: should be made most times, unlikely significant'),
  '3b': code('3b', PRIVATE_SCHEME, 'RADPEER 3b: should be made most times, likely significant'),
};

export type ArbitrationVerdict = 'first' | 'second' | 'other';
export const arbitrationCodes: Record<ArbitrationVerdict, Code> = {
  first: code('ARB-FIRST', PRIVATE_SCHEME, 'Arbitration agrees with the first read'),
  second: code('ARB-SECOND', PRIVATE_SCHEME, 'Arbitration agrees with the second read'),
  other: code('ARB-OTHER', PRIVATE_SCHEME, 'Arbitration agrees with neither read'),
};

export interface Arbitration {
  verdict: ArbitrationVerdict;
  readerName?: string;
  text?: string;
}

/** Patient and study attributes as the hospital knows them (the studies table and a stored instance's header). */
export interface SrStudy {
  studyInstanceUid: string;
  patientId: string | null;
  issuerOfPatientId: string | null;
  /** DICOM PN (Family^Given...) as received. */
  patientName: string | null;
  patientBirthDate: string | null;
  patientSex: string | null;
  accessionNumber: string | null;
  studyDate: string | null;
  studyTime: string | null;
  studyId: string | null;
  referringPhysicianName: string | null;
  studyDescription: string | null;
}

export interface SopRef {
  seriesInstanceUid: string;
  sopClassUid: string;
  sopInstanceUid: string;
}

export interface SecondReadSrInput {
  study: SrStudy;
  /** Every instance of the study the second read was made on (Current Requested Procedure Evidence). */
  evidence: readonly SopRef[];
  reader: { id: string; name: string };
  report: {
    id: string;
    version: number;
    text: string;
    impression: string | null;
    radpeerScore: RadpeerScore;
    createdAt: Date;
  };
  /** The SR of the version this one amends (an addendum): Predecessor Documents Sequence. */
  predecessor?: SopRef;
  arbitration?: Arbitration;
  manufacturer: string;
  institutionName?: string;
  /** The second reader's organisation (Verifying Organization): the reader pool. */
  verifyingOrganization: string;
}

export interface KeyObjectInput extends Omit<SecondReadSrInput, 'predecessor' | 'arbitration' | 'evidence'> {
  keyImages: readonly SopRef[];
}

/**
 * Our own UIDs for an output of one report version, derived from the report
 * id: a retried send carries the same SOP Instance UID (a PACS that already
 * has it keeps one copy), and an addendum's SR can name its predecessor's.
 * One series per kind of output per study (the same series for every version).
 */
export function outputUids(studyInstanceUid: string, reportId: string, kind: 'sr' | 'kos'): { seriesInstanceUid: string; sopInstanceUid: string } {
  const uid = (s: string): string => `2.25.${BigInt(`0x${createHash('sha256').update(s).digest('hex').slice(0, 32)}`).toString(10)}`;
  return {
    seriesInstanceUid: uid(`second-read-output:series:${kind}:${studyInstanceUid}`),
    sopInstanceUid: uid(`second-read-output:instance:${kind}:${reportId}`),
  };
}

/** A configured reader name ("Jane Q Smith" or already "Smith^Jane") as DICOM PN: the last word is the family name. */
export function personName(name: string): string {
  if (name.includes('^')) return name;
  const words = name.trim().split(/\s+/);
  if (words.length < 2) return words[0] ?? '';
  const family = words.pop()!;
  return `${family}^${words.join(' ')}`;
}

/** Date and time in UTC as DICOM DA and TM (Timezone Offset From UTC says +0000). */
function da(d: Date): string {
  return d.toISOString().slice(0, 10).replace(/-/g, '');
}
function tm(d: Date): string {
  return d.toISOString().slice(11, 19).replace(/:/g, '');
}

const codeItem = (c: Code): Record<string, unknown> => ({ CodeValue: c.value, CodingSchemeDesignator: c.scheme, CodeMeaning: c.meaning });

type Item = Record<string, unknown>;
const container = (relationship: string | undefined, concept: Code, children: Item[]): Item => ({
  ...(relationship ? { RelationshipType: relationship } : {}),
  ValueType: 'CONTAINER',
  ConceptNameCodeSequence: [codeItem(concept)],
  ContinuityOfContent: 'SEPARATE',
  ContentSequence: children,
});
const text = (relationship: string, concept: Code, value: string): Item => ({
  RelationshipType: relationship,
  ValueType: 'TEXT',
  ConceptNameCodeSequence: [codeItem(concept)],
  TextValue: value,
});
const coded = (relationship: string, concept: Code, value: Code): Item => ({
  RelationshipType: relationship,
  ValueType: 'CODE',
  ConceptNameCodeSequence: [codeItem(concept)],
  ConceptCodeSequence: [codeItem(value)],
});
const pname = (relationship: string, concept: Code, value: string): Item => ({
  RelationshipType: relationship,
  ValueType: 'PNAME',
  ConceptNameCodeSequence: [codeItem(concept)],
  PersonName: value,
});

/** TID 1002 / 1003: the second reader as the person observer of everything below the root. */
function observerContext(name: string): Item[] {
  return [coded('HAS OBS CONTEXT', Codes.observerType, Codes.person), pname('HAS OBS CONTEXT', Codes.personObserverName, personName(name))];
}

/** Hierarchical SOP Instance Reference Macro (PS3.3 C.17.2.1): study, then series, then instances. */
function hierarchicalReference(studyInstanceUid: string, refs: readonly SopRef[]): Item[] {
  if (refs.length === 0) return [];
  const bySeries = new Map<string, SopRef[]>();
  for (const r of refs) bySeries.set(r.seriesInstanceUid, [...(bySeries.get(r.seriesInstanceUid) ?? []), r]);
  return [
    {
      StudyInstanceUID: studyInstanceUid,
      ReferencedSeriesSequence: [...bySeries].map(([series, items]) => ({
        SeriesInstanceUID: series,
        ReferencedSOPSequence: items.map((i) => ({ ReferencedSOPClassUID: i.sopClassUid, ReferencedSOPInstanceUID: i.sopInstanceUid })),
      })),
    },
  ];
}

/** Patient, General Study, General Equipment, SOP Common: shared by the SR and the KOS. */
function commonModules(
  input: Pick<SecondReadSrInput, 'study' | 'manufacturer' | 'institutionName' | 'report'>,
  sopClassUid: string,
  uids: { seriesInstanceUid: string; sopInstanceUid: string },
  now: Date,
): Item {
  const s = input.study;
  return {
    SpecificCharacterSet: 'ISO_IR 192',
    SOPClassUID: sopClassUid,
    SOPInstanceUID: uids.sopInstanceUid,
    InstanceCreationDate: da(now),
    InstanceCreationTime: tm(now),
    TimezoneOffsetFromUTC: '+0000',
    CodingSchemeIdentificationSequence: [
      { CodingSchemeDesignator: PRIVATE_SCHEME, CodingSchemeName: PRIVATE_SCHEME_NAME, CodingSchemeResponsibleOrganization: 'Second-read gateway' },
    ],
    // Patient (type 2 attributes present, empty when unknown)
    PatientName: s.patientName ?? '',
    PatientID: s.patientId ?? '',
    ...(s.issuerOfPatientId ? { IssuerOfPatientID: s.issuerOfPatientId } : {}),
    PatientBirthDate: s.patientBirthDate ?? '',
    PatientSex: s.patientSex ?? '',
    // General Study
    StudyInstanceUID: s.studyInstanceUid,
    StudyDate: s.studyDate ?? '',
    StudyTime: s.studyTime ?? '',
    ReferringPhysicianName: s.referringPhysicianName ?? '',
    StudyID: s.studyId ?? '',
    AccessionNumber: s.accessionNumber ?? '',
    ...(s.studyDescription ? { StudyDescription: s.studyDescription } : {}),
    // General Equipment
    Manufacturer: input.manufacturer,
    ...(input.institutionName ? { InstitutionName: input.institutionName } : {}),
    SeriesInstanceUID: uids.seriesInstanceUid,
    ReferencedPerformedProcedureStepSequence: [],
    InstanceNumber: String(input.report.version),
    ContentDate: da(input.report.createdAt),
    ContentTime: tm(input.report.createdAt),
  };
}

/** The dataset as a Part 10 file in Explicit VR Little Endian. */
function part10(dataset: Item, sopClassUid: string, sopInstanceUid: string): Buffer {
  const { DicomDict, DicomMetaDictionary } = dcmjs.data;
  const meta = DicomMetaDictionary.denaturalizeDataset({
    FileMetaInformationVersion: new Uint8Array([0, 1]).buffer,
    MediaStorageSOPClassUID: sopClassUid,
    MediaStorageSOPInstanceUID: sopInstanceUid,
    TransferSyntaxUID: TransferSyntax.explicitLe,
    ImplementationClassUID: IMPLEMENTATION_CLASS_UID,
    ImplementationVersionName: 'SECONDREAD',
  });
  const dict = new DicomDict(meta);
  dict.dict = DicomMetaDictionary.denaturalizeDataset(dataset);
  return Buffer.from(dict.write());
}

/** The Basic Text SR of one second report version (Part 10 bytes) and its UIDs. */
export function buildSecondReadSr(input: SecondReadSrInput, now = new Date()): { bytes: Buffer; seriesInstanceUid: string; sopInstanceUid: string } {
  // An arbitrated SR is a new object (its own UID), not a resend of the report's first SR.
  const uids = outputUids(input.study.studyInstanceUid, input.arbitration ? `${input.report.id}:arbitrated` : input.report.id, 'sr');
  return { ...uids, bytes: part10(secondReadSrDataset(input, uids, now), BASIC_TEXT_SR, uids.sopInstanceUid) };
}

/** The SR dataset (naturalized, as dcmjs names attributes): exported for tests that look inside. */
export function secondReadSrDataset(input: SecondReadSrInput, uids: { seriesInstanceUid: string; sopInstanceUid: string }, now: Date): Item {
  const r = input.report;
  const verdict = concordanceOf(r.radpeerScore) === 'CONCORDANT' ? Codes.concordant : Codes.discordant;
  const content: Item[] = [
    ...observerContext(input.reader.name),
    ...(r.version > 1 ? [coded('HAS CONCEPT MOD', Codes.addendum, Codes.addendum)] : []),
    container('CONTAINS', Codes.findings, [text('CONTAINS', Codes.finding, r.text)]),
    ...(r.impression ? [container('CONTAINS', Codes.impressions, [text('CONTAINS', Codes.impression, r.impression)])] : []),
    container('CONTAINS', Codes.peerReview, [
      coded('CONTAINS', Codes.radpeerScore, radpeerCodes[r.radpeerScore]),
      coded('CONTAINS', Codes.concordance, verdict),
    ]),
  ];
  const a = input.arbitration;
  if (a) {
    content.push(
      container('CONTAINS', Codes.arbitration, [
        coded('CONTAINS', Codes.arbitrationVerdict, arbitrationCodes[a.verdict]),
        ...(a.readerName ? [pname('CONTAINS', Codes.arbitratingReader, personName(a.readerName))] : []),
        ...(a.text ? [text('CONTAINS', Codes.arbitrationComment, a.text)] : []),
      ]),
    );
  }
  return {
    ...commonModules(input, BASIC_TEXT_SR, uids, now),
    Modality: 'SR',
    SeriesNumber: '9901',
    SeriesDescription: 'Second read',
    // SR Document General
    CompletionFlag: 'COMPLETE',
    VerificationFlag: 'VERIFIED',
    VerifyingObserverSequence: [
      {
        VerifyingObserverName: personName(input.reader.name),
        VerifyingObserverIdentificationCodeSequence: [],
        VerifyingOrganization: input.verifyingOrganization,
        VerificationDateTime: `${da(r.createdAt)}${tm(r.createdAt)}+0000`,
      },
    ],
    ...(input.predecessor ? { PredecessorDocumentsSequence: hierarchicalReference(input.study.studyInstanceUid, [input.predecessor]) } : {}),
    PerformedProcedureCodeSequence: [],
    ...(input.evidence.length > 0 ? { CurrentRequestedProcedureEvidenceSequence: hierarchicalReference(input.study.studyInstanceUid, input.evidence) } : {}),
    // SR Document Content: the root container
    ValueType: 'CONTAINER',
    ConceptNameCodeSequence: [codeItem(Codes.diagnosticImagingReport)],
    ContinuityOfContent: 'SEPARATE',
    ContentSequence: content,
  };
}

/** The Key Object Selection (TID 2010, "Of Interest") of the images the second reader marked. */
export function buildKeyObjectSelection(input: KeyObjectInput, now = new Date()): { bytes: Buffer; seriesInstanceUid: string; sopInstanceUid: string } {
  if (input.keyImages.length === 0) throw new Error('a key object selection needs at least one image');
  const uids = outputUids(input.study.studyInstanceUid, input.report.id, 'kos');
  const dataset: Item = {
    ...commonModules(input, KEY_OBJECT_SELECTION, uids, now),
    Modality: 'KO',
    SeriesNumber: '9902',
    SeriesDescription: 'Second read key images',
    CurrentRequestedProcedureEvidenceSequence: hierarchicalReference(input.study.studyInstanceUid, input.keyImages),
    ValueType: 'CONTAINER',
    ConceptNameCodeSequence: [codeItem(Codes.ofInterest)],
    ContinuityOfContent: 'SEPARATE',
    ContentTemplateSequence: [{ MappingResource: 'DCMR', TemplateIdentifier: '2010' }],
    ContentSequence: [
      ...observerContext(input.reader.name),
      text('CONTAINS', Codes.keyObjectDescription, `Images marked by the second reader (RADPEER ${input.report.radpeerScore})`),
      ...input.keyImages.map((i) => ({
        RelationshipType: 'CONTAINS',
        ValueType: 'IMAGE',
        ReferencedSOPSequence: [{ ReferencedSOPClassUID: i.sopClassUid, ReferencedSOPInstanceUID: i.sopInstanceUid }],
      })),
    ],
  };
  return { ...uids, bytes: part10(dataset, KEY_OBJECT_SELECTION, uids.sopInstanceUid) };
}
