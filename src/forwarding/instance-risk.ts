/**
 * Which instances may go to a de-identified destination at all. The header is
 * de-identified by deidentify.ts; what it cannot clean is the content of some
 * objects: text burned into pixels (screen captures, ultrasound, endoscopy,
 * scanned documents), faces in photographs, encapsulated documents whose bytes
 * carry the identifiers, raw data and presentation states with free text. Those
 * are held per instance for a person to look at (DESIGN.md: `burned-in-risk`,
 * `encapsulated-document`, ...), never sent on a guess.
 *
 * Pure and table-driven: the table is the documentation. Structured reports are
 * not risky by class: their content tree is replaced or cleaned (deidentify.ts).
 */

export type InstanceRiskReason = 'burned-in-risk' | 'encapsulated-document' | 'recognizable-features' | 'free-text-object' | 'opaque-data';

export interface InstanceRiskInput {
  sopClassUid: string;
  modality?: string | null;
  /** Image Type (0008,0008) values. */
  imageType?: readonly string[] | null;
  /** Burned In Annotation (0028,0301). */
  burnedInAnnotation?: string | null;
  /** Recognizable Visual Features (0028,0302). */
  recognizableVisualFeatures?: string | null;
  /** Conversion Type (0008,0064): WSD, SD, SI, DV, DI, DF, SYN. */
  conversionType?: string | null;
}

export interface InstanceRisk {
  reason: InstanceRiskReason;
  detail: string;
}

interface ClassRule {
  /** An exact SOP Class UID, or a prefix ending in '.' (every class below it). */
  uid: string;
  reason: InstanceRiskReason;
  name: string;
}

const STORAGE = '1.2.840.10008.5.1.4.1.1.';

/** Longest match wins, so an exception below a prefix can be listed after it. */
const CLASS_RULES: readonly ClassRule[] = [
  // Secondary Capture: screen saves, dose screens, scanned requisitions, whatever a workstation captured.
  { uid: `${STORAGE}7`, reason: 'burned-in-risk', name: 'Secondary Capture Image' },
  { uid: `${STORAGE}7.`, reason: 'burned-in-risk', name: 'Multi-frame Secondary Capture Image' },
  // Encapsulated documents: the identifiers are in the document bytes (0042,0011).
  { uid: `${STORAGE}104.1`, reason: 'encapsulated-document', name: 'Encapsulated PDF' },
  { uid: `${STORAGE}104.2`, reason: 'encapsulated-document', name: 'Encapsulated CDA' },
  { uid: `${STORAGE}104.3`, reason: 'encapsulated-document', name: 'Encapsulated STL' },
  { uid: `${STORAGE}104.4`, reason: 'encapsulated-document', name: 'Encapsulated OBJ' },
  { uid: `${STORAGE}104.5`, reason: 'encapsulated-document', name: 'Encapsulated MTL' },
  { uid: `${STORAGE}104.`, reason: 'encapsulated-document', name: 'Encapsulated document' },
  // Ultrasound: the scanner writes patient and operator into the image.
  { uid: `${STORAGE}6.1`, reason: 'burned-in-risk', name: 'Ultrasound Image' },
  { uid: `${STORAGE}6.2`, reason: 'burned-in-risk', name: 'Enhanced US Volume' },
  { uid: `${STORAGE}6.3`, reason: 'burned-in-risk', name: 'Photoacoustic Image' },
  { uid: `${STORAGE}6`, reason: 'burned-in-risk', name: 'Ultrasound Image (Retired)' },
  { uid: `${STORAGE}3.1`, reason: 'burned-in-risk', name: 'Ultrasound Multi-frame Image' },
  { uid: `${STORAGE}3`, reason: 'burned-in-risk', name: 'Ultrasound Multi-frame Image (Retired)' },
  // Visible light: endoscopy, microscopy (slide labels), video; photographs show faces and skin.
  { uid: `${STORAGE}77.`, reason: 'burned-in-risk', name: 'Visible Light image or video' },
  { uid: `${STORAGE}77.1`, reason: 'burned-in-risk', name: 'VL Image (Retired)' },
  { uid: `${STORAGE}77.2`, reason: 'burned-in-risk', name: 'VL Multi-frame Image (Retired)' },
  { uid: `${STORAGE}77.1.4`, reason: 'recognizable-features', name: 'VL Photographic Image' },
  { uid: `${STORAGE}77.1.4.1`, reason: 'recognizable-features', name: 'Video Photographic Image' },
  { uid: `${STORAGE}77.1.5.`, reason: 'recognizable-features', name: 'Ophthalmic Photography / Tomography' },
  { uid: `${STORAGE}77.1.7`, reason: 'recognizable-features', name: 'Dermoscopic Photography Image' },
  // Raw Data: vendor content no profile can read.
  { uid: `${STORAGE}66`, reason: 'opaque-data', name: 'Raw Data' },
  // Presentation states: text objects and graphic annotations are free text drawn on the image.
  { uid: `${STORAGE}11.`, reason: 'free-text-object', name: 'Presentation State' },
];

/** Modalities whose pixels routinely carry text or faces, whatever the class. */
const RISKY_MODALITIES: ReadonlyMap<string, InstanceRisk> = new Map([
  ['US', { reason: 'burned-in-risk', detail: 'modality US: ultrasound images carry burned-in text' }],
  ['ES', { reason: 'burned-in-risk', detail: 'modality ES: endoscopy images carry burned-in text' }],
  ['XC', { reason: 'recognizable-features', detail: 'modality XC: external camera photographs' }],
  ['GM', { reason: 'burned-in-risk', detail: 'modality GM: general microscopy (slide labels)' }],
  ['SM', { reason: 'burned-in-risk', detail: 'modality SM: slide microscopy (slide labels)' }],
  ['OP', { reason: 'recognizable-features', detail: 'modality OP: ophthalmic photography' }],
  ['DOC', { reason: 'encapsulated-document', detail: 'modality DOC: a document' }],
]);

/** Image Type values that mark a capture of a screen or a rendered report (e.g. a CT dose screen). */
const SCREEN_TYPES = new Set([
  'SCREEN SAVE',
  'SCREENSAVE',
  'SCREEN CAPTURE',
  'SCREENSHOT',
  'CAPTURE',
  'DOSE_INFO',
  'DOSE INFO',
  'DOSE REPORT',
  'DOSE_REPORT',
  'CSA REPORT',
  'REPORT',
]);

/** Conversion Types of images that were not acquired from the patient by a modality. */
const CONVERSION_TYPES: ReadonlyMap<string, string> = new Map([
  ['WSD', 'workstation capture'],
  ['SD', 'scanned document'],
  ['SI', 'scanned image'],
  ['DV', 'digitized video'],
  ['DI', 'digital interface'],
  ['DF', 'digitized film'],
]);

function classRule(sopClassUid: string): ClassRule | undefined {
  let best: ClassRule | undefined;
  for (const r of CLASS_RULES) {
    const hit = r.uid.endsWith('.') ? sopClassUid.startsWith(r.uid) : sopClassUid === r.uid;
    if (hit && (!best || r.uid.length > best.uid.length || (r.uid.length === best.uid.length && !r.uid.endsWith('.')))) best = r;
  }
  return best;
}

const norm = (v: string | null | undefined): string => (v ?? '').replace(/\0/g, '').trim().toUpperCase();

/**
 * Null when the instance may go out de-identified; otherwise why not (the first
 * reason found: SOP class, then the instance's own flags, then modality).
 */
export function instanceRisk(i: InstanceRiskInput): InstanceRisk | null {
  const sopClassUid = norm(i.sopClassUid);
  const rule = classRule(sopClassUid);
  if (rule) return { reason: rule.reason, detail: `SOP class ${rule.name} (${sopClassUid})` };

  if (norm(i.burnedInAnnotation) === 'YES') return { reason: 'burned-in-risk', detail: 'Burned In Annotation (0028,0301) is YES' };
  if (norm(i.recognizableVisualFeatures) === 'YES') return { reason: 'recognizable-features', detail: 'Recognizable Visual Features (0028,0302) is YES' };

  const imageType = (i.imageType ?? []).map(norm);
  const screen = imageType.find((t) => SCREEN_TYPES.has(t));
  if (screen) return { reason: 'burned-in-risk', detail: `Image Type ${imageType.join('\\')} is a screen capture (${screen})` };

  const conversion = norm(i.conversionType);
  const converted = CONVERSION_TYPES.get(conversion);
  if (converted) return { reason: 'burned-in-risk', detail: `Conversion Type (0008,0064) ${conversion}: ${converted}` };

  const byModality = RISKY_MODALITIES.get(norm(i.modality));
  if (byModality) return { ...byModality };
  return null;
}

/** The inputs of `instanceRisk` read from a dcmjs dataset dictionary (top level). */
export function riskInputFromDataset(dict: Record<string, { Value?: unknown[] } | undefined>): InstanceRiskInput {
  const first = (tag: string): string | null => {
    const v = dict[tag]?.Value?.[0];
    return typeof v === 'string' ? v : null;
  };
  const all = (tag: string): string[] => (dict[tag]?.Value ?? []).filter((v): v is string => typeof v === 'string');
  return {
    sopClassUid: first('00080016') ?? '',
    modality: first('00080060'),
    imageType: all('00080008'),
    burnedInAnnotation: first('00280301'),
    recognizableVisualFeatures: first('00280302'),
    conversionType: first('00080064'),
  };
}
