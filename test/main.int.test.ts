import { createHash } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import { openDatabase } from '../src/db/database.js';
import { expect } from 'chai';
import { generateStudy } from '../scripts/lib/study-generator.js';
import { rawFromFile, storeInstances } from './helpers/dicom-peers.js';
import { startGatewayProcess, writeGatewayConfig, type GatewayProcess } from './helpers/gateway-process.js';
import { makeTempDir } from './helpers/tmp.js';

const token = 'test-admin-token-0123456789';

describe('the gateway process (src/main.ts)', function () {
  this.timeout(60_000);
  let tmp: ReturnType<typeof makeTempDir>;
  let gw: GatewayProcess | undefined;

  beforeEach(() => {
    tmp = makeTempDir();
  });
  afterEach(async () => {
    if (gw && gw.child.exitCode === null && gw.child.signalCode === null) {
      gw.child.kill('SIGKILL');
      await gw.exited;
    }
    gw = undefined;
    tmp.cleanup();
  });

  it('exits non-zero before listening on an invalid config, listing every problem', async () => {
    const file = writeGatewayConfig(tmp.dir, { dicom: { port: 'x', aeTitle: '' }, http: { port: 99999 } });
    const err = await startGatewayProcess(file).then(
      () => expect.fail('should not start'),
      (e: Error) => e.message,
    );
    expect(err).to.match(/exited \(2\)/);
    expect(err).to.include('dicom.port').and.include('dicom.aeTitle').and.include('http.port');
    expect(err).not.to.include('gateway started');
  });

  it('exits 2 before listening when the rules file is invalid, listing the problems', async () => {
    const rulesFile = path.join(tmp.dir, 'rules.yaml');
    writeFileSync(rulesFile, 'rules:\n  - { id: x, kind: oncology, priority: someday }\n');
    const err = await startGatewayProcess(writeGatewayConfig(tmp.dir, { rules: rulesFile })).then(
      () => expect.fail('should not start'),
      (e: Error) => e.message,
    );
    expect(err).to.match(/exited \(2\)/);
    expect(err).to.include('rules[0].priority');
  });

  it('serves /healthz, enforces tokens, and stops cleanly with exit 0 on SIGTERM', async () => {
    gw = await startGatewayProcess(writeGatewayConfig(tmp.dir));
    const base = `http://127.0.0.1:${gw.ports.http}`;
    const health = await fetch(`${base}/healthz`);
    expect(health.status).to.equal(200);
    expect(await health.json()).to.include({ status: 'ok' });
    expect((await fetch(`${base}/api/studies`)).status).to.equal(401);
    expect((await fetch(`${base}/api/studies`, { headers: { authorization: 'Bearer wrong-token-000000000' } })).status).to.equal(401);
    const ok = await fetch(`${base}/api/studies`, { headers: { authorization: `Bearer ${token}` } });
    expect(ok.status).to.equal(200);
    expect(await ok.json()).to.deep.equal({ items: [] });

    gw.child.kill('SIGTERM');
    const { code } = await gw.exited;
    expect(code).to.equal(0);
    expect(gw.lines.some((l) => l.includes('"stopped"'))).to.equal(true);
  });

  it('keeps every acknowledged instance across SIGKILL mid-transfer and a restart', async () => {
    const configFile = writeGatewayConfig(tmp.dir);
    const study = generateStudy(path.join(tmp.dir, 'study'), { instances: 40, series: 2, rows: 256, columns: 256 });
    const raws = study.instances.map((i) => rawFromFile(i.path));
    gw = await startGatewayProcess(configFile);
    const target = { host: '127.0.0.1', port: gw.ports.dicom, callingAe: 'PACS1', calledAe: 'SECONDREAD' };

    // Kill the gateway while an association is sending: some instances are acknowledged, the rest not.
    const acked = new Set<string>();
    const sending = (async () => {
      for (let i = 0; i < raws.length; i += 5) {
        const batch = raws.slice(i, i + 5);
        const r = await storeInstances(target, batch, 10_000);
        batch.forEach((raw, j) => {
          if (r.statuses[j] === 0) acked.add(raw.sopInstanceUid);
        });
        if (r.error) return;
      }
    })();
    while (acked.size < 12) await new Promise((r) => setTimeout(r, 5));
    gw.child.kill('SIGKILL');
    await gw.exited;
    await sending;
    expect(acked.size).to.be.greaterThan(11);

    gw = await startGatewayProcess(configFile);
    // The database the gateway used (a SQLite file, or the test's PostgreSQL database).
    const opened = openDatabase((YAML.parse(readFileSync(configFile, 'utf8')) as { database: { url: string } }).database.url);
    const db = { close: () => opened.close() };
    try {
      for (const raw of raws.filter((r) => acked.has(r.sopInstanceUid))) {
        const row = await opened.db
          .selectFrom('instances')
          .select(['file_path', 'sha256', 'size_bytes'])
          .where('sop_instance_uid', '=', raw.sopInstanceUid)
          .executeTakeFirst();
        expect(row, `acknowledged ${raw.sopInstanceUid} has a row`).to.not.equal(undefined);
        const file = path.join(tmp.dir, 'data', row!.file_path);
        expect(existsSync(file)).to.equal(true);
        const bytes = readFileSync(file);
        expect(bytes.length).to.equal(row!.size_bytes);
        expect(createHash('sha256').update(bytes).digest('hex')).to.equal(row!.sha256);
        expect(bytes.subarray(bytes.length - raw.dataset.length)).to.deep.equal(raw.dataset);
      }
    } finally {
      await db.close();
    }

    // The PACS resends the whole study: everything ends up stored exactly once.
    const again = await storeInstances({ ...target, port: gw.ports.dicom }, raws, 30_000);
    expect(again.statuses.every((s) => s === 0)).to.equal(true);
    const res = await fetch(`http://127.0.0.1:${gw.ports.http}/api/studies/${study.studyInstanceUid}`, { headers: { authorization: `Bearer ${token}` } });
    const body = (await res.json()) as { instanceCount: number; modalities: string[]; series: unknown[] };
    expect(body.instanceCount).to.equal(raws.length);
    expect(body.series).to.have.length(2);
    expect(body.modalities).to.deep.equal(['CT']);
  });
});
