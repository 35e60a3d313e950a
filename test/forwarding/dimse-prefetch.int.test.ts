import { expect } from 'chai';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { openForSending, part10DatasetOffset, part10Stream, streamToBuffer } from '../../src/forwarding/destination.js';
import { PREFETCH_MAX_BYTES, prefetched } from '../../src/forwarding/dimse.destination.js';
import { generateStudy } from '../../scripts/lib/study-generator.js';
import { makeTempDir } from '../helpers/tmp.js';

describe('DIMSE destination prefetch', () => {
  let tmp: ReturnType<typeof makeTempDir>;
  beforeEach(() => (tmp = makeTempDir()));
  afterEach(() => tmp.cleanup());

  it('reads a stream up to PREFETCH_MAX_BYTES into one buffer (header piece and file range together), and leaves a larger one streamed', async () => {
    const file = path.join(tmp.dir, 'a.bin');
    const bytes = Buffer.from(Array.from({ length: 5000 }, (_, i) => i % 251));
    writeFileSync(file, bytes);
    const header = Buffer.from('HEADER');
    const small = part10Stream([header, { path: file, start: 100, end: 5000 }], 6);
    const got = await prefetched(small);
    expect(got.pieces).to.have.length(1);
    expect(Buffer.isBuffer(got.pieces[0])).to.equal(true);
    expect((got.pieces[0] as Buffer).equals(Buffer.concat([header, bytes.subarray(100)]))).to.equal(true);
    expect(got.length).to.equal(small.length);
    expect(got.datasetOffset).to.equal(6);
    const large = part10Stream([{ path: file, start: 0, end: PREFETCH_MAX_BYTES + 1 }], 0);
    expect(await prefetched(large), 'not read: it would hold more than the bound').to.equal(large);
  });

  it('openForSending: a stored file up to the bound comes back whole in memory, a larger one as a file range; both with the dataset offset from the meta header', async () => {
    const file = generateStudy(path.join(tmp.dir, 'study'), { instances: 1, series: 1, rows: 16, columns: 16 }).instances[0]!.path;
    const size = readFileSync(file).length;
    const whole = await openForSending(file, size);
    expect(whole.pieces).to.have.length(1);
    expect(Buffer.isBuffer(whole.pieces[0])).to.equal(true);
    expect((whole.pieces[0] as Buffer).equals(readFileSync(file))).to.equal(true);
    expect(whole.datasetOffset).to.equal(part10DatasetOffset(readFileSync(file)));
    const ranged = await openForSending(file, size - 1);
    expect(ranged.pieces).to.deep.equal([{ path: file, start: 0, end: size }]);
    expect(ranged.datasetOffset).to.equal(whole.datasetOffset);
    expect(ranged.length).to.equal(whole.length);
  });

  it('a file shorter than its stream announces fails the read, never comes back padded with zeros', async () => {
    const file = path.join(tmp.dir, 'short.bin');
    writeFileSync(file, Buffer.alloc(900, 7));
    const announced = part10Stream([{ path: file, start: 0, end: 1000 }], 0);
    const failure = (p: Promise<unknown>): Promise<Error | undefined> =>
      p.then(
        () => undefined,
        (e: Error) => e,
      );
    expect((await failure(streamToBuffer(announced)))?.message).to.match(/gave 900 of 1000 bytes/);
    expect((await failure(prefetched(announced)))?.message).to.match(/gave 900 of 1000 bytes/);
  });
});
