/**
 * `npm run chaos`: durability under SIGKILL. Runs the gateway as a child
 * process under a steady mixed load (concurrent C-STORE associations, orders
 * and final reports on several MLLP connections, flagged studies forwarded to
 * a recording reader pool, second reports posted over HTTP by two readers,
 * write-backs to a recording RIS), kills it with SIGKILL at random moments
 * (some during start-up), restarts it on the same data folder and ports, and
 * after a final restart and a drain checks that nothing acknowledged was lost:
 * every instance answered 0x0000 is on disk and in the database with the bytes
 * sent; every message answered AA is stored; every flagged study was forwarded
 * (every instance, under one identity), read, and written back with one MSH-10.
 * Resends after a kill are legitimate and counted (same SOP instance / same
 * MSH-10); a new identity for the same thing is a failure. Exits 1 when
 * anything is lost or a case did not end where it should. Loopback only.
 *
 *   npm run chaos                                  # 20 kills
 *   npm run chaos -- --kills 5 --seed 42 --duration 3 --drain 60 --keep
 *
 * --kills N (20), --seed S (random; printed, replays the kill times and the mix),
 * --duration SECONDS (mean run time between kills, 4), --drain SECONDS (90),
 * --workers N (concurrent PACS/RIS flows, 4), --hl7-connections N (3),
 * --startup-kills FRACTION (share of restarts killed again while starting, 0.15),
 * --keep (leave the temp folder: gateway.log, data/).
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import SQLite from 'better-sqlite3';
import { SimulatedRis } from './lib/sim-ris.js';
import { freePorts, GatewayChild, MixedLoad, RecordingPool, risWriteBacks, sleep, writeConfig, type ScenarioRecord } from './lib/mixed-load.js';
import { seededRandom } from './lib/seeded-random.js';
import { numberOption } from './lib/cli-args.js';

export interface ChaosOptions {
  kills: number;
  seed: number;
  durationSeconds: number;
  drainSeconds: number;
  workers: number;
  hl7Connections: number;
  startupKillRate: number;
  keep: boolean;
  out: (line: string) => void;
  /** Called after the final stop, before the checks (a test damages the data here to see the checks fail). */
  afterStop?: (dataDir: string) => void;
}

export interface ChaosResult {
  ok: boolean;
  seed: number;
  kills: number;
  startupKills: number;
  unexpectedExits: string[];
  cleanStopCode: number | null;
  wallSeconds: number;
  scenarios: { total: number; completed: number; flagged: number };
  acknowledged: { instances: number; hl7: number; secondReports: number };
  recovered: { instances: number; hl7: number; hl7StoredBeforeKill: number; secondReportsInterrupted: number };
  lost: { total: number; instances: number; hl7: number; secondReports: number; forwarded: number; writeBacks: number };
  duplicates: { poolSopInstances: number; poolExtraCopies: number; risMsh10: number; risExtraCopies: number };
  /** Final states not reached, new identities, unexpected cases: each a failure too. */
  problems: string[];
  cases: { expected: number; writtenBack: number; byState: Record<string, number> };
  dir?: string;
}

export function defaultChaosOptions(): ChaosOptions {
  return {
    kills: 20,
    seed: Math.floor(Math.random() * 2 ** 31),
    durationSeconds: 4,
    drainSeconds: 90,
    workers: 4,
    hl7Connections: 3,
    startupKillRate: 0.15,
    keep: false,
    out: (l) => void process.stdout.write(`${l}\n`),
  };
}

const FLAGGED: Record<string, string | undefined> = { oncology: 'pool', transplant: 'pool-deid', routine: undefined };

export async function runChaos(partial: Partial<ChaosOptions> = {}): Promise<ChaosResult> {
  const o = { ...defaultChaosOptions(), ...partial };
  const started = Date.now();
  const random = seededRandom(o.seed);
  const dir = mkdtempSync(path.join(tmpdir(), 'srgw-chaos-'));
  const out = o.out;
  const ris = new SimulatedRis();
  const pool = new RecordingPool(path.join(dir, 'pool'));
  await ris.start();
  await pool.start();
  const [dicom, hl7, http] = await freePorts(3);
  const ports = { dicom: dicom!, hl7: hl7!, http: http! };
  const configFile = writeConfig({ dir, ports, risPort: ris.port, poolPort: pool.port, stableAfterSeconds: 2 });
  const gw = new GatewayChild(configFile, path.join(dir, 'gateway.log'), ports.http);
  const load = new MixedLoad({ dir, ports, random, hl7Connections: o.hl7Connections });
  out(
    `chaos: seed ${o.seed}, ${o.kills} kills, ~${o.durationSeconds} s between kills, ${o.workers} flows, ${o.hl7Connections} MLLP connections; folder ${dir}`,
  );

  let kills = 0;
  let startupKills = 0;
  let cleanStopCode: number | null = null;
  const problems: string[] = [];
  let result: ChaosResult | undefined;
  try {
    /** Starts the child and waits for /healthz; a crash on its own is recorded and the child started again. */
    const startUntilReady = async () => {
      for (let tries = 0; ; tries++) {
        try {
          await gw.ready();
          return;
        } catch (err) {
          if (tries >= 3) throw err;
          out(`  ! gateway did not come up (${(err as Error).message}); starting it again`);
          await gw.kill();
          gw.spawn();
        }
      }
    };
    gw.spawn();
    await startUntilReady();
    load.startWorkers(o.workers);
    load.startReaders();

    while (kills < o.kills) {
      await sleep(o.durationSeconds * (0.25 + 1.5 * random()) * 1000);
      await gw.kill('SIGKILL');
      kills++;
      const ackedNow = load.instances.filter((i) => i.acked).length;
      out(
        `  kill ${kills}/${o.kills} at ${((Date.now() - started) / 1000).toFixed(1)} s (instances acknowledged so far ${ackedNow}, pool ${pool.received}, RIS ${ris.writeBacks})`,
      );
      await sleep(random() * 500);
      gw.spawn();
      if (kills < o.kills && random() < o.startupKillRate) {
        // Killed again while starting: recovery itself must survive a crash.
        await sleep(200 + random() * 1500);
        await gw.kill('SIGKILL');
        kills++;
        startupKills++;
        out(`  kill ${kills}/${o.kills} during start-up`);
        gw.spawn();
      }
      await startUntilReady();
    }

    if (o.kills === 0) await sleep(o.durationSeconds * 1000);
    out(`  final run: draining (up to ${o.drainSeconds} s)`);
    const drainUntil = Date.now() + o.drainSeconds * 1000;
    await load.stop(o.drainSeconds * 1000);
    const dbFile = path.join(dir, 'data', 'gateway.db');
    // Wait until every completed flagged study's case is written back, its delivery done.
    while (Date.now() < drainUntil) {
      const pending = pendingCases(dbFile, load.scenarios);
      if (pending === 0) break;
      await sleep(500);
    }
    await load.stopReaders();
    // A write-back acknowledged a moment ago is committed before the clean stop.
    await sleep(500);
    const stopped = await gw.kill('SIGTERM');
    cleanStopCode = stopped.code;
    if (stopped.code !== 0) problems.push(`the final SIGTERM stop exited with ${stopped.code ?? stopped.signal}, not 0`);
    for (const e of gw.unexpectedExits) problems.push(`the gateway exited on its own (${e})`);

    o.afterStop?.(path.join(dir, 'data'));
    result = verify({ dir, dbFile, load, pool, ris, problems });
    result.seed = o.seed;
    result.kills = kills;
    result.startupKills = startupKills;
    result.unexpectedExits = gw.unexpectedExits;
    result.cleanStopCode = cleanStopCode;
    result.wallSeconds = (Date.now() - started) / 1000;
    result.ok = result.lost.total === 0 && result.problems.length === 0;
    printResult(result, out);
    return result;
  } finally {
    await load.close();
    await gw.kill('SIGKILL');
    await pool.stop();
    await ris.stop();
    if (o.keep || !result?.ok) {
      out(`folder kept: ${dir} (gateway.log, data/)`);
      if (result) result.dir = dir;
    } else rmSync(dir, { recursive: true, force: true });
  }
}

function openReadOnly(dbFile: string): SQLite.Database | undefined {
  if (!existsSync(dbFile)) return undefined;
  try {
    return new SQLite(dbFile, { readonly: true, fileMustExist: true });
  } catch {
    return undefined;
  }
}

/** Completed flagged scenarios whose case is not yet written back (or has no case yet). */
function pendingCases(dbFile: string, scenarios: ScenarioRecord[]): number {
  const db = openReadOnly(dbFile);
  if (!db) return Number.POSITIVE_INFINITY;
  try {
    const states = new Map<string, string>();
    for (const r of db.prepare('select study_instance_uid as s, state from cases').all() as { s: string; state: string }[]) states.set(r.s, r.state);
    const waiting = scenarios.filter((s) => s.done && FLAGGED[s.kind] && states.get(s.studyInstanceUid) !== 'written-back').length;
    // An instance resent after a kill can re-open a study whose case is already written back: its delta is still
    // owed to the pool, so the drain also waits for re-opened studies to settle and for every delivery to have
    // sent all of its study's instances.
    const unsettled = db
      .prepare(
        `select (select count(*) from studies where state = 'receiving')
              + (select count(*) from deliveries d where d.state in ('pending', 'sending')
                   or (d.state = 'delivered' and d.instances_sent < (select count(*) from instances i where i.study_instance_uid = d.study_instance_uid))) as n`,
      )
      .get() as { n: number };
    return waiting + unsettled.n;
  } catch {
    return Number.POSITIVE_INFINITY;
  } finally {
    db.close();
  }
}

function sha256(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

function verify(a: { dir: string; dbFile: string; load: MixedLoad; pool: RecordingPool; ris: SimulatedRis; problems: string[] }): ChaosResult {
  const { load, pool, ris, problems } = a;
  const db = new SQLite(a.dbFile, { readonly: true, fileMustExist: true });
  const lost = { total: 0, instances: 0, hl7: 0, secondReports: 0, forwarded: 0, writeBacks: 0 };
  const lose = (kind: keyof typeof lost, what: string) => {
    lost[kind]++;
    lost.total++;
    if (problems.length < 200) problems.push(`LOST ${kind}: ${what}`);
  };
  try {
    const spoolDir = path.join(a.dir, 'data');
    const instanceRow = db.prepare('select file_path, size_bytes, sha256, study_instance_uid from instances where sop_instance_uid = ?');
    const msgRows = db.prepare("select status from hl7_messages where sender_application = 'RIS' and control_id = ?");
    const casesOf = db.prepare('select id, state from cases where study_instance_uid = ?');
    const deliveriesOf = db.prepare('select destination_id, state, instances_total, instances_sent from deliveries where case_id = ?');
    const pseudonym = db.prepare("select pseudonym from pseudonyms where destination_id = ? and kind = 'uid' and original = ?");
    const reportsOf = db.prepare('select version from second_reports where case_id = ?');
    const writeBacksOf = db.prepare("select control_id, state from outbound_messages where case_id = ? and kind = 'write-back'");
    const linked = {
      order: db.prepare('select link_state, linked_study_uid from orders where accession_number = ?'),
      report: db.prepare('select link_state, linked_study_uid from report_versions where accession_number = ?'),
    };

    const acknowledged = { instances: 0, hl7: 0, secondReports: load.reports.posted };
    const recovered = { instances: 0, hl7: 0, hl7StoredBeforeKill: 0, secondReportsInterrupted: load.reports.interrupted };
    for (const s of load.scenarios) {
      for (const i of s.instances) {
        if (!i.acked) continue;
        acknowledged.instances++;
        if (i.interrupted) recovered.instances++;
        const row = instanceRow.get(i.sopInstanceUid) as { file_path: string; size_bytes: number; sha256: string; study_instance_uid: string } | undefined;
        if (!row) {
          lose('instances', `no row for acknowledged instance ${i.sopInstanceUid}`);
          continue;
        }
        const file = path.join(spoolDir, row.file_path);
        if (!existsSync(file)) {
          lose('instances', `file missing for ${i.sopInstanceUid}`);
          continue;
        }
        const bytes = readFileSync(file);
        if (bytes.length !== row.size_bytes) lose('instances', `size ${bytes.length} != row ${row.size_bytes} for ${i.sopInstanceUid}`);
        else if (sha256(bytes) !== row.sha256) lose('instances', `sha256 of the file != row for ${i.sopInstanceUid}`);
        else if (bytes.length < i.datasetBytes || sha256(bytes.subarray(bytes.length - i.datasetBytes)) !== i.datasetSha256) {
          lose('instances', `stored dataset differs from the bytes sent for ${i.sopInstanceUid}`);
        } else if (row.study_instance_uid !== i.studyInstanceUid) lose('instances', `wrong study for ${i.sopInstanceUid}`);
      }
      for (const m of s.messages) {
        if (m.rejected) problems.push(`${m.controlId} answered ${m.rejected}`);
        if (!m.acked) continue;
        acknowledged.hl7++;
        if (m.interrupted) recovered.hl7++;
        const statuses = (msgRows.all(m.controlId) as { status: string }[]).map((r) => r.status);
        recovered.hl7StoredBeforeKill += statuses.filter((x) => x === 'duplicate').length;
        if (!statuses.includes('applied')) lose('hl7', `${m.controlId} was answered AA but is not stored as applied (${statuses.join(',') || 'no row'})`);
      }
    }

    // Final states of the completed scenarios.
    const risMessages = risWriteBacks(ris);
    const risByStudy = new Map<string, string[]>();
    for (const w of risMessages) risByStudy.set(w.studyUid, [...(risByStudy.get(w.studyUid) ?? []), w.controlId]);
    const expectedAtPool = new Set<string>();
    const knownControlIds = new Set<string>();
    const byState: Record<string, number> = {};
    let expected = 0;
    let writtenBack = 0;
    const completed = load.scenarios.filter((s) => s.done);
    for (const s of completed) {
      const cases = casesOf.all(s.studyInstanceUid) as { id: string; state: string }[];
      for (const c of cases) byState[c.state] = (byState[c.state] ?? 0) + 1;
      for (const kind of ['order', 'report'] as const) {
        const rows = linked[kind].all(s.accession) as { link_state: string; linked_study_uid: string | null }[];
        if (!rows.some((r) => r.link_state === 'linked' && r.linked_study_uid === s.studyInstanceUid))
          problems.push(`${kind} ${s.accession} not linked to its study`);
      }
      const destination = FLAGGED[s.kind];
      if (!destination) {
        if (cases.length > 0) problems.push(`routine study ${s.accession} got a case (${cases.map((c) => c.state).join(',')})`);
        continue;
      }
      expected++;
      if (cases.length !== 1) {
        problems.push(`flagged study ${s.accession} has ${cases.length} cases`);
        if (cases.length === 0) continue;
      }
      const c = cases[0]!;
      if (c.state === 'written-back') writtenBack++;
      else problems.push(`case of ${s.accession} (${s.kind}) ended ${c.state}, not written-back`);
      const deliveries = deliveriesOf.all(c.id) as { destination_id: string; state: string; instances_total: number; instances_sent: number }[];
      const acked = s.instances.filter((i) => i.acked);
      if (deliveries.length !== 1 || deliveries[0]!.destination_id !== destination || deliveries[0]!.state !== 'delivered') {
        problems.push(`case of ${s.accession}: deliveries ${JSON.stringify(deliveries)} (expected one delivered to ${destination})`);
      } else if (deliveries[0]!.instances_sent !== acked.length) {
        problems.push(`case of ${s.accession}: ${deliveries[0]!.instances_sent} instances sent of ${acked.length} acknowledged`);
      }
      for (const i of acked) {
        let uid = i.sopInstanceUid;
        if (destination === 'pool-deid') {
          const p = pseudonym.get(destination, i.sopInstanceUid) as { pseudonym: string } | undefined;
          if (!p) {
            problems.push(`no pseudonym stored for an instance of ${s.accession}`);
            continue;
          }
          uid = p.pseudonym;
        }
        expectedAtPool.add(uid);
        if (!pool.counts.has(uid)) lose('forwarded', `instance of ${s.accession} never reached the pool`);
      }
      const versions = reportsOf.all(c.id) as { version: number }[];
      if (versions.length !== 1) problems.push(`case of ${s.accession} has ${versions.length} second reports`);
      const wbs = writeBacksOf.all(c.id) as { control_id: string; state: string }[];
      for (const w of wbs) knownControlIds.add(w.control_id);
      if (wbs.length !== 1) problems.push(`case of ${s.accession} has ${wbs.length} write-backs queued`);
      const atRis = new Set(risByStudy.get(s.studyInstanceUid) ?? []);
      if (c.state === 'written-back' && atRis.size === 0) lose('writeBacks', `case of ${s.accession} is written-back but the RIS got nothing`);
      if (atRis.size > 1) problems.push(`case of ${s.accession} reached the RIS under ${atRis.size} different MSH-10s (${[...atRis].join(', ')})`);
      if (wbs.length === 1 && atRis.size === 1 && !atRis.has(wbs[0]!.control_id))
        problems.push(`case of ${s.accession}: RIS MSH-10 differs from the queued one`);
    }
    for (const caseId of load.reports.byCase.keys()) {
      if ((reportsOf.all(caseId) as unknown[]).length === 0) lose('secondReports', `second report of case ${caseId} answered 201 but not stored`);
    }
    // Identity: nothing at the pool or the RIS that is not one of ours (a resend must reuse the same UID / MSH-10).
    let poolDupUids = 0;
    let poolExtra = 0;
    // Anything a flagged study sent may legitimately be forwarded (an instance stored just before a kill, unanswered, counts too).
    const allowedAtPool = new Set(expectedAtPool);
    for (const s of load.scenarios) {
      const destination = FLAGGED[s.kind];
      if (!destination) continue;
      for (const i of s.instances) {
        const p =
          destination === 'pool-deid' ? (pseudonym.get(destination, i.sopInstanceUid) as { pseudonym: string } | undefined)?.pseudonym : i.sopInstanceUid;
        if (p) allowedAtPool.add(p);
      }
    }
    for (const [uid, n] of pool.counts) {
      if (!allowedAtPool.has(uid)) problems.push(`the pool got an instance UID that is no instance of a flagged study under its one identity (${uid})`);
      if (n > 1) {
        poolDupUids++;
        poolExtra += n - 1;
      }
    }
    const risCounts = new Map<string, number>();
    for (const w of risMessages) risCounts.set(w.controlId, (risCounts.get(w.controlId) ?? 0) + 1);
    let risDup = 0;
    let risExtra = 0;
    for (const [id, n] of risCounts) {
      if (!knownControlIds.has(id)) problems.push(`the RIS got an ORU with MSH-10 ${id} that no write-back carries`);
      if (n > 1) {
        risDup++;
        risExtra += n - 1;
      }
    }
    // Instance files on disk without a row (a crash between rename and COMMIT whose instance was never resent): informational.
    const orphans = countFiles(path.join(spoolDir, 'instances')) - (db.prepare('select count(*) as n from instances').get() as { n: number }).n;
    if (orphans !== 0) a.problems.push(`note: ${orphans} instance files on disk without a row`);

    return {
      ok: false,
      seed: 0,
      kills: 0,
      startupKills: 0,
      unexpectedExits: [],
      cleanStopCode: null,
      wallSeconds: 0,
      scenarios: { total: load.scenarios.length, completed: completed.length, flagged: expected },
      acknowledged,
      recovered,
      lost,
      duplicates: { poolSopInstances: poolDupUids, poolExtraCopies: poolExtra, risMsh10: risDup, risExtraCopies: risExtra },
      problems,
      cases: { expected, writtenBack, byState },
    };
  } finally {
    db.close();
  }
}

function countFiles(dir: string): number {
  if (!existsSync(dir)) return 0;
  let n = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) n += e.isDirectory() ? countFiles(path.join(dir, e.name)) : 1;
  return n;
}

function printResult(r: ChaosResult, out: (l: string) => void): void {
  out('');
  out(`chaos result (seed ${r.seed}): ${r.ok ? 'OK' : 'FAILED'}`);
  out(
    `  kills               ${r.kills} SIGKILL (${r.startupKills} during start-up), unexpected exits ${r.unexpectedExits.length}, final SIGTERM exit ${r.cleanStopCode}`,
  );
  out(`  scenarios           ${r.scenarios.total} started, ${r.scenarios.completed} completed, ${r.scenarios.flagged} flagged`);
  out(`  acknowledged        instances ${r.acknowledged.instances}, HL7 messages ${r.acknowledged.hl7}, second reports ${r.acknowledged.secondReports}`);
  out(
    `  recovered           instances resent after a kill ${r.recovered.instances}, HL7 resent after a kill ${r.recovered.hl7} ` +
      `(of which already stored before the kill: ${r.recovered.hl7StoredBeforeKill}), second-report POSTs cut by a kill ${r.recovered.secondReportsInterrupted}`,
  );
  out(
    `  lost                ${r.lost.total} (instances ${r.lost.instances}, HL7 ${r.lost.hl7}, second reports ${r.lost.secondReports}, forwarded ${r.lost.forwarded}, write-backs ${r.lost.writeBacks})`,
  );
  out(`  cases               ${r.cases.writtenBack}/${r.cases.expected} written back; by state ${JSON.stringify(r.cases.byState)}`);
  out(
    `  duplicates          pool: ${r.duplicates.poolSopInstances} SOP instances received more than once (${r.duplicates.poolExtraCopies} extra copies, same UID); ` +
      `RIS: ${r.duplicates.risMsh10} MSH-10s received more than once (${r.duplicates.risExtraCopies} extra, same MSH-10)`,
  );
  out(`  wall time           ${r.wallSeconds.toFixed(1)} s`);
  const failures = r.problems.filter((p) => !p.startsWith('note:'));
  for (const p of r.problems.slice(0, 40)) out(`  ${p.startsWith('note:') ? '' : '! '}${p}`);
  if (r.problems.length > 40) out(`  ... ${r.problems.length - 40} more`);
  if (failures.length === 0 && r.lost.total === 0) out('  nothing lost, every case where it should be');
}

function parseOptions(argv: string[]): Partial<ChaosOptions> {
  const { values } = parseArgs({
    args: argv,
    options: {
      kills: { type: 'string' },
      seed: { type: 'string' },
      duration: { type: 'string' },
      drain: { type: 'string' },
      workers: { type: 'string' },
      'hl7-connections': { type: 'string' },
      'startup-kills': { type: 'string' },
      keep: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(
      'usage: npm run chaos -- [--kills N] [--seed S] [--duration S] [--drain S] [--workers N] [--hl7-connections N] [--startup-kills F] [--keep]\n',
    );
    process.exit(0);
  }
  const num = numberOption;
  const o: Partial<ChaosOptions> = {};
  const set = <K extends keyof ChaosOptions>(k: K, v: ChaosOptions[K] | undefined) => {
    if (v !== undefined) o[k] = v;
  };
  set('kills', num('kills', values.kills, 0));
  set('seed', num('seed', values.seed, 0));
  set('durationSeconds', num('duration', values.duration, 0.5));
  set('drainSeconds', num('drain', values.drain, 5));
  set('workers', num('workers', values.workers, 1));
  set('hl7Connections', num('hl7-connections', values['hl7-connections'], 1));
  set('startupKillRate', num('startup-kills', values['startup-kills'], 0));
  set('keep', values.keep);
  return o;
}

// A problem in the script, not in the gateway, stops the run with a plain message (and exit 2).
if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  runChaos(parseOptions(process.argv.slice(2))).then(
    (r) => process.exit(r.ok ? 0 : 1),
    (err: unknown) => {
      process.stderr.write(`chaos: ${(err as Error).stack ?? String(err)}\n`);
      process.exit(2);
    },
  );
}
