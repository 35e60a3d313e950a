import assert from 'node:assert/strict';
import {
  CommandError,
  CommandField,
  NO_DATASET,
  Priority,
  decodeCommand,
  decodeDataset,
  encodeCommand,
  encodeDataset,
  type Command,
} from '../../../src/dicom/ul/dimse.js';
import { SopClass, TransferSyntax } from '../../../src/dicom/uids.js';

const CT = SopClass.ctImage;
const MPPS = SopClass.mpps;

/** One request and one response of every command the codec serves (PS3.7 9.3 / 10.3). */
const commands: [string, Command][] = [
  ['C-ECHO-RQ', { commandField: CommandField.cEchoRq, messageId: 1, affectedSopClassUid: SopClass.verification, hasDataset: false }],
  [
    'C-ECHO-RSP',
    { commandField: CommandField.cEchoRsp, messageIdBeingRespondedTo: 1, affectedSopClassUid: SopClass.verification, status: 0, hasDataset: false },
  ],
  [
    'C-STORE-RQ',
    {
      commandField: CommandField.cStoreRq,
      messageId: 65535,
      affectedSopClassUid: CT,
      affectedSopInstanceUid: '1.2.3.4.5',
      priority: Priority.medium,
      hasDataset: true,
    },
  ],
  [
    'C-STORE-RSP',
    {
      commandField: CommandField.cStoreRsp,
      messageIdBeingRespondedTo: 65535,
      affectedSopClassUid: CT,
      affectedSopInstanceUid: '1.2.3.4.5',
      status: 0xa700,
      errorComment: 'out of room',
      hasDataset: false,
    },
  ],
  ['C-FIND-RQ', { commandField: CommandField.cFindRq, messageId: 7, affectedSopClassUid: SopClass.studyRootFind, priority: Priority.low, hasDataset: true }],
  [
    'C-FIND-RSP pending',
    { commandField: CommandField.cFindRsp, messageIdBeingRespondedTo: 7, affectedSopClassUid: SopClass.studyRootFind, status: 0xff00, hasDataset: true },
  ],
  [
    'C-MOVE-RQ',
    {
      commandField: CommandField.cMoveRq,
      messageId: 8,
      affectedSopClassUid: SopClass.studyRootMove,
      priority: Priority.high,
      moveDestination: 'SECONDREAD',
      hasDataset: true,
    },
  ],
  [
    'C-MOVE-RSP',
    {
      commandField: CommandField.cMoveRsp,
      messageIdBeingRespondedTo: 8,
      affectedSopClassUid: SopClass.studyRootMove,
      status: 0,
      remaining: 0,
      completed: 12,
      failed: 1,
      warning: 2,
      hasDataset: false,
    },
  ],
  ['C-GET-RQ', { commandField: CommandField.cGetRq, messageId: 9, affectedSopClassUid: SopClass.studyRootGet, priority: Priority.medium, hasDataset: true }],
  [
    'C-GET-RSP pending',
    {
      commandField: CommandField.cGetRsp,
      messageIdBeingRespondedTo: 9,
      affectedSopClassUid: SopClass.studyRootGet,
      status: 0xff00,
      remaining: 3,
      completed: 1,
      failed: 0,
      warning: 0,
      hasDataset: false,
    },
  ],
  [
    'C-STORE-RQ of a C-MOVE sub-operation',
    {
      commandField: CommandField.cStoreRq,
      messageId: 10,
      affectedSopClassUid: CT,
      affectedSopInstanceUid: '1.2.3',
      priority: 0,
      moveOriginatorAe: 'ORIGIN',
      moveOriginatorMessageId: 8,
      hasDataset: true,
    },
  ],
  ['C-CANCEL-RQ', { commandField: CommandField.cCancelRq, messageIdBeingRespondedTo: 7, hasDataset: false }],
  [
    'N-CREATE-RQ',
    { commandField: CommandField.nCreateRq, messageId: 11, affectedSopClassUid: MPPS, affectedSopInstanceUid: '1.2.826.0.1.3680043.2.1', hasDataset: true },
  ],
  [
    'N-CREATE-RSP',
    {
      commandField: CommandField.nCreateRsp,
      messageIdBeingRespondedTo: 11,
      affectedSopClassUid: MPPS,
      affectedSopInstanceUid: '1.2.826.0.1.3680043.2.1',
      status: 0x0111,
      hasDataset: false,
    },
  ],
  [
    'N-SET-RQ',
    { commandField: CommandField.nSetRq, messageId: 12, requestedSopClassUid: MPPS, requestedSopInstanceUid: '1.2.826.0.1.3680043.2.1', hasDataset: true },
  ],
  [
    'N-SET-RSP',
    {
      commandField: CommandField.nSetRsp,
      messageIdBeingRespondedTo: 12,
      affectedSopClassUid: MPPS,
      affectedSopInstanceUid: '1.2.826.0.1.3680043.2.1',
      status: 0,
      errorId: 3,
      hasDataset: true,
    },
  ],
];

function elements(cmd: Buffer): [number, Buffer][] {
  const out: [number, Buffer][] = [];
  for (let o = 0; o + 8 <= cmd.length;) {
    assert.equal(cmd.readUInt16LE(o), 0x0000, 'group 0000 only');
    const len = cmd.readUInt32LE(o + 4);
    out.push([cmd.readUInt16LE(o + 2), cmd.subarray(o + 8, o + 8 + len)]);
    o += 8 + len;
  }
  return out;
}

describe('DIMSE command codec (ul/dimse)', () => {
  for (const [label, c] of commands) {
    it(`${label} round-trips; group length first, tags ascending, values even-length`, () => {
      const bytes = encodeCommand(c);
      assert.deepEqual(decodeCommand(bytes), c);
      const els = elements(bytes);
      assert.equal(els[0]![0], 0x0000);
      assert.equal(els[0]![1].readUInt32LE(0), bytes.length - 12, 'group length counts what follows it');
      const tags = els.map(([t]) => t);
      assert.deepEqual(
        tags,
        [...tags].sort((a, b) => a - b),
      );
      for (const [, v] of els) assert.equal(v.length % 2, 0);
      const dataSetType = els.find(([t]) => t === 0x0800)![1].readUInt16LE(0);
      assert.equal(dataSetType === NO_DATASET, !c.hasDataset);
    });
  }

  it('pads UIDs with NUL and text with a space, and reads them back trimmed', () => {
    const bytes = encodeCommand({
      commandField: CommandField.cStoreRsp,
      messageIdBeingRespondedTo: 1,
      affectedSopInstanceUid: '1.2.3',
      errorComment: 'odd',
      status: 0xc000,
      hasDataset: false,
    });
    const els = new Map(elements(bytes));
    assert.equal(els.get(0x1000)!.toString('latin1'), '1.2.3\0');
    assert.equal(els.get(0x0902)!.toString('latin1'), 'odd ');
  });

  it('refuses a command set that is cut short, lacks CommandField, or leaves group 0000', () => {
    const good = encodeCommand(commands[2]![1]);
    assert.throws(() => decodeCommand(good.subarray(0, good.length - 3)), CommandError);
    const noField = Buffer.from([0, 0, 0x10, 0x01, 2, 0, 0, 0, 1, 0]);
    assert.throws(() => decodeCommand(noField), /no CommandField/);
    const foreign = Buffer.concat([good, Buffer.from([0x08, 0x00, 0x18, 0x00, 0, 0, 0, 0])]);
    assert.throws(() => decodeCommand(foreign), /outside group 0000/);
  });

  it('skips group 0000 elements it does not know', () => {
    const extra = Buffer.concat([encodeCommand(commands[0]![1]), Buffer.from([0, 0, 0x00, 0x56, 2, 0, 0, 0, 1, 0])]);
    assert.deepEqual(decodeCommand(extra), commands[0]![1]);
  });
});

describe('DIMSE data sets (identifiers, MPPS)', () => {
  const identifier = {
    PatientID: 'PAT-1',
    StudyInstanceUID: '1.2.3.4',
    ModalitiesInStudy: 'CT',
    ScheduledStepAttributesSequence: [{ StudyInstanceUID: '1.2.3.4', AccessionNumber: 'ACC1' }],
  };
  for (const ts of [TransferSyntax.implicitLe, TransferSyntax.explicitLe]) {
    it(`round-trips a naturalized data set with a sequence in ${ts}`, () => {
      const bytes = encodeDataset(identifier, ts);
      assert.ok(bytes.length > 0);
      assert.notEqual(bytes.toString('latin1', 128, 132), 'DICM', 'no Part 10 header in a DIMSE data set');
      const back = decodeDataset(bytes, ts);
      assert.equal(back.PatientID, 'PAT-1');
      assert.equal(back.StudyInstanceUID, '1.2.3.4');
      assert.equal((back.ScheduledStepAttributesSequence as { AccessionNumber: string }[])[0]!.AccessionNumber, 'ACC1');
    });
  }
});
