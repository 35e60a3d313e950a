/**
 * The DICOM upper layer PDUs (PS3.8 9.3), each with a symmetric encoder and
 * decoder. Decoders are strict: a PDU that does not read as its type says
 * throws a PduError carrying the A-ABORT reason to answer with (PS3.8 Table
 * 9-26), so a hostile or broken peer gets a protocol answer, never a crash.
 * P-DATA-TF has a view-based path too (forEachPdv / pDataHeader): dataset bytes
 * are never copied on their way through.
 */

export const PduType = {
  associateRq: 0x01,
  associateAc: 0x02,
  associateRj: 0x03,
  pData: 0x04,
  releaseRq: 0x05,
  releaseRp: 0x06,
  abort: 0x07,
} as const;

/** PS3.8 Table 9-26: A-ABORT reasons when the service provider aborts. */
export const AbortReason = {
  notSpecified: 0,
  unrecognizedPdu: 1,
  unexpectedPdu: 2,
  unrecognizedPduParameter: 4,
  unexpectedPduParameter: 5,
  invalidPduParameterValue: 6,
} as const;

/** PS3.8 9.3.8: 0 service user, 2 service provider. */
export const AbortSource = { serviceUser: 0, serviceProvider: 2 } as const;

/** PS3.8 9.3.4 A-ASSOCIATE-RJ fields. */
export const RejectResult = { permanent: 1, transient: 2 } as const;
export const RejectSource = { serviceUser: 1, serviceProviderAcse: 2, serviceProviderPresentation: 3 } as const;
export const RejectReason = {
  // source 1 (service user)
  noReasonGiven: 1,
  applicationContextNotSupported: 2,
  callingAeNotRecognized: 3,
  calledAeNotRecognized: 7,
  // source 2 (ACSE): 1 no reason, 2 protocol version not supported
  protocolVersionNotSupported: 2,
  // source 3 (presentation)
  temporaryCongestion: 1,
  localLimitExceeded: 2,
} as const;

/** PS3.8 Table 9-18: presentation context results in an A-ASSOCIATE-AC. */
export const ContextResult = {
  acceptance: 0,
  userRejection: 1,
  noReason: 2,
  abstractSyntaxNotSupported: 3,
  transferSyntaxesNotSupported: 4,
} as const;

export class PduError extends Error {
  constructor(
    message: string,
    /** The A-ABORT reason that answers it. */
    readonly abortReason: number = AbortReason.invalidPduParameterValue,
  ) {
    super(message);
  }
}

export interface ProposedContext {
  id: number;
  abstractSyntax: string;
  transferSyntaxes: string[];
}

export interface AcceptedContextItem {
  id: number;
  /** ContextResult */
  result: number;
  /** Empty unless accepted. */
  transferSyntax: string;
}

/** SCP/SCU Role Selection sub-item (PS3.7 D.3.3.4). */
export interface RoleSelection {
  sopClassUid: string;
  scu: boolean;
  scp: boolean;
}

/** The user information item (PS3.8 D.1, PS3.7 D.3.3). Other sub-items are kept as read, and written back. */
export interface UserInformation {
  /** 0: no limit. */
  maxPduLength: number;
  implementationClassUid: string;
  implementationVersionName?: string;
  asyncOps?: { invoked: number; performed: number };
  roles?: RoleSelection[];
  other?: { type: number; value: Buffer }[];
}

interface AssociateCommon {
  protocolVersion: number;
  calledAe: string;
  callingAe: string;
  applicationContext: string;
  user: UserInformation;
}

export interface AssociateRq extends AssociateCommon {
  type: typeof PduType.associateRq;
  contexts: ProposedContext[];
}

export interface AssociateAc extends AssociateCommon {
  type: typeof PduType.associateAc;
  contexts: AcceptedContextItem[];
}

export interface AssociateRj {
  type: typeof PduType.associateRj;
  result: number;
  source: number;
  reason: number;
}

export interface Pdv {
  contextId: number;
  command: boolean;
  last: boolean;
  data: Buffer;
}

export interface PDataTf {
  type: typeof PduType.pData;
  pdvs: Pdv[];
}

export interface ReleaseRq {
  type: typeof PduType.releaseRq;
}
export interface ReleaseRp {
  type: typeof PduType.releaseRp;
}
export interface Abort {
  type: typeof PduType.abort;
  source: number;
  reason: number;
}

export type Pdu = AssociateRq | AssociateAc | AssociateRj | PDataTf | ReleaseRq | ReleaseRp | Abort;

// ---------------------------------------------------------------------------------------------
// encoding

function pduBytes(type: number, body: Buffer): Buffer {
  const h = Buffer.alloc(6);
  h[0] = type;
  h.writeUInt32BE(body.length, 2);
  return Buffer.concat([h, body]);
}

function item(type: number, value: Buffer): Buffer {
  if (value.length > 0xffff) throw new PduError(`item 0x${type.toString(16)} longer than 65535 bytes`);
  const h = Buffer.alloc(4);
  h[0] = type;
  h.writeUInt16BE(value.length, 2);
  return Buffer.concat([h, value]);
}

const ascii = (s: string): Buffer => Buffer.from(s, 'latin1');
const ae = (s: string): Buffer => Buffer.from(s.padEnd(16, ' ').slice(0, 16), 'latin1');

function encodeUser(u: UserInformation): Buffer {
  const max = Buffer.alloc(4);
  max.writeUInt32BE(u.maxPduLength >>> 0, 0);
  const subs = [item(0x51, max), item(0x52, ascii(u.implementationClassUid))];
  if (u.asyncOps) {
    const b = Buffer.alloc(4);
    b.writeUInt16BE(u.asyncOps.invoked, 0);
    b.writeUInt16BE(u.asyncOps.performed, 2);
    subs.push(item(0x53, b));
  }
  for (const r of u.roles ?? []) {
    const uid = ascii(r.sopClassUid);
    const b = Buffer.alloc(2 + uid.length + 2);
    b.writeUInt16BE(uid.length, 0);
    uid.copy(b, 2);
    b[2 + uid.length] = r.scu ? 1 : 0;
    b[3 + uid.length] = r.scp ? 1 : 0;
    subs.push(item(0x54, b));
  }
  if (u.implementationVersionName) subs.push(item(0x55, ascii(u.implementationVersionName)));
  for (const o of u.other ?? []) subs.push(item(o.type, o.value));
  return item(0x50, Buffer.concat(subs));
}

function encodeAssociate(p: AssociateRq | AssociateAc): Buffer {
  const fixed = Buffer.alloc(68);
  fixed.writeUInt16BE(p.protocolVersion, 0);
  ae(p.calledAe).copy(fixed, 4);
  ae(p.callingAe).copy(fixed, 20);
  const contexts =
    p.type === PduType.associateRq
      ? p.contexts.map((c) =>
          item(
            0x20,
            Buffer.concat([Buffer.from([c.id, 0, 0, 0]), item(0x30, ascii(c.abstractSyntax)), ...c.transferSyntaxes.map((ts) => item(0x40, ascii(ts)))]),
          ),
        )
      : p.contexts.map((c) =>
          item(0x21, Buffer.concat([Buffer.from([c.id, 0, c.result, 0]), item(0x40, ascii(c.result === ContextResult.acceptance ? c.transferSyntax : ''))])),
        );
  return pduBytes(p.type, Buffer.concat([fixed, item(0x10, ascii(p.applicationContext)), ...contexts, encodeUser(p.user)]));
}

/** The 12-byte head of a P-DATA-TF carrying one PDV of `length` bytes: the data itself is written after it, as is. */
export function pDataHeader(contextId: number, command: boolean, last: boolean, length: number): Buffer {
  const h = Buffer.allocUnsafe(12);
  h[0] = PduType.pData;
  h[1] = 0;
  h.writeUInt32BE(length + 6, 2); // one PDV item: 4-byte length + context id + control header + data
  h.writeUInt32BE(length + 2, 6);
  h[10] = contextId;
  h[11] = (command ? 0x01 : 0x00) | (last ? 0x02 : 0x00);
  return h;
}

export function encodePdu(p: Pdu): Buffer {
  switch (p.type) {
    case PduType.associateRq:
    case PduType.associateAc:
      return encodeAssociate(p);
    case PduType.associateRj:
      return pduBytes(p.type, Buffer.from([0, p.result, p.source, p.reason]));
    case PduType.pData:
      return pduBytes(
        p.type,
        Buffer.concat(
          p.pdvs.map((v) => {
            const h = pDataHeader(v.contextId, v.command, v.last, v.data.length).subarray(6);
            return Buffer.concat([h, v.data]);
          }),
        ),
      );
    case PduType.releaseRq:
    case PduType.releaseRp:
      return pduBytes(p.type, Buffer.alloc(4));
    case PduType.abort:
      return pduBytes(p.type, Buffer.from([0, 0, p.source, p.reason]));
  }
}

// ---------------------------------------------------------------------------------------------
// decoding

const text = (b: Buffer): string =>
  b
    .toString('latin1')
    .replace(/[\0 ]+$/, '')
    .replace(/^ +/, '');

/** Walks the items of `b` from `start`: 1-byte type, 1 reserved, 2-byte big-endian length (PS3.8 9.3.2). */
function* items(b: Buffer, start = 0): Generator<{ type: number; value: Buffer }> {
  let o = start;
  while (o < b.length) {
    if (o + 4 > b.length) throw new PduError('item header cut short');
    const len = b.readUInt16BE(o + 2);
    if (o + 4 + len > b.length) throw new PduError(`item 0x${b[o]!.toString(16)} runs past its PDU`);
    yield { type: b[o]!, value: b.subarray(o + 4, o + 4 + len) };
    o += 4 + len;
  }
}

function decodeUser(v: Buffer): UserInformation {
  const u: UserInformation = { maxPduLength: 0, implementationClassUid: '' };
  for (const s of items(v)) {
    switch (s.type) {
      case 0x51:
        if (s.value.length !== 4) throw new PduError('maximum length sub-item is not 4 bytes');
        u.maxPduLength = s.value.readUInt32BE(0);
        break;
      case 0x52:
        u.implementationClassUid = text(s.value);
        break;
      case 0x53:
        if (s.value.length !== 4) throw new PduError('asynchronous operations sub-item is not 4 bytes');
        u.asyncOps = { invoked: s.value.readUInt16BE(0), performed: s.value.readUInt16BE(2) };
        break;
      case 0x54: {
        if (s.value.length < 2) throw new PduError('role selection sub-item cut short');
        const n = s.value.readUInt16BE(0);
        if (s.value.length !== 2 + n + 2) throw new PduError('role selection sub-item length does not add up');
        (u.roles ??= []).push({ sopClassUid: text(s.value.subarray(2, 2 + n)), scu: s.value[2 + n] === 1, scp: s.value[3 + n] === 1 });
        break;
      }
      case 0x55: {
        // A blank name (padding only) is no name: the encoder leaves an absent one out, so a decode round-trips.
        const name = text(s.value);
        if (name) u.implementationVersionName = name;
        break;
      }
      default:
        (u.other ??= []).push({ type: s.type, value: Buffer.from(s.value) });
    }
  }
  return u;
}

function decodeAssociate(type: typeof PduType.associateRq | typeof PduType.associateAc, body: Buffer): AssociateRq | AssociateAc {
  if (body.length < 68) throw new PduError('A-ASSOCIATE PDU shorter than its fixed fields');
  const protocolVersion = body.readUInt16BE(0);
  const calledAe = text(body.subarray(4, 20));
  const callingAe = text(body.subarray(20, 36));
  let applicationContext: string | undefined;
  let user: UserInformation | undefined;
  const proposed: ProposedContext[] = [];
  const accepted: AcceptedContextItem[] = [];
  for (const it of items(body, 68)) {
    if (it.type === 0x10) {
      if (applicationContext !== undefined) throw new PduError('two application context items');
      applicationContext = text(it.value);
    } else if (it.type === 0x20 && type === PduType.associateRq) {
      if (it.value.length < 4) throw new PduError('presentation context item cut short');
      let abstractSyntax: string | undefined;
      const transferSyntaxes: string[] = [];
      for (const s of items(it.value, 4)) {
        if (s.type === 0x30) {
          if (abstractSyntax !== undefined) throw new PduError('two abstract syntaxes in one presentation context');
          abstractSyntax = text(s.value);
        } else if (s.type === 0x40) transferSyntaxes.push(text(s.value));
        // PS3.8 9.3.1: items of unrecognized types are ignored and skipped
      }
      if (abstractSyntax === undefined) throw new PduError('presentation context without an abstract syntax');
      proposed.push({ id: it.value[0]!, abstractSyntax, transferSyntaxes });
    } else if (it.type === 0x21 && type === PduType.associateAc) {
      if (it.value.length < 4) throw new PduError('presentation context item cut short');
      let transferSyntax = '';
      for (const s of items(it.value, 4)) if (s.type === 0x40) transferSyntax = text(s.value);
      accepted.push({ id: it.value[0]!, result: it.value[2]!, transferSyntax });
    } else if (it.type === 0x50) {
      if (user) throw new PduError('two user information items');
      user = decodeUser(it.value);
    }
    // PS3.8 9.3.1: items of unrecognized types are ignored and skipped
  }
  if (applicationContext === undefined) throw new PduError('A-ASSOCIATE PDU without an application context');
  if (!user) throw new PduError('A-ASSOCIATE PDU without user information');
  const common = { protocolVersion, calledAe, callingAe, applicationContext, user };
  return type === PduType.associateRq ? { type, ...common, contexts: proposed } : { type, ...common, contexts: accepted };
}

/**
 * Calls `fn` for each PDV of a P-DATA-TF body (the bytes after the 6-byte PDU
 * header); the data is a view into `body`. Throws a PduError on an item that
 * runs past the PDU or is too short to hold its header.
 */
export function forEachPdv(body: Buffer, fn: (contextId: number, command: boolean, last: boolean, data: Buffer) => void): void {
  let o = 0;
  if (body.length === 0) throw new PduError('P-DATA-TF without a PDV');
  while (o < body.length) {
    if (o + 6 > body.length) throw new PduError('PDV item header cut short');
    const len = body.readUInt32BE(o);
    if (len < 2 || o + 4 + len > body.length) throw new PduError('PDV item length out of bounds');
    const ctrl = body[o + 5]!;
    fn(body[o + 4]!, (ctrl & 0x01) !== 0, (ctrl & 0x02) !== 0, body.subarray(o + 6, o + 4 + len));
    o += 4 + len;
  }
}

/** Decodes one PDU's body (the bytes after its 6-byte header). */
export function decodePduBody(type: number, body: Buffer): Pdu {
  switch (type) {
    case PduType.associateRq:
    case PduType.associateAc:
      return decodeAssociate(type, body);
    case PduType.associateRj:
      if (body.length !== 4) throw new PduError('A-ASSOCIATE-RJ is not 4 bytes');
      return { type, result: body[1]!, source: body[2]!, reason: body[3]! };
    case PduType.pData: {
      const pdvs: Pdv[] = [];
      forEachPdv(body, (contextId, command, last, data) => pdvs.push({ contextId, command, last, data }));
      return { type, pdvs };
    }
    case PduType.releaseRq:
    case PduType.releaseRp:
      if (body.length !== 4) throw new PduError('A-RELEASE PDU is not 4 bytes');
      return { type };
    case PduType.abort:
      if (body.length !== 4) throw new PduError('A-ABORT is not 4 bytes');
      return { type, source: body[2]!, reason: body[3]! };
    default:
      throw new PduError(`unrecognized PDU type 0x${type.toString(16)}`, AbortReason.unrecognizedPdu);
  }
}

/** Decodes one whole PDU (header included). */
export function decodePdu(bytes: Buffer): Pdu {
  if (bytes.length < 6) throw new PduError('PDU header cut short');
  const len = bytes.readUInt32BE(2);
  if (bytes.length !== 6 + len) throw new PduError('PDU length does not match its bytes');
  return decodePduBody(bytes[0]!, bytes.subarray(6));
}

/**
 * Cuts a byte stream into whole PDUs. A PDU inside one chunk is handed out as
 * a view; one spanning chunks is assembled with a single copy. The length
 * field is only a claim: one over `maxPduBytes` is refused (onTooLarge) before
 * its bytes are buffered, and nothing more is read.
 */
export class PduFramer {
  private parts: Buffer[] = [];
  private have = 0;
  private need = -1;
  private refused = false;

  constructor(
    private readonly onPdu: (type: number, body: Buffer) => void,
    private readonly maxPduBytes = Number.MAX_SAFE_INTEGER,
    private readonly onTooLarge: (declared: number) => void = () => undefined,
  ) {}

  /** Bytes received but not yet a whole PDU. */
  get buffered(): number {
    return this.have;
  }

  stop(): void {
    this.refused = true;
    this.parts = [];
    this.have = 0;
  }

  push(chunk: Buffer): void {
    if (this.refused) return;
    this.parts.push(chunk);
    this.have += chunk.length;
    while (this.have > 0 && !this.refused) {
      if (this.need < 0) {
        if (this.have < 6) return;
        const first = this.parts[0]!;
        const head = first.length >= 6 ? first : Buffer.concat(this.parts, 6);
        const declared = head.readUInt32BE(2);
        if (declared > this.maxPduBytes) {
          this.stop();
          this.onTooLarge(declared);
          return;
        }
        this.need = 6 + declared;
      }
      if (this.have < this.need) return;
      const pdu = this.take(this.need);
      this.need = -1;
      this.onPdu(pdu[0]!, pdu.subarray(6));
    }
  }

  private take(n: number): Buffer {
    const first = this.parts[0]!;
    this.have -= n;
    if (first.length >= n) {
      if (first.length === n) this.parts.shift();
      else this.parts[0] = first.subarray(n);
      return first.subarray(0, n);
    }
    const out = Buffer.allocUnsafe(n);
    let off = 0;
    let used = 0;
    while (off < n) {
      const p = this.parts[used]!;
      const k = Math.min(p.length, n - off);
      p.copy(out, off, 0, k);
      off += k;
      if (k === p.length) used++;
      else this.parts[used] = p.subarray(k);
    }
    this.parts.splice(0, used);
    return out;
  }
}
