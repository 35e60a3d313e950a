/**
 * The data phase of an association, by hand (PS3.8 9.3.5, PS3.7 9.3 / 6.3.1):
 * P-DATA-TF PDVs split into command and dataset fragments, the C-STORE-RQ /
 * C-ECHO-RQ command set read directly (implicit VR LE, group 0000), and the
 * responses written as one small P-DATA-TF each. Used by the SCP instead of
 * dcmjs-dimse's per-PDU objects and dcmjs command (de)serialisation, which were
 * most of its CPU per instance apart from the disk and the database.
 */

/** PS3.7 9.3.1: CommandDataSetType 0x0101 means no dataset follows. */
export const NO_DATASET = 0x0101;

export const CommandField = {
  cStoreRq: 0x0001,
  cStoreRsp: 0x8001,
  cEchoRq: 0x0030,
  cEchoRsp: 0x8030,
} as const;

/** The elements of a request command set the SCP needs. */
export interface RequestCommand {
  commandField: number;
  messageId: number;
  affectedSopClassUid: string;
  affectedSopInstanceUid: string;
  hasDataset: boolean;
}

const trimUid = (b: Buffer): string => {
  let end = b.length;
  while (end > 0 && (b[end - 1] === 0 || b[end - 1] === 0x20)) end--;
  return b.toString('latin1', 0, end);
};

/**
 * Reads a command set (implicit VR little endian, group 0000 only). Throws on
 * a set that is cut short or lacks CommandField; unknown elements are skipped.
 */
export function decodeRequestCommand(cmd: Buffer): RequestCommand {
  const r: RequestCommand = { commandField: -1, messageId: 0, affectedSopClassUid: '', affectedSopInstanceUid: '', hasDataset: false };
  let dataSetType = NO_DATASET;
  let o = 0;
  while (o + 8 <= cmd.length) {
    const group = cmd.readUInt16LE(o);
    const tag = cmd.readUInt16LE(o + 2);
    const len = cmd.readUInt32LE(o + 4);
    if (group !== 0x0000) throw new Error(`command set has an element outside group 0000 (${group.toString(16)})`);
    if (o + 8 + len > cmd.length) throw new Error('command set element runs past its end');
    const v = cmd.subarray(o + 8, o + 8 + len);
    switch (tag) {
      case 0x0002:
        r.affectedSopClassUid = trimUid(v);
        break;
      case 0x0100:
        if (len >= 2) r.commandField = v.readUInt16LE(0);
        break;
      case 0x0110:
        if (len >= 2) r.messageId = v.readUInt16LE(0);
        break;
      case 0x0800:
        if (len >= 2) dataSetType = v.readUInt16LE(0);
        break;
      case 0x1000:
        r.affectedSopInstanceUid = trimUid(v);
        break;
      default:
        break;
    }
    o += 8 + len;
  }
  if (o !== cmd.length) throw new Error('command set ends inside an element');
  if (r.commandField < 0) throw new Error('command set has no CommandField');
  r.hasDataset = dataSetType !== NO_DATASET;
  return r;
}

function evenPadded(s: string, pad: string): Buffer {
  return Buffer.from(s.length % 2 ? s + pad : s, 'latin1');
}

/**
 * A response command set (PS3.7 9.3.1.2 / 9.3.5.2, and the generic form for a
 * refused operation), as one complete P-DATA-TF PDU on context `contextId`:
 * a single PDV, command, last fragment.
 */
export function encodeResponsePdu(o: {
  contextId: number;
  commandField: number;
  respondedTo: number;
  status: number;
  affectedSopClassUid?: string;
  affectedSopInstanceUid?: string;
  errorComment?: string;
}): Buffer {
  const els: [number, Buffer][] = [];
  if (o.affectedSopClassUid) els.push([0x0002, evenPadded(o.affectedSopClassUid, '\0')]);
  const us = (n: number): Buffer => {
    const b = Buffer.allocUnsafe(2);
    b.writeUInt16LE(n & 0xffff, 0);
    return b;
  };
  els.push([0x0100, us(o.commandField)]);
  els.push([0x0120, us(o.respondedTo)]);
  els.push([0x0800, us(NO_DATASET)]);
  els.push([0x0900, us(o.status)]);
  if (o.errorComment) els.push([0x0902, evenPadded(o.errorComment.slice(0, 64), ' ')]);
  if (o.affectedSopInstanceUid) els.push([0x1000, evenPadded(o.affectedSopInstanceUid, '\0')]);
  const body = els.reduce((n, [, v]) => n + 8 + v.length, 0);
  const cmdLength = 12 + body; // with the group length element
  const pdu = Buffer.allocUnsafe(6 + 6 + cmdLength);
  pdu[0] = 0x04;
  pdu[1] = 0;
  pdu.writeUInt32BE(6 + cmdLength, 2);
  pdu.writeUInt32BE(2 + cmdLength, 6); // PDV item length: context id + control header + fragment
  pdu[10] = o.contextId;
  pdu[11] = 0x03; // command, last fragment
  let p = 12;
  pdu.writeUInt16LE(0x0000, p);
  pdu.writeUInt16LE(0x0000, p + 2);
  pdu.writeUInt32LE(4, p + 4);
  pdu.writeUInt32LE(body, p + 8);
  p += 12;
  for (const [tag, v] of els) {
    pdu.writeUInt16LE(0x0000, p);
    pdu.writeUInt16LE(tag, p + 2);
    pdu.writeUInt32LE(v.length, p + 4);
    v.copy(pdu, p + 8);
    p += 8 + v.length;
  }
  return pdu;
}

/** PS3.8 9.3.8: A-ABORT from the service provider (source 2) with the given reason. */
export function encodeAbortPdu(reason = 0): Buffer {
  return Buffer.from([0x07, 0, 0, 0, 0, 4, 0, 0, 2, reason]);
}

/** What a P-DATA-TF PDU carried, handed out PDV by PDV. */
export interface PdvSink {
  /** One PDV: its context, whether it is a command fragment, whether it is the last fragment, and the bytes (a view). */
  pdv(contextId: number, command: boolean, last: boolean, data: Buffer): void;
}

/**
 * Walks the PDV items of one whole P-DATA-TF PDU (header included). Throws on
 * an item that runs past the PDU or is too short to hold its header.
 */
export function forEachPdv(pdu: Buffer, sink: PdvSink): void {
  const end = 6 + pdu.readUInt32BE(2);
  if (end > pdu.length) throw new Error('P-DATA-TF shorter than its length');
  let o = 6;
  while (o < end) {
    if (o + 6 > end) throw new Error('PDV item header cut short');
    const len = pdu.readUInt32BE(o);
    if (len < 2 || o + 4 + len > end) throw new Error('PDV item length out of bounds');
    const ctrl = pdu[o + 5]!;
    sink.pdv(pdu[o + 4]!, (ctrl & 0x01) !== 0, (ctrl & 0x02) !== 0, pdu.subarray(o + 6, o + 4 + len));
    o += 4 + len;
  }
}
