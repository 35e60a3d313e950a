import { hl7Timestamp } from '../hl7/ack.js';
import { escapeHl7 } from '../hl7/hl7-message.js';

export interface PoolCancelInput {
  /** MSH-10, stored with the message so every resend carries the same id. */
  controlId: string;
  sendingApplication: string;
  sendingFacility: string;
  /** MSH-5: the destination id (the pool's system has no other name in our config). */
  receivingApplication: string;
  /** Our order number for the second read: ORC-2 and OBR-2 (the case id). */
  placerOrder: string;
  /** The accession as the pool saw it (its pseudonym when the study went de-identified); ORC-3, OBR-3. */
  accession: string | null;
  /** The patient id as the pool saw it, with its authority when sent real. */
  patientId: string | null;
  patientIdAuthority?: string | null;
  /** The StudyInstanceUID as the pool saw it: ZDS-1, so a pool that files by study finds it. */
  studyInstanceUid: string | null;
  now: Date;
}

/**
 * ORM^O01 (v2.5.1) with ORC-1 `CA` and ORC-5 `CA`: the case this study was
 * sent to the pool for is cancelled; stop reading it. Carries only the
 * identifiers the pool was sent (pseudonyms for a de-identified destination),
 * never the cancel reason (free text typed by a person may name the patient).
 */
export function buildPoolCancelOrm(i: PoolCancelInput): string {
  const e = (v: string | null | undefined) => escapeHl7(v ?? '');
  const ts = hl7Timestamp(i.now);
  const pid3 = i.patientId ? `${e(i.patientId)}${i.patientIdAuthority ? `^^^${e(i.patientIdAuthority)}` : ''}` : '';
  const segments = [
    `MSH|^~\\&|${e(i.sendingApplication)}|${e(i.sendingFacility)}|${e(i.receivingApplication)}||${ts}||ORM^O01^ORM_O01|${i.controlId}|P|2.5.1`,
    `PID|1||${pid3}`,
    `ORC|CA|${e(i.placerOrder)}|${e(i.accession)}||CA||||${ts}`,
    `OBR|1|${e(i.placerOrder)}|${e(i.accession)}|SECONDREAD^Second read^L`,
  ];
  if (i.studyInstanceUid) segments.push(`ZDS|${i.studyInstanceUid}^SECONDREAD^Application^DICOM`);
  return segments.join('\r') + '\r';
}
