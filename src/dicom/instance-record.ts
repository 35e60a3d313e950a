/**
 * What the DICOM layer hands the studies domain for one received instance:
 * the attributes read from its header (before PixelData) plus where its bytes
 * wait, fsynced, in the spool's temporary folder.
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
  /** Absolute path of the complete, fsynced Part 10 file in the spool's tmp folder. */
  tmpPath: string;
  sizeBytes: number;
  sha256: string;
  callingAe: string;
}

export type StoreOutcome = 'stored' | 'duplicate';

/** The one call the SCP makes per instance; it resolves only after the row is committed. */
export interface InstanceSink {
  storeInstance(instance: ReceivedInstance): Promise<StoreOutcome>;
}
