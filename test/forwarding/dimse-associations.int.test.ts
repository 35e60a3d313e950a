import { expect } from 'chai';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import winston from 'winston';
import { defaultConfig } from '../../src/config/schema.js';
import { migrateToLatest, openDatabase } from '../../src/db/database.js';
import type { InstanceSink, ReceivedInstance } from '../../src/dicom/instance-record.js';
import { DicomScp } from '../../src/dicom/scp.js';
import { Spool } from '../../src/dicom/spool.js';
import {
  fileStream,
  type DestinationSender,
  type InstanceResult,
  type SendableInstance,
  type StreamedOutgoingInstance,
} from '../../src/forwarding/destination.js';
import { createDestinationSender } from '../../src/forwarding/destination.factory.js';
import { findInstance } from '../../src/studies/study.repository.js';
import { StudyService } from '../../src/studies/study.service.js';
import { generateStudy, type GeneratedStudy } from '../../scripts/lib/study-generator.js';
import { hasDcmtk, rawFromPart10 } from '../helpers/dicom-peers.js';
import { startStorescp } from '../helpers/storescp.js';
import { makeTempDir, testDatabaseUrl } from '../helpers/tmp.js';

const silent = winston.createLogger({ silent: true });

function sender(port: number, maxAssociations: number): DestinationSender {
  return createDestinationSender(
    { id: 'pool', type: 'dimse', host: '127.0.0.1', port, aeTitle: 'POOL', deidentify: false, timeoutSeconds: 10, batchSize: 100, maxAssociations },
    { callingAeTitle: 'SECONDREAD', logger: silent },
  );
}

function expectAllStored(results: readonly InstanceResult[]): void {
  const failed = results.filter((r) => !r.ok);
  expect(failed, JSON.stringify(failed)).to.deep.equal([]);
}

/** Instances as the forwarding service hands them over: streamed from the stored files. */
async function streamed(study: GeneratedStudy): Promise<StreamedOutgoingInstance[]> {
  return Promise.all(
    study.instances.map(async (i) => {
      const raw = rawFromPart10(readFileSync(i.path));
      return { sopClassUid: raw.sopClassUid, sopInstanceUid: raw.sopInstanceUid, transferSyntaxUid: raw.transferSyntaxUid, stream: await fileStream(i.path) };
    }),
  );
}

/**
 * The real StudyService behind a sink that counts stores in progress at once (one per association at most, since
 * each association has one request outstanding). With `gather` set, the first store waits until that many are in
 * progress (or a second passes, so that a sender that never opens them fails the count instead of hanging).
 */
class CountingSink implements InstanceSink {
  inFlight = 0;
  mostAtOnce = 0;
  stored: string[] = [];
  gather = 1;
  onStored: ((n: number) => void) | undefined;
  private gathered: (() => void)[] = [];
  constructor(private readonly inner: StudyService) {}
  async storeInstance(instance: ReceivedInstance): ReturnType<InstanceSink['storeInstance']> {
    this.inFlight++;
    this.mostAtOnce = Math.max(this.mostAtOnce, this.inFlight);
    try {
      if (this.inFlight >= this.gather) {
        this.gather = 1;
        this.gathered.splice(0).forEach((release) => release());
      } else {
        await new Promise<void>((resolve) => {
          this.gathered.push(resolve);
          setTimeout(resolve, 1000);
        });
      }
      const out = await this.inner.storeInstance(instance);
      this.stored.push(instance.sopInstanceUid);
      this.onStored?.(this.stored.length);
      return out;
    } finally {
      this.inFlight--;
    }
  }
}

describe('DIMSE destination: several associations per batch (maxAssociations)', function () {
  this.timeout(60_000);
  let tmp: ReturnType<typeof makeTempDir>;
  let opened: ReturnType<typeof openDatabase>;
  let sink: CountingSink;
  let scp: DicomScp;
  let study: GeneratedStudy;

  async function startScp(maxAssociations = 64): Promise<void> {
    opened = openDatabase(testDatabaseUrl(path.join(tmp.dir, 'gateway.db')));
    await migrateToLatest(opened.db);
    const spool = new Spool(path.join(tmp.dir, 'spool'), 0);
    spool.open();
    sink = new CountingSink(new StudyService({ db: opened.db, spool, logger: silent, stableAfterSeconds: 60 }));
    const config = { ...defaultConfig().dicom, host: '127.0.0.1', port: 0, aeTitle: 'POOL', allowedCallers: ['SECONDREAD'], maxAssociations };
    scp = new DicomScp({ config, sink, spool, logger: silent });
    await scp.start();
  }

  beforeEach(() => {
    tmp = makeTempDir('gw-dimse-assoc-');
    study = generateStudy(path.join(tmp.dir, 'study'), { instances: 12, series: 2, rows: 64, columns: 64 });
  });
  afterEach(async () => {
    await scp?.stop(2000);
    await opened?.close();
    tmp.cleanup();
  });

  it('three associations store a batch at once: every instance stored once, three stores in progress together; one association never overlaps', async () => {
    await startScp();
    const batch = await streamed(study);
    sink.gather = 3;
    const results = await sender(scp.port, 3).send(batch);
    expect(results.map((r) => r.sopInstanceUid)).to.deep.equal(batch.map((b) => b.sopInstanceUid));
    expectAllStored(results);
    expect(sink.mostAtOnce).to.equal(3);
    expect([...sink.stored].sort()).to.deep.equal(batch.map((b) => b.sopInstanceUid).sort());
    for (const b of batch) expect(await findInstance(opened.db, b.sopInstanceUid), b.sopInstanceUid).to.not.equal(undefined);

    sink.mostAtOnce = 0;
    const again = await sender(scp.port, 1).send(batch);
    expect(again.every((r) => r.ok)).to.equal(true);
    expect(sink.mostAtOnce).to.equal(1);
  });

  it('a receiver that takes one association at a time: the ones it rejects leave their share to the one it took, nothing fails', async () => {
    await startScp(1);
    const batch = await streamed(study);
    const results = await sender(scp.port, 4).send(batch);
    expectAllStored(results);
    expect(sink.mostAtOnce).to.equal(1);
    expect(sink.stored).to.have.length(batch.length);
  });

  it('a stop (the case cancelled) seen by one association stops all: nothing is sent after it but what was already in flight, and each result says what happened', async () => {
    await startScp();
    const batch = await streamed(study);
    let cancelled = false;
    let checks = 0;
    for (const b of batch)
      b.beforeSend = () => {
        checks++;
        return cancelled ? Promise.reject(new Error('the case was cancelled')) : Promise.resolve();
      };
    sink.onStored = (n) => {
      if (n === 4) cancelled = true;
    };
    const results = await sender(scp.port, 3).send(batch);
    const ok = results.filter((r) => r.ok).map((r) => r.sopInstanceUid);
    // At the cancel each association has at most one instance past its check (in flight).
    expect(sink.stored.length).to.be.within(4, 4 + 3);
    expect([...ok].sort()).to.deep.equal([...sink.stored].sort());
    for (const r of results.filter((x) => !x.ok)) {
      expect(r.failure?.transient).to.equal(true);
      expect(r.failure?.message).to.match(/stopped before sending: the case was cancelled/);
    }
    expect(results.filter((r) => !r.ok).length).to.be.greaterThan(0);
    expect(checks).to.be.lessThan(batch.length + 3);
  });

  it('an association that breaks mid-batch: only its instance in flight fails (transient); the one it had read ahead goes over another association', async () => {
    await startScp();
    // A proxy in front of the SCP cuts the first connection once about 30 KB went through it (a few instances in).
    let first = true;
    const proxy = net.createServer((client) => {
      const cut = first;
      first = false;
      let through = 0;
      const upstream = net.connect(scp.port, '127.0.0.1');
      client.on('data', (d: Buffer) => {
        through += d.length;
        if (cut && through > 30_000) {
          client.destroy();
          upstream.destroy();
          return;
        }
        upstream.write(d);
      });
      upstream.on('data', (d: Buffer) => client.write(d));
      client.on('error', () => upstream.destroy());
      upstream.on('error', () => client.destroy());
      client.on('close', () => upstream.destroy());
      upstream.on('close', () => client.destroy());
    });
    await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', () => r()));
    try {
      const batch = await streamed(study);
      const results = await sender((proxy.address() as net.AddressInfo).port, 2).send(batch);
      const failed = results.filter((r) => !r.ok);
      expect(failed, JSON.stringify(failed)).to.have.length(1);
      expect(failed[0]?.failure?.transient).to.equal(true);
      const ok = results.filter((r) => r.ok).map((r) => r.sopInstanceUid);
      for (const uid of ok) expect(sink.stored, uid).to.include(uid);
    } finally {
      await new Promise((r) => proxy.close(r));
    }
  });

  it('stored files handed by path (as forwarding hands them): each read when its turn comes and stored as on disk; one that cannot be read fails alone, permanently, without its path', async () => {
    await startScp();
    const files: SendableInstance[] = study.instances.map((i) => {
      const raw = rawFromPart10(readFileSync(i.path));
      return { sopClassUid: raw.sopClassUid, sopInstanceUid: raw.sopInstanceUid, transferSyntaxUid: raw.transferSyntaxUid, file: i.path };
    });
    files[5] = { ...files[5]!, file: path.join(tmp.dir, 'gone', '1.2.3.dcm') } as SendableInstance;
    const results = await sender(scp.port, 2).send(files);
    expect(results.map((r) => r.ok)).to.deep.equal(files.map((_, i) => i !== 5));
    expect(results[5]?.failure?.transient).to.equal(false);
    expect(results[5]?.failure?.message).to.match(/could not read the instance: ENOENT/);
    expect(results[5]?.failure?.message).to.not.match(/gone|1\.2\.3/);
    for (const [i, f] of files.entries()) {
      if (i === 5) continue;
      const row = await findInstance(opened.db, f.sopInstanceUid);
      expect(row, f.sopInstanceUid).to.not.equal(undefined);
      const stored = rawFromPart10(readFileSync(path.join(tmp.dir, 'spool', row!.file_path)));
      expect(stored.dataset.equals(rawFromPart10(readFileSync(study.instances[i]!.path)).dataset)).to.equal(true);
    }
  });

  it('DCMTK storescp --fork: four associations deliver every file, each dataset byte for byte', async function () {
    if (!hasDcmtk()) {
      console.log('      skipped: DCMTK (storescp) is not installed');
      return this.skip();
    }
    const peer = await startStorescp('POOL', ['--fork']);
    try {
      const batch = await streamed(study);
      const results = await sender(peer.port, 4).send(batch);
      expectAllStored(results);
      const received = peer.received();
      expect(received.size).to.equal(batch.length);
      for (const i of study.instances) {
        const ours = rawFromPart10(readFileSync(i.path));
        expect(rawFromPart10(received.get(ours.sopInstanceUid)!).dataset.equals(ours.dataset), ours.sopInstanceUid).to.equal(true);
      }
    } finally {
      await peer.stop();
    }
  });
});
