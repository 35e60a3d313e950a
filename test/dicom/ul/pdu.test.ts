import assert from 'node:assert/strict';
import {
  AbortReason,
  PduError,
  PduFramer,
  PduType,
  decodePdu,
  encodePdu,
  forEachPdv,
  pDataHeader,
  type AssociateAc,
  type AssociateRq,
  type Pdu,
} from '../../../src/dicom/ul/pdu.js';

const CT = '1.2.840.10008.5.1.4.1.1.2';
const VERIFICATION = '1.2.840.10008.1.1';

const rq: AssociateRq = {
  type: PduType.associateRq,
  protocolVersion: 1,
  calledAe: 'SECONDREAD',
  callingAe: 'MODALITY_01',
  applicationContext: '1.2.840.10008.3.1.1.1',
  contexts: [
    { id: 1, abstractSyntax: VERIFICATION, transferSyntaxes: ['1.2.840.10008.1.2'] },
    { id: 3, abstractSyntax: CT, transferSyntaxes: ['1.2.840.10008.1.2.1', '1.2.840.10008.1.2', '1.2.840.10008.1.2.4.50'] },
  ],
  user: {
    maxPduLength: 262144,
    implementationClassUid: '1.2.3.4.5',
    implementationVersionName: 'TEST_1',
    asyncOps: { invoked: 1, performed: 1 },
    roles: [{ sopClassUid: CT, scu: false, scp: true }],
    other: [{ type: 0x58, value: Buffer.from([1, 0, 0, 4, 0x75, 0x73, 0x65, 0x72, 0, 0]) }],
  },
};

const ac: AssociateAc = {
  type: PduType.associateAc,
  protocolVersion: 1,
  calledAe: 'SECONDREAD',
  callingAe: 'MODALITY_01',
  applicationContext: '1.2.840.10008.3.1.1.1',
  contexts: [
    { id: 1, result: 0, transferSyntax: '1.2.840.10008.1.2' },
    { id: 3, result: 4, transferSyntax: '' },
  ],
  user: { maxPduLength: 0, implementationClassUid: '2.25.1', implementationVersionName: 'X' },
};

const samples: Pdu[] = [
  rq,
  ac,
  { type: PduType.associateRj, result: 1, source: 1, reason: 7 },
  {
    type: PduType.pData,
    pdvs: [
      { contextId: 1, command: true, last: false, data: Buffer.from('command part one') },
      { contextId: 1, command: true, last: true, data: Buffer.from('two') },
      { contextId: 3, command: false, last: true, data: Buffer.alloc(0) },
    ],
  },
  { type: PduType.releaseRq },
  { type: PduType.releaseRp },
  { type: PduType.abort, source: 2, reason: 6 },
];

const name = (t: number): string => Object.entries(PduType).find(([, v]) => v === t)![0];

describe('upper layer PDUs (ul/pdu): symmetric encode / decode', () => {
  for (const p of samples) {
    it(`${name(p.type)} round-trips, and its bytes re-encode identically`, () => {
      const bytes = encodePdu(p);
      assert.equal(bytes[0], p.type);
      assert.equal(bytes.readUInt32BE(2), bytes.length - 6, 'PDU length field');
      const back = decodePdu(bytes);
      assert.deepEqual(back, p);
      assert.deepEqual(encodePdu(back), bytes);
    });
  }

  it('A-ASSOCIATE-RQ is laid out as PS3.8 9.3.2 says (fixed fields, item types in order)', () => {
    const b = encodePdu(rq);
    assert.equal(b.readUInt16BE(6), 1, 'protocol version');
    assert.equal(b.toString('latin1', 10, 26), 'SECONDREAD      ', 'called AE padded to 16');
    assert.equal(b.toString('latin1', 26, 42), 'MODALITY_01     ');
    assert.equal(b[74], 0x10, 'application context item first');
    // user information is the last item, with the maximum length sub-item first
    const user = b.lastIndexOf(Buffer.from([0x50, 0]));
    assert.ok(user > 74);
    assert.equal(b[user + 4], 0x51);
    assert.equal(b.readUInt32BE(user + 8), 262144);
  });

  it('AE titles are read without their padding; unknown items are skipped (PS3.8 9.3.1)', () => {
    const b = encodePdu(rq);
    const withUnknown = Buffer.concat([b, Buffer.from([0x77, 0, 0, 2, 9, 9])]);
    withUnknown.writeUInt32BE(withUnknown.length - 6, 2);
    const back = decodePdu(withUnknown) as AssociateRq;
    assert.equal(back.callingAe, 'MODALITY_01');
    assert.equal(back.contexts.length, 2);
  });

  it('a blank implementation version name (padding only) reads as none, so the PDU round-trips (found by the fuzzer)', () => {
    const named = encodePdu({ ...rq, user: { maxPduLength: 16384, implementationClassUid: '1.2.3', implementationVersionName: 'X' } });
    // the name's one byte becomes a NUL: the value of sub-item 0x55 is the PDU's last byte
    named[named.length - 1] = 0;
    const back = decodePdu(named) as AssociateRq;
    assert.equal(back.user.implementationVersionName, undefined);
    assert.deepEqual(decodePdu(encodePdu(back)), back);
  });

  it('refuses what does not read as its type, with the A-ABORT reason to answer', () => {
    const cases: [Buffer, number][] = [
      [Buffer.from([0x09, 0, 0, 0, 0, 0]), AbortReason.unrecognizedPdu],
      [Buffer.from([0x05, 0, 0, 0, 0, 2, 0, 0]), AbortReason.invalidPduParameterValue],
      [Buffer.from([0x07, 0, 0, 0, 0, 3, 0, 0, 0]), AbortReason.invalidPduParameterValue],
      [encodePdu(rq).subarray(0, 60), AbortReason.invalidPduParameterValue],
    ];
    for (const [bytes, reason] of cases) {
      assert.throws(
        () => decodePdu(bytes),
        (e: unknown) => e instanceof PduError && e.abortReason === reason,
      );
    }
    // an item whose length runs past the PDU
    const b = encodePdu(rq);
    b.writeUInt16BE(0xfff0, 76);
    assert.throws(() => decodePdu(b), PduError);
  });

  it('A-ASSOCIATE-RQ without a user information item, or without an application context, is refused', () => {
    const b = encodePdu(rq);
    const userAt = b.lastIndexOf(Buffer.from([0x50, 0]));
    const cut = Buffer.from(b.subarray(0, userAt));
    cut.writeUInt32BE(cut.length - 6, 2);
    assert.throws(() => decodePdu(cut), /user information/);
  });

  it('P-DATA-TF: pDataHeader + the data as is equals the encoded PDU; forEachPdv hands out views', () => {
    const data = Buffer.from('0123456789');
    const viaHeader = Buffer.concat([pDataHeader(5, false, true, data.length), data]);
    assert.deepEqual(viaHeader, encodePdu({ type: PduType.pData, pdvs: [{ contextId: 5, command: false, last: true, data }] }));
    const seen: Buffer[] = [];
    forEachPdv(viaHeader.subarray(6), (ctx, cmd, last, d) => {
      assert.deepEqual([ctx, cmd, last], [5, false, true]);
      seen.push(d);
    });
    assert.equal(seen[0]!.buffer, viaHeader.buffer, 'a view, not a copy');
    const broken = Buffer.from(viaHeader);
    broken.writeUInt32BE(1000, 6);
    assert.throws(() => forEachPdv(broken.subarray(6), () => undefined), PduError);
    assert.throws(() => forEachPdv(Buffer.alloc(0), () => undefined), PduError);
  });
});

describe('PduFramer', () => {
  const pdus = samples.map(encodePdu);
  const stream = Buffer.concat(pdus);

  it('gives the same PDUs however the bytes are cut (1 byte, 7 bytes, all at once)', () => {
    for (const size of [1, 7, 64, stream.length]) {
      const got: Buffer[] = [];
      const f = new PduFramer((type, body) => got.push(Buffer.concat([Buffer.from([type, 0, 0, 0, 0, 0]), body])));
      for (let o = 0; o < stream.length; o += size) f.push(stream.subarray(o, o + size));
      assert.equal(got.length, pdus.length, `chunk size ${size}`);
      got.forEach((g, i) => assert.deepEqual(g.subarray(6), pdus[i]!.subarray(6)));
      assert.equal(f.buffered, 0);
    }
  });

  it('a PDU inside one chunk is a view of it (no copy)', () => {
    const views: Buffer[] = [];
    const f = new PduFramer((_t, body) => views.push(body));
    f.push(stream);
    for (const v of views) assert.equal(v.buffer, stream.buffer);
  });

  it('refuses a PDU declaring more than the limit before its bytes arrive, and reads nothing after', () => {
    let tooLarge = -1;
    let delivered = 0;
    const f = new PduFramer(
      () => delivered++,
      1000,
      (n) => (tooLarge = n),
    );
    const head = Buffer.from([0x04, 0, 0, 0, 0x10, 0]);
    f.push(head);
    assert.equal(tooLarge, 0x1000);
    f.push(encodePdu({ type: PduType.releaseRq }));
    assert.equal(delivered, 0);
  });
});
