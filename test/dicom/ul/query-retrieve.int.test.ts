/**
 * The SCU's C-FIND / C-MOVE / C-CANCEL (ul/client.ts) against an SCP whose
 * answers the test writes (test/helpers/scripted-qr-scp.ts, on the same upper
 * layer in the acceptor role), over real sockets: every pending answer read,
 * the final status with its Error Comment and counts, a C-CANCEL that reaches
 * the SCP and ends the request with 0xFE00, and an abort after pending answers.
 */
import assert from 'node:assert/strict';
import { AssociationClosed, DimseClient, proposeContexts } from '../../../src/dicom/ul/client.js';
import { CommandField, Status, describeQueryRetrieveStatus } from '../../../src/dicom/ul/dimse.js';
import { SopClass } from '../../../src/dicom/uids.js';
import { ScriptedQrScp, type QrAnswer } from '../../helpers/scripted-qr-scp.js';

describe('upper layer: C-FIND / C-MOVE / C-CANCEL against a scripted SCP', function () {
  this.timeout(20_000);
  let scp: ScriptedQrScp;
  let client: DimseClient | undefined;

  async function start(answer: QrAnswer): Promise<DimseClient> {
    scp = new ScriptedQrScp(answer);
    await scp.start();
    client = await DimseClient.connect({
      host: '127.0.0.1',
      port: scp.port,
      callingAe: 'SECONDREAD',
      calledAe: 'PACS',
      contexts: proposeContexts([SopClass.studyRootFind, SopClass.studyRootMove]),
      timeoutMs: 5000,
    });
    return client;
  }
  afterEach(async () => {
    client?.abort();
    client = undefined;
    await scp.stop();
  });

  it('C-FIND: the identifier arrives with its level; every pending match comes back, then Success', async () => {
    const c = await start((rq, x) => {
      x.reply(Status.pending, { identifier: { StudyInstanceUID: '1.2.3.1', PatientID: rq.identifier?.PatientID } });
      x.reply(Status.pendingWarning, { identifier: { StudyInstanceUID: '1.2.3.2', PatientID: rq.identifier?.PatientID } });
      x.reply(Status.success);
    });
    const r = await c.find({ PatientID: 'PID-1', StudyInstanceUID: '' }, 'STUDY');
    assert.equal(r.status, Status.success);
    assert.deepEqual(
      r.matches.map((m) => [m.StudyInstanceUID, m.PatientID]),
      [
        ['1.2.3.1', 'PID-1'],
        ['1.2.3.2', 'PID-1'],
      ],
    );
    assert.equal(scp.requests.length, 1);
    assert.equal(scp.requests[0]!.command.commandField, CommandField.cFindRq);
    assert.equal(scp.requests[0]!.command.affectedSopClassUid, SopClass.studyRootFind);
    assert.equal(scp.requests[0]!.identifier?.QueryRetrieveLevel, 'STUDY');
    assert.equal(scp.requests[0]!.callingAe, 'SECONDREAD');
  });

  it('C-FIND ending in 0xA700 after a match: that status and the Error Comment, the match kept apart', async () => {
    const c = await start((_rq, x) => {
      x.reply(Status.pending, { identifier: { StudyInstanceUID: '1.2.3.1' } });
      x.reply(0xa700, { errorComment: 'index full' });
    });
    const r = await c.find({ PatientID: 'PID-1', StudyInstanceUID: '' }, 'STUDY');
    assert.equal(r.status, 0xa700);
    assert.equal(r.errorComment, 'index full');
    assert.equal(r.matches.length, 1);
    // the association stays usable for the next request
    scp.answer = (_rq, x) => x.reply(Status.success);
    assert.equal((await c.find({ PatientID: 'PID-2' }, 'STUDY')).status, Status.success);
  });

  it('C-CANCEL: an aborted signal sends C-CANCEL-RQ for the request; the SCP ends it with 0xFE00', async () => {
    const c = await start(async (_rq, x) => {
      x.reply(Status.pending, { identifier: { StudyInstanceUID: '1.2.3.1' } });
      await x.cancelled;
      x.reply(Status.cancel);
    });
    const ac = new AbortController();
    const found = c.find({ PatientID: 'PID-1', StudyInstanceUID: '' }, 'STUDY', SopClass.studyRootFind, { signal: ac.signal });
    setTimeout(() => ac.abort(), 50);
    const r = await found;
    assert.equal(r.status, Status.cancel);
    assert.equal(r.matches.length, 1);
    assert.deepEqual(scp.cancels, [scp.requests[0]!.command.messageId]);
  });

  it('C-MOVE: the destination arrives; pending counts are seen; the final 0xB000 comes back with its counts', async () => {
    const c = await start((_rq, x) => {
      x.reply(Status.pending, { counts: { remaining: 2, completed: 1, failed: 0, warning: 0 } });
      x.reply(Status.pending, { counts: { remaining: 1, completed: 1, failed: 1, warning: 0 } });
      x.reply(0xb000, { counts: { remaining: 0, completed: 2, failed: 1, warning: 0 }, errorComment: 'one instance unreadable' });
    });
    const seen: number[] = [];
    const r = await c.move({ StudyInstanceUID: '1.2.3' }, 'SECONDREAD', 'STUDY', SopClass.studyRootMove, { onPending: (n) => seen.push(n.remaining) });
    assert.deepEqual(r, { status: 0xb000, completed: 2, failed: 1, warning: 0, remaining: 0, errorComment: 'one instance unreadable' });
    assert.deepEqual(seen, [2, 1]);
    assert.equal(scp.requests[0]!.command.moveDestination, 'SECONDREAD');
    assert.equal(scp.requests[0]!.command.affectedSopClassUid, SopClass.studyRootMove);
  });

  it('an SCP that aborts after a pending answer: the request rejects with AssociationClosed (aborted)', async () => {
    const c = await start((_rq, x) => {
      x.reply(Status.pending, { identifier: { StudyInstanceUID: '1.2.3.1' } });
      setTimeout(() => x.abort(), 20);
    });
    await assert.rejects(c.find({ PatientID: 'PID-1' }, 'STUDY'), (e: Error) => e instanceof AssociationClosed && /aborted/.test(e.message));
  });

  it('describeQueryRetrieveStatus names each status class with its hex code', () => {
    assert.equal(describeQueryRetrieveStatus(0x0000), 'success (0x0000)');
    assert.match(describeQueryRetrieveStatus(0xff00), /^pending .*\(0xff00\)$/);
    assert.match(describeQueryRetrieveStatus(0xfe00), /^cancelled .*\(0xfe00\)$/);
    assert.match(describeQueryRetrieveStatus(0xa701), /out of resources, unable to calculate the number of matches \(0xa701\)/);
    assert.match(describeQueryRetrieveStatus(0xa7ff), /^refused: out of resources \(0xa7ff\)$/);
    assert.match(describeQueryRetrieveStatus(0xa801), /move destination unknown/);
    assert.match(describeQueryRetrieveStatus(0xc123), /^unable to process \(0xc123\)$/);
    assert.match(describeQueryRetrieveStatus(0xb000), /one or more failures/);
  });
});
