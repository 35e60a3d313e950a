import { expect } from 'chai';
import { API_TOKENS, ApiGateway, type ApiResponse } from '../helpers/api-gateway.js';
import { HTTP_METHODS, openApiDocument, validateJson, type HttpMethod, type Operation } from '../helpers/json-schema.js';

type Caller = 'no token' | 'bad token' | 'admin' | 'qa' | 'reader' | 'system';
const CALLERS: Caller[] = ['no token', 'bad token', 'admin', 'qa', 'reader', 'system'];
const tokenOf: Record<Caller, string | undefined> = {
  'no token': undefined,
  'bad token': 'not-a-token-0123456789abcdef-nope',
  admin: API_TOKENS.admin,
  qa: API_TOKENS.qa,
  reader: API_TOKENS.reader,
  system: API_TOKENS.system,
};

function operations(): { method: HttpMethod; path: string; op: Operation }[] {
  return Object.entries(openApiDocument.paths).flatMap(([path, item]) =>
    HTTP_METHODS.flatMap((method) => (item[method] ? [{ method, path, op: item[method]! }] : [])),
  );
}

/**
 * Every operation of the OpenAPI description x every kind of caller: 401
 * without a valid token, 403 for a role not in `x-roles`, anything else for a
 * role in it. The requests are harmless: reads use real ids (the reader's own
 * case), writes use an unknown id or an empty body, so an allowed role is
 * answered 400/404/409 by the route itself, after the role check.
 */
describe('route x role matrix (from the OpenAPI x-roles)', function () {
  this.timeout(120_000);
  const api = new ApiGateway();
  let ownCase = '';
  let otherCase = '';
  let study = '';
  let message = '';

  before(async () => {
    await api.start();
    const a = await api.flaggedStudy();
    const b = await api.flaggedStudy();
    study = a.study.studyInstanceUid;
    ownCase = a.caseId;
    otherCase = b.caseId;
    await api.assign(ownCase, 'dr-a');
    await api.assign(otherCase, 'dr-b');
    // Unblinded, so the reader may read its primary report (the blinded refusal is asserted on its own below).
    await api.gw.db.updateTable('cases').set({ blinded: 0 }).where('id', '=', ownCase).execute();
    const m = (await api.call('GET', '/api/messages?status=applied', API_TOKENS.admin)).body as { items: { id: string }[] };
    message = m.items[0]!.id;
  });
  after(() => api.stop());

  function probe(method: HttpMethod, path: string): { url: string; body?: unknown } {
    const write = method !== 'get';
    const url = path.replace(/\{([^}]+)\}/g, (_m, name: string) => {
      if (write) return name === 'version' ? '999999' : 'no-such-id';
      if (name === 'studyInstanceUid') return study;
      if (name === 'version') return '1';
      if (path.startsWith('/api/messages')) return message;
      return ownCase;
    });
    return { url, body: write ? {} : undefined };
  }

  it('answers 401 without a valid token, 403 outside x-roles, and lets every x-roles role through', async () => {
    const problems: string[] = [];
    let calls = 0;
    for (const { method, path, op } of operations()) {
      const { url, body } = probe(method, path);
      for (const caller of CALLERS) {
        const r = await api.call(method.toUpperCase(), url, tokenOf[caller], body);
        calls++;
        const where = `${method.toUpperCase()} ${url} as ${caller}: ${r.status}`;
        const roles = op['x-roles'];
        const isPublic = roles.length === 0;
        const allowed = isPublic || roles.includes(caller as (typeof roles)[number]);
        if (isPublic || allowed) {
          if (r.status === 401 || r.status === 403) problems.push(`${where}, expected to pass the role check: ${r.text.slice(0, 200)}`);
        } else if (caller === 'no token' || caller === 'bad token') {
          if (r.status !== 401) problems.push(`${where}, expected 401`);
          else problems.push(...errorBody(op, r, where, 'unauthorized'));
        } else if (r.status !== 403) problems.push(`${where}, expected 403`);
        else problems.push(...errorBody(op, r, where, 'forbidden'));
      }
    }
    expect(calls).to.equal(operations().length * CALLERS.length);
    expect(problems).to.deep.equal([]);
  });

  it("refuses a reader another reader's case, by design (403), and the primary report of a blinded case", async () => {
    const r = API_TOKENS.reader;
    expect((await api.call('GET', `/api/cases/${otherCase}`, r)).status).to.equal(403);
    expect((await api.call('GET', `/api/cases/${otherCase}/primary-report`, r)).status).to.equal(403);
    expect((await api.call('POST', `/api/cases/${otherCase}/report`, r, { text: 'x', radpeerScore: '1' })).status).to.equal(403);
    expect((await api.call('POST', `/api/cases/${otherCase}/decline`, r, {})).status).to.equal(403);
    const list = (await api.call('GET', '/api/cases', r)).body as { items: { id: string }[] };
    expect(list.items.map((c) => c.id))
      .to.include(ownCase)
      .and.not.include(otherCase);
    // The same case for its own reader, blinded until they have reported.
    expect((await api.call('GET', `/api/cases/${otherCase}`, API_TOKENS.readerB)).status).to.equal(200);
    const blinded = await api.call('GET', `/api/cases/${otherCase}/primary-report`, API_TOKENS.readerB);
    expect(blinded.status).to.equal(403);
    expect(blinded.text).to.match(/blinded/);
    expect((await api.call('GET', `/api/cases/${ownCase}/primary-report`, r)).status).to.equal(200);
  });

  it('GET /metrics: admin, qa and system; 401 without a token, 403 for a reader; /healthz is public', async () => {
    for (const t of [API_TOKENS.admin, API_TOKENS.qa, API_TOKENS.system]) expect((await api.call('GET', '/metrics', t)).status).to.equal(200);
    expect((await api.call('GET', '/metrics')).status).to.equal(401);
    expect((await api.call('GET', '/metrics', tokenOf['bad token'])).status).to.equal(401);
    expect((await api.call('GET', '/metrics', API_TOKENS.reader)).status).to.equal(403);
    expect((await api.call('GET', '/healthz')).status).to.equal(200);
    expect((await api.call('GET', '/api/openapi.json')).status).to.equal(200);
  });
});

function errorBody(op: Operation, r: ApiResponse, where: string, code: string): string[] {
  const schema = op.responses[String(r.status)]?.content?.['application/json']?.schema;
  if (!schema) return [`${where}: the spec lists no JSON body for ${r.status}`];
  const errors = validateJson(schema, r.body, openApiDocument.components.schemas).map((e) => `${where}: ${e}`);
  if ((r.body as { error?: { code?: string } } | undefined)?.error?.code !== code) errors.push(`${where}: error.code is not ${code}`);
  return errors;
}
