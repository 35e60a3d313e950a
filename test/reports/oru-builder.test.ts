import { expect } from 'chai';
import { Message } from 'node-hl7-client';
import { defaultConfig } from '../../src/config/schema.js';
import { ErrorCode } from '../../src/errors.js';
import { Hl7Message } from '../../src/hl7/hl7-message.js';
import { readHeader, toInboundEvent } from '../../src/hl7/hl7-parse.js';
import {
  buildSecondReportOru,
  concordanceOf,
  radpeerScores,
  writeBackDefect,
  type RadpeerScore,
  type SecondReportOruInput,
} from '../../src/reports/oru-builder.js';
import { oruR01 } from '../helpers/hl7-samples.js';
import { thrownGatewayError as rejection } from '../helpers/expect-error.js';

const uid = '1.2.826.0.1.3680043.8.498.77';
const primary = oruR01({ controlId: 'PRIM1', accession: 'ACC7001', patientId: 'MRN7001', studyUid: uid });
const now = new Date('2026-03-02T09:30:15.123Z');

function input(o: Partial<SecondReportOruInput> = {}): SecondReportOruInput {
  return {
    controlId: 'SR0001',
    sendingApplication: 'SECONDREAD',
    sendingFacility: 'GATEWAY',
    primaryReport: primary,
    accessionNumber: 'ACC7001',
    studyInstanceUid: uid,
    secondReader: { id: 'DRB', familyName: 'READER', givenName: 'BEA' },
    text: 'FINDINGS: No mass.\nIMPRESSION: Normal chest CT.',
    radpeerScore: '1',
    now,
    ...o,
  };
}

const segments = (text: string) => text.split('\r').filter(Boolean);
const fieldsOf = (seg: string) => seg.split('|');
const obxs = (text: string) =>
  segments(text)
    .filter((s) => s.startsWith('OBX|'))
    .map(fieldsOf);

describe('buildSecondReportOru (ORU^R01 v2.5.1 second report)', () => {
  it('writes the header: MSH-3/4 from config, MSH-5/6 default RIS/HOSP, MSH-7 now, type, MSH-10 as given, P, 2.5.1; segments end with CR', () => {
    const text = buildSecondReportOru(input());
    expect(text.endsWith('\r')).to.equal(true);
    expect(text).not.to.include('\n');
    const msh = fieldsOf(segments(text)[0]!);
    // Split on `|`: index 1 is MSH-2 (MSH-1 is the separator itself).
    expect(msh.slice(0, 12)).to.deep.equal([
      'MSH',
      '^~\\&',
      'SECONDREAD',
      'GATEWAY',
      'RIS',
      'HOSP',
      '20260302093015.123+0000',
      '',
      'ORU^R01^ORU_R01',
      'SR0001',
      'P',
      '2.5.1',
    ]);
    expect(msh.length, 'no MSH-18 for ASCII text').to.equal(12);
    expect(segments(text).map((s) => s.slice(0, 3))).to.deep.equal(['MSH', 'PID', 'OBR', 'OBX', 'OBX', 'OBX', 'OBX', 'ZDS']);

    const custom = segments(buildSecondReportOru(input({ receivingApplication: 'EPIC', receivingFacility: 'ST^X' })))[0]!;
    expect(custom).to.equal('MSH|^~\\&|SECONDREAD|GATEWAY|EPIC|ST\\S\\X|20260302093015.123+0000||ORU^R01^ORU_R01|SR0001|P|2.5.1');
  });

  it('copies the primary PID segment byte for byte (real identifiers restored)', () => {
    const primaryPid = segments(primary).find((s) => s.startsWith('PID|'))!;
    expect(primaryPid).to.include('MRN7001^^^HOSP^MR~9434765919^^^NHS^NH');
    const pid = segments(buildSecondReportOru(input())).find((s) => s.startsWith('PID|'));
    expect(pid).to.equal(primaryPid);
  });

  it('takes OBR-2/3/4 and OBR-7 from the primary; OBR-22 now, OBR-25 F, OBR-32 the second reader as NDL', () => {
    const obr = fieldsOf(segments(buildSecondReportOru(input())).find((s) => s.startsWith('OBR|'))!);
    expect(obr[1]).to.equal('1');
    expect(obr[2]).to.equal('PLACC7001');
    expect(obr[3]).to.equal('ACC7001');
    expect(obr[4]).to.equal('CTCHEST^CT Chest with contrast^L');
    expect(obr[7]).to.equal('20260301103000+0100');
    expect(obr[22]).to.equal('20260302093015.123+0000');
    expect(obr[25]).to.equal('F');
    expect(obr[32]).to.equal('DRB&READER&BEA');
    expect(obr.length).to.equal(33);
    const given = fieldsOf(segments(buildSecondReportOru(input({ observedAt: new Date('2026-03-01T09:00:00Z') }))).find((s) => s.startsWith('OBR|'))!);
    expect(given[7]).to.equal('20260301090000.000+0000');
  });

  it('escapes | ^ ~ \\ & in report text, one TX OBX per line, and our parser reads the text back', () => {
    const line1 = 'Mass 2|3 cm ^ up ~ around \\ back & forth';
    const text = buildSecondReportOru(input({ text: `${line1}\r\n  indented line\n\nafter a blank line\rlast line\n\n` }));
    const o = obxs(text);
    const tx = o.filter((f) => f[2] === 'TX');
    expect(tx.map((f) => f[5])).to.deep.equal([
      'Mass 2\\F\\3 cm \\S\\ up \\R\\ around \\E\\ back \\T\\ forth',
      '  indented line',
      '',
      'after a blank line',
      'last line',
    ]);
    for (const f of o) expect(f.length, 'OBX-5 must not spill into other fields').to.equal(17);
    expect(tx.map((f) => f[1])).to.deep.equal(['1', '2', '3', '4', '5']);
    expect(tx.every((f) => f[3] === '18782-3^Radiology Study observation^LN' && f[11] === 'F' && f[16] === 'DRB^READER^BEA')).to.equal(true);

    const m = Hl7Message.parse(text);
    const back = m
      .all('OBX')
      .filter((s) => m.rawField(s, 2) === 'TX')
      .map((s) => m.text(m.rawField(s, 5)));
    expect(back).to.deep.equal([line1, '  indented line', '', 'after a blank line', 'last line']);
  });

  it('escapes control characters (VT and FS would break MLLP framing) as \\Xhh\\ and keeps tab', () => {
    const text = buildSecondReportOru(input({ text: 'a\x0bb\x1cc\td' }));
    expect(text).not.to.match(/[\x00-\x08\x0b\x0c\x0e-\x1f]/);
    const m = Hl7Message.parse(text);
    expect(m.text(m.rawField(m.all('OBX')[0]!, 5))).to.equal('a\x0bb\x1cc\td');
  });

  it('codes the RADPEER score (CWE) and the concordance (ST): any score other than 1 is DISCORDANT', () => {
    const expected: Record<RadpeerScore, string> = { '1': 'CONCORDANT', '2a': 'DISCORDANT', '2b': 'DISCORDANT', '3a': 'DISCORDANT', '3b': 'DISCORDANT' };
    for (const score of radpeerScores) {
      expect(concordanceOf(score)).to.equal(expected[score]);
      const o = obxs(buildSecondReportOru(input({ radpeerScore: score })));
      const radpeer = o.find((f) => f[3] === 'RADPEER^RADPEER score^L')!;
      expect(radpeer[2]).to.equal('CWE');
      expect(radpeer[5]).to.equal(`${score}^RADPEER ${score}^RADPEER`);
      const conc = o.find((f) => f[3] === 'SRCONC^Second read concordance^L')!;
      expect(conc[2]).to.equal('ST');
      expect(conc[5], score).to.equal(expected[score]);
      expect(conc[11]).to.equal('F');
      expect(o.map((f) => f[1])).to.deep.equal(o.map((_, i) => String(i + 1)));
    }
  });

  it('adds the impression as its own TX OBX lines when given', () => {
    const o = obxs(buildSecondReportOru(input({ impression: 'Likely benign.\nFollow-up in 12 months.' })));
    const imp = o.filter((f) => f[3]?.startsWith('19005-8^'));
    expect(imp.map((f) => f[5])).to.deep.equal(['Likely benign.', 'Follow-up in 12 months.']);
    expect(obxs(buildSecondReportOru(input({ impression: '  ' }))).some((f) => f[3]?.startsWith('19005-8^'))).to.equal(false);
  });

  it('writes ZDS-1 with the StudyInstanceUID', () => {
    const zds = segments(buildSecondReportOru(input())).find((s) => s.startsWith('ZDS|'));
    expect(zds).to.equal(`ZDS|${uid}^SECONDREAD^Application^DICOM`);
  });

  it('declares UTF-8 in MSH-18 when the text is not ASCII', () => {
    const text = buildSecondReportOru(input({ text: 'Läsion im Segment 6, Größe 12 mm' }));
    expect(fieldsOf(segments(text)[0]!)[17]).to.equal('UNICODE UTF-8');
    const m = Hl7Message.parse(text);
    expect(m.text(m.rawField(m.all('OBX')[0]!, 5))).to.equal('Läsion im Segment 6, Größe 12 mm');
  });

  it('re-encodes identifiers from a primary that used other delimiters (and escapes its plain ^)', () => {
    // Component `$`, subcomponent `#`: a literal `^` in a name is plain text there.
    const odd =
      'MSH|$~\\#|RIS|HOSP|SECONDREAD|GATEWAY|20260301||ORU$R01|ODD1|P|2.5.1\rPID|1||M9$$$HOSP$MR||O^NEIL$ANN\rOBR|1|P9|A9|CT$CT Head$L||20260301\rOBX|1|TX|x||text||||||F\r';
    const pid = segments(buildSecondReportOru(input({ primaryReport: odd, accessionNumber: 'A9' }))).find((s) => s.startsWith('PID|'));
    expect(pid).to.equal('PID|1||M9^^^HOSP^MR||O\\S\\NEIL^ANN');
    const obr = fieldsOf(segments(buildSecondReportOru(input({ primaryReport: odd, accessionNumber: 'A9' }))).find((s) => s.startsWith('OBR|'))!);
    expect(obr[4]).to.equal('CT^CT Head^L');
  });

  it('uses the OBR of the case accession when the primary holds several', () => {
    const two = primary.replace(/(OBR\|[^\r]*\r)/, '$1OBR|2|PLACC7002|ACC7002|MRHEAD^MR Head^L\r');
    const obr = fieldsOf(segments(buildSecondReportOru(input({ primaryReport: two, accessionNumber: 'ACC7002' }))).find((s) => s.startsWith('OBR|'))!);
    expect(obr.slice(2, 5)).to.deep.equal(['PLACC7002', 'ACC7002', 'MRHEAD^MR Head^L']);
  });

  it('refuses invalid input with GatewayError(invalid-input)', () => {
    const bad: Partial<SecondReportOruInput>[] = [
      { radpeerScore: '4' as RadpeerScore },
      { radpeerScore: '2' as RadpeerScore },
      { text: '' },
      { text: ' \n\t\n' },
      { controlId: '' },
      { controlId: 'X'.repeat(21) },
      { controlId: 'A|B' },
      { studyInstanceUid: 'not-a-uid' },
      { secondReader: { id: ' ' } },
      { sendingApplication: '' },
      { accessionNumber: 'OTHER-ACC' },
      { primaryReport: '' },
      { primaryReport: 'not hl7' },
      { primaryReport: primary.replace(/PID\|[^\r]*\r/, '') },
      { primaryReport: primary.replace(/OBR\|[^\r]*\r/, '') },
    ];
    for (const b of bad) {
      expect(rejection(() => buildSecondReportOru(input(b))).code, JSON.stringify(b)).to.equal(ErrorCode.invalidInput);
    }
  });

  it('is read the same by node-hl7-client (another implementation)', () => {
    const text = buildSecondReportOru(input({ radpeerScore: '2b', text: 'a | b ^ c ~ d \\ e & f\nsecond line' }));
    const lib = new Message({ text });
    expect(lib.get('MSH.9.1').toString()).to.equal('ORU');
    expect(lib.get('MSH.9.2').toString()).to.equal('R01');
    expect(lib.get('MSH.10').toString()).to.equal('SR0001');
    expect(lib.get('MSH.12').toString()).to.equal('2.5.1');
    expect(lib.get('PID.3').toRaw()).to.equal('MRN7001^^^HOSP^MR~9434765919^^^NHS^NH');
    expect(lib.get('PID.3.1').toString()).to.equal('MRN7001');
    expect(lib.get('OBR.3').toString()).to.equal('ACC7001');
    expect(lib.get('OBR.25').toString()).to.equal('F');
    expect(lib.get('OBR.32.1.1').toString()).to.equal('DRB');
    expect(lib.get('OBR.32.1.2').toString()).to.equal('READER');
    expect(lib.get('ZDS.1.1').toString()).to.equal(uid);
    const obx: { type: string; code: string; value: string }[] = [];
    lib.get('OBX').forEach((seg) => obx.push({ type: seg.get(2).toString(), code: seg.get('3.1').toString(), value: lib.unescape(seg.get(5).toRaw()) }));
    expect(obx).to.deep.equal([
      { type: 'TX', code: '18782-3', value: 'a | b ^ c ~ d \\ e & f' },
      { type: 'TX', code: '18782-3', value: 'second line' },
      { type: 'CWE', code: 'RADPEER', value: '2b^RADPEER 2b^RADPEER' },
      { type: 'ST', code: 'SRCONC', value: 'DISCORDANT' },
    ]);
  });

  it('is read by our own inbound mapping as a final report for the same accession, study and patient', () => {
    const text = buildSecondReportOru(input({ text: 'line one\nline two' }));
    const m = Hl7Message.parse(text);
    const e = toInboundEvent(m, readHeader(m), { mapping: defaultConfig().hl7.mapping, aiSenders: [] });
    if (e.kind !== 'report') throw new Error(`read as ${e.kind}`);
    expect(e.patient).to.include({ id: 'MRN7001', authority: 'HOSP' });
    const item = e.items[0]!;
    expect(item).to.include({ accessionNumber: 'ACC7001', studyInstanceUid: uid, resultStatus: 'F' });
    expect(item.text.split('\n').slice(0, 2)).to.deep.equal(['line one', 'line two']);
  });

  it('an addendum or correction goes as C in OBR-25 and every OBX-11; the report itself as F', () => {
    const f = buildSecondReportOru(input());
    const c = buildSecondReportOru(input({ resultStatus: 'C' }));
    const obr = (t: string) => fieldsOf(segments(t).find((x) => x.startsWith('OBR|'))!);
    expect(obr(f)[25]).to.equal('F');
    expect(obr(c)[25]).to.equal('C');
    expect(obxs(f).map((o) => o[11])).to.deep.equal(['F', 'F', 'F', 'F']);
    expect(obxs(c).map((o) => o[11])).to.deep.equal(['C', 'C', 'C', 'C']);
    // Same order, same accession: the RIS files the correction on the same result.
    expect(obr(c)[3]).to.equal(obr(f)[3]);
  });
});

describe('writeBackDefect (the last check before an ORU leaves)', () => {
  it('passes a built ORU; names what is missing in an empty, anonymous or order-less one', () => {
    expect(writeBackDefect(buildSecondReportOru(input()))).to.equal(undefined);
    expect(writeBackDefect('')).to.equal('the ORU is empty');
    expect(writeBackDefect('not hl7 at all')).to.match(/^the ORU is not HL7/);
    const msh = 'MSH|^~\\&|SECONDREAD|GATEWAY|RIS|HOSP|20261202||ORU^R01|X1|P|2.5.1';
    expect(writeBackDefect(`${msh}\rPID|1||MRN1^^^HOSP\rOBR|1||\r`)).to.equal('the ORU has no OBR-3 (accession)');
    expect(writeBackDefect(`${msh}\rPID|1||\rOBR|1||ACC1\r`)).to.equal('the ORU has no PID-3 (patient id)');
    expect(writeBackDefect(`${msh}\rOBX|1|TX|x||text\r`)).to.equal('the ORU has no PID-3 (patient id) and no OBR-3 (accession)');
  });
});
