import { expect } from 'chai';
import { Message } from 'node-hl7-client';
import { defaultConfig } from '../../src/config/schema.js';
import { ErrorCode } from '../../src/errors.js';
import { Hl7Message, escapeHl7, unescapeHl7 } from '../../src/hl7/hl7-message.js';
import { hl7TimeToIso, readHeader, scrapeHeader, toInboundEvent, type InboundEvent, type Hl7Mapping } from '../../src/hl7/hl7-parse.js';
import { adtA40, aiOru, omiO23, ormO01, oruR01, seg } from '../helpers/hl7-samples.js';
import { thrownGatewayError as rejection } from '../helpers/expect-error.js';

const mapping = defaultConfig().hl7.mapping;

function parse(text: string, o: { mapping?: Hl7Mapping; aiSenders?: string[] } = {}): InboundEvent {
  const m = Hl7Message.parse(text);
  return toInboundEvent(m, readHeader(m), { mapping: o.mapping ?? mapping, aiSenders: o.aiSenders ?? ['AI_VENDOR'] });
}

describe('HL7 parsing into domain events', () => {
  describe('orders', () => {
    it('reads an ORM^O01 (HL7 2.3): keys, procedure, modality, ORC-7 priority, reason, OBR-13, DG1, referrer', () => {
      const text = ormO01({ controlId: 'ORM1', accession: 'A100', studyUid: '1.2.3.4' });
      const h = readHeader(Hl7Message.parse(text));
      expect(h).to.include({ messageType: 'ORM', triggerEvent: 'O01', version: '2.3', controlId: 'ORM1', sendingApplication: 'RIS', sendingFacility: 'HOSP' });
      const e = parse(text);
      if (e.kind !== 'order') throw new Error(e.kind);
      expect(e.patient).to.deep.equal({
        id: 'MRN1001',
        authority: 'HOSP',
        identifiers: [
          { id: 'MRN1001', authority: 'HOSP', type: 'MR' },
          { id: '9434765919', authority: 'NHS', type: 'NH' },
        ],
      });
      const o = e.items[0]!;
      expect(o).to.include({
        accessionNumber: 'A100',
        studyInstanceUid: '1.2.3.4',
        placerOrderNumber: 'PLA100',
        fillerOrderNumber: 'A100',
        orderControl: 'NW',
        modality: 'CT',
        priority: 'S',
        relevantClinicalInfo: 'Staging of known lung carcinoma',
        secondOpinionRequested: false,
      });
      expect(o.procedure).to.deep.equal({ code: 'CTCHEST', text: 'CT Chest with contrast', system: 'L' });
      expect(o.reasonForStudy.map((r) => r.code)).to.deep.equal(['C34.90', 'R91.8']);
      expect(o.diagnoses.map((d) => d.code)).to.deep.equal(['C34.90', 'J44.9']);
      expect(o.referringPhysician).to.deep.equal({ id: '1234', familyName: 'REFERRER', givenName: 'RITA' });
    });

    it('reads the configured second-opinion flag', () => {
      const e = parse(ormO01({}, { secondOpinion: true }));
      expect(e.kind === 'order' && e.items[0]!.secondOpinionRequested).to.equal(true);
      const custom = { ...mapping, secondOpinion: { field: 'OBR-13', value: 'staging of known lung carcinoma' } };
      const e2 = parse(ormO01(), { mapping: custom });
      expect(e2.kind === 'order' && e2.items[0]!.secondOpinionRequested).to.equal(true);
    });

    it('reads an OMI^O23 (HL7 2.5.1): TQ1-9 priority, IPC StudyInstanceUID and modality', () => {
      const e = parse(omiO23({ accession: 'A200', studyUid: '1.2.840.99.1' }));
      if (e.kind !== 'order') throw new Error(e.kind);
      expect(e.items[0]).to.include({ accessionNumber: 'A200', studyInstanceUid: '1.2.840.99.1', modality: 'MR', priority: 'A' });
      expect(e.items[0]!.referringPhysician?.id).to.equal('5678');
    });

    it('falls back along the accession paths (OBR-3.1, else OBR-18, else IPC-1) and honours a changed mapping', () => {
      const noObr3 = ormO01({ accession: 'A300' })
        .replace('|PLA300|A300|CTCHEST', '|PLA300||CTCHEST')
        .replace(/^ORC\|NW\|PLA300\|A300\|/m, 'ORC|NW|PLA300||');
      const e = parse(noObr3);
      expect(e.kind === 'order' && e.items[0]!.accessionNumber).to.equal('A300'); // from OBR-18
      const onlyIpc = omiO23({ accession: 'A301' }).replace('|PLA301|A301|MRBRAIN', '|PLA301||MRBRAIN').replace('ORC|NW|PLA301|A301|', 'ORC|NW|PLA301||');
      const e2 = parse(onlyIpc);
      expect(e2.kind === 'order' && e2.items[0]!.accessionNumber).to.equal('A301'); // from IPC-1
      const e3 = parse(ormO01({ accession: 'A302' }), { mapping: { ...mapping, accession: ['ORC-2.1'] } });
      expect(e3.kind === 'order' && e3.items[0]!.accessionNumber).to.equal('PLA302');
    });

    it('picks the PID-3 repetition of the configured assigning authority', () => {
      const e = parse(ormO01(), { mapping: { ...mapping, patientIdAuthority: 'NHS' } });
      expect(e.kind === 'order' && e.patient).to.include({ id: '9434765919', authority: 'NHS' });
      // No repetition of that authority: the first is selected (matching still compares every repetition with its authority).
      const none = parse(ormO01(), { mapping: { ...mapping, patientIdAuthority: 'ELSEWHERE' } });
      expect(none.kind === 'order' && none.patient).to.include({ id: 'MRN1001', authority: 'HOSP' });
    });

    it('rejects an order it could never link', () => {
      const text = ormO01({ accession: 'A1' })
        .replace(/\|PLA1\|A1\|/g, '|||')
        .replace(/^OBR\|.*$/m, (l) => l.replace('|A1|', '||'));
      const err = rejection(() => parse(text));
      expect(err.code).to.equal(ErrorCode.invalidInput);
    });
  });

  describe('primary reports (ORU^R01)', () => {
    it('joins every TX/FT/ST OBX in order and undoes \\F\\ \\S\\ \\T\\ \\R\\ \\E\\ and \\.br\\', () => {
      const text = [
        'MSH|^~\\&|RIS|HOSP|SECONDREAD|GATEWAY|20260301||ORU^R01^ORU_R01|R1|P|2.5.1',
        'PID|1||MRN5^^^HOSP^MR||DOE^JOHN',
        seg('OBR', { 1: '1', 3: 'ACC5', 4: 'CTHEAD^CT Head^L', 7: '20260301101500-0500', 25: 'C', 32: 'RAD9&READER&RITA' }),
        seg('OBX', { 1: '1', 2: 'TX', 3: 'IMP^Impression^L', 5: 'Pipe \\F\\ caret \\S\\ amp \\T\\ tilde \\R\\ backslash \\E\\ end', 11: 'C' }),
        seg('OBX', { 1: '2', 2: 'CE', 3: 'CODE^Coded^L', 5: 'X^not text', 11: 'C' }),
        seg('OBX', { 1: '3', 2: 'FT', 3: 'FND^Findings^L', 5: 'First line\\.br\\Second line~Repetition line', 11: 'C' }),
        seg('OBX', { 1: '4', 2: 'ST', 3: 'ADD^Addendum^L', 5: 'Hex \\X41\\ and \\H\\bold\\N\\', 11: 'C' }),
      ].join('\r');
      const e = parse(text);
      if (e.kind !== 'report') throw new Error(e.kind);
      const r = e.items[0]!;
      expect(r.text).to.equal('Pipe | caret ^ amp & tilde ~ backslash \\ end\nFirst line\nSecond line\nRepetition line\nHex A and bold');
      expect(r).to.include({ resultStatus: 'C', accessionNumber: 'ACC5', observedAt: '2026-03-01T15:15:00.000Z' });
      expect(r.radiologist).to.deep.equal({ id: 'RAD9', familyName: 'READER', givenName: 'RITA' });
      expect(r.reasonForStudy).to.deep.equal([]);
      expect(r.diagnoses).to.deep.equal([]);
      expect(r.studyInstanceUid).to.equal(null);
    });

    it('leaves OBX-11 W (wrong patient) and D (deleted) out of the text, keeps NTE after the OBR in order, and flags W', () => {
      const text = [
        'MSH|^~\\&|RIS|HOSP|SECONDREAD|GATEWAY|20260301||ORU^R01^ORU_R01|R7|P|2.5.1',
        'PID|1||MRN7^^^HOSP^MR||DOE^JOHN',
        'NTE|1|L|Patient-level note, not report text',
        seg('OBR', { 1: '1', 3: 'ACC7', 4: 'CTHEAD^CT Head^L', 25: 'C' }),
        'NTE|1|L|Technique: non-contrast.',
        seg('OBX', { 1: '1', 2: 'TX', 3: 'FND^Findings^L', 5: 'Kept finding', 11: 'C' }),
        seg('OBX', { 1: '2', 2: 'TX', 3: 'FND^Findings^L', 5: 'Deleted finding', 11: 'D' }),
        'NTE|2|L|Comment on the finding.',
        seg('OBX', { 1: '3', 2: 'TX', 3: 'FND^Findings^L', 5: 'Wrong patient finding', 11: 'W' }),
      ].join('\r');
      const e = parse(text);
      if (e.kind !== 'report') throw new Error(e.kind);
      expect(e.items[0]!.text).to.equal('Technique: non-contrast.\nKept finding\nComment on the finding.');
      expect(e.items[0]!.wrongPatient).to.equal(true);
      const clean = parse(text.replace(/\|W$/m, '|F'));
      expect(clean.kind === 'report' && clean.items[0]!.wrongPatient).to.equal(false);
    });

    it('reads ADT^A34 (merge patient id only) like A40', () => {
      const e = parse(adtA40({ patientId: 'NEW2', priorPatientId: 'OLD2' }).replace('ADT^A40', 'ADT^A34'));
      expect(e.kind).to.equal('patient-merge');
    });

    it('reads procedure, reason, diagnoses, StudyInstanceUID (ZDS-1) and status from a 2.5.1 report', () => {
      const e = parse(oruR01({ accession: 'ACC6', studyUid: '1.2.3.6' }, { status: 'P' }) + 'DG1|1|I10|C34.1^Upper lobe^I10\r');
      if (e.kind !== 'report') throw new Error(e.kind);
      expect(e.items[0]).to.include({ resultStatus: 'P', studyInstanceUid: '1.2.3.6', accessionNumber: 'ACC6', observedAt: '2026-03-01T09:30:00.000Z' });
      expect(e.items[0]!.procedure?.code).to.equal('CTCHEST');
      expect(e.items[0]!.reasonForStudy[0]?.code).to.equal('C34.90');
      expect(e.items[0]!.diagnoses[0]?.code).to.equal('C34.1');
    });

    it('reads an HL7 2.3 report (no ZDS, OBR-32 as components, LF segment ends)', () => {
      const text = [
        'MSH|^~\\&|OLDRIS|HOSP|SECONDREAD|GATEWAY|200601011200||ORU^R01|OLD1|P|2.3',
        'PID|||MRN7||DOE^ANN',
        seg('OBR', { 1: '1', 3: 'ACC7', 4: 'XR^Chest XR', 25: 'F', 32: 'DR42^SMITH^JOHN' }),
        seg('OBX', { 1: '1', 2: 'TX', 5: 'No acute disease.' }),
      ].join('\n');
      const e = parse(text);
      if (e.kind !== 'report') throw new Error(e.kind);
      expect(e.items[0]).to.include({ text: 'No acute disease.', resultStatus: 'F' });
      expect(e.items[0]!.radiologist?.id).to.equal('DR42');
      expect(e.items[0]!.observedAt).to.equal(null);
    });

    it('splits a report with two OBR into two items, each with its own OBX', () => {
      const text = [
        'MSH|^~\\&|RIS|HOSP|SECONDREAD|GATEWAY|20260301||ORU^R01|R2|P|2.5.1',
        'PID|1||MRN8',
        seg('OBR', { 1: '1', 3: 'ACC8A', 25: 'F' }),
        seg('OBX', { 1: '1', 2: 'TX', 5: 'first' }),
        seg('OBR', { 1: '2', 3: 'ACC8B', 25: 'F' }),
        seg('OBX', { 1: '1', 2: 'TX', 5: 'second' }),
      ].join('\r');
      const e = parse(text);
      if (e.kind !== 'report') throw new Error(e.kind);
      expect(e.items.map((i) => [i.accessionNumber, i.text])).to.deep.equal([
        ['ACC8A', 'first'],
        ['ACC8B', 'second'],
      ]);
    });

    it('rejects a report without a usable result status or link key', () => {
      const noStatus = oruR01().replace(/^(OBR(?:\|[^|\r]*){24})\|F/m, '$1|');
      expect(rejection(() => parse(noStatus)).message).to.match(/OBR-25/);
      const badStatus = oruR01().replace(/^(OBR(?:\|[^|\r]*){24})\|F/m, '$1|I');
      expect(rejection(() => parse(badStatus)).message).to.match(/result status I/);
      const noKeys = oruR01({ accession: 'ZZ' }).replace(/\|PLZZ\|ZZ\|/, '|PLZZ||');
      expect(rejection(() => parse(noKeys)).message).to.match(/neither an accession number nor a StudyInstanceUID/);
    });
  });

  describe('AI results', () => {
    it('treats an ORU from an hl7.aiSenders application as AI results: OBX-3 finding, OBX-8 A positive', () => {
      const e = parse(
        aiOru({ accession: 'ACC9' }, [
          { code: 'RID3875', text: 'Lung nodule', flag: 'A' },
          { code: 'RID4834', text: 'Pneumothorax', flag: 'N' },
          { code: 'RID5350', text: 'Pulmonary embolism', flag: 'AA' },
          { code: 'RID1', text: 'Unflagged', flag: '' },
        ]),
      );
      if (e.kind !== 'ai-result') throw new Error(e.kind);
      expect(e.items[0]!.accessionNumber).to.equal('ACC9');
      expect(e.items[0]!.findings.map((f) => [f.code, f.text, f.positive, f.value])).to.deep.equal([
        ['RID3875', 'Lung nodule', true, 'Detected'],
        ['RID4834', 'Pneumothorax', false, 'Not detected'],
        ['RID5350', 'Pulmonary embolism', true, 'Detected'],
        ['RID1', 'Unflagged', false, 'Detected'],
      ]);
      expect(e.items[0]!.findings[0]!.observedAt).to.equal('2026-03-01T10:45:30.000Z');
    });

    it('treats the same ORU from another sender as a primary report', () => {
      expect(parse(aiOru(), { aiSenders: [] }).kind).to.equal('report');
    });
  });

  describe('ADT^A40 patient merge', () => {
    it('reads the surviving id (PID-3) and the prior id (MRG-1)', () => {
      const e = parse(adtA40({ patientId: 'NEW1', priorPatientId: 'OLD1' }));
      expect(e).to.deep.equal({
        kind: 'patient-merge',
        items: [
          {
            patient: { id: 'NEW1', authority: 'HOSP', identifiers: [{ id: 'NEW1', authority: 'HOSP', type: 'MR' }] },
            prior: { id: 'OLD1', authority: 'HOSP', identifiers: [{ id: 'OLD1', authority: 'HOSP', type: 'MR' }] },
          },
        ],
      });
    });

    it('rejects an A40 without MRG', () => {
      expect(rejection(() => parse(adtA40({ priorPatientId: 'X' }).replace(/MRG\|[^\r]*\r/, ''))).code).to.equal(ErrorCode.invalidInput);
    });
  });

  describe('what is not ours', () => {
    it('answers unsupported types with table 0357 codes 201 (known type, other event) and 200 (unknown type)', () => {
      const a01 = rejection(() => parse(adtA40({ priorPatientId: 'X' }).replace('ADT^A40^ADT_A39', 'ADT^A01')));
      expect(a01.code).to.equal(ErrorCode.unsupported);
      expect((a01.details as { hl7Code: string }).hl7Code).to.equal('201');
      const zzz = rejection(() => parse(oruR01().replace('ORU^R01^ORU_R01', 'ZZZ^Z01')));
      expect((zzz.details as { hl7Code: string }).hl7Code).to.equal('200');
    });

    it('refuses text that is not HL7 and reads MSH-10 from a truncated header', () => {
      expect(rejection(() => Hl7Message.parse('hello world')).code).to.equal(ErrorCode.unreadableData);
      expect(rejection(() => Hl7Message.parse('MSH|^~\\&|A|B\rthis is not a segment')).code).to.equal(ErrorCode.unreadableData);
      expect(scrapeHeader('MSH|^~\\&|RIS|HOSP|GW|GW|2026||ORU^R01|CTL42|P|2.3\rPID|garbage').controlId).to.equal('CTL42');
      expect(scrapeHeader('garbage').controlId).to.equal(null);
    });

    it('requires MSH-10', () => {
      expect(rejection(() => parse(oruR01({ controlId: '' }))).message).to.match(/MSH-10/);
    });
  });

  describe('encoding', () => {
    it('uses the delimiters declared in MSH-1/MSH-2', () => {
      const standard = [
        'MSH|^~\\&|RIS|HOSP|GW|GW|2026||ORU^R01|C1|P|2.5.1',
        'PID|1||MRN9^^^HOSP',
        seg('OBR', { 1: '1', 3: 'ACC9^X', 4: 'P1^Proc', 25: 'F' }),
        seg('OBX', { 1: '1', 2: 'TX', 3: 'X', 5: 'a # sign: \\F\\ and star \\S\\' }),
      ].join('\r');
      // The same message with # as field and * as component separator.
      const text = standard
        .replace(/#/g, '\u0000')
        .replace(/\|/g, '#')
        .replace(/\^/g, '*')
        .replace(/\u0000/g, '|');
      const m = Hl7Message.parse(text);
      expect(readHeader(m)).to.include({ messageType: 'ORU', triggerEvent: 'R01', controlId: 'C1' });
      const e = parse(text);
      if (e.kind !== 'report') throw new Error(e.kind);
      expect(e.items[0]!.text).to.equal('a | sign: # and star *');
      expect(e.items[0]!.accessionNumber).to.equal('ACC9');
      expect(e.kind === 'report' && e.patient.id).to.equal('MRN9');
    });

    it('escape and unescape are inverse for text with every delimiter', () => {
      const s = 'a|b^c&d~e\\f\ng';
      expect(unescapeHl7(escapeHl7(s))).to.equal(s);
    });

    it('converts HL7 times to ISO-8601 (UTC when an offset is given)', () => {
      expect(hl7TimeToIso('20260301101500+0100')).to.equal('2026-03-01T09:15:00.000Z');
      expect(hl7TimeToIso('20260301101500.25-0000')).to.equal('2026-03-01T10:15:00.250Z');
      expect(hl7TimeToIso('202603011015')).to.equal('2026-03-01T10:15:00.000');
      expect(hl7TimeToIso('2026')).to.equal('2026-01-01T00:00:00.000');
      expect(hl7TimeToIso('yesterday')).to.equal(null);
    });

    it('agrees with node-hl7-client on identifiers and text fields of every sample', () => {
      for (const text of [ormO01({ studyUid: '1.2.3' }), omiO23(), oruR01({ studyUid: '1.2.4' }), aiOru(), adtA40({ priorPatientId: 'P0' })]) {
        const ours = Hl7Message.parse(text);
        const lib = new Message({ text });
        expect(ours.get('MSH-10')).to.equal(lib.get('MSH.10').toString());
        expect(ours.get('PID-3.1')).to.equal(lib.get('PID.3.1').toString());
        expect(ours.get('PID-3.4') ?? '').to.equal(lib.get('PID.3.4').toString());
        for (const p of ['OBR-3.1', 'OBR-4.2', 'OBR-24', 'ZDS-1.1', 'IPC-3', 'MRG-1.1']) {
          const [s, f, c] = p.split(/[-.]/);
          const libValue = lib.get(`${s}.${f}${c ? `.${c}` : ''}`).toString();
          expect(ours.get(p) ?? '', p).to.equal(libValue.split('^')[0]);
        }
      }
    });
  });
});
