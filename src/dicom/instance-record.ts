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
}
