import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { DatasetHeaderReader, Part10HeaderReader, readPart10Header, toInstanceHeader } from '../../src/dicom/header.js';
import { GatewayError } from '../../src/errors.js';
import { generateStudy, Ts, type GeneratedStudy } from '../../scripts/lib/study-generator.js';
import { hasDcmtk, rawFromPart10, runDcmtk } from '../helpers/dicom-peers.js';
import { makeTempDir } from '../helpers/tmp.js';

async function rejects(p: Promise<unknown>): Promise<GatewayError> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof GatewayError, `expected a GatewayError, got ${String(err)}`);
    assert.equal(err.code, 'unreadable-data');
    return err;
  }
  assert.fail('expected unreadable-data');
}

async function inChunks(bytes: Buffer, size: number): Promise<ReturnType<typeof toInstanceHeader>> {
  const r = new Part10HeaderReader(4 * 1024 * 1024);
  for (let i = 0; i < bytes.length; i += size) r.push(bytes.subarray(i, i + size));
  return r.finish();
}

describe('DICOM header extraction', () => {
  let tmp: ReturnType<typeof makeTempDir>;
  let study: GeneratedStudy;
  let file: string;
  let bytes: Buffer;

  before(() => {
    tmp = makeTempDir();
    study = generateStudy(path.join(tmp.dir, 'ct'), {
      instances: 2,
      series: 2,
      rows: 64,
      columns: 64,
      patientId: 'PID-7',
      accessionNumber: 'ACC-42',
      studyDescription: 'CT CHEST',
      bodyPartExamined: 'CHEST',
      studyDate: '20240131',
      referringPhysicianName: 'REF^ERRER',
    });
    file = study.instances[1]!.path;
    bytes = readFileSync(file);
  });
  after(() => tmp.cleanup());

  it('reads every triage attribute from a generated CT instance', async () => {
    const h = await readPart10Header(bytes);
    const inst = study.instances[1]!;
    assert.deepEqual(h, {
      sopClassUid: '1.2.840.10008.5.1.4.1.1.2',
      sopInstanceUid: inst.sopInstanceUid,
      transferSyntaxUid: Ts.explicitLe,
      studyInstanceUid: study.studyInstanceUid,
      seriesInstanceUid: inst.seriesInstanceUid,
      accessionNumber: 'ACC-42',
      patientId: 'PID-7',
      modality: 'CT',
      studyDescription: 'CT CHEST',
      seriesDescription: 'AXIAL 5MM',
      bodyPartExamined: 'CHEST',
      studyDate: '20240131',
      referringPhysicianName: 'REF^ERRER',
      seriesNumber: 2,
      instanceNumber: 1,
      specificCharacterSet: 'ISO_IR 192',
      patientName: 'SYNTHETIC^PATIENT',
      patientBirthDate: '19600101',
      issuerOfPatientId: null,
      otherPatientIds: [],
      iocm: null,
    });
  });

  it('gives the same header whatever the chunking (1, 7, 4096 bytes, one piece)', async () => {
    const whole = await readPart10Header(bytes);
    for (const size of [1, 7, 4096]) assert.deepEqual(await inChunks(bytes, size), whole, `chunks of ${size}`);
  });

  it('buffers only the prefix before PixelData, not the instance', () => {
    const raw = rawFromPart10(bytes);
    const r = new DatasetHeaderReader(raw.transferSyntaxUid, 4096);
    const pixelAt = raw.dataset.indexOf(Buffer.from([0xe0, 0x7f, 0x10, 0x00]));
    // The prefix up to PixelData fits in 4 KiB although the dataset is 8 KiB of pixels larger.
    assert.ok(pixelAt > 0 && pixelAt < 4096 - 12 && raw.dataset.length > 8192);
    r.push(raw.dataset);
    return r.finish(true).then((dict) => assert.equal(toInstanceHeader(dict, raw.transferSyntaxUid).sopInstanceUid, raw.sopInstanceUid));
  });

  it('refuses a dataset cut inside PixelData', async () => {
    const e = await rejects(readPart10Header(bytes.subarray(0, bytes.length - 10)));
    assert.match(e.message, /PixelData/);
  });

  it('refuses garbage, an empty dataset, and a file without DICM', async () => {
    const raw = rawFromPart10(bytes);
    const garbage = new DatasetHeaderReader(Ts.explicitLe, 1 << 20);
    garbage.push(randomBytes(3000));
    await rejects(garbage.finish(true).then((d) => toInstanceHeader(d, Ts.explicitLe)));
    await rejects(new DatasetHeaderReader(Ts.explicitLe, 1 << 20).finish(true));
    await rejects(readPart10Header(Buffer.concat([Buffer.alloc(128), Buffer.from('NOPE'), raw.dataset])));
    await rejects(readPart10Header(bytes.subarray(0, 100)));
  });

  it('refuses a malformed StudyInstanceUID', async () => {
    const s = generateStudy(path.join(tmp.dir, 'bad'), { instances: 1, rows: 8, columns: 8, studyInstanceUid: '1.2.abc.3' });
    const e = await rejects(readPart10Header(readFileSync(s.instances[0]!.path)));
    assert.match(e.message, /StudyInstanceUID/);
  });

  it('refuses a header larger than maxHeaderBytes when it has no PixelData within it', async () => {
    const raw = rawFromPart10(bytes);
    const r = new DatasetHeaderReader(raw.transferSyntaxUid, 4096);
    // Only 200 bytes of a real header, then padding as if the header went on for ever.
    r.push(raw.dataset.subarray(0, 200));
    r.push(Buffer.alloc(8000, 0x20));
    await rejects(r.finish(true).then((d) => toInstanceHeader(d, raw.transferSyntaxUid)));
  });

  describe('each transfer syntax (made with DCMTK)', function () {
    const cases: [string, string[], string][] = [
      ['implicit VR little endian', ['dcmconv', '+ti'], Ts.implicitLe],
      ['explicit VR big endian', ['dcmconv', '+tb'], Ts.explicitBe],
      ['deflated explicit VR little endian', ['dcmconv', '+td'], Ts.deflate],
      ['JPEG lossless SV1', ['dcmcjpeg', '+e1', '+un'], Ts.jpegLossless70],
      ['JPEG lossless', ['dcmcjpeg', '+el', '+un'], Ts.jpegLossless57],
      ['JPEG extended 12-bit', ['dcmcjpeg', '+ee', '+un'], Ts.jpegExtended],
      ['JPEG-LS lossless', ['dcmcjpls', '+el', '+un'], Ts.jpegLsLossless],
      ['JPEG-LS near-lossless', ['dcmcjpls', '+en', '+un'], Ts.jpegLsNear],
      ['RLE lossless', ['dcmcrle', '+un'], Ts.rle],
    ];
    before(function () {
      if (!hasDcmtk()) {
        console.log('      skipped: DCMTK not installed');
        this.skip();
      }
    });
    for (const [name, [tool, ...opts], ts] of cases) {
      it(name, async () => {
        const out = path.join(tmp.dir, `${ts}.dcm`);
        const r = await runDcmtk(tool!, [...opts, file, out]);
        assert.equal(r.code, 0, r.stderr);
        const converted = readFileSync(out);
        const h = await readPart10Header(converted);
        const expected = await readPart10Header(bytes);
        assert.deepEqual(h, { ...expected, transferSyntaxUid: ts });
        // and chunked, which exercises the streamed inflate for deflate
        assert.deepEqual(await inChunks(converted, 333), h);
        if (ts !== Ts.deflate) await rejects(readPart10Header(converted.subarray(0, converted.length - 20)));
      });
    }

    it('refuses a truncated deflated dataset', async () => {
      const out = path.join(tmp.dir, 'deflated.dcm');
      assert.equal((await runDcmtk('dcmconv', ['+td', file, out])).code, 0);
      const d = readFileSync(out);
      await rejects(readPart10Header(d.subarray(0, d.length - 50)));
    });
  });

  it('reads encapsulated syntaxes DCMTK cannot write (JPEG 2000) from their explicit LE header', async () => {
    const s = generateStudy(path.join(tmp.dir, 'j2k'), { instances: 1, rows: 16, columns: 16, transferSyntaxUid: Ts.j2kLossless });
    const b = readFileSync(s.instances[0]!.path);
    const h = await readPart10Header(b);
    assert.equal(h.transferSyntaxUid, Ts.j2kLossless);
    assert.equal(h.sopInstanceUid, s.instances[0]!.sopInstanceUid);
    await rejects(readPart10Header(b.subarray(0, b.length - 8)));
  });
});
