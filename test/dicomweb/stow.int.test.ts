import { execFile } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { expect } from 'chai';
import { generateStudy } from '../../scripts/lib/study-generator.js';
import { DicomwebGateway, DW_TOKENS, files, multipartBody } from './dicomweb-fixture.js';

const run = promisify(execFile);
const REFERENCED = '00081199';
const FAILED = '00081198';

function uidsIn(seq: { Value?: unknown[] } | undefined): string[] {
  return (seq?.Value ?? []).map((i) => String((i as Record<string, { Value?: unknown[] }>)['00081155']?.Value?.[0]));
}

function reasonsIn(seq: { Value?: unknown[] } | undefined): number[] {
  return (seq?.Value ?? []).map((i) => Number((i as Record<string, { Value?: unknown[] }>)['00081197']?.Value?.[0]));
}

describe('DICOMweb STOW-RS (int)', function () {
  this.timeout(60_000);
  let t: DicomwebGateway;

  beforeEach(async () => {
    t = new DicomwebGateway();
    await t.start();
  });
  afterEach(async () => {
    await t.stop();
  });

  it('stores every part of a curl-sent multipart body through the C-STORE ingest, answering ReferencedSOPSequence', async function () {
    if (!existsSync('/usr/bin/curl')) this.skip();
    const study = generateStudy(path.join(t.tmp.dir, 'in'), {
      instances: 3,
      series: 2,
      rows: 16,
      columns: 16,
      modality: 'MR',
      patientId: 'MRN-STOW-1',
      accessionNumber: 'ACC-STOW-1',
    });
    const { body, contentType } = multipartBody(files(study.instances.map((i) => i.path)));
    const bodyFile = path.join(t.tmp.dir, 'body.bin');
    writeFileSync(bodyFile, body);
    const { stdout } = await run('curl', [
      '-sS',
      '-w',
      '\n%{http_code}',
      '-X',
      'POST',
      '-H',
      `Authorization: Bearer ${DW_TOKENS.pacs}`,
      '-H',
      `Content-Type: ${contentType}`,
      '-H',
      'Accept: application/dicom+json',
      '--data-binary',
      `@${bodyFile}`,
      `${t.dicomweb}/studies`,
    ]);
    const lines = stdout.trim().split('\n');
    const status = Number(lines.pop());
    const json = JSON.parse(lines.join('\n')) as Record<string, { Value?: unknown[] }>;
    expect(status).to.equal(200);
    expect(uidsIn(json[REFERENCED]).sort()).to.deep.equal(study.instances.map((i) => i.sopInstanceUid).sort());
    expect(json[FAILED]).to.equal(undefined);
    expect(String(json['00081190']?.Value?.[0])).to.equal(`${t.dicomweb}/studies/${study.studyInstanceUid}`);
    // Stored like a C-STORE: the study, its instances, the sender named by the token.
    const s = (await t.api('GET', `/api/studies/${study.studyInstanceUid}`)).json;
    expect(s['instanceCount']).to.equal(study.instances.length);
    expect(s['patientId']).to.equal('MRN-STOW-1');
    // The same bytes again: duplicates, success, nothing new.
    const again = await t.stow(body, contentType);
    expect(again.status).to.equal(200);
    expect((await t.api('GET', `/api/studies/${study.studyInstanceUid}`)).json['instanceCount']).to.equal(study.instances.length);
  });

  it('fails only the truncated part: the others are stored and the answer is 202 with FailedSOPSequence', async () => {
    const study = generateStudy(path.join(t.tmp.dir, 'in'), { instances: 4, series: 1, rows: 32, columns: 32, modality: 'CT' });
    const bytes = files(study.instances.map((i) => i.path));
    const cut = Buffer.from(bytes[1]!.subarray(0, bytes[1]!.length - 700));
    const { body, contentType } = multipartBody([bytes[0]!, cut, bytes[2]!, bytes[3]!]);
    const r = await t.stow(body, contentType);
    expect(r.status).to.equal(202);
    expect(uidsIn(r.json[REFERENCED]).sort()).to.deep.equal([0, 2, 3].map((i) => study.instances[i]!.sopInstanceUid).sort());
    expect(uidsIn(r.json[FAILED])).to.deep.equal([study.instances[1]!.sopInstanceUid]);
    expect(reasonsIn(r.json[FAILED])).to.deep.equal([0xc000]);
    const stored = await t.gw.db.selectFrom('instances').select('sop_instance_uid').where('study_instance_uid', '=', study.studyInstanceUid).execute();
    expect(stored.map((x) => x.sop_instance_uid).sort()).to.deep.equal([0, 2, 3].map((i) => study.instances[i]!.sopInstanceUid).sort());
    // The audit trail (ATNA Instances Transferred): one event for the request's study, with what was stored, not one per part.
    const one = multipartBody([bytes[0]!]);
    const again = await t.stow(one.body, one.contentType);
    expect(again.status).to.equal(200);
    const audits = await t.gw.db
      .selectFrom('audit_events')
      .select(['actor', 'details'])
      .where('action', '=', 'study.received')
      .where('entity_id', '=', study.studyInstanceUid)
      .orderBy('id')
      .execute();
    expect(audits.map((a) => ({ actor: a.actor, ...(JSON.parse(a.details!) as object) }))).to.deep.equal([
      { actor: audits[0]!.actor, protocol: 'stow-rs', sender: audits[0]!.actor, remoteAddress: '127.0.0.1', stored: 3, duplicates: 0 },
      { actor: audits[0]!.actor, protocol: 'stow-rs', sender: audits[0]!.actor, remoteAddress: '127.0.0.1', stored: 0, duplicates: 1 },
    ]);
    expect(audits[0]!.actor).to.not.equal('');
    // No temp file of the failed part is left behind.
    const { readdirSync } = await import('node:fs');
    expect(readdirSync(path.join(t.tmp.dir, 'data', 'tmp')).filter((f) => f.endsWith('.part'))).to.deep.equal([]);
  });

  it('a body that ends inside its last part (no closing boundary) fails that part only', async () => {
    const study = generateStudy(path.join(t.tmp.dir, 'in'), { instances: 2, series: 1, rows: 16, columns: 16, modality: 'CT' });
    const bytes = files(study.instances.map((i) => i.path));
    const { body, contentType } = multipartBody([bytes[0]!, bytes[1]!], { close: false });
    const r = await t.stow(body.subarray(0, body.length - 10), contentType);
    expect(r.status).to.equal(202);
    expect(uidsIn(r.json[REFERENCED])).to.deep.equal([study.instances[0]!.sopInstanceUid]);
    expect(r.json[FAILED]?.Value).to.have.length(1);
  });

  it('refuses what is not a STOW-RS body: 415 for another media type, 400 without parts, 409 when every part fails, 403 for a reader, 401 without a token', async () => {
    const study = generateStudy(path.join(t.tmp.dir, 'in'), { instances: 1, series: 1, rows: 16, columns: 16, modality: 'CT' });
    const [bytes] = files(study.instances.map((i) => i.path));
    expect((await t.stow(bytes!, 'application/dicom')).status).to.equal(415);
    expect((await t.stow(Buffer.from('x'), 'multipart/related; type="application/dicom+json"; boundary=abc')).status).to.equal(415);
    expect((await t.stow(Buffer.from('no parts at all'), 'multipart/related; type="application/dicom"; boundary=abc')).status).to.equal(400);
    const junk = multipartBody([Buffer.from('this is not DICOM at all, just text that goes on for a while '.repeat(5))]);
    const j = await t.stow(junk.body, junk.contentType);
    expect(j.status).to.equal(409);
    expect(reasonsIn(j.json[FAILED])).to.deep.equal([0xc000]);
    const good = multipartBody([bytes!]);
    expect((await t.stow(good.body, good.contentType, DW_TOKENS.drA)).status).to.equal(403);
    const res = await fetch(`${t.dicomweb}/studies`, { method: 'POST', headers: { 'content-type': good.contentType }, body: good.body });
    expect(res.status).to.equal(401);
    // The study in the URL must be the instances' study.
    const wrong = await t.stow(good.body, good.contentType, DW_TOKENS.pacs, '/studies/1.2.3.4');
    expect(wrong.status).to.equal(409);
    expect(reasonsIn(wrong.json[FAILED])).to.deep.equal([0xa900]);
    const right = await t.stow(good.body, good.contentType, DW_TOKENS.pacs, `/studies/${study.studyInstanceUid}`);
    expect(right.status).to.equal(200);
  });
});
