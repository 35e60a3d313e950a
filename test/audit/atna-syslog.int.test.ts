import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { expect } from 'chai';
import { API_TOKENS, ApiGateway } from '../helpers/api-gateway.js';
import { eventually } from '../helpers/eventually.js';
import { hasRsyslog, parseRfc5424, startRsyslog, type Rsyslog, type Rfc5424 } from '../helpers/rsyslog.js';
import { haveOpenssl, makeTestPki, type TestPki } from '../helpers/tls-certs.js';
import { makeTempDir, testDatabaseUrl } from '../helpers/tmp.js';
import { openDatabase } from '../../src/db/database.js';
import { ATNA_MSGID, ATNA_PRI } from '../../src/audit/syslog-client.js';

const SCHEMA = path.join(import.meta.dirname, 'dicom-audit-message.rng');
const hasXmllint = (): boolean => spawnSync('xmllint', ['--version'], { stdio: 'ignore' }).status === 0;

/** xmllint against the A.5.1 structure (test/audit/dicom-audit-message.rng): the problems, or '' when valid. */
function schemaProblems(xml: string, dir: string): string {
  const f = path.join(dir, `msg-${Math.random().toString(36).slice(2)}.xml`);
  writeFileSync(f, xml);
  const r = spawnSync('xmllint', ['--noout', '--relaxng', SCHEMA, f], { encoding: 'utf8' });
  return r.status === 0 ? '' : `${r.stderr}`;
}

interface Received {
  syslog: Rfc5424;
  xml: string;
  eventId: string;
  types: string[];
  action: string;
  outcome: string;
  at: string;
}

/** Reads the few fields the assertions need out of a message xmllint has already validated. */
function received(line: string): Received {
  const syslog = parseRfc5424(line);
  expect(syslog, `not RFC 5424: ${line.slice(0, 120)}`).to.not.equal(undefined);
  const xml = syslog!.msg;
  const attr = (el: string, a: string): string => new RegExp(`<${el}\\b[^>]*\\b${a}="([^"]*)"`).exec(xml)?.[1] ?? '';
  return {
    syslog: syslog!,
    xml,
    eventId: attr('EventID', 'csd-code'),
    types: [...xml.matchAll(/<EventTypeCode\b[^>]*csd-code="([^"]*)"/g)].map((m) => m[1]!),
    action: attr('EventIdentification', 'EventActionCode'),
    outcome: attr('EventIdentification', 'EventOutcomeIndicator'),
    at: attr('EventIdentification', 'EventDateTime'),
  };
}

describe('IHE ATNA: the audit trail to an rsyslog audit repository (RFC 5424, DICOM PS3.15 A.5)', function () {
  this.timeout(120_000);
  let pki: TestPki;
  let tmp: ReturnType<typeof makeTempDir>;
  let repo: Rsyslog;

  before(async function () {
    if (!hasRsyslog() || !haveOpenssl()) {
      console.log('      skipped: rsyslog (with rsyslog-gnutls) or openssl not installed');
      this.skip();
    }
    pki = makeTestPki();
    tmp = makeTempDir('gw-atna-');
    repo = await startRsyslog(tmp.dir, { ca: pki.ca, cert: pki.server.cert, key: pki.server.key });
  });
  after(async () => {
    await repo?.stop();
    tmp?.cleanup();
    pki?.cleanup();
  });

  const fixture = (protocol: 'tls' | 'udp') => {
    const fx: ApiGateway = new ApiGateway({
      configure: (c) => ({
        ...c,
        database: { url: testDatabaseUrl(path.join(fx.tmp.dir, 'gw.db')) },
        audit: {
          syslog: {
            host: '127.0.0.1',
            port: protocol === 'tls' ? repo.ports.tls : repo.ports.udp,
            protocol,
            ca: pki.ca,
            pollIntervalSeconds: 0.1,
            timeoutSeconds: 2,
          },
          sourceId: 'secondread-test',
          enterpriseSiteId: 'HOSP',
        },
      }),
    });
    return fx;
  };

  it('over TLS: every stored audit event arrives, in order, as RFC 5424 with a valid audit message; each event type maps to its EventID', async function () {
    const before = repo.messages().length;
    const fx = fixture('tls');
    try {
      await fx.start();
      const dbUrl = testDatabaseUrl(path.join(fx.tmp.dir, 'gw.db'));
      // User authentication, failed.
      expect((await fx.call('GET', '/api/cases', 'not-a-valid-token-0123456789')).status).to.equal(401);
      // Instances received (one event for the study's association), order record, begin transferring, instances transferred.
      const { caseId, study } = await fx.flaggedStudy();
      // Queries: the API's study search with a filter, and QIDO-RS.
      expect((await fx.call('GET', `/api/studies?patientId=${study.patientId}`, API_TOKENS.admin)).status).to.equal(200);
      expect((await fx.call('GET', `/dicom-web/studies?AccessionNumber=${study.accessionNumber}`, API_TOKENS.admin)).status).to.equal(200);
      // Patient record read (a PHI view), procedure record (the second report), then its write-back.
      expect((await fx.call('GET', `/api/cases/${caseId}/timeline`, API_TOKENS.admin)).status).to.equal(200);
      const c = (await fx.call('GET', `/api/cases/${caseId}`, API_TOKENS.admin)).body as { readerId: string };
      const token = c.readerId === 'dr-a' ? API_TOKENS.reader : API_TOKENS.readerB;
      expect((await fx.call('POST', `/api/cases/${caseId}/report`, token, { text: 'Agree.', radpeerScore: '1' })).status).to.equal(201);
      await eventually(
        async () => ((await fx.call('GET', `/api/cases/${caseId}`, API_TOKENS.admin)).body as { state: string }).state === 'written-back',
        'written back',
        20_000,
      );
      await eventually(async () => (await fx.gw.atna.backlog()) === 0, 'the queue to drain while the gateway runs', 20_000);
      await fx.gw.stop();
      // The stop itself went out on the way down.
      const opened = openDatabase(dbUrl);
      const rows = await opened.db.selectFrom('audit_events').select(['id', 'at', 'action']).orderBy('id').execute();
      const queued = await opened.db.selectFrom('audit_outbox').selectAll().execute();
      await opened.close();
      expect(queued, 'nothing left queued').to.deep.equal([]);
      await checkTlsRun(before, rows);
    } finally {
      await fx.stop();
    }
  });

  async function checkTlsRun(before: number, rows: { at: string; action: string }[]): Promise<void> {
    const got = await eventually(() => {
      const m = repo.messages().slice(before);
      return m.length >= rows.length ? m : undefined;
    }, 'every audit event at the repository');
    expect(got).to.have.length(rows.length);
    const msgs = got.map(received);
    // In the order recorded: the repository's copy reads like the table.
    expect(msgs.map((m) => m.at)).to.deep.equal(rows.map((r) => r.at));
    for (const m of msgs) {
      expect(m.syslog.version).to.equal(1);
      expect(m.syslog.pri).to.equal(ATNA_PRI);
      expect(m.syslog.msgId).to.equal(ATNA_MSGID);
      expect(m.syslog.appName).to.equal('secondread');
      expect(m.syslog.bom, 'UTF-8 BOM before the XML').to.equal(true);
      expect(m.xml.startsWith('<?xml')).to.equal(true);
      if (hasXmllint()) expect(schemaProblems(m.xml, tmp.dir), m.xml).to.equal('');
      expect(m.xml).to.include('AuditSourceID="secondread-test"').and.include('AuditEnterpriseSiteID="HOSP"');
    }
    const byAction = new Map(rows.map((r, i) => [r.action, msgs[i]!] as const));
    const expectEvent = (action: string, eventId: string, code: string, outcome = '0', types: string[] = []) => {
      const m = byAction.get(action);
      expect(m, `${action} was audited and sent`).to.not.equal(undefined);
      expect({ eventId: m!.eventId, action: m!.action, outcome: m!.outcome, types: m!.types }, action).to.deep.equal({ eventId, action: code, outcome, types });
      return m!;
    };
    expectEvent('gateway.started', '110100', 'E', '0', ['110120']);
    expectEvent('gateway.stopped', '110100', 'E', '0', ['110121']);
    const failed = expectEvent('auth.failed', '110114', 'E', '4', ['110122']);
    expect(failed.xml).to.match(
      /<ActiveParticipant UserID="unknown" UserIsRequestor="true" NetworkAccessPointID="127\.0\.0\.1" NetworkAccessPointTypeCode="2"/,
    );
    const created = expectEvent('case.created', '110109', 'C');
    // The identifiers an auditor needs: patient (id^^^issuer) and study, with its accession.
    expect(created.xml).to.match(/ParticipantObjectID="MRN-API-1[^"]*" ParticipantObjectTypeCode="1" ParticipantObjectTypeCodeRole="1"/);
    expect(created.xml).to.match(
      /ParticipantObjectTypeCode="2" ParticipantObjectTypeCodeRole="3"><ParticipantObjectIDTypeCode csd-code="110180"[^>]*\/><Accession Number="ACC-API-1"\/>/,
    );
    const begin = expectEvent('case.forwarding', '110102', 'E');
    expect(begin.xml).to.include('<ActiveParticipant UserID="pool" UserIsRequestor="false"><RoleIDCode csd-code="110152"');
    const sent = expectEvent('case.awaiting-read', '110104', 'R');
    expect(sent.xml).to.include('csd-code="110153"').and.include('<Anonymized>false</Anonymized>');
    expectEvent('case.viewed', '110110', 'R');
    const reported = expectEvent('case.reported', '110111', 'U');
    // A person did it: the reader's token name is the requestor.
    expect(reported.xml).to.match(/<ActiveParticipant UserID="(ada|ben)" UserIsRequestor="true"/);
    expectEvent('case.written-back', '110111', 'R');
    // One event for the two instances of the association, not one per instance.
    expect(rows.filter((r) => r.action === 'study.received')).to.have.length(1);
    const receivedStudy = expectEvent('study.received', '110104', 'C');
    expect(receivedStudy.xml).to.match(
      /<ActiveParticipant UserID="dicom:PACS1" UserIsRequestor="true" NetworkAccessPointID="127\.0\.0\.1" NetworkAccessPointTypeCode="2"><RoleIDCode csd-code="110153"/,
    );
    expect(receivedStudy.xml).to.include('<ParticipantObjectDescription>instances stored: 2, duplicates: 0</ParticipantObjectDescription>');
    expect(receivedStudy.xml).to.match(/ParticipantObjectID="MRN-API-1[^"]*" ParticipantObjectTypeCode="1"/);
    // Both searches, each with its keys as the query.
    const queries = msgs.filter((m) => m.eventId === '110112');
    expect(queries).to.have.length(2);
    const asked = queries.map(
      (m) =>
        JSON.parse(Buffer.from(/<ParticipantObjectQuery>([^<]+)</.exec(m.xml)![1]!, 'base64').toString('utf8')) as {
          via: string;
          keys: Record<string, unknown>;
        },
    );
    expect(asked.map((q) => q.via).sort()).to.deep.equal(['api', 'qido-rs']);
    expect(asked.find((q) => q.via === 'api')!.keys).to.deep.equal({ patientId: 'MRN-API-1' });
    expect(asked.find((q) => q.via === 'qido-rs')!.keys).to.deep.include({ accessionNumber: 'ACC-API-1' });
    for (const q of queries) expect(q.xml).to.match(/<ActiveParticipant UserID="alice" UserIsRequestor="true" NetworkAccessPointID="127\.0\.0\.1"/);
    // Logins: each token that called the API, once (not once per call), as the user at its address.
    const logins = msgs.filter((m) => m.eventId === '110114' && m.outcome === '0');
    const users = logins.map((m) => /<ActiveParticipant UserID="([^"]+)" UserIsRequestor="true" NetworkAccessPointID="127\.0\.0\.1"/.exec(m.xml)?.[1]);
    expect(users.length, 'one login per token').to.equal(new Set(users).size);
    expect(users.some((u) => u === 'alice')).to.equal(true);
    expect(rows.filter((r) => r.action === 'auth.login').length).to.equal(logins.length);
    for (const m of logins) expect(m.types).to.deep.equal(['110122']);
  }

  it('over TLS: the repository down, then up: nothing is lost, and the order holds', async function () {
    const before = repo.messages().length;
    const fx = fixture('tls');
    try {
      await fx.start();
      await eventually(async () => (await fx.gw.atna.backlog()) === 0, 'the start to go out');
      await repo.stop();
      for (let i = 0; i < 5; i++) expect((await fx.call('GET', '/api/cases', `wrong-token-${i}-0123456789abcdef`)).status).to.equal(401);
      // Kept and counted while the repository is away.
      await eventually(async () => {
        const q = await fx.gw.db.selectFrom('audit_outbox').select(['attempts', 'last_error']).orderBy('audit_id').execute();
        return q.length === 5 && q[0]!.attempts > 0 && q[0]!.last_error ? q : undefined;
      }, 'the failed attempts to be recorded');
      await repo.restart();
      await eventually(async () => (await fx.gw.atna.backlog()) === 0, 'the queue to drain once the repository is back', 60_000);
      const rows = await fx.gw.db.selectFrom('audit_events').select(['at', 'action']).orderBy('id').execute();
      const got = await eventually(() => {
        const m = repo.messages().slice(before);
        return m.length >= rows.length ? m : undefined;
      }, 'every event at the repository');
      const msgs = got.map(received);
      expect(msgs.map((m) => m.at)).to.deep.equal(rows.map((r) => r.at));
      expect(msgs.filter((m) => m.eventId === '110114' && m.outcome === '4')).to.have.length(5);
    } finally {
      await fx.stop();
    }
  });

  it('over UDP: the events arrive as RFC 5424 datagrams with valid audit messages', async function () {
    const before = repo.messages().length;
    const fx = fixture('udp');
    try {
      await fx.start();
      expect((await fx.call('GET', '/api/cases', 'not-a-valid-token-0123456789')).status).to.equal(401);
      await eventually(async () => (await fx.gw.atna.backlog()) === 0, 'the queue to drain');
      const rows = await fx.gw.db.selectFrom('audit_events').select(['at', 'action']).orderBy('id').execute();
      const got = await eventually(() => {
        const m = repo.messages().slice(before);
        return m.length >= rows.length ? m : undefined;
      }, 'the datagrams at the repository');
      const msgs = got.map(received);
      expect(msgs.map((m) => m.at)).to.deep.equal(rows.map((r) => r.at));
      expect(msgs.map((m) => m.eventId)).to.include.members(['110100', '110114']);
      for (const m of msgs) if (hasXmllint()) expect(schemaProblems(m.xml, tmp.dir), m.xml).to.equal('');
    } finally {
      await fx.stop();
    }
  });
});
