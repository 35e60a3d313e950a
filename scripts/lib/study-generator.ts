import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import dcmjs from 'dcmjs';

const { DicomDict, DicomMetaDictionary } = dcmjs.data;

export const SopClass = {
  ct: '1.2.840.10008.5.1.4.1.1.2',
  mr: '1.2.840.10008.5.1.4.1.1.4',
} as const;

export const Ts = {
  implicitLe: '1.2.840.10008.1.2',
  explicitLe: '1.2.840.10008.1.2.1',
  deflate: '1.2.840.10008.1.2.1.99',
  explicitBe: '1.2.840.10008.1.2.2',
  jpegBaseline: '1.2.840.10008.1.2.4.50',
  jpegExtended: '1.2.840.10008.1.2.4.51',
  jpegLossless57: '1.2.840.10008.1.2.4.57',
  jpegLossless70: '1.2.840.10008.1.2.4.70',
  jpegLsLossless: '1.2.840.10008.1.2.4.80',
  jpegLsNear: '1.2.840.10008.1.2.4.81',
  j2kLossless: '1.2.840.10008.1.2.4.90',
  j2k: '1.2.840.10008.1.2.4.91',
  rle: '1.2.840.10008.1.2.5',
} as const;

export interface StudyOptions {
  modality?: 'CT' | 'MR';
  instances: number;
  series?: number;
  rows?: number;
  columns?: number;
  bitsAllocated?: 8 | 16;
  /**
   * Explicit or implicit VR little endian are real encodings. Any encapsulated
   * syntax (e.g. JPEG 2000, which DCMTK cannot encode) gets the raw pixel bytes
   * as one fragment: good for transport tests that store bytes as sent, not a
   * decodable image.
   */
  transferSyntaxUid?: string;
  patientName?: string;
  patientId?: string;
  accessionNumber?: string;
  studyInstanceUid?: string;
  studyDescription?: string;
  bodyPartExamined?: string;
  referringPhysicianName?: string;
  studyDate?: string;
  /** (0028,0301): YES marks pixel data that may show identifying text. */
  burnedInAnnotation?: 'YES' | 'NO';
}

export interface GeneratedInstance {
  path: string;
  sopClassUid: string;
  sopInstanceUid: string;
  seriesInstanceUid: string;
  instanceNumber: number;
  sizeBytes: number;
}

export interface GeneratedStudy {
  studyInstanceUid: string;
  accessionNumber: string;
  patientId: string;
  patientName: string;
  modality: 'CT' | 'MR';
  seriesInstanceUids: string[];
  instances: GeneratedInstance[];
}

/** A UID under the UUID-derived root 2.25: unique without a registered org root. */
export function newUid(): string {
  return `2.25.${BigInt(`0x${randomBytes(16).toString('hex')}`).toString(10)}`;
}

function digits(n: number): string {
  let s = '';
  while (s.length < n) s += randomBytes(8).readBigUInt64BE().toString(10);
  return s.slice(0, n);
}

interface InstanceSpec extends Required<Omit<StudyOptions, 'instances' | 'series'>> {
  sopClassUid: string;
  sopInstanceUid: string;
  seriesInstanceUid: string;
  seriesNumber: number;
  seriesDescription: string;
  frameOfReferenceUid: string;
  instanceNumber: number;
  sliceCount: number;
}

/** Resolves every option once so all instances of a study share the same patient and study attributes. */
function resolveStudy(o: StudyOptions): Required<Omit<StudyOptions, 'instances' | 'series'>> {
  const modality = o.modality ?? 'CT';
  return {
    modality,
    rows: o.rows ?? 512,
    columns: o.columns ?? 512,
    bitsAllocated: o.bitsAllocated ?? 16,
    transferSyntaxUid: o.transferSyntaxUid ?? Ts.explicitLe,
    patientName: o.patientName ?? 'SYNTHETIC^PATIENT',
    patientId: o.patientId ?? `SYN${digits(7)}`,
    accessionNumber: o.accessionNumber ?? `ACC${digits(9)}`,
    studyInstanceUid: o.studyInstanceUid ?? newUid(),
    studyDescription: o.studyDescription ?? (modality === 'CT' ? 'CT CHEST ABDOMEN PELVIS W CONTRAST' : 'MR BRAIN WO W CONTRAST'),
    bodyPartExamined: o.bodyPartExamined ?? (modality === 'CT' ? 'CHEST' : 'HEAD'),
    referringPhysicianName: o.referringPhysicianName ?? 'REFERRER^ROBERTA^^DR',
    studyDate: o.studyDate ?? new Date().toISOString().slice(0, 10).replace(/-/g, ''),
    burnedInAnnotation: o.burnedInAnnotation ?? 'NO',
  };
}

/** A phantom-like slice (a disc of soft tissue in air, plus noise) so compressors see realistic data. */
function pixels(s: InstanceSpec): ArrayBuffer {
  const { rows, columns, bitsAllocated } = s;
  const n = rows * columns;
  const cx = columns / 2;
  const cy = rows / 2;
  const r2 = (Math.min(rows, columns) * (0.3 + 0.1 * Math.sin(s.instanceNumber / 7))) ** 2;
  const noise = randomBytes(n);
  if (bitsAllocated === 8) {
    const out = new Uint8Array(n);
    for (let y = 0, i = 0; y < rows; y++) {
      for (let x = 0; x < columns; x++, i++) {
        const inside = (x - cx) ** 2 + (y - cy) ** 2 < r2;
        out[i] = (inside ? 120 : 10) + ((noise[i] ?? 0) & 15);
      }
    }
    return out.buffer;
  }
  const out = new Int16Array(n);
  for (let y = 0, i = 0; y < rows; y++) {
    for (let x = 0; x < columns; x++, i++) {
      const inside = (x - cx) ** 2 + (y - cy) ** 2 < r2;
      // Stored values: CT 0..~1100 with intercept -1024 (air ~ -1000 HU, tissue ~ +40 HU)
      out[i] = (inside ? 1064 : 24) + ((noise[i] ?? 0) & 31);
    }
  }
  return out.buffer;
}

/** Builds one Part 10 instance in memory. */
export function buildInstance(s: InstanceSpec): Buffer {
  const ct = s.modality === 'CT';
  const pos = [-(s.columns * 0.35), -(s.rows * 0.35), -s.instanceNumber * 2.5];
  const natural: Record<string, unknown> = {
    SpecificCharacterSet: 'ISO_IR 192',
    ImageType: ['ORIGINAL', 'PRIMARY', 'AXIAL'],
    SOPClassUID: s.sopClassUid,
    SOPInstanceUID: s.sopInstanceUid,
    StudyDate: s.studyDate,
    SeriesDate: s.studyDate,
    ContentDate: s.studyDate,
    StudyTime: '083000',
    SeriesTime: '083100',
    ContentTime: '083105',
    AccessionNumber: s.accessionNumber,
    Modality: s.modality,
    Manufacturer: 'SYNTHETIC',
    InstitutionName: 'SECOND READ TEST HOSPITAL',
    ReferringPhysicianName: [{ Alphabetic: s.referringPhysicianName }],
    StudyDescription: s.studyDescription,
    SeriesDescription: s.seriesDescription,
    ManufacturerModelName: ct ? 'SYNTH-CT 64' : 'SYNTH-MR 3T',
    PatientName: [{ Alphabetic: s.patientName }],
    PatientID: s.patientId,
    PatientBirthDate: '19600101',
    PatientSex: 'O',
    BodyPartExamined: s.bodyPartExamined,
    BurnedInAnnotation: s.burnedInAnnotation,
    SliceThickness: ct ? 2.5 : 5,
    StudyInstanceUID: s.studyInstanceUid,
    SeriesInstanceUID: s.seriesInstanceUid,
    StudyID: '1',
    SeriesNumber: s.seriesNumber,
    InstanceNumber: s.instanceNumber,
    ImagePositionPatient: pos,
    ImageOrientationPatient: [1, 0, 0, 0, 1, 0],
    FrameOfReferenceUID: s.frameOfReferenceUid,
    SamplesPerPixel: 1,
    PhotometricInterpretation: 'MONOCHROME2',
    Rows: s.rows,
    Columns: s.columns,
    PixelSpacing: [0.7, 0.7],
    BitsAllocated: s.bitsAllocated,
    BitsStored: s.bitsAllocated === 8 ? 8 : 12,
    HighBit: s.bitsAllocated === 8 ? 7 : 11,
    PixelRepresentation: 0,
  };
  if (ct) {
    Object.assign(natural, { KVP: 120, RescaleIntercept: -1024, RescaleSlope: 1, WindowCenter: 40, WindowWidth: 400 });
  } else {
    Object.assign(natural, { MagneticFieldStrength: 3, EchoTime: 90, RepetitionTime: 5000 });
  }
  const dict = DicomMetaDictionary.denaturalizeDataset(natural);
  dict['7FE00010'] = { vr: s.bitsAllocated === 8 ? 'OB' : 'OW', Value: [pixels(s)] };
  const meta = DicomMetaDictionary.denaturalizeDataset({
    FileMetaInformationVersion: new Uint8Array([0, 1]).buffer,
    MediaStorageSOPClassUID: s.sopClassUid,
    MediaStorageSOPInstanceUID: s.sopInstanceUid,
    TransferSyntaxUID: s.transferSyntaxUid,
    ImplementationClassUID: '2.25.80302813137786398554742050926734630921',
    ImplementationVersionName: 'SRGW-GEN',
    _vrMap: { FileMetaInformationVersion: 'OB' },
  });
  const dicomDict = new DicomDict(meta);
  dicomDict.dict = dict;
  return Buffer.from(dicomDict.write());
}

/** Writes a synthetic study as Part 10 files (`<series>/<instance>.dcm`) under `outDir`. */
export function generateStudy(outDir: string, options: StudyOptions): GeneratedStudy {
  const study = resolveStudy(options);
  const seriesCount = Math.max(1, Math.min(options.series ?? 2, options.instances));
  const sopClassUid = study.modality === 'CT' ? SopClass.ct : SopClass.mr;
  const seriesNames = study.modality === 'CT' ? ['AXIAL 2.5MM', 'AXIAL 5MM', 'CORONAL MPR', 'SAGITTAL MPR'] : ['AX T2', 'AX FLAIR', 'AX T1 POST', 'SAG T1'];
  const seriesInstanceUids = Array.from({ length: seriesCount }, () => newUid());
  const frameOfReferenceUid = newUid();
  const perSeries = Math.ceil(options.instances / seriesCount);
  const instances: GeneratedInstance[] = [];
  for (let i = 0; i < options.instances; i++) {
    const si = Math.floor(i / perSeries);
    const seriesInstanceUid = seriesInstanceUids[si] as string;
    const instanceNumber = (i % perSeries) + 1;
    const spec: InstanceSpec = {
      ...study,
      sopClassUid,
      sopInstanceUid: newUid(),
      seriesInstanceUid,
      seriesNumber: si + 1,
      seriesDescription: seriesNames[si % seriesNames.length] as string,
      frameOfReferenceUid,
      instanceNumber,
      sliceCount: perSeries,
    };
    const bytes = buildInstance(spec);
    const dir = path.join(outDir, `series${String(si + 1).padStart(2, '0')}`);
    mkdirSync(dir, { recursive: true });
    const file = path.join(dir, `${String(instanceNumber).padStart(5, '0')}.dcm`);
    writeFileSync(file, bytes);
    instances.push({ path: file, sopClassUid, sopInstanceUid: spec.sopInstanceUid, seriesInstanceUid, instanceNumber, sizeBytes: bytes.length });
  }
  return {
    studyInstanceUid: study.studyInstanceUid,
    accessionNumber: study.accessionNumber,
    patientId: study.patientId,
    patientName: study.patientName,
    modality: study.modality,
    seriesInstanceUids,
    instances,
  };
}
