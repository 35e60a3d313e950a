/**
 * The demo's synthetic workload: one scenario per study, with the HL7 the RIS
 * (and an AI vendor) would send for it. A realistic mix: mostly routine
 * studies with normal reports (QA sampling may pick some), some oncology
 * (ICD-10 C codes, staging keywords), some where an AI result is positive and
 * the report negates it, and the odd high-stakes (transplant) work-up.
 * Every name and identifier is synthetic.
 */
import { randomInt } from 'node:crypto';

export type ScenarioKind = 'routine' | 'oncology' | 'ai-discordant' | 'high-stakes';

export interface AiFinding {
  code: string;
  text: string;
  positive: boolean;
}

export interface Scenario {
  n: number;
  kind: ScenarioKind;
  label: string;
  modality: 'CT' | 'MR';
  studyDescription: string;
  bodyPart: string;
  instances: number;
  series: number;
  patientId: string;
  patientName: string;
  accession: string;
  /** The ORM^O01 the RIS sends when the exam is ordered. */
  order: string;
  /** An AI vendor's ORU^R01 (MSH-3 AI_VENDOR), when an AI looked at the study. */
  ai?: string;
  /** The primary report, final (OBR-25 F). */
  report: string;
}

interface Template {
  kind: ScenarioKind;
  weight: number;
  label: string;
  modality: 'CT' | 'MR';
  procedure: string;
  studyDescription: string;
  bodyPart: string;
  /** OBR-31 reason for study and DG1 diagnoses, as CWE `code^text^I10`. */
  reason: string;
  diagnoses: string[];
  clinicalInfo: string;
  reportLines: string[];
  ai?: AiFinding[];
}

const TEMPLATES: Template[] = [
  // Routine work with normal or unremarkable reports.
  {
    kind: 'routine',
    weight: 5,
    label: 'CT head, headache, normal',
    modality: 'CT',
    procedure: 'CTHEAD^CT Head without contrast^L',
    studyDescription: 'CT HEAD WO CONTRAST',
    bodyPart: 'HEAD',
    reason: 'R51.9^Headache, unspecified^I10',
    diagnoses: ['R51.9^Headache, unspecified^I10'],
    clinicalInfo: 'Persistent headache for two weeks',
    reportLines: [
      'FINDINGS: No intracranial hemorrhage, mass effect or midline shift. Ventricles and sulci are normal for age.',
      'IMPRESSION: No acute intracranial abnormality.',
    ],
  },
  {
    kind: 'routine',
    weight: 4,
    label: 'MR lumbar spine, back pain',
    modality: 'MR',
    procedure: 'MRLSPINE^MR Lumbar spine without contrast^L',
    studyDescription: 'MR LUMBAR SPINE WO',
    bodyPart: 'LSPINE',
    reason: 'M54.50^Low back pain, unspecified^I10',
    diagnoses: ['M54.50^Low back pain, unspecified^I10'],
    clinicalInfo: 'Low back pain radiating to the left leg',
    reportLines: [
      'FINDINGS: Mild disc desiccation at L4-L5 with a small central protrusion. No canal or foraminal stenosis. Conus normal.',
      'IMPRESSION: Mild degenerative disc disease at L4-L5 without nerve root compression.',
    ],
  },
  {
    kind: 'routine',
    weight: 4,
    label: 'CT abdomen/pelvis, pain, normal',
    modality: 'CT',
    procedure: 'CTABDPEL^CT Abdomen and pelvis with contrast^L',
    studyDescription: 'CT ABDOMEN PELVIS W CONTRAST',
    bodyPart: 'ABDOMEN',
    reason: 'R10.9^Unspecified abdominal pain^I10',
    diagnoses: ['R10.9^Unspecified abdominal pain^I10'],
    clinicalInfo: 'Diffuse abdominal pain, normal labs',
    reportLines: [
      'FINDINGS: Liver, spleen, pancreas, adrenals and kidneys are unremarkable. Normal appendix. No free fluid or lymphadenopathy.',
      'IMPRESSION: No acute abdominal or pelvic abnormality. No evidence of malignancy.',
    ],
  },
  {
    kind: 'routine',
    weight: 3,
    label: 'MR knee, pain',
    modality: 'MR',
    procedure: 'MRKNEE^MR Knee without contrast^L',
    studyDescription: 'MR KNEE RIGHT WO',
    bodyPart: 'KNEE',
    reason: 'M25.561^Pain in right knee^I10',
    diagnoses: ['M25.561^Pain in right knee^I10'],
    clinicalInfo: 'Twisting injury playing football',
    reportLines: ['FINDINGS: Cruciate and collateral ligaments intact. Menisci intact. Small joint effusion.', 'IMPRESSION: No internal derangement.'],
  },
  {
    kind: 'routine',
    weight: 3,
    label: 'CT chest, cough, normal (AI negative)',
    modality: 'CT',
    procedure: 'CTCHEST^CT Chest without contrast^L',
    studyDescription: 'CT CHEST WO CONTRAST',
    bodyPart: 'CHEST',
    reason: 'R05.9^Cough, unspecified^I10',
    diagnoses: ['R05.9^Cough, unspecified^I10'],
    clinicalInfo: 'Chronic cough, ex-smoker',
    reportLines: ['FINDINGS: Lungs are clear. No pleural effusion. Heart size normal.', 'IMPRESSION: No acute cardiopulmonary abnormality.'],
    ai: [{ code: 'RID50149', text: 'Pulmonary nodule', positive: false }],
  },
  // Oncology: ICD-10-CM C codes in DG1 / OBR-31, staging keywords.
  {
    kind: 'oncology',
    weight: 2,
    label: 'CT chest, lung cancer staging',
    modality: 'CT',
    procedure: 'CTCHEST^CT Chest with contrast^L',
    studyDescription: 'CT CHEST W CONTRAST',
    bodyPart: 'CHEST',
    reason: 'C34.90^Malignant neoplasm of unspecified part of lung^I10',
    diagnoses: ['C34.90^Malignant neoplasm of unspecified part of lung^I10', 'J44.9^Chronic obstructive pulmonary disease^I10'],
    clinicalInfo: 'Staging of known lung carcinoma',
    reportLines: [
      'FINDINGS: 2.1 cm spiculated mass in the right upper lobe. Enlarged right hilar lymph node, 1.4 cm short axis.',
      'IMPRESSION: Right upper lobe mass compatible with the known primary lung carcinoma; right hilar nodal disease.',
    ],
  },
  {
    kind: 'oncology',
    weight: 1,
    label: 'MR brain, restaging breast cancer',
    modality: 'MR',
    procedure: 'MRBRAINC^MR Brain with and without contrast^L',
    studyDescription: 'MR BRAIN WO W CONTRAST',
    bodyPart: 'HEAD',
    reason: 'C50.911^Malignant neoplasm of right female breast^I10',
    diagnoses: ['C50.911^Malignant neoplasm of right female breast^I10', 'C79.31^Secondary malignant neoplasm of brain^I10'],
    clinicalInfo: 'Restaging, known metastatic breast cancer',
    reportLines: [
      'FINDINGS: Two enhancing lesions in the left frontal lobe, the largest 8 mm, with surrounding vasogenic edema.',
      'IMPRESSION: Brain metastases, new since the prior study.',
    ],
  },
  {
    kind: 'oncology',
    weight: 1,
    label: 'CT abdomen/pelvis, lymphoma follow-up',
    modality: 'CT',
    procedure: 'CTABDPEL^CT Abdomen and pelvis with contrast^L',
    studyDescription: 'CT ABDOMEN PELVIS W CONTRAST',
    bodyPart: 'ABDOMEN',
    reason: 'C83.30^Diffuse large B-cell lymphoma, unspecified site^I10',
    diagnoses: ['C83.30^Diffuse large B-cell lymphoma, unspecified site^I10'],
    clinicalInfo: 'Follow-up of lymphoma after four cycles of chemotherapy',
    reportLines: [
      'FINDINGS: Retroperitoneal lymph nodes decreased, the largest now 1.1 cm (previously 2.6 cm). Spleen normal in size.',
      'IMPRESSION: Interval decrease in retroperitoneal lymphadenopathy, consistent with treatment response.',
    ],
  },
  // AI positive, report negates it: discordance.
  {
    kind: 'ai-discordant',
    weight: 2,
    label: 'CT chest, AI nodule vs "no nodule"',
    modality: 'CT',
    procedure: 'CTCHEST^CT Chest without contrast^L',
    studyDescription: 'CT CHEST WO CONTRAST',
    bodyPart: 'CHEST',
    reason: 'R05.9^Cough, unspecified^I10',
    diagnoses: ['R05.9^Cough, unspecified^I10'],
    clinicalInfo: 'Persistent cough',
    reportLines: ['FINDINGS: Lungs are clear. No pulmonary nodule. No pleural effusion.', 'IMPRESSION: No acute cardiopulmonary abnormality.'],
    ai: [{ code: 'RID50149', text: 'Pulmonary nodule', positive: true }],
  },
  {
    kind: 'ai-discordant',
    weight: 1,
    label: 'CT head, AI haemorrhage vs "no haemorrhage"',
    modality: 'CT',
    procedure: 'CTHEAD^CT Head without contrast^L',
    studyDescription: 'CT HEAD WO CONTRAST',
    bodyPart: 'HEAD',
    reason: 'W19.XXXA^Unspecified fall, initial encounter^I10',
    diagnoses: ['W19.XXXA^Unspecified fall, initial encounter^I10'],
    clinicalInfo: 'Fall at home, on anticoagulation',
    reportLines: ['FINDINGS: No intracranial hemorrhage. No skull fracture. Small vessel ischaemic change.', 'IMPRESSION: No acute intracranial abnormality.'],
    ai: [{ code: 'RID4700', text: 'Intracranial hemorrhage', positive: true }],
  },
  // High stakes: a transplant work-up.
  {
    kind: 'high-stakes',
    weight: 1,
    label: 'CT angio abdomen, kidney donor work-up',
    modality: 'CT',
    procedure: 'CTARENAL^CT Angiography renal living donor^L',
    studyDescription: 'CTA ABDOMEN RENAL DONOR',
    bodyPart: 'ABDOMEN',
    reason: 'Z00.5^Encounter for examination of potential donor of organ and tissue^I10',
    diagnoses: ['Z00.5^Encounter for examination of potential donor of organ and tissue^I10'],
    clinicalInfo: 'Transplant evaluation: living kidney donor',
    reportLines: [
      'FINDINGS: Single renal artery and vein bilaterally. No accessory vessels. Kidneys normal in size without stones or masses.',
      'IMPRESSION: Favourable renal vascular anatomy for donation.',
    ],
  },
];

const FAMILY = ['HARTLEY', 'OKAFOR', 'LINDQVIST', 'MORENO', 'NAKAMURA', 'PATEL', 'KOWALSKI', 'DUBOIS', 'MURPHY', 'SILVA'];
const GIVEN = ['ALEX', 'SAM', 'JORDAN', 'ROBIN', 'CHARLIE', 'MORGAN', 'TAYLOR', 'JAMIE', 'KIM', 'LEE'];
/** Primary radiologists (OBR-32): never the second readers dr-a / dr-b. */
const RADIOLOGISTS = ['RAD1&HUGHES&ANNA', 'RAD2&OSEI&KWAME', 'RAD3&BERG&INGRID'];

const pick = <T>(xs: readonly T[]): T => xs[randomInt(xs.length)]!;

function weighted(): Template {
  const total = TEMPLATES.reduce((s, t) => s + t.weight, 0);
  let r = randomInt(total);
  for (const t of TEMPLATES) {
    r -= t.weight;
    if (r < 0) return t;
  }
  return TEMPLATES[0]!;
}

function hl7Ts(d = new Date()): string {
  return d.toISOString().replace(/[-:T]/g, '').slice(0, 14);
}

function seg(name: string, fields: Record<number, string>): string {
  const max = Math.max(0, ...Object.keys(fields).map(Number));
  const out = [name];
  for (let i = 1; i <= max; i++) out.push(fields[i] ?? '');
  return out.join('|');
}

function escapeText(s: string): string {
  return s.replace(/\\/g, '\\E\\').replace(/\|/g, '\\F\\').replace(/\^/g, '\\S\\').replace(/&/g, '\\T\\').replace(/~/g, '\\R\\');
}

/**
 * Scenario `n` (1-based). The first few are fixed so even a short run (CI) shows
 * each kind; after that the mix is drawn by weight.
 */
export function makeScenario(n: number, runTag: string): Scenario {
  const opening: ScenarioKind[] = ['oncology', 'routine', 'ai-discordant', 'routine'];
  const wanted = opening[n - 1];
  const template = wanted ? pick(TEMPLATES.filter((t) => t.kind === wanted && (wanted !== 'routine' || !t.ai))) : weighted();
  const patientId = `DEMO${runTag}${String(n).padStart(4, '0')}`;
  const accession = `ACC${runTag}${String(n).padStart(4, '0')}`;
  const patientName = `${pick(FAMILY)}^${pick(GIVEN)}`;
  const radiologist = pick(RADIOLOGISTS);
  const birth = `19${String(30 + randomInt(65)).padStart(2, '0')}${String(1 + randomInt(12)).padStart(2, '0')}${String(1 + randomInt(28)).padStart(2, '0')}`;
  const sex = pick(['F', 'M']);
  const now = new Date();
  const ordered = hl7Ts(new Date(now.getTime() - 3_600_000));
  const msh = (app: string, fac: string, type: string, id: string, version = '2.5.1') =>
    `MSH|^~\\&|${app}|${fac}|SECONDREAD|GATEWAY|${hl7Ts()}||${type}|${id}|P|${version}`;
  const pid = `PID|1||${patientId}^^^HOSP^MR||${patientName}||${birth}|${sex}`;
  const referrer = pick(['4411^FOSTER^GRACE^^^DR', '4412^NWOSU^EMEKA^^^DR', '4413^LARSEN^FREJA^^^DR']);
  const dg1 = template.diagnoses.map((d, i) => `DG1|${i + 1}|I10|${d}||${ordered.slice(0, 8)}|W`);

  const order =
    [
      msh('RIS', 'HOSP', 'ORM^O01', `ORM${accession}`, '2.3'),
      pid,
      `PV1|1|O|RAD^^^HOSP||||${referrer}`,
      `ORC|NW|PL${accession}|${accession}||SC||^^^${ordered}^^R||${ordered}|||${referrer}`,
      seg('OBR', {
        1: '1',
        2: `PL${accession}`,
        3: accession,
        4: template.procedure,
        7: ordered,
        13: escapeText(template.clinicalInfo),
        16: referrer,
        18: accession,
        24: template.modality,
        27: `^^^${ordered}^^R`,
        31: template.reason,
      }),
      ...dg1,
    ].join('\r') + '\r';

  const ai = template.ai
    ? [
        msh('AI_VENDOR', 'AIHOST', 'ORU^R01^ORU_R01', `AI${accession}`),
        pid,
        seg('OBR', { 1: '1', 3: accession, 4: 'AIANALYSIS^AI image analysis^L', 7: hl7Ts(), 24: template.modality, 25: 'F' }),
        ...template.ai.map((f, i) =>
          seg('OBX', {
            1: String(i + 1),
            2: 'CWE',
            3: `${f.code}^${f.text}^RADLEX`,
            5: f.positive ? 'POS^Detected^AI' : 'NEG^Not detected^AI',
            8: f.positive ? 'A' : 'N',
            11: 'F',
          }),
        ),
      ].join('\r') + '\r'
    : undefined;

  const report =
    [
      msh('RIS', 'HOSP', 'ORU^R01^ORU_R01', `ORU${accession}`),
      pid,
      seg('OBR', {
        1: '1',
        2: `PL${accession}`,
        3: accession,
        4: template.procedure,
        7: ordered,
        13: escapeText(template.clinicalInfo),
        16: referrer,
        22: hl7Ts(),
        24: template.modality,
        25: 'F',
        31: template.reason,
        32: radiologist,
      }),
      ...template.reportLines.map((l, i) => seg('OBX', { 1: String(i + 1), 2: 'TX', 3: '18782-3^Radiology Study observation^LN', 5: escapeText(l), 11: 'F' })),
    ].join('\r') + '\r';

  return {
    n,
    kind: template.kind,
    label: template.label,
    modality: template.modality,
    studyDescription: template.studyDescription,
    bodyPart: template.bodyPart,
    instances: template.modality === 'CT' ? 4 + randomInt(5) : 3 + randomInt(4),
    series: template.modality === 'CT' ? 2 : 1 + randomInt(2),
    patientId,
    patientName,
    accession,
    order,
    ai,
    report,
  };
}
