import type { GatewayConfig } from '../config/schema.js';
import { ErrorCode, GatewayError } from '../errors.js';
import { Hl7Message, parsePath, type Hl7Path, type Segment } from './hl7-message.js';

export type Hl7Mapping = GatewayConfig['hl7']['mapping'];

export interface MessageHeader {
  sendingApplication: string | null;
  sendingFacility: string | null;
  receivingApplication: string | null;
  receivingFacility: string | null;
  /** MSH-10 exactly as sent (before unescaping), so MSA-2 can echo it byte for byte. */
  controlIdRaw: string | null;
  controlId: string | null;
  messageType: string | null;
  triggerEvent: string | null;
  messageStructure: string | null;
  /** `ORU^R01`: what the API and the log show. */
  typeLabel: string;
  processingId: string | null;
  version: string | null;
  /** MSH-18, first repetition: the message's character set (null: none named). */
  charset: string | null;
}

/** One PID-3 (or MRG-1) repetition: CX.1 id, CX.4 assigning authority (namespace id), CX.5 identifier type. */
export interface PatientIdentifier {
  id: string;
  authority: string | null;
  type: string | null;
}

export interface PatientRef {
  /** The selected repetition: the one whose CX.4 is `hl7.mapping.patientIdAuthority`, else the first. */
  id: string | null;
  authority: string | null;
  /** Every repetition, in the order sent. */
  identifiers: PatientIdentifier[];
}

export interface CodedValue {
  code: string | null;
  text: string | null;
  system: string | null;
}

export interface Person {
  id: string | null;
  familyName: string | null;
  givenName: string | null;
}

/** What orders, reports and AI results have in common: how they link to a study. */
export interface LinkKeys {
  accessionNumber: string | null;
  studyInstanceUid: string | null;
  placerOrderNumber: string | null;
  fillerOrderNumber: string | null;
}

export interface OrderItem extends LinkKeys {
  /** ORC-1: NW new, XO change, CA/DC cancel, SC status... */
  orderControl: string | null;
  orderStatus: string | null;
  procedure: CodedValue | null;
  modality: string | null;
  priority: string | null;
  reasonForStudy: CodedValue[];
  relevantClinicalInfo: string | null;
  diagnoses: CodedValue[];
  referringPhysician: Person | null;
  secondOpinionRequested: boolean;
}

export type ResultStatus = 'P' | 'F' | 'C' | 'X';

export interface ReportItem extends LinkKeys {
  resultStatus: ResultStatus;
  /**
   * Every TX/FT/ST OBX-5 and every NTE-3 after the OBR, in order, escapes undone, one line per
   * OBX/NTE (and per repetition). OBX whose OBX-11 is W (wrong patient) or D (deleted) are not report text.
   */
  text: string;
  /** Some OBX-11 is W: the sender says this result belongs to another patient. */
  wrongPatient: boolean;
  radiologist: Person | null;
  procedure: CodedValue | null;
  reasonForStudy: CodedValue[];
  diagnoses: CodedValue[];
  /** ISO-8601; UTC ('Z') when the sender gave an offset, otherwise the sender's local time without a zone. */
  observedAt: string | null;
}

export interface AiFinding {
  code: string | null;
  text: string | null;
  system: string | null;
  value: string | null;
  abnormalFlags: string[];
  positive: boolean;
  status: string | null;
  observedAt: string | null;
}

export interface AiResultItem extends LinkKeys {
  procedure: CodedValue | null;
  findings: AiFinding[];
  observedAt: string | null;
}

export interface PatientMergeItem {
  patient: PatientRef;
  prior: PatientRef;
}

/** A second report the reader pool's system sends back (MSH-3 is a destination's `hl7Sender`). */
export interface SecondReportItem extends LinkKeys {
  resultStatus: ResultStatus;
  /** TX/FT/ST OBX lines in order, the RADPEER and concordance OBX left out. */
  text: string;
  /** OBX whose OBX-3.1 is RADPEER: its value's first component. */
  radpeerScore: string | null;
  reader: Person | null;
}

export type InboundEvent =
  | { kind: 'order'; patient: PatientRef; items: OrderItem[] }
  | { kind: 'second-report'; patient: PatientRef; items: SecondReportItem[] }
  | { kind: 'report'; patient: PatientRef; items: ReportItem[] }
  | { kind: 'ai-result'; patient: PatientRef; items: AiResultItem[] }
  | { kind: 'patient-merge'; items: PatientMergeItem[] };

export type InboundKind = InboundEvent['kind'] | 'unsupported' | 'malformed';

export interface ParseOptions {
  mapping: Hl7Mapping;
  aiSenders: readonly string[];
  /** MSH-3 of reader pools: their ORU^R01 are second reports, not primary ones. */
  poolSenders?: readonly string[];
}

/** HL7 table 0357 codes used in ERR-3. */
export const Hl7ErrorCode = {
  requiredFieldMissing: '101',
  dataTypeError: '102',
  tableValueNotFound: '103',
  unsupportedMessageType: '200',
  unsupportedEventCode: '201',
  unsupportedVersion: '203',
  applicationInternalError: '207',
  segmentSequenceError: '100',
  duplicateKey: '205',
} as const;

/** A rejection the sender should not retry; `hl7Code` goes to ERR-3. */
export function hl7Reject(code: 'unsupported' | 'invalid' | 'unreadable', hl7Code: string, message: string): GatewayError {
  const ec = code === 'unsupported' ? ErrorCode.unsupported : code === 'invalid' ? ErrorCode.invalidInput : ErrorCode.unreadableData;
  return new GatewayError(ec, message, { details: { hl7Code } });
}

export function readHeader(m: Hl7Message): MessageHeader {
  const msh = m.segments[0]!;
  const r = (field: number, component?: number) => m.read(msh, { field, component });
  const messageType = r(9, 1);
  const triggerEvent = r(9, 2);
  return {
    sendingApplication: r(3),
    sendingFacility: r(4),
    receivingApplication: r(5),
    receivingFacility: r(6),
    controlIdRaw: m.rawField(msh, 10) || null,
    controlId: r(10),
    messageType,
    triggerEvent,
    messageStructure: r(9, 3),
    typeLabel: [messageType ?? '?', triggerEvent].filter((x) => x !== null).join('^'),
    processingId: r(11),
    version: r(12),
    charset: r(18),
  };
}

/**
 * Reads what it can of MSH from text that did not parse, so even a rejected
 * message is answered with its own MSH-10 when that is readable.
 */
export function scrapeHeader(text: string): MessageHeader {
  const start = text.replace(/^[\s\x0b]+/, '');
  const empty: MessageHeader = {
    sendingApplication: null,
    sendingFacility: null,
    receivingApplication: null,
    receivingFacility: null,
    controlIdRaw: null,
    controlId: null,
    messageType: null,
    triggerEvent: null,
    messageStructure: null,
    typeLabel: '?',
    processingId: null,
    version: null,
    charset: null,
  };
  if (!start.startsWith('MSH') || start.length < 4) return empty;
  const sep = start[3]!;
  const line = start.split(/\r\n|\r|\n/, 1)[0] ?? '';
  const f = line.split(sep);
  f.splice(1, 0, sep);
  const comp = (v: string | undefined, i: number) => (v ?? '').split('^')[i]?.trim() || null;
  const messageType = comp(f[9], 0);
  const triggerEvent = comp(f[9], 1);
  return {
    ...empty,
    sendingApplication: comp(f[3], 0),
    sendingFacility: comp(f[4], 0),
    receivingApplication: comp(f[5], 0),
    receivingFacility: comp(f[6], 0),
    controlIdRaw: f[10]?.trim() || null,
    controlId: f[10]?.trim() || null,
    messageType,
    triggerEvent,
    typeLabel: [messageType ?? '?', triggerEvent].filter((x) => x !== null).join('^'),
    processingId: comp(f[11], 0),
    version: comp(f[12], 0),
    charset: (f[18] ?? '').split('~')[0]?.trim() || null,
  };
}

/** Message types we take in, by MSH-9.1^MSH-9.2. */
const supported = new Set(['ORM^O01', 'OMI^O23', 'ORU^R01', 'ADT^A40', 'ADT^A34']);

/**
 * Turns a parsed message into a domain event. Throws a GatewayError whose
 * code maps to AR (unsupported type, a required field missing or invalid).
 */
export function toInboundEvent(m: Hl7Message, header: MessageHeader, o: ParseOptions): InboundEvent {
  if (!header.controlId) throw hl7Reject('invalid', Hl7ErrorCode.requiredFieldMissing, 'MSH-10 message control id missing');
  if (!header.messageType || !header.triggerEvent) throw hl7Reject('invalid', Hl7ErrorCode.requiredFieldMissing, 'MSH-9 message type missing');
  if (header.version && !/^2\.\d/.test(header.version)) {
    throw hl7Reject('unsupported', Hl7ErrorCode.unsupportedVersion, `HL7 version ${header.version} not supported (2.x only)`);
  }
  const type = `${header.messageType}^${header.triggerEvent}`;
  if (!supported.has(type)) {
    const known = ['ORM', 'OMI', 'ORU', 'ADT'].includes(header.messageType);
    throw hl7Reject(
      'unsupported',
      known ? Hl7ErrorCode.unsupportedEventCode : Hl7ErrorCode.unsupportedMessageType,
      `message type ${type} not supported (ORM^O01, OMI^O23, ORU^R01, ADT^A40, ADT^A34)`,
    );
  }
  const reader = new MappedReader(m, o.mapping);
  if (type === 'ADT^A40' || type === 'ADT^A34') return { kind: 'patient-merge', items: readMerges(m, o.mapping) };
  const patient = readPatient(m, m.segment('PID'), 3, o.mapping.patientIdAuthority);
  const groups = orderGroups(m);
  if (groups.length === 0) throw hl7Reject('invalid', Hl7ErrorCode.requiredFieldMissing, 'no OBR segment');

  if (type === 'ORM^O01' || type === 'OMI^O23') {
    const items = groups.map((g) => readOrder(reader, g, o.mapping));
    for (const it of items) {
      if (!it.accessionNumber && !it.placerOrderNumber && !it.studyInstanceUid) {
        throw hl7Reject('invalid', Hl7ErrorCode.requiredFieldMissing, 'order has no accession number, placer order number or StudyInstanceUID');
      }
    }
    return { kind: 'order', patient, items };
  }
  if (header.sendingApplication !== null && o.poolSenders?.includes(header.sendingApplication)) {
    const items = groups.map((g) => readSecondReport(reader, g, o.mapping));
    requireLinkKeys(items, 'second report');
    return { kind: 'second-report', patient, items };
  }
  const isAi = header.sendingApplication !== null && o.aiSenders.includes(header.sendingApplication);
  if (isAi) {
    const items = groups.map((g) => readAiResult(reader, g, o.mapping));
    requireLinkKeys(items, 'AI result');
    return { kind: 'ai-result', patient, items };
  }
  const items = groups.map((g) => readReport(reader, g, o.mapping));
  requireLinkKeys(items, 'report');
  return { kind: 'report', patient, items };
}

function requireLinkKeys(items: LinkKeys[], what: string): void {
  for (const it of items) {
    if (!it.accessionNumber && !it.studyInstanceUid) {
      throw hl7Reject('invalid', Hl7ErrorCode.requiredFieldMissing, `${what} has neither an accession number nor a StudyInstanceUID`);
    }
  }
}

/**
 * One order (ORC/OBR) with the segments that belong to it. Segments before the
 * first ORC/OBR (PID, PV1, a patient-level DG1) are shared by every group and
 * are read only when the group itself lacks the segment.
 */
interface Group {
  segments: Segment[];
  shared: Segment[];
}

function orderGroups(m: Hl7Message): Group[] {
  const shared: Segment[] = [];
  const groups: Group[] = [];
  let current: Group | undefined;
  let hasObr = false;
  for (const s of m.segments.slice(1)) {
    if (s.name === 'ORC') {
      current = { segments: [s], shared };
      groups.push(current);
      hasObr = false;
    } else if (s.name === 'OBR') {
      if (!current || hasObr) {
        // ORU commonly repeats OBR without ORC; a new OBR is a new order either way.
        current = { segments: [s], shared };
        groups.push(current);
      } else {
        current.segments.push(s);
      }
      hasObr = true;
    } else if (current) {
      current.segments.push(s);
    } else {
      shared.push(s);
    }
  }
  // An ORC without an OBR (e.g. a pure status message) carries nothing we link.
  return groups.filter((g) => g.segments.some((s) => s.name === 'OBR'));
}

/** Parsed mapping paths, shared by every message (the mapping is a handful of strings, fixed per config). */
const parsedPaths = new Map<string, Hl7Path>();

class MappedReader {
  constructor(
    readonly m: Hl7Message,
    readonly mapping: Hl7Mapping,
  ) {}

  path(p: string): Hl7Path {
    let parsed = parsedPaths.get(p);
    if (!parsed) {
      parsed = parsePath(p);
      // Bounded: a config reload brings new strings, but only ever a few.
      if (parsedPaths.size >= 1024) parsedPaths.clear();
      parsedPaths.set(p, parsed);
    }
    return parsed;
  }

  segmentIn(g: Group, name: string): Segment | undefined {
    return g.segments.find((s) => s.name === name) ?? g.shared.find((s) => s.name === name);
  }

  segmentsIn(g: Group, name: string): Segment[] {
    const own = g.segments.filter((s) => s.name === name);
    return own.length > 0 ? own : g.shared.filter((s) => s.name === name);
  }

  /** First non-empty value of the paths, in order. */
  first(g: Group, paths: readonly string[]): string | null {
    for (const p of paths) {
      const hp = this.path(p);
      const seg = this.segmentIn(g, hp.segment);
      const v = seg ? this.m.read(seg, hp) : null;
      if (v) return v;
    }
    return null;
  }

  /** Every repetition of the field at each path, from every segment with that name (DG1 repeats as segments, OBR-31 as repetitions). */
  coded(g: Group, paths: readonly string[]): CodedValue[] {
    const out: CodedValue[] = [];
    for (const p of paths) {
      const hp = this.path(p);
      for (const seg of this.segmentsIn(g, hp.segment)) {
        for (const rep of this.m.repetitions(this.m.rawField(seg, hp.field))) {
          const c = this.m.componentValues(rep);
          const v = { code: c[0] || null, text: c[1] || null, system: c[2] || null };
          if (v.code || v.text) out.push(v);
        }
      }
      if (out.length > 0) break;
    }
    return out;
  }

  codedOne(g: Group, paths: readonly string[]): CodedValue | null {
    return this.coded(g, paths)[0] ?? null;
  }

  person(g: Group, paths: readonly string[]): Person | null {
    for (const p of paths) {
      const hp = this.path(p);
      const seg = this.segmentIn(g, hp.segment);
      if (!seg) continue;
      const rep = this.m.repetitions(this.m.rawField(seg, hp.field))[0];
      if (!rep) continue;
      const comps = this.m.components(rep);
      if (hp.component !== undefined) {
        // OBR-32 is NDL: its first component is a CNN whose parts are subcomponents (id&family&given).
        const subs = (comps[hp.component - 1] ?? '').split(this.m.delimiters.subcomponent).map((s) => this.m.unescape(s).trim() || null);
        if (subs[0] || subs[1]) return { id: subs[0] ?? null, familyName: subs[1] ?? null, givenName: subs[2] ?? null };
        continue;
      }
      const c = this.m.componentValues(rep);
      if (c[0] || c[1]) return { id: c[0] || null, familyName: c[1] || null, givenName: c[2] || null };
    }
    return null;
  }

  linkKeys(g: Group): LinkKeys {
    const mp = this.mapping;
    return {
      accessionNumber: this.first(g, mp.accession),
      studyInstanceUid: this.first(g, mp.studyInstanceUid),
      placerOrderNumber: this.first(g, mp.placerOrderNumber),
      fillerOrderNumber: this.first(g, mp.fillerOrderNumber),
    };
  }
}

function readOrder(r: MappedReader, g: Group, mp: Hl7Mapping): OrderItem {
  const orc = g.segments.find((s) => s.name === 'ORC');
  const flag = r.first(g, [mp.secondOpinion.field]);
  const clinical = r.first(g, mp.relevantClinicalInfo);
  return {
    ...r.linkKeys(g),
    orderControl: orc ? r.m.read(orc, { field: 1 }) : null,
    orderStatus: orc ? r.m.read(orc, { field: 5 }) : null,
    procedure: r.codedOne(g, mp.procedure),
    modality: r.first(g, mp.modality),
    priority: r.first(g, mp.priority),
    reasonForStudy: r.coded(g, mp.reasonForStudy),
    relevantClinicalInfo: clinical,
    diagnoses: r.coded(g, mp.diagnoses),
    referringPhysician: r.person(g, mp.referringPhysician),
    secondOpinionRequested: flag !== null && flag.toUpperCase() === mp.secondOpinion.value.toUpperCase(),
  };
}

const textTypes = new Set(['TX', 'FT', 'ST']);

function readReport(r: MappedReader, g: Group, mp: Hl7Mapping): ReportItem {
  const status = r.first(g, mp.resultStatus)?.toUpperCase() ?? null;
  if (status !== 'P' && status !== 'F' && status !== 'C' && status !== 'X') {
    throw hl7Reject(
      'invalid',
      status ? Hl7ErrorCode.tableValueNotFound : Hl7ErrorCode.requiredFieldMissing,
      status ? `result status ${status} not supported (P, F, C, X)` : 'OBR-25 result status missing',
    );
  }
  const { lines, wrongPatient } = reportText(r, g, () => false);
  return {
    ...r.linkKeys(g),
    resultStatus: status,
    text: lines.join('\n'),
    wrongPatient,
    radiologist: r.person(g, mp.primaryRadiologist),
    procedure: r.codedOne(g, mp.procedure),
    reasonForStudy: r.coded(g, mp.reasonForStudy),
    diagnoses: r.coded(g, mp.diagnoses),
    observedAt: hl7TimeToIso(r.first(g, mp.observedAt)),
  };
}

/**
 * Report text of one order group: TX/FT/ST OBX-5 and NTE-3 in the order sent.
 * OBX-11 W (wrong patient) and D (deleted) observations are not text anyone
 * should read; `skip` lets a caller take an OBX for itself (RADPEER score).
 */
function reportText(r: MappedReader, g: Group, skip: (obx: Segment) => boolean): { lines: string[]; wrongPatient: boolean } {
  const lines: string[] = [];
  let wrongPatient = false;
  let afterObr = false;
  for (const s of g.segments) {
    if (s.name === 'OBR') afterObr = true;
    else if (s.name === 'NTE' && afterObr) {
      const text = r.m.text(r.m.rawField(s, 3));
      if (text.trim() !== '') lines.push(text);
    } else if (s.name === 'OBX') {
      const status = r.m.read(s, { field: 11 })?.toUpperCase();
      if (status === 'W') wrongPatient = true;
      if (status === 'W' || status === 'D') continue;
      if (skip(s)) continue;
      const type = r.m.read(s, { field: 2 })?.toUpperCase();
      if (type && textTypes.has(type)) lines.push(r.m.text(r.m.rawField(s, 5)));
    }
  }
  return { lines, wrongPatient };
}

function readSecondReport(r: MappedReader, g: Group, mp: Hl7Mapping): SecondReportItem {
  const primaryLike = readReport(r, g, mp);
  let radpeerScore: string | null = null;
  const { lines } = reportText(r, g, (obx) => {
    const code = r.m.componentValues(r.m.repetitions(r.m.rawField(obx, 3))[0] ?? '')[0]?.toUpperCase();
    if (code === 'RADPEER') {
      radpeerScore = r.m.componentValues(r.m.repetitions(r.m.rawField(obx, 5))[0] ?? '')[0]?.toLowerCase() || null;
      return true;
    }
    return code === 'SRCONC';
  });
  return { ...r.linkKeys(g), resultStatus: primaryLike.resultStatus, text: lines.join('\n'), radpeerScore, reader: primaryLike.radiologist };
}

function readAiResult(r: MappedReader, g: Group, mp: Hl7Mapping): AiResultItem {
  const findings: AiFinding[] = [];
  for (const obx of g.segments) {
    if (obx.name !== 'OBX') continue;
    const id = r.m.componentValues(r.m.repetitions(r.m.rawField(obx, 3))[0] ?? '');
    const type = r.m.read(obx, { field: 2 })?.toUpperCase() ?? '';
    const rawValue = r.m.rawField(obx, 5);
    // A coded value reads best as its text (component 2), anything else as the whole text.
    const coded = ['CE', 'CWE', 'CNE'].includes(type) ? r.m.componentValues(r.m.repetitions(rawValue)[0] ?? '') : undefined;
    const value = coded ? coded[1] || coded[0] || null : r.m.text(rawValue) || null;
    const flags = r.m
      .repetitions(r.m.rawField(obx, 8))
      .map((f) => r.m.unescape(f).trim().toUpperCase())
      .filter(Boolean);
    findings.push({
      code: id[0] || null,
      text: id[1] || null,
      system: id[2] || null,
      value,
      abnormalFlags: flags,
      // 'A' abnormal; 'AA' (critically abnormal) is more so, never less.
      positive: flags.includes('A') || flags.includes('AA'),
      status: r.m.read(obx, { field: 11 }),
      observedAt: hl7TimeToIso(r.m.read(obx, { field: 14 })),
    });
  }
  return { ...r.linkKeys(g), procedure: r.codedOne(g, mp.procedure), findings, observedAt: hl7TimeToIso(r.first(g, mp.observedAt)) };
}

function readMerges(m: Hl7Message, mp: Hl7Mapping): PatientMergeItem[] {
  const items: PatientMergeItem[] = [];
  let pid: Segment | undefined;
  for (const s of m.segments) {
    if (s.name === 'PID') pid = s;
    if (s.name === 'MRG' && pid) {
      const patient = readPatient(m, pid, 3, mp.patientIdAuthority);
      const prior = readPatient(m, s, 1, mp.patientIdAuthority);
      if (!patient.id || !prior.id) throw hl7Reject('invalid', Hl7ErrorCode.requiredFieldMissing, 'A40 needs PID-3 and MRG-1 patient ids');
      items.push({ patient, prior });
      pid = undefined;
    }
  }
  if (items.length === 0) throw hl7Reject('invalid', Hl7ErrorCode.segmentSequenceError, 'A40 has no PID/MRG pair');
  return items;
}

/**
 * PID-3 (or MRG-1): every repetition with its authority (CX.4.1, the
 * namespace id) and type (CX.5); the selected one is the repetition of the
 * configured authority, else the first. Matching uses all of them (reconcile.ts).
 */
export function readPatient(m: Hl7Message, seg: Segment | undefined, field: number, authority: string | undefined): PatientRef {
  const identifiers: PatientIdentifier[] = [];
  if (seg) {
    for (const rep of m.repetitions(m.rawField(seg, field))) {
      const c = m.components(rep);
      const id = m.unescape((c[0] ?? '').split(m.delimiters.subcomponent)[0] ?? '').trim();
      if (!id || id === '""') continue;
      const auth = m.unescape((c[3] ?? '').split(m.delimiters.subcomponent)[0] ?? '').trim();
      const type = m.unescape((c[4] ?? '').split(m.delimiters.subcomponent)[0] ?? '').trim();
      identifiers.push({ id, authority: auth || null, type: type || null });
    }
  }
  const selected = (authority !== undefined ? identifiers.find((i) => i.authority === authority) : undefined) ?? identifiers[0];
  return { id: selected?.id ?? null, authority: selected?.authority ?? null, identifiers };
}

/**
 * HL7 TS/DTM (YYYY[MM[DD[HH[MM[SS[.S+]]]]]][+/-ZZZZ]) to ISO-8601. With an
 * offset the result is UTC; without one the sender's wall-clock time is kept
 * without a zone rather than guessed (the process time zone says nothing
 * about the sender's).
 */
export function hl7TimeToIso(v: string | null): string | null {
  if (!v) return null;
  const m = /^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.(\d{1,4}))?([+-]\d{4})?$/.exec(v.trim());
  if (!m) return null;
  const [, y, mo = '01', d = '01', h = '00', mi = '00', s = '00', frac, tz] = m;
  const ms = (frac ?? '').padEnd(3, '0').slice(0, 3);
  const local = `${y}-${mo}-${d}T${h}:${mi}:${s}.${ms}`;
  if (!tz) return local;
  const t = Date.parse(`${local}${tz.slice(0, 3)}:${tz.slice(3)}`);
  return Number.isNaN(t) ? null : new Date(t).toISOString();
}
