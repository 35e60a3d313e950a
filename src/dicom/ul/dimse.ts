/**
 * DIMSE command sets (PS3.7 9.3, 10.3, E): group 0000, implicit VR little
 * endian, group length first, elements in tag order. One codec for every
 * request and response we send or answer (C-ECHO, C-STORE, C-FIND, C-MOVE,
 * C-GET, N-CREATE, N-SET, C-CANCEL), and the data sets that go with the
 * non-storage ones (dcmjs naturalized objects).
 */
import dcmjs from 'dcmjs';
import { readFileMeta, writeFileMeta } from '../part10.js';
import { TransferSyntax } from '../uids.js';

export const CommandField = {
  cStoreRq: 0x0001,
  cStoreRsp: 0x8001,
  cGetRq: 0x0010,
  cGetRsp: 0x8010,
  cFindRq: 0x0020,
  cFindRsp: 0x8020,
  cMoveRq: 0x0021,
  cMoveRsp: 0x8021,
  cEchoRq: 0x0030,
  cEchoRsp: 0x8030,
  nEventReportRq: 0x0100,
  nEventReportRsp: 0x8100,
  nGetRq: 0x0110,
  nGetRsp: 0x8110,
  nSetRq: 0x0120,
  nSetRsp: 0x8120,
  nActionRq: 0x0130,
  nActionRsp: 0x8130,
  nCreateRq: 0x0140,
  nCreateRsp: 0x8140,
  nDeleteRq: 0x0150,
  nDeleteRsp: 0x8150,
  cCancelRq: 0x0fff,
} as const;

/** PS3.7 9.3.1: CommandDataSetType 0x0101 means no data set follows; any other value means one does. */
export const NO_DATASET = 0x0101;

export const Priority = { medium: 0x0000, high: 0x0001, low: 0x0002 } as const;

export const Status = {
  success: 0x0000,
  pending: 0xff00,
  pendingWarning: 0xff01,
  cancel: 0xfe00,
  processingFailure: 0x0110,
  noSuchSopClass: 0x0118,
  duplicateSopInstance: 0x0111,
  noSuchSopInstance: 0x0112,
  sopClassNotSupported: 0x0122,
  unrecognizedOperation: 0x0211,
  outOfResources: 0xa700,
} as const;

export const isPending = (status: number): boolean => status === Status.pending || status === Status.pendingWarning;

/**
 * What a C-FIND / C-MOVE / C-GET status means (PS3.4 C.4.1.1.4, C.4.2.1.5,
 * C.4.3.1.4; PS3.7 C): the words a person reading a failure needs, with the
 * code in hex. Pending statuses are not final; seen as the last answer they
 * say the operation was cut off.
 */
export function describeQueryRetrieveStatus(status: number): string {
  const hex = `0x${status.toString(16).padStart(4, '0')}`;
  const what = ((): string => {
    if (status === Status.success) return 'success';
    if (status === Status.pending) return 'pending (matches or sub-operations continuing)';
    if (status === Status.pendingWarning) return 'pending, with optional keys not supported';
    if (status === Status.cancel) return 'cancelled (matching or sub-operations terminated by a C-CANCEL)';
    if (status === 0xa701) return 'refused: out of resources, unable to calculate the number of matches';
    if (status === 0xa702) return 'refused: out of resources, unable to perform sub-operations';
    if ((status & 0xff00) === 0xa700) return 'refused: out of resources';
    if (status === 0xa801) return 'refused: move destination unknown';
    if (status === 0xa900) return 'identifier does not match the SOP class';
    if (status === 0xb000) return 'sub-operations complete, one or more failures or warnings';
    if (status === 0x0122) return 'SOP class not supported';
    if (status === 0x0211) return 'unrecognized operation';
    if ((status & 0xf000) === 0xc000) return 'unable to process';
    if ((status & 0xf000) === 0xb000) return 'warning';
    return 'failure';
  })();
  return `${what} (${hex})`;
}

/** A command set: the elements of PS3.7 Table E.1-1 we read and write. */
export interface Command {
  commandField: number;
  hasDataset: boolean;
  messageId?: number;
  messageIdBeingRespondedTo?: number;
  affectedSopClassUid?: string;
  requestedSopClassUid?: string;
  affectedSopInstanceUid?: string;
  requestedSopInstanceUid?: string;
  priority?: number;
  status?: number;
  errorComment?: string;
  errorId?: number;
  moveDestination?: string;
  moveOriginatorAe?: string;
  moveOriginatorMessageId?: number;
  remaining?: number;
  completed?: number;
  failed?: number;
  warning?: number;
  eventTypeId?: number;
  actionTypeId?: number;
}

type Kind = 'UI' | 'US' | 'AE' | 'LO';
type Field = Exclude<keyof Command, 'commandField' | 'hasDataset'>;

/** Tag (element of group 0000) -> field, in tag order. */
const ELEMENTS: readonly [number, Field | 'commandField' | 'dataSetType', Kind][] = [
  [0x0002, 'affectedSopClassUid', 'UI'],
  [0x0003, 'requestedSopClassUid', 'UI'],
  [0x0100, 'commandField', 'US'],
  [0x0110, 'messageId', 'US'],
  [0x0120, 'messageIdBeingRespondedTo', 'US'],
  [0x0600, 'moveDestination', 'AE'],
  [0x0700, 'priority', 'US'],
  [0x0800, 'dataSetType', 'US'],
  [0x0900, 'status', 'US'],
  [0x0902, 'errorComment', 'LO'],
  [0x0903, 'errorId', 'US'],
  [0x1000, 'affectedSopInstanceUid', 'UI'],
  [0x1001, 'requestedSopInstanceUid', 'UI'],
  [0x1002, 'eventTypeId', 'US'],
  [0x1008, 'actionTypeId', 'US'],
  [0x1020, 'remaining', 'US'],
  [0x1021, 'completed', 'US'],
  [0x1022, 'failed', 'US'],
  [0x1023, 'warning', 'US'],
  [0x1030, 'moveOriginatorAe', 'AE'],
  [0x1031, 'moveOriginatorMessageId', 'US'],
];
const BY_TAG = new Map(ELEMENTS.map(([tag, field, kind]) => [tag, { field, kind }]));

export class CommandError extends Error {}

function valueBytes(kind: Kind, v: string | number): Buffer {
  if (kind === 'US') {
    const b = Buffer.allocUnsafe(2);
    b.writeUInt16LE((v as number) & 0xffff, 0);
    return b;
  }
  const s = kind === 'LO' ? (v as string).slice(0, 64) : kind === 'AE' ? (v as string).slice(0, 16) : (v as string);
  return Buffer.from(s.length % 2 ? s + (kind === 'UI' ? '\0' : ' ') : s, 'latin1');
}

/** Encodes a command set. */
export function encodeCommand(c: Command): Buffer {
  const parts: Buffer[] = [];
  let body = 0;
  for (const [tag, field, kind] of ELEMENTS) {
    const v = field === 'dataSetType' ? (c.hasDataset ? 0x0000 : NO_DATASET) : c[field];
    if (v === undefined) continue;
    const value = valueBytes(kind, v);
    const h = Buffer.allocUnsafe(8);
    h.writeUInt16LE(0x0000, 0);
    h.writeUInt16LE(tag, 2);
    h.writeUInt32LE(value.length, 4);
    parts.push(h, value);
    body += 8 + value.length;
  }
  const gl = Buffer.allocUnsafe(12);
  gl.writeUInt16LE(0x0000, 0);
  gl.writeUInt16LE(0x0000, 2);
  gl.writeUInt32LE(4, 4);
  gl.writeUInt32LE(body, 8);
  return Buffer.concat([gl, ...parts], 12 + body);
}

const trimValue = (b: Buffer): string => {
  let end = b.length;
  while (end > 0 && (b[end - 1] === 0 || b[end - 1] === 0x20)) end--;
  let start = 0;
  while (start < end && b[start] === 0x20) start++;
  return b.toString('latin1', start, end);
};

/**
 * Decodes a command set. Throws a CommandError on a set that is cut short, has
 * an element outside group 0000, or lacks CommandField; unknown elements of
 * group 0000 are skipped.
 */
export function decodeCommand(cmd: Buffer): Command {
  const r: Record<string, unknown> = {};
  let dataSetType = NO_DATASET;
  let commandField = -1;
  let o = 0;
  while (o + 8 <= cmd.length) {
    const group = cmd.readUInt16LE(o);
    const tag = cmd.readUInt16LE(o + 2);
    const len = cmd.readUInt32LE(o + 4);
    if (group !== 0x0000) throw new CommandError(`command set has an element outside group 0000 (${group.toString(16)})`);
    if (o + 8 + len > cmd.length) throw new CommandError('command set element runs past its end');
    const v = cmd.subarray(o + 8, o + 8 + len);
    const el = BY_TAG.get(tag);
    if (el) {
      if (el.kind === 'US') {
        if (len >= 2) {
          const n = v.readUInt16LE(0);
          if (el.field === 'commandField') commandField = n;
          else if (el.field === 'dataSetType') dataSetType = n;
          else r[el.field] = n;
        }
      } else {
        r[el.field] = trimValue(v);
      }
    }
    o += 8 + len;
  }
  if (o !== cmd.length) throw new CommandError('command set ends inside an element');
  if (commandField < 0) throw new CommandError('command set has no CommandField');
  return { ...(r as Partial<Command>), commandField, hasDataset: dataSetType !== NO_DATASET };
}

export type NaturalDataset = Record<string, unknown>;

const { DicomDict, DicomMessage, DicomMetaDictionary } = dcmjs.data;

let quiet = false;
function quietDcmjs(): void {
  if (quiet) return;
  quiet = true;
  dcmjs.log.setLevel('error');
  dcmjs.log.getLogger('validation.dcmjs').setLevel('silent');
}

/**
 * A naturalized data set as the bytes of a DIMSE data set in `transferSyntaxUid`
 * (implicit or explicit VR little endian). Small sets only: identifiers, MPPS.
 */
export function encodeDataset(dataset: NaturalDataset, transferSyntaxUid: string = TransferSyntax.implicitLe): Buffer {
  quietDcmjs();
  const dict = new DicomDict({ '00020010': { vr: 'UI', Value: [transferSyntaxUid] } });
  dict.dict = DicomMetaDictionary.denaturalizeDataset(dataset);
  const file = Buffer.from(dict.write({ allowInvalidVRLength: true }));
  return file.subarray(readFileMeta(file).end);
}

/** The bytes of a DIMSE data set, naturalized. Throws on a set dcmjs cannot read. */
export function decodeDataset(bytes: Buffer, transferSyntaxUid: string): NaturalDataset {
  quietDcmjs();
  const file = Buffer.concat([writeFileMeta({ transferSyntaxUid }), bytes]);
  const ab = file.buffer.slice(file.byteOffset, file.byteOffset + file.byteLength) as ArrayBuffer;
  const parsed = DicomMessage.readFile(ab, { ignoreErrors: false });
  return DicomMetaDictionary.naturalizeDataset(parsed.dict) as NaturalDataset;
}
