import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import winston from 'winston';
import type { Destination } from '../../src/config/schema.js';
import { type OutgoingInstance, type SendableInstance } from '../../src/forwarding/destination.js';
import { createDestinationSender } from '../../src/forwarding/destination.factory.js';
import { generateStudy, SopClass, Ts, type GeneratedStudy } from '../../scripts/lib/study-generator.js';
import { orthancUnavailable, startOrthanc, type OrthancPeer } from '../helpers/orthanc.js';
import { startStowServer, type StowServer } from '../helpers/stow-server.js';
import { makeTempDir } from '../helpers/tmp.js';

const silent = winston.createLogger({ silent: true });

function outgoing(study: GeneratedStudy): OutgoingInstance[] {
  return study.instances.map((i) => ({
    sopClassUid: i.sopClassUid,
    sopInstanceUid: i.sopInstanceUid,
    transferSyntaxUid: Ts.explicitLe,
    bytes: readFileSync(i.path),
  }));
}

function web(url: string, extra: Partial<Extract<Destination, { type: 'dicomweb' }>> = {}) {
  return createDestinationSender(
    { id: 'pool-web', type: 'dicomweb', url, deidentify: false, headers: {}, timeoutSeconds: 5, batchSize: 20, maxRequestMegabytes: 64, ...extra },
    { callingAeTitle: 'SECONDREAD', logger: silent },
  );
}

describe('DICOMweb destination (STOW-RS over real sockets)', function () {
  this.timeout(60_000);
  let gen: ReturnType<typeof makeTempDir>;
  let study: GeneratedStudy;
  let batch: OutgoingInstance[];
  let srv: StowServer;

  before(() => {
    gen = makeTempDir('gw-web-gen-');
    study = generateStudy(path.join(gen.dir, 'ct'), { instances: 5, series: 2, rows: 64, columns: 64 });
    batch = outgoing(study);
  });
  after(() => gen.cleanup());
  beforeEach(async () => {
    srv = await startStowServer();
  });
  afterEach(async () => {
    await srv.close();
  });

  it('POSTs one multipart/related request to {url}/studies: bodies byte-identical, headers sent, all ok on 200', async () => {
    const sender = web(srv.url, { headers: { Authorization: 'Bearer s3cr3t-token' } });
    const results = await sender.send(batch);
    assert.deepEqual(
      results,
      batch.map((b) => ({ sopInstanceUid: b.sopInstanceUid, ok: true })),
    );
    assert.equal(srv.requests.length, 1);
    const req = srv.requests[0]!;
    assert.equal(req.method, 'POST');
    assert.equal(req.url, '/dicom-web/studies');
    assert.equal(req.type, 'application/dicom');
    assert.match(String(req.headers['content-type']), /^multipart\/related/);
    assert.equal(req.headers['authorization'], 'Bearer s3cr3t-token');
    assert.match(String(req.headers['accept']), /application\/dicom\+json/);
    assert.equal(req.parts.length, batch.length);
    req.parts.forEach((p, i) => {
      assert.equal(p.contentType, 'application/dicom');
      assert.ok(p.body.equals(batch[i]!.bytes), `part ${i} byte-identical`);
      assert.equal(p.sopInstanceUid, batch[i]!.sopInstanceUid);
    });
  });

  it('stored files handed by path (as forwarding hands them): sent byte for byte; one that cannot be read fails alone, permanently, its path not in the message, the rest in order around it', async () => {
    const files: SendableInstance[] = study.instances.map((i) => ({
      sopClassUid: i.sopClassUid,
      sopInstanceUid: i.sopInstanceUid,
      transferSyntaxUid: Ts.explicitLe,
      file: i.path,
    }));
    files[2] = { ...files[2]!, file: path.join(gen.dir, 'gone', '1.2.3.dcm') } as SendableInstance;
    const results = await web(srv.url).send(files);
    assert.deepEqual(
      results.map((r) => [r.sopInstanceUid, r.ok]),
      files.map((f, i) => [f.sopInstanceUid, i !== 2]),
    );
    assert.equal(results[2]!.failure?.transient, false);
    assert.match(results[2]!.failure?.message ?? '', /could not read the instance: ENOENT/);
    assert.doesNotMatch(results[2]!.failure?.message ?? '', /gone|1\.2\.3/);
    const parts = srv.requests.flatMap((r) => r.parts);
    assert.deepEqual(
      parts.map((p) => p.sopInstanceUid),
      batch.filter((_, i) => i !== 2).map((b) => b.sopInstanceUid),
    );
    parts.forEach((p) => assert.ok(p.body.equals(batch.find((b) => b.sopInstanceUid === p.sopInstanceUid)!.bytes)));
  });

  it('splits a batch into requests of at most maxRequestMegabytes, in order, every instance answered', async () => {
    const size = batch[0]!.bytes.length;
    // Room for two instances per request, not three.
    const sender = web(srv.url, { maxRequestMegabytes: (size * 2.5) / (1024 * 1024) });
    const results = await sender.send(batch);
    assert.deepEqual(
      results,
      batch.map((b) => ({ sopInstanceUid: b.sopInstanceUid, ok: true })),
    );
    assert.equal(srv.requests.length, Math.ceil(batch.length / 2));
    assert.deepEqual(
      srv.requests.flatMap((r) => r.parts.map((p) => p.sopInstanceUid)),
      batch.map((b) => b.sopInstanceUid),
    );
    assert.ok(srv.requests.every((r) => r.parts.length <= 2));
  });

  it('sends basic auth headers from config too', async () => {
    const basic = `Basic ${Buffer.from('reader:pw').toString('base64')}`;
    await web(srv.url, { headers: { Authorization: basic } }).send(batch.slice(0, 1));
    assert.equal(srv.requests[0]?.headers['authorization'], basic);
  });

  for (const [status, transient] of [
    [500, true],
    [503, true],
    [429, true],
    [408, true],
    [400, false],
    [401, false],
    [415, false],
  ] as const) {
    it(`HTTP ${status} fails every instance ${transient ? 'transiently' : 'permanently'}`, async () => {
      srv.behaviour = { kind: 'status', status };
      const results = await web(srv.url).send(batch);
      assert.equal(results.length, batch.length);
      results.forEach((r, i) => {
        assert.equal(r.sopInstanceUid, batch[i]!.sopInstanceUid);
        assert.equal(r.ok, false);
        assert.equal(r.failure?.transient, transient, r.failure?.message);
        assert.match(r.failure?.message ?? '', new RegExp(String(status)));
      });
    });
  }

  it('202 with a FailedSOPSequence: per-instance results, reason classified (A700 transient, C000 permanent)', async () => {
    const a = batch[1]!.sopInstanceUid;
    const c = batch[3]!.sopInstanceUid;
    srv.behaviour = {
      kind: 'fail',
      uids: new Map([
        [a, 0xa700],
        [c, 0xc000],
      ]),
    };
    const results = await web(srv.url).send(batch);
    assert.deepEqual(
      results.map((r) => r.ok),
      [true, false, true, false, true],
    );
    assert.equal(results[1]!.failure?.transient, true);
    assert.equal(results[3]!.failure?.transient, false);
    assert.match(results[3]!.failure?.message ?? '', /0xC000/);
  });

  it('409 conflict with a FailedSOPSequence: the listed instance failed permanently, referenced ones ok', async () => {
    srv.behaviour = { kind: 'fail', uids: new Map([[batch[0]!.sopInstanceUid, 0x0111]]), status: 409 };
    const results = await web(srv.url).send(batch);
    assert.equal(results[0]!.ok, false);
    assert.equal(results[0]!.failure?.transient, false);
    assert.ok(results.slice(1).every((r) => r.ok));
  });

  it('a server that never answers: transient timeout after timeoutSeconds, no hang', async () => {
    srv.behaviour = { kind: 'hang' };
    const t0 = Date.now();
    const results = await web(srv.url, { timeoutSeconds: 1 }).send(batch);
    const took = Date.now() - t0;
    assert.ok(took >= 900 && took < 5000, `took ${took} ms`);
    assert.ok(results.every((r) => !r.ok && r.failure?.transient === true && /timed out/.test(r.failure.message)));
  });

  it('connection refused: every instance transient; verify() reports it', async () => {
    const port = srv.port;
    await srv.close();
    const sender = web(`http://127.0.0.1:${port}/dicom-web`);
    const results = await sender.send(batch);
    assert.ok(
      results.every((r) => !r.ok && r.failure?.transient === true),
      JSON.stringify(results[0]),
    );
    const v = await sender.verify();
    assert.equal(v.ok, false);
    srv = await startStowServer(); // for afterEach
  });

  it('verify(): QIDO GET {url}/studies?limit=1 with the configured headers', async () => {
    const v = await web(srv.url, { headers: { Authorization: 'Bearer q' } }).verify();
    assert.equal(v.ok, true, v.detail);
    const req = srv.requests[0]!;
    assert.equal(req.method, 'GET');
    assert.equal(req.url, '/dicom-web/studies?limit=1');
    assert.equal(req.headers['authorization'], 'Bearer q');
  });

  it('an empty batch sends nothing', async () => {
    assert.deepEqual(await web(srv.url).send([]), []);
    assert.equal(srv.requests.length, 0);
  });
});

describe('DICOMweb destination against a real Orthanc (DICOMweb plugin)', function () {
  this.timeout(120_000);
  let orthanc: OrthancPeer | undefined;
  let gen: ReturnType<typeof makeTempDir>;

  before(async function () {
    const why = orthancUnavailable();
    if (why) {
      console.log(`      skipped: ${why}`);
      this.skip();
    }
    orthanc = await startOrthanc();
    gen = makeTempDir('gw-web-orthanc-');
  });
  after(async () => {
    await orthanc?.stop();
    gen?.cleanup();
  });

  it('STOWs a generated study in batches; QIDO and the REST API then list every instance', async () => {
    const o = orthanc!;
    const study = generateStudy(path.join(gen.dir, 'ct'), { instances: 7, series: 2, rows: 64, columns: 64, accessionNumber: 'ACC-ORTH-1' });
    const all = outgoing(study);
    const sender = web(o.dicomwebUrl, { timeoutSeconds: 30 });
    const v = await sender.verify();
    assert.equal(v.ok, true, v.detail);
    const results = [...(await sender.send(all.slice(0, 4))), ...(await sender.send(all.slice(4)))];
    assert.deepEqual(
      results.map((r) => [r.sopInstanceUid, r.ok, r.failure?.message]),
      all.map((a) => [a.sopInstanceUid, true, undefined]),
    );

    const qido = (await (await fetch(`${o.dicomwebUrl}/studies?StudyInstanceUID=${study.studyInstanceUid}`)).json()) as Record<string, { Value?: unknown[] }>[];
    assert.equal(qido.length, 1);
    assert.deepEqual(qido[0]?.['00080050']?.Value, ['ACC-ORTH-1']);
    const inst = (await (await fetch(`${o.dicomwebUrl}/studies/${study.studyInstanceUid}/instances`)).json()) as Record<string, { Value?: unknown[] }>[];
    assert.deepEqual(new Set(inst.map((i) => i['00080018']?.Value?.[0])), new Set(all.map((a) => a.sopInstanceUid)));
    // byte-level: Orthanc keeps the file as received (StorageCompression off); compare one via the REST API
    const found = (await (
      await fetch(`${o.baseUrl}/tools/find`, { method: 'POST', body: JSON.stringify({ Level: 'Instance', Query: { SOPInstanceUID: all[0]!.sopInstanceUid } }) })
    ).json()) as string[];
    assert.equal(found.length, 1);
    const file = Buffer.from(await (await fetch(`${o.baseUrl}/instances/${found[0]}/file`)).arrayBuffer());
    assert.ok(file.equals(all[0]!.bytes), 'Orthanc stored our bytes');
  });

  it('the same instance twice is accepted (Orthanc answers 200 again)', async () => {
    const o = orthanc!;
    const study = generateStudy(path.join(gen.dir, 'dup'), { instances: 1, rows: 32, columns: 32 });
    const one = outgoing(study);
    const sender = web(o.dicomwebUrl, { timeoutSeconds: 30 });
    assert.equal((await sender.send(one))[0]?.ok, true);
    const again = await sender.send(one);
    assert.equal(again.length, 1);
    // Orthanc 1.10 answers a duplicate with success; any verdict must name the instance
    assert.equal(again[0]?.sopInstanceUid, one[0]!.sopInstanceUid);
  });

  it('an MR instance of a SOP class Orthanc accepts too', async () => {
    const o = orthanc!;
    const study = generateStudy(path.join(gen.dir, 'mr'), { modality: 'MR', instances: 2, rows: 32, columns: 32 });
    const r = await web(o.dicomwebUrl, { timeoutSeconds: 30 }).send(outgoing(study));
    assert.ok(r.every((x) => x.ok));
    assert.equal(study.instances[0]?.sopClassUid, SopClass.mr);
  });
});
