import { createHash } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { expect } from 'chai';
import dcmjs, { type DicomDataDict } from 'dcmjs';
import { GatewayError } from '../../src/errors.js';
import { DeidentificationCodes, deidentifyFile, deidentifyPart10, type DeidentifyOptions, type PseudonymSource } from '../../src/forwarding/deidentify.js';
import { instanceRisk, riskInputFromDataset } from '../../src/forwarding/instance-risk.js';
import { verifyDeidentified } from '../../src/forwarding/phi-verifier.js';
import { SCRUB_TOKEN } from '../../src/forwarding/text-scrubber.js';
import { PHI, writePhiStudy, type PhiStudy } from '../helpers/phi-study.js';
import { makeTempDir } from '../helpers/tmp.js';

const { DicomMessage } = dcmjs.data;
dcmjs.log.setLevel('error');

function pseudonyms(salt = 'phi-study/pool'): PseudonymSource {
  const h = (s: string): string => createHash('sha256').update(`${salt}|${s}`).digest('hex');
  return {
    uid: (original) => `2.25.${BigInt(`0x${h(original).slice(0, 30)}`).toString(10)}`,
    patientId: (original) => `PSEUDO-${h(original).slice(0, 8).toUpperCase()}`,
    patientName: (originalPatientId) => `ANON^PSEUDO-${h(originalPatientId).slice(0, 8).toUpperCase()}`,
    accessionNumber: (original) => `PACC-${h(original).slice(0, 8).toUpperCase()}`,
    dateShiftDays: () => -17,
  };
}

const BASIC: DeidentifyOptions = { retainLongitudinalModifiedDates: false, retainPatientCharacteristics: false };
const DATES: DeidentifyOptions = { retainLongitudinalModifiedDates: true, retainPatientCharacteristics: true };

function read(bytes: Buffer): DicomDataDict {
  return DicomMessage.readFile(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer).dict;
}

/** Content items of an SR, depth first, with their value type. */
function* contentItems(dict: DicomDataDict): Generator<DicomDataDict> {
  for (const item of (dict['0040A730']?.Value ?? []) as DicomDataDict[]) {
    yield item;
    yield* contentItems(item);
  }
}

const first = (d: DicomDataDict, tag: string): unknown => d[tag]?.Value?.[0];
const pn = (d: DicomDataDict, tag: string): string => String((first(d, tag) as { Alphabetic?: string } | undefined)?.Alphabetic ?? '');

function hasDciodvfy(): boolean {
  return spawnSync('dciodvfy', ['-'], { stdio: 'ignore' }).error === undefined;
}

/** dciodvfy's Error lines (without the file-specific prefix), one per problem. */
function dciodvfyErrors(file: string): string[] {
  const r = spawnSync('dciodvfy', ['-new', file], { encoding: 'utf8' });
  return `${r.stdout}\n${r.stderr}`
    .split('\n')
    .filter((l) => /^Error/.test(l))
    .map((l) => l.trim());
}

describe('de-identification of a PHI-laden study (SR, Encapsulated PDF, dose screen, private blocks)', function () {
  this.timeout(60_000);
  let tmp: ReturnType<typeof makeTempDir>;
  let study: PhiStudy;

  before(() => {
    tmp = makeTempDir('gw-phi-');
    study = writePhiStudy(path.join(tmp.dir, 'in'));
  });
  after(() => tmp.cleanup());

  it('the generated inputs really carry every identifier, in every instance (so the checks below can fail)', () => {
    for (const f of study.files) {
      const raw = readFileSync(f.path).toString('latin1');
      for (const s of [PHI.patientId, 'ZZTESTPERSON', PHI.institution]) expect(raw, `${f.kind} ${s}`).to.include(s);
      const v = verifyDeidentified(readFileSync(f.path), study.knownIdentifiers());
      expect(v.clean, f.kind).to.equal(false);
    }
    const pdf = study.files.find((f) => f.kind === 'pdf')!;
    expect(readFileSync(pdf.path).toString('latin1')).to.match(/%PDF-1\.4[\s\S]*Patient: ZZTESTPERSON QUENTIN/);
  });

  it('classifies each instance: CT and SR may go, the PDF and the Secondary Capture dose screen may not', () => {
    for (const f of study.files) {
      const risk = instanceRisk(riskInputFromDataset(read(readFileSync(f.path))));
      expect(risk?.reason ?? null, f.kind).to.equal(f.risk);
    }
  });

  for (const [label, options] of [
    ['basic profile', BASIC],
    ['modified dates + patient characteristics', DATES],
    ['clean structured content', { ...DATES, cleanStructuredContent: true }],
  ] as const) {
    it(`${label}: the verifier finds nothing in the CT images and the SR, and no planted string is left in their bytes`, () => {
      for (const f of study.files.filter((x) => x.risk === null)) {
        const r = deidentifyPart10(readFileSync(f.path), pseudonyms(), { ...options, knownIdentifiers: study.knownIdentifiers() });
        expect(r.verification, `${f.kind}: ${JSON.stringify(r.verification)}`).to.deep.equal({ clean: true });
        expect(verifyDeidentified(r.bytes, study.knownIdentifiers(), { producedUids: r.uids.values() })).to.deep.equal({ clean: true });
        const raw = r.bytes.toString('latin1').toUpperCase();
        for (const s of study.secrets) expect(raw, `${f.kind} still holds ${s}`).to.not.include(s.toUpperCase());
        expect(r.risk).to.equal(null);
      }
    });
  }

  it('SR without the clean option: TEXT is REMOVED, PNAME ANONYMOUS, DATE and TIME dummies, local code meanings replaced; structure kept; no 113104', () => {
    const f = study.files.find((x) => x.kind === 'sr')!;
    const src = read(readFileSync(f.path));
    const out = read(deidentifyPart10(readFileSync(f.path), pseudonyms(), BASIC).bytes);
    const inItems = [...contentItems(src)];
    const outItems = [...contentItems(out)];
    expect(outItems.map((i) => first(i, '0040A040'))).to.deep.equal(inItems.map((i) => first(i, '0040A040')));
    const byType = (t: string): DicomDataDict[] => outItems.filter((i) => first(i, '0040A040') === t);
    expect(byType('TEXT').map((i) => first(i, '0040A160'))).to.deep.equal(['REMOVED', 'REMOVED']);
    expect(byType('PNAME').map((i) => pn(i, '0040A123'))).to.deep.equal(['ANONYMOUS', 'ANONYMOUS']);
    expect(byType('DATE').map((i) => first(i, '0040A121'))).to.deep.equal(['19000101', '19000101']);
    expect(byType('TIME').map((i) => first(i, '0040A122'))).to.deep.equal(['000000']);
    const codeItem = ((byType('CODE')[0]!['0040A168']?.Value ?? []) as DicomDataDict[])[0]!;
    expect(first(codeItem, '00080104')).to.equal('REMOVED');
    // standard codes keep their meaning
    expect(first(((byType('TEXT')[1]!['0040A043']?.Value ?? []) as DicomDataDict[])[0]!, '00080104')).to.equal('Finding');
    const codes = ((out['00120064']?.Value ?? []) as DicomDataDict[]).map((i) => first(i, '00080100'));
    expect(codes).to.not.include('113104');
  });

  it('SR with cleanStructuredContent: text scrubbed (not dropped), dates shifted, names removed, 113104 recorded', () => {
    const f = study.files.find((x) => x.kind === 'sr')!;
    const r = deidentifyPart10(readFileSync(f.path), pseudonyms(), { ...DATES, cleanStructuredContent: true });
    const out = read(r.bytes);
    const items = [...contentItems(out)];
    const texts = items.filter((i) => first(i, '0040A040') === 'TEXT').map((i) => String(first(i, '0040A160')));
    expect(texts[0]).to.equal(SCRUB_TOKEN);
    expect(texts[1]).to.include('no acute findings').and.include(SCRUB_TOKEN);
    expect(texts[1]).to.not.match(/ZZTESTPERSON|7781234|1957|ZEBEDEE|Feb 2024/i);
    const dates = items.filter((i) => first(i, '0040A040') === 'DATE').map((i) => first(i, '0040A121'));
    expect(dates).to.deep.equal(['19570224', '20240115']); // shifted by -17 days like every other date
    expect(items.filter((i) => first(i, '0040A040') === 'PNAME').map((i) => pn(i, '0040A123'))).to.deep.equal(['ANONYMOUS', 'ANONYMOUS']);
    const codeItem = ((items.find((i) => first(i, '0040A040') === 'CODE')!['0040A168']?.Value ?? []) as DicomDataDict[])[0]!;
    expect(first(codeItem, '00080104')).to.equal(`nodule reported to ${SCRUB_TOKEN}`);
    const codes = ((out['00120064']?.Value ?? []) as DicomDataDict[]).map((i) => first(i, '00080100'));
    expect(codes).to.include(DeidentificationCodes.cleanStructuredContent.value);
    expect(out['00120063']?.Value).to.include('Clean Structured Content Option');
    expect(r.verification).to.deep.equal({ clean: true });
  });

  it('cleanStructuredContent on an image records no 113104 (not applied: there is no content tree)', () => {
    const f = study.files.find((x) => x.kind === 'ct')!;
    const out = read(deidentifyPart10(readFileSync(f.path), pseudonyms(), { ...BASIC, cleanStructuredContent: true }).bytes);
    expect(((out['00120064']?.Value ?? []) as DicomDataDict[]).map((i) => first(i, '00080100'))).to.not.include('113104');
  });

  it('the Encapsulated PDF is refused without a release; released, its bytes are kept and the verifier reports them', async () => {
    const f = study.files.find((x) => x.kind === 'pdf')!;
    let refused: unknown;
    try {
      deidentifyPart10(readFileSync(f.path), pseudonyms(), BASIC);
    } catch (e) {
      refused = e;
    }
    expect(refused).to.be.instanceOf(GatewayError);
    expect((refused as GatewayError).details).to.deep.equal({ reason: 'encapsulated-document' });
    let refusedStream: unknown;
    await deidentifyFile(f.path, pseudonyms(), BASIC).catch((e: unknown) => (refusedStream = e));
    expect(refusedStream).to.be.instanceOf(GatewayError);

    const r = deidentifyPart10(readFileSync(f.path), pseudonyms(), { ...BASIC, releasedByReviewer: true });
    expect(r.risk?.reason).to.equal('encapsulated-document');
    expect(r.verification.clean).to.equal(false);
    const paths = r.verification.clean ? [] : r.verification.hits.map((h) => h.path);
    expect(paths).to.include('00420011');
    expect(r.bytes.toString('latin1')).to.include('Patient: ZZTESTPERSON QUENTIN');
  });

  it('the dose screen is de-identified in its header but classified burned-in-risk', () => {
    const f = study.files.find((x) => x.kind === 'sc-dose')!;
    const r = deidentifyPart10(readFileSync(f.path), pseudonyms(), BASIC);
    expect(r.risk?.reason).to.equal('burned-in-risk');
    expect(r.verification).to.deep.equal({ clean: true });
  });

  it('descriptions and comments the profile keeps are scrubbed; overlay description and comments are gone', () => {
    const f = study.files.find((x) => x.kind === 'ct')!;
    const out = read(deidentifyPart10(readFileSync(f.path), pseudonyms(), BASIC).bytes);
    expect(Object.keys(out).filter((k) => k.startsWith('6000'))).to.deep.equal([]);
    for (const k of ['00081030', '0008103E', '00204000', '00181030', '00082111'])
      expect(out[k]?.Value ?? [], k).to.satisfy((v: unknown[]) => v.every((x) => !String(x).includes('ZZTESTPERSON')));
  });

  it('streams: prefix + source[pixel range] equals the buffer output for every non-refused instance', async () => {
    for (const f of study.files.filter((x) => x.kind !== 'pdf')) {
      const src = readFileSync(f.path);
      const a = deidentifyPart10(src, pseudonyms(), DATES);
      const b = await deidentifyFile(f.path, pseudonyms(), DATES);
      const joined = Buffer.concat([b.prefix, b.pixel ? src.subarray(b.pixel.start, b.pixel.end) : Buffer.alloc(0)]);
      expect(joined.equals(a.bytes), f.kind).to.equal(true);
      expect(b.totalLength).to.equal(a.bytes.length);
      expect(b.verification).to.deep.equal(a.verification);
      expect(b.pixel !== null, f.kind).to.equal(f.kind !== 'sr');
    }
  });

  it('dciodvfy reports no Error on the outputs that it did not report on the inputs', function () {
    if (!hasDciodvfy()) {
      console.log('skipped: dciodvfy (dicom3tools) is not installed');
      this.skip();
    }
    for (const f of study.files.filter((x) => x.kind !== 'pdf')) {
      for (const options of [BASIC, { ...DATES, cleanStructuredContent: true }]) {
        const out = path.join(tmp.dir, `out-${path.basename(f.path)}`);
        writeFileSync(out, deidentifyPart10(readFileSync(f.path), pseudonyms(), options).bytes);
        const before = new Set(dciodvfyErrors(f.path));
        const added = dciodvfyErrors(out).filter((l) => !before.has(l));
        expect(added, `${f.kind}`).to.deep.equal([]);
      }
    }
  });
});
