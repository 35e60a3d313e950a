import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { expect } from 'chai';
import { sql, type Kysely } from 'kysely';
import winston from 'winston';
import YAML from 'yaml';
import { defaultConfig } from '../../src/config/schema.js';
import { migrateToLatest, openDatabase, type Db, type OpenedDatabase } from '../../src/db/database.js';
import { DicomScp } from '../../src/dicom/scp.js';
import { Spool } from '../../src/dicom/spool.js';
import { StudyService, type StudyTransactionHooks } from '../../src/studies/study.service.js';
import { generateStudy, type GeneratedStudy } from '../../scripts/lib/study-generator.js';
import { rawFromFile, storeInstances, type RawInstance, type ScuResult, type ScuTarget } from '../helpers/dicom-peers.js';
import { eventually } from '../helpers/eventually.js';
import { startGatewayProcess, writeGatewayConfig, type GatewayProcess } from '../helpers/gateway-process.js';
import { makeTempDir, testDatabaseUrl } from '../helpers/tmp.js';

const silent = winston.createLogger({ silent: true });

interface Rig {
  tmp: ReturnType<typeof makeTempDir>;
  opened: OpenedDatabase;
  spool: Spool;
  studies: StudyService;
  scp: DicomScp;
  target: ScuTarget;
  close(): Promise<void>;
}

async function rig(hooks: StudyTransactionHooks = {}, before?: (db: Db) => Promise<void>): Promise<Rig> {
  const tmp = makeTempDir('gw-group-commit-');
  const opened = openDatabase(testDatabaseUrl(path.join(tmp.dir, 'gateway.db')));
  await migrateToLatest(opened.db);
  await before?.(opened.db);
  const spool = new Spool(path.join(tmp.dir, 'spool'), 0);
  spool.open();
  const studies = new StudyService({ db: opened.db, spool, logger: silent, stableAfterSeconds: 60, hooks });
  const config = { ...defaultConfig().dicom, host: '127.0.0.1', port: 0, aeTitle: 'SECONDREAD', allowedCallers: [] };
  const scp = new DicomScp({ config, sink: studies, spool, logger: silent });
  await scp.start();
  return {
    tmp,
    opened,
    spool,
    studies,
    scp,
    target: { host: '127.0.0.1', port: scp.port, callingAe: 'PACS1', calledAe: 'SECONDREAD' },
    async close() {
      await scp.stop(2000);
      await studies.stop();
      await opened.close();
      tmp.cleanup();
    },
  };
}

/** Every file under the spool's instances/ folder (relative to the spool root). */
function placedFiles(r: Rig): string[] {
  const dir = path.join(r.spool.root, 'instances');
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((d) => d.isFile())
    .map((d) => path.relative(r.spool.root, path.join(d.parentPath, d.name)));
}

function partFiles(r: Rig): string[] {
  return readdirSync(r.spool.tmpDir).filter((f) => f.endsWith('.part'));
}

/** The instance is committed, and its file holds exactly the bytes sent. */
async function expectStored(r: Rig, raw: RawInstance): Promise<void> {
  const row = await r.opened.db
    .selectFrom('instances')
    .select(['file_path', 'sha256', 'size_bytes'])
    .where('sop_instance_uid', '=', raw.sopInstanceUid)
    .executeTakeFirst();
  expect(row, `row of ${raw.sopInstanceUid}`).to.not.equal(undefined);
  const bytes = readFileSync(r.spool.absolute(row!.file_path));
  expect(bytes.length).to.equal(Number(row!.size_bytes));
  expect(createHash('sha256').update(bytes).digest('hex')).to.equal(row!.sha256);
  expect(bytes.subarray(bytes.length - raw.dataset.length).equals(raw.dataset)).to.equal(true);
}

/** Nothing of the instance is listed: no row, no version. */
async function expectAbsent(r: Rig, raw: RawInstance): Promise<void> {
  const row = await r.opened.db.selectFrom('instances').select('sop_instance_uid').where('sop_instance_uid', '=', raw.sopInstanceUid).executeTakeFirst();
  expect(row, `row of ${raw.sopInstanceUid}`).to.equal(undefined);
  const version = await r.opened.db
    .selectFrom('instance_versions')
    .select('sop_instance_uid')
    .where('sop_instance_uid', '=', raw.sopInstanceUid)
    .executeTakeFirst();
  expect(version, `version of ${raw.sopInstanceUid}`).to.equal(undefined);
}

/** A gate the studyCreated hook of one study waits at, inside the first group's transaction. */
function gate(): { wait: Promise<void>; open(): void } {
  let open!: () => void;
  const wait = new Promise<void>((resolve) => (open = resolve));
  return { wait, open };
}

const isFailure = (s: number | undefined): boolean => s !== undefined && ((s & 0xff00) === 0xa700 || (s & 0xf000) === 0xc000);

/** One new study of one 64x64 instance per call, as its own sender would send it. */
function oneInstanceStudies(dir: string, n: number): { study: GeneratedStudy; raw: RawInstance }[] {
  return Array.from({ length: n }, (_, i) => {
    const study = generateStudy(path.join(dir, `s${i}`), { instances: 1, series: 1, rows: 64, columns: 64 });
    return { study, raw: rawFromFile(study.instances[0]!.path) };
  });
}

describe('C-STORE group commit across associations (SQLite / PostgreSQL, real sockets)', function () {
  this.timeout(120_000);
  let r: Rig | undefined;
  const gen = makeTempDir('gw-group-commit-gen-');

  afterEach(async () => {
    await r?.close();
    r = undefined;
  });
  after(() => gen.cleanup());

  it('4 associations storing at once: every instance succeeds, is in the database and on disk, and commits are shared', async () => {
    const study = generateStudy(path.join(gen.dir, 'four'), { instances: 33, series: 2, rows: 64, columns: 64 });
    const raws = study.instances.map((i) => rawFromFile(i.path));
    // The study's first instance (sent alone) holds its group's transaction open until the four senders have queued
    // an instance each behind it, so the next group holds instances of four associations: sharing is observed, not hoped for.
    const first = gate();
    let created = 0;
    r = await rig({
      studyCreated: async () => {
        created++;
        await first.wait;
      },
    });
    const rig0 = r;
    const gated = storeInstances(rig0.target, [raws[0]!]);
    await eventually(() => rig0.studies.ingestStats.batches >= 1, 'the first group to start');
    const shares: RawInstance[][] = [[], [], [], []];
    raws.slice(1).forEach((raw, i) => shares[i % 4]!.push(raw));
    const sending = shares.map((share) => storeInstances(rig0.target, share));
    await eventually(() => rig0.studies.ingestStats.depth >= 4, 'four instances queued behind the first group', 30_000);
    first.open();
    const results = [await gated, ...(await Promise.all(sending))];

    for (const res of results) {
      expect(res.error).to.equal(undefined);
      expect(res.statuses.every((s) => s === 0)).to.equal(true);
    }
    for (const raw of raws) await expectStored(rig0, raw);
    const studyRow = await rig0.opened.db.selectFrom('studies').selectAll().where('study_instance_uid', '=', study.studyInstanceUid).executeTakeFirstOrThrow();
    expect(Number(studyRow.instance_count)).to.equal(33);
    const series = await rig0.opened.db.selectFrom('series').select('instance_count').where('study_instance_uid', '=', study.studyInstanceUid).execute();
    expect(series.map((s) => Number(s.instance_count)).sort()).to.deep.equal([16, 17]);
    expect(created, 'one study created once').to.equal(1);
    expect(placedFiles(rig0)).to.have.length(33);
    expect(partFiles(rig0)).to.deep.equal([]);
    const stats = rig0.studies.ingestStats;
    expect(stats.items).to.equal(33);
    expect(stats.largestBatch).to.be.at.least(4);
    expect(stats.batches).to.be.lessThan(33);
  });

  it('a commit that fails fails every instance of its group: each sender sees a failure, none is acknowledged or listed', async () => {
    const [gateStudy, poison, ...others] = oneInstanceStudies(path.join(gen.dir, 'poison'), 5);
    const first = gate();
    r = await rig(
      {
        studyCreated: async (trx, uid) => {
          if (uid === gateStudy!.study.studyInstanceUid) await first.wait;
          // A row that breaks a deferred foreign key: accepted now, refused by COMMIT, so the whole group's commit fails.
          if (uid === poison!.study.studyInstanceUid) await sql`insert into ingest_poison (study_ref) values (${'1.2.999.no.such.study'})`.execute(trx);
        },
      },
      async (db) => {
        await (db as unknown as Kysely<Record<string, never>>).schema
          .createTable('ingest_poison')
          .addColumn('study_ref', 'text')
          .addForeignKeyConstraint('ingest_poison_study', ['study_ref'], 'studies', ['study_instance_uid'], (c) => c.deferrable().initiallyDeferred())
          .execute();
      },
    );
    const rig0 = r;
    const gated = storeInstances(rig0.target, [gateStudy!.raw]);
    await eventually(() => rig0.studies.ingestStats.batches >= 1, 'the first group to start');
    const group = [poison!, ...others].map((s) => storeInstances(rig0.target, [s.raw]));
    await eventually(() => rig0.studies.ingestStats.depth >= 4, 'four instances queued behind the first group', 30_000);
    first.open();
    const [gatedResult, ...groupResults] = (await Promise.all([gated, ...group])) as [ScuResult, ...ScuResult[]];

    expect(gatedResult.statuses).to.deep.equal([0]);
    await expectStored(rig0, gateStudy!.raw);
    expect(rig0.studies.ingestStats.largestBatch).to.equal(4);
    for (const res of groupResults) {
      expect(res.statuses).to.have.length(1);
      expect(isFailure(res.statuses[0]), `status 0x${(res.statuses[0] ?? 0).toString(16)}`).to.equal(true);
    }
    for (const s of [poison!, ...others]) {
      await expectAbsent(rig0, s.raw);
      const study = await rig0.opened.db
        .selectFrom('studies')
        .select('study_instance_uid')
        .where('study_instance_uid', '=', s.study.studyInstanceUid)
        .executeTakeFirst();
      expect(study).to.equal(undefined);
    }
    // Only the acknowledged instance's file is left; no temp file either.
    expect(placedFiles(rig0)).to.have.length(1);
    expect(partFiles(rig0)).to.deep.equal([]);

    // The queue goes on: sent again without the poisoned study, the others are stored.
    const again = await Promise.all(others.map((s) => storeInstances(rig0.target, [s.raw])));
    expect(again.map((a) => a.statuses)).to.deep.equal(others.map(() => [0]));
    for (const s of others) await expectStored(rig0, s.raw);
  });

  it('an instance that fails inside a group fails alone: the others of its group are committed', async () => {
    const [gateStudy, bad, ...others] = oneInstanceStudies(path.join(gen.dir, 'alone'), 5);
    const first = gate();
    r = await rig({
      studyCreated: async (_trx, uid) => {
        if (uid === gateStudy!.study.studyInstanceUid) await first.wait;
        if (uid === bad!.study.studyInstanceUid) throw new Error('follow-up work could not be queued');
      },
    });
    const rig0 = r;
    const gated = storeInstances(rig0.target, [gateStudy!.raw]);
    await eventually(() => rig0.studies.ingestStats.batches >= 1, 'the first group to start');
    const group = [bad!, ...others].map((s) => storeInstances(rig0.target, [s.raw]));
    await eventually(() => rig0.studies.ingestStats.depth >= 4, 'four instances queued behind the first group', 30_000);
    first.open();
    const [gatedResult, badResult, ...okResults] = (await Promise.all([gated, ...group])) as [ScuResult, ScuResult, ...ScuResult[]];

    expect(gatedResult.statuses).to.deep.equal([0]);
    expect(rig0.studies.ingestStats.largestBatch).to.equal(4);
    expect(isFailure(badResult.statuses[0])).to.equal(true);
    await expectAbsent(rig0, bad!.raw);
    expect(okResults.map((o) => o.statuses)).to.deep.equal(others.map(() => [0]));
    for (const s of [gateStudy!, ...others]) await expectStored(rig0, s.raw);
    expect(placedFiles(rig0)).to.have.length(4);
    expect(partFiles(rig0)).to.deep.equal([]);
  });
});

describe('C-STORE group commit and a SIGKILL (gateway process)', function () {
  this.timeout(120_000);
  const tmp = makeTempDir('gw-group-commit-kill-');
  let gw: GatewayProcess | undefined;

  after(async () => {
    if (gw && gw.child.exitCode === null && gw.child.signalCode === null) {
      gw.child.kill('SIGKILL');
      await gw.exited;
    }
    tmp.cleanup();
  });

  it('loses nothing acknowledged when killed while 4 associations are storing', async () => {
    const configFile = writeGatewayConfig(tmp.dir);
    const study = generateStudy(path.join(tmp.dir, 'study'), { instances: 80, series: 2, rows: 128, columns: 128 });
    const raws = study.instances.map((i) => rawFromFile(i.path));
    gw = await startGatewayProcess(configFile);
    const target = { host: '127.0.0.1', port: gw.ports.dicom, callingAe: 'PACS1', calledAe: 'SECONDREAD' };

    // Four senders, each sending its share in associations of 4 instances, until the gateway is killed.
    const acked = new Set<string>();
    const refused: string[] = [];
    const shares: RawInstance[][] = [[], [], [], []];
    raws.forEach((raw, i) => shares[i % 4]!.push(raw));
    const senders = shares.map(async (share) => {
      for (let i = 0; i < share.length; i += 4) {
        const batch = share.slice(i, i + 4);
        const res = await storeInstances(target, batch, 10_000);
        batch.forEach((raw, j) => {
          const s = res.statuses[j];
          if (s === 0) acked.add(raw.sopInstanceUid);
          else if (s !== undefined) refused.push(`0x${s.toString(16)}`);
        });
        if (res.error || res.statuses.includes(undefined)) return;
      }
    });
    await eventually(() => acked.size >= 16, 'sixteen acknowledgements', 60_000);
    gw.child.kill('SIGKILL');
    expect((await gw.exited).signal).to.equal('SIGKILL');
    await Promise.all(senders);
    expect(refused, 'nothing refused before the kill').to.deep.equal([]);
    expect(acked.size).to.be.at.least(16);

    gw = await startGatewayProcess(configFile);
    const opened = openDatabase((YAML.parse(readFileSync(configFile, 'utf8')) as { database: { url: string } }).database.url);
    try {
      for (const raw of raws.filter((x) => acked.has(x.sopInstanceUid))) {
        const row = await opened.db
          .selectFrom('instances')
          .select(['file_path', 'sha256', 'size_bytes'])
          .where('sop_instance_uid', '=', raw.sopInstanceUid)
          .executeTakeFirst();
        expect(row, `acknowledged ${raw.sopInstanceUid} has a row`).to.not.equal(undefined);
        const bytes = readFileSync(path.join(tmp.dir, 'data', row!.file_path));
        expect(bytes.length).to.equal(Number(row!.size_bytes));
        expect(createHash('sha256').update(bytes).digest('hex')).to.equal(row!.sha256);
        expect(bytes.subarray(bytes.length - raw.dataset.length).equals(raw.dataset)).to.equal(true);
      }
    } finally {
      await opened.close();
    }

    // The senders resend everything at once: all of it is stored, exactly once.
    const again = await Promise.all(shares.map((share) => storeInstances({ ...target, port: gw!.ports.dicom }, share, 60_000)));
    for (const res of again) expect(res.statuses.every((s) => s === 0)).to.equal(true);
    const res = await fetch(`http://127.0.0.1:${gw.ports.http}/api/studies/${study.studyInstanceUid}`, {
      headers: { authorization: 'Bearer test-admin-token-0123456789' },
    });
    expect(((await res.json()) as { instanceCount: number }).instanceCount).to.equal(raws.length);
  });
});
