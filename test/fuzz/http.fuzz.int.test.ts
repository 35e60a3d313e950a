/**
 * Fuzzing the JSON routes of one in-process gateway: bodies of the wrong
 * shape (wrong types, unknown and missing keys, near-valid rules, deep
 * nesting, invalid JSON, odd content types and charsets, bodies over the
 * limit) to POST /api/cases, POST /api/cases/:id/report, PUT /api/rules and
 * POST /api/rules/dry-run. Every answer is below 500, and a 4xx carries the
 * JSON error body; valid GETs keep working, the process stays up and memory
 * stays bounded. FUZZ_RUNS sets the cases per property.
 */
import { expect } from 'chai';
import fc from 'fast-check';
import { CT_IMAGE_STORAGE, EXPLICIT_LE, PduType, RawDicomPeer, cStoreRq, ctDataset, pData, responseStatus } from '../helpers/raw-dicom.js';
import {
  FUZZ_TOKENS,
  HEAP_GROWTH_LIMIT_MB,
  RSS_GROWTH_LIMIT_MB,
  fuzzRuns,
  fuzzSeed,
  settledHeapMb,
  settledRssMb,
  startFuzzGateway,
  type FuzzGateway,
} from './fuzz-gateway.js';

const RUNS = fuzzRuns(2000);
const MAX_BODY_BYTES = 64 * 1024;
const STUDY_UID = '1.2.826.0.1.3680043.10.888.1';

/** Any JSON-ish value a client might put in a field by mistake. */
const wrongValue = fc.oneof(
  fc.string({ maxLength: 30 }),
  fc.constantFrom(
    '',
    ' ',
    '1',
    '2a',
    '2b',
    '3a',
    '3b',
    '4',
    'stat',
    'urgent',
    'routine',
    'oncology',
    'pool',
    STUDY_UID,
    'x'.repeat(70),
    'x'.repeat(2100),
    '\u0000',
    '\ud800',
  ),
  fc.integer(),
  fc.double(),
  fc.boolean(),
  fc.constant(null),
  fc.array(fc.string({ maxLength: 5 }), { maxLength: 3 }),
  fc.dictionary(fc.string({ maxLength: 5 }), fc.string({ maxLength: 5 }), { maxKeys: 3 }),
);

const caseBody = fc.record(
  { studyInstanceUid: wrongValue, accessionNumber: wrongValue, reason: wrongValue, destinationId: wrongValue, priority: wrongValue, extra: wrongValue },
  { requiredKeys: [] },
);
const reportBody = fc.record({ text: wrongValue, radpeerScore: wrongValue, readerId: wrongValue, score: wrongValue }, { requiredKeys: [] });
const whenValue: fc.Arbitrary<unknown> = fc.letrec((tie) => ({
  cond: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    fc.record({ modality: fc.oneof(fc.array(fc.string({ maxLength: 4 }), { maxLength: 3 }), wrongValue) }, { requiredKeys: [] }),
    fc.record({ ageYears: fc.oneof(fc.record({ min: wrongValue, max: wrongValue }, { requiredKeys: [] }), wrongValue) }),
    fc.record({ all: fc.oneof(fc.array(tie('cond'), { maxLength: 3 }), wrongValue) }),
    fc.record({ any: fc.oneof(fc.array(tie('cond'), { maxLength: 3 }), wrongValue) }),
    fc.record({ not: tie('cond') }),
    wrongValue,
  ),
})).cond;
const rule = fc.record(
  {
    id: fc.oneof(fc.constantFrom('r1', 'r-2', 'bad id!', ''), wrongValue),
    kind: fc.oneof(fc.constantFrom('oncology', 'discordance', 'sampling', 'high-stakes', 'manual', 'other'), wrongValue),
    priority: fc.oneof(fc.constantFrom('stat', 'urgent', 'routine'), wrongValue),
    enabled: fc.oneof(fc.boolean(), wrongValue),
    rate: wrongValue,
    minimum: wrongValue,
    period: wrongValue,
    keywords: fc.oneof(fc.array(fc.string({ maxLength: 10 }), { maxLength: 4 }), wrongValue),
    slaHours: wrongValue,
    destination: wrongValue,
    when: whenValue,
  },
  { requiredKeys: [] },
);
const rulesBody = fc.oneof(
  fc.array(rule, { maxLength: 4 }),
  fc.record({ rules: fc.oneof(fc.array(rule, { maxLength: 4 }), wrongValue), comment: wrongValue }, { requiredKeys: [] }),
);
const dryRunBody = fc.record(
  { rules: fc.oneof(fc.array(rule, { maxLength: 3 }), wrongValue), from: wrongValue, to: wrongValue, maxItems: wrongValue, other: wrongValue },
  { requiredKeys: [] },
);

/**
 * Nesting far deeper than any real body: recursion in a validator must not become a 500.
 * Built as text (JSON.stringify itself recurses).
 */
function deepBody(kind: 'array' | 'not' | 'all', depth: number): string {
  if (kind === 'array') return '['.repeat(depth) + ']'.repeat(depth);
  const leaf = '{"modality":["CT"]}';
  const when = kind === 'not' ? '{"not":'.repeat(depth) + leaf + '}'.repeat(depth) : '{"all":['.repeat(depth) + leaf + ']}'.repeat(depth);
  return `[{"id":"deep","kind":"high-stakes","priority":"routine","keywords":["x"],"when":${when}}]`;
}

type Raw = { body: string | Buffer; contentType?: string };

const rawBody: fc.Arbitrary<Raw> = fc.oneof(
  fc.record({ body: fc.string({ maxLength: 200 }), contentType: fc.constantFrom('application/json', 'application/json; charset=utf-8', undefined) }),
  fc.record({
    body: fc.constantFrom(
      '{',
      '{"a":',
      '[1,2',
      '{"reason": "x",}',
      'null',
      '"string"',
      '123',
      'true',
      '[]',
      '{}',
      '\ufeff{}',
      '{"__proto__": {"x": 1}}',
      '{"constructor": {"prototype": {}}}',
    ),
  }),
  fc.record({
    body: fc.constantFrom('{"reason":"x","studyInstanceUid":"1.2"}', 'a=1&b=2', '<xml/>'),
    contentType: fc.constantFrom(
      'text/plain',
      'application/x-www-form-urlencoded',
      'application/xml',
      'application/json; charset=latin1',
      'application/json; charset=utf-16',
      'multipart/form-data; boundary=x',
      'application/yaml',
      '',
    ),
  }),
  fc.record({ body: fc.uint8Array({ maxLength: 300 }).map((u) => Buffer.from(u)), contentType: fc.constant('application/json') }),
  fc.record({
    body: fc.integer({ min: MAX_BODY_BYTES - 100, max: MAX_BODY_BYTES * 2 }).map((n) => JSON.stringify({ reason: 'x'.repeat(n) })),
    contentType: fc.constant('application/json'),
  }),
);

type Route = 'cases' | 'report' | 'report-unknown' | 'rules' | 'dry-run';
const routeArb = fc.constantFrom<Route>('cases', 'report', 'report-unknown', 'rules', 'dry-run');

describe('fuzz: HTTP JSON routes (one in-process gateway)', function () {
  this.timeout(600_000);
  let f: FuzzGateway;
  let base: string;
  let caseId = '';
  let rssBefore = 0;
  let heapBefore: number | undefined;
  let cases = 0;
  const statuses = new Map<number, number>();

  const params = <T>(runs = RUNS): fc.Parameters<T> => {
    const seed = fuzzSeed();
    return seed === undefined ? { numRuns: runs, endOnFailure: true } : { numRuns: runs, endOnFailure: true, seed };
  };

  function target(route: Route, junkId = 'no-such-case'): { method: string; path: string; token: string } {
    switch (route) {
      case 'cases':
        return { method: 'POST', path: '/api/cases', token: FUZZ_TOKENS.admin };
      case 'report':
        return { method: 'POST', path: `/api/cases/${caseId}/report`, token: FUZZ_TOKENS.system };
      case 'report-unknown':
        return { method: 'POST', path: `/api/cases/${encodeURIComponent(junkId)}/report`, token: FUZZ_TOKENS.system };
      case 'rules':
        return { method: 'PUT', path: '/api/rules', token: FUZZ_TOKENS.admin };
      case 'dry-run':
        return { method: 'POST', path: '/api/rules/dry-run', token: FUZZ_TOKENS.admin };
    }
  }

  /** Sends one body; the answer must be below 500, and a 4xx must be the JSON error body. */
  async function send(route: Route, raw: Raw, junkId?: string): Promise<number> {
    cases++;
    const t = target(route, junkId);
    const headers: Record<string, string> = { authorization: `Bearer ${t.token}` };
    if (raw.contentType !== undefined) headers['content-type'] = raw.contentType;
    const r = await fetch(`${base}${t.path}`, { method: t.method, headers, body: raw.body });
    const text = await r.text();
    statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1);
    const what = `${t.method} ${t.path} ${JSON.stringify(String(raw.body).slice(0, 200))} -> ${r.status} ${text.slice(0, 300)}`;
    expect(r.status, what).to.be.below(500);
    if (r.status >= 400) {
      let parsed: { error?: { code?: unknown; message?: unknown } };
      try {
        parsed = JSON.parse(text) as typeof parsed;
      } catch {
        throw new Error(`not a JSON error body: ${what}`);
      }
      expect(parsed.error?.code, what).to.be.a('string');
      expect(parsed.error?.message, what).to.be.a('string');
    }
    if (cases % 25 === 0) await validGetsWork();
    return r.status;
  }

  async function validGetsWork(): Promise<void> {
    expect((await fetch(`${base}/healthz`)).status).to.equal(200);
    const r = await fetch(`${base}/api/rules`, { headers: { authorization: `Bearer ${FUZZ_TOKENS.admin}` } });
    expect(r.status).to.equal(200);
    expect(((await r.json()) as { rules: unknown[] }).rules).to.be.an('array');
  }

  before(async () => {
    f = await startFuzzGateway({ http: { maxBodyBytes: MAX_BODY_BYTES } });
    base = `http://127.0.0.1:${f.gw.ports().http}`;
    // one stored study and a case on it, so report bodies reach validation, not only 404
    const peer = await RawDicomPeer.connect(f.gw.ports().dicom);
    expect((await peer.associate({ contexts: [{ id: 1, abstractSyntax: CT_IMAGE_STORAGE, transferSyntaxes: [EXPLICIT_LE] }] })).type).to.equal(
      PduType.associateAc,
    );
    const sop = `${STUDY_UID}.1.1`;
    peer.write(pData([{ contextId: 1, command: true, last: true, data: cStoreRq(1, CT_IMAGE_STORAGE, sop) }]));
    peer.write(pData([{ contextId: 1, command: false, last: true, data: ctDataset({ sopInstanceUid: sop, studyUid: STUDY_UID }) }]));
    expect(responseStatus((await peer.next())!)).to.equal(0);
    peer.destroy();
    const r = await fetch(`${base}/api/cases`, {
      method: 'POST',
      headers: { authorization: `Bearer ${FUZZ_TOKENS.admin}`, 'content-type': 'application/json' },
      body: JSON.stringify({ studyInstanceUid: STUDY_UID, reason: 'fuzz target' }),
    });
    expect(r.status).to.equal(201);
    caseId = ((await r.json()) as { id: string }).id;
    heapBefore = settledHeapMb();
    rssBefore = settledRssMb();
  });
  after(async () => {
    await f?.stop();
  });

  it('JSON bodies of the wrong shape for each route: 2xx or a 4xx JSON error, never 500', async () => {
    const bodyFor = (route: Route): fc.Arbitrary<unknown> =>
      route === 'cases' ? caseBody : route === 'rules' ? rulesBody : route === 'dry-run' ? dryRunBody : reportBody;
    await fc.assert(
      fc.asyncProperty(
        routeArb.chain((route) => fc.tuple(fc.constant(route), fc.oneof(bodyFor(route), fc.jsonValue({ maxDepth: 4 })), fc.string({ maxLength: 20 }))),
        async ([route, body, junkId]) => {
          await send(route, { body: JSON.stringify(body) ?? 'null', contentType: 'application/json' }, junkId);
        },
      ),
      params(),
    );
  });

  it('raw bodies: invalid JSON, odd content types and charsets, binary, over the size limit', async () => {
    await fc.assert(
      fc.asyncProperty(routeArb, rawBody, async (route, raw) => {
        const status = await send(route, raw);
        if (Buffer.byteLength(raw.body) > MAX_BODY_BYTES && raw.contentType === 'application/json') expect(status).to.equal(400);
      }),
      params(Math.ceil(RUNS / 2)),
    );
  });

  it('deeply nested bodies: a 4xx (or a stored rule set), never a 500 or a crash', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom<Route>('rules', 'dry-run', 'cases'),
        fc.constantFrom('array' as const, 'not' as const, 'all' as const),
        fc.integer({ min: 1, max: 3000 }),
        async (route, kind, depth) => {
          const inner = deepBody(kind, depth);
          const json = route === 'dry-run' ? `{"rules":${inner}}` : inner;
          if (Buffer.byteLength(json) > MAX_BODY_BYTES) return;
          await send(route, { body: json, contentType: 'application/json' });
        },
      ),
      params(Math.ceil(RUNS / 8)),
    );
  });

  it('kept serving, and memory stayed bounded', async () => {
    await validGetsWork();
    const heapGrown = heapBefore === undefined ? undefined : (settledHeapMb() ?? 0) - heapBefore;
    const grown = settledRssMb() - rssBefore;
    console.log(
      `      http fuzz: ${cases} requests (${[...statuses]
        .sort((a, b) => a[0] - b[0])
        .map(([k, v]) => `${k}: ${v}`)
        .join(', ')}), RSS grew ${grown.toFixed(1)} MB${heapGrown === undefined ? '' : `, heap ${heapGrown.toFixed(1)} MB`}`,
    );
    expect(grown).to.be.below(RSS_GROWTH_LIMIT_MB);
    if (heapGrown !== undefined) expect(heapGrown).to.be.below(HEAP_GROWTH_LIMIT_MB);
  });
});
