import { expect } from 'chai';
import { Hl7Message } from '../src/hl7/hl7-message.js';
import { eventually } from './helpers/eventually.js';
import { PHI_TOKENS as T, PhiFlow, phiFoundIn, type PhiPatient } from './helpers/phi-flow.js';
import { makeTempDir } from './helpers/tmp.js';

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
const secondReportText = 'periwinkle hovercraft sonata';
const heldPatientId = 'PID-PHI-55555';
const rejectedPatient: PhiPatient = {
  name: 'Bartholomew^Fizzlewick',
  id: 'PID-PHI-31337',
  accession: 'ACC-PHI-7777',
  reportText: 'kumquat trebuchet lagoon',
  modality: 'CT',
};

/** Every distinctive value of every patient of the flow found in `text`. */
function allPhiIn(text: string, uids: string[]): string[] {
  return [
    ...phiFoundIn(text, deidPatient, [secondReportText, ...secondReportText.split(' ')]),
    ...phiFoundIn(text, plainPatient),
    ...phiFoundIn(text, rejectedPatient, [heldPatientId]),
    ...uids.filter((u) => text.includes(u)),
  ];
}

describe('PHI hygiene: the whole flow leaves no patient identifiers or report text in info logs or metrics', function () {
  this.timeout(120_000);
  let tmp: ReturnType<typeof makeTempDir>;
  let flow: PhiFlow;
  const uids: string[] = [];

  before(async () => {
    tmp = makeTempDir();
    flow = new PhiFlow(tmp.dir);
    await flow.start({ level: 'info' });
  });
  after(async () => {
    await flow.stop();
    tmp.cleanup();
  });

  it('runs study, order, report, forwarding (de-identified and not), second reports, write-back and error paths', async () => {
    const a = await flow.flaggedCase(deidPatient);
    const b = await flow.flaggedCase(plainPatient);
    for (const s of [a.study, b.study]) uids.push(s.studyInstanceUid, ...s.seriesInstanceUids, ...s.instances.map((x) => x.sopInstanceUid));
    expect(flow.deidPool.stores).to.have.length(3);
    expect(flow.plainPool.stores.map((s) => s.studyInstanceUid)).to.deep.equal([b.study.studyInstanceUid, b.study.studyInstanceUid, b.study.studyInstanceUid]);

    // Second reports by HTTP; the RIS gets the first write-back, refuses the second (a failure path that logs).
    expect((await flow.call('POST', `/api/cases/${a.caseId}/report`, T.drA, { text: `Missed: ${secondReportText}.`, radpeerScore: '2b' })).status).to.equal(
      201,
    );
    await eventually(async () => (await flow.call('GET', `/api/cases/${a.caseId}`, T.admin)).json['state'] === 'written-back', 'write-back', 20_000);
    flow.ris.script.push('AR');
    expect((await flow.call('POST', `/api/cases/${b.caseId}/report`, T.drB, { text: `Concur: ${secondReportText}.`, radpeerScore: '1' })).status).to.equal(201);
    await eventually(async () => (await flow.call('GET', `/api/cases/${b.caseId}`, T.admin)).json['state'] === 'failed', 'refused write-back', 20_000);
    const oru = flow.ris.received.find((m) => m.includes(deidPatient.accession) && /\|ORU\^R01/.test(m))!;
    // The PHI really flowed where it belongs (the RIS), so its absence from the logs means something.
    expect(Hl7Message.parse(oru).get('PID-3.1')).to.equal(deidPatient.id);
    expect(oru).to.include(secondReportText);

    // AR: a report with PHI but no OBR; an unsupported message type carrying a PID.
    const noObr = flow
      .oru(rejectedPatient, 'ORU-PHI-BAD')
      .split('\r')
      .filter((s) => !s.startsWith('OBR'))
      .join('\r');
    expect((await flow.hl7.send(noObr)).code).to.equal('AR');
    const adt = flow.orm(rejectedPatient, 'ADT-PHI-1').replace('ORM^O01', 'ADT^A08');
    expect((await flow.hl7.send(adt)).code).to.equal('AR');
    // Held: an order for a known accession naming another patient.
    const conflicting = flow.orm({ ...deidPatient, id: heldPatientId, name: rejectedPatient.name }, 'ORM-PHI-HELD');
    expect((await flow.hl7.send(conflicting)).code).to.equal('AA');
    const held = (await flow.call('GET', '/api/messages?status=held', T.admin)).json['items'] as { controlId: string; reason: string }[];
    expect(held.map((m) => m.controlId)).to.include('ORM-PHI-HELD');
    const rejected = (await flow.call('GET', '/api/messages?status=rejected', T.admin)).json['items'] as { controlId: string }[];
    expect(rejected.map((m) => m.controlId)).to.include.members(['ORU-PHI-BAD', 'ADT-PHI-1']);
  });

  it('GET /metrics shows none of it', async () => {
    const m = await flow.call('GET', '/metrics', T.admin);
    expect(m.status).to.equal(200);
    expect(m.text).to.match(/gateway_/);
    expect(allPhiIn(m.text, uids)).to.deep.equal([]);
  });

  it('the info-level log shows none of it, from start to stop', async () => {
    // Per-message HL7 lines are written on the next turn; stopping flushes everything else.
    await new Promise((r) => setTimeout(r, 50));
    await flow.stop();
    const log = flow.logLines.join('');
    expect(flow.logLines.length).to.be.greaterThan(20);
    // The log did record the flow (so an empty or silenced log cannot pass this test).
    for (const what of [
      'gateway started',
      'study stable',
      'delivered',
      'second report stored',
      'sent and acknowledged',
      'refused by the receiver',
      '"ack":"AR"',
    ]) {
      expect(log, what).to.include(what);
    }
    expect(allPhiIn(log, uids)).to.deep.equal([]);
  });
});

describe('log.phi: patient identifiers in debug lines only when switched on', function () {
  this.timeout(60_000);

  async function runOnce(phi: boolean): Promise<string[]> {
    const tmp = makeTempDir();
    const flow = new PhiFlow(tmp.dir);
    try {
      await flow.start({ level: 'debug', phi });
      expect((await flow.hl7.send(flow.orm(deidPatient, 'ORM-DEBUG-1'))).code).to.equal('AA');
      await new Promise((r) => setTimeout(r, 50));
    } finally {
      await flow.stop();
      tmp.cleanup();
    }
    return flow.logLines;
  }

  it('off (the default): even at debug no identifier is written, and nothing warns', async () => {
    const lines = await runOnce(false);
    const debugLine = lines.find((l) => l.includes('message identifiers'));
    expect(debugLine, 'the debug line is written, without its PHI fields').to.be.a('string');
    expect(JSON.parse(debugLine!)).to.include({ controlId: 'ORM-DEBUG-1', level: 'debug' }).and.not.have.property('phi');
    expect(phiFoundIn(lines.join(''), deidPatient)).to.deep.equal([]);
    expect(lines.join('')).to.not.include('log.phi is on');
  });

  it('on: the gateway warns at start-up and debug lines carry the identifiers', async () => {
    const lines = await runOnce(true);
    const warning = lines.find((l) => l.includes('log.phi is on'));
    expect(warning && (JSON.parse(warning) as { level: string }).level).to.equal('warn');
    const debugLine = JSON.parse(lines.find((l) => l.includes('message identifiers'))!) as { phi: { patientId: string; accessionNumbers: string[] } };
    expect(debugLine.phi).to.deep.include({ patientId: deidPatient.id, accessionNumbers: [deidPatient.accession] });
    // Info lines stay clean even with the switch on.
    const info = lines.filter((l) => !l.includes('"level":"debug"')).join('');
    expect(phiFoundIn(info, deidPatient)).to.deep.equal([]);
  });
});
