import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import winston from 'winston';
import { defaultConfig, type GatewayConfig } from '../../src/config/schema.js';
import { migrateToLatest, openDatabase, type OpenedDatabase } from '../../src/db/database.js';
import { DicomScp } from '../../src/dicom/scp.js';
import { Spool } from '../../src/dicom/spool.js';
import { type OutgoingInstance } from '../../src/forwarding/destination.js';
import { createDestinationSender } from '../../src/forwarding/destination.factory.js';
import { findInstance, findStudy } from '../../src/studies/study.repository.js';
import { StudyService } from '../../src/studies/study.service.js';
import { generateStudy, type GeneratedStudy } from '../../scripts/lib/study-generator.js';
import { hasDcmtk, rawFromPart10, runDcmtk } from '../helpers/dicom-peers.js';
import { freePort } from '../helpers/orthanc.js';
import { haveOpenssl, makeTestPki, type KeyPair, type TestPki } from '../helpers/tls-certs.js';
import { makeTempDir } from '../helpers/tmp.js';
import { capturingLogger, type LogEntry } from '../helpers/capturing-logger.js';

interface Rig {
  scp: DicomScp;
  opened: OpenedDatabase;
  logs: LogEntry[];
  close(): Promise<void>;
}

/** Our SCP with a TLS listener (client certificate required, CN checked against the calling AE unless told otherwise). */
async function rig(pki: TestPki, dicom: Partial<GatewayConfig['dicom']> = {}, aeTitle = 'SECONDREAD'): Promise<Rig> {
  const tmp = makeTempDir('gw-scp-tls-');
  const opened = openDatabase(`sqlite:${path.join(tmp.dir, 'gateway.db')}`);
  await migrateToLatest(opened.db);
  const spool = new Spool(path.join(tmp.dir, 'spool'), 0);
  spool.open();
  const { logger, entries } = capturingLogger();
  const studies = new StudyService({ db: opened.db, spool, logger, stableAfterSeconds: 60 });
  const config: GatewayConfig['dicom'] = {
    ...defaultConfig().dicom,
    host: '127.0.0.1',
    port: 0,
    aeTitle,
    allowedCallers: [],
    tls: { port: 0, cert: pki.server.cert, key: pki.server.key, ca: pki.ca, requireClientCert: true, checkSubjectAe: true },
    ...dicom,
  };
  const scp = new DicomScp({ config, sink: studies, spool, logger });
  await scp.start();
  return {
    scp,
    opened,
    logs: entries,
    async close() {
      await scp.stop(2000);
      await opened.close();
      tmp.cleanup();
    },
  };
}

/** DCMTK's TLS options: +tls KEY CERT, trusting our test CA. */
const dcmtkTls = (pki: TestPki, kp: KeyPair): string[] => ['+tls', kp.key, kp.cert, '+cf', pki.ca];

function toOutgoing(file: string): OutgoingInstance {
  const bytes = readFileSync(file);
  const raw = rawFromPart10(bytes);
  return { sopClassUid: raw.sopClassUid, sopInstanceUid: raw.sopInstanceUid, transferSyntaxUid: raw.transferSyntaxUid, bytes };
}

function tlsSender(port: number, tls: NonNullable<Extract<GatewayConfig['destinations'][number], { type: 'dimse' }>['tls']>, aeTitle = 'POOL') {
  return createDestinationSender(
    { id: 'pool-tls', type: 'dimse', host: '127.0.0.1', port, aeTitle, deidentify: false, timeoutSeconds: 10, batchSize: 100, maxAssociations: 1, tls },
    { callingAeTitle: 'SECONDREAD', logger: winston.createLogger({ silent: true }) },
  );
}

describe('DICOM TLS (SCP listener and C-STORE SCU; throwaway PKI from openssl)', function () {
  this.timeout(60_000);
  let pki: TestPki;
  let gen: ReturnType<typeof makeTempDir>;
  let study: GeneratedStudy;
  let r: Rig | undefined;

  before(function () {
    if (!haveOpenssl()) {
      console.log('      skipped: the openssl CLI is not installed (needed to make test certificates)');
      this.skip();
    }
    pki = makeTestPki();
    gen = makeTempDir('gw-tls-gen-');
    study = generateStudy(path.join(gen.dir, 'ct'), { instances: 4, series: 1, rows: 64, columns: 64, accessionNumber: 'ACC-TLS-1' });
  });
  after(() => {
    pki?.cleanup();
    gen?.cleanup();
  });
  afterEach(async () => {
    await r?.close();
    r = undefined;
  });

  it('with plain: false only the TLS listener is up', async () => {
    r = await rig(pki, { plain: false });
    assert.equal(r.scp.port, 0);
    assert.ok(r.scp.tlsPort > 0);
  });

  describe('DCMTK as the peer', () => {
    before(async function () {
      if (!hasDcmtk()) {
        console.log('      skipped: DCMTK (echoscu, storescu, storescp) is not installed');
        this.skip();
      }
      const help = await runDcmtk('echoscu', ['--help']);
      if (!help.stdout.includes('--enable-tls')) {
        console.log('      skipped: this DCMTK was built without TLS (echoscu has no +tls)');
        this.skip();
      }
    });

    it('echoscu +tls with a client certificate whose CN is its calling AE: C-ECHO succeeds', async () => {
      r = await rig(pki);
      const res = await runDcmtk('echoscu', [
        '-aet',
        'ECHOSCU',
        '-aec',
        'SECONDREAD',
        ...dcmtkTls(pki, pki.issue('ECHOSCU')),
        '127.0.0.1',
        String(r.scp.tlsPort),
      ]);
      assert.equal(res.code, 0, res.stderr + res.stdout);
    });

    it('storescu +tls stores a study through the TLS listener', async () => {
      r = await rig(pki);
      const files = study.instances.map((i) => i.path);
      const res = await runDcmtk('storescu', [
        '-aet',
        'PACS1',
        '-aec',
        'SECONDREAD',
        ...dcmtkTls(pki, pki.issue('PACS1')),
        '127.0.0.1',
        String(r.scp.tlsPort),
        ...files,
      ]);
      assert.equal(res.code, 0, res.stderr + res.stdout);
      const row = await findStudy(r.opened.db, study.studyInstanceUid);
      assert.equal(row?.instance_count, study.instances.length);
      assert.equal(row?.calling_ae, 'PACS1');
      for (const i of study.instances) assert.ok(await findInstance(r.opened.db, i.sopInstanceUid), 'instance stored');
    });

    it('a certificate whose CN is not the calling AE: A-ASSOCIATE-RJ, logged, nothing stored', async () => {
      r = await rig(pki);
      const res = await runDcmtk('storescu', [
        '-aet',
        'PACS1',
        '-aec',
        'SECONDREAD',
        ...dcmtkTls(pki, pki.issue('INTRUDER')),
        '127.0.0.1',
        String(r.scp.tlsPort),
        study.instances[0]!.path,
      ]);
      assert.notEqual(res.code, 0);
      assert.match(res.stderr + res.stdout, /Association Rejected/i);
      assert.equal(await findInstance(r.opened.db, study.instances[0]!.sopInstanceUid), undefined);
      const rejected = r.logs.find((e) => e.message === 'association rejected');
      assert.ok(rejected, 'the reject is logged');
      assert.match(String(rejected.reason), /INTRUDER.*not the calling AE/);
      assert.equal(rejected.callingAe, 'PACS1');
    });

    it('the same mismatch is accepted when checkSubjectAe is off', async () => {
      r = await rig(pki, { tls: { port: 0, cert: pki.server.cert, key: pki.server.key, ca: pki.ca, requireClientCert: true, checkSubjectAe: false } });
      const res = await runDcmtk('echoscu', [
        '-aet',
        'ECHOSCU',
        '-aec',
        'SECONDREAD',
        ...dcmtkTls(pki, pki.issue('INTRUDER')),
        '127.0.0.1',
        String(r.scp.tlsPort),
      ]);
      assert.equal(res.code, 0, res.stderr + res.stdout);
    });

    it('a client certificate from an untrusted CA fails the handshake (logged), no association', async () => {
      r = await rig(pki);
      const res = await runDcmtk('echoscu', [
        '-aet',
        'ECHOSCU',
        '-aec',
        'SECONDREAD',
        ...dcmtkTls(pki, pki.issueUntrusted('ECHOSCU')),
        '127.0.0.1',
        String(r.scp.tlsPort),
      ]);
      assert.notEqual(res.code, 0);
      await new Promise((ok) => setTimeout(ok, 100));
      assert.ok(
        r.logs.some((e) => e.message === 'DICOM TLS handshake failed'),
        'handshake failure logged',
      );
      assert.ok(!r.logs.some((e) => e.message === 'association rejected' || e.message === 'association closed'));
    });

    it('echoscu without TLS cannot talk to the TLS port, and plain echoscu still works on the plain port', async () => {
      r = await rig(pki);
      const onTls = await runDcmtk('echoscu', ['-to', '3', '-aet', 'ECHOSCU', '-aec', 'SECONDREAD', '127.0.0.1', String(r.scp.tlsPort)]);
      assert.notEqual(onTls.code, 0);
      const plain = await runDcmtk('echoscu', ['-aet', 'ECHOSCU', '-aec', 'SECONDREAD', '127.0.0.1', String(r.scp.port)]);
      assert.equal(plain.code, 0, plain.stderr);
    });

    it('our DIMSE destination sends to DCMTK storescp +tls (which requires our client certificate)', async () => {
      const out = makeTempDir('gw-storescp-tls-');
      const port = await freePort();
      const client = pki.issue('SECONDREAD');
      const child: ChildProcess = spawn('storescp', ['-aet', 'POOL', '-od', out.dir, '+tls', pki.server.key, pki.server.cert, '+cf', pki.ca, String(port)], {
        env: { ...process.env, TCP_NODELAY: '1' },
        stdio: ['ignore', 'ignore', 'pipe'],
      });
      let stderr = '';
      child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
      try {
        await waitForPort(port, child, () => stderr);
        const batch = study.instances.map((i) => toOutgoing(i.path));
        const sender = tlsSender(port, { ca: pki.ca, cert: client.cert, key: client.key, rejectUnauthorized: true });
        assert.deepEqual(await sender.verify(), { ok: true, detail: 'C-ECHO POOL@127.0.0.1:' + port + ' (TLS) ok' });
        const results = await sender.send(batch);
        assert.deepEqual(
          results,
          batch.map((b) => ({ sopInstanceUid: b.sopInstanceUid, ok: true })),
        );
        const received = readdirSync(out.dir).map((f) => rawFromPart10(readFileSync(path.join(out.dir, f))));
        assert.equal(received.length, batch.length);
        for (const b of batch) {
          const got = received.find((x) => x.sopInstanceUid === b.sopInstanceUid);
          assert.ok(got?.dataset.equals(rawFromPart10(b.bytes).dataset), 'dataset bytes identical');
        }
        // without our client certificate storescp refuses the handshake: a transient failure, nothing stored twice
        const anonymous = await tlsSender(port, { ca: pki.ca, rejectUnauthorized: true }).send(batch.slice(0, 1));
        assert.equal(anonymous[0]?.ok, false);
        assert.equal(anonymous[0]?.failure?.transient, true);
        assert.equal(readdirSync(out.dir).length, batch.length);
      } finally {
        if (child.exitCode === null) {
          const exited = new Promise((ok) => child.once('exit', ok));
          child.kill('SIGTERM');
          await exited;
        }
        out.cleanup();
      }
    });
  });

  it('a peer that connects and never starts the handshake is dropped after dicom.idleTimeoutSeconds', async () => {
    r = await rig(pki, { idleTimeoutSeconds: 1 });
    const started = Date.now();
    const s = net.connect(r.scp.tlsPort, '127.0.0.1');
    s.on('error', () => undefined);
    await new Promise((ok) => s.once('close', ok));
    const waited = Date.now() - started;
    assert.ok(waited >= 900 && waited < 5000, `closed after ${waited} ms`);
  });

  describe('our own sender and SCP', () => {
    it('the DIMSE destination sends over TLS to our TLS SCP (CN checked against its calling AE)', async () => {
      r = await rig(pki, { plain: false }, 'POOL');
      const client = pki.issue('SECONDREAD');
      const batch = study.instances.map((i) => toOutgoing(i.path));
      const results = await tlsSender(r.scp.tlsPort, { ca: pki.ca, cert: client.cert, key: client.key, rejectUnauthorized: true }).send(batch);
      assert.deepEqual(
        results,
        batch.map((b) => ({ sopInstanceUid: b.sopInstanceUid, ok: true })),
      );
      assert.equal((await findStudy(r.opened.db, study.studyInstanceUid))?.instance_count, batch.length);
    });

    it('a client certificate for another AE: the association is rejected, a permanent failure', async () => {
      r = await rig(pki, { plain: false }, 'POOL');
      const client = pki.issue('SOMEONE');
      const [res] = await tlsSender(r.scp.tlsPort, { ca: pki.ca, cert: client.cert, key: client.key, rejectUnauthorized: true }).send([
        toOutgoing(study.instances[0]!.path),
      ]);
      assert.equal(res?.ok, false);
      assert.equal(res?.failure?.transient, false);
      assert.match(res?.failure?.message ?? '', /association rejected.*calling AE title not recognized/);
    });

    it('a server certificate our CA did not issue: no association, a transient TLS failure', async () => {
      r = await rig(pki, { plain: false }, 'POOL');
      const rogue = makeTestPki();
      try {
        const client = pki.issue('SECONDREAD');
        const [res] = await tlsSender(r.scp.tlsPort, { ca: rogue.ca, cert: client.cert, key: client.key, rejectUnauthorized: true }).send([
          toOutgoing(study.instances[0]!.path),
        ]);
        assert.equal(res?.ok, false);
        assert.equal(res?.failure?.transient, true);
        assert.match(res?.failure?.message ?? '', /TLS connection .* failed/);
        assert.equal(await findInstance(r.opened.db, study.instances[0]!.sopInstanceUid), undefined);
      } finally {
        rogue.cleanup();
      }
    });
  });
});

async function waitForPort(port: number, child: ChildProcess, stderr: () => string): Promise<void> {
  const until = Date.now() + 10_000;
  for (;;) {
    const up = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => {
        s.destroy();
        resolve(true);
      });
      s.on('error', () => resolve(false));
    });
    if (up) return;
    if (child.exitCode !== null || Date.now() > until) throw new Error(`storescp did not start: ${stderr()}`);
    await new Promise((ok) => setTimeout(ok, 50));
  }
}
