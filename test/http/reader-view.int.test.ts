import { expect } from 'chai';
import { excludeInstance } from '../../src/forwarding/exclusion.repository.js';
import { PHI_TOKENS as T, PhiFlow, phiFoundIn, type PhiPatient } from '../helpers/phi-flow.js';
import { makeTempDir } from '../helpers/tmp.js';

const deidPatient: PhiPatient = {
  name: 'Zebediah^Quackenbush',
  id: 'PID-PHI-98765',
  accession: 'ACC-PHI-4242',
  reportText: 'glioblastoma zygomatic xylophone',
  modality: 'CT',
};
const plainPatient: PhiPatient = {
  name: 'Philomena^Wigglesworth',
  id: 'PID-PHI-13579',
  accession: 'ACC-PHI-8686',
  reportText: 'quixotic marmalade obelisk',
  modality: 'MR',
};

describe('what a reader sees of cases sent to them de-identified', function () {
  this.timeout(90_000);
  let tmp: ReturnType<typeof makeTempDir>;
  let flow: PhiFlow;

  before(async () => {
    tmp = makeTempDir();
    flow = new PhiFlow(tmp.dir);
    await flow.start();
  });
  after(async () => {
    await flow.stop();
    tmp.cleanup();
  });

  it('shows the pseudonyms the pool saw and no real identifier or first-report text anywhere; admin sees the real ones', async () => {
    const { caseId, study } = await flow.flaggedCase(deidPatient);
    const admin = await flow.call('GET', `/api/cases/${caseId}`, T.admin);
    expect(admin.json).to.include({ readerId: 'dr-a', accessionNumber: deidPatient.accession, studyInstanceUid: study.studyInstanceUid });

    // What the de-identifying pool received and stored.
    const poolStudy = await flow.deidPool.db.selectFrom('studies').select(['study_instance_uid', 'patient_id', 'accession_number']).executeTakeFirstOrThrow();
    expect(poolStudy.study_instance_uid).to.not.equal(study.studyInstanceUid);
    expect(poolStudy.patient_id).to.not.equal(deidPatient.id);

    const real = [study.studyInstanceUid, ...study.seriesInstanceUids, ...study.instances.map((x) => x.sopInstanceUid)];
    // An instance kept back from the delivery: the reader sees that it was, under the UID their copy uses, nothing more.
    const delivery = await flow.gw.db.selectFrom('deliveries').select('id').where('case_id', '=', caseId).executeTakeFirstOrThrow();
    const kept = study.instances[0]!.sopInstanceUid;
    await excludeInstance(flow.gw.db, {
      deliveryId: delivery.id,
      caseId,
      sopInstanceUid: kept,
      sopClassUid: study.instances[0]!.sopClassUid,
      seriesDescription: `screen of ${deidPatient.name}`,
      reason: 'burned-in-risk',
      detail: 'Image Type ORIGINAL\\PRIMARY\\SCREEN SAVE is a screen capture (SCREEN SAVE)',
      now: new Date().toISOString(),
    });
    const one = await flow.call('GET', `/api/cases/${caseId}`, T.drA);
    const pseudoKept = await flow.gw.db
      .selectFrom('pseudonyms')
      .select('pseudonym')
      .where('kind', '=', 'uid')
      .where('original', '=', kept)
      .executeTakeFirstOrThrow();
    expect(one.json['excludedInstances']).to.deep.equal([
      {
        sopInstanceUid: pseudoKept.pseudonym,
        sopClassUid: study.instances[0]!.sopClassUid,
        seriesDescription: null,
        reason: 'burned-in-risk',
        detail: null,
        destinationId: (one.json['excludedInstances'] as { destinationId: string }[])[0]!.destinationId,
        excludedAt: (one.json['excludedInstances'] as { excludedAt: string }[])[0]!.excludedAt,
      },
    ]);
    const adminView = await flow.call('GET', `/api/cases/${caseId}`, T.admin);
    expect((adminView.json['excludedInstances'] as { sopInstanceUid: string; seriesDescription: string }[])[0]).to.include({
      sopInstanceUid: kept,
      seriesDescription: `screen of ${deidPatient.name}`,
    });
    const list = await flow.call('GET', '/api/cases', T.drA);
    expect(one.status).to.equal(200);
    for (const body of [one.text, list.text]) {
      expect(phiFoundIn(body, deidPatient, real)).to.deep.equal([]);
    }
    expect(one.json).to.include({
      id: caseId,
      deidentified: true,
      studyInstanceUid: poolStudy.study_instance_uid,
      accessionNumber: poolStudy.accession_number,
      patientId: poolStudy.patient_id,
    });
    expect((list.json['items'] as { id: string; studyInstanceUid: string }[]).find((c) => c.id === caseId)?.studyInstanceUid).to.equal(
      poolStudy.study_instance_uid,
    );
    for (const r of one.json['reasons'] as Record<string, unknown>[]) expect(r).to.have.all.keys('ruleId', 'kind');

    // The answer to the reader's own report is the same view.
    const posted = await flow.call('POST', `/api/cases/${caseId}/report`, T.drA, { text: 'Concur: periwinkle hovercraft sonata.', radpeerScore: '1' });
    expect(posted.status, posted.text).to.equal(201);
    expect(phiFoundIn(posted.text, deidPatient, real)).to.deep.equal([]);
    expect((posted.json['case'] as Record<string, unknown>)['studyInstanceUid']).to.equal(poolStudy.study_instance_uid);
    // Even after their own read, the first report (names, accession, text) stays hidden from this reader.
    const revealed = await flow.call('GET', `/api/cases/${caseId}/primary-report`, T.drA);
    expect(revealed.status, revealed.text).to.equal(403);
    expect(phiFoundIn(revealed.text, deidPatient, real)).to.deep.equal([]);
    // Admin still sees the real study.
    expect((await flow.call('GET', `/api/cases/${caseId}`, T.admin)).json['accessionNumber']).to.equal(deidPatient.accession);
  });

  it('a reader whose copy was not de-identified sees the real identifiers', async () => {
    const { caseId, study } = await flow.flaggedCase(plainPatient);
    const seen = await flow.call('GET', `/api/cases/${caseId}`, T.drB);
    expect(seen.status).to.equal(200);
    expect(seen.json).to.include({ readerId: 'dr-b', accessionNumber: plainPatient.accession, studyInstanceUid: study.studyInstanceUid });
    expect((await flow.call('GET', `/api/cases/${caseId}`, T.drA)).status).to.equal(403);
    // A reader with the identified copy may see the first report once their own read is in (the case is not blinded here or is after the read).
    const posted = await flow.call('POST', `/api/cases/${caseId}/report`, T.drB, { text: 'Agree.', radpeerScore: '1' });
    expect(posted.status, posted.text).to.equal(201);
    const revealed = await flow.call('GET', `/api/cases/${caseId}/primary-report`, T.drB);
    expect(revealed.status, revealed.text).to.equal(200);
  });

  it('a reader reaches nothing else that carries identifiers', async () => {
    const uid = (await flow.gw.db.selectFrom('studies').select('study_instance_uid').executeTakeFirstOrThrow()).study_instance_uid;
    for (const p of [
      '/api/studies',
      `/api/studies/${uid}`,
      `/api/studies?accessionNumber=${deidPatient.accession}`,
      '/api/messages',
      '/api/audit',
      '/api/deliveries',
      '/api/rules',
      '/metrics',
    ]) {
      const r = await flow.call('GET', p, T.drA);
      expect(r.status, p).to.equal(403);
      expect(phiFoundIn(r.text, deidPatient, [uid]), p).to.deep.equal([]);
    }
  });
});
