import assert from 'node:assert/strict';
import net from 'node:net';
import { deliverWholePdus } from '../../src/dicom/scp.js';

function pdu(type: number, body: number): Buffer {
  const b = Buffer.alloc(6 + body, type);
  b.writeUInt8(type, 0);
  b.writeUInt8(0, 1);
  b.writeUInt32BE(body, 2);
  return b;
}

/** Emits `stream` as socket 'data' events cut at `cuts`, returns what a listener saw. */
function feed(stream: Buffer, cuts: number[]): Buffer[] {
  const socket = deliverWholePdus(new net.Socket());
  const seen: Buffer[] = [];
  socket.on('data', (b: Buffer) => seen.push(Buffer.from(b)));
  let from = 0;
  for (const at of [...cuts, stream.length]) {
    if (at > from) socket.emit('data', stream.subarray(from, at));
    from = at;
  }
  socket.destroy();
  return seen;
}

describe('deliverWholePdus (re-framing for dcmjs-dimse)', () => {
  const pdus = [pdu(1, 68), pdu(4, 300), pdu(4, 5), pdu(5, 4), pdu(4, 70_000)];
  const stream = Buffer.concat(pdus);

  it('delivers exactly one PDU per data event, however the bytes were split', () => {
    const splits: number[][] = [
      [],
      [1, 2, 3, 4, 5, 6, 7],
      [74, 380],
      [3, 76, 77, 79, 400, 401, 402, 65_536],
      Array.from({ length: Math.ceil(stream.length / 1000) }, (_, i) => i * 1000),
      Array.from({ length: stream.length }, (_, i) => i),
    ];
    for (const cuts of splits) assert.deepEqual(feed(stream, cuts), pdus, `cuts ${cuts.slice(0, 8).join(',')}`);
  });

  it('keeps a trailing partial PDU until the rest arrives, and passes other events through', () => {
    const socket = deliverWholePdus(new net.Socket());
    const seen: Buffer[] = [];
    let ended = false;
    socket.on('data', (b: Buffer) => seen.push(b));
    socket.on('custom', () => (ended = true));
    socket.emit('data', stream.subarray(0, 80));
    assert.equal(seen.length, 1);
    socket.emit('custom');
    assert.equal(ended, true);
    socket.emit('data', stream.subarray(80));
    assert.deepEqual(seen.map((b) => b.length), pdus.map((p) => p.length));
    socket.destroy();
  });
});
