/**
 * DimsePacsClient (priors' C-FIND / C-MOVE on the gateway's upper layer) against a PACS whose answers the
 * test writes (test/helpers/scripted-qr-scp.ts): the keys it asks with, what it makes of the answers, and
 * the clear error for each way a PACS ends a query or a retrieve other than Success. Real sockets.
 */
import { expect } from 'chai';
import winston from 'winston';
import { Status } from '../../src/dicom/ul/dimse.js';
import { SopClass } from '../../src/dicom/uids.js';
import { DimsePacsClient } from '../../src/priors/pacs.client.js';
import { ScriptedQrScp, type QrAnswer } from '../helpers/scripted-qr-scp.js';

const silent = winston.createLogger({ silent: true });
const query = { patientId: 'PRI-1', issuerOfPatientId: 'HOSP', fromDate: '20200101' };

describe('priors: DimsePacsClient against a scripted PACS', function () {
  this.timeout(20_000);
  let scp: ScriptedQrScp | undefined;

  async function pacs(answer: QrAnswer, timeoutSeconds = 5): Promise<DimsePacsClient> {
    scp = new ScriptedQrScp(answer);
    await scp.start();
    return new DimsePacsClient(
      { type: 'dimse', host: '127.0.0.1', port: scp.port, aeTitle: 'PACS', moveDestination: 'SECONDREAD', timeoutSeconds },
      { callingAeTitle: 'SECONDREAD', logger: silent },
    );
  }
  afterEach(async () => {
    await scp?.stop();
    scp = undefined;
  });

  it('C-FIND: asks at study level by patient id, issuer and date range; answers become FoundStudy', async () => {
    const client = await pacs((_rq, x) => {
      x.reply(Status.pending, {
        identifier: {
          StudyInstanceUID: '1.2.3.1',
          PatientID: 'PRI-1',
          IssuerOfPatientID: 'HOSP',
          StudyDate: '20240102',
          ModalitiesInStudy: ['CT', 'SR'],
          AccessionNumber: 'A1',
          NumberOfStudyRelatedInstances: '12',
        },
      });
      x.reply(Status.success);
    });
    const found = await client.findStudies(query);
    expect(found).to.have.length(1);
    expect(found[0]).to.include({ studyInstanceUid: '1.2.3.1', patientId: 'PRI-1', issuerOfPatientId: 'HOSP', studyDate: '20240102', numberOfInstances: 12 });
    expect(found[0]!.modalities).to.deep.equal(['CT', 'SR']);
    const rq = scp!.requests[0]!;
    expect(rq.command.affectedSopClassUid).to.equal(SopClass.studyRootFind);
    expect(rq.identifier).to.include({ QueryRetrieveLevel: 'STUDY', PatientID: 'PRI-1', IssuerOfPatientID: 'HOSP' });
    // a DA range of odd length goes padded to even with a space (PS3.5 6.2)
    expect(String(rq.identifier!.StudyDate).trim()).to.equal('20200101-');
    expect(rq.identifier).to.have.property('ModalitiesInStudy');
  });

  it('C-FIND: a study answered without ModalitiesInStudy gets its modalities from a SERIES query on the same association', async () => {
    const client = await pacs((rq, x) => {
      if (rq.identifier?.QueryRetrieveLevel === 'STUDY') x.reply(Status.pending, { identifier: { StudyInstanceUID: '1.2.3.1', PatientID: 'PRI-1' } });
      else {
        x.reply(Status.pending, { identifier: { StudyInstanceUID: '1.2.3.1', SeriesInstanceUID: '1.2.3.1.1', Modality: 'CT', BodyPartExamined: 'CHEST' } });
        x.reply(Status.pending, { identifier: { StudyInstanceUID: '1.2.3.1', SeriesInstanceUID: '1.2.3.1.2', Modality: 'SR' } });
      }
      x.reply(Status.success);
    });
    const found = await client.findStudies(query);
    expect(found[0]!.modalities).to.deep.equal(['CT', 'SR']);
    expect(found[0]!.bodyParts).to.deep.equal(['CHEST']);
    expect(scp!.requests.map((r) => r.identifier?.QueryRetrieveLevel)).to.deep.equal(['STUDY', 'SERIES']);
    expect(scp!.requests[1]!.identifier).to.include({ StudyInstanceUID: '1.2.3.1' });
  });

  it('C-FIND ending 0xA700 after a match: fails as a whole, saying out of resources, the code, the comment, and that the list is incomplete', async () => {
    const client = await pacs((_rq, x) => {
      x.reply(Status.pending, { identifier: { StudyInstanceUID: '1.2.3.1', PatientID: 'PRI-1' } });
      x.reply(0xa700, { errorComment: 'database busy' });
    });
    const err = await client.findStudies(query).then(
      () => undefined,
      (e: Error) => e,
    );
    expect(err?.message).to.match(
      /^PACS PACS@127.0.0.1:[0-9]+ ended the C-FIND with refused: out of resources \(0xa700\) after 1 matches \(not used: the list is incomplete\): database busy/,
    );
    expect(err?.message).to.include('PACS PACS@127.0.0.1');
  });

  it('C-FIND ending 0xC001 (unable to process): fails with that status', async () => {
    const client = await pacs((_rq, x) => x.reply(0xc001));
    await expectReject(client.findStudies(query), /unable to process \(0xc001\)/);
  });

  it('C-FIND still pending at the timeout: C-CANCEL is sent, the PACS ends it 0xFE00, and it fails as cancelled', async () => {
    const client = await pacs(async (_rq, x) => {
      x.reply(Status.pending, { identifier: { StudyInstanceUID: '1.2.3.1' } });
      await x.cancelled;
      x.reply(Status.cancel);
    }, 0.5);
    await expectReject(client.findStudies(query), /cancelled .*\(0xfe00\) after 1 matches/);
    expect(scp!.cancels).to.have.length(1);
  });

  it('C-FIND cut off by an A-ABORT after a pending answer: fails, saying it did not finish and why', async () => {
    const client = await pacs((_rq, x) => {
      x.reply(Status.pending, { identifier: { StudyInstanceUID: '1.2.3.1' } });
      setTimeout(() => x.abort(), 20);
    });
    await expectReject(client.findStudies(query), /C-FIND with PACS .* did not finish: association aborted/);
  });

  it('C-MOVE Success with no failure: the completed count; the request names the study and our AE', async () => {
    const client = await pacs((_rq, x) => {
      x.reply(Status.pending, { counts: { remaining: 1, completed: 1, failed: 0, warning: 0 } });
      x.reply(Status.success, { counts: { remaining: 0, completed: 2, failed: 0, warning: 0 } });
    });
    expect(await client.retrieveStudy('1.2.3.1')).to.deep.equal({ completed: 2, failed: 0 });
    const rq = scp!.requests[0]!;
    expect(rq.command.moveDestination).to.equal('SECONDREAD');
    expect(rq.identifier).to.include({ QueryRetrieveLevel: 'STUDY', StudyInstanceUID: '1.2.3.1' });
  });

  it('C-MOVE 0xB000 (some sub-operations failed): an error with the counts and the comment', async () => {
    const client = await pacs((_rq, x) => x.reply(0xb000, { counts: { remaining: 0, completed: 1, failed: 1, warning: 0 }, errorComment: 'disk error' }));
    const out = await client.retrieveStudy('1.2.3.1');
    expect(out).to.include({ completed: 1, failed: 1 });
    expect(out.error).to.match(
      /C-MOVE to SECONDREAD with sub-operations complete, one or more failures or warnings \(0xb000\), 1 failed, 0 with warnings: disk error/,
    );
  });

  it('C-MOVE 0xA801 (destination unknown) and 0xA702 (out of resources): errors that say so', async () => {
    let status = 0xa801;
    const client = await pacs((_rq, x) => x.reply(status));
    expect((await client.retrieveStudy('1.2.3.1')).error).to.match(/refused: move destination unknown \(0xa801\)/);
    status = 0xa702;
    expect((await client.retrieveStudy('1.2.3.1')).error).to.match(/out of resources, unable to perform sub-operations \(0xa702\)/);
  });

  it('C-MOVE aborted after pending answers: an error with how many were completed', async () => {
    const client = await pacs((_rq, x) => {
      x.reply(Status.pending, { counts: { remaining: 2, completed: 3, failed: 0, warning: 0 } });
      setTimeout(() => x.abort(), 20);
    });
    const out = await client.retrieveStudy('1.2.3.1');
    expect(out).to.include({ completed: 3, failed: 0 });
    expect(out.error).to.match(/C-MOVE with PACS .* did not finish \(3 sub-operations completed\): association aborted/);
  });
});

async function expectReject(p: Promise<unknown>, re: RegExp): Promise<void> {
  const err = await p.then(
    () => undefined,
    (e: Error) => e,
  );
  expect(err, 'rejected').to.be.instanceOf(Error);
  expect(err!.message).to.match(re);
}
