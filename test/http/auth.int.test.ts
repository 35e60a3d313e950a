import { createHash } from 'node:crypto';
import http from 'node:http';
import path from 'node:path';
import { expect } from 'chai';
import winston from 'winston';
import { buildConfig } from '../../src/config/load.js';
import { createGateway, type Gateway } from '../../src/gateway.js';
import { HttpServer } from '../../src/http/server.js';
import { makeTempDir } from '../helpers/tmp.js';

const ADMIN = 'admin-secret-token-0123456789';
const READER = 'reader-secret-token-0123456789';
const silent = winston.createLogger({ silent: true });

/** fetch cannot choose the local address; other 127/8 addresses play other clients. */
function request(
  port: number,
  p: string,
  o: { token?: string; from?: string } = {},
): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: '127.0.0.1', port, path: p, localAddress: o.from ?? '127.0.0.1', headers: o.token ? { authorization: `Bearer ${o.token}` } : {} },
      (res) => {
        let body = '';
        res.on('data', (d: Buffer) => (body += d.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
      },
    );
    req.on('error', reject);
    req.end();
  });
}

describe('API authentication: hashed tokens, failed logins audited and rate-limited', function () {
  this.timeout(30_000);
  let tmp: ReturnType<typeof makeTempDir>;
  let gw: Gateway;
  let port: number;

  before(async () => {
    tmp = makeTempDir();
    const config = buildConfig({
      dicom: { enabled: false },
      hl7: { enabled: false },
      http: { port: 0 },
      storage: { dir: path.join(tmp.dir, 'data'), minFreeMb: 0 },
      database: { url: `sqlite:${path.join(tmp.dir, 'gw.db')}` },
      auth: {
        maxFailedPerMinute: 3,
        tokens: [
          // Only the hash is in the config.
          { tokenSha256: createHash('sha256').update(ADMIN).digest('hex').toUpperCase(), role: 'admin', name: 'alice' },
          { token: READER, role: 'reader', readerId: 'dr-a' },
        ],
      },
    });
    gw = createGateway(config, { logger: silent });
    await gw.start();
    port = gw.ports().http;
  });
  after(async () => {
    await gw.stop();
    tmp.cleanup();
  });

  const auditOf = (actor: string) => gw.db.selectFrom('audit_events').selectAll().where('actor', '=', actor).orderBy('id').execute();

  it('accepts a token configured only by its SHA-256, and the hash itself is no token', async () => {
    expect((await request(port, '/api/audit', { token: ADMIN, from: '127.0.0.5' })).status).to.equal(200);
    expect((await request(port, '/metrics', { token: ADMIN, from: '127.0.0.5' })).status).to.equal(200);
    const hash = createHash('sha256').update(ADMIN).digest('hex');
    expect((await request(port, '/api/audit', { token: hash, from: '127.0.0.5' })).status).to.equal(401);
    expect((await request(port, '/api/audit', { token: READER, from: '127.0.0.5' })).status).to.equal(403);
  });

  it('audits every 401 with the address as actor and no token text, then answers 429 with Retry-After without checking the token', async () => {
    const guess = 'guessed-token-zzzzzzzzzzzzzzzz';
    const first = await request(port, '/api/cases/some-case', { token: guess, from: '127.0.0.2' });
    expect(first.status).to.equal(401);
    expect((await request(port, '/api/cases', { from: '127.0.0.2' })).status).to.equal(401);
    expect((await request(port, '/metrics', { token: guess, from: '127.0.0.2' })).status).to.equal(401);

    for (const token of [guess, ADMIN, undefined]) {
      const r = await request(port, '/api/audit', { token, from: '127.0.0.2' });
      expect(r.status).to.equal(429);
      const retryAfter = Number(r.headers['retry-after']);
      expect(retryAfter).to.be.within(1, 60);
      expect((JSON.parse(r.body) as { error: { code: string } }).error.code).to.equal('rate-limited');
    }

    const rows = await auditOf('127.0.0.2');
    expect(rows.map((r) => r.action)).to.deep.equal(['auth.failed', 'auth.failed', 'auth.failed', 'auth.rate-limited']);
    const details = rows.map((r) => JSON.parse(r.details!) as Record<string, unknown>);
    expect(details.slice(0, 3).map((d) => d['reason'])).to.deep.equal(['invalid token', 'missing bearer token', 'invalid token']);
    expect(details[0]).to.include({ route: '/api/cases', method: 'GET' });
    const serialized = JSON.stringify(rows);
    expect(serialized).to.not.include(guess).and.not.include(ADMIN).and.not.include('some-case');

    // Another address is not affected; the audit list shows the failures to an admin.
    const audit = await request(port, '/api/audit?action=auth.failed', { token: ADMIN, from: '127.0.0.3' });
    expect(audit.status).to.equal(200);
    expect((JSON.parse(audit.body) as { items: { actor: string }[] }).items.filter((i) => i.actor === '127.0.0.2')).to.have.length(3);
  });

  it("a successful login does not reset an address's failures", async () => {
    const from = '127.0.0.4';
    expect((await request(port, '/api/audit', { token: 'wrong-0000000000000000', from })).status).to.equal(401);
    expect((await request(port, '/api/audit', { token: 'wrong-0000000000000000', from })).status).to.equal(401);
    expect((await request(port, '/api/audit', { token: ADMIN, from })).status).to.equal(200);
    expect((await request(port, '/api/audit', { token: 'wrong-0000000000000000', from })).status).to.equal(401);
    expect((await request(port, '/api/audit', { token: ADMIN, from })).status).to.equal(429);
  });

  it('lets an address try again once its minute is over', async () => {
    let now = 5_000_000;
    const server = new HttpServer({
      config: { ...gw.config.http, port: 0 },
      tokens: gw.config.auth.tokens,
      auth: { maxFailedPerMinute: 1, now: () => now },
      logger: silent,
      health: () => ({ ok: true, details: {} }),
      apiRouters: [],
    });
    await server.start();
    try {
      expect((await request(server.port, '/api/x', { token: 'nope-0000000000000000' })).status).to.equal(401);
      const limited = await request(server.port, '/api/x', { token: ADMIN });
      expect(limited.status).to.equal(429);
      expect(limited.headers['retry-after']).to.equal('60');
      now += 59_000;
      expect((await request(server.port, '/api/x', { token: ADMIN })).headers['retry-after']).to.equal('1');
      now += 1_000;
      // Authenticated again: the unknown route answers 404, not 429.
      expect((await request(server.port, '/api/x', { token: ADMIN })).status).to.equal(404);
    } finally {
      await server.stop();
    }
  });
  it('audits a successful login once per token and address per interval, not every call', async () => {
    const before = (await auditOf('alice')).filter((r) => r.action === 'auth.login').length;
    for (let i = 0; i < 3; i++) expect((await request(port, '/api/audit', { token: ADMIN, from: '127.0.0.6' })).status).to.equal(200);
    expect((await request(port, '/api/me', { token: ADMIN, from: '127.0.0.7' })).status).to.equal(200);
    const logins = (await auditOf('alice')).filter((r) => r.action === 'auth.login').slice(before);
    expect(logins.map((r) => (JSON.parse(r.details!) as { remoteAddress: string }).remoteAddress)).to.deep.equal(['127.0.0.6', '127.0.0.7']);
    expect(JSON.stringify(logins)).to.not.include(ADMIN);

    // Past the interval the same token and address are audited again.
    let now = 9_000_000;
    const seen: string[] = [];
    const server = new HttpServer({
      config: { ...gw.config.http, port: 0 },
      tokens: gw.config.auth.tokens,
      auth: { now: () => now, loginAuditIntervalMs: 60_000, onSuccess: (s) => void seen.push(`${s.principal.name}@${s.remoteAddress}`) },
      logger: silent,
      health: () => ({ ok: true, details: {} }),
      apiRouters: [],
    });
    await server.start();
    try {
      await request(server.port, '/api/x', { token: ADMIN });
      now += 59_000;
      await request(server.port, '/api/x', { token: ADMIN });
      await request(server.port, '/api/x', { token: READER });
      now += 1_000;
      await request(server.port, '/api/x', { token: ADMIN });
      expect(seen).to.deep.equal(['alice@127.0.0.1', 'reader-token-2@127.0.0.1', 'alice@127.0.0.1']);
    } finally {
      await server.stop();
    }
  });
});
