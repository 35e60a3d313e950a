/**
 * The upper layer end to end: our SCU (ul/client.ts) against our SCP
 * (scp.ts), both on the same association state machine, over real sockets;
 * and the state machine's own answers to a raw peer (ARTIM, out-of-state PDUs).
 */
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import winston from 'winston';
import { defaultConfig } from '../../../src/config/schema.js';
import { MPPS_SOP_CLASS_UID, type MppsPort, type MppsRequest, type MppsResult } from '../../../src/dicom/mpps.port.js';
import { DicomScp } from '../../../src/dicom/scp.js';
import { Spool } from '../../../src/dicom/spool.js';
import { AssociationRejected, DimseClient, proposeContexts } from '../../../src/dicom/ul/client.js';
import { CommandField, Status, encodeCommand } from '../../../src/dicom/ul/dimse.js';
import { AbortReason, PduType, RejectReason, encodePdu } from '../../../src/dicom/ul/pdu.js';
import { SopClass } from '../../../src/dicom/uids.js';
import { makeTempDir } from '../../helpers/tmp.js';

const silent = winston.createLogger({ silent: true });

/** Records what the SCP hands over; answers what the test tells it to. */
class RecordingMppsPort implements MppsPort {
  readonly calls: { op: 'create' | 'set'; request: MppsRequest }[] = [];
  answer: MppsResult | Error = { status: 0 };
  async nCreate(request: MppsRequest): Promise<MppsResult> {
    return this.record('create', request);
  }
  async nSet(request: MppsRequest): Promise<MppsResult> {
    return this.record('set', request);
  }
  private async record(op: 'create' | 'set', request: MppsRequest): Promise<MppsResult> {
    this.calls.push({ op, request });
    // as a real port would: the answer comes after an asynchronous durable write
    await new Promise((r) => setImmediate(r));
    if (this.answer instanceof Error) throw this.answer;
    return this.answer;
  }
}

describe('upper layer: our SCU against our SCP', function () {
  this.timeout(20_000);
  let tmp: ReturnType<typeof makeTempDir>;
  let scp: DicomScp;
  let port: RecordingMppsPort;

  async function start(withMpps: boolean, idleTimeoutSeconds = 60): Promise<void> {
    tmp = makeTempDir('gw-ul-');
    const spool = new Spool(path.join(tmp.dir, 'spool'), 0);
    spool.open();
    port = new RecordingMppsPort();
    const config = { ...defaultConfig().dicom, host: '127.0.0.1', port: 0, aeTitle: 'SECONDREAD', allowedCallers: [], idleTimeoutSeconds };
    scp = new DicomScp({
      config,
      sink: { storeInstance: () => Promise.reject(new Error('not expected')) },
      spool,
      logger: silent,
      ...(withMpps ? { mpps: port } : {}),
    });
    await scp.start();
  }
  afterEach(async () => {
    await scp.stop(1000);
    tmp.cleanup();
  });

  const connect = (calledAe = 'SECONDREAD'): Promise<DimseClient> =>
    DimseClient.connect({
      host: '127.0.0.1',
      port: scp.port,
      callingAe: 'MODALITY',
      calledAe,
      contexts: proposeContexts([SopClass.verification, MPPS_SOP_CLASS_UID]),
      timeoutMs: 5000,
    });

  const inProgress = {
    PerformedProcedureStepStatus: 'IN PROGRESS',
    PerformedStationAETitle: 'CT01',
    PerformedProcedureStepStartDate: '20261202',
    ScheduledStepAttributesSequence: [{ StudyInstanceUID: '1.2.826.0.1.3680043.9.1', AccessionNumber: 'ACC-1' }],
  };

  it('N-CREATE and N-SET reach the MPPS port with their data sets; its status is the answer', async () => {
    await start(true);
    const client = await connect();
    assert.ok(client.contextFor(MPPS_SOP_CLASS_UID), 'MPPS context accepted when a port is given');
    const created = await client.nCreate('1.2.826.0.1.3680043.9.2', inProgress);
    assert.equal(created.status, 0);
    port.answer = { status: 0x0112 };
    const set = await client.nSet('1.2.826.0.1.3680043.9.2', { PerformedProcedureStepStatus: 'COMPLETED' });
    assert.equal(set.status, 0x0112, "the port's status is passed through");
    assert.equal(await client.echo(), 0, 'the association goes on');
    await client.release();
    assert.deepEqual(
      port.calls.map((c) => [c.op, c.request.sopInstanceUid, c.request.callingAeTitle, c.request.dataset.PerformedProcedureStepStatus]),
      [
        ['create', '1.2.826.0.1.3680043.9.2', 'MODALITY', 'IN PROGRESS'],
        ['set', '1.2.826.0.1.3680043.9.2', 'MODALITY', 'COMPLETED'],
      ],
    );
    const seq = port.calls[0]!.request.dataset.ScheduledStepAttributesSequence as { AccessionNumber: string }[];
    assert.equal(seq[0]!.AccessionNumber, 'ACC-1', 'sequences arrive naturalized');
  });

  it('a port that throws is answered 0x0110 (processing failure), and the SCP keeps serving', async () => {
    await start(true);
    const client = await connect();
    port.answer = new Error('database is down');
    assert.equal((await client.nCreate('1.2.3.4', inProgress)).status, Status.processingFailure);
    port.answer = { status: 0 };
    assert.equal((await client.nCreate('1.2.3.5', inProgress)).status, 0);
    await client.release();
    const again = await connect();
    assert.equal(await again.echo(), 0);
    await again.release();
  });

  it('without a port the MPPS context is refused (abstract syntax not supported); Verification still works', async () => {
    await start(false);
    const client = await connect();
    assert.equal(client.contextFor(MPPS_SOP_CLASS_UID), undefined);
    await assert.rejects(client.nCreate('1.2.3.4', inProgress), /does not accept/);
    assert.equal(await client.echo(), 0);
    await client.release();
    assert.equal(port.calls.length, 0);
  });

  it('a wrong called AE: A-ASSOCIATE-RJ reaches the SCU as AssociationRejected (called AE not recognized)', async () => {
    await start(false);
    await assert.rejects(connect('SOMEONE'), (e: unknown) => e instanceof AssociationRejected && e.rejection.reason === RejectReason.calledAeNotRecognized);
  });

  describe('state machine against a raw peer', () => {
    async function raw(bytes: Buffer[], waitMs = 4000): Promise<{ pdus: Buffer[]; closed: boolean }> {
      const sock = net.connect(scp.port, '127.0.0.1');
      sock.on('error', () => undefined);
      let buf = Buffer.alloc(0);
      const pdus: Buffer[] = [];
      sock.on('data', (d: Buffer) => {
        buf = Buffer.concat([buf, d]);
        while (buf.length >= 6 && buf.length >= 6 + buf.readUInt32BE(2)) {
          const n = 6 + buf.readUInt32BE(2);
          pdus.push(buf.subarray(0, n));
          buf = buf.subarray(n);
        }
      });
      await new Promise<void>((r) => sock.once('connect', () => r()));
      for (const b of bytes) sock.write(b);
      const closed = await new Promise<boolean>((resolve) => {
        const t = setTimeout(() => resolve(false), waitMs);
        sock.once('close', () => {
          clearTimeout(t);
          resolve(true);
        });
      });
      sock.destroy();
      return { pdus, closed };
    }

    it('Sta2: an A-RELEASE-RQ before any association is answered A-ABORT (unexpected PDU) and the connection ends', async () => {
      await start(false);
      const r = await raw([encodePdu({ type: PduType.releaseRq })]);
      assert.equal(r.pdus.length, 1);
      assert.equal(r.pdus[0]![0], PduType.abort);
      assert.equal(r.pdus[0]![9], AbortReason.unexpectedPdu);
      assert.ok(r.closed);
    });

    it('Sta2: ARTIM closes a connection that never sends its A-ASSOCIATE-RQ', async () => {
      await start(false, 0.5);
      const t0 = Date.now();
      const r = await raw([], 5000);
      assert.ok(r.closed, 'closed by the SCP');
      assert.equal(r.pdus.length, 0);
      assert.ok(Date.now() - t0 >= 400, 'not before the timer');
    });

    it('Sta6: a peer that stalls between two fragments of a C-STORE data set is closed by the idle timer, nothing left behind', async () => {
      await start(false, 0.6);
      const rq = encodePdu({
        type: PduType.associateRq,
        protocolVersion: 1,
        calledAe: 'SECONDREAD',
        callingAe: 'RAW',
        applicationContext: '1.2.840.10008.3.1.1.1',
        contexts: [{ id: 1, abstractSyntax: SopClass.ctImage, transferSyntaxes: ['1.2.840.10008.1.2.1'] }],
        user: { maxPduLength: 16384, implementationClassUid: '1.2.3' },
      });
      const cmd = encodeCommand({
        commandField: CommandField.cStoreRq,
        messageId: 1,
        affectedSopClassUid: SopClass.ctImage,
        affectedSopInstanceUid: '1.2.3.4',
        priority: 0,
        hasDataset: true,
      });
      const t0 = Date.now();
      const r = await raw(
        [
          rq,
          encodePdu({ type: PduType.pData, pdvs: [{ contextId: 1, command: true, last: true, data: cmd }] }),
          encodePdu({ type: PduType.pData, pdvs: [{ contextId: 1, command: false, last: false, data: Buffer.alloc(512) }] }),
        ],
        6000,
      );
      assert.ok(r.closed, 'closed by the SCP');
      assert.ok(Date.now() - t0 >= 500, 'not before the idle timeout');
      assert.deepEqual(
        r.pdus.map((p) => p[0]),
        [PduType.associateAc],
      );
      await new Promise((res) => setTimeout(res, 50));
      assert.deepEqual(readdirSync(path.join(tmp.dir, 'spool', 'tmp')), [], 'the half-received file is gone');
    });

    it('Sta6: a peer A-ABORT ends the association quietly (nothing sent back)', async () => {
      await start(false);
      const rq = encodePdu({
        type: PduType.associateRq,
        protocolVersion: 1,
        calledAe: 'SECONDREAD',
        callingAe: 'RAW',
        applicationContext: '1.2.840.10008.3.1.1.1',
        contexts: [{ id: 1, abstractSyntax: SopClass.verification, transferSyntaxes: ['1.2.840.10008.1.2'] }],
        user: { maxPduLength: 16384, implementationClassUid: '1.2.3' },
      });
      const r = await raw([rq, encodePdu({ type: PduType.abort, source: 0, reason: 0 })]);
      assert.deepEqual(
        r.pdus.map((p) => p[0]),
        [PduType.associateAc],
      );
      assert.ok(r.closed);
    });
  });
});
