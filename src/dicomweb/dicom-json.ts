import dcmjs, { type DicomDataDict } from 'dcmjs';

/** One dataset in the DICOM JSON model (PS3.18 F.2). */
export type DicomJson = Record<string, { vr: string; Value?: unknown[]; InlineBinary?: string; BulkDataURI?: string }>;

const BINARY_VRS = new Set(['OB', 'OD', 'OF', 'OL', 'OV', 'OW', 'UN']);
/** Inline binary values above this are left out (a reader fetches the instance for them). */
const MAX_INLINE_BYTES = 64 * 1024;

/** Attribute keywords this service names, with their tag and VR. */
export const Tag = {
  SpecificCharacterSet: ['00080005', 'CS'],
  StudyDate: ['00080020', 'DA'],
  StudyTime: ['00080030', 'TM'],
  AccessionNumber: ['00080050', 'SH'],
  Modality: ['00080060', 'CS'],
  ModalitiesInStudy: ['00080061', 'CS'],
  ReferringPhysicianName: ['00080090', 'PN'],
  StudyDescription: ['00081030', 'LO'],
  SeriesDescription: ['0008103E', 'LO'],
  SOPClassUID: ['00080016', 'UI'],
  SOPInstanceUID: ['00080018', 'UI'],
  AvailableTransferSyntaxUID: ['00083002', 'UI'],
  RetrieveURL: ['00081190', 'UR'],
  PatientName: ['00100010', 'PN'],
  PatientID: ['00100020', 'LO'],
  IssuerOfPatientID: ['00100021', 'LO'],
  PatientBirthDate: ['00100030', 'DA'],
  PatientSex: ['00100040', 'CS'],
  BodyPartExamined: ['00180015', 'CS'],
  StudyInstanceUID: ['0020000D', 'UI'],
  SeriesInstanceUID: ['0020000E', 'UI'],
  StudyID: ['00200010', 'SH'],
  SeriesNumber: ['00200011', 'IS'],
  InstanceNumber: ['00200013', 'IS'],
  NumberOfStudyRelatedSeries: ['00201206', 'IS'],
  NumberOfStudyRelatedInstances: ['00201208', 'IS'],
  NumberOfSeriesRelatedInstances: ['00201209', 'IS'],
} as const satisfies Record<string, readonly [string, string]>;
export type Keyword = keyof typeof Tag;

/** The attributes a QIDO answer carries at each level by default (PS3.18 Tables 10.6.3-3 to -5, the ones we hold). */
export const STUDY_ATTRIBUTES: readonly Keyword[] = [
  'StudyDate',
  'StudyTime',
  'AccessionNumber',
  'ModalitiesInStudy',
  'ReferringPhysicianName',
  'PatientName',
  'PatientID',
  'IssuerOfPatientID',
  'PatientBirthDate',
  'PatientSex',
  'StudyInstanceUID',
  'StudyID',
  'StudyDescription',
  'NumberOfStudyRelatedSeries',
  'NumberOfStudyRelatedInstances',
];
export const SERIES_ATTRIBUTES: readonly Keyword[] = [
  'Modality',
  'SeriesDescription',
  'SeriesInstanceUID',
  'SeriesNumber',
  'BodyPartExamined',
  'NumberOfSeriesRelatedInstances',
];
export const INSTANCE_ATTRIBUTES: readonly Keyword[] = ['SOPClassUID', 'SOPInstanceUID', 'InstanceNumber', 'AvailableTransferSyntaxUID'];

/** A keyword or an 8-hex-digit tag from a query string, as a tag (upper case); undefined when unknown. */
export function tagOf(key: string): string | undefined {
  if (/^[0-9A-Fa-f]{8}$/.test(key)) return key.toUpperCase();
  const own = (Tag as Record<string, readonly [string, string]>)[key];
  if (own) return own[0];
  // dcmjs's own dictionary (not in our type declarations): keyword -> `(gggg,eeee)`.
  const nameMap = (dcmjs.data.DicomMetaDictionary as unknown as { nameMap: Record<string, { tag?: string } | undefined> }).nameMap;
  const entry = nameMap[key];
  return entry?.tag ? entry.tag.replace(/[(),]/g, '').toUpperCase() : undefined;
}

/** Sets one attribute from a plain value; null, undefined and '' leave it present but empty (PS3.18 F.2.5). */
export function put(ds: DicomJson, keyword: Keyword, value: string | number | null | undefined | (string | number)[]): void {
  const [tag, vr] = Tag[keyword];
  const values = (Array.isArray(value) ? value : [value]).filter((v) => v !== null && v !== undefined && v !== '');
  if (values.length === 0) {
    ds[tag] = { vr };
    return;
  }
  if (vr === 'PN') ds[tag] = { vr, Value: values.map((v) => ({ Alphabetic: String(v) })) };
  else if (vr === 'IS') ds[tag] = { vr, Value: values.map((v) => Number(v)) };
  else ds[tag] = { vr, Value: values };
}

/**
 * A dcmjs dataset (header, up to Pixel Data) as DICOM JSON: empty values
 * omitted, binary values inline (small ones only), the reader-private
 * `_rawValue` dropped, group 0002 and Pixel Data left out.
 */
export function toDicomJson(dict: DicomDataDict): DicomJson {
  const out: DicomJson = {};
  for (const tag of Object.keys(dict).sort()) {
    if (tag.startsWith('0002') || tag === '7FE00010') continue;
    const el = dict[tag] as { vr: string; Value?: unknown[] } | undefined;
    if (!el) continue;
    const vr = el.vr;
    if (vr === 'SQ') {
      out[tag] = { vr, Value: (el.Value ?? []).map((item) => toDicomJson(item as DicomDataDict)) };
      continue;
    }
    if (BINARY_VRS.has(vr)) {
      const parts = (el.Value ?? []).filter((v): v is ArrayBuffer => v instanceof ArrayBuffer);
      const bytes = Buffer.concat(parts.map((p) => Buffer.from(p)));
      if (bytes.length > 0 && bytes.length <= MAX_INLINE_BYTES) out[tag] = { vr, InlineBinary: bytes.toString('base64') };
      else out[tag] = { vr };
      continue;
    }
    const values = (el.Value ?? []).filter((v) => v !== '' && v !== null && v !== undefined);
    out[tag] = values.length > 0 ? { vr, Value: values } : { vr };
  }
  return out;
}

/** The first value of an attribute as text (PN: its alphabetic group). */
export function firstValue(ds: DicomJson, tag: string): string | undefined {
  const v = ds[tag]?.Value?.[0];
  if (v === undefined || v === null) return undefined;
  if (typeof v === 'object') return String((v as { Alphabetic?: string }).Alphabetic ?? '');
  return String(v);
}

/** Only the listed tags (plus those always answered); `all` keeps every one. */
export function pick(ds: DicomJson, tags: ReadonlySet<string> | 'all'): DicomJson {
  if (tags === 'all') return ds;
  const out: DicomJson = {};
  for (const t of Object.keys(ds).sort()) if (tags.has(t)) out[t] = ds[t]!;
  return out;
}
