import { createHash } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { inflateRawSync } from 'node:zlib';
import { expect } from 'chai';
import dcmjs, { type DicomDataDict } from 'dcmjs';
import { GatewayError } from '../../src/errors.js';
import { deidentifyPart10, shiftDa, shiftDt, type DeidentifyOptions, type DeidentifyResult, type PseudonymSource } from '../../src/forwarding/deidentify.js';
import { basicProfile } from '../../src/forwarding/deidentify-profile.js';
import { generateStudy, newUid, SopClass, Ts, type GeneratedStudy } from '../../scripts/lib/study-generator.js';
import { hasDcmtk } from '../helpers/dicom-peers.js';
import { makeTempDir } from '../helpers/tmp.js';

const { DicomDict, DicomMessage, DicomMetaDictionary } = dcmjs.data;
dcmjs.log.setLevel('error');

const PATIENT_NAME = 'DOE^JANE^QUINCY';
const PATIENT_ID = 'MRN-99812345';
const ACCESSION = 'ACC-77120001';
const SHIFT = 10;
/** Strings that must not appear anywhere in any output file (raw bytes). */
const SECRETS = [
  PATIENT_NAME,
  'DOE^JANE',
  'QUINCY',
  PATIENT_ID,
  ACCESSION,
  'OTHER-ID-4711',
  'TECH^TOM',
  'SERIAL-XYZ-42',
  'SECOND READ TEST HOSPITAL',
  '1 HOSPITAL ROAD',
  'READER^RITA',
  'VERIFIER^VERA',
  'EMP-123',
  'PLACER-9',
  'FILLER-9',
  'SECRET-PRIVATE',
  'STATION-7',
  'CHEST FOR DOE',
];

/** Type 2 in the SR Referenced Request Sequence: the profile's X becomes Z there (the IOD stays valid). */
const REFERENCED_REQUEST_TYPE2 = new Set(['00081110', '00401001', '00402016', '00402017']);

const SR_CLASS = '1.2.840.10008.5.1.4.1.1.88.22';
const STUDY_SOP_CLASS = '1.2.840.10008.3.1.2.3.1';

/** A pseudonym source like the gateway's: deterministic per original, memoised, recording what it was asked. */
function pseudonyms(salt = 'study-1/pool-web'): PseudonymSource & { asked: Map<string, string> } {
  const asked = new Map<string, string>();
  const h = (s: string): string => createHash('sha256').update(`${salt}|${s}`).digest('hex');
  return {
    asked,
    uid(original) {
      const v = `2.25.${BigInt(`0x${h(original).slice(0, 32)}`).toString(10)}`;
      asked.set(original, v);
      return v;
    },
    patientId: (original) => `PSEUDO-${h(original).slice(0, 8).toUpperCase()}`,
    patientName: (originalPatientId) => `ANON^PSEUDO-${h(originalPatientId).slice(0, 8).toUpperCase()}`,
    accessionNumber: (original) => `PACC-${h(original).slice(0, 8).toUpperCase()}`,
    dateShiftDays: () => SHIFT,
  };
}

const BASIC: DeidentifyOptions = { retainLongitudinalModifiedDates: false, retainPatientCharacteristics: false };
const BOTH: DeidentifyOptions = { retainLongitudinalModifiedDates: true, retainPatientCharacteristics: true };

function ab(b: Buffer): ArrayBuffer {
  return b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer;
}

function read(bytes: Buffer): { meta: DicomDataDict; dict: DicomDataDict } {
  const d = DicomMessage.readFile(ab(bytes));
  return { meta: d.meta, dict: d.dict };
}

function str(dict: DicomDataDict, tag: string): string | undefined {
  const v = dict[tag]?.Value?.[0];
  if (v === undefined) return undefined;
  if (typeof v === 'object' && v !== null && 'Alphabetic' in v) return String((v as { Alphabetic: string }).Alphabetic);
  return String(v).trim();
}

/** The values of an attribute, without the empty strings a zero-length value reads back as. */
function vals(dict: DicomDataDict, tag: string): unknown[] {
  return (dict[tag]?.Value ?? []).filter((v) => v !== '');
}

function items(dict: DicomDataDict, tag: string): DicomDataDict[] {
  return (dict[tag]?.Value ?? []) as DicomDataDict[];
}

/** Every (tag, element, depth) in a dataset, inside sequences too. */
function* walk(dict: DicomDataDict, depth = 0): Generator<{ tag: string; vr: string; values: unknown[]; depth: number }> {
  for (const [tag, el] of Object.entries(dict)) {
    yield { tag, vr: el.vr, values: el.Value ?? [], depth };
    if (el.vr === 'SQ') for (const item of (el.Value ?? []) as DicomDataDict[]) yield* walk(item, depth + 1);
  }
}

function dcmtk(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(args[0] as string, args.slice(1), {
    encoding: 'utf8',
    env: { ...process.env, DCMDICTPATH: process.env.DCMDICTPATH ?? '/usr/share/libdcmtk17/dicom.dic' },
  });
  return { status: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
}

/** Skips the calling test, saying so, when DCMTK is not installed. */
function requireDcmtk(ctx: Mocha.Context, what: string): void {
  if (!hasDcmtk()) {
    console.log(`skipped: DCMTK is not installed (${what})`);
    ctx.skip();
  }
}

function dcmdumpOk(file: string): string {
  const r = dcmtk(['dcmdump', '-dc', '+L', file]);
  expect(r.status, `dcmdump ${file}: ${r.stderr}`).to.equal(0);
  expect(r.stderr, `dcmdump ${file}`).to.not.match(/^(E|W|F):/m);
  return r.stdout;
}

/** The raw bytes of the top-level Pixel Data element, found without the code under test: from its tag to the end of the file. */
function pixelElement(bytes: Buffer, explicit: boolean): Buffer {
  const tag = Buffer.from([0xe0, 0x7f, 0x10, 0x00]);
  let i = bytes.indexOf(tag, 132);
  while (i >= 0) {
    const vr = bytes.toString('latin1', i + 4, i + 6);
    if (!explicit || vr === 'OB' || vr === 'OW') return bytes.subarray(i);
    i = bytes.indexOf(tag, i + 1);
  }
  throw new Error('no pixel data');
}

function writePart10(dict: DicomDataDict, sopClassUid: string, sopInstanceUid: string): Buffer {
  const meta = DicomMetaDictionary.denaturalizeDataset({
    FileMetaInformationVersion: new Uint8Array([0, 1]).buffer,
    MediaStorageSOPClassUID: sopClassUid,
    MediaStorageSOPInstanceUID: sopInstanceUid,
    TransferSyntaxUID: Ts.explicitLe,
    ImplementationClassUID: '2.25.80302813137786398554742050926734630921',
    SourceApplicationEntityTitle: 'STATION-7',
    _vrMap: { FileMetaInformationVersion: 'OB' },
  });
  const d = new DicomDict(meta);
  d.dict = dict;
  return Buffer.from(d.write());
}

const code = (value: string, scheme: string, meaning: string): Record<string, string> => ({
  CodeValue: value,
  CodingSchemeDesignator: scheme,
  CodeMeaning: meaning,
});

/** Adds everything identifying we can think of to a generated CT instance. */
function enrichImage(bytes: Buffer, o: { burnedIn: 'YES' | 'NO'; derivedFrom?: string; studyUid: string }): Buffer {
  const src = DicomMessage.readFile(ab(bytes));
  const nat = DicomMetaDictionary.naturalizeDataset(src.dict) as Record<string, unknown>;
  Object.assign(nat, {
    PatientName: [{ Alphabetic: PATIENT_NAME }],
    PatientID: PATIENT_ID,
    AccessionNumber: ACCESSION,
    IssuerOfPatientID: 'HOSPITAL-A',
    PatientBirthDate: '19600214',
    PatientSex: 'F',
    PatientAge: '064Y',
    PatientSize: 1.68,
    PatientWeight: 71,
    EthnicGroup: 'NORDIC',
    SmokingStatus: 'NO',
    PatientAddress: '1 HOSPITAL ROAD',
    PatientComments: `likes visitors, ask for ${PATIENT_NAME}`,
    StudyDate: '20240131',
    SeriesDate: '20240131',
    AcquisitionDate: '20240131',
    ContentDate: '20240131',
    AcquisitionTime: '083200',
    InstanceCreationDate: '20240201',
    InstanceCreationTime: '101010',
    StudyID: 'S-1',
    InstitutionName: 'SECOND READ TEST HOSPITAL',
    InstitutionAddress: '1 HOSPITAL ROAD',
    OperatorsName: [{ Alphabetic: 'TECH^TOM' }],
    PerformingPhysicianName: [{ Alphabetic: 'READER^RITA' }],
    DeviceSerialNumber: 'SERIAL-XYZ-42',
    StationName: 'STATION-7',
    ProtocolName: 'CHEST FOR DOE',
    BurnedInAnnotation: o.burnedIn,
    OtherPatientIDsSequence: [{ PatientID: 'OTHER-ID-4711', IssuerOfPatientID: 'HOSPITAL-B', TypeOfPatientID: 'TEXT' }],
    RequestAttributesSequence: [
      { AccessionNumber: ACCESSION, RequestedProcedureID: 'RP-1', ScheduledProcedureStepID: 'SPS-1', RequestedProcedureDescription: 'CHEST FOR DOE' },
    ],
    ReferencedStudySequence: [{ ReferencedSOPClassUID: STUDY_SOP_CLASS, ReferencedSOPInstanceUID: o.studyUid }],
  });
  if (o.derivedFrom) {
    nat.DerivationImageSequence = [
      {
        DerivationDescription: `derived for ${PATIENT_NAME}`,
        DerivationCodeSequence: [code('113076', 'DCM', 'Segmentation')],
        SourceImageSequence: [{ ReferencedSOPClassUID: SopClass.ct, ReferencedSOPInstanceUID: o.derivedFrom }],
      },
    ];
  }
  const dict = DicomMetaDictionary.denaturalizeDataset(nat);
  // Private blocks: one to keep when safe-listed, one never safe; and one inside a sequence item.
  dict['00190010'] = { vr: 'LO', Value: ['ACME 1.0'] };
  dict['00191001'] = { vr: 'LO', Value: ['SECRET-PRIVATE'] };
  dict['0019100C'] = { vr: 'DS', Value: [42] };
  dict['00090010'] = { vr: 'LO', Value: ['OTHER VENDOR'] };
  dict['00091001'] = { vr: 'LO', Value: [PATIENT_ID] };
  const ref = (dict['00081110']?.Value ?? [])[0] as DicomDataDict;
  ref['00330010'] = { vr: 'LO', Value: ['NESTED VENDOR'] };
  ref['00331001'] = { vr: 'LO', Value: [PATIENT_NAME] };
  // An overlay plane (group 6000) with data and a comment.
  dict['60000010'] = { vr: 'US', Value: [16] };
  dict['60000011'] = { vr: 'US', Value: [16] };
  dict['60000040'] = { vr: 'CS', Value: ['G'] };
  dict['60000050'] = { vr: 'SS', Value: [1, 1] };
  dict['60000100'] = { vr: 'US', Value: [1] };
  dict['60000102'] = { vr: 'US', Value: [0] };
  dict['60003000'] = { vr: 'OW', Value: [new Uint8Array(32).fill(0xff).buffer] };
  dict['60004000'] = { vr: 'LT', Value: [`overlay by TECH^TOM`] };
  return writePart10(dict, str(src.dict, '00080016') as string, str(src.dict, '00080018') as string);
}

/** A Comprehensive SR about the study, referencing two of its images. */
function buildSr(study: GeneratedStudy, sopInstanceUid: string, seriesUid: string): Buffer {
  const [img1, img2] = study.instances as [GeneratedStudy['instances'][0], GeneratedStudy['instances'][0]];
  const nat = {
    SpecificCharacterSet: 'ISO_IR 192',
    SOPClassUID: SR_CLASS,
    SOPInstanceUID: sopInstanceUid,
    StudyDate: '20240131',
    ContentDate: '20240131',
    StudyTime: '083000',
    ContentTime: '120000',
    AccessionNumber: ACCESSION,
    Modality: 'SR',
    Manufacturer: 'SYNTHETIC',
    ReferringPhysicianName: [{ Alphabetic: 'REFERRER^ROBERTA' }],
    PatientName: [{ Alphabetic: PATIENT_NAME }],
    PatientID: PATIENT_ID,
    PatientBirthDate: '19600214',
    PatientSex: 'F',
    StudyInstanceUID: study.studyInstanceUid,
    SeriesInstanceUID: seriesUid,
    StudyID: 'S-1',
    SeriesNumber: 99,
    InstanceNumber: 1,
    ValueType: 'CONTAINER',
    ConceptNameCodeSequence: [code('18748-4', 'LN', 'Diagnostic Imaging Report')],
    ContinuityOfContent: 'SEPARATE',
    CompletionFlag: 'COMPLETE',
    VerificationFlag: 'VERIFIED',
    VerifyingObserverSequence: [
      {
        VerifyingObserverName: [{ Alphabetic: 'VERIFIER^VERA' }],
        VerifyingOrganization: 'SECOND READ TEST HOSPITAL',
        VerificationDateTime: '20240131120500.123+0100',
        VerifyingObserverIdentificationCodeSequence: [code('EMP-123', '99HOSP', 'VERIFIER^VERA')],
      },
    ],
    ReferencedRequestSequence: [
      {
        StudyInstanceUID: study.studyInstanceUid,
        AccessionNumber: ACCESSION,
        RequestedProcedureDescription: 'CHEST FOR DOE',
        RequestedProcedureCodeSequence: [],
        RequestedProcedureID: 'RP-1',
        PlacerOrderNumberImagingServiceRequest: 'PLACER-9',
        FillerOrderNumberImagingServiceRequest: 'FILLER-9',
        ReferencedStudySequence: [],
      },
    ],
    CurrentRequestedProcedureEvidenceSequence: [
      {
        StudyInstanceUID: study.studyInstanceUid,
        ReferencedSeriesSequence: [
          {
            SeriesInstanceUID: img1.seriesInstanceUid,
            ReferencedSOPSequence: [{ ReferencedSOPClassUID: SopClass.ct, ReferencedSOPInstanceUID: img1.sopInstanceUid }],
          },
          {
            SeriesInstanceUID: img2.seriesInstanceUid,
            ReferencedSOPSequence: [{ ReferencedSOPClassUID: SopClass.ct, ReferencedSOPInstanceUID: img2.sopInstanceUid }],
          },
        ],
      },
    ],
    ContentSequence: [
      {
        RelationshipType: 'HAS OBS CONTEXT',
        ValueType: 'PNAME',
        ConceptNameCodeSequence: [code('121008', 'DCM', 'Person Observer Name')],
        PersonName: [{ Alphabetic: 'READER^RITA' }],
      },
      {
        RelationshipType: 'CONTAINS',
        ValueType: 'IMAGE',
        ConceptNameCodeSequence: [code('121200', 'DCM', 'Illustration of ROI')],
        ReferencedSOPSequence: [{ ReferencedSOPClassUID: SopClass.ct, ReferencedSOPInstanceUID: img2.sopInstanceUid }],
      },
      { RelationshipType: 'CONTAINS', ValueType: 'DATE', ConceptNameCodeSequence: [code('111060', 'DCM', 'Study Date')], Date: '20240130' },
      { RelationshipType: 'CONTAINS', ValueType: 'TEXT', ConceptNameCodeSequence: [code('121071', 'DCM', 'Finding')], TextValue: 'No acute findings.' },
    ],
  };
  return writePart10(DicomMetaDictionary.denaturalizeDataset(nat), SR_CLASS, sopInstanceUid);
}

describe('PS3.15 basic profile de-identification', function () {
  this.timeout(60_000);
  let tmp: ReturnType<typeof makeTempDir>;
  let study: GeneratedStudy;
  const inputs: { name: string; path: string; bytes: Buffer; ts: string }[] = [];
  let srUid: string;

  before(() => {
    tmp = makeTempDir('gw-deid-');
    study = generateStudy(path.join(tmp.dir, 'gen'), {
      instances: 4,
      series: 2,
      rows: 16,
      columns: 16,
      patientName: PATIENT_NAME,
      patientId: PATIENT_ID,
      accessionNumber: ACCESSION,
      studyDate: '20240131',
    });
    const first = study.instances[0]!.sopInstanceUid;
    study.instances.forEach((inst, i) => {
      const bytes = enrichImage(readFileSync(inst.path), {
        burnedIn: i === 0 ? 'YES' : 'NO',
        studyUid: study.studyInstanceUid,
        ...(i === 1 ? { derivedFrom: first } : {}),
      });
      const p = path.join(tmp.dir, `img${i}.dcm`);
      writeFileSync(p, bytes);
      inputs.push({ name: `img${i}`, path: p, bytes, ts: Ts.explicitLe });
    });
    srUid = newUid();
    const sr = buildSr(study, srUid, newUid());
    writeFileSync(path.join(tmp.dir, 'sr.dcm'), sr);
    inputs.push({ name: 'sr', path: path.join(tmp.dir, 'sr.dcm'), bytes: sr, ts: Ts.explicitLe });
    // The same enriched image in other encodings, made by DCMTK.
    const src = inputs[2]!.path;
    if (!hasDcmtk()) {
      console.log('skipped: DCMTK is not installed (dcmcrle, dcmcjpeg, dcmconv): the RLE, JPEG lossless, implicit VR and deflated inputs are not made');
      return;
    }
    for (const [name, ts, cmd] of [
      ['rle', Ts.rle, ['dcmcrle', '--quiet', src]],
      ['jpegll', Ts.jpegLossless70, ['dcmcjpeg', '--quiet', '+e1', src]],
      ['implicit', Ts.implicitLe, ['dcmconv', '--quiet', '+ti', src]],
      ['deflated', Ts.deflate, ['dcmconv', '--quiet', '+td', src]],
    ] as const) {
      const out = path.join(tmp.dir, `${name}.dcm`);
      const r = dcmtk([...cmd, out]);
      expect(r.status, `${cmd.join(' ')}: ${r.stderr}`).to.equal(0);
      inputs.push({ name, path: out, bytes: readFileSync(out), ts });
    }
  });
  after(() => tmp.cleanup());

  describe('the whole study with the basic profile', () => {
    const ps = pseudonyms();
    const results = new Map<string, DeidentifyResult & { dict: DicomDataDict; meta: DicomDataDict; path: string }>();

    before(() => {
      for (const input of inputs) {
        const r = deidentifyPart10(input.bytes, ps, BASIC);
        const p = path.join(tmp.dir, `${input.name}.deid.dcm`);
        writeFileSync(p, r.bytes);
        results.set(input.name, { ...r, ...read(r.bytes), path: p });
      }
    });

    it('the test inputs really carry what must be removed (so the checks below can fail)', function () {
      requireDcmtk(this, 'dcmdump of an input');
      const dumped = dcmtk(['dcmdump', '-dc', '+L', inputs[1]!.path]).stdout;
      for (const s of ['DOE^JANE^QUINCY', 'OTHER-ID-4711', 'SECRET-PRIVATE', '(6000,3000)', 'SERIAL-XYZ-42', '(0033,1001)']) expect(dumped).to.include(s);
      for (const input of inputs.filter((i) => i.ts !== Ts.deflate)) expect(input.bytes.includes(PATIENT_ID), input.name).to.equal(true);
    });

    it('every output parses with DCMTK and keeps the SOP class and transfer syntax', function () {
      requireDcmtk(this, 'dcmdump of the outputs');
      for (const input of inputs) {
        const r = results.get(input.name)!;
        const dump = dcmdumpOk(r.path);
        expect(str(r.meta, '00020010'), input.name).to.equal(input.ts);
        expect(str(r.meta, '00020002'), input.name).to.equal(str(read(input.bytes).dict, '00080016'));
        expect(str(r.dict, '00080016'), input.name).to.equal(str(read(input.bytes).dict, '00080016'));
        expect(str(r.meta, '00020003'), input.name).to.equal(str(r.dict, '00080018'));
        expect(dump).to.match(/\(0012,0062\) CS \[YES ?\]/);
      }
    });

    it('leaves none of the identifying strings anywhere in the output bytes', () => {
      for (const input of inputs) {
        const r = results.get(input.name)!;
        const raw =
          input.ts === Ts.deflate ? Buffer.concat([r.bytes, inflateRawSync(r.bytes.subarray(r.bytes.indexOf(Buffer.from('SRGW_DEID_1')) + 12))]) : r.bytes;
        for (const s of SECRETS) expect(raw.includes(Buffer.from(s)), `${input.name} still contains ${s}`).to.equal(false);
      }
    });

    it('no attribute the profile removes survives anywhere, and every person name is a pseudonym or a dummy', () => {
      const pseudoName = ps.patientName(PATIENT_ID);
      for (const input of inputs) {
        const r = results.get(input.name)!;
        let count = 0;
        for (const { tag, vr, values, depth } of walk(r.dict)) {
          count++;
          const row = basicProfile.get(tag);
          const group = parseInt(tag.slice(0, 4), 16);
          expect(group % 2, `${input.name}: private ${tag} at depth ${depth}`).to.equal(0);
          expect(group >= 0x6000 && group <= 0x601e, `${input.name}: overlay ${tag}`).to.equal(false);
          const emptiedType2 = REFERENCED_REQUEST_TYPE2.has(tag) && values.every((v) => v === '');
          if (row?.action === 'X' && !emptiedType2) expect.fail(`${input.name}: ${row.name} (${tag}) survived at depth ${depth}`);
          if (row?.action === 'Z' && !['00100010', '00100020', '00080050'].includes(tag)) {
            expect(
              values.filter((v) => v !== ''),
              `${input.name}: ${row.name} not emptied`,
            ).to.deep.equal([]);
          }
          if (vr === 'PN') {
            for (const v of values) expect(['', pseudoName, 'ANONYMOUS'], `${input.name} ${tag}`).to.include((v as { Alphabetic?: string }).Alphabetic ?? '');
          }
        }
        expect(count, input.name).to.be.greaterThan(20);
      }
    });

    it('replaces patient name, id and accession from the pseudonym source', () => {
      for (const input of inputs) {
        const r = results.get(input.name)!;
        expect(str(r.dict, '00100010'), input.name).to.equal(ps.patientName(PATIENT_ID));
        expect(str(r.dict, '00100020'), input.name).to.equal(ps.patientId(PATIENT_ID));
        expect(str(r.dict, '00080050'), input.name).to.equal(ps.accessionNumber(ACCESSION));
      }
      const request = items(results.get('sr')!.dict, '0040A370')[0]!; // Referenced Request Sequence
      expect(str(request, '00080050')).to.equal(ps.accessionNumber(ACCESSION));
      expect(vals(request, '00402016')).to.deep.equal([]); // Placer Order Number: Z
      expect(vals(request, '00321060')).to.deep.equal([]); // Requested Procedure Description: X/Z -> Z (Type 2 here)
    });

    it('replaces UIDs consistently across the study, references included, and never class or syntax UIDs', () => {
      const img = (i: number) => results.get(`img${i}`)!;
      const sr = results.get('sr')!;
      const newStudy = str(img(0).dict, '0020000D')!;
      expect(newStudy).to.not.equal(study.studyInstanceUid);
      for (const r of results.values()) expect(str(r.dict, '0020000D')).to.equal(newStudy);
      expect(str(img(0).dict, '0020000E')).to.equal(str(img(1).dict, '0020000E'));
      expect(str(img(0).dict, '0020000E')).to.not.equal(str(img(2).dict, '0020000E'));
      expect(str(img(0).dict, '00200052')).to.equal(str(img(3).dict, '00200052'));
      for (let i = 0; i < 4; i++) {
        expect(str(img(i).dict, '00080018')).to.not.equal(study.instances[i]!.sopInstanceUid);
        expect(img(i).uids.get(study.instances[i]!.sopInstanceUid)).to.equal(str(img(i).dict, '00080018'));
      }
      // The same image in four encodings gets the same UIDs.
      for (const name of ['rle', 'jpegll', 'implicit', 'deflated'].filter((n) => results.has(n)))
        expect(str(results.get(name)!.dict, '00080018'), name).to.equal(str(img(2).dict, '00080018'));
      // Derivation Image Sequence > Source Image Sequence (nested: X/Z/U* -> U*) points at the replaced UID of image 0.
      const source = items(items(img(1).dict, '00089124')[0]!, '00082112')[0]!;
      expect(str(source, '00081155')).to.equal(str(img(0).dict, '00080018'));
      expect(str(source, '00081150')).to.equal(SopClass.ct);
      // SR evidence and content references point at the replaced image UIDs.
      const evidence = items(items(sr.dict, '0040A375')[0]!, '00081115');
      expect(str(items(evidence[0]!, '00081199')[0]!, '00081155')).to.equal(str(img(0).dict, '00080018'));
      expect(str(evidence[0]!, '0020000E')).to.equal(str(img(0).dict, '0020000E'));
      expect(str(items(evidence[1]!, '00081199')[0]!, '00081155')).to.equal(str(img(1).dict, '00080018'));
      const imageItem = items(sr.dict, '0040A730').find((i) => str(i, '0040A040') === 'IMAGE')!;
      expect(str(items(imageItem, '00081199')[0]!, '00081155')).to.equal(str(img(1).dict, '00080018'));
      // Class UIDs untouched, and no original UID left anywhere.
      const originals = new Set([study.studyInstanceUid, ...study.seriesInstanceUids, ...study.instances.map((i) => i.sopInstanceUid), srUid]);
      for (const r of results.values()) {
        for (const { vr, values, tag } of walk(r.dict))
          if (vr === 'UI') for (const v of values) expect(originals.has(String(v)), `original UID in ${tag}`).to.equal(false);
      }
      expect(str(items(sr.dict, '0040A375')[0]!, '0020000D')).to.equal(newStudy);
    });

    it('carries pixel data through byte for byte, native and encapsulated', function () {
      requireDcmtk(this, 'the encapsulated and deflated inputs are made by DCMTK');
      for (const input of inputs.filter((i) => i.name !== 'sr' && i.ts !== Ts.deflate)) {
        const explicit = input.ts !== Ts.implicitLe;
        const before = pixelElement(input.bytes, explicit);
        const out = results.get(input.name)!.bytes;
        expect(out.subarray(out.length - before.length).equals(before), `${input.name} pixel data changed`).to.equal(true);
      }
      const deflatedIn = read(inputs.find((i) => i.ts === Ts.deflate)!.bytes).dict['7FE00010']!.Value![0] as ArrayBuffer;
      const deflatedOut = results.get('deflated')!.dict['7FE00010']!.Value![0] as ArrayBuffer;
      expect(Buffer.from(deflatedOut).equals(Buffer.from(deflatedIn))).to.equal(true);
      // The compressed outputs still decode with DCMTK.
      for (const name of ['rle', 'jpegll']) {
        const r = dcmtk([name === 'rle' ? 'dcmdrle' : 'dcmdjpeg', results.get(name)!.path, path.join(tmp.dir, `${name}.decoded.dcm`)]);
        expect(r.status, `${name}: ${r.stderr}`).to.equal(0);
      }
    });

    it('removes private tags with their creators, curves and overlays, and empties or removes dates', () => {
      const r = results.get('img1')!;
      for (const tag of [
        '00190010',
        '00191001',
        '0019100C',
        '00090010',
        '60003000',
        '60004000',
        '60000010',
        '00080022',
        '00080021',
        '00080032',
        '00101010',
        '00101030',
        '00102160',
        '00081110',
        '00400275',
        '00101002',
      ]) {
        expect(r.dict[tag], tag).to.equal(undefined);
      }
      for (const tag of ['00080020', '00080023', '00100030', '00100040', '00080030', '00200010', '00080090']) expect(vals(r.dict, tag), tag).to.deep.equal([]);
      // Not in Table E.1-1 but a date all the same: a dummy.
      expect(str(r.dict, '00080012')).to.equal('19000101');
      expect(str(r.dict, '00080013')).to.equal('101010'); // a time of day alone is kept
      expect(str(r.dict, '00280303')).to.equal('REMOVED');
      const sr = results.get('sr')!;
      expect(str(sr.dict, '00080023')).to.equal('19000101'); // Content Date: Z/D -> D, Type 1 in SR Document General
      const observer = items(sr.dict, '0040A073')[0]!;
      expect(str(observer, '0040A075')).to.equal('ANONYMOUS');
      expect(str(observer, '0040A027')).to.equal('ANONYMIZED');
      expect(items(observer, '0040A088')).to.deep.equal([]);
      const pname = items(sr.dict, '0040A730').find((i) => str(i, '0040A040') === 'PNAME')!;
      expect(str(pname, '0040A123')).to.equal('ANONYMOUS');
    });

    it('records the method: Patient Identity Removed, method text and CID 7050 codes', () => {
      for (const r of results.values()) {
        expect(str(r.dict, '00120062')).to.equal('YES');
        expect(r.dict['00120063']?.Value).to.deep.equal(['Basic Application Level Confidentiality Profile']);
        const codes = items(r.dict, '00120064').map((i) => `${str(i, '00080100')}/${str(i, '00080102')}`);
        expect(codes).to.deep.equal(['113100/DCM']);
        expect(str(r.dict, '00080005')).to.equal('ISO_IR 192');
      }
    });

    it('reports burned-in annotation', () => {
      expect(results.get('img0')!.burnedInAnnotation).to.equal('YES');
      expect(results.get('img1')!.burnedInAnnotation).to.equal('NO');
      expect(results.get('sr')!.burnedInAnnotation).to.equal(null);
      expect(str(results.get('img0')!.dict, '00280301')).to.equal('YES');
    });
  });

  describe('options', () => {
    it('Retain Longitudinal Modified Dates shifts every date by exactly N days and keeps times', () => {
      const img = read(deidentifyPart10(inputs[0]!.bytes, pseudonyms(), BOTH).bytes).dict;
      expect(str(img, '00080020')).to.equal('20240210');
      expect(str(img, '00080021')).to.equal('20240210');
      expect(str(img, '00080022')).to.equal('20240210');
      expect(str(img, '00080012')).to.equal('20240211');
      expect(str(img, '00080032')).to.equal('083200');
      expect(str(img, '00080030')).to.equal('083000');
      expect(vals(img, '00100030')).to.deep.equal([]); // birth date is Z with or without the option
      expect(str(img, '00280303')).to.equal('MODIFIED');
      const sr = read(deidentifyPart10(inputs[4]!.bytes, pseudonyms(), BOTH).bytes).dict;
      const date = items(sr, '0040A730').find((i) => str(i, '0040A040') === 'DATE')!;
      expect(str(date, '0040A121')).to.equal('20240209');
      expect(str(items(sr, '0040A073')[0]!, '0040A030')).to.equal('20240210120500.123+0100');
      const deflatedInput = inputs.find((i) => i.ts === Ts.deflate);
      if (deflatedInput) expect(str(read(deidentifyPart10(deflatedInput.bytes, pseudonyms(), BOTH).bytes).dict, '00080020')).to.equal('20240210');
    });

    it('Retain Patient Characteristics keeps sex, age, size, weight, ethnic group, smoking status only with the option', () => {
      const kept = read(deidentifyPart10(inputs[0]!.bytes, pseudonyms(), { ...BASIC, retainPatientCharacteristics: true }).bytes).dict;
      expect(str(kept, '00100040')).to.equal('F');
      expect(str(kept, '00101010')).to.equal('064Y');
      expect(Number(str(kept, '00101020'))).to.equal(1.68);
      expect(Number(str(kept, '00101030'))).to.equal(71);
      expect(str(kept, '00102160')).to.equal('NORDIC');
      expect(str(kept, '001021A0')).to.equal('NO');
      expect(kept['00101040']).to.equal(undefined); // address is not a characteristic
      const removed = read(deidentifyPart10(inputs[0]!.bytes, pseudonyms(), BASIC).bytes).dict;
      expect(vals(removed, '00100040')).to.deep.equal([]);
      for (const tag of ['00101010', '00101020', '00101030', '00102160', '001021A0']) expect(removed[tag], tag).to.equal(undefined);
    });

    it('records the options used in (0012,0063) and (0012,0064)', () => {
      const d = read(deidentifyPart10(inputs[0]!.bytes, pseudonyms(), BOTH).bytes).dict;
      expect(items(d, '00120064').map((i) => str(i, '00080100'))).to.deep.equal(['113100', '113107', '113108']);
      expect(items(d, '00120064').every((i) => str(i, '00080102') === 'DCM')).to.equal(true);
      expect(d['00120063']?.Value).to.have.length(3);
    });

    it('keeps safe-listed private elements with their creator, and only those', () => {
      const r = deidentifyPart10(inputs[1]!.bytes, pseudonyms(), { ...BASIC, safePrivateTags: ['0019xx0C@ACME 1.0'] });
      const d = read(r.bytes).dict;
      expect(str(d, '00190010')).to.equal('ACME 1.0');
      expect(Number(str(d, '0019100C'))).to.equal(42);
      expect(d['00191001']).to.equal(undefined);
      expect(d['00090010']).to.equal(undefined);
      expect(items(d, '00120064').map((i) => str(i, '00080100'))).to.deep.equal(['113100', '113111']);
      writeFileSync(path.join(tmp.dir, 'safe.dcm'), r.bytes);
      if (hasDcmtk()) dcmdumpOk(path.join(tmp.dir, 'safe.dcm'));
      // The same rule under another creator keeps nothing.
      const other = read(deidentifyPart10(inputs[1]!.bytes, pseudonyms(), { ...BASIC, safePrivateTags: ['0019xx0C@SOMEONE ELSE'] }).bytes).dict;
      expect(other['0019100C']).to.equal(undefined);
      expect(other['00190010']).to.equal(undefined);
    });

    it('uses a different pseudonym set per destination (salt) but the same within one', () => {
      const a1 = read(deidentifyPart10(inputs[0]!.bytes, pseudonyms('a'), BASIC).bytes).dict;
      const a2 = read(deidentifyPart10(inputs[0]!.bytes, pseudonyms('a'), BASIC).bytes).dict;
      const b = read(deidentifyPart10(inputs[0]!.bytes, pseudonyms('b'), BASIC).bytes).dict;
      expect(str(a1, '00080018')).to.equal(str(a2, '00080018'));
      expect(str(a1, '00080018')).to.not.equal(str(b, '00080018'));
    });
  });

  describe('what it refuses', () => {
    function refuses(bytes: Buffer, code: string, options: DeidentifyOptions = BASIC): GatewayError {
      try {
        deidentifyPart10(bytes, pseudonyms(), options);
      } catch (err) {
        expect(err).to.be.instanceOf(GatewayError);
        expect((err as GatewayError).code).to.equal(code);
        return err as GatewayError;
      }
      return expect.fail(`expected ${code}`);
    }

    it('explicit VR big endian: unsupported, not a broken file', function () {
      requireDcmtk(this, 'dcmconv makes the big endian input');
      const out = path.join(tmp.dir, 'be.dcm');
      expect(dcmtk(['dcmconv', '--quiet', '+tb', inputs[0]!.path, out]).status).to.equal(0);
      expect(refuses(readFileSync(out), 'unsupported').message).to.match(/big endian/);
    });

    it('ISO 2022 code extensions (several character sets): text decoded and written as UTF-8; an unknown escape is unsupported', () => {
      const src = DicomMessage.readFile(ab(inputs[0]!.bytes));
      src.dict['00080005'] = { vr: 'CS', Value: ['ISO 2022 IR 6', 'ISO 2022 IR 87'] };
      src.dict['00081090'] = { vr: 'LO', Value: ['QQQQQQQQQQQQ'] };
      const bytes = writePart10(src.dict, SopClass.ct, study.instances[0]!.sopInstanceUid);
      // 山田 in JIS X 0208 between ESC $ B and ESC ( B, padded: the same 12 bytes
      const jis = Buffer.from([0x1b, 0x24, 0x42, 0x3b, 0x33, 0x45, 0x44, 0x1b, 0x28, 0x42, 0x20, 0x20]);
      jis.copy(bytes, bytes.indexOf('QQQQQQQQQQQQ'));
      const out = read(deidentifyPart10(bytes, pseudonyms(), BASIC).bytes).dict;
      expect(str(out, '00080005')).to.equal('ISO_IR 192');
      expect(str(out, '00081090')).to.equal('山田');
      const bad = Buffer.from(bytes);
      bad[bad.indexOf(Buffer.from([0x1b, 0x24, 0x42])) + 2] = 0x7a; // ESC $ z: no such character set
      refuses(bad, 'unsupported');
    });

    it('a public attribute after Pixel Data: unsupported', () => {
      const tail = Buffer.from([0x02, 0x80, 0x10, 0x00, 0x4c, 0x4f, 0x04, 0x00, 0x41, 0x42, 0x43, 0x44]); // (8002,0010) LO "ABCD"
      refuses(Buffer.concat([inputs[0]!.bytes, tail]), 'unsupported');
    });

    it('not DICOM, or truncated: unreadable-data', () => {
      refuses(Buffer.from('hello'), 'unreadable-data');
      refuses(inputs[0]!.bytes.subarray(0, inputs[0]!.bytes.length - 100), 'unreadable-data');
    });

    it('a malformed safe private tag rule: invalid-input', () => {
      refuses(inputs[0]!.bytes, 'invalid-input', { ...BASIC, safePrivateTags: ['00181000'] });
    });
  });

  describe('date arithmetic', () => {
    it('shifts DA across month, leap day and year ends; rejects non-dates', () => {
      expect(shiftDa('20240131', 10)).to.equal('20240210');
      expect(shiftDa('20240228', 1)).to.equal('20240229');
      expect(shiftDa('20231231', 1)).to.equal('20240101');
      expect(shiftDa('20240101', -1)).to.equal('20231231');
      expect(shiftDa('20240230', 1)).to.equal(undefined);
      expect(shiftDa('2024', 1)).to.equal(undefined);
    });
    it('shifts DT keeping precision, fraction and UTC offset', () => {
      expect(shiftDt('20240131235959.123456+0100', 1)).to.equal('20240201235959.123456+0100');
      expect(shiftDt('202401', 40)).to.equal('202402');
      expect(shiftDt('2024', 400)).to.equal('2025');
      expect(shiftDt('20240131', 0)).to.equal('20240131');
      expect(shiftDt('garbage', 1)).to.equal(undefined);
    });
  });
});
