import { expect } from 'chai';
import { contentTypeParams, MultipartReader, type MultipartEvent } from '../../src/dicomweb/multipart.js';

/** Feeds `body` in chunks of `size` bytes and collects the parts it reports. */
function read(body: Buffer, boundary: string, size: number): { parts: { headers: Record<string, string>; data: Buffer; ended: boolean }[]; complete: boolean } {
  const r = new MultipartReader(boundary);
  const parts: { headers: Record<string, string>; chunks: Buffer[]; ended: boolean }[] = [];
  const apply = (evs: MultipartEvent[]) => {
    for (const e of evs) {
      if (e.type === 'part') parts.push({ headers: e.headers, chunks: [], ended: false });
      else if (e.type === 'data') parts[parts.length - 1]!.chunks.push(Buffer.from(e.data));
      else parts[parts.length - 1]!.ended = true;
    }
  };
  for (let i = 0; i < body.length; i += size) apply(r.push(body.subarray(i, i + size)));
  return { parts: parts.map((p) => ({ headers: p.headers, data: Buffer.concat(p.chunks), ended: p.ended })), complete: r.complete };
}

describe('MultipartReader (multipart/related, streamed)', () => {
  const boundary = 'b0undary-xyz';
  // Part bodies that contain CRLF, dashes and a near-miss of the delimiter.
  const a = Buffer.from('first\r\n--b0undary-xy not quite\r\n--');
  const b = Buffer.alloc(0);
  const c = Buffer.from([0, 1, 2, 13, 10, 45, 45, 98, 255]);
  const body = Buffer.concat([
    Buffer.from(`preamble to ignore\r\n--${boundary}\r\nContent-Type: application/dicom\r\n\r\n`),
    a,
    Buffer.from(`\r\n--${boundary}   \r\ncontent-type: application/dicom\r\nContent-Length: 0\r\n\r\n`),
    b,
    Buffer.from(`\r\n--${boundary}\r\n\r\n`),
    c,
    Buffer.from(`\r\n--${boundary}--\r\nepilogue`),
  ]);

  for (const size of [1, 2, 3, 7, 16, 1000]) {
    it(`finds the same parts whatever the chunk size (${size})`, () => {
      const r = read(body, boundary, size);
      expect(r.complete).to.equal(true);
      expect(r.parts.map((p) => p.data.toString('latin1'))).to.deep.equal([a, b, c].map((x) => x.toString('latin1')));
      expect(r.parts.every((p) => p.ended)).to.equal(true);
      expect(r.parts[0]!.headers['content-type']).to.equal('application/dicom');
      expect(r.parts[1]!.headers['content-length']).to.equal('0');
      expect(r.parts[2]!.headers).to.deep.equal({});
    });
  }

  it('leaves a part without its closing delimiter open (the caller fails it as truncated)', () => {
    const cut = body.subarray(0, body.indexOf(Buffer.from(`\r\n--${boundary}--`)) - 2);
    const r = read(cut, boundary, 5);
    expect(r.complete).to.equal(false);
    expect(r.parts).to.have.length(3);
    expect(r.parts[2]!.ended).to.equal(false);
  });

  it('starts without a preamble too', () => {
    const r = read(Buffer.from(`--${boundary}\r\n\r\nx\r\n--${boundary}--`), boundary, 4);
    expect(r.parts.map((p) => p.data.toString())).to.deep.equal(['x']);
    expect(r.complete).to.equal(true);
  });

  it('reads Content-Type parameters, quoted or not', () => {
    expect(contentTypeParams('Multipart/Related; type="application/dicom"; boundary="a;b=c"')).to.deep.equal({
      mediaType: 'multipart/related',
      params: { type: 'application/dicom', boundary: 'a;b=c' },
    });
    expect(contentTypeParams('multipart/related;boundary=abc').params['boundary']).to.equal('abc');
  });
});
