/**
 * Ingest benchmark: the same synthetic 200-instance 512x512 16-bit CT study
 * sent by DCMTK storescu (one association, TCP_NODELAY=1) to
 *   (a) DCMTK storescp writing to a temp folder (no fsync, no database), and
 *   (b) the gateway's DicomScp with a real SQLite file and StudyService, in a
 *       child process so its peak RSS is its own.
 * The child runs tsc output (as `npm start` does), not tsx: tsx alone adds
 * about 80 MB of RSS and its loader is not what production runs. The runner
 * and the sources it imports are compiled first to node_modules/.cache/.
 * Three runs each; then one 50 MB instance for the receiver's peak RSS.
 * Parallel mode (--parallel 1,2,4,8): for each N, N storescu processes at once,
 * each sending its share of the same study (one association each), against
 * `storescp --fork` (one process per association) and against the gateway;
 * a table of instances/s, the ratio, the gateway's peak RSS and how many
 * instances shared each of its commits.
 * Usage: npx tsx scripts/bench-ingest.ts [--instances 200] [--runs 3] [--skip-large] [--cpu-prof dir] [--max-pdu bytes] [--parallel 1,2,4,8]
 */
import { fork, spawn } from 'node:child_process';
import { closeSync, fdatasyncSync, fsyncSync, mkdirSync, mkdtempSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import SQLite from 'better-sqlite3';
import { compileForBench, freePort, timed, waitForPort } from './lib/bench-util.js';
import { generateStudy } from './lib/study-generator.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, '..');
// Inside the repository so the compiled modules resolve node_modules as dist/ does.
const compiledDir = path.join(repo, 'node_modules', '.cache', 'bench-ingest');
const compiledRunner = path.join(compiledDir, 'scripts', 'lib', 'scp-process.js');

function storescu(port: number, dir: string, calledAe: string): Promise<{ code: number | null; ms: number; stderr: string }> {
  return timed('storescu', ['-aet', 'BENCH', '-aec', calledAe, '+sd', '+r', '127.0.0.1', String(port), dir]);
}

/**
 * What one benchmark run sends: the whole study folder on one association, or
 * the study's files dealt round-robin to N storescu processes started at once.
 */
type Load = { dir: string } | { shares: string[][] };

/** Sends the load; the time is from the first start to the last exit. */
async function send(load: Load, port: number, calledAe: string): Promise<number> {
  if ('dir' in load) {
    const r = await storescu(port, load.dir, calledAe);
    if (r.code !== 0) throw new Error(`storescu -> ${calledAe} failed: ${r.stderr}`);
    return r.ms;
  }
  const started = process.hrtime.bigint();
  const rs = await Promise.all(load.shares.map((files) => timed('storescu', ['-aet', 'BENCH', '-aec', calledAe, '127.0.0.1', String(port), ...files])));
  const failed = rs.find((r) => r.code !== 0);
  if (failed) throw new Error(`storescu -> ${calledAe} failed: ${failed.stderr}`);
  return Number(process.hrtime.bigint() - started) / 1e6;
}

async function viaStorescp(load: Load, work: string): Promise<number> {
  const out = mkdtempSync(path.join(work, 'storescp-'));
  const port = await freePort();
  // --fork: one process per association, as N senders need (a single storescp takes one association at a time).
  const args = 'shares' in load ? ['--fork', '-od', out, String(port)] : ['-od', out, String(port)];
  const scp = spawn('storescp', args, { env: { ...process.env, TCP_NODELAY: '1' }, stdio: 'ignore' });
  try {
    await waitForPort(port);
    return await send(load, port, 'ANY-SCP');
  } finally {
    scp.kill('SIGTERM');
    rmSync(out, { recursive: true, force: true });
  }
}

interface GatewayRun {
  ms: number;
  maxRssBytes: number;
  baselineRssBytes: number;
  instances: number;
  cpuMs: number;
  /** Group commit: commits and the instances in them. */
  commits: { batches: number; items: number; largestBatch: number };
}

async function viaGateway(load: Load, work: string): Promise<GatewayRun> {
  const dir = mkdtempSync(path.join(work, 'gateway-'));
  const execArgv = cpuProfDir ? ['--cpu-prof', `--cpu-prof-dir=${cpuProfDir}`] : [];
  const child = fork(compiledRunner, maxPdu ? [dir, maxPdu] : [dir], { execArgv, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  try {
    const ready = await new Promise<{ port: number; baselineRssBytes: number }>((resolve, reject) => {
      child.once('message', (m) => resolve(m as { port: number; baselineRssBytes: number }));
      child.once('exit', (code) => reject(new Error(`scp process exited ${code}`)));
    });
    const ms = await send(load, ready.port, 'SECONDREAD');
    const end = await new Promise<Omit<GatewayRun, 'ms' | 'baselineRssBytes'>>((resolve) => {
      child.once('message', (m) => resolve(m as Omit<GatewayRun, 'ms' | 'baselineRssBytes'>));
      child.send('stop');
    });
    return { ms, ...end, baselineRssBytes: ready.baselineRssBytes };
  } finally {
    // The runner exits by itself after reporting (and writes its CPU profile then); kill only a stuck one.
    const timer = setTimeout(() => child.kill(), 5000);
    await exited;
    clearTimeout(timer);
    rmSync(dir, { recursive: true, force: true });
  }
}

let cpuProfDir: string | undefined;
let maxPdu: string | undefined;

/**
 * What durability alone costs per instance on this disk, with no DICOM at all:
 * write one instance's bytes, fdatasync, rename into place, fsync the folder,
 * commit one row (WAL, synchronous=FULL). Done in the gateway's order (rename,
 * then both syncs, then commit) and in the naive order (data sync, rename, folder sync, commit).
 */
function durabilityFloor(work: string, bytes: number, n = 100): { gatewayOrderMs: number; naiveOrderMs: number } {
  const dir = mkdtempSync(path.join(work, 'floor-'));
  const placed = path.join(dir, 'placed');
  mkdirSync(placed);
  const db = new SQLite(path.join(dir, 'floor.db'));
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = FULL');
  db.exec('CREATE TABLE t (k TEXT PRIMARY KEY, v TEXT)');
  const insert = db.prepare('INSERT INTO t VALUES (?, ?)');
  const buf = Buffer.alloc(bytes, 0x5a);
  const syncDir = (): void => {
    const fd = openSync(placed, 'r');
    fsyncSync(fd);
    closeSync(fd);
  };
  const one = (i: number, gatewayOrder: boolean): number => {
    const t0 = process.hrtime.bigint();
    const tmp = path.join(dir, `${i}.part`);
    const fd = openSync(tmp, 'wx');
    writeSync(fd, buf);
    if (gatewayOrder) {
      renameSync(tmp, path.join(placed, `${i}.dcm`));
      fdatasyncSync(fd);
      syncDir();
    } else {
      fdatasyncSync(fd);
      renameSync(tmp, path.join(placed, `${i}.dcm`));
      syncDir();
    }
    closeSync(fd);
    db.transaction(() => insert.run(String(i), 'x'.repeat(300)))();
    return Number(process.hrtime.bigint() - t0) / 1e6;
  };
  const g: number[] = [];
  const naive: number[] = [];
  for (let i = 0; i < n; i++) {
    g.push(one(2 * i, true));
    naive.push(one(2 * i + 1, false));
  }
  db.close();
  rmSync(dir, { recursive: true, force: true });
  return { gatewayOrderMs: median(g), naiveOrderMs: median(naive) };
}

/**
 * Parallel mode: for each N, the study's files dealt round-robin to N storescu
 * processes started together, against storescp --fork and the gateway, runs
 * interleaved; medians in a table.
 */
async function parallelTable(files: string[], ns: number[], runs: number, work: string, bytes: number): Promise<void> {
  console.log(
    `study: ${files.length} CT instances 512x512x16, ${(bytes / 1e6).toFixed(1)} MB, split over N storescu processes (one association each), TCP_NODELAY=1, ${runs} runs each; medians`,
  );
  console.log('   N | storescp --fork inst/s | gateway inst/s | ratio | gateway peak RSS MB | instances a commit (largest)');
  for (const n of ns) {
    if (!Number.isInteger(n) || n < 1) throw new Error(`--parallel: ${n} is not a count of senders`);
    const shares: string[][] = Array.from({ length: n }, () => []);
    files.forEach((f, i) => shares[i % n]!.push(f));
    const scpMs: number[] = [];
    const gw: GatewayRun[] = [];
    for (let i = 0; i < runs; i++) {
      scpMs.push(await viaStorescp({ shares }, work));
      const g = await viaGateway({ shares }, work);
      if (g.instances !== files.length) throw new Error(`gateway stored ${g.instances} of ${files.length}`);
      gw.push(g);
    }
    const scpRate = files.length / (median(scpMs) / 1000);
    const gwRate = files.length / (median(gw.map((g) => g.ms)) / 1000);
    const perCommit = median(gw.map((g) => g.commits.items / Math.max(1, g.commits.batches)));
    const largest = Math.max(...gw.map((g) => g.commits.largestBatch));
    console.log(
      `${String(n).padStart(4)} | ${scpRate.toFixed(0).padStart(22)} | ${gwRate.toFixed(0).padStart(14)} | ${(gwRate / scpRate).toFixed(2).padStart(5)} | ${gw
        .map((g) => mb(g.maxRssBytes))
        .join(', ')
        .padStart(19)} | ${perCommit.toFixed(1)} (${largest})`,
    );
  }
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;
const mb = (b: number): string => (b / 1024 / 1024).toFixed(0);

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      instances: { type: 'string', default: '200' },
      runs: { type: 'string', default: '3' },
      'skip-large': { type: 'boolean', default: false },
      'cpu-prof': { type: 'string' },
      'max-pdu': { type: 'string' },
      parallel: { type: 'string' },
    },
  });
  maxPdu = values['max-pdu'];
  cpuProfDir = values['cpu-prof'] ? path.resolve(values['cpu-prof']) : undefined;
  compileForBench('bench-ingest', [path.join(repo, 'scripts', 'lib', 'scp-process.ts')]);
  const n = Number(values.instances);
  const runs = Number(values.runs);
  const work = mkdtempSync(path.join(tmpdir(), 'bench-ingest-'));
  try {
    const studyDir = path.join(work, 'study');
    const study = generateStudy(studyDir, { instances: n, series: 2, modality: 'CT', rows: 512, columns: 512, bitsAllocated: 16 });
    const bytes = study.instances.reduce((s, i) => s + i.sizeBytes, 0);
    if (values.parallel) {
      await parallelTable(
        study.instances.map((i) => i.path),
        values.parallel.split(',').map(Number),
        runs,
        work,
        bytes,
      );
      return;
    }
    console.log(`study: ${n} CT instances 512x512x16, ${(bytes / 1e6).toFixed(1)} MB, one storescu association, TCP_NODELAY=1, ${runs} runs each`);

    const scpMs: number[] = [];
    const gwRuns: GatewayRun[] = [];
    // Interleaved so drift of the machine (page cache, other load) hits both alike.
    for (let i = 0; i < runs; i++) {
      scpMs.push(await viaStorescp({ dir: studyDir }, work));
      const g = await viaGateway({ dir: studyDir }, work);
      if (g.instances !== n) throw new Error(`gateway stored ${g.instances} of ${n}`);
      gwRuns.push(g);
    }
    const line = (name: string, ms: number[]): void => {
      const m = median(ms);
      console.log(
        `${name.padEnd(22)} runs ${ms.map((x) => x.toFixed(0).padStart(5)).join(' ')} ms | median ${m.toFixed(0)} ms  ${(n / (m / 1000)).toFixed(0)} instances/s  ${(bytes / 1e6 / (m / 1000)).toFixed(0)} MB/s`,
      );
    };
    const floor = durabilityFloor(work, Math.round(bytes / n));
    console.log(
      `durability alone per instance (write + fdatasync + rename + folder fsync + commit, no DICOM): ${floor.gatewayOrderMs.toFixed(2)} ms in the gateway's order, ${floor.naiveOrderMs.toFixed(2)} ms sync-then-rename`,
    );
    console.log(
      `  => gateway floor ~ storescp + durability: ${(median(scpMs) + n * floor.gatewayOrderMs).toFixed(0)} ms, best ratio ${(median(scpMs) / (median(scpMs) + n * floor.gatewayOrderMs)).toFixed(2)}`,
    );
    line('storescp (no fsync)', scpMs);
    line(
      'gateway DicomScp',
      gwRuns.map((g) => g.ms),
    );
    const ratio = median(scpMs) / median(gwRuns.map((g) => g.ms));
    console.log(`ratio gateway/storescp (throughput): ${ratio.toFixed(2)}   (target >= 0.8)`);
    console.log(`gateway CPU per instance (user+sys, all threads): ${gwRuns.map((g) => (g.cpuMs / n).toFixed(2)).join(', ')} ms`);
    console.log(
      `gateway peak RSS: ${gwRuns.map((g) => mb(g.maxRssBytes)).join(', ')} MB (idle after start ${mb(gwRuns[0]?.baselineRssBytes ?? 0)} MB; target < 200 MB)`,
    );

    if (!values['skip-large']) {
      const largeDir = path.join(work, 'large');
      mkdirSync(largeDir);
      // 5120 x 5120 x 16 bit = 52 MB of pixel data in one instance
      const large = generateStudy(largeDir, { instances: 1, series: 1, rows: 5120, columns: 5120 });
      const g = await viaGateway({ dir: largeDir }, work);
      console.log(
        `one ${(large.instances[0]!.sizeBytes / 1e6).toFixed(0)} MB instance: ${g.ms.toFixed(0)} ms, gateway peak RSS ${mb(g.maxRssBytes)} MB (idle after start ${mb(g.baselineRssBytes)} MB)`,
      );
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
