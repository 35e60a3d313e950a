import { ErrorCode, GatewayError } from '../errors.js';
import { hl7Timestamp } from '../hl7/ack.js';
import { Hl7Message, escapeHl7, standardDelimiters, type Delimiters, type Segment } from '../hl7/hl7-message.js';

/** RADPEER 2016 scores a second reader may give (DESIGN.md section 2). */
export const radpeerScores = ['1', '2a', '2b', '3a', '3b'] as const;
export type RadpeerScore = (typeof radpeerScores)[number];

export type Concordance = 'CONCORDANT' | 'DISCORDANT';

/** Any RADPEER score other than 1 makes the second read DISCORDANT. */
export function concordanceOf(score: RadpeerScore): Concordance {
  return score === '1' ? 'CONCORDANT' : 'DISCORDANT';
}

export interface SecondReader {
  id: string;
  familyName?: string;
  givenName?: string;
}

export interface SecondReportOruInput {
  /**
   * MSH-10. Chosen by the caller and stored with the write-back, so every
   * retry sends the same control id (the RIS de-duplicates on it, and the
   * sender matches MSA-2 against it). 1 to 20 characters of `A-Z a-z 0-9 . _ -`:
   * 20 is the MSH-10 length in v2.5.1, and a RIS that truncates a longer id
   * would echo an MSA-2 that never matches, so the write-back could never complete.
   */
  controlId: string;
  /** MSH-3 / MSH-4: `hl7.sendingApplication` / `hl7.sendingFacility`. */
  sendingApplication: string;
  sendingFacility: string;
  /** MSH-5 / MSH-6; default `RIS` / `HOSP`. */
  receivingApplication?: string;
  receivingFacility?: string;
  /**
   * The primary report as received from the RIS (raw HL7 text, the real one,
   * not a pseudonymised copy): its PID segment is copied as-is and OBR-2/3/4
   * (and OBR-7 unless `observedAt` is given) are taken from its OBR.
   */
  primaryReport: string;
  /**
   * The patient's id now (after an A40/A34 merge, studies/reconcile.ts `survivingPatientId`): when the
   * primary's PID-3 does not carry it, PID-3 is written with it instead of the retired id.
   */
  survivingPatient?: { id: string; authority: string | null };
  /**
   * The case's accession number. When given, the primary's OBR whose OBR-3.1
   * matches is used, and a primary whose OBR-3 holds another accession is
   * refused (the wrong primary report for this case). When the primary's
   * OBR-3 is empty it is written into OBR-3.
   */
  accessionNumber?: string;
  /** ZDS-1.1: the real StudyInstanceUID (not the pseudonym sent to the reader pool). */
  studyInstanceUid: string;
  /** OBR-32 (and OBX-16): the second reader. */
  secondReader: SecondReader;
  /** The second report text; each line becomes one TX OBX. */
  text: string;
  radpeerScore: RadpeerScore;
  /** Optional impression: its own TX OBX lines after the report text, coded as impression. */
  impression?: string;
  /**
   * OBR-25 and every OBX-11: `F` for the second report, `C` for an addendum
   * or a correction of one already written back (same accession). Default `F`.
   */
  resultStatus?: 'F' | 'C';
  /**
   * A third reader's verdict on a discrepant second read (reports/arbitration.service.ts): three OBX
   * after the concordance, the verdict (CWE), the RADPEER score of the first read after arbitration
   * (CWE, the final score) and the arbitrator's text (TX lines); OBX-16 is the arbitrator when known.
   */
  arbitration?: { verdict: 'first' | 'second' | 'other'; finalScore: RadpeerScore; arbitratorId?: string; text?: string };
  /** OBR-7; default: OBR-7 of the primary report as sent. */
  observedAt?: Date;
  /** MSH-7 and OBR-22; default: now. */
  now?: Date;
}

/** LOINC codes used in OBX-3 for the narrative lines. */
const reportCode = '18782-3^Radiology Study observation^LN';
const impressionCode = '19005-8^Radiology Imaging study [Impression] (narrative)^LN';
const radpeerCode = 'RADPEER^RADPEER score^L';
const concordanceCode = 'SRCONC^Second read concordance^L';
const arbitrationVerdictCode = 'ARBVERD^Arbitration verdict^L';
const arbitrationScoreCode = 'RADPEERF^RADPEER score after arbitration^L';
const arbitrationTextCode = 'ARBTXT^Arbitration comment^L';
const verdictText = { first: 'Agrees with the first read', second: 'Agrees with the second read', other: 'Agrees with neither read' } as const;

const controlIdPattern = /^[A-Za-z0-9._-]{1,20}$/;
const uidPattern = /^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+$/;

/**
 * Builds the second report as an ORU^R01 v2.5.1 (DESIGN.md "HL7 outbound:
 * second report"). Segments end with CR; no MLLP framing.
 *
 * Encoding choices:
 * - Report text: one TX OBX per line (CRLF, LF and CR all break a line);
 *   blank lines inside the text are kept as a TX OBX with an empty OBX-5 so
 *   paragraphs survive, leading and trailing blank lines are dropped. TX does
 *   not define formatting commands (`\.br\` is for FT), and a RIS that shows
 *   OBX lines one under the other (most do) displays this correctly.
 * - Every text value is escaped for `| ^ ~ \ &` (`\F\ \S\ \R\ \E\ \T\`);
 *   other control characters (VT and FS would break MLLP framing) become
 *   `\Xhh\`; tab is kept.
 * - RADPEER: a CWE OBX, value `2b^RADPEER 2b^RADPEER` (code, text, coding
 *   system), so a receiver can code on OBX-5.1 and show OBX-5.2.
 * - Concordance: an ST OBX with `CONCORDANT` or `DISCORDANT`.
 * - OBR-32 is NDL in v2.5.1: the reader is `id&family&given` (subcomponents);
 *   OBX-16 carries the same person as XCN `id^family^given`.
 * - MSH-18 is `UNICODE UTF-8` when the message holds non-ASCII text (the sender
 *   writes UTF-8), and absent otherwise.
 *
 * Throws GatewayError('invalid-input') for an input that cannot make a valid message.
 */
export function buildSecondReportOru(input: SecondReportOruInput): string {
  validate(input);
  const primary = parsePrimary(input.primaryReport);
  const d = primary.delimiters;
  const now = input.now ?? new Date();
  const e = (v: string) => escapeText(v);

  const pid = primary.segment('PID');
  if (!pid) throw invalid('the primary report has no PID segment');
  const obr = chooseObr(primary, input.accessionNumber);

  // Copied fields keep their components and escapes; only a primary with non-standard delimiters needs them re-encoded.
  const raw = (seg: Segment, field: number) => transcode(primary.rawField(seg, field), d);
  let obr3 = raw(obr, 3);
  if (obr3 === '') {
    if (!input.accessionNumber) throw invalid('the primary report has no accession number in OBR-3 and none was given');
    obr3 = e(input.accessionNumber);
  }
  const obr7 = input.observedAt ? hl7Timestamp(input.observedAt) : raw(obr, 7);
  const reader = input.secondReader;
  const readerNdl = [reader.id, reader.familyName ?? '', reader.givenName ?? ''].map(e).join('&').replace(/&+$/, '');
  const readerXcn = [reader.id, reader.familyName ?? '', reader.givenName ?? ''].map(e).join('^').replace(/\^+$/, '');

  const status = input.resultStatus ?? 'F';
  const obx: string[] = [];
  const addObx = (type: string, code: string, value: string, observer = readerXcn) => {
    obx.push(fields('OBX', { 1: String(obx.length + 1), 2: type, 3: code, 5: value, 11: status, 14: obr7, 16: observer }));
  };
  for (const line of lines(input.text)) addObx('TX', reportCode, e(line));
  if (input.impression !== undefined && input.impression.trim() !== '') {
    for (const line of lines(input.impression)) addObx('TX', impressionCode, e(line));
  }
  addObx('CWE', radpeerCode, `${input.radpeerScore}^RADPEER ${input.radpeerScore}^RADPEER`);
  addObx('ST', concordanceCode, concordanceOf(input.radpeerScore));
  const arb = input.arbitration;
  if (arb) {
    const arbitrator = arb.arbitratorId ? e(arb.arbitratorId) : '';
    addObx('CWE', arbitrationVerdictCode, `${arb.verdict}^${verdictText[arb.verdict]}^L`, arbitrator);
    addObx('CWE', arbitrationScoreCode, `${arb.finalScore}^RADPEER ${arb.finalScore}^RADPEER`, arbitrator);
    for (const line of lines(arb.text ?? '')) addObx('TX', arbitrationTextCode, e(line), arbitrator);
  }

  const segments = [
    '', // MSH, filled below once we know whether the text is ASCII
    withSurvivingPid3(transcodeSegment(pid, d), primary, pid, input.survivingPatient),
    fields('OBR', {
      1: '1',
      2: raw(obr, 2),
      3: obr3,
      4: raw(obr, 4),
      7: obr7,
      22: hl7Timestamp(now),
      25: status,
      32: readerNdl,
    }),
    ...obx,
    `ZDS|${input.studyInstanceUid}^SECONDREAD^Application^DICOM`,
  ];
  const body = segments.join('\r');
  const charset = /[^\x00-\x7f]/.test(body) ? 'UNICODE UTF-8' : '';
  // MSH-1 is the `|` after the name, so MSH-2 is the first value joined.
  const msh = ['^~\\&', e(input.sendingApplication), e(input.sendingFacility), e(input.receivingApplication ?? 'RIS'), e(input.receivingFacility ?? 'HOSP')];
  msh.push(hl7Timestamp(now), '', 'ORU^R01^ORU_R01', input.controlId, 'P', '2.5.1');
  if (charset) msh.push('', '', '', '', '', charset); // MSH-13..17 empty, MSH-18
  segments[0] = ['MSH', ...msh].join('|');
  return segments.join('\r') + '\r';
}

/**
 * The last check before a write-back leaves: an ORU that does not say whose
 * report it is (PID-3) and for which order (OBR-3) must never reach the RIS,
 * whatever built it. Returns what is missing, or undefined when it may go.
 */
export function writeBackDefect(payload: string): string | undefined {
  if (payload.trim() === '') return 'the ORU is empty';
  let m: Hl7Message;
  try {
    m = Hl7Message.parse(payload);
  } catch (err) {
    return `the ORU is not HL7: ${(err as Error).message}`;
  }
  const missing: string[] = [];
  if (!m.get('PID-3.1')) missing.push('PID-3 (patient id)');
  if (!m.get('OBR-3.1')) missing.push('OBR-3 (accession)');
  return missing.length > 0 ? `the ORU has no ${missing.join(' and no ')}` : undefined;
}

function validate(input: SecondReportOruInput): void {
  if (!controlIdPattern.test(input.controlId ?? '')) {
    throw invalid('controlId (MSH-10) must be 1 to 20 characters of A-Z a-z 0-9 . _ -');
  }
  if (!(radpeerScores as readonly string[]).includes(input.radpeerScore)) {
    throw invalid(`radpeerScore must be one of ${radpeerScores.join(', ')}`);
  }
  if (typeof input.text !== 'string' || input.text.trim() === '') throw invalid('the second report text is empty');
  if (!input.sendingApplication?.trim() || !input.sendingFacility?.trim()) throw invalid('sendingApplication and sendingFacility are required');
  if (!input.secondReader?.id?.trim()) throw invalid('the second reader id is required');
  if (typeof input.studyInstanceUid !== 'string' || input.studyInstanceUid.length > 64 || !uidPattern.test(input.studyInstanceUid)) {
    throw invalid('studyInstanceUid is not a DICOM UID');
  }
  if (input.arbitration) {
    if (!['first', 'second', 'other'].includes(input.arbitration.verdict)) throw invalid('arbitration.verdict must be first, second or other');
    if (!(radpeerScores as readonly string[]).includes(input.arbitration.finalScore))
      throw invalid(`arbitration.finalScore must be one of ${radpeerScores.join(', ')}`);
  }
  if (input.now && Number.isNaN(input.now.getTime())) throw invalid('now is not a valid date');
  if (input.observedAt && Number.isNaN(input.observedAt.getTime())) throw invalid('observedAt is not a valid date');
}

function parsePrimary(text: string): Hl7Message {
  if (typeof text !== 'string' || text.trim() === '') throw invalid('the primary report is empty');
  try {
    return Hl7Message.parse(text);
  } catch (err) {
    throw new GatewayError(ErrorCode.invalidInput, `the primary report is not HL7: ${(err as Error).message}`, { cause: err });
  }
}

function chooseObr(primary: Hl7Message, accession: string | undefined): Segment {
  const all = primary.all('OBR');
  if (all.length === 0) throw invalid('the primary report has no OBR segment');
  if (accession === undefined) return all[0]!;
  const match = all.find((s) => primary.read(s, { field: 3 }) === accession);
  if (match) return match;
  // An OBR without OBR-3 may still be the right one (accession in OBR-18 or IPC-1); one with another accession is not.
  const unnumbered = all.find((s) => primary.read(s, { field: 3 }) === null);
  if (unnumbered) return unnumbered;
  throw invalid('the primary report is for another accession number');
}

/** Lines of a text: CRLF, CR and LF break; blank lines at either end dropped, inner ones kept. */
function lines(text: string): string[] {
  const all = text.split(/\r\n|\r|\n/).map((l) => l.replace(/\s+$/, ''));
  let start = 0;
  let end = all.length;
  while (start < end && all[start] === '') start++;
  while (end > start && all[end - 1] === '') end--;
  return all.slice(start, end);
}

/** escapeHl7 for one line, plus `\Xhh\` for control characters other than tab (VT/FS must never reach the wire raw). */
function escapeText(text: string): string {
  return escapeHl7(text).replace(/[\x00-\x08\x0b-\x1f\x7f]/g, (c) => `\\X${c.charCodeAt(0).toString(16).toUpperCase().padStart(2, '0')}\\`);
}

function fields(name: string, values: Record<number, string>): string {
  const max = Math.max(
    0,
    ...Object.entries(values)
      .filter(([, v]) => v !== '')
      .map(([k]) => Number(k)),
  );
  const out = [name];
  for (let i = 1; i <= max; i++) out.push(values[i] ?? '');
  return out.join('|');
}

/** A whole segment of the primary, byte for byte when it used the standard delimiters. */
function withSurvivingPid3(pidText: string, primary: Hl7Message, pid: Segment, survivor: { id: string; authority: string | null } | undefined): string {
  if (!survivor) return pidText;
  const carried = primary.repetitions(primary.rawField(pid, 3)).some((rep) => {
    const c = primary.componentValues(rep);
    return c[0] === survivor.id && (survivor.authority === null || (c[3] ?? '') === survivor.authority);
  });
  if (carried) return pidText;
  const f = pidText.split('|');
  while (f.length < 4) f.push('');
  f[3] = survivor.authority ? `${escapeText(survivor.id)}^^^${escapeText(survivor.authority)}^MR` : escapeText(survivor.id);
  return f.join('|');
}

function transcodeSegment(seg: Segment, from: Readonly<Delimiters>): string {
  return [seg.name, ...seg.fields.slice(1).map((f) => transcode(f, from))].join('|');
}

/**
 * Re-encodes raw field text from the primary's delimiters to ours: its
 * separators map to ours, and a character that is a delimiter for us but was
 * plain text for the sender is escaped. Escape sequences keep their letters
 * (F S T R E are delimiter-independent). Identity for standard delimiters.
 */
function transcode(raw: string, from: Readonly<Delimiters>): string {
  const to = standardDelimiters;
  if (
    from.field === to.field &&
    from.component === to.component &&
    from.repetition === to.repetition &&
    from.escape === to.escape &&
    from.subcomponent === to.subcomponent
  ) {
    return raw;
  }
  const map = new Map<string, string>([
    [from.component, to.component],
    [from.repetition, to.repetition],
    [from.escape, to.escape],
    [from.subcomponent, to.subcomponent],
  ]);
  const literal = new Map<string, string>([
    [to.field, 'F'],
    [to.component, 'S'],
    [to.repetition, 'R'],
    [to.escape, 'E'],
    [to.subcomponent, 'T'],
  ]);
  let out = '';
  for (const ch of raw) {
    const mapped = map.get(ch);
    if (mapped !== undefined) out += mapped;
    else if (literal.has(ch)) out += `${to.escape}${literal.get(ch)}${to.escape}`;
    else out += ch;
  }
  return out;
}

function invalid(message: string): GatewayError {
  return new GatewayError(ErrorCode.invalidInput, message);
}
