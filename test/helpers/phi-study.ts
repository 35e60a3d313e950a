/**
 * A study shaped like real ones, laden with identifiers in every place they
 * hide: CT images (descriptions, comments, private blocks, nested sequences,
 * overlay text), a Comprehensive SR (TEXT, PNAME, DATE, TIME, free-text CODE
 * items), an Encapsulated PDF whose document text names the patient, and a CT
 * dose screen saved as Secondary Capture with modality CT and no
 * BurnedInAnnotation. Every value is distinctive, so a search for it cannot
 * match by chance. Written with dcmjs from datasets built here (the PDF is a
 * hand-written PDF 1.4 file), not with the synthetic study generator.
 *
 * `writePhiStudy(dir)` writes the files and says which instances are risky and
 * why (what instance-risk.ts must decide), plus the identifier values.
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import dcmjs, { type DicomDataDict } from 'dcmjs';
import { KnownIdentifiers } from '../../src/forwarding/known-identifiers.js';

const { DicomDict, DicomMetaDictionary } = dcmjs.data;

export const PHI = {
  patientName: 'ZZTESTPERSON^QUENTIN^XAVERIUS',
  patientId: 'MRN-7781234',
  issuer: 'ZEBEDEE-MRN',
  otherPatientId: 'OLDMRN-5566123',
  birthDate: '19570313',
  accession: 'ACC-4455667',
  institution: 'SAINT ZEBEDEE HOSPITAL',
  department: 'ZEBEDEE IMAGING WING',
  institutionAddress: '42 QUIXOTE LANE, ZEBEDEEVILLE',
  patientAddress: '17 WOMBATWAY CRESCENT',
  phone: '+44 20 7946 0958',
  referring: 'YQUELLDOC^URSULA',
  operator: 'XOPERATORIX^VANCE',
  performing: 'WPERFORMA^OTTILIE',
  reader: 'VREADERSON^WILHELMINA',
  station: 'ZEBCT-STATION9',
  placerOrder: 'PLC-9917733',
  fillerOrder: 'FIL-8827744',
  requestedProcedureId: 'RPID-6611224',
  deviceSerial: 'SN-ZX5512377',
} as const;

export type PhiInstanceKind = 'ct' | 'sr' | 'pdf' | 'sc-dose';

export interface PhiStudyFile {
  path: string;
  kind: PhiInstanceKind;
  sopClassUid: string;
  sopInstanceUid: string;
  /** The instance-risk.ts reason expected for this instance, or null when it may go de-identified. */
  risk: 'burned-in-risk' | 'encapsulated-document' | null;
}

export interface PhiStudy {
  dir: string;
  studyInstanceUid: string;
  files: PhiStudyFile[];
  phi: typeof PHI;
  /** Every identifying string planted (for raw byte searches in tests). */
  secrets: string[];
  /** The identifiers as the gateway would know them (what the verifier is seeded with). */
  knownIdentifiers(): KnownIdentifiers;
}

export const SOP = {
  ct: '1.2.840.10008.5.1.4.1.1.2',
  comprehensiveSr: '1.2.840.10008.5.1.4.1.1.88.33',
  pdf: '1.2.840.10008.5.1.4.1.1.104.1',
  sc: '1.2.840.10008.5.1.4.1.1.7',
} as const;

const EXPLICIT_LE = '1.2.840.10008.1.2.1';

function uid(): string {
  return `2.25.${BigInt(`0x${randomBytes(15).toString('hex')}`).toString(10)}`;
}

const code = (value: string, scheme: string, meaning: string): Record<string, string> => ({
  CodeValue: value,
  CodingSchemeDesignator: scheme,
  CodeMeaning: meaning,
});

function part10(dict: DicomDataDict, sopClassUid: string, sopInstanceUid: string): Buffer {
  const meta = DicomMetaDictionary.denaturalizeDataset({
    FileMetaInformationVersion: new Uint8Array([0, 1]).buffer,
    MediaStorageSOPClassUID: sopClassUid,
    MediaStorageSOPInstanceUID: sopInstanceUid,
    TransferSyntaxUID: EXPLICIT_LE,
    ImplementationClassUID: '2.25.80302813137786398554742050926734630921',
    ImplementationVersionName: 'PHISTUDY_1',
    _vrMap: { FileMetaInformationVersion: 'OB' },
  });
  const d = new DicomDict(meta);
  d.dict = dict;
  return Buffer.from(d.write());
}

/** Patient, study and equipment attributes every instance of the study carries. */
function common(
  study: { studyUid: string; seriesUid: string },
  modality: string,
  seriesNumber: number,
  sopClassUid: string,
  sopInstanceUid: string,
): Record<string, unknown> {
  return {
    SpecificCharacterSet: 'ISO_IR 192',
    SOPClassUID: sopClassUid,
    SOPInstanceUID: sopInstanceUid,
    StudyDate: '20240311',
    StudyTime: '081500',
    SeriesDate: '20240311',
    ContentDate: '20240311',
    ContentTime: '082000',
    InstanceCreationDate: '20240311',
    AccessionNumber: PHI.accession,
    IssuerOfAccessionNumberSequence: [{ LocalNamespaceEntityID: PHI.institution }],
    Modality: modality,
    Manufacturer: 'PHISTUDY',
    InstitutionName: PHI.institution,
    InstitutionAddress: PHI.institutionAddress,
    InstitutionalDepartmentName: PHI.department,
    StationName: PHI.station,
    ReferringPhysicianName: [{ Alphabetic: PHI.referring }],
    ReferringPhysicianTelephoneNumbers: PHI.phone,
    OperatorsName: [{ Alphabetic: PHI.operator }],
    PerformingPhysicianName: [{ Alphabetic: PHI.performing }],
    NameOfPhysiciansReadingStudy: [{ Alphabetic: PHI.reader }],
    StudyDescription: `CT CHEST for ${PHI.patientName.split('^')[0]}`,
    SeriesDescription: `AXIAL ${PHI.patientId}`,
    PatientName: [{ Alphabetic: PHI.patientName }],
    PatientID: PHI.patientId,
    IssuerOfPatientID: PHI.issuer,
    PatientBirthDate: PHI.birthDate,
    PatientSex: 'M',
    PatientAge: '067Y',
    PatientAddress: PHI.patientAddress,
    PatientTelephoneNumbers: PHI.phone,
    PatientComments: `Call ${PHI.phone}, born ${PHI.birthDate.slice(6)}.${PHI.birthDate.slice(4, 6)}.${PHI.birthDate.slice(0, 4)}`,
    OtherPatientIDsSequence: [{ PatientID: PHI.otherPatientId, IssuerOfPatientID: PHI.issuer, TypeOfPatientID: 'TEXT' }],
    StudyInstanceUID: study.studyUid,
    SeriesInstanceUID: study.seriesUid,
    StudyID: 'STUDY-88123',
    SeriesNumber: seriesNumber,
    InstanceNumber: 1,
    DeviceSerialNumber: PHI.deviceSerial,
    RequestAttributesSequence: [
      {
        AccessionNumber: PHI.accession,
        RequestedProcedureID: PHI.requestedProcedureId,
        ScheduledProcedureStepID: 'SPS-3344551',
        RequestedProcedureDescription: `CT chest, patient ${PHI.patientName}`,
        // Three levels deep: Request Attributes > Referenced Study > a private block.
        ReferencedStudySequence: [{ ReferencedSOPClassUID: '1.2.840.10008.3.1.2.3.1', ReferencedSOPInstanceUID: study.studyUid }],
      },
    ],
    ReferencedPatientSequence: [{ ReferencedSOPClassUID: '1.2.840.10008.3.1.2.1.1', ReferencedSOPInstanceUID: uid() }],
  };
}

/** Private blocks (top level, and inside a nested item) that repeat the identifiers, in LO and in an OB blob. */
function addPrivate(dict: DicomDataDict): void {
  dict['00090010'] = { vr: 'LO', Value: ['ZEBEDEE PRIVATE 1'] };
  dict['00091001'] = { vr: 'LO', Value: [PHI.patientName] };
  dict['00091002'] = { vr: 'OB', Value: [new TextEncoder().encode(`id=${PHI.patientId};dob=${PHI.birthDate} `).buffer] };
  const ras = (dict['00400275']?.Value ?? [])[0] as DicomDataDict;
  const refStudy = (ras['00081110']?.Value ?? [])[0] as DicomDataDict;
  refStudy['00110010'] = { vr: 'LO', Value: ['ZEBEDEE NESTED'] };
  refStudy['00111001'] = { vr: 'LO', Value: [PHI.otherPatientId] };
}

function ctImage(study: { studyUid: string; seriesUid: string }, n: number): { bytes: Buffer; sop: string } {
  const sop = uid();
  const rows = 16;
  const cols = 16;
  const pixels = new Uint16Array(rows * cols);
  for (let i = 0; i < pixels.length; i++) pixels[i] = (i * 37 + n * 11) % 4096;
  const nat: Record<string, unknown> = {
    ...common(study, 'CT', 1, SOP.ct, sop),
    InstanceNumber: n + 1,
    ImageType: ['ORIGINAL', 'PRIMARY', 'AXIAL'],
    AcquisitionDate: '20240311',
    AcquisitionTime: '081700',
    ImageComments: `Patient ${PHI.patientName.split('^')[0]} moved, MRN ${PHI.patientId}`,
    ProtocolName: `CHEST ${PHI.patientName.split('^')[0]}`,
    DerivationDescription: `reviewed by ${PHI.reader}`,
    KVP: 120,
    SliceThickness: 1,
    ImagePositionPatient: [0, 0, n],
    ImageOrientationPatient: [1, 0, 0, 0, 1, 0],
    FrameOfReferenceUID: study.seriesUid + '.1',
    PositionReferenceIndicator: '',
    SamplesPerPixel: 1,
    PhotometricInterpretation: 'MONOCHROME2',
    Rows: rows,
    Columns: cols,
    PixelSpacing: [0.5, 0.5],
    BitsAllocated: 16,
    BitsStored: 12,
    HighBit: 11,
    PixelRepresentation: 0,
    RescaleIntercept: -1024,
    RescaleSlope: 1,
    BurnedInAnnotation: 'NO',
  };
  const dict = DicomMetaDictionary.denaturalizeDataset(nat);
  addPrivate(dict);
  // An overlay plane with a description and a comment naming the patient.
  dict['60000010'] = { vr: 'US', Value: [rows] };
  dict['60000011'] = { vr: 'US', Value: [cols] };
  dict['60000022'] = { vr: 'LO', Value: [`marker for ${PHI.patientName}`] };
  dict['60000040'] = { vr: 'CS', Value: ['G'] };
  dict['60000050'] = { vr: 'SS', Value: [1, 1] };
  dict['60000100'] = { vr: 'US', Value: [1] };
  dict['60000102'] = { vr: 'US', Value: [0] };
  dict['60003000'] = { vr: 'OW', Value: [new Uint8Array((rows * cols) / 8).fill(0x0f).buffer] };
  dict['60004000'] = { vr: 'LT', Value: [`placed by ${PHI.operator}`] };
  dict['7FE00010'] = { vr: 'OW', Value: [pixels.buffer] };
  return { bytes: part10(dict, SOP.ct, sop), sop };
}

function structuredReport(study: { studyUid: string; seriesUid: string }, images: string[]): { bytes: Buffer; sop: string } {
  const sop = uid();
  const [first] = PHI.patientName.split('^');
  const nat: Record<string, unknown> = {
    ...common(study, 'SR', 99, SOP.comprehensiveSr, sop),
    ValueType: 'CONTAINER',
    ConceptNameCodeSequence: [code('18748-4', 'LN', 'Diagnostic Imaging Report')],
    ContinuityOfContent: 'SEPARATE',
    CompletionFlag: 'COMPLETE',
    VerificationFlag: 'VERIFIED',
    VerifyingObserverSequence: [
      {
        VerifyingObserverName: [{ Alphabetic: PHI.reader }],
        VerifyingOrganization: PHI.institution,
        VerificationDateTime: '20240311101500',
        VerifyingObserverIdentificationCodeSequence: [code('EMP-99123', '99ZEB', PHI.reader)],
      },
    ],
    ReferencedRequestSequence: [
      {
        StudyInstanceUID: study.studyUid,
        AccessionNumber: PHI.accession,
        RequestedProcedureDescription: `CT for ${first}`,
        RequestedProcedureCodeSequence: [],
        RequestedProcedureID: PHI.requestedProcedureId,
        PlacerOrderNumberImagingServiceRequest: PHI.placerOrder,
        FillerOrderNumberImagingServiceRequest: PHI.fillerOrder,
        ReferencedStudySequence: [],
      },
    ],
    CurrentRequestedProcedureEvidenceSequence: [
      {
        StudyInstanceUID: study.studyUid,
        ReferencedSeriesSequence: [
          { SeriesInstanceUID: study.seriesUid, ReferencedSOPSequence: images.map((i) => ({ ReferencedSOPClassUID: SOP.ct, ReferencedSOPInstanceUID: i })) },
        ],
      },
    ],
    PerformedProcedureCodeSequence: [],
    ContentTemplateSequence: [{ MappingResource: 'DCMR', TemplateIdentifier: '2000' }],
    ContentSequence: [
      {
        RelationshipType: 'HAS OBS CONTEXT',
        ValueType: 'PNAME',
        ConceptNameCodeSequence: [code('121008', 'DCM', 'Person Observer Name')],
        PersonName: [{ Alphabetic: PHI.reader }],
      },
      {
        RelationshipType: 'HAS OBS CONTEXT',
        ValueType: 'PNAME',
        ConceptNameCodeSequence: [code('121029', 'DCM', 'Subject Name')],
        PersonName: [{ Alphabetic: PHI.patientName }],
      },
      { RelationshipType: 'HAS OBS CONTEXT', ValueType: 'DATE', ConceptNameCodeSequence: [code('121033', 'DCM', 'Subject Birth Date')], Date: PHI.birthDate },
      { RelationshipType: 'HAS OBS CONTEXT', ValueType: 'TEXT', ConceptNameCodeSequence: [code('121030', 'DCM', 'Subject ID')], TextValue: PHI.patientId },
      {
        RelationshipType: 'CONTAINS',
        ValueType: 'CONTAINER',
        ConceptNameCodeSequence: [code('121070', 'DCM', 'Findings')],
        ContinuityOfContent: 'SEPARATE',
        ContentSequence: [
          {
            RelationshipType: 'CONTAINS',
            ValueType: 'TEXT',
            ConceptNameCodeSequence: [code('121071', 'DCM', 'Finding')],
            TextValue: `Mr ${first} (MRN ${PHI.patientId}, born 13/03/1957) seen at ${PHI.institution}: no acute findings. Compared with CT of 1 Feb 2024.`,
          },
          { RelationshipType: 'CONTAINS', ValueType: 'DATE', ConceptNameCodeSequence: [code('111060', 'DCM', 'Study Date')], Date: '20240201' },
          { RelationshipType: 'CONTAINS', ValueType: 'TIME', ConceptNameCodeSequence: [code('111061', 'DCM', 'Study Time')], Time: '093000' },
          {
            RelationshipType: 'CONTAINS',
            ValueType: 'CODE',
            ConceptNameCodeSequence: [code('121071', 'DCM', 'Finding')],
            ConceptCodeSequence: [code('LOC-1', '99ZEB', `nodule reported to ${PHI.referring}`)],
          },
          {
            RelationshipType: 'CONTAINS',
            ValueType: 'IMAGE',
            ConceptNameCodeSequence: [code('121200', 'DCM', 'Illustration of ROI')],
            ReferencedSOPSequence: [{ ReferencedSOPClassUID: SOP.ct, ReferencedSOPInstanceUID: images[0] }],
          },
        ],
      },
    ],
  };
  const dict = DicomMetaDictionary.denaturalizeDataset(nat);
  addPrivate(dict);
  return { bytes: part10(dict, SOP.comprehensiveSr, sop), sop };
}

/** A minimal, valid PDF 1.4 whose page text names the patient (uncompressed content stream). */
export function requisitionPdf(): Buffer {
  const text = [
    `Requisition - ${PHI.institution}`,
    `Patient: ${PHI.patientName.replace(/\^/g, ' ')}`,
    `MRN: ${PHI.patientId}  DOB: 13.03.1957`,
    `Referring: ${PHI.referring.replace('^', ' ')}`,
  ];
  const stream = `BT /F1 12 Tf 50 750 Td 14 TL ${text.map((t) => `(${t.replace(/[()\\]/g, '')}) '`).join(' ')} ET`;
  const objects = [
    '<< /Type /Catalog /Pages 2 0 R >>',
    '<< /Type /Pages /Kids [3 0 R] /Count 1 >>',
    '<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>',
    `<< /Length ${stream.length} >>\nstream\n${stream}\nendstream`,
    '<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>',
  ];
  let out = '%PDF-1.4\n';
  const offsets: number[] = [];
  objects.forEach((o, i) => {
    offsets.push(out.length);
    out += `${i + 1} 0 obj\n${o}\nendobj\n`;
  });
  const xref = out.length;
  out += `xref\n0 ${objects.length + 1}\n0000000000 65535 f \n${offsets.map((o) => `${String(o).padStart(10, '0')} 00000 n \n`).join('')}`;
  out += `trailer\n<< /Size ${objects.length + 1} /Root 1 0 R >>\nstartxref\n${xref}\n%%EOF\n`;
  return Buffer.from(out, 'latin1');
}

function encapsulatedPdf(study: { studyUid: string; seriesUid: string }): { bytes: Buffer; sop: string } {
  const sop = uid();
  const pdf = requisitionPdf();
  const padded = pdf.length % 2 ? Buffer.concat([pdf, Buffer.from([0])]) : pdf;
  const nat: Record<string, unknown> = {
    ...common(study, 'DOC', 98, SOP.pdf, sop),
    ConversionType: 'SD',
    BurnedInAnnotation: 'YES',
    DocumentTitle: `Requisition ${PHI.patientName}`,
    ConceptNameCodeSequence: [],
    MIMETypeOfEncapsulatedDocument: 'application/pdf',
    AcquisitionDateTime: '20240311081000',
  };
  const dict = DicomMetaDictionary.denaturalizeDataset(nat);
  dict['00420011'] = { vr: 'OB', Value: [padded.buffer.slice(padded.byteOffset, padded.byteOffset + padded.byteLength)] };
  dict['00420015'] = { vr: 'UL', Value: [pdf.length] };
  addPrivate(dict);
  return { bytes: part10(dict, SOP.pdf, sop), sop };
}

/** A CT dose screen captured as Secondary Capture: modality CT, no BurnedInAnnotation, the name is in the pixels. */
function doseScreen(study: { studyUid: string; seriesUid: string }): { bytes: Buffer; sop: string } {
  const sop = uid();
  const rows = 8;
  const cols = 8;
  const nat: Record<string, unknown> = {
    ...common(study, 'CT', 997, SOP.sc, sop),
    ConversionType: 'WSD',
    ImageType: ['DERIVED', 'SECONDARY', 'OTHER'],
    SeriesDescription: 'Dose Report',
    SamplesPerPixel: 1,
    PhotometricInterpretation: 'MONOCHROME2',
    Rows: rows,
    Columns: cols,
    BitsAllocated: 8,
    BitsStored: 8,
    HighBit: 7,
    PixelRepresentation: 0,
  };
  const dict = DicomMetaDictionary.denaturalizeDataset(nat);
  addPrivate(dict);
  dict['7FE00010'] = { vr: 'OB', Value: [new Uint8Array(rows * cols).fill(200).buffer] };
  return { bytes: part10(dict, SOP.sc, sop), sop };
}

/** Writes the study to `dir` (created): 3 CT images, an SR, an Encapsulated PDF, a dose screen Secondary Capture. */
export function writePhiStudy(dir: string, o: { images?: number } = {}): PhiStudy {
  mkdirSync(dir, { recursive: true });
  const studyUid = uid();
  const ctSeries = { studyUid, seriesUid: uid() };
  const files: PhiStudyFile[] = [];
  const write = (name: string, kind: PhiInstanceKind, sopClassUid: string, r: { bytes: Buffer; sop: string }, risk: PhiStudyFile['risk']): void => {
    const p = path.join(dir, name);
    writeFileSync(p, r.bytes);
    files.push({ path: p, kind, sopClassUid, sopInstanceUid: r.sop, risk });
  };
  const images: string[] = [];
  for (let i = 0; i < (o.images ?? 3); i++) {
    const r = ctImage(ctSeries, i);
    images.push(r.sop);
    write(`ct${i + 1}.dcm`, 'ct', SOP.ct, r, null);
  }
  write('sr.dcm', 'sr', SOP.comprehensiveSr, structuredReport({ studyUid, seriesUid: uid() }, images), null);
  write('requisition-pdf.dcm', 'pdf', SOP.pdf, encapsulatedPdf({ studyUid, seriesUid: uid() }), 'encapsulated-document');
  write('dose-screen-sc.dcm', 'sc-dose', SOP.sc, doseScreen({ studyUid, seriesUid: uid() }), 'burned-in-risk');

  const secrets = [
    ...new Set([
      ...Object.values(PHI).filter((v) => v.length >= 6),
      ...PHI.patientName.split('^'),
      ...[PHI.referring, PHI.operator, PHI.performing, PHI.reader].map((n) => n.split('^')[0] as string),
      'EMP-99123',
      'SPS-3344551',
      '13.03.1957',
      '13/03/1957',
    ]),
  ];
  return {
    dir,
    studyInstanceUid: studyUid,
    files,
    phi: PHI,
    secrets,
    knownIdentifiers: () =>
      new KnownIdentifiers()
        .addPersonName(PHI.patientName, 'patient-name')
        .addId(PHI.patientId, 'patient-id')
        .addId(PHI.otherPatientId, 'patient-id')
        .addId(PHI.issuer)
        .addId(PHI.accession, 'accession')
        .addDate(PHI.birthDate, 'birth-date')
        .addText(PHI.institution, 'institution')
        .addText(PHI.department, 'institution')
        .addText(PHI.institutionAddress, 'address')
        .addText(PHI.patientAddress, 'address')
        .addText(PHI.phone, 'phone')
        .addText(PHI.station, 'station')
        .addPersonName(PHI.referring)
        .addPersonName(PHI.operator)
        .addPersonName(PHI.performing)
        .addPersonName(PHI.reader)
        .addId(PHI.placerOrder)
        .addId(PHI.fillerOrder)
        .addId(PHI.requestedProcedureId)
        .addId(PHI.deviceSerial),
  };
}
