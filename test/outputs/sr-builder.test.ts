import { expect } from 'chai';
import dcmjs from 'dcmjs';
import {
  BASIC_TEXT_SR,
  buildKeyObjectSelection,
  buildSecondReadSr,
  KEY_OBJECT_SELECTION,
  outputUids,
  personName,
  type SecondReadSrInput,
} from '../../src/outputs/sr-builder.js';
import { makeTempDir } from '../helpers/tmp.js';
import { dciodvfy, dsrdump, hasDciodvfy, hasDsrdump, writeTemp } from './dicom-tools.js';

const CT = '1.2.840.10008.5.1.4.1.1.2';
const sampleSrInput = (): SecondReadSrInput => ({
  study: {
    studyInstanceUid: '1.2.826.0.1.3680043.8.498.1001',
    patientId: 'MRN-4711',
    issuerOfPatientId: 'HOSP',
    patientName: 'Müller^Hans',
    patientBirthDate: '19600101',
    patientSex: 'M',
    accessionNumber: 'ACC-4711',
    studyDate: '20261128',
    studyTime: '101500',
    studyId: 'S1',
    referringPhysicianName: 'Ref^Doc',
    studyDescription: 'CT Chest',
  },
  evidence: [
    { seriesInstanceUid: '1.2.826.0.1.3680043.8.498.2001', sopClassUid: CT, sopInstanceUid: '1.2.826.0.1.3680043.8.498.3001' },
    { seriesInstanceUid: '1.2.826.0.1.3680043.8.498.2001', sopClassUid: CT, sopInstanceUid: '1.2.826.0.1.3680043.8.498.3002' },
    { seriesInstanceUid: '1.2.826.0.1.3680043.8.498.2002', sopClassUid: CT, sopInstanceUid: '1.2.826.0.1.3680043.8.498.3003' },
  ],
  reader: { id: 'r-smith', name: 'Jane Smith' },
  report: {
    id: 'rep-1',
    version: 1,
    text: 'Missed 9 mm nodule in the left lower lobe.\nGröße unverändert.',
    impression: 'Nodule, follow-up CT.',
    radpeerScore: '3b',
    createdAt: new Date('2026-11-28T12:00:00Z'),
  },
  manufacturer: 'Second-read gateway',
  verifyingOrganization: 'TELERAD',
});

function naturalized(bytes: Buffer): Record<string, unknown> {
  const ab = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length) as ArrayBuffer;
  return dcmjs.data.DicomMetaDictionary.naturalizeDataset(dcmjs.data.DicomMessage.readFile(ab).dict);
}

describe('outputs: the DICOM SR and KOS of the second read', function () {
  this.timeout(30_000);
  let tmp: ReturnType<typeof makeTempDir>;
  before(() => (tmp = makeTempDir()));
  after(() => tmp.cleanup());

  it('a Basic Text SR in the same study, new series, our UIDs, stable across retries of the same report', () => {
    const input = sampleSrInput();
    const a = buildSecondReadSr(input);
    const b = buildSecondReadSr(input);
    expect(a.sopInstanceUid).to.equal(b.sopInstanceUid);
    expect(a.sopInstanceUid)
      .to.match(/^2\.25\.\d+$/)
      .and.have.length.at.most(64);
    expect(a.seriesInstanceUid).to.not.equal('1.2.826.0.1.3680043.8.498.2001');
    expect(buildSecondReadSr({ ...input, report: { ...input.report, id: 'rep-2', version: 2 } }).seriesInstanceUid).to.equal(a.seriesInstanceUid);
    expect(outputUids(input.study.studyInstanceUid, 'rep-2', 'sr').sopInstanceUid).to.not.equal(a.sopInstanceUid);
    const ds = naturalized(a.bytes);
    expect(ds['SOPClassUID']).to.equal(BASIC_TEXT_SR);
    expect(ds['StudyInstanceUID']).to.equal(input.study.studyInstanceUid);
    expect(ds['PatientID']).to.equal('MRN-4711');
    expect(ds['IssuerOfPatientID']).to.equal('HOSP');
    expect(ds['AccessionNumber']).to.equal('ACC-4711');
    expect(ds['Modality']).to.equal('SR');
    const evidence = ds['CurrentRequestedProcedureEvidenceSequence'] as {
      StudyInstanceUID: string;
      ReferencedSeriesSequence: { ReferencedSOPSequence: unknown[] }[];
    }[];
    expect(evidence).to.have.length(1);
    expect(evidence[0]!.StudyInstanceUID).to.equal(input.study.studyInstanceUid);
    expect(evidence[0]!.ReferencedSeriesSequence.map((s) => s.ReferencedSOPSequence.length)).to.deep.equal([2, 1]);
  });

  it('DCMTK dsrdump reads it: patient, reader as observer, report text, RADPEER and concordance as coded entries', function () {
    if (!hasDsrdump()) {
      console.log('      skipped: dcmtk not installed');
      return this.skip();
    }
    const file = writeTemp(tmp.dir, 'sr.dcm', buildSecondReadSr(sampleSrInput()).bytes);
    const out = dsrdump(file);
    expect(out.code, out.text).to.equal(0);
    // The one warning allowed: the tool's VR checker does not know UTF-8 (ISO_IR 192), which the SR declares.
    const complaints = out.text.split('\n').filter((l) => /^[EW]:/.test(l) && !/does not support this Specific Character Set: ISO_IR 192/.test(l));
    expect(complaints, out.text).to.deep.equal([]);
    expect(out.text).to.include('Basic Text SR Document');
    expect(out.text).to.include('Müller^Hans');
    expect(out.text).to.include('#MRN-4711:HOSP');
    expect(out.text).to.match(/has obs context PNAME:\(,,"Person Observer Name"\)="Smith\^Jane"/);
    expect(out.text).to.include('Missed 9 mm nodule in the left lower lobe.');
    expect(out.text).to.include('Größe unverändert.');
    expect(out.text).to.match(/CODE:\(,,"RADPEER score"\)=\(3b,99SRGW,/);
    expect(out.text).to.match(/CODE:\(,,"Second read concordance"\)=\(DISCORDANT,99SRGW,"Discordant"\)/);
    expect(out.text).to.not.include('Arbitration');
  });

  it('renders an arbitration when one is given, and an addendum names its predecessor', function () {
    if (!hasDsrdump()) {
      console.log('      skipped: dcmtk not installed');
      return this.skip();
    }
    const input = sampleSrInput();
    const first = buildSecondReadSr(input);
    const addendum = buildSecondReadSr({
      ...input,
      report: { ...input.report, id: 'rep-2', version: 2, radpeerScore: '1' },
      predecessor: { seriesInstanceUid: first.seriesInstanceUid, sopInstanceUid: first.sopInstanceUid, sopClassUid: BASIC_TEXT_SR },
      arbitration: { verdict: 'second', readerName: 'Al Third', text: 'The nodule is real.' },
    });
    const out = dsrdump(writeTemp(tmp.dir, 'sr2.dcm', addendum.bytes));
    expect(out.code, out.text).to.equal(0);
    expect(out.text).to.match(/CODE:\(,,"Arbitration verdict"\)=\(ARB-SECOND,99SRGW,"Arbitration agrees with the second read"\)/);
    expect(out.text).to.match(/PNAME:\(,,"Arbitrating reader"\)="Third\^Al"/);
    expect(out.text).to.include('The nodule is real.');
    expect(out.text).to.match(/=\(CONCORDANT,99SRGW,"Concordant"\)/);
    const ds = naturalized(addendum.bytes);
    const pred = ds['PredecessorDocumentsSequence'] as { ReferencedSeriesSequence: { ReferencedSOPSequence: { ReferencedSOPInstanceUID: string }[] }[] }[];
    expect(pred[0]!.ReferencedSeriesSequence[0]!.ReferencedSOPSequence[0]!.ReferencedSOPInstanceUID).to.equal(first.sopInstanceUid);
    expect(ds['InstanceNumber']).to.equal(2);
  });

  it('dicom3tools dciodvfy reports no error for the SR (with and without arbitration) and the KOS, and does for a broken one', function () {
    if (!hasDciodvfy()) {
      console.log('      skipped: dicom3tools not installed');
      return this.skip();
    }
    const input = sampleSrInput();
    const files = {
      sr: buildSecondReadSr(input).bytes,
      arbitrated: buildSecondReadSr({ ...input, arbitration: { verdict: 'other', text: 'Neither: it is a vessel.' } }).bytes,
      kos: buildKeyObjectSelection({ ...input, keyImages: input.evidence.slice(0, 2) }).bytes,
    };
    for (const [name, bytes] of Object.entries(files)) {
      const r = dciodvfy(writeTemp(tmp.dir, `${name}.dcm`, bytes));
      expect(r.errors, `${name}: ${r.text}`).to.deep.equal([]);
      expect(r.text).to.match(name === 'kos' ? /KeyObjectSelectionDocument/ : /BasicTextSR/);
    }
    // The check can fail: a verifying observer without an organisation is an error.
    const broken = dciodvfy(writeTemp(tmp.dir, 'broken.dcm', buildSecondReadSr({ ...input, verifyingOrganization: '' }).bytes));
    expect(broken.errors.join('\n')).to.match(/VerifyingOrganization/);
  });

  it('the KOS is titled "Of Interest" (113000, DCM) and lists exactly the marked images', function () {
    const input = sampleSrInput();
    const kos = buildKeyObjectSelection({ ...input, keyImages: [input.evidence[2]!] });
    const ds = naturalized(kos.bytes);
    expect(ds['SOPClassUID']).to.equal(KEY_OBJECT_SELECTION);
    expect(ds['Modality']).to.equal('KO');
    expect((ds['ConceptNameCodeSequence'] as { CodeValue: string; CodingSchemeDesignator: string }[])[0]).to.include({
      CodeValue: '113000',
      CodingSchemeDesignator: 'DCM',
    });
    const images = (ds['ContentSequence'] as { ValueType: string; ReferencedSOPSequence?: { ReferencedSOPInstanceUID: string }[] }[]).filter(
      (i) => i.ValueType === 'IMAGE',
    );
    expect(images.map((i) => i.ReferencedSOPSequence![0]!.ReferencedSOPInstanceUID)).to.deep.equal([input.evidence[2]!.sopInstanceUid]);
    expect(kos.sopInstanceUid).to.not.equal(buildSecondReadSr(input).sopInstanceUid);
    expect(() => buildKeyObjectSelection({ ...input, keyImages: [] })).to.throw(/at least one image/);
    if (hasDsrdump()) {
      const out = dsrdump(writeTemp(tmp.dir, 'kos.dcm', kos.bytes));
      expect(out.code, out.text).to.equal(0);
      expect(out.text).to.include('Key Object Selection Document');
    }
  });

  it('reader names become DICOM person names (family name last)', () => {
    expect(personName('Jane Q Smith')).to.equal('Smith^Jane Q');
    expect(personName('Smith^Jane')).to.equal('Smith^Jane');
    expect(personName('pool-reader-9')).to.equal('pool-reader-9');
  });
});
