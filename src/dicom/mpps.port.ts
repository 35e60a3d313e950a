/**
 * What the DICOM port hands a Modality Performed Procedure Step to (PS3.4 F.7):
 * the wire layer (dicom/ul, scp.ts) decodes the N-CREATE / N-SET and its data
 * set; the studies domain records it and decides completeness. Data sets are
 * dcmjs "naturalized" objects (keyword keys, sequences as arrays of objects).
 */
import { SopClass } from './uids.js';

export const MPPS_SOP_CLASS_UID = SopClass.mpps;

export type NaturalDataset = Record<string, unknown>;

export interface MppsRequest {
  /** Affected (N-CREATE) or Requested (N-SET) SOP Instance UID: the MPPS instance. */
  readonly sopInstanceUid: string;
  readonly dataset: NaturalDataset;
  readonly callingAeTitle: string;
}

/** The DIMSE status to answer (0x0000 success; 0x0111 duplicate instance, 0x0112 no such instance, 0x0110 processing failure, 0xC310 not in progress...). */
export interface MppsResult {
  readonly status: number;
  /** Attributes to return in the N-CREATE / N-SET response, if any. */
  readonly dataset?: NaturalDataset;
}

export interface MppsPort {
  /** Answered only after the durable write (as C-STORE). */
  nCreate(request: MppsRequest): Promise<MppsResult>;
  nSet(request: MppsRequest): Promise<MppsResult>;
}
