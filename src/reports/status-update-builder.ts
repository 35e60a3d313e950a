import { hl7Timestamp } from '../hl7/ack.js';
import { escapeHl7 } from '../hl7/hl7-message.js';

/**
 * ORC-5 (HL7 table 0038) of a status update: the second read is in progress,
 * done, cancelled, or on hold (waiting for a person).
 */
export type OrderStatus = 'IP' | 'CM' | 'CA' | 'HD';

/** Which case audit actions tell the RIS something, and what. Others (views, reassignments...) do not. */
export function statusOfAction(action: string): OrderStatus | undefined {
  switch (action) {
    // Opened, forwarded (delivered to the pool), assigned. The start of forwarding is not news to a worklist.
    case 'case.created':
    case 'case.awaiting-read':
    case 'case.assigned':
      return 'IP';
    case 'case.reported':
      return 'CM';
    case 'case.cancelled':
      return 'CA';
    case 'case.held':
      return 'HD';
    default:
      return undefined;
  }
}

export interface StatusUpdateInput {
  /** MSH-10, stored with the message so every resend carries the same id. */
  controlId: string;
  sendingApplication: string;
  sendingFacility: string;
  receivingApplication: string;
  receivingFacility: string;
  status: OrderStatus;
  /** The original order as the RIS sent it: ORC-2 / ORC-3 (placer, filler), OBR-3 (filler, or the accession). */
  placerOrderNumber: string | null;
  fillerOrderNumber: string | null;
  accessionNumber: string | null;
  /** PID-3 of the original order, with its assigning authority. */
  patientId: string | null;
  patientIdAuthority: string | null;
  /** OBR-4 of the original order (code^text). */
  procedureCode: string | null;
  procedureText: string | null;
  /** NTE-3: the configured text with the rule(s) filled in. */
  note: string;
  now: Date;
}

/**
 * ORM^O01 (v2.5.1) with ORC-1 `SC` (status changed) for the hospital's own
 * order, so a RIS worklist can show that a study is under second read, why,
 * and when the second read is done, cancelled or on hold. The identifiers are
 * the RIS's own (this goes back to where they came from).
 */
export function buildStatusUpdateOrm(i: StatusUpdateInput): string {
  const e = (v: string | null | undefined) => escapeHl7(v ?? '');
  const ts = hl7Timestamp(i.now);
  const pid3 = i.patientId ? `${e(i.patientId)}${i.patientIdAuthority ? `^^^${e(i.patientIdAuthority)}` : ''}` : '';
  const obr3 = i.fillerOrderNumber ?? i.accessionNumber;
  const obr4 = i.procedureCode || i.procedureText ? `${e(i.procedureCode)}^${e(i.procedureText)}` : 'SECONDREAD^Second read^L';
  return (
    [
      `MSH|^~\\&|${e(i.sendingApplication)}|${e(i.sendingFacility)}|${e(i.receivingApplication)}|${e(i.receivingFacility)}|${ts}||ORM^O01^ORM_O01|${i.controlId}|P|2.5.1`,
      `PID|1||${pid3}`,
      `ORC|SC|${e(i.placerOrderNumber)}|${e(i.fillerOrderNumber ?? i.accessionNumber)}||${i.status}||||${ts}`,
      `OBR|1|${e(i.placerOrderNumber)}|${e(obr3)}|${obr4}`,
      `NTE|1|L|${e(i.note)}`,
    ].join('\r') + '\r'
  );
}

/** The configured text with `{rule}` replaced by the rule ids that opened the case (or why, for a manual request). */
export function statusNote(template: string, status: OrderStatus, rules: readonly string[], heldReason?: string): string {
  const text = template.split('{rule}').join(rules.length > 0 ? rules.join(', ') : 'manual request');
  if (status === 'CM') return `${text} (second read reported)`;
  if (status === 'CA') return `${text} (second read cancelled)`;
  if (status === 'HD') return `${text} (on hold${heldReason ? `: ${heldReason}` : ''})`;
  return text;
}
