/**
 * The streaming entry point on instances far larger than memory should hold:
 * 2.5 GiB of pixel data (sparse files: no disk is used), native and
 * encapsulated. Only the header is read; the pixel range is exact.
 */
import { createHash } from 'node:crypto';
import { closeSync, ftruncateSync, openSync, readFileSync, writeSync } from 'node:fs';
import path from 'node:path';
import { expect } from 'chai';
import { GatewayError } from '../../src/errors.js';
import { deidentifyFile, type PseudonymSource } from '../../src/forwarding/deidentify.js';
import { writePhiStudy, type PhiStudy } from '../helpers/phi-study.js';
import { makeTempDir } from '../helpers/tmp.js';

const GIB = 1024 * 1024 * 1024;
const BIG = Math.floor(2.5 * GIB);

function pseudonyms(): PseudonymSource {
  const h = (s: string): string => createHash('sha256').update(`stream|${s}`).digest('hex');
  return {
    uid: (o) => `2.25.${BigInt(`0x${h(o).slice(0, 30)}`).toString(10)}`,
    patientId: (o) => `PSEUDO-${h(o).slice(0, 8).toUpperCase()}`,
    patientName: (o) => `ANON^PSEUDO-${h(o).slice(0, 8).toUpperCase()}`,
    accessionNumber: (o) => `PACC-${h(o).slice(0, 8).toUpperCase()}`,
    dateShiftDays: () => 5,
  };
}

/** Everything of a generated CT before its Pixel Data element. */
function headerOf(file: string): Buffer {
  const b = readFileSync(file);
  return b.subarray(0, b.lastIndexOf(Buffer.from([0xe0, 0x7f, 0x10, 0x00, 0x4f, 0x57])));
}

function elementHeader(vr: 'OW' | 'OB', length: number): Buffer {
  const h = Buffer.alloc(12);
  h.writeUInt16LE(0x7fe0, 0);
  h.writeUInt16LE(0x0010, 2);
  h.write(vr, 4, 'latin1');
  h.writeUInt32LE(length, 8);
  return h;
}

function itemHeader(tag: number, length: number): Buffer {
  const h = Buffer.alloc(8);
  h.writeUInt16LE(0xfffe, 0);
  h.writeUInt16LE(tag, 2);
  h.writeUInt32LE(length, 4);
  return h;
}

describe('streaming de-identification of a 2.5 GiB instance (header read only)', function () {
  this.timeout(60_000);
  let tmp: ReturnType<typeof makeTempDir>;
  let study: PhiStudy;
  before(() => {
    tmp = makeTempDir('gw-stream-');
    study = writePhiStudy(path.join(tmp.dir, 'in'), { images: 1 });
  });
  after(() => tmp.cleanup());

  it('native pixel data: prefix de-identified, pixel range = the whole 2.5 GiB element, memory stays flat', async () => {
    const header = headerOf(study.files[0]!.path);
    const file = path.join(tmp.dir, 'big-native.dcm');
    const fd = openSync(file, 'w');
    writeSync(fd, header, 0, header.length, 0);
    writeSync(fd, elementHeader('OW', BIG), 0, 12, header.length);
    ftruncateSync(fd, header.length + 12 + BIG);
    closeSync(fd);

    const rss = process.memoryUsage().rss;
    const r = await deidentifyFile(file, pseudonyms(), {
      retainLongitudinalModifiedDates: true,
      retainPatientCharacteristics: false,
      knownIdentifiers: study.knownIdentifiers(),
    });
    const grown = (process.memoryUsage().rss - rss) / 1024 / 1024;
    expect(r.pixel).to.deep.equal({ start: header.length, end: header.length + 12 + BIG });
    expect(r.totalLength).to.equal(r.prefix.length + 12 + BIG);
    expect(r.inMemory).to.equal(false);
    expect(r.verification).to.deep.equal({ clean: true });
    expect(r.prefix.toString('latin1')).to.not.include('ZZTESTPERSON');
    expect(grown, `RSS grew by ${grown.toFixed(1)} MB`).to.be.lessThan(64);
  });

  it('encapsulated pixel data: fragments walked by their item headers only', async () => {
    const header = headerOf(study.files[0]!.path);
    const file = path.join(tmp.dir, 'big-encapsulated.dcm');
    const fd = openSync(file, 'w');
    let at = 0;
    const put = (b: Buffer): void => {
      writeSync(fd, b, 0, b.length, at);
      at += b.length;
    };
    put(header);
    const undefinedLength = Buffer.alloc(12);
    undefinedLength.writeUInt16LE(0x7fe0, 0);
    undefinedLength.writeUInt16LE(0x0010, 2);
    undefinedLength.write('OB', 4, 'latin1');
    undefinedLength.writeUInt32LE(0xffffffff, 8);
    put(undefinedLength);
    put(itemHeader(0xe000, 0)); // empty basic offset table
    const fragment = Math.floor(BIG / 4 / 2) * 2;
    for (let i = 0; i < 4; i++) {
      put(itemHeader(0xe000, fragment));
      at += fragment; // sparse
    }
    put(itemHeader(0xe0dd, 0));
    // Data Set Trailing Padding after the pixel data: dropped, not streamed
    const padding = Buffer.alloc(12 + 16);
    padding.writeUInt16LE(0xfffc, 0);
    padding.writeUInt16LE(0xfffc, 2);
    padding.write('OB', 4, 'latin1');
    padding.writeUInt32LE(16, 8);
    const pixelEnd = at;
    put(padding);
    closeSync(fd);

    const rss = process.memoryUsage().rss;
    const r = await deidentifyFile(file, pseudonyms(), { retainLongitudinalModifiedDates: false, retainPatientCharacteristics: false });
    const grown = (process.memoryUsage().rss - rss) / 1024 / 1024;
    expect(r.pixel).to.deep.equal({ start: header.length, end: pixelEnd });
    expect(r.totalLength).to.equal(r.prefix.length + (pixelEnd - header.length));
    expect(grown, `RSS grew by ${grown.toFixed(1)} MB`).to.be.lessThan(64);
  });

  it('a header larger than the limit is refused, not read whole', async () => {
    const err = await deidentifyFile(
      study.files[0]!.path,
      pseudonyms(),
      { retainLongitudinalModifiedDates: false, retainPatientCharacteristics: false },
      { maxHeaderBytes: 1024 },
    ).catch((e: unknown) => e);
    expect(err).to.be.instanceOf(GatewayError);
    expect((err as GatewayError).message).to.match(/larger than 1024 bytes/);
  });
});
