import { createHash } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import type { GatewayConfig } from '../../src/config/schema.js';
import type { ReceivedInstance } from '../../src/dicom/instance-record.js';
import { Spool } from '../../src/dicom/spool.js';
import { hl7StudyEnricher } from '../../src/hl7/hl7.enricher.js';
import { messagesRouter } from '../../src/http/messages.routes.js';
import { HttpServer } from '../../src/http/server.js';
import { studiesRouter } from '../../src/http/studies.routes.js';
import { StudyService } from '../../src/studies/study.service.js';
import { RawMllpPeer, silentLogger, startHl7Stack, type Hl7Stack } from './hl7-peers.js';

export interface Hl7StudyFixture {
  stack: Hl7Stack;
  /** A raw MLLP client connected to the stack's listener. */
  peer: RawMllpPeer;
  spool: Spool;
  studies: StudyService;
  /** The studies and messages API over the stack's database. */
  http: HttpServer;
  /** A CT CHEST instance written to the spool, ready for `studies.storeInstance`. */
  instance(studyUid: string, accession: string | null, patientId: string | null): ReceivedInstance;
  /** Waits for the reconciliations onStudyCreated started (they run after the ingest commit, on their own). */
  settle(): Promise<void>;
  stop(): Promise<void>;
}

let n = 0;

/**
 * The HL7 listener and inbound service, a StudyService over the same database
 * and the HTTP API, wired as the gateway wires them: a new study picks up what
 * was waiting for it.
 */
export async function startHl7StudyFixture(o: { tokens: GatewayConfig['auth']['tokens']; hl7?: Partial<GatewayConfig['hl7']> }): Promise<Hl7StudyFixture> {
  const stack = await startHl7Stack(o.hl7);
  const peer = await RawMllpPeer.connect(stack.port);
  const spool = new Spool(stack.dir, 0);
  spool.open();
  const studies = new StudyService({ db: stack.opened.db, spool, logger: silentLogger, stableAfterSeconds: 60 });
  const reconciling = new Set<Promise<void>>();
  studies.subscribe({
    onStudyCreated: (uid) => {
      const r = stack.service.reconcileStudy(uid);
      reconciling.add(r);
      return r.finally(() => reconciling.delete(r));
    },
  });
  const http = new HttpServer({
    config: { enabled: true, host: '127.0.0.1', port: 0, maxBodyBytes: 1024 * 1024 },
    tokens: o.tokens,
    logger: silentLogger,
    health: () => ({ ok: true, details: {} }),
    apiRouters: [studiesRouter(stack.opened.db, [hl7StudyEnricher]), messagesRouter(stack.opened.db)],
  });
  await http.start();

  return {
    stack,
    peer,
    spool,
    studies,
    http,
    instance(studyUid, accession, patientId) {
      const tmpPath = spool.newTmpPath();
      const bytes = Buffer.from(`instance ${n++}`);
      writeFileSync(tmpPath, bytes);
      return {
        sopClassUid: '1.2.840.10008.5.1.4.1.1.2',
        sopInstanceUid: `${studyUid}.1.${n}`,
        transferSyntaxUid: '1.2.840.10008.1.2.1',
        studyInstanceUid: studyUid,
        seriesInstanceUid: `${studyUid}.1`,
        accessionNumber: accession,
        patientId,
        modality: 'CT',
        studyDescription: 'CT CHEST',
        seriesDescription: null,
        bodyPartExamined: 'CHEST',
        studyDate: '20260301',
        referringPhysicianName: null,
        seriesNumber: 1,
        instanceNumber: 1,
        tmpPath,
        sizeBytes: bytes.length,
        sha256: createHash('sha256').update(bytes).digest('hex'),
        callingAe: 'PACS1',
      };
    },
    async settle() {
      for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
      // SQLite: their transaction is queued behind this one; PostgreSQL runs them side by side, so wait for them.
      await stack.opened.db.transaction().execute(async () => undefined);
      await Promise.allSettled([...reconciling]);
    },
    async stop() {
      peer.destroy();
      await http.stop();
      await studies.stop();
      await stack.stop();
    },
  };
}
