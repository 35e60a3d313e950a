/**
 * A SOP instance re-sent with other content, made the way a PACS operator does it: DCMTK's dcmodify
 * changes the patient id of a file that was already sent, DCMTK's storescu sends it again. The study
 * is held (identity-conflict), nothing more reaches the reader pool (DCMTK's storescp) while it is held,
 * and QA's release and reject do what the README says. Same bytes again: no new version.
 */
import { copyFileSync, mkdirSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { expect } from 'chai';
import { generateStudy, type GeneratedStudy } from '../../scripts/lib/study-generator.js';
import { findInstance } from '../../src/studies/study.repository.js';
import { hasDcmtk, runDcmtk } from '../helpers/dicom-peers.js';
import { DicomGateway, Storescp, freePort } from '../helpers/dicom-gateway.js';
import { eventually } from '../helpers/eventually.js';

async function send(port: number, file: string): Promise<void> {
  const r = await runDcmtk('storescu', ['-v', '-aet', 'PACS1', '-aec', 'SECONDREAD', '127.0.0.1', String(port), file]);
  expect(r.stdout + r.stderr).to.match(/Received Store Response \(Success\)/);
}

async function tag(file: string, t: string): Promise<string | undefined> {
  return (await runDcmtk('dcmdump', ['-q', '+P', t, '-s', file])).stdout.match(/\[([^\]]*)\]/)?.[1];
}

/** Forwarding passes run to completion: what they would send has arrived when this returns. */
async function forwardingPasses(gw: DicomGateway, n: number): Promise<void> {
  for (let i = 0; i < n; i++) {
    await gw.gw.forwarding.idle();
  }
}

/** Patient IDs of what the pool (storescp) received so far. */
async function poolPatientIds(dir: string): Promise<string[]> {
  const ids: string[] = [];
  for (const f of readdirSync(dir).sort()) ids.push((await tag(path.join(dir, f), '0010,0020')) ?? '');
  return ids;
}

describe('identity conflict: an instance re-sent under another patient id (dcmodify + storescu)', function () {
  this.timeout(120_000);
  let gw: DicomGateway;
  let pool: Storescp;
  let study: GeneratedStudy;
  let work: string;

  before(async function () {
    if (!hasDcmtk()) {
      console.log('      skipped: DCMTK (dcmodify, storescu, storescp) not installed');
      this.skip();
    }
    const poolPort = await freePort();
    gw = new DicomGateway({
      rules: [],
      destinations: [{ id: 'pool', type: 'dimse', host: '127.0.0.1', port: poolPort, aeTitle: 'STORESCP', deidentify: false }],
    });
    await gw.start();
    pool = new Storescp(path.join(gw.tmp.dir, 'pool'));
    mkdirSync(pool.dir);
    await pool.start(poolPort);
    work = path.join(gw.tmp.dir, 'work');
    mkdirSync(work);
    study = generateStudy(path.join(gw.tmp.dir, 'study'), {
      instances: 2,
      series: 1,
      rows: 8,
      columns: 8,
      patientId: 'MRN-1',
      accessionNumber: 'ACC-ID-1',
      modality: 'CT',
    });
    for (const i of study.instances) await send(gw.dicomPort, i.path);
    await eventually(
      async () => ((await gw.call('GET', `/api/studies/${study.studyInstanceUid}`)).body?.state === 'stable' ? true : undefined),
      'study stable',
    );
    const c = await gw.call('POST', '/api/cases', { studyInstanceUid: study.studyInstanceUid, reason: 'identity test' });
    expect(c.status).to.equal(201);
    await eventually(async () => (pool.files().length === 2 ? true : undefined), 'both instances at the pool', 20_000);
  });
  after(async () => {
    pool?.stop();
    await gw?.stop();
  });

  it('same bytes again: success, no new version', async () => {
    await send(gw.dicomPort, study.instances[0]!.path);
    const s = (await gw.call('GET', `/api/studies/${study.studyInstanceUid}`)).body;
    expect(s.versions).to.deep.equal([]);
    expect(s.instanceCount).to.equal(2);
  });

  it('another patient id: held with identity-conflict, audited, nothing forwarded; release sends the new copy', async () => {
    const changed = path.join(work, 'changed.dcm');
    copyFileSync(study.instances[0]!.path, changed);
    const m = await runDcmtk('dcmodify', ['-nb', '-m', '(0010,0020)=MRN-2', changed]);
    expect(m.code, m.stderr).to.equal(0);
    await send(gw.dicomPort, changed);

    const s = (await gw.call('GET', `/api/studies/${study.studyInstanceUid}`)).body;
    expect(s).to.include({ state: 'held', holdReason: 'identity-conflict', holdDetail: 'changed: PatientID', instanceCount: 2 });
    expect(s.heldAt).to.be.a('string');
    const sop = study.instances[0]!.sopInstanceUid;
    expect(s.versions.map((v: any) => [v.sopInstanceUid, v.version, v.current, v.patientId, v.identityChanges])).to.deep.equal([
      [sop, 1, false, 'MRN-1', []],
      [sop, 2, true, 'MRN-2', ['PatientID']],
    ]);
    const held = (await gw.call('GET', '/api/studies?state=held')).body.items.map((x: any) => x.studyInstanceUid);
    expect(held).to.deep.equal([study.studyInstanceUid]);
    const audit = (await gw.call('GET', `/api/audit?entityType=study&entityId=${study.studyInstanceUid}`)).body.items;
    expect(audit.map((a: any) => a.action)).to.include('study.held');
    expect(JSON.stringify(audit)).to.not.include('MRN-2');

    // The quiet period is time itself (0.3 s here); past it, the due stability jobs and forwarding passes run by hand
    // (not left to the timers) must send the pool nothing while the study is held.
    await new Promise((r) => setTimeout(r, 400));
    await gw.gw.studies.settle();
    await forwardingPasses(gw, 3);
    expect((await gw.call('GET', `/api/studies/${study.studyInstanceUid}`)).body.state).to.equal('held');
    expect(await poolPatientIds(pool.dir)).to.deep.equal(['MRN-1', 'MRN-1']);

    const bad = await gw.call('POST', `/api/studies/${study.studyInstanceUid}/release`, {});
    expect(bad.status).to.equal(400);
    const rel = await gw.call('POST', `/api/studies/${study.studyInstanceUid}/release`, { reason: 'RIS confirms the corrected id' });
    expect(rel.status).to.equal(200);
    expect(rel.body).to.include({ holdReason: null });
    expect(['receiving', 'stable']).to.include(rel.body.state);
    expect((await gw.call('POST', `/api/studies/${study.studyInstanceUid}/release`, { reason: 'again' })).status).to.equal(409);
    // the pool that had the old copy gets the new one as a delta
    await eventually(async () => ((await poolPatientIds(pool.dir)).includes('MRN-2') ? true : undefined), 'the new copy at the pool', 20_000);
    const audit2 = (await gw.call('GET', `/api/audit?entityType=study&entityId=${study.studyInstanceUid}`)).body.items;
    expect(audit2.map((a: any) => a.action)).to.include('study.released');
  });

  it('a further change rejected: the conflicting copy is discarded, the prior one current again, nothing forwarded', async () => {
    const sop = study.instances[0]!.sopInstanceUid;
    const before = await findInstance(gw.gw.db, sop);
    expect(before?.version).to.equal(2);
    const changed = path.join(work, 'changed-again.dcm');
    copyFileSync(study.instances[0]!.path, changed);
    const m = await runDcmtk('dcmodify', ['-nb', '-m', '(0010,0020)=MRN-3', '-m', '(0010,0010)=WRONG^PATIENT', changed]);
    expect(m.code, m.stderr).to.equal(0);
    await send(gw.dicomPort, changed);
    const s = (await gw.call('GET', `/api/studies/${study.studyInstanceUid}`)).body;
    expect(s).to.include({ state: 'held', holdReason: 'identity-conflict', holdDetail: 'changed: PatientID, PatientName' });
    const files = pool.files().length;

    const rej = await gw.call('POST', `/api/studies/${study.studyInstanceUid}/reject`, { reason: 'wrong patient selected at the modality' });
    expect(rej.status).to.equal(200);
    expect(rej.body.state).to.not.equal('held');
    const after = await findInstance(gw.gw.db, sop);
    expect(after).to.include({ version: 2, sha256: before!.sha256 });
    const versions = (await gw.call('GET', `/api/studies/${study.studyInstanceUid}`)).body.versions;
    expect(versions.map((v: any) => [v.version, v.current, v.conflictState])).to.deep.equal([
      [1, false, null],
      [2, true, 'released'],
      [3, false, 'rejected'],
    ]);
    await eventually(async () => ((await gw.call('GET', `/api/studies/${study.studyInstanceUid}`)).body.state === 'stable' ? true : undefined), 'stable again');
    await forwardingPasses(gw, 3);
    // the rejected copy never left; at most the restored copy went again
    expect(await poolPatientIds(pool.dir)).to.not.include('MRN-3');
    expect(pool.files().length).to.be.at.least(files);
    const audit = (await gw.call('GET', `/api/audit?entityType=study&entityId=${study.studyInstanceUid}`)).body.items;
    expect(audit.map((a: any) => a.action)).to.include('study.rejected');
  });
});
