import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { expect } from 'chai';
import { auditMessageFor, buildAuditXml, mapAction, xmlEscape, type AtnaContext, type AtnaEventRow } from '../../src/audit/atna-message.js';
import { makeTempDir } from '../helpers/tmp.js';

const SCHEMA = path.join(import.meta.dirname, 'dicom-audit-message.rng');
const node = { sourceId: 'gw-1', aeTitle: 'SECONDREAD', hostname: 'gw.example', processId: '4242' };
const row = (action: string, o: Partial<AtnaEventRow> = {}): AtnaEventRow => ({
  id: '01',
  at: '2026-12-02T10:00:00.000Z',
  actor: 'system',
  action,
  entity_type: 'case',
  entity_id: 'c1',
  details: null,
  ...o,
});
const ctx: AtnaContext = {
  patient: { id: 'MRN<1>', issuer: 'HOSP' },
  studyInstanceUid: '1.2.3.4',
  accessionNumber: 'ACC&1',
  delivery: { destinationId: 'pool', deidentified: true },
};

describe('ATNA audit messages (DICOM PS3.15 A.5)', () => {
  it('maps each kind of gateway event to its EventID, action and type (CID 400/401)', () => {
    const cases: [string, string, string, string, string[], number?][] = [
      ['gateway.started', 'gateway', '110100', 'E', ['110120']],
      ['gateway.stopped', 'gateway', '110100', 'E', ['110121']],
      ['auth.failed', 'auth', '110114', 'E', ['110122'], 4],
      ['auth.rate-limited', 'auth', '110113', 'E', ['110126'], 4],
      ['rules.update', 'rule-set', '110113', 'E', ['110131']],
      ['case.created', 'case', '110109', 'C', []],
      ['case.cancelled', 'case', '110109', 'D', []],
      ['case.forwarding', 'case', '110102', 'E', []],
      ['case.reported', 'case', '110111', 'U', []],
      ['case.viewed', 'case', '110110', 'R', []],
      ['study.held', 'study', '110110', 'U', []],
      ['study.query', 'study', '110112', 'E', []],
      ['study.received', 'study', '110104', 'C', []],
      ['auth.login', 'auth', '110114', 'E', ['110122']],
    ];
    for (const [action, entity, id, code, types, outcome] of cases) {
      const m = mapAction(action, entity, undefined);
      expect({ id: m.eventId.code, code: m.action, types: (m.types ?? []).map((t) => t.code), outcome: m.outcome ?? 0 }, action).to.deep.equal({
        id,
        code,
        types,
        outcome: outcome ?? 0,
      });
    }
  });

  it('a completed delivery is an Export when it went de-identified, a transfer otherwise', () => {
    expect(mapAction('case.awaiting-read', 'case', true).eventId.code).to.equal('110106');
    expect(mapAction('case.awaiting-read', 'case', false).eventId.code).to.equal('110104');
  });

  it('names the source and the destination, the patient as id^^^issuer and the study with its accession; escapes what it carries', () => {
    const xml = buildAuditXml(auditMessageFor(row('case.awaiting-read', { actor: 'forwarding' }), ctx, node));
    expect(xml).to.include('<EventID csd-code="110106" codeSystemName="DCM" originalText="Export"/>');
    expect(xml).to.include(
      '<ActiveParticipant UserID="SECONDREAD" AlternativeUserID="4242" UserName="gw-1" UserIsRequestor="true" NetworkAccessPointID="gw.example" NetworkAccessPointTypeCode="1"><RoleIDCode csd-code="110153"',
    );
    expect(xml).to.include('<ActiveParticipant UserID="pool" UserIsRequestor="false"><RoleIDCode csd-code="110152"');
    expect(xml).to.include('ParticipantObjectID="MRN&lt;1&gt;^^^HOSP" ParticipantObjectTypeCode="1" ParticipantObjectTypeCodeRole="1"');
    expect(xml).to.include('<Accession Number="ACC&amp;1"/><Anonymized>true</Anonymized>');
  });

  it('a person is the requestor and the gateway is not', () => {
    const xml = buildAuditXml(auditMessageFor(row('case.viewed', { actor: 'alice' }), ctx, node));
    expect(xml).to.match(/<ActiveParticipant UserID="alice" UserIsRequestor="true"\/?>/);
    expect(xml).to.include('<ActiveParticipant UserID="SECONDREAD" AlternativeUserID="4242" UserName="gw-1" UserIsRequestor="false"');
  });

  it('instances received: the sending AE is the requestor and Source at its address, the gateway the Destination; the study carries the counts', () => {
    const details = JSON.stringify({ protocol: 'dimse', sender: 'PACS1', remoteAddress: '10.1.2.3', stored: 7, duplicates: 1 });
    const m = auditMessageFor(
      row('study.received', { actor: 'dicom:PACS1', entity_type: 'study', entity_id: '1.2.3.4', details }),
      { ...ctx, delivery: undefined },
      node,
    );
    expect({ id: m.eventId.code, action: m.action, outcome: m.outcome }).to.deep.equal({ id: '110104', action: 'C', outcome: 0 });
    const xml = buildAuditXml(m);
    expect(xml).to.include(
      '<ActiveParticipant UserID="dicom:PACS1" UserIsRequestor="true" NetworkAccessPointID="10.1.2.3" NetworkAccessPointTypeCode="2"><RoleIDCode csd-code="110153"',
    );
    expect(xml).to.include(
      '<ActiveParticipant UserID="SECONDREAD" AlternativeUserID="4242" UserName="gw-1" UserIsRequestor="false" NetworkAccessPointID="gw.example" NetworkAccessPointTypeCode="1"><RoleIDCode csd-code="110152"',
    );
    expect(xml)
      .to.include('ParticipantObjectID="1.2.3.4"')
      .and.include('<ParticipantObjectDescription>instances stored: 7, duplicates: 1</ParticipantObjectDescription>');
  });

  it('a query names who asked from where, the SOP class queried and the query keys (base64, as A.5.3.12 has it)', () => {
    const keys = { patientId: 'MRN-9', accessionNumber: 'ACC-9' };
    const details = JSON.stringify({ via: 'qido-rs', level: 'study', keys, results: 2, remoteAddress: '10.9.9.9' });
    const m = auditMessageFor(row('study.query', { actor: 'qa-1', entity_type: 'query', entity_id: null, details }), {}, node);
    const xml = buildAuditXml(m);
    expect(m.eventId.code).to.equal('110112');
    expect(xml).to.include('<ActiveParticipant UserID="qa-1" UserIsRequestor="true" NetworkAccessPointID="10.9.9.9" NetworkAccessPointTypeCode="2"');
    const q =
      /<ParticipantObjectIdentification ParticipantObjectID="1\.2\.840\.10008\.5\.1\.4\.1\.2\.2\.1" ParticipantObjectTypeCode="2" ParticipantObjectTypeCodeRole="3"><ParticipantObjectIDTypeCode csd-code="110181"[^>]*\/><ParticipantObjectQuery>([^<]+)<\/ParticipantObjectQuery>/.exec(
        xml,
      );
    expect(q, xml).to.not.equal(null);
    expect(JSON.parse(Buffer.from(q![1]!, 'base64').toString('utf8'))).to.deep.equal({ via: 'qido-rs', level: 'study', keys });
    expect(xml).to.include(`<ParticipantObjectDetail type="TransferSyntax" value="${Buffer.from('1.2.840.10008.1.2.1').toString('base64')}"/>`);
  });

  it('a login names the user (the token name) at its address; a failed one only the address', () => {
    const ok = buildAuditXml(
      auditMessageFor(
        row('auth.login', { actor: 'ada', entity_type: 'auth', entity_id: null, details: JSON.stringify({ remoteAddress: '127.0.0.1' }) }),
        {},
        node,
      ),
    );
    expect(ok).to.include('EventOutcomeIndicator="0"').and.include('<EventTypeCode csd-code="110122"');
    expect(ok).to.match(/<ActiveParticipant UserID="ada" UserIsRequestor="true" NetworkAccessPointID="127\.0\.0\.1" NetworkAccessPointTypeCode="2"/);
    const failed = buildAuditXml(auditMessageFor(row('auth.failed', { actor: '127.0.0.1', entity_type: 'auth', entity_id: null }), {}, node));
    expect(failed).to.match(/<ActiveParticipant UserID="unknown" UserIsRequestor="true" NetworkAccessPointID="127\.0\.0\.1"/);
  });

  it('xmlEscape leaves no markup and no character XML 1.0 cannot carry', () => {
    expect(xmlEscape(`<a b="c">&'\u0001\n`)).to.equal('&lt;a b=&quot;c&quot;&gt;&amp;&apos;\ufffd&#10;');
  });

  describe('against the A.5.1 structure (xmllint, RELAX NG)', () => {
    const tmp = makeTempDir('gw-atna-xml-');
    after(() => tmp.cleanup());
    const validate = (xml: string): number => {
      const f = path.join(tmp.dir, `m${Math.random().toString(36).slice(2)}.xml`);
      writeFileSync(f, xml);
      return spawnSync('xmllint', ['--noout', '--relaxng', SCHEMA, f], { stdio: 'ignore' }).status ?? -1;
    };
    before(function () {
      if (spawnSync('xmllint', ['--version'], { stdio: 'ignore' }).status !== 0) {
        console.log('      skipped: xmllint (libxml2-utils) not installed');
        this.skip();
      }
    });

    it('every mapped event gives a valid message', () => {
      for (const action of [
        'gateway.started',
        'auth.failed',
        'auth.login',
        'rules.update',
        'case.created',
        'case.awaiting-read',
        'case.viewed',
        'study.held',
        'study.received',
        'study.query',
        'message.dismissed',
      ]) {
        const entity =
          action.split('.')[0] === 'message'
            ? 'hl7-message'
            : action.startsWith('rules')
              ? 'rule-set'
              : action === 'study.query'
                ? 'query'
                : action.split('.')[0]!;
        const extra = { remoteAddress: '10.0.0.1', stored: 3, duplicates: 0, via: 'api', level: 'study', keys: { patientId: 'P<1>' }, results: 1 };
        const r = row(action, {
          entity_type: entity,
          actor: action === 'auth.failed' ? '127.0.0.1' : 'alice',
          details: JSON.stringify({ reason: 'x < y', ...extra }),
        });
        expect(validate(buildAuditXml(auditMessageFor(r, entity === 'case' || entity === 'study' ? ctx : {}, node))), action).to.equal(0);
      }
    });

    it('the check can fail: a message without an ActiveParticipant, or out of order, is refused', () => {
      const good = buildAuditXml(auditMessageFor(row('case.created'), ctx, node));
      expect(validate(good)).to.equal(0);
      expect(validate(good.replace(/<ActiveParticipant\b.*?<\/ActiveParticipant>/g, ''))).to.not.equal(0);
      const source = /<AuditSourceIdentification\b.*?<\/AuditSourceIdentification>/.exec(good)![0];
      expect(validate(good.replace(source, '').replace('</AuditMessage>', `${source}</AuditMessage>`))).to.not.equal(0);
    });
  });
});
