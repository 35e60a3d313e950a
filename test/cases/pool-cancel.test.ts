import { expect } from 'chai';
import { buildPoolCancelOrm } from '../../src/cases/pool-cancel.js';
import { Hl7Message } from '../../src/hl7/hl7-message.js';
import { readHeader } from '../../src/hl7/hl7-parse.js';

const base = {
  controlId: 'SR0042',
  sendingApplication: 'SECONDREAD',
  sendingFacility: 'GATEWAY',
  receivingApplication: 'pool-web',
  placerOrder: '01JCASE0001',
  accession: 'A1B2C3D4E5F6A7B8',
  patientId: 'ANON0123456789AB',
  studyInstanceUid: '2.25.123456789',
  now: new Date('2026-12-02T10:00:00.000Z'),
};

describe('buildPoolCancelOrm (ORM^O01, ORC-1 CA, to a pool)', () => {
  it('says cancel for our order, with the identifiers the pool was sent', () => {
    const text = buildPoolCancelOrm(base);
    expect(text.endsWith('\r')).to.equal(true);
    const m = Hl7Message.parse(text);
    const h = readHeader(m);
    expect(h.messageType).to.include('ORM');
    expect(m.get('MSH-9.1')).to.equal('ORM');
    expect(m.get('MSH-9.2')).to.equal('O01');
    expect(m.get('MSH-10')).to.equal('SR0042');
    expect(m.get('MSH-5')).to.equal('pool-web');
    expect(m.get('MSH-12')).to.equal('2.5.1');
    expect(m.get('ORC-1')).to.equal('CA');
    expect(m.get('ORC-5')).to.equal('CA');
    expect(m.get('ORC-2')).to.equal('01JCASE0001');
    expect(m.get('ORC-3')).to.equal('A1B2C3D4E5F6A7B8');
    expect(m.get('OBR-2')).to.equal('01JCASE0001');
    expect(m.get('OBR-3')).to.equal('A1B2C3D4E5F6A7B8');
    expect(m.get('PID-3.1')).to.equal('ANON0123456789AB');
    expect(m.get('PID-3.4')).to.equal(null);
    expect(m.get('ZDS-1.1')).to.equal('2.25.123456789');
  });

  it('escapes delimiters in what it copies, keeps the authority of a real id, and leaves out what the pool never saw', () => {
    const m = Hl7Message.parse(buildPoolCancelOrm({ ...base, accession: 'ACC|1^2', patientId: 'MRN&7', patientIdAuthority: 'HOSP', studyInstanceUid: null }));
    expect(m.text(m.rawField(m.segment('OBR')!, 3))).to.equal('ACC|1^2');
    expect(m.get('PID-3.4')).to.equal('HOSP');
    expect(m.segment('ZDS')).to.equal(undefined);
    const bare = Hl7Message.parse(buildPoolCancelOrm({ ...base, accession: null, patientId: null }));
    expect(bare.get('PID-3')).to.equal(null);
    expect(bare.get('OBR-3')).to.equal(null);
  });
});
