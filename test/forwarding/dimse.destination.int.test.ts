import assert from 'node:assert/strict';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import dcmjs from 'dcmjs';
import winston from 'winston';
import { defaultConfig } from '../../src/config/schema.js';
import { migrateToLatest, openDatabase } from '../../src/db/database.js';
import { DicomScp } from '../../src/dicom/scp.js';
import { Spool } from '../../src/dicom/spool.js';
import { fileStream, part10Stream, type DestinationSender, type OutgoingInstance } from '../../src/forwarding/destination.js';
import { createDestinationSender } from '../../src/forwarding/destination.factory.js';
import { findInstance } from '../../src/studies/study.repository.js';
import { StudyService } from '../../src/studies/study.service.js';
import { generateStudy, Ts, type GeneratedStudy } from '../../scripts/lib/study-generator.js';
import { hasDcmtk, rawFromPart10, runDcmtk } from '../helpers/dicom-peers.js';
import { freePort } from '../helpers/orthanc.js';
import { startStorescp, type Storescp } from '../helpers/storescp.js';
import { makeTempDir, testDatabaseUrl } from '../helpers/tmp.js';

const silent = winston.createLogger({ silent: true });

function toOutgoing(file: string): OutgoingInstance {
  const bytes = readFileSync(file);
  const raw = rawFromPart10(bytes);
  return { sopClassUid: raw.sopClassUid, sopInstanceUid: raw.sopInstanceUid, transferSyntaxUid: raw.transferSyntaxUid, bytes };
}

function dimseSender(port: number, aeTitle = 'POOL', timeoutSeconds = 10): DestinationSender {
  return createDestinationSender(
    { id: 'pool-dimse', type: 'dimse', host: '127.0.0.1', port, aeTitle, deidentify: false, timeoutSeconds, batchSize: 100, maxAssociations: 1 },
    { callingAeTitle: 'SECONDREAD', logger: silent },
  );
}

/** PixelData bytes of a Part 10 file, decoded by dcmjs (uncompressed files only). */
function pixelData(bytes: Buffer): Buffer {
  const dict = dcmjs.data.DicomMessage.readFile(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer);
  const v = dict.dict['7FE00010']?.Value?.[0] as ArrayBuffer;
  return Buffer.from(v);
}

describe('DIMSE destination (C-STORE SCU over real sockets)', function () {
  this.timeout(60_000);
  let gen: ReturnType<typeof makeTempDir>;
  let ct: GeneratedStudy;
  let mr: GeneratedStudy;
  let rleFile: string;
  let jpegLosslessFile: string;

  before(async function () {
    if (!hasDcmtk()) {
      console.log('      skipped: DCMTK (storescp, dcmcrle, dcmcjpeg) is not installed');
      this.skip();
    }
    gen = makeTempDir('gw-dimse-gen-');
    ct = generateStudy(path.join(gen.dir, 'ct'), { instances: 6, series: 2, rows: 64, columns: 64 });
    mr = generateStudy(path.join(gen.dir, 'mr'), { modality: 'MR', instances: 3, rows: 64, columns: 64 });
    rleFile = path.join(gen.dir, 'rle.dcm');
    jpegLosslessFile = path.join(gen.dir, 'jpegll.dcm');
    const a = await runDcmtk('dcmcrle', [ct.instances[0]!.path, rleFile]);
    assert.equal(a.code, 0, a.stderr);
    const b = await runDcmtk('dcmcjpeg', ['+e1', ct.instances[1]!.path, jpegLosslessFile]);
    assert.equal(b.code, 0, b.stderr);
  });
  after(() => gen?.cleanup());

  describe('to DCMTK storescp', () => {
    let scp: Storescp | undefined;
    afterEach(async () => {
      await scp?.stop();
      scp = undefined;
    });

    it('streams instances from pieces (a header in memory, then a byte range of a file) with small PDUs: what arrives is byte-identical; a file shorter than announced fails, nothing partial is stored', async () => {
      scp = await startStorescp('POOL', ['-pdu', '4096']);
      const file = ct.instances[2]!.path;
      const bytes = readFileSync(file);
      const raw = rawFromPart10(bytes);
      const split = bytes.length - 1000;
      const streamed = await fileStream(file);
      const pieces = {
        sopClassUid: raw.sopClassUid,
        sopInstanceUid: raw.sopInstanceUid,
        transferSyntaxUid: raw.transferSyntaxUid,
        stream: part10Stream([bytes.subarray(0, split), { path: file, start: split, end: bytes.length }], streamed.datasetOffset),
      };
      const short = path.join(gen.dir, 'short.dcm');
      writeFileSync(short, bytes.subarray(0, bytes.length - 10));
      const other = rawFromPart10(readFileSync(ct.instances[3]!.path));
      const truncated = {
        sopClassUid: other.sopClassUid,
        sopInstanceUid: other.sopInstanceUid,
        transferSyntaxUid: other.transferSyntaxUid,
        // announced as the whole file, but 10 bytes are missing on disk
        stream: { ...(await fileStream(short)), length: bytes.length },
      };
      const results = await dimseSender(scp.port).send([pieces, truncated]);
      assert.deepEqual(results[0], { sopInstanceUid: raw.sopInstanceUid, ok: true });
      assert.equal(results[1]!.ok, false);
      assert.match(results[1]!.failure!.message, /gave \d+ of \d+ bytes/);
      const got = scp.received();
      assert.ok(got.get(raw.sopInstanceUid)!.subarray(-raw.dataset.length).equals(raw.dataset), 'dataset bytes identical');
      assert.equal(got.has(other.sopInstanceUid), false);
    });

    it('stores a study on one association; the received datasets are byte-identical to ours after the meta header', async () => {
      scp = await startStorescp();
      const batch = ct.instances.map((i) => toOutgoing(i.path));
      const results = await dimseSender(scp.port).send(batch);
      assert.deepEqual(
        results,
        batch.map((b) => ({ sopInstanceUid: b.sopInstanceUid, ok: true })),
      );
      const got = scp.received();
      assert.equal(got.size, batch.length);
      for (const b of batch) {
        const file = got.get(b.sopInstanceUid);
        assert.ok(file, 'received');
        assert.equal(rawFromPart10(file).transferSyntaxUid, Ts.explicitLe);
        assert.ok(rawFromPart10(file).dataset.equals(rawFromPart10(b.bytes).dataset), 'dataset bytes identical');
      }
    });

    for (const mode of [
      'by path, as plain forwarding hands them',
      'as a stream of a file range, as a de-identified header is followed by its pixels',
    ] as const) {
      it(`pydicom's vendor files (explicit and implicit LE, JPEG 2000, RLE) ${mode}: storescp +B receives each dataset byte for byte`, async function () {
        const corpus = '/usr/lib/python3/dist-packages/pydicom/data/test_files';
        if (!existsSync(corpus)) {
          console.log(`      skipped: pydicom's corpus is not installed (${corpus}; apt-get install python3-pydicom)`);
          this.skip();
        }
        // Distinct SOP Instance UIDs; several syntaxes, so each goes out on a context of its own stored syntax.
        const files = ['CT_small.dcm', 'MR_small.dcm', 'JPEG2000.dcm', 'rtplan.dcm', 'SC_rgb_rle.dcm'].map((f) => path.join(corpus, f));
        scp = await startStorescp('POOL', ['+B', '+xa']);
        const batch = await Promise.all(
          files.map(async (file) => {
            const raw = rawFromPart10(readFileSync(file));
            const ids = { sopClassUid: raw.sopClassUid, sopInstanceUid: raw.sopInstanceUid, transferSyntaxUid: raw.transferSyntaxUid };
            return { raw, instance: mode.startsWith('by path') ? { ...ids, file } : { ...ids, stream: await fileStream(file) } };
          }),
        );
        const results = await dimseSender(scp.port).send(batch.map((b) => b.instance));
        assert.deepEqual(
          results,
          batch.map((b) => ({ sopInstanceUid: b.raw.sopInstanceUid, ok: true })),
        );
        const got = scp.received();
        for (const b of batch) {
          const file = got.get(b.raw.sopInstanceUid);
          assert.ok(file, `received ${b.raw.sopInstanceUid}`);
          const received = rawFromPart10(file);
          assert.equal(received.transferSyntaxUid, b.raw.transferSyntaxUid, 'sent in its stored syntax');
          assert.ok(received.dataset.equals(b.raw.dataset), `dataset bytes identical (${b.raw.sopInstanceUid})`);
        }
      });
    }

    it('loaders are called once each, in order, just before their instance; a failing loader fails only its instance', async () => {
      scp = await startStorescp();
      const calls: number[] = [];
      const batch = ct.instances.map((inst, i) => {
        const eager = toOutgoing(inst.path);
        return {
          ...eager,
          bytes: async () => {
            calls.push(i);
            if (i === 2) throw new Error('disk gone');
            return readFileSync(inst.path);
          },
        };
      });
      const results = await dimseSender(scp.port).send(batch);
      assert.deepEqual(
        calls,
        batch.map((_, i) => i),
      );
      assert.deepEqual(
        results.map((r) => r.ok),
        batch.map((_, i) => i !== 2),
      );
      assert.equal(results[2]?.failure?.transient, false);
      assert.match(results[2]?.failure?.message ?? '', /disk gone/);
      assert.equal(scp.received().size, batch.length - 1);
    });

    it('verify(): C-ECHO ok against storescp, not ok against a closed port', async () => {
      scp = await startStorescp();
      const up = await dimseSender(scp.port).verify();
      assert.equal(up.ok, true, up.detail);
      const down = await dimseSender(await freePort()).verify();
      assert.equal(down.ok, false);
      assert.match(down.detail, /ECONNREFUSED|network|refused/i);
    });

    it('a receiver that refuses the CT SOP class: CT instances fail permanently, MR in the same batch ok', async () => {
      const cfg = path.join(gen.dir, 'mr-only.cfg');
      writeFileSync(
        cfg,
        [
          '[[TransferSyntaxes]]',
          '[Uncompressed]',
          'TransferSyntax1 = LocalEndianExplicit',
          'TransferSyntax2 = LittleEndianImplicit',
          '[[PresentationContexts]]',
          '[MrOnly]',
          'PresentationContext1 = VerificationSOPClass\\Uncompressed',
          'PresentationContext2 = MRImageStorage\\Uncompressed',
          '[[Profiles]]',
          '[MRONLY]',
          'PresentationContexts = MrOnly',
          '',
        ].join('\n'),
      );
      scp = await startStorescp('POOL', ['-xf', cfg, 'MRONLY']);
      const batch = [
        toOutgoing(ct.instances[0]!.path),
        toOutgoing(mr.instances[0]!.path),
        toOutgoing(ct.instances[2]!.path),
        toOutgoing(mr.instances[1]!.path),
      ];
      const t0 = Date.now();
      const results = await dimseSender(scp.port).send(batch);
      assert.ok(Date.now() - t0 < 5000, 'no waiting for responses that never come');
      assert.deepEqual(
        results.map((r) => r.ok),
        [false, true, false, true],
      );
      for (const r of [results[0]!, results[2]!]) {
        assert.equal(r.failure?.transient, false);
        assert.match(r.failure?.message ?? '', /does not accept SOP class 1\.2\.840\.10008\.5\.1\.4\.1\.1\.2\b/);
      }
      assert.deepEqual([...scp.received().keys()].sort(), [batch[1]!.sopInstanceUid, batch[3]!.sopInstanceUid].sort());
    });

    it('compressed files (RLE, JPEG lossless) to a receiver that accepts them: sent byte for byte', async () => {
      scp = await startStorescp('POOL', ['+xa']);
      const batch = [toOutgoing(rleFile), toOutgoing(jpegLosslessFile), toOutgoing(ct.instances[2]!.path)];
      assert.equal(batch[0]!.transferSyntaxUid, Ts.rle);
      assert.equal(batch[1]!.transferSyntaxUid, Ts.jpegLossless70);
      const results = await dimseSender(scp.port).send(batch);
      assert.ok(
        results.every((r) => r.ok),
        JSON.stringify(results),
      );
      const got = scp.received();
      for (const b of batch) {
        const file = got.get(b.sopInstanceUid)!;
        assert.equal(rawFromPart10(file).transferSyntaxUid, b.transferSyntaxUid);
        assert.ok(rawFromPart10(file).dataset.equals(rawFromPart10(b.bytes).dataset), `${b.transferSyntaxUid} byte-identical`);
      }
    });

    it('compressed files to a receiver that accepts only uncompressed: transcoded losslessly (same pixels), never a hang', async () => {
      scp = await startStorescp(); // storescp's default: uncompressed syntaxes only
      const batch = [toOutgoing(rleFile), toOutgoing(jpegLosslessFile)];
      const t0 = Date.now();
      const results = await dimseSender(scp.port).send(batch);
      assert.ok(Date.now() - t0 < 8000);
      assert.ok(
        results.every((r) => r.ok),
        JSON.stringify(results),
      );
      const got = scp.received();
      for (const [i, b] of batch.entries()) {
        const file = got.get(b.sopInstanceUid)!;
        assert.ok(file, 'received');
        assert.ok([Ts.explicitLe, Ts.implicitLe].includes(rawFromPart10(file).transferSyntaxUid as never));
        const original = readFileSync(ct.instances[i]!.path);
        assert.ok(pixelData(file).equals(pixelData(original)), 'pixels equal the uncompressed original');
      }
    });

    it('an explicit-LE file to a receiver that accepts only implicit LE: re-encoded, content preserved', async () => {
      const cfg = path.join(gen.dir, 'implicit-only.cfg');
      writeFileSync(
        cfg,
        [
          '[[TransferSyntaxes]]',
          '[Implicit]',
          'TransferSyntax1 = LittleEndianImplicit',
          '[[PresentationContexts]]',
          '[Ctx]',
          'PresentationContext1 = VerificationSOPClass\\Implicit',
          'PresentationContext2 = CTImageStorage\\Implicit',
          '[[Profiles]]',
          '[IMPLICIT]',
          'PresentationContexts = Ctx',
          '',
        ].join('\n'),
      );
      scp = await startStorescp('POOL', ['-xf', cfg, 'IMPLICIT']);
      const b = toOutgoing(ct.instances[3]!.path);
      const [r] = await dimseSender(scp.port).send([b]);
      assert.equal(r?.ok, true, r?.failure?.message);
      const file = scp.received().get(b.sopInstanceUid)!;
      assert.equal(rawFromPart10(file).transferSyntaxUid, Ts.implicitLe);
      assert.ok(pixelData(file).equals(pixelData(b.bytes)));
    });

    it('storescp refusing every association: permanent failure of the batch, verify() not ok', async () => {
      scp = await startStorescp('POOL', ['--refuse']);
      const batch = ct.instances.slice(0, 2).map((i) => toOutgoing(i.path));
      const results = await dimseSender(scp.port).send(batch);
      assert.ok(
        results.every((r) => !r.ok && r.failure?.transient === false && /association rejected/.test(r.failure.message)),
        JSON.stringify(results),
      );
      assert.equal((await dimseSender(scp.port).verify()).ok, false);
    });
  });

  describe('to our own DicomScp (real SQLite StudyService)', () => {
    let tmp: ReturnType<typeof makeTempDir>;
    let opened: ReturnType<typeof openDatabase>;
    let spool: Spool;
    let scp: DicomScp;

    beforeEach(async () => {
      tmp = makeTempDir('gw-dimse-scp-');
      opened = openDatabase(testDatabaseUrl(path.join(tmp.dir, 'gateway.db')));
      await migrateToLatest(opened.db);
      spool = new Spool(path.join(tmp.dir, 'spool'), 0);
      spool.open();
      const studies = new StudyService({ db: opened.db, spool, logger: silent, stableAfterSeconds: 60 });
      const config = { ...defaultConfig().dicom, host: '127.0.0.1', port: 0, aeTitle: 'POOL', allowedCallers: ['SECONDREAD'] };
      scp = new DicomScp({ config, sink: studies, spool, logger: silent });
      await scp.start();
    });
    afterEach(async () => {
      await scp.stop(2000);
      await opened.close();
      tmp.cleanup();
    });

    it('stores CT and MR instances as sent; rows committed; file datasets byte-identical', async () => {
      const batch = [...ct.instances.map((i) => toOutgoing(i.path)), ...mr.instances.map((i) => toOutgoing(i.path))];
      const results = await dimseSender(scp.port).send(batch);
      assert.ok(
        results.every((r) => r.ok),
        JSON.stringify(results.find((r) => !r.ok)),
      );
      for (const b of batch) {
        const row = await findInstance(opened.db, b.sopInstanceUid);
        assert.ok(row, 'row committed');
        const stored = readFileSync(spool.absolute(row.file_path));
        assert.ok(rawFromPart10(stored).dataset.equals(rawFromPart10(b.bytes).dataset));
      }
      const verify = await dimseSender(scp.port).verify();
      assert.equal(verify.ok, true, verify.detail);
    });

    it('an unknown calling AE is rejected: permanent failure naming the reason', async () => {
      const sender = createDestinationSender(
        {
          id: 'x',
          type: 'dimse',
          host: '127.0.0.1',
          port: scp.port,
          aeTitle: 'POOL',
          callingAeTitle: 'STRANGER',
          deidentify: false,
          timeoutSeconds: 10,
          batchSize: 10,
          maxAssociations: 1,
        },
        { callingAeTitle: 'SECONDREAD', logger: silent },
      );
      const results = await sender.send([toOutgoing(ct.instances[0]!.path)]);
      assert.equal(results[0]?.ok, false);
      assert.equal(results[0]?.failure?.transient, false);
      assert.match(results[0]?.failure?.message ?? '', /association rejected/);
    });

    it('the receiver out of resources (0xA700): transient', async () => {
      // the spool reports no room: the real SCP answers 0xA700
      (spool as unknown as { hasRoom(): boolean }).hasRoom = () => false;
      const results = await dimseSender(scp.port).send([toOutgoing(ct.instances[0]!.path)]);
      assert.equal(results[0]?.ok, false);
      assert.equal(results[0]?.failure?.transient, true);
      assert.match(results[0]?.failure?.message ?? '', /0xA7/);
    });
  });

  describe('peer down or silent', () => {
    it('connection refused: every instance fails transiently; verify() not ok', async () => {
      const port = await freePort();
      const sender = dimseSender(port);
      const batch = ct.instances.slice(0, 3).map((i) => toOutgoing(i.path));
      const results = await sender.send(batch);
      assert.equal(results.length, 3);
      assert.ok(
        results.every((r, i) => r.sopInstanceUid === batch[i]!.sopInstanceUid && !r.ok && r.failure?.transient === true),
        JSON.stringify(results),
      );
      assert.equal((await sender.verify()).ok, false);
    });

    it('a peer that accepts TCP and never answers: transient timeout, no hang', async () => {
      const sockets: net.Socket[] = [];
      const server = net.createServer((s) => {
        sockets.push(s);
        s.on('data', () => undefined);
      });
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
      const port = (server.address() as net.AddressInfo).port;
      try {
        const t0 = Date.now();
        const results = await dimseSender(port, 'POOL', 1).send([toOutgoing(ct.instances[0]!.path)]);
        const took = Date.now() - t0;
        assert.ok(took < 6000, `took ${took} ms`);
        assert.equal(results[0]?.ok, false);
        assert.equal(results[0]?.failure?.transient, true);
      } finally {
        sockets.forEach((s) => s.destroy());
        server.close();
      }
    });

    it('a file that is not Part 10: permanent for that instance, others still sent', async () => {
      const scp = await startStorescp();
      try {
        const good = toOutgoing(ct.instances[4]!.path);
        const bad: OutgoingInstance = { ...good, sopInstanceUid: '2.25.1', bytes: Buffer.from('not dicom') };
        const results = await dimseSender(scp.port).send([bad, good]);
        assert.equal(results[0]?.ok, false);
        assert.equal(results[0]?.failure?.transient, false);
        assert.equal(results[1]?.ok, true);
      } finally {
        await scp.stop();
      }
    });
  });
});
