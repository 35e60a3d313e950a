/**
 * What the DICOM layer hands the studies domain for one received instance:
 * the attributes read from its header (before PixelData) plus where its bytes
 * wait, complete but not yet synced, in the spool's temporary folder.
 */
export interface InstanceHeader {
  sopClassUid: string;
  sopInstanceUid: string;
  transferSyntaxUid: string;
  studyInstanceUid: string;
  seriesInstanceUid: string;
  accessionNumber: string | null;
  patientId: string | null;
  modality: string | null;
  studyDescription: string | null;
  seriesDescription: string | null;
  bodyPartExamined: string | null;
  studyDate: string | null;
  referringPhysicianName: string | null;
  seriesNumber: number | null;
  instanceNumber: number | null;
  /** Specific Character Set (0008,0005) as sent; the text fields here are decoded with it. */
  specificCharacterSet?: string | null;
  /** Patient's Name, decoded, all component groups (`Alphabetic=Ideographic=Phonetic`). */
  patientName?: string | null;
  patientBirthDate?: string | null;
  /** Issuer of Patient ID (0010,0021): the assigning authority of `patientId`. */
  issuerOfPatientId?: string | null;
  /** Other Patient IDs Sequence (0010,1002). */
  otherPatientIds?: OtherPatientId[];
  /** Set for an IOCM rejection note: a Key Object Selection titled by a CID 7011 code. */
  iocm?: IocmRejection | null;
}

export interface OtherPatientId {
  id: string;
  issuer: string | null;
  type: string | null;
}

/** A Key Object Selection Document that rejects instances (IHE IOCM, DICOM CID 7011). */
export interface IocmRejection {
  /** Concept Name Code: `DCM:113001` etc. */
  code: string;
  meaning: string | null;
  /** Referenced SOP Instance UIDs from Current Requested Procedure Evidence Sequence. */
  sopInstanceUids: string[];
}

export interface ReceivedInstance extends InstanceHeader {
  /**
   * Absolute path of the complete Part 10 file in the spool's tmp folder. Its
   * data need not be synced yet: the sink syncs it (with its rename into place)
   * before committing the row.
   */
  tmpPath: string;
  /** An open descriptor of `tmpPath` the sink may sync through; the caller closes it after storeInstance settles. */
  fd?: number;
  sizeBytes: number;
  sha256: string;
  callingAe: string;
}

export type StoreOutcome = 'stored' | 'duplicate';

/**
 * The one call the SCP makes per instance; it resolves only after the file's
 * data and its place are durable and the row is committed.
 */
export interface InstanceSink {
  storeInstance(instance: ReceivedInstance): Promise<StoreOutcome>;
  /**
   * Once per association (C-STORE) or request (STOW-RS) that stored anything:
   * what arrived, per study, for the audit trail (one event per study, not
   * per instance, so ingest pays nothing per instance for it).
   */
  transferEnded?(transfer: ReceivedTransfer): Promise<void>;
}

export interface ReceivedTransfer {
  protocol: 'dimse' | 'stow-rs';
  /** The calling AE title (C-STORE) or the token's name (STOW-RS). */
  sender: string;
  remoteAddress: string;
  /** Per study: instances stored (new or new versions) and duplicates ignored. */
  studies: ReadonlyMap<string, { stored: number; duplicates: number }>;
}

/** Counts one stored instance of a study into a transfer's per-study tally. */
export function tallyInstance(studies: Map<string, { stored: number; duplicates: number }>, studyInstanceUid: string, outcome: StoreOutcome): void {
  let t = studies.get(studyInstanceUid);
  if (!t) studies.set(studyInstanceUid, (t = { stored: 0, duplicates: 0 }));
  if (outcome === 'duplicate') t.duplicates++;
  else t.stored++;
}
