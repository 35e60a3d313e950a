import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import winston from 'winston';
import { defaultConfig, type GatewayConfig } from '../../src/config/schema.js';
import { migrateToLatest, openDatabase, type OpenedDatabase } from '../../src/db/database.js';
import { readPart10Header } from '../../src/dicom/header.js';
import { DicomScp } from '../../src/dicom/scp.js';
import { Spool } from '../../src/dicom/spool.js';
import { findInstance, findStudy } from '../../src/studies/study.repository.js';
import { StudyService } from '../../src/studies/study.service.js';
import { generateStudy, Ts, type GeneratedStudy } from '../../scripts/lib/study-generator.js';
import { echo, hasDcmtk, rawFromFile, rawFromPart10, runDcmtk, storeFiles, storeInstances, type ScuTarget } from '../helpers/dicom-peers.js';
import { makeTempDir, testDatabaseUrl } from '../helpers/tmp.js';

const silent = winston.createLogger({ silent: true });
const SUCCESS = 0x0000;

/** A Spool whose free-space answer the test controls; everything else is the real spool. */
class WatermarkSpool extends Spool {
  full = false;
  override hasRoom(): boolean {
    return !this.full && super.hasRoom();
  }
}

interface Rig {
  tmp: ReturnType<typeof makeTempDir>;
  opened: OpenedDatabase;
  spool: WatermarkSpool;
  scp: DicomScp;
  target: ScuTarget;
  close(): Promise<void>;
}

async function rig(dicom: Partial<GatewayConfig['dicom']> = {}): Promise<Rig> {
  const tmp = makeTempDir('gw-scp-');
  const opened = openDatabase(testDatabaseUrl(path.join(tmp.dir, 'gateway.db')));
  await migrateToLatest(opened.db);
  const spool = new WatermarkSpool(path.join(tmp.dir, 'spool'), 0);
  spool.open();
  const studies = new StudyService({ db: opened.db, spool, logger: silent, stableAfterSeconds: 60 });
  const config = { ...defaultConfig().dicom, host: '127.0.0.1', port: 0, aeTitle: 'SECONDREAD', allowedCallers: ['PACS1', 'STORESCU', 'ECHOSCU'], ...dicom };
  const scp = new DicomScp({ config, sink: studies, spool, logger: silent });
  await scp.start();
  return {
    tmp,
    opened,
    spool,
    scp,
    target: { host: '127.0.0.1', port: scp.port, callingAe: 'PACS1', calledAe: 'SECONDREAD' },
    async close() {
      await scp.stop(2000);
      await opened.close();
      tmp.cleanup();
    },
  };
}

function filesUnder(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((d) => d.isFile())
    .map((d) => path.join(d.parentPath, d.name));
}

/** The stored file minus our Part 10 meta header: must equal the dataset bytes the sender put on the wire. */
function storedDataset(r: Rig, relativePath: string): Buffer {
  return rawFromPart10(readFileSync(r.spool.absolute(relativePath))).dataset;
}

describe('DicomScp (real sockets, SQLite file, real spool)', function () {
  this.timeout(60_000);
  let r: Rig;
  let gen: ReturnType<typeof makeTempDir>;
  let study: GeneratedStudy;

  before(() => {
    gen = makeTempDir('gw-gen-');
    study = generateStudy(path.join(gen.dir, 'ct'), { instances: 12, series: 3, rows: 128, columns: 128, accessionNumber: 'ACC-SCP-1', patientId: 'PID-SCP' });
  });
  after(() => gen.cleanup());
  beforeEach(async () => {
    r = await rig();
  });
  afterEach(async () => {
    await r.close();
  });

  it('answers C-ECHO', async () => {
    const res = await echo(r.target);
    assert.equal(res.rejected, undefined);
    assert.deepEqual(res.statuses, [SUCCESS]);
  });

  it('stores a multi-series study: rows, files, bytes as sent behind our meta header, sha256', async () => {
    const res = await storeFiles(
      r.target,
      study.instances.map((i) => i.path),
    );
    assert.equal(res.error, undefined);
    assert.deepEqual(
      res.statuses,
      study.instances.map(() => SUCCESS),
    );
    const row = await findStudy(r.opened.db, study.studyInstanceUid);
    assert.equal(row?.instance_count, 12);
    assert.equal(row?.accession_number, 'ACC-SCP-1');
    assert.equal(row?.patient_id, 'PID-SCP');
    assert.equal(row?.calling_ae, 'PACS1');
    for (const inst of study.instances) {
      const dbRow = await findInstance(r.opened.db, inst.sopInstanceUid);
      assert.ok(dbRow, 'instance row');
      assert.equal(dbRow.series_instance_uid, inst.seriesInstanceUid);
      const stored = readFileSync(r.spool.absolute(dbRow.file_path));
      assert.equal(dbRow.size_bytes, stored.length);
      assert.equal(dbRow.sha256, createHash('sha256').update(stored).digest('hex'));
      assert.ok(rawFromFile(inst.path).dataset.equals(storedDataset(r, dbRow.file_path)), 'dataset bytes identical');
      const h = await readPart10Header(stored);
      assert.equal(h.sopInstanceUid, inst.sopInstanceUid);
      assert.equal(h.transferSyntaxUid, Ts.explicitLe);
      // our meta header: the calling AE as source, our implementation class
      const meta = stored.subarray(0, 400).toString('latin1');
      assert.ok(meta.includes('PACS1'));
    }
    assert.deepEqual(filesUnder(r.spool.tmpDir), []);
  });

  it('rejects a calling AE that is not allowed (calling AE not recognized)', async () => {
    const res = await echo({ ...r.target, callingAe: 'STRANGER' });
    assert.deepEqual(res.rejected, { result: 1, source: 1, reason: 3 });
    assert.deepEqual(res.statuses, [undefined]);
  });

  it('rejects a wrong called AE (called AE not recognized)', async () => {
    const res = await echo({ ...r.target, calledAe: 'SOMEONEELSE' });
    assert.deepEqual(res.rejected, { result: 1, source: 1, reason: 7 });
  });

  it('accepts any calling AE when allowedCallers is empty', async () => {
    const open = await rig({ allowedCallers: [] });
    try {
      const res = await echo({ ...open.target, callingAe: 'ANYONE' });
      assert.deepEqual(res.statuses, [SUCCESS]);
    } finally {
      await open.close();
    }
  });

  it('stores the same instance twice once, answering success both times', async () => {
    const file = study.instances[0]!.path;
    const res = await storeFiles(r.target, [file, file]);
    assert.deepEqual(res.statuses, [SUCCESS, SUCCESS]);
    const again = await storeFiles(r.target, [file]);
    assert.deepEqual(again.statuses, [SUCCESS]);
    const row = await findStudy(r.opened.db, study.studyInstanceUid);
    assert.equal(row?.instance_count, 1);
    assert.equal(filesUnder(r.spool.instancesDir).length, 1);
    assert.deepEqual(filesUnder(r.spool.tmpDir), []);
  });

  it('answers 0xC000-range for a truncated or garbage dataset and leaves no file behind', async () => {
    const good = rawFromFile(study.instances[0]!.path);
    const truncated = { ...good, dataset: good.dataset.subarray(0, good.dataset.length - 1000) };
    const garbage = { ...rawFromFile(study.instances[1]!.path), dataset: randomBytes(5000) };
    const res = await storeInstances(r.target, [truncated, garbage]);
    assert.equal(res.statuses.length, 2);
    for (const s of res.statuses) {
      assert.ok(s !== undefined && s >= 0xc000 && s <= 0xcfff, `status 0x${s?.toString(16)}`);
    }
    assert.deepEqual(filesUnder(r.spool.tmpDir), []);
    assert.deepEqual(filesUnder(r.spool.instancesDir), []);
    assert.equal(await findStudy(r.opened.db, study.studyInstanceUid), undefined);
  });

  it('refuses a dataset whose SOP Instance UID differs from the command', async () => {
    const a = rawFromFile(study.instances[0]!.path);
    const b = rawFromFile(study.instances[1]!.path);
    const res = await storeInstances(r.target, [{ ...a, sopInstanceUid: b.sopInstanceUid }]);
    assert.ok(res.statuses[0]! >= 0xc000 && res.statuses[0]! <= 0xcfff, `status 0x${res.statuses[0]?.toString(16)}`);
    assert.deepEqual(filesUnder(r.spool.tmpDir), []);
    assert.deepEqual(filesUnder(r.spool.instancesDir), []);
  });

  it('answers 0xA700 below the disk watermark, and stores again once there is room', async () => {
    r.spool.full = true;
    const file = study.instances[0]!.path;
    const res = await storeFiles(r.target, [file]);
    assert.deepEqual(res.statuses, [0xa700]);
    assert.deepEqual(filesUnder(r.spool.tmpDir), []);
    r.spool.full = false;
    assert.deepEqual((await storeFiles(r.target, [file])).statuses, [SUCCESS]);
  });

  it('answers 0xA700 on a disk write error, without dying', async () => {
    // The spool's tmp folder vanishes: opening the temp file fails the way a lost disk would.
    const { rmSync } = await import('node:fs');
    rmSync(r.spool.tmpDir, { recursive: true, force: true });
    const res = await storeFiles(r.target, [study.instances[0]!.path]);
    assert.ok(res.statuses[0] === 0xa700 || res.statuses[0] === 0xc001, `status 0x${res.statuses[0]?.toString(16)}`);
    r.spool.open();
    assert.deepEqual((await storeFiles(r.target, [study.instances[0]!.path])).statuses, [SUCCESS]);
  });

  it('serves several associations at once', async () => {
    const groups = [0, 1, 2, 3].map((g) => study.instances.filter((_, i) => i % 4 === g).map((i) => i.path));
    const results = await Promise.all(groups.map((files, i) => storeFiles({ ...r.target, callingAe: i % 2 ? 'PACS1' : 'STORESCU' }, files)));
    for (const res of results) assert.ok(res.statuses.every((s) => s === SUCCESS));
    assert.equal((await findStudy(r.opened.db, study.studyInstanceUid))?.instance_count, 12);
  });

  it('refuses associations above maxAssociations (transient, local limit exceeded)', async () => {
    const small = await rig({ maxAssociations: 1 });
    try {
      // An accepted association kept open by a raw socket that never releases.
      const hold = await holdAssociation(small.target);
      try {
        const res = await echo(small.target);
        assert.deepEqual(res.rejected, { result: 2, source: 3, reason: 2 });
      } finally {
        hold.destroy();
      }
    } finally {
      await small.close();
    }
  });

  it('closes an association that stays idle past idleTimeoutSeconds', async () => {
    const quick = await rig({ idleTimeoutSeconds: 1 });
    try {
      const sock = await holdAssociation(quick.target);
      const closed = await new Promise<boolean>((resolve) => {
        const t = setTimeout(() => resolve(false), 8000);
        sock.once('close', () => {
          clearTimeout(t);
          resolve(true);
        });
      });
      assert.ok(closed, 'the SCP closed the idle association');
    } finally {
      await quick.close();
    }
  });

  it('closes a connection that never even asks for an association', async () => {
    const quick = await rig({ idleTimeoutSeconds: 1 });
    try {
      const sock = net.connect(quick.target.port, '127.0.0.1');
      sock.on('error', () => undefined);
      const closed = await new Promise<boolean>((resolve) => {
        const t = setTimeout(() => resolve(false), 8000);
        sock.once('close', () => {
          clearTimeout(t);
          resolve(true);
        });
      });
      assert.ok(closed);
    } finally {
      await quick.close();
    }
  });

  describe('compressed and other transfer syntaxes, stored byte-for-byte', () => {
    const made: { name: string; file: string; ts: string }[] = [];
    before(async function () {
      if (!hasDcmtk()) {
        console.log('      skipped: DCMTK not installed');
        this.skip();
      }
      // A distinct source instance per recipe: +un keeps the SOP Instance UID, and a repeat would be a duplicate.
      let next = 0;
      const src = (): string => study.instances[next++]!.path;
      const eight = generateStudy(path.join(gen.dir, 'eight'), { instances: 1, rows: 64, columns: 64, bitsAllocated: 8 }).instances[0]!.path;
      const recipes: [string, string, string[], string, string][] = [
        ['JPEG baseline', 'dcmcjpeg', ['+eb', '+un'], Ts.jpegBaseline, eight],
        ['JPEG extended', 'dcmcjpeg', ['+ee', '+un'], Ts.jpegExtended, src()],
        ['JPEG lossless', 'dcmcjpeg', ['+el', '+un'], Ts.jpegLossless57, src()],
        ['JPEG lossless SV1', 'dcmcjpeg', ['+e1', '+un'], Ts.jpegLossless70, src()],
        ['JPEG-LS lossless', 'dcmcjpls', ['+el', '+un'], Ts.jpegLsLossless, src()],
        ['JPEG-LS near-lossless', 'dcmcjpls', ['+en', '+un'], Ts.jpegLsNear, src()],
        ['RLE', 'dcmcrle', [], Ts.rle, src()],
        ['deflate', 'dcmconv', ['+td'], Ts.deflate, src()],
        ['implicit VR LE', 'dcmconv', ['+ti'], Ts.implicitLe, src()],
        ['explicit VR BE', 'dcmconv', ['+tb'], Ts.explicitBe, src()],
      ];
      for (const [name, tool, args, ts, input] of recipes) {
        const out = path.join(gen.dir, `${name.replace(/\W+/g, '_')}.dcm`);
        const res = await runDcmtk(tool, [...args, input, out]);
        assert.equal(res.code, 0, `${tool}: ${res.stderr}`);
        made.push({ name, file: out, ts });
      }
      // DCMTK has no JPEG 2000 encoder: the generator wraps raw bytes as one fragment (fine for a byte-for-byte store).
      for (const ts of [Ts.j2kLossless, Ts.j2k]) {
        made.push({
          name: `JPEG 2000 ${ts}`,
          file: generateStudy(path.join(gen.dir, ts), { instances: 1, rows: 32, columns: 32, transferSyntaxUid: ts }).instances[0]!.path,
          ts,
        });
      }
    });

    it('each syntax is accepted as offered and the stored dataset equals what was sent', async () => {
      for (const m of made) {
        const raw = rawFromFile(m.file);
        assert.equal(raw.transferSyntaxUid, m.ts, m.name);
        if (m.ts === Ts.implicitLe) {
          // dcmjs-dimse's Client always proposes implicit and explicit LE together (and we prefer explicit):
          // storescu -xi proposes implicit only, so the file goes as it is.
          const res = await runDcmtk('storescu', ['-xi', '-aet', 'STORESCU', '-aec', 'SECONDREAD', '127.0.0.1', String(r.target.port), m.file]);
          assert.equal(res.code, 0, `${m.name}: ${res.stderr}`);
        } else {
          const res = await storeInstances(r.target, [raw]);
          assert.deepEqual(res.statuses, [SUCCESS], m.name);
        }
        const row = await findInstance(r.opened.db, raw.sopInstanceUid);
        assert.ok(row, m.name);
        assert.equal(row.transfer_syntax_uid, m.ts, m.name);
        assert.ok(raw.dataset.equals(storedDataset(r, row.file_path)), `${m.name}: bytes identical`);
        // The stored file is a valid Part 10 file DCMTK can read.
        const dump = await runDcmtk('dcmdump', ['-q', '+P', '0020,000d', r.spool.absolute(row.file_path)]);
        assert.equal(dump.code, 0, `${m.name}: ${dump.stderr}`);
      }
    });
  });

  describe('DCMTK interop', () => {
    before(function () {
      if (!hasDcmtk()) {
        console.log('      skipped: DCMTK not installed');
        this.skip();
      }
    });

    it('echoscu gets an answer', async () => {
      const res = await runDcmtk('echoscu', ['-aet', 'ECHOSCU', '-aec', 'SECONDREAD', '127.0.0.1', String(r.target.port)]);
      assert.equal(res.code, 0, res.stderr);
    });

    it('storescu stores a whole multi-series study on one association', async () => {
      const res = await runDcmtk('storescu', [
        '-aet',
        'STORESCU',
        '-aec',
        'SECONDREAD',
        '+sd',
        '+r',
        '127.0.0.1',
        String(r.target.port),
        path.join(gen.dir, 'ct'),
      ]);
      assert.equal(res.code, 0, res.stderr);
      const row = await findStudy(r.opened.db, study.studyInstanceUid);
      assert.equal(row?.instance_count, study.instances.length);
      for (const inst of study.instances) {
        const dbRow = await findInstance(r.opened.db, inst.sopInstanceUid);
        assert.ok(dbRow);
        assert.ok(rawFromFile(inst.path).dataset.equals(storedDataset(r, dbRow.file_path)));
      }
    });

    it('storescu with a calling AE that is not allowed fails', async () => {
      const res = await runDcmtk('storescu', ['-aet', 'INTRUDER', '-aec', 'SECONDREAD', '127.0.0.1', String(r.target.port), study.instances[0]!.path]);
      assert.notEqual(res.code, 0);
      assert.match(res.stderr + res.stdout, /reject/i);
      assert.equal(await findStudy(r.opened.db, study.studyInstanceUid), undefined);
    });
  });
});

/** Opens an association (A-ASSOCIATE-RQ for Verification) on a raw socket and keeps it open without a PDU more. */
async function holdAssociation(target: ScuTarget): Promise<net.Socket> {
  const sock = net.connect(target.port, target.host);
  sock.on('error', () => undefined);
  await new Promise<void>((resolve, reject) => {
    sock.once('connect', () => resolve());
    sock.once('error', reject);
  });
  sock.write(associateRq(target.callingAe, target.calledAe));
  await new Promise<void>((resolve, reject) => {
    sock.once('data', (d: Buffer) => (d[0] === 0x02 ? resolve() : reject(new Error(`expected A-ASSOCIATE-AC, got PDU type ${d[0]}`))));
  });
  return sock;
}

function associateRq(calling: string, called: string): Buffer {
  const item = (type: number, body: Buffer): Buffer => {
    const h = Buffer.alloc(4);
    h[0] = type;
    h.writeUInt16BE(body.length, 2);
    return Buffer.concat([h, body]);
  };
  const uid = (type: number, s: string): Buffer => item(type, Buffer.from(s, 'latin1'));
  const pc = item(0x20, Buffer.concat([Buffer.from([1, 0, 0, 0]), uid(0x30, '1.2.840.10008.1.1'), uid(0x40, '1.2.840.10008.1.2')]));
  const maxPdu = Buffer.alloc(4);
  maxPdu.writeUInt32BE(16384);
  const user = item(0x50, Buffer.concat([item(0x51, maxPdu), uid(0x52, '1.2.3.4')]));
  const fixed = Buffer.alloc(68);
  fixed.writeUInt16BE(1, 0);
  fixed.write(called.padEnd(16, ' '), 4, 'latin1');
  fixed.write(calling.padEnd(16, ' '), 20, 'latin1');
  const body = Buffer.concat([fixed, uid(0x10, '1.2.840.10008.3.1.1.1'), pc, user]);
  const h = Buffer.alloc(6);
  h[0] = 0x01;
  h.writeUInt32BE(body.length, 2);
  return Buffer.concat([h, body]);
}
