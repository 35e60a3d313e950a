import { expect } from 'chai';
import { Message } from 'node-hl7-client';
import { buildAck, createControlIdSource, hl7Timestamp } from '../../src/hl7/ack.js';
import { Hl7Message } from '../../src/hl7/hl7-message.js';
import { readHeader, scrapeHeader } from '../../src/hl7/hl7-parse.js';
import { oruR01, ormO01 } from '../helpers/hl7-samples.js';

const now = new Date('2026-03-01T10:15:30.123Z');
const ours = { sendingApplication: 'SECONDREAD', sendingFacility: 'GATEWAY', controlId: 'ACK1', now };

function fields(segment: string): string[] {
  return segment.split('|');
}

describe('ACK building', () => {
  it('AA: MSH-3/4 ours, MSH-5/6 the sender, ACK^<trigger>^ACK, version echoed, MSA-2 = MSH-10', () => {
    const h = readHeader(Hl7Message.parse(oruR01({ controlId: 'CTRL-77', sendingApplication: 'RIS', sendingFacility: 'HOSP' })));
    const ack = buildAck(h, { ...ours, code: 'AA' });
    const [msh, msa, ...rest] = ack.split('\r').filter(Boolean);
    expect(rest).to.deep.equal([]);
    const m = fields(msh!);
    // m[0] is MSH, m[1] is MSH-2 (MSH-1 is the separator itself).
    expect(m.slice(0, 12)).to.deep.equal([
      'MSH',
      '^~\\&',
      'SECONDREAD',
      'GATEWAY',
      'RIS',
      'HOSP',
      '20260301101530.123+0000',
      '',
      'ACK^R01^ACK',
      'ACK1',
      'P',
      '2.5.1',
    ]);
    expect(fields(msa!)).to.deep.equal(['MSA', 'AA', 'CTRL-77']);
    expect(ack.endsWith('\r')).to.equal(true);
  });

  it('AR: ERR-3 table 0357 code, ERR-4 severity E, ERR-8 text, with delimiters in the text escaped', () => {
    const h = readHeader(Hl7Message.parse(oruR01({ controlId: 'C9' })));
    const ack = buildAck(h, { ...ours, code: 'AR', error: { hl7Code: '200', text: 'type A|B^C not supported' } });
    const err = ack.split('\r').find((s) => s.startsWith('ERR|'))!;
    const f = fields(err);
    expect(f[3]).to.equal('200^Unsupported message type^HL70357');
    expect(f[4]).to.equal('E');
    expect(f[8]).to.equal('type A\\F\\B\\S\\C not supported');
    // 2.5.1 has no MSA-3.
    expect(fields(ack.split('\r')[1]!)).to.deep.equal(['MSA', 'AR', 'C9']);
  });

  it('echoes HL7 2.3 and adds MSA-3 text for receivers that predate ERR-8', () => {
    const h = readHeader(Hl7Message.parse(ormO01({ controlId: 'OLD-1' })));
    const ack = buildAck(h, { ...ours, code: 'AE', error: { hl7Code: '207', text: 'database busy' } });
    const [msh, msa, err] = ack.split('\r').filter(Boolean);
    expect(fields(msh!)[8]).to.equal('ACK^O01^ACK');
    expect(fields(msh!)[11]).to.equal('2.3');
    expect(fields(msa!)).to.deep.equal(['MSA', 'AE', 'OLD-1', 'database busy']);
    expect(fields(err!)[4]).to.equal('E');
  });

  it('still answers AR when the message is unreadable, with whatever MSH-10 could be scraped', () => {
    const garbage = buildAck(scrapeHeader('not hl7 at all'), { ...ours, code: 'AR', error: { hl7Code: '102', text: 'not HL7' } });
    expect(fields(garbage.split('\r')[0]!)[8]).to.equal('ACK');
    expect(fields(garbage.split('\r')[1]!)).to.deep.equal(['MSA', 'AR', '']);
    const truncated = buildAck(scrapeHeader('MSH|^~\\&|RIS|HOSP|X|Y|2026||ORU^R01|TRUNC-1|P|2.5.1\rOBX|1|TX|...'), {
      ...ours,
      code: 'AR',
      error: { hl7Code: '207', text: 'too large' },
    });
    expect(fields(truncated.split('\r')[1]!)[2]).to.equal('TRUNC-1');
  });

  it('is readable by node-hl7-client', () => {
    const h = readHeader(Hl7Message.parse(oruR01({ controlId: 'LIB-1' })));
    const lib = new Message({ text: buildAck(h, { ...ours, code: 'AR', error: { hl7Code: '101', text: 'missing' } }) });
    expect(lib.get('MSA.1').toString()).to.equal('AR');
    expect(lib.get('MSA.2').toString()).to.equal('LIB-1');
    expect(lib.get('MSH.9.1').toString()).to.equal('ACK');
    expect(lib.get('ERR.3.1').toString()).to.equal('101');
  });

  it('formats timestamps in explicit UTC and makes unique, short control ids', () => {
    expect(hl7Timestamp(new Date('2026-12-31T23:59:59.999Z'))).to.equal('20261231235959.999+0000');
    const next = createControlIdSource();
    const ids = new Set(Array.from({ length: 5000 }, () => next()));
    expect(ids.size).to.equal(5000);
    for (const id of ids) expect(id.length).to.be.at.most(20);
  });
});
