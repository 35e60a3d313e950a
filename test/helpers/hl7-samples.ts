/**
 * Realistic HL7 v2 messages as a RIS, a PACS-side AI and an MPI send them.
 * Segments end with CR. Every builder takes the identifiers a test varies.
 */

export interface SampleIds {
  controlId?: string;
  patientId?: string;
  accession?: string;
  studyUid?: string | null;
  sendingApplication?: string;
  sendingFacility?: string;
  version?: '2.3' | '2.5.1';
}

const ts = '20260301101500';

/** A segment from numbered fields, so a sample cannot miscount its pipes. */
export function seg(name: string, fields: Record<number, string>): string {
  const max = Math.max(0, ...Object.keys(fields).map(Number));
  const out = [name];
  for (let i = 1; i <= max; i++) out.push(fields[i] ?? '');
  return out.join('|');
}

function msh(type: string, ids: SampleIds, defaults: { app: string; fac: string }): string {
  const version = ids.version ?? '2.5.1';
  return `MSH|^~\\&|${ids.sendingApplication ?? defaults.app}|${ids.sendingFacility ?? defaults.fac}|SECONDREAD|GATEWAY|${ts}||${type}|${ids.controlId ?? 'MSG00001'}|P|${version}`;
}

function pid(ids: SampleIds): string {
  // Two identifiers: the hospital MRN first, then a national one from another authority.
  return `PID|1||${ids.patientId ?? 'MRN1001'}^^^HOSP^MR~9434765919^^^NHS^NH||DOE^JANE^Q||19650412|F|||12 HIGH ST^^LEEDS^^LS1 4AB^GBR`;
}

const zds = (ids: SampleIds) => (ids.studyUid ? [`ZDS|${ids.studyUid}^SECONDREAD^Application^DICOM`] : []);

/** ORM^O01 (HL7 2.3 layout): priority in ORC-7.6 and OBR-27.6, reason in OBR-31, diagnoses in DG1. */
export function ormO01(ids: SampleIds = {}, o: { orderControl?: string; secondOpinion?: boolean } = {}): string {
  const acc = ids.accession ?? 'ACC1001';
  return (
    [
      msh('ORM^O01', { version: '2.3', ...ids }, { app: 'RIS', fac: 'HOSP' }),
      pid(ids),
      'PV1|1|O|RAD^^^HOSP||||1234^REFERRER^RITA^^^DR',
      `ORC|${o.orderControl ?? 'NW'}|PL${acc}|${acc}||SC||^^^20260301100000^^S||20260301100000|||1234^REFERRER^RITA^^^DR`,
      seg('OBR', {
        1: '1',
        2: `PL${acc}`,
        3: acc,
        4: 'CTCHEST^CT Chest with contrast^L',
        7: '20260301100000',
        13: 'Staging of known lung carcinoma',
        16: '1234^REFERRER^RITA^^^DR',
        18: acc,
        24: 'CT',
        27: '^^^20260301100000^^S',
        31: 'C34.90^Malignant neoplasm of lung^I10~R91.8^Other nonspecific abnormal finding of lung field^I10',
        46: o.secondOpinion ? 'SECOND_OPINION' : '',
      }),
      'DG1|1|I10|C34.90^Malignant neoplasm of unspecified part of lung^I10||20260301|A',
      'DG1|2|I10|J44.9^COPD^I10||20260301|A',
      ...zds(ids),
    ].join('\r') + '\r'
  );
}

/** OMI^O23 (HL7 2.5.1): TQ1-9 priority, IPC with accession, StudyInstanceUID and modality. */
export function omiO23(ids: SampleIds = {}): string {
  const acc = ids.accession ?? 'ACC2001';
  const uid = ids.studyUid === undefined ? '1.2.826.0.1.3680043.8.498.2001' : ids.studyUid;
  return (
    [
      msh('OMI^O23^OMI_O23', ids, { app: 'RIS', fac: 'HOSP' }),
      pid(ids),
      'PV1|1|I|WARD3^^^HOSP',
      `ORC|NW|PL${acc}|${acc}||SC||||20260301100000|||5678^ORDERER^OLIVER^^^DR`,
      'TQ1|1||||||20260301100000||A^ASAP^HL70485',
      seg('OBR', { 1: '1', 2: `PL${acc}`, 3: acc, 4: 'MRBRAIN^MR Brain without contrast^L', 24: 'MR', 31: 'R51.9^Headache^I10' }),
      'DG1|1|I10|R51.9^Headache, unspecified^I10||20260301|W',
      `IPC|${acc}|RP${acc}|${uid ?? ''}|SPS${acc}|MR`,
    ].join('\r') + '\r'
  );
}

export interface ReportOptions {
  status?: 'P' | 'F' | 'C' | 'X';
  lines?: string[];
  radiologist?: string;
}

/** ORU^R01 primary report: several TX OBX, escapes, the radiologist in OBR-32 (NDL with subcomponents). */
export function oruR01(ids: SampleIds = {}, o: ReportOptions = {}): string {
  const acc = ids.accession ?? 'ACC1001';
  const lines = o.lines ?? ['FINDINGS: 2.1 cm spiculated mass in the right upper lobe.', 'IMPRESSION: Suspicious for primary lung carcinoma.'];
  return (
    [
      msh('ORU^R01^ORU_R01', ids, { app: 'RIS', fac: 'HOSP' }),
      pid(ids),
      seg('OBR', {
        1: '1',
        2: `PL${acc}`,
        3: acc,
        4: 'CTCHEST^CT Chest with contrast^L',
        7: '20260301103000+0100',
        16: '1234^REFERRER^RITA',
        22: '20260301110000+0100',
        24: 'CT',
        25: o.status ?? 'F',
        31: 'C34.90^Malignant neoplasm of lung^I10',
        32: `${o.radiologist ?? 'RAD7'}&RADIOLOGIST&RUTH`,
      }),
      ...lines.map((l, i) => seg('OBX', { 1: String(i + 1), 2: 'TX', 3: '18782-3^Radiology Study observation^LN', 5: l, 11: o.status ?? 'F' })),
      ...zds(ids),
    ].join('\r') + '\r'
  );
}

export interface AiFindingSample {
  code: string;
  text: string;
  flag: 'A' | 'N' | 'AA' | '';
}

/** ORU^R01 from an AI vendor: one CWE OBX per finding, OBX-8 `A` when positive. */
export function aiOru(ids: SampleIds = {}, findings: AiFindingSample[] = [{ code: 'RID3875', text: 'Lung nodule', flag: 'A' }]): string {
  const acc = ids.accession ?? 'ACC1001';
  return (
    [
      msh('ORU^R01^ORU_R01', ids, { app: 'AI_VENDOR', fac: 'AIHOST' }),
      pid(ids),
      seg('OBR', { 1: '1', 3: acc, 4: 'AICHEST^AI chest CT analysis^L', 7: '20260301104500+0000', 22: '20260301104600+0000', 24: 'CT', 25: 'F' }),
      ...findings.map((f, i) =>
        seg('OBX', {
          1: String(i + 1),
          2: 'CWE',
          3: `${f.code}^${f.text}^RADLEX`,
          5: f.flag === 'N' ? 'NEG^Not detected^AI' : 'POS^Detected^AI',
          8: f.flag,
          11: 'F',
          14: '20260301104530+0000',
        }),
      ),
      ...zds(ids),
    ].join('\r') + '\r'
  );
}

/** ADT^A40: merge `prior` into `patientId`. */
export function adtA40(ids: SampleIds & { priorPatientId: string }): string {
  return (
    [
      msh('ADT^A40^ADT_A39', ids, { app: 'MPI', fac: 'HOSP' }),
      'EVN|A40|20260301120000',
      `PID|1||${ids.patientId ?? 'MRN1001'}^^^HOSP^MR||DOE^JANE||19650412|F`,
      `MRG|${ids.priorPatientId}^^^HOSP^MR`,
    ].join('\r') + '\r'
  );
}

/** A ~2 KB ORU, the benchmark's message. */
export function benchReport(n: number, app = 'RIS'): string {
  const lines = Array.from(
    { length: 10 },
    (_, i) => `Line ${i + 1} of the report: no acute intracranial haemorrhage, mass effect or midline shift \\T\\ ventricles normal.`,
  );
  return oruR01({ controlId: `B${n}`, accession: `BA${n}`, patientId: `BP${n % 997}`, sendingApplication: app }, { lines });
}
