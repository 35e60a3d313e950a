import { randomBytes } from 'node:crypto';
import { escapeHl7 } from './hl7-message.js';
import type { MessageHeader } from './hl7-parse.js';

export type AckCode = 'AA' | 'AE' | 'AR';

export interface AckError {
  /** HL7 table 0357 code for ERR-3 (e.g. 200 unsupported message type, 207 internal error). */
  hl7Code: string;
  text: string;
}

export interface AckOptions {
  sendingApplication: string;
  sendingFacility: string;
  code: AckCode;
  error?: AckError;
  /** Our MSH-10 for the ACK itself. */
  controlId: string;
  now: Date;
}

const errorNames: Record<string, string> = {
  '100': 'Segment sequence error',
  '101': 'Required field missing',
  '102': 'Data type error',
  '103': 'Table value not found',
  '200': 'Unsupported message type',
  '201': 'Unsupported event code',
  '203': 'Unsupported version id',
  '205': 'Duplicate key identifier',
  '206': 'Application record locked',
  '207': 'Application internal error',
};

/**
 * Builds the ACK by hand: it is a fixed three-segment string, and building it
 * with node-hl7-client's `Message` costs about 0.7 ms, most of an ACK's budget.
 * Text fields are escaped; identifiers we echo are re-escaped for our
 * standard delimiters, so a sender with unusual MSH-2 still gets a valid ACK.
 */
export function buildAck(received: MessageHeader, o: AckOptions): string {
  const e = (v: string | null | undefined) => escapeHl7(v ?? '');
  const version = received.version ?? '2.5.1';
  const msh = [
    'MSH',
    '^~\\&',
    e(o.sendingApplication),
    e(o.sendingFacility),
    e(received.sendingApplication),
    e(received.sendingFacility),
    hl7Timestamp(o.now),
    '',
    received.triggerEvent ? `ACK^${e(received.triggerEvent)}^ACK` : 'ACK',
    e(o.controlId),
    e(received.processingId ?? 'P'),
    e(version),
    // MSH-13..17 empty; MSH-18 names the set the ACK is encoded in: the one the message came in.
    ...(received.charset ? ['', '', '', '', '', e(received.charset)] : []),
  ].join('|');
  // MSA-2 echoes MSH-10 byte for byte; only a sender whose own field separator is not `|` gets it re-escaped.
  const raw = received.controlIdRaw;
  const msa2 = raw !== null && !/[|\r\n]/.test(raw) ? raw : e(received.controlId);
  const msa = ['MSA', o.code, msa2];
  // MSA-3 was withdrawn in 2.5 in favour of ERR; older receivers show only MSA-3.
  if (o.error && !/^2\.[5-9]/.test(version)) msa.push(e(o.error.text));
  const segments = [msh, msa.join('|')];
  if (o.error && o.code !== 'AA') {
    const name = errorNames[o.error.hl7Code] ?? '';
    // ERR-3 HL7 error code (CWE from table 0357), ERR-4 severity E, ERR-8 user message.
    segments.push(['ERR', '', '', `${e(o.error.hl7Code)}^${e(name)}^HL70357`, 'E', '', '', '', e(o.error.text)].join('|'));
  }
  return segments.join('\r') + '\r';
}

/** YYYYMMDDHHMMSS.SSS+0000: explicit UTC, so the receiver does not have to guess our zone. */
export function hl7Timestamp(d: Date): string {
  const iso = d.toISOString();
  return `${iso.slice(0, 4)}${iso.slice(5, 7)}${iso.slice(8, 10)}${iso.slice(11, 13)}${iso.slice(14, 16)}${iso.slice(17, 19)}.${iso.slice(20, 23)}+0000`;
}

/**
 * Control ids: unique, sortable within a source, at most 20 characters (the
 * MSH-10 limit in 2.3). A random origin per source keeps two gateway instances
 * sending at the same millisecond (several instances on one PostgreSQL) from
 * issuing the same MSH-10. Owned by whoever builds messages, never module state.
 */
export function createControlIdSource(prefix = 'A'): () => string {
  let last = 0;
  let seq = 0;
  const origin = randomBytes(3).readUIntBE(0, 3).toString(36).padStart(5, '0').slice(-5);
  return () => {
    const now = Date.now();
    if (now === last) seq++;
    else {
      last = now;
      seq = 0;
    }
    return `${prefix}${now.toString(36)}${seq.toString(36).padStart(4, '0')}${origin}`.slice(0, 20);
  };
}
