/**
 * Fuzzing the HL7 inbound path of one in-process gateway over MLLP: frames
 * mutated from valid ORM/OMI/ORU/ADT messages (missing, repeated and moved
 * segments, wrong separators and terminators, binary bytes, huge fields, bad
 * encodings, no MSH at all) and byte streams with stray MLLP framing. Every
 * frame gets an ACK with MSA: AA when it still made sense, AR with an ERR
 * segment when not, never AE (nothing here is a transient failure) and never
 * the parser's internal-error answer; a valid ORM right after gets AA, the
 * process stays up and memory stays bounded. FUZZ_RUNS sets the cases per property.
 */
import { expect } from 'chai';
import fc from 'fast-check';
import { RawMllpPeer, frame, parseAck, type ParsedAck } from '../helpers/hl7-peers.js';
import { adtA40, aiOru, omiO23, ormO01, oruR01 } from '../helpers/hl7-samples.js';
import {
  HEAP_GROWTH_LIMIT_MB,
  RSS_GROWTH_LIMIT_MB,
  fuzzRuns,
  fuzzSeed,
  settledHeapMb,
  settledRssMb,
  startFuzzGateway,
  type FuzzGateway,
} from './fuzz-gateway.js';

const RUNS = fuzzRuns(1200);
const MAX_MESSAGE_BYTES = 256 * 1024;

type Mutation =
  | { kind: 'drop-segment'; at: number }
  | { kind: 'repeat-segment'; at: number }
  | { kind: 'move-segment'; at: number }
  | { kind: 'field-separator'; at: number; sep: string }
  | { kind: 'encoding-chars'; chars: string }
  | { kind: 'terminators'; with: string }
  | { kind: 'truncate'; at: number }
  | { kind: 'huge-field'; segment: number; field: number; size: number; char: string }
  | { kind: 'set-field'; segment: number; field: number; value: string }
  | { kind: 'escape-garbage'; at: number; text: string }
  | { kind: 'bytes'; at: number; bytes: Uint8Array }
  | { kind: 'bad-utf8'; at: number; bytes: readonly number[] };

const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ kind: fc.constant('drop-segment' as const), at: fc.nat() }),
  fc.record({ kind: fc.constant('repeat-segment' as const), at: fc.nat() }),
  fc.record({ kind: fc.constant('move-segment' as const), at: fc.nat() }),
  fc.record({ kind: fc.constant('field-separator' as const), at: fc.nat(), sep: fc.constantFrom('^', '~', '\\', '&', '#', ' ', '\t', '', '||') }),
  fc.record({ kind: fc.constant('encoding-chars' as const), chars: fc.string({ maxLength: 6 }) }),
  fc.record({ kind: fc.constant('terminators' as const), with: fc.constantFrom('\n', '\r\n', '', '\r\r', '|\r') }),
  fc.record({ kind: fc.constant('truncate' as const), at: fc.nat() }),
  fc.record({
    kind: fc.constant('huge-field' as const),
    segment: fc.nat(),
    field: fc.integer({ min: 1, max: 40 }),
    size: fc.oneof(fc.integer({ min: 1000, max: 20_000 }), fc.integer({ min: MAX_MESSAGE_BYTES - 2000, max: MAX_MESSAGE_BYTES + 100_000 })),
    char: fc.constantFrom('A', '^', '~', '&', '\\', 'é', '\u0000'),
  }),
  fc.record({
    kind: fc.constant('set-field' as const),
    segment: fc.nat(),
    field: fc.integer({ min: 1, max: 40 }),
    value: fc.oneof(
      fc.string({ maxLength: 40 }),
      fc.constantFrom('', 'ZZZ^Z99', 'ACK', 'ORU', 'ORM^O01^ORM_O01^X^Y', '9.9', '2', 'X'.repeat(300), '^^^^^^', '~~~~', '&&&'),
    ),
  }),
  fc.record({
    kind: fc.constant('escape-garbage' as const),
    at: fc.nat(),
    text: fc.constantFrom('\\', '\\X', '\\X0\\', '\\XZZ\\', '\\Z99\\', '\\.br\\', '\\H\\\\N\\', '\\E\\\\', '\\S\\T\\R\\'),
  }),
  fc.record({ kind: fc.constant('bytes' as const), at: fc.nat(), bytes: fc.uint8Array({ minLength: 1, maxLength: 64 }) }),
  fc.record({
    kind: fc.constant('bad-utf8' as const),
    at: fc.nat(),
    bytes: fc.constantFrom([0xc3, 0x28], [0xff, 0xfe], [0x00], [0xe2, 0x82], [0xf0, 0x9f, 0x98], [0xed, 0xa0, 0x80], [0xc0, 0xaf]),
  }),
);

/** Applies the mutations; bytes VT and FS are left out (framing is fuzzed separately). */
function mutate(text: string, mutations: Mutation[]): { bytes: Buffer; mshTouched: boolean } {
  const segs = text.split('\r').filter((s) => s !== '');
  let term = '\r';
  let mshTouched = false;
  const tail: Mutation[] = [];
  for (const m of mutations) {
    const at = (n: number): number => (segs.length === 0 ? 0 : n % segs.length);
    switch (m.kind) {
      case 'drop-segment':
        if (at(m.at) === 0) mshTouched = true;
        segs.splice(at(m.at), 1);
        break;
      case 'repeat-segment':
        if (segs.length) segs.splice(at(m.at), 0, segs[at(m.at)]!);
        if (at(m.at) === 0) mshTouched = true;
        break;
      case 'move-segment':
        if (segs.length) {
          const [s] = segs.splice(at(m.at), 1);
          segs.unshift(s!);
          mshTouched = true;
        }
        break;
      case 'field-separator':
        if (segs.length) {
          segs[at(m.at)] = segs[at(m.at)]!.split('|').join(m.sep);
          if (at(m.at) === 0) mshTouched = true;
        }
        break;
      case 'encoding-chars':
        if (segs[0]?.startsWith('MSH|')) {
          segs[0] = `MSH|${m.chars}${segs[0].slice(segs[0].indexOf('|', 4))}`;
          mshTouched = true;
        }
        break;
      case 'terminators':
        term = m.with;
        mshTouched = true;
        break;
      case 'huge-field':
      case 'set-field': {
        if (!segs.length) break;
        const i = at(m.segment);
        const fields = segs[i]!.split('|');
        while (fields.length <= m.field) fields.push('');
        fields[m.field] = m.kind === 'huge-field' ? m.char.repeat(m.size) : m.value.replace(/[\x0b\x1c]/g, '');
        segs[i] = fields.join('|');
        if (i === 0) mshTouched = true;
        break;
      }
      default:
        tail.push(m);
    }
  }
  let bytes = Buffer.from(segs.join(term) + (segs.length ? term : ''), 'utf8');
  for (const m of tail) {
    const pos = (n: number): number => n % (bytes.length + 1);
    if (m.kind === 'truncate') bytes = bytes.subarray(0, pos(m.at));
    else if (m.kind === 'escape-garbage') bytes = Buffer.concat([bytes.subarray(0, pos(m.at)), Buffer.from(m.text, 'latin1'), bytes.subarray(pos(m.at))]);
    else if (m.kind === 'bytes') bytes = Buffer.concat([bytes.subarray(0, pos(m.at)), Buffer.from(m.bytes), bytes.subarray(pos(m.at))]);
    else if (m.kind === 'bad-utf8') bytes = Buffer.concat([bytes.subarray(0, pos(m.at)), Buffer.from(m.bytes), bytes.subarray(pos(m.at))]);
    mshTouched = true;
  }
  // The MLLP start and end blocks inside the payload would make other frames: not this property's subject.
  return { bytes: Buffer.from(bytes.filter((b) => b !== 0x0b && b !== 0x1c)), mshTouched };
}

function framed(bytes: Buffer): Buffer {
  return Buffer.concat([Buffer.from([0x0b]), bytes, Buffer.from([0x1c, 0x0d])]);
}

/** What every answer must be: an ACK with MSA; AR always with an ERR saying why; never AE nor an internal error. */
function checkAck(ack: ParsedAck, what: string): void {
  expect(ack.msh[0], `${what}: an MSH`).to.equal('MSH');
  expect(['AA', 'AR'], `${what}: MSA-1 (${ack.text.replace(/\r/g, ' | ').slice(0, 300)})`).to.include(ack.code);
  if (ack.code === 'AR') {
    expect(ack.err, `${what}: AR carries an ERR segment`).to.not.equal(undefined);
    expect(ack.err![3], `${what}: ERR-3 code`).to.match(/^\d{3}\^/);
    expect(ack.text, `${what}: not the parser's internal failure`).to.not.include('message could not be processed');
  }
}

describe('fuzz: HL7 over MLLP (one in-process gateway)', function () {
  this.timeout(600_000);
  let f: FuzzGateway;
  let port: number;
  let peer: RawMllpPeer;
  let rssBefore = 0;
  let heapBefore: number | undefined;
  let cases = 0;
  let valid = 0;
  const codes = new Map<string, number>();

  const params = <T>(runs = RUNS): fc.Parameters<T> => {
    const seed = fuzzSeed();
    return seed === undefined ? { numRuns: runs, endOnFailure: true } : { numRuns: runs, endOnFailure: true, seed };
  };

  async function validStillWorks(p: RawMllpPeer): Promise<void> {
    const id = `VALID${++valid}`;
    const ack = await p.send(ormO01({ controlId: id, accession: `ACCV${valid}`, patientId: `PV${valid}` }));
    expect(ack.code, `valid ORM after the bad ones: ${ack.text}`).to.equal('AA');
    expect(ack.ackedControlId).to.equal(id);
  }

  before(async () => {
    f = await startFuzzGateway({ hl7: { maxMessageBytes: MAX_MESSAGE_BYTES, idleTimeoutSeconds: 60 } });
    port = f.gw.ports().hl7;
    peer = await RawMllpPeer.connect(port);
    heapBefore = settledHeapMb();
    rssBefore = settledRssMb();
  });
  after(async () => {
    peer?.destroy();
    await f?.stop();
  });

  it('mutated messages: AA or AR with MSA and ERR, one answer per frame, on the same connection', async () => {
    const base = fc.oneof(
      fc.constant('orm' as const),
      fc.constant('omi' as const),
      fc.constant('oru' as const),
      fc.constant('ai' as const),
      fc.constant('adt' as const),
    );
    await fc.assert(
      fc.asyncProperty(base, fc.array(mutation, { minLength: 1, maxLength: 4 }), async (kind, mutations) => {
        const n = ++cases;
        const ids = { controlId: `FZ${n}`, accession: `ACCF${n}`, patientId: `PF${n % 50}`, studyUid: `1.2.826.0.1.3680043.10.777.${n}` };
        const text =
          kind === 'orm'
            ? ormO01(ids)
            : kind === 'omi'
              ? omiO23(ids)
              : kind === 'oru'
                ? oruR01(ids)
                : kind === 'ai'
                  ? aiOru({ ...ids, sendingApplication: 'AI_VENDOR' })
                  : adtA40({ ...ids, priorPatientId: `PF${(n + 1) % 50}` });
        const { bytes, mshTouched } = mutate(text, mutations);
        const before = peer.received.length;
        peer.write(framed(bytes));
        const replies = await peer.replyCount(before + 1);
        const ack = parseAck(replies[before]!);
        checkAck(ack, `case ${n}`);
        codes.set(ack.code, (codes.get(ack.code) ?? 0) + 1);
        const stripped = bytes.toString('latin1').replace(/^[\s]+/, '');
        if (!stripped.startsWith('MSH')) expect(ack.code, 'no MSH: AR').to.equal('AR');
        if (!mshTouched) expect(ack.ackedControlId, 'MSA-2 echoes MSH-10').to.equal(`FZ${n}`);
        if (bytes.length > MAX_MESSAGE_BYTES) expect(ack.code, 'over hl7.maxMessageBytes: AR').to.equal('AR');
        if (n % 20 === 0) await validStillWorks(peer);
      }),
      params(),
    );
    expect(codes.get('AR') ?? 0, 'some frames were refused').to.be.above(0);
    expect(codes.get('AA') ?? 0, 'some frames were still accepted').to.be.above(0);
  });

  it('text that is not HL7 at all (random strings, with or without a leading MSH): AR', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(
          fc.string({ maxLength: 200 }),
          fc.string({ unit: 'binary', maxLength: 200 }),
          fc.uint8Array({ maxLength: 300 }).map((u) => Buffer.from(u).toString('latin1')),
        ),
        fc.constantFrom('', 'MSH', 'MSH|', 'MSH|^~\\&|'),
        async (junk, prefix) => {
          cases++;
          const bytes = Buffer.from((prefix + junk).replace(/[\x0b\x1c]/g, ''), 'utf8');
          const before = peer.received.length;
          peer.write(framed(bytes));
          const ack = parseAck((await peer.replyCount(before + 1))[before]!);
          checkAck(ack, JSON.stringify(prefix + junk).slice(0, 100));
          if (!bytes.toString('latin1').trimStart().startsWith('MSH')) expect(ack.code).to.equal('AR');
        },
      ),
      params(Math.ceil(RUNS / 3)),
    );
    await validStillWorks(peer);
  });

  it('stray MLLP framing bytes and garbage around frames: every answer an ACK, a valid message after them gets AA', async () => {
    const piece = fc.oneof(
      fc.constantFrom('\x0b', '\x1c', '\r', '\x1c\r', '\x0b\x0b', 'MSH|^~\\&|X|Y|||||ORM^O01|J|P|2.3\r'),
      fc.string({ maxLength: 50 }),
      fc.uint8Array({ maxLength: 50 }).map((u) => Buffer.from(u).toString('latin1')),
    );
    await fc.assert(
      fc.asyncProperty(fc.array(piece, { minLength: 1, maxLength: 8 }), async (pieces) => {
        cases++;
        const p = await RawMllpPeer.connect(port);
        try {
          p.write(Buffer.from(pieces.join(''), 'latin1'));
          // end whatever frame the garbage left open, then a valid message on the same connection
          const id = `AFTER${++valid}`;
          p.write(frame(ormO01({ controlId: id, accession: `ACCA${valid}`, patientId: `PA${valid}` })));
          for (let n = 1; ; n++) {
            const replies = await p.replyCount(n);
            const ack = parseAck(replies[n - 1]!);
            checkAck(ack, `reply ${n}`);
            if (ack.ackedControlId === id) {
              expect(ack.code).to.equal('AA');
              break;
            }
          }
        } finally {
          p.destroy();
        }
      }),
      params(Math.ceil(RUNS / 3)),
    );
  });

  it('kept the listener up, answered a valid ORM on a new connection, and memory stayed bounded', async () => {
    const fresh = await RawMllpPeer.connect(port);
    await validStillWorks(fresh);
    fresh.destroy();
    const heapGrown = heapBefore === undefined ? undefined : (settledHeapMb() ?? 0) - heapBefore;
    const grown = settledRssMb() - rssBefore;
    console.log(
      `      hl7 fuzz: ${cases} cases (${[...codes].map(([k, v]) => `${k} ${v}`).join(', ')}), RSS grew ${grown.toFixed(1)} MB${heapGrown === undefined ? '' : `, heap ${heapGrown.toFixed(1)} MB`}`,
    );
    expect(grown).to.be.below(RSS_GROWTH_LIMIT_MB);
    if (heapGrown !== undefined) expect(heapGrown).to.be.below(HEAP_GROWTH_LIMIT_MB);
  });
});
