import { spawnSync } from 'node:child_process';
import { expect } from 'chai';
import { excludeInstance } from '../../src/forwarding/exclusion.repository.js';
import { z } from 'zod';
import type { RouteSpec } from '../../src/http/api-schema.js';
import { API_ROUTES } from '../../src/http/openapi.js';
import { holdStudy } from '../../src/studies/study.repository.js';
import { API_TOKENS, ApiGateway } from '../helpers/api-gateway.js';
import { eventually } from '../helpers/eventually.js';
import { oruR01 } from '../helpers/hl7-samples.js';
import { HTTP_METHODS, openApiDocument, validateJson, type HttpMethod, type JsonSchema, type Operation } from '../helpers/json-schema.js';

type Token = keyof typeof API_TOKENS;

interface Layer {
  rawPath?: unknown;
  route?: { path: unknown; methods: Record<string, boolean> };
  handle?: { stack?: Layer[] };
}

/**
 * Every (method, path) the express app answers, found by walking the router
 * stacks (router 2.x keeps a layer's path in `rawPath`), nested routers
 * included. Plain middleware (authentication, static files) has no route.
 */
export function registeredRoutes(app: { router: { stack: Layer[] } }): { method: string; path: string }[] {
  const out: { method: string; path: string }[] = [];
  // A router mounted without a path (`use(router)`) adds nothing to its routes' paths.
  const join = (prefix: string, p: string) => (p === '/' ? prefix : `${prefix}${p}`);
  const walk = (stack: Layer[], prefix: string) => {
    for (const layer of stack) {
      const isRouter = Array.isArray(layer.handle?.stack);
      if (!layer.route && !isRouter) continue;
      const raw = layer.route ? layer.route.path : layer.rawPath;
      const paths = Array.isArray(raw) ? raw : [raw];
      for (const p of paths) {
        if (typeof p !== 'string') throw new Error(`a route or router is mounted on a non-string path (${String(p)}): describe it by hand`);
        if (layer.route) {
          for (const m of Object.keys(layer.route.methods)) out.push({ method: m === '_all' ? 'ALL' : m.toUpperCase(), path: join(prefix, p) || '/' });
        } else walk(layer.handle!.stack!, join(prefix, p));
      }
    }
  };
  walk(app.router.stack, '');
  return out;
}

/** `/cases/:id` and `/cases/{id}` both become `/cases/{}`: parameter names may differ (the spec uses DESIGN.md's). */
const shape = (p: string) => p.replace(/:[A-Za-z0-9_]+/g, '{}').replace(/\{[A-Za-z0-9_]+\}/g, '{}');

/** The web console's static files are not API: documented in the README, not here. */
const notApi = (r: { path: string }) => r.path === '/' || r.path.startsWith('/console');

function operations(): { method: HttpMethod; path: string; op: Operation }[] {
  return Object.entries(openApiDocument.paths).flatMap(([path, item]) =>
    HTTP_METHODS.flatMap((method) => (item[method] ? [{ method, path, op: item[method]! }] : [])),
  );
}

const defs = openApiDocument.components.schemas;

interface Example {
  token?: Token;
  /** The concrete path with its query string. */
  url: string;
  body?: unknown;
  status: number;
}

const specOf = (operationId: string): RouteSpec => {
  const spec = API_ROUTES.find((r) => r.operationId === operationId);
  if (!spec) throw new Error(`no route spec for ${operationId}`);
  return spec;
};

describe('OpenAPI description (GET /api/openapi.json), generated from the route schemas, stays true to the running gateway', function () {
  this.timeout(120_000);
  // De-identified deliveries: the reader's answers are the pseudonymous view, which must match the spec too.
  const api = new ApiGateway({ deidentify: true });
  const ids = {
    study: '',
    accession: '',
    caseRead: '',
    caseReport: '',
    caseDecline: '',
    caseCancel: '',
    caseDead: '',
    caseWriteBackFailed: '',
    caseReassign: '',
    caseExcluded: '',
    excludedSop: '',
    freshStudy: '',
    heldMessage: '',
    heldToRelease: '',
    heldToReject: '',
    series: '',
    sop: '',
  };

  before(async () => {
    await api.start();
    // One study with everything linked (order, final report, AI result, decision, case).
    const a = await api.flaggedStudy();
    ids.study = a.study.studyInstanceUid;
    ids.accession = a.study.accessionNumber;
    ids.caseRead = a.caseId;
    ids.series = a.study.seriesInstanceUids[0]!;
    ids.sop = a.study.instances[0]!.sopInstanceUid;
    await api.assign(a.caseId, 'dr-a');
    // Cases for the operations that change a case, one each, so the order the operations run in does not matter.
    for (const k of ['caseReport', 'caseDecline', 'caseCancel', 'caseDead', 'caseWriteBackFailed', 'caseReassign'] as const)
      ids[k] = (await api.flaggedStudy()).caseId;
    // Instances kept back from the de-identified delivery: one on the reader's case (their view lists it under the
    // pseudonym), one to release.
    const excluded = await api.flaggedStudy();
    ids.caseExcluded = excluded.caseId;
    ids.excludedSop = excluded.study.instances[0]!.sopInstanceUid;
    for (const [caseId, sop] of [
      [ids.caseRead, a.study.instances[0]!.sopInstanceUid],
      [ids.caseExcluded, ids.excludedSop],
    ] as const) {
      const d = await api.gw.db.selectFrom('deliveries').select('id').where('case_id', '=', caseId).executeTakeFirstOrThrow();
      await excludeInstance(api.gw.db, {
        deliveryId: d.id,
        caseId,
        sopInstanceUid: sop,
        sopClassUid: '1.2.840.10008.5.1.4.1.1.7',
        seriesDescription: 'dose screen',
        reason: 'burned-in-risk',
        detail: 'SOP class Secondary Capture Image (1.2.840.10008.5.1.4.1.1.7)',
        now: new Date().toISOString(),
      });
    }
    await api.assign(ids.caseReport, 'dr-a');
    await api.assign(ids.caseDecline, 'dr-a');
    await api.assign(ids.caseReassign, 'dr-a');
    // A delivery that gave up (dead letter): the case failed and waits for a retry.
    await api.gw.db.updateTable('deliveries').set({ state: 'dead', last_error: 'refused' }).where('case_id', '=', ids.caseDead).execute();
    await api.gw.db.updateTable('cases').set({ state: 'failed' }).where('id', '=', ids.caseDead).execute();
    // A write-back the RIS refuses (AR): a failed write-back to retry.
    api.ris.script.push('AR');
    const r = await api.call('POST', `/api/cases/${ids.caseWriteBackFailed}/report`, API_TOKENS.system, {
      text: 'Concur.',
      radpeerScore: '1',
      readerId: 'dr-b',
    });
    expect(r.status, r.text).to.equal(201);
    await eventually(async () => {
      const c = (await api.call('GET', `/api/cases/${ids.caseWriteBackFailed}`, API_TOKENS.admin)).body as { writeBack: { state: string } | null };
      return c.writeBack?.state === 'failed';
    }, 'the refused write-back');
    // A report for the first study from another patient: held for review.
    const held = await api.hl7.send(
      oruR01({ accession: ids.accession, patientId: 'MRN-SOMEONE-ELSE', controlId: 'API-HELD-1', studyUid: ids.study }, { status: 'F' }),
    );
    expect(held.code).to.equal('AA');
    const messages = (await api.call('GET', '/api/messages', API_TOKENS.admin)).body as { items: { id: string; status: string }[] };
    ids.heldMessage = messages.items.find((m) => m.status === 'held')?.id ?? '';
    expect(ids.heldMessage, 'a held message').to.not.equal('');
    ids.freshStudy = (await api.storeStudy()).studyInstanceUid;
    // Two held studies for QA's decisions (the identity-conflict path itself is tested in test/studies).
    for (const k of ['heldToRelease', 'heldToReject'] as const) {
      ids[k] = (await api.storeStudy()).studyInstanceUid;
      await holdStudy(api.gw.db, ids[k], 'identity-conflict', ['PatientID'], new Date().toISOString());
    }
  });
  after(() => api.stop());

  /** One call per operation with a role the spec allows; the answer must be 2xx and match the spec. */
  const examples: Record<string, () => Example> = {
    getHealth: () => ({ url: '/healthz', status: 200 }),
    getMetrics: () => ({ token: 'qa', url: '/metrics', status: 200 }),
    getOpenApi: () => ({ url: '/api/openapi.json', status: 200 }),
    listStudies: () => ({ token: 'system', url: `/api/studies?accessionNumber=${ids.accession}&state=stable&limit=10`, status: 200 }),
    getStudy: () => ({ token: 'qa', url: `/api/studies/${ids.study}`, status: 200 }),
    listMessages: () => ({ token: 'admin', url: '/api/messages?status=applied,held&includeRaw=true', status: 200 }),
    listCases: () => ({ token: 'admin', url: '/api/cases?limit=50', status: 200 }),
    requestCase: () => ({
      token: 'qa',
      url: '/api/cases',
      body: { studyInstanceUid: ids.freshStudy, reason: 'clinician asked', priority: 'stat' },
      status: 201,
    }),
    getCase: () => ({ token: 'reader', url: `/api/cases/${ids.caseRead}`, status: 200 }),
    // Arbitration (200 answers are checked against these schemas in test/reports/arbitration.int.test.ts): here a case without one.
    listArbitrations: () => ({ token: 'admin', url: '/api/arbitrations?limit=10', status: 200 }),
    getCaseArbitration: () => ({ token: 'admin', url: `/api/cases/${ids.caseRead}/arbitration`, status: 404 }),
    decideCaseArbitration: () => ({
      token: 'qa',
      url: `/api/cases/${ids.caseRead}/arbitration`,
      body: { verdict: 'agree-second', text: 'confirmed' },
      status: 404,
    }),
    getArbitrationReadings: () => ({ token: 'admin', url: `/api/cases/${ids.caseRead}/arbitration/readings`, status: 404 }),
    assignCaseArbitration: () => ({ token: 'qa', url: `/api/cases/${ids.caseRead}/arbitration/assign`, body: {}, status: 409 }),
    submitSecondReport: () => ({
      token: 'reader',
      url: `/api/cases/${ids.caseReport}/report`,
      body: { text: 'FINDINGS: as before.\nIMPRESSION: concur.', radpeerScore: '2b', impression: 'concur' },
      status: 201,
    }),
    declineCase: () => ({ token: 'reader', url: `/api/cases/${ids.caseDecline}/decline`, body: { reason: 'conflict of interest' }, status: 200 }),
    cancelCase: () => ({ token: 'qa', url: `/api/cases/${ids.caseCancel}/cancel`, status: 200 }),
    retryCase: () => ({ token: 'system', url: `/api/cases/${ids.caseDead}/retry`, status: 200 }),
    releaseExcludedInstance: () => ({
      token: 'qa',
      url: `/api/cases/${ids.caseExcluded}/excluded/${ids.excludedSop}/release`,
      body: { reason: 'looked at it: no text' },
      status: 200,
    }),
    getCaseTimeline: () => ({ token: 'qa', url: `/api/cases/${ids.caseWriteBackFailed}/timeline`, status: 200 }),
    getCasePrimaryReport: () => ({ token: 'admin', url: `/api/cases/${ids.caseRead}/primary-report`, status: 200 }),
    reassignCase: () => ({ token: 'qa', url: `/api/cases/${ids.caseReassign}/reassign`, body: { readerId: 'dr-b', reason: 'workload' }, status: 200 }),
    retryCaseWriteBack: () => ({ token: 'admin', url: `/api/cases/${ids.caseWriteBackFailed}/retry-write-back`, status: 200 }),
    releaseStudy: () => ({ token: 'qa', url: `/api/studies/${ids.heldToRelease}/release`, body: { reason: 'checked with the RIS' }, status: 200 }),
    rejectStudy: () => ({ token: 'admin', url: `/api/studies/${ids.heldToReject}/reject`, body: { reason: 'wrong patient' }, status: 200 }),
    dismissMessage: () => ({
      token: 'qa',
      url: `/api/messages/${ids.heldMessage}/dismiss`,
      body: { reason: 'wrong patient: sent back to the RIS' },
      status: 200,
    }),
    getMe: () => ({ token: 'reader', url: '/api/me', status: 200 }),
    getDashboard: () => ({ token: 'qa', url: '/api/dashboard', status: 200 }),
    getStats: () => ({ token: 'admin', url: '/api/stats?bucket=day', status: 200 }),
    listGatewayInstances: () => ({ token: 'admin', url: '/api/instances', status: 200 }),
    listDeliveries: () => ({ token: 'system', url: '/api/deliveries?destinationId=pool', status: 200 }),
    getRules: () => ({ token: 'system', url: '/api/rules', status: 200 }),
    putRules: () => ({
      token: 'qa',
      url: '/api/rules',
      body: {
        rules: [
          { id: 'onc', kind: 'oncology', priority: 'urgent' },
          { id: 'ct-sample', kind: 'sampling', priority: 'routine', rate: 0.05, period: 'month', when: { modality: ['CT'] } },
        ],
        comment: 'openapi test',
      },
      status: 201,
    }),
    listRuleVersions: () => ({ token: 'qa', url: '/api/rules/versions', status: 200 }),
    getRuleVersion: () => ({ token: 'admin', url: '/api/rules/versions/1', status: 200 }),
    dryRunRules: () => ({ token: 'qa', url: '/api/rules/dry-run', body: { from: '2020-01-01', maxItems: 10 }, status: 200 }),
    listSamplingBuckets: () => ({ token: 'admin', url: '/api/sampling', status: 200 }),
    previewKeywords: () => ({
      token: 'qa',
      url: '/api/rules/keyword-preview',
      body: { text: 'No evidence of metastatic disease.', keywords: ['metasta*'] },
      status: 200,
    }),
    listAudit: () => ({ token: 'qa', url: '/api/audit?limit=500', status: 200 }),
    // ---- DICOMweb (begin) ----
    dicomwebSearchStudies: () => ({
      token: 'admin',
      url: `/dicom-web/studies?AccessionNumber=${ids.accession}&includefield=Manufacturer&limit=5`,
      status: 200,
    }),
    dicomwebSearchStudySeries: () => ({ token: 'qa', url: `/dicom-web/studies/${ids.study}/series`, status: 200 }),
    dicomwebSearchStudyInstances: () => ({ token: 'system', url: `/dicom-web/studies/${ids.study}/instances`, status: 200 }),
    dicomwebSearchSeriesInstances: () => ({ token: 'admin', url: `/dicom-web/studies/${ids.study}/series/${ids.series}/instances`, status: 200 }),
    dicomwebSearchSeries: () => ({ token: 'reader', url: '/dicom-web/series?Modality=CT', status: 200 }),
    dicomwebSearchInstances: () => ({ token: 'admin', url: `/dicom-web/instances?SOPInstanceUID=${ids.sop}`, status: 200 }),
    dicomwebRetrieveStudy: () => ({ token: 'admin', url: `/dicom-web/studies/${ids.study}`, status: 200 }),
    dicomwebRetrieveSeries: () => ({ token: 'qa', url: `/dicom-web/studies/${ids.study}/series/${ids.series}`, status: 200 }),
    dicomwebRetrieveInstance: () => ({ token: 'system', url: `/dicom-web/studies/${ids.study}/series/${ids.series}/instances/${ids.sop}`, status: 200 }),
    dicomwebRetrieveStudyMetadata: () => ({ token: 'admin', url: `/dicom-web/studies/${ids.study}/metadata`, status: 200 }),
    dicomwebRetrieveSeriesMetadata: () => ({ token: 'qa', url: `/dicom-web/studies/${ids.study}/series/${ids.series}/metadata`, status: 200 }),
    dicomwebRetrieveInstanceMetadata: () => ({
      token: 'admin',
      url: `/dicom-web/studies/${ids.study}/series/${ids.series}/instances/${ids.sop}/metadata`,
      status: 200,
    }),
    // A JSON body is not a STOW-RS body (the multipart uploads are tested in test/dicomweb/stow.int.test.ts).
    dicomwebStoreInstances: () => ({ token: 'system', url: '/dicom-web/studies', body: {}, status: 415 }),
    dicomwebStoreStudyInstances: () => ({ token: 'admin', url: `/dicom-web/studies/${ids.study}`, body: {}, status: 415 }),
    // ---- DICOMweb (end) ----
  };

  it('describes exactly the routes the express app registers (every route has a spec, every spec a route)', () => {
    const registered = registeredRoutes(httpApp(api))
      .filter((r) => !notApi(r))
      .map((r) => `${r.method} ${shape(r.path)}`);
    expect(registered.length, 'the walk found routes').to.be.greaterThan(10);
    const described = operations().map((o) => `${o.method.toUpperCase()} ${shape(o.path)}`);
    const missingFromSpec = [...new Set(registered)].filter((r) => !described.includes(r)).sort();
    const notRegistered = described.filter((d) => !registered.includes(d)).sort();
    expect({ missingFromSpec, notRegistered }).to.deep.equal({ missingFromSpec: [], notRegistered: [] });
    // The document is the specs': one operation per spec, nothing added by hand.
    expect(
      operations()
        .map((o) => o.op.operationId)
        .sort(),
    ).to.deep.equal(API_ROUTES.map((r) => r.operationId).sort());
  });

  it('refuses bad input with a 400 listing each zod issue by path (body, query, path parameters)', async () => {
    const body = await api.call('POST', '/api/rules/keyword-preview', API_TOKENS.qa, { text: 1, keywords: ['ok', ''], extra: true });
    expect(body.status).to.equal(400);
    const errors = (body.body as { error: { code: string; details: { errors: { path: string; message: string }[] } } }).error;
    expect(errors.code).to.equal('invalid-input');
    expect(errors.details.errors.map((e) => e.path).sort()).to.deep.equal(['extra', 'keywords[1]', 'text']);
    expect(errors.details.errors.find((e) => e.path === 'extra')?.message).to.equal('unknown field');
    const query = await api.call('GET', '/api/cases?state=bogus&limit=5000', API_TOKENS.admin);
    expect(query.status).to.equal(400);
    expect((query.body as { error: { details: { errors: { path: string }[] } } }).error.details.errors.map((e) => e.path).sort()).to.deep.equal([
      'limit',
      'state',
    ]);
    expect(query.text).to.match(/state must be one of flagged, /);
    const path = await api.call('GET', '/api/rules/versions/abc', API_TOKENS.admin);
    expect(path.status).to.equal(400);
    expect((path.body as { error: { details: { errors: { path: string }[] } } }).error.details.errors.map((e) => e.path)).to.deep.equal(['version']);
  });

  it('gives every operation an id, roles, security and parameters for its path template', () => {
    const seen = new Set<string>();
    for (const { method, path, op } of operations()) {
      const where = `${method} ${path}`;
      expect(seen.has(op.operationId), `${where}: duplicate operationId`).to.equal(false);
      seen.add(op.operationId);
      expect(
        op['x-roles'].every((r) => ['admin', 'qa', 'reader', 'system'].includes(r)),
        where,
      ).to.equal(true);
      expect(op.security, where).to.deep.equal(op['x-roles'].length > 0 ? [{ bearer: [] }] : []);
      const templated = [...path.matchAll(/\{([^}]+)\}/g)].map((m) => m[1]);
      const declared = (op.parameters ?? []).filter((p) => p.in === 'path').map((p) => p.name);
      expect(declared, where).to.deep.equal(templated);
      if (op['x-roles'].length > 0) expect(op.responses, where).to.include.keys('401', '403');
      for (const [status, r] of Object.entries(op.responses)) {
        for (const media of Object.values(r.content ?? {})) assertResolvable(media.schema, `${where} ${status}`);
      }
    }
  });

  it('serves the document without a token', async () => {
    const r = await api.call('GET', '/api/openapi.json');
    expect(r.status).to.equal(200);
    expect(r.body).to.deep.equal(JSON.parse(JSON.stringify(openApiDocument)));
  });

  it('is a valid OpenAPI 3.1 document for an independent validator (python openapi-spec-validator)', function () {
    const probe = spawnSync('python3', ['-c', 'import openapi_spec_validator'], { encoding: 'utf8' });
    if (probe.status !== 0) {
      console.log('      skipped: python3 with openapi-spec-validator is not installed (pip install openapi-spec-validator)');
      this.skip();
    }
    const script = 'import json,sys\nfrom openapi_spec_validator import validate\nvalidate(json.load(sys.stdin))\nprint("ok")';
    const r = spawnSync('python3', ['-c', script], { input: JSON.stringify(openApiDocument), encoding: 'utf8' });
    expect(r.status, r.stderr.split('\n').slice(-6).join('\n')).to.equal(0);
    expect(r.stdout.trim()).to.equal('ok');
  });

  it('the schema checker rejects what does not match (so the next test can fail)', () => {
    const bad = { id: 1, state: 'bogus', extra: true };
    const errors = validateJson({ $ref: '#/components/schemas/Case' }, bad, defs);
    expect(errors.join('\n'))
      .to.match(/\$\.id: expected string/)
      .and.match(/bogus/)
      .and.match(/"extra" is not in the schema/)
      .and.match(/missing required "dueAt"/);
  });

  it('answers every operation, called with an allowed role, with a status and body the spec lists', async () => {
    const problems: string[] = [];
    const missingExamples = operations()
      .filter((o) => !examples[o.op.operationId])
      .map((o) => o.op.operationId);
    expect(missingExamples, 'operations without an example call in this test').to.deep.equal([]);
    for (const { method, path, op } of operations()) {
      const ex = examples[op.operationId]!();
      const where = `${method.toUpperCase()} ${path} (${op.operationId})`;
      if (ex.token) expect(op['x-roles'], `${where}: example role`).to.include(roleOf(ex.token));
      const r = await api.call(method.toUpperCase(), ex.url, ex.token ? API_TOKENS[ex.token] : undefined, ex.body);
      if (r.status !== ex.status) problems.push(`${where}: ${r.status}, expected ${ex.status}: ${r.text.slice(0, 300)}`);
      problems.push(...checkAgainstSpec(op, r, where));
    }
    expect(problems).to.deep.equal([]);
    // The reader's answers above were the pseudonymous view (the branch with the optional fields).
    const asReader = (await api.call('GET', `/api/cases/${ids.caseRead}`, API_TOKENS.reader)).body as {
      deidentified?: boolean;
      studyInstanceUid: string | null;
    };
    expect(asReader.deidentified).to.equal(true);
    expect(asReader.studyInstanceUid).to.not.equal(ids.study);
  });

  it('PUT /api/rules takes the YAML of a rules file, as the spec says', async () => {
    const op = openApiDocument.paths['/api/rules']!.put!;
    expect(op.requestBody?.content).to.have.keys('application/json', 'application/yaml');
    const yaml = ['rules:', '  - id: yaml-oncology', '    kind: oncology', '    priority: urgent', ''].join('\n');
    const res = await fetch(`${api.base}/api/rules`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${API_TOKENS.qa}`, 'content-type': 'application/yaml' },
      body: yaml,
    });
    const body = (await res.json()) as { rules?: { id: string }[] };
    expect(res.status, JSON.stringify(body)).to.be.oneOf([200, 201]);
    expect(body.rules?.map((r) => r.id)).to.deep.equal(['yaml-oncology']);
    expect(
      checkAgainstSpec(op, { status: res.status, contentType: res.headers.get('content-type') ?? '', body, text: '' }, 'PUT /api/rules (YAML)'),
    ).to.deep.equal([]);
  });

  it('answers errors (404, 400) with statuses the spec lists and the error body', async () => {
    const problems: string[] = [];
    for (const { method, path, op } of operations()) {
      const role = op['x-roles'][0];
      const token = role ? tokenOfRole(role) : undefined;
      const where = `${method.toUpperCase()} ${path}`;
      if (path.includes('{')) {
        const url = path.replace(/\{[^}]+\}/g, (m) => (m === '{version}' ? '999999' : 'no-such-id'));
        const r = await api.call(method.toUpperCase(), url, token, method === 'get' ? undefined : {});
        if (r.status < 400) problems.push(`${where} with an unknown id: ${r.status}`);
        problems.push(...checkAgainstSpec(op, r, `${where} unknown id`));
      }
      if ((op.parameters ?? []).some((p) => p.name === 'limit')) {
        const r = await api.call(method.toUpperCase(), `${path}?limit=0`, token);
        if (r.status !== 400) problems.push(`${where}?limit=0: ${r.status}`);
        problems.push(...checkAgainstSpec(op, r, `${where}?limit=0`));
      }
      // A query parameter the spec constrains (enum, integer) and the route reads: a bad value is refused by name.
      for (const param of (op.parameters ?? []).filter((x) => x.in === 'query' && (x.schema.enum || x.schema.type === 'integer'))) {
        if (lenientParams.includes(`${op.operationId}.${param.name}`)) continue;
        const r = await api.call(method.toUpperCase(), `${path}?${param.name}=not-a-valid-value`, token);
        if (r.status !== 400 || !r.text.includes(param.name)) problems.push(`${where}?${param.name}=not-a-valid-value: ${r.status} ${r.text.slice(0, 120)}`);
        problems.push(...checkAgainstSpec(op, r, `${where}?${param.name}=bad`));
      }
      if (op.requestBody && !path.includes('{')) {
        const r = await api.call(method.toUpperCase(), path, token, { notAField: 1 });
        if (r.status !== 400) problems.push(`${where} with an unknown field: ${r.status}`);
        problems.push(...checkAgainstSpec(op, r, `${where} unknown field`));
      }
    }
    expect(problems).to.deep.equal([]);
  });
});

/** Parameters whose route treats an unknown value as the default instead of refusing it (none: zod refuses them). */
const lenientParams: string[] = [];

function roleOf(t: Token): string {
  return t === 'readerB' ? 'reader' : t;
}

function tokenOfRole(role: string): string {
  return API_TOKENS[role as Token];
}

function httpApp(api: ApiGateway): { router: { stack: Layer[] } } {
  const app = api.gw.httpApp;
  if (!app) throw new Error('the gateway has no HTTP server');
  return app as unknown as { router: { stack: Layer[] } };
}

/**
 * The status is one the operation lists, and a JSON body matches that response's schema twice: as the
 * generated document says (an independent JSON Schema checker) and as the zod schema itself parses it.
 */
function checkAgainstSpec(op: Operation, r: { status: number; contentType: string; body: unknown; text: string }, where: string): string[] {
  const spec = op.responses[String(r.status)];
  if (!spec) return [`${where}: status ${r.status} is not in the spec (${Object.keys(op.responses).join(', ')}): ${r.text.slice(0, 200)}`];
  const mediaTypes = Object.keys(spec.content ?? {});
  if (mediaTypes.length === 0) return [];
  const media = mediaTypes.find((m) => r.contentType.startsWith(m));
  if (!media) return [`${where}: content-type ${r.contentType} is not one of ${mediaTypes.join(', ')}`];
  if (media !== 'application/json') return [];
  const problems = validateJson(spec.content![media]!.schema, r.body, defs).map((e) => `${where} ${r.status}: ${e}`);
  const entry = specOf(op.operationId).responses[r.status];
  const schema = entry instanceof z.ZodType ? entry : entry?.schema;
  if (schema) {
    const parsed = schema.safeParse(r.body);
    if (!parsed.success) problems.push(...parsed.error.issues.map((i) => `${where} ${r.status} (zod): ${i.path.join('.')}: ${i.message}`));
  }
  return problems;
}

function assertResolvable(s: JsonSchema, where: string): void {
  if (s.$ref) expect(defs[s.$ref.replace('#/components/schemas/', '')], `${where}: ${s.$ref}`).to.not.equal(undefined);
  for (const x of [...Object.values(s.properties ?? {}), ...(s.anyOf ?? []), ...(s.items ? [s.items] : [])]) assertResolvable(x, where);
}
