import { expect } from 'chai';
import { buildStatusUpdateOrm, statusNote, statusOfAction } from '../../src/reports/status-update-builder.js';

describe('RIS status update (ORM^O01, ORC-1 SC)', () => {
  const base = {
    controlId: 'SR1',
    sendingApplication: 'SECONDREAD',
    sendingFacility: 'GATEWAY',
    receivingApplication: 'RIS',
    receivingFacility: 'HOSP',
    placerOrderNumber: 'PL1',
    fillerOrderNumber: 'F1',
    accessionNumber: 'ACC1',
    patientId: 'MRN1',
    patientIdAuthority: 'HOSP',
    procedureCode: 'CTCHEST',
    procedureText: 'CT Chest',
    now: new Date('2026-12-02T10:00:00Z'),
  };

  it('carries the original order numbers, the status and the note, escaped', () => {
    const segs = buildStatusUpdateOrm({ ...base, status: 'IP', note: 'second read in progress: onc|lung' })
      .split('\r')
      .filter(Boolean)
      .map((s) => s.split('|'));
    const seg = (n: string) => segs.find((s) => s[0] === n)!;
    expect(seg('MSH')[8]).to.equal('ORM^O01^ORM_O01');
    expect(seg('MSH')[9]).to.equal('SR1');
    expect(seg('PID')[3]).to.equal('MRN1^^^HOSP');
    expect([seg('ORC')[1], seg('ORC')[2], seg('ORC')[3], seg('ORC')[5]]).to.deep.equal(['SC', 'PL1', 'F1', 'IP']);
    expect([seg('OBR')[2], seg('OBR')[3], seg('OBR')[4]]).to.deep.equal(['PL1', 'F1', 'CTCHEST^CT Chest']);
    expect(seg('NTE')[3]).to.equal('second read in progress: onc\\F\\lung');
  });

  it('without a filler number, OBR-3 and ORC-3 fall back to the accession', () => {
    const orc = buildStatusUpdateOrm({ ...base, fillerOrderNumber: null, status: 'CA', note: 'x' })
      .split('\r')
      .find((s) => s.startsWith('ORC|'))!
      .split('|');
    expect(orc[3]).to.equal('ACC1');
  });

  it('which events say what; the note names the rules and the outcome', () => {
    expect(
      ['case.created', 'case.awaiting-read', 'case.assigned', 'case.reported', 'case.cancelled', 'case.held', 'case.viewed', 'case.forwarding'].map(
        statusOfAction,
      ),
    ).to.deep.equal(['IP', 'IP', 'IP', 'CM', 'CA', 'HD', undefined, undefined]);
    expect(statusNote('second read in progress: {rule}', 'IP', ['onc', 'lung'])).to.equal('second read in progress: onc, lung');
    expect(statusNote('2nd read: {rule}', 'HD', [], 'no reader')).to.equal('2nd read: manual request (on hold: no reader)');
  });
});
