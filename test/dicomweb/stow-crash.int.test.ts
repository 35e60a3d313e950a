import { readdirSync, readFileSync, existsSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { expect } from 'chai';
import { generateStudy } from '../../scripts/lib/study-generator.js';
import { eventually } from '../helpers/eventually.js';
import { startGatewayProcess, writeGatewayConfig, type GatewayProcess } from '../helpers/gateway-process.js';
import { makeTempDir } from '../helpers/tmp.js';
import { files, multipartBody, parseMultipart } from './dicomweb-fixture.js';

const TOKEN = 'test-admin-token-0123456789';

async function instancesOf(port: number, studyUid: string): Promise<string[]> {
  const res = await fetch(`http://127.0.0.1:${port}/dicom-web/studies/${studyUid}/instances`, {
    headers: { authorization: `Bearer ${TOKEN}`, accept: 'application/dicom+json' },
  });
  if (res.status === 404) return [];
  const body = (await res.json()) as Record<string, { Value?: unknown[] }>[];
  return body.map((d) => String(d['00080018']?.Value?.[0]));
}

describe('DICOMweb STOW-RS and a SIGKILL (int)', function () {
  this.timeout(120_000);
  const tmp = makeTempDir('gw-stow-crash-');
  let gw: GatewayProcess | undefined;

  after(async () => {
    if (gw && gw.child.exitCode === null && gw.child.signalCode === null) {
      gw.child.kill('SIGTERM');
      await gw.exited;
    }
    tmp.cleanup();
  });

  it('loses nothing it acknowledged when the process is killed in the middle of a STOW request', async () => {
    const configFile = writeGatewayConfig(tmp.dir);
    gw = await startGatewayProcess(configFile);
    const study = generateStudy(path.join(tmp.dir, 'in'), { instances: 6, series: 1, rows: 64, columns: 64, modality: 'CT' });
    const bytes = files(study.instances.map((i) => i.path));
    // Three instances acknowledged (200 with each in ReferencedSOPSequence).
    const first = multipartBody(bytes.slice(0, 3));
    const ack = await fetch(`http://127.0.0.1:${gw.ports.http}/dicom-web/studies`, {
      method: 'POST',
      headers: { authorization: `Bearer ${TOKEN}`, 'content-type': first.contentType },
      body: first.body,
    });
    expect(ack.status).to.equal(200);
    const acked = ((await ack.json()) as Record<string, { Value?: Record<string, { Value?: unknown[] }>[] }>)['00081199']!.Value!.map((i) =>
      String(i['00081155']!.Value![0]),
    );
    expect(acked).to.have.length(3);

    // A second request: one whole part and half of the next go out, then the process is killed before any answer.
    const second = multipartBody(bytes.slice(3));
    const cutAt = second.body.indexOf(Buffer.from(`--${second.boundary}`), second.body.indexOf(Buffer.from(`--${second.boundary}`)) + 10) + 2000;
    const req = http.request({
      host: '127.0.0.1',
      port: gw.ports.http,
      path: '/dicom-web/studies',
      method: 'POST',
      headers: { authorization: `Bearer ${TOKEN}`, 'content-type': second.contentType, 'content-length': second.body.length },
    });
    const answered = new Promise<number | 'cut'>((resolve) => {
      req.on('response', (r) => resolve(r.statusCode ?? 0));
      req.on('error', () => resolve('cut'));
    });
    req.write(second.body.subarray(0, cutAt));
    // The fourth instance is committed (not acknowledged: the answer comes at the end of the body).
    await eventually(
      async () => ((await instancesOf(gw!.ports.http, study.studyInstanceUid)).length === 4 ? true : undefined),
      'the first part of the second request to be stored',
      20_000,
    );
    gw.child.kill('SIGKILL');
    expect((await gw.exited).signal).to.equal('SIGKILL');
    expect(await answered).to.equal('cut');

    gw = await startGatewayProcess(configFile);
    const present = await instancesOf(gw.ports.http, study.studyInstanceUid);
    for (const uid of acked) expect(present, 'an acknowledged instance').to.include(uid);
    expect(present).to.not.include(study.instances[4]!.sopInstanceUid);
    // Each acknowledged instance comes back byte for byte.
    for (const [i, uid] of acked.entries()) {
      const inst = study.instances.find((x) => x.sopInstanceUid === uid)!;
      const res = await fetch(
        `http://127.0.0.1:${gw.ports.http}/dicom-web/studies/${study.studyInstanceUid}/series/${inst.seriesInstanceUid}/instances/${uid}`,
        {
          headers: { authorization: `Bearer ${TOKEN}`, accept: 'multipart/related; type="application/dicom"' },
        },
      );
      const parts = parseMultipart(Buffer.from(await res.arrayBuffer()), res.headers.get('content-type') ?? '');
      expect(parts, `instance ${i}`).to.have.length(1);
      expect(parts[0]!.data.equals(readFileSync(inst.path))).to.equal(true);
    }
    // The half-received part left no temp file once the gateway started again.
    const tmpDir = path.join(tmp.dir, 'data', 'tmp');
    const leftovers = existsSync(tmpDir)
      ? readdirSync(tmpDir, { recursive: true })
          .map(String)
          .filter((f) => f.endsWith('.part'))
      : [];
    expect(leftovers).to.deep.equal([]);
  });
});
