/**
 * The DICOM UIDs the gateway names (PS3.6 Annex A), in one place: transfer
 * syntaxes, the SOP classes of the services we speak, and our implementation
 * identity (Part 10 meta header and A-ASSOCIATE user information).
 */

export const TransferSyntax = {
  implicitLe: '1.2.840.10008.1.2',
  explicitLe: '1.2.840.10008.1.2.1',
  deflate: '1.2.840.10008.1.2.1.99',
  explicitBe: '1.2.840.10008.1.2.2',
  jpegBaseline: '1.2.840.10008.1.2.4.50',
  jpegExtended: '1.2.840.10008.1.2.4.51',
  jpegLossless: '1.2.840.10008.1.2.4.57',
  jpegLosslessSv1: '1.2.840.10008.1.2.4.70',
  jpegLsLossless: '1.2.840.10008.1.2.4.80',
  jpegLsNearLossless: '1.2.840.10008.1.2.4.81',
  jpeg2000Lossless: '1.2.840.10008.1.2.4.90',
  jpeg2000: '1.2.840.10008.1.2.4.91',
  rle: '1.2.840.10008.1.2.5',
} as const;

/** The native (uncompressed) syntaxes, in our order of preference. */
export const UNCOMPRESSED_SYNTAXES: readonly string[] = [TransferSyntax.explicitLe, TransferSyntax.implicitLe, TransferSyntax.explicitBe];

export const isUncompressed = (ts: string): boolean => UNCOMPRESSED_SYNTAXES.includes(ts);

/** Every syntax the SCP accepts (stored byte-for-byte: we never decode pixel data). */
export const STORABLE_SYNTAXES: ReadonlySet<string> = new Set(Object.values(TransferSyntax));

export const APPLICATION_CONTEXT = '1.2.840.10008.3.1.1.1';

export const SopClass = {
  verification: '1.2.840.10008.1.1',
  mpps: '1.2.840.10008.3.1.2.3.3',
  studyRootFind: '1.2.840.10008.5.1.4.1.2.2.1',
  studyRootMove: '1.2.840.10008.5.1.4.1.2.2.2',
  studyRootGet: '1.2.840.10008.5.1.4.1.2.2.3',
  patientRootFind: '1.2.840.10008.5.1.4.1.2.1.1',
  patientRootMove: '1.2.840.10008.5.1.4.1.2.1.2',
  ctImage: '1.2.840.10008.5.1.4.1.1.2',
  mrImage: '1.2.840.10008.5.1.4.1.1.4',
  secondaryCapture: '1.2.840.10008.5.1.4.1.1.7',
  basicTextSr: '1.2.840.10008.5.1.4.1.1.88.11',
  keyObjectSelection: '1.2.840.10008.5.1.4.1.1.88.59',
} as const;

const STORAGE_PREFIX = '1.2.840.10008.5.1.4.1.1.';
// Storage SOP classes outside the 5.1.4.1.1 arc (PS3.4 B.5).
const OTHER_STORAGE = new Set([
  '1.2.840.10008.5.1.4.34.7',
  '1.2.840.10008.5.1.4.34.10',
  '1.2.840.10008.5.1.4.38.1',
  '1.2.840.10008.5.1.4.39.1',
  '1.2.840.10008.5.1.4.43.1',
  '1.2.840.10008.5.1.4.44.1',
  '1.2.840.10008.5.1.4.45.1',
]);

/**
 * Any storage SOP class, including vendors' private ones (outside the DICOM
 * root): a PACS sends those with a study and refusing them would fail the push.
 * Other standard services (query, MPPS, commitment, print) are not storage.
 */
export function isStorageSopClass(uid: string): boolean {
  if (!/^[0-9.]{1,64}$/.test(uid)) return false;
  if (!uid.startsWith('1.2.840.10008.')) return true;
  return uid.startsWith(STORAGE_PREFIX) || OTHER_STORAGE.has(uid);
}

/** Our identity in the Part 10 meta header of every file the receiver writes, and in every association (a UUID-derived UID, PS3.5 B.2). */
export const IMPLEMENTATION_CLASS_UID = '2.25.158065545820595583496560699125202519890';
export const IMPLEMENTATION_VERSION_NAME = 'SECONDREAD_01';

/** The identity of files the de-identifier writes (a separate implementation, so a receiver can tell them apart). */
export const DEIDENTIFIER_IMPLEMENTATION_CLASS_UID = '2.25.160359455516296871546733146302779531213';
export const DEIDENTIFIER_IMPLEMENTATION_VERSION_NAME = 'SRGW_DEID_1';
