/**
 * Scale-out benchmark: forwarding and case throughput with one gateway
 * instance vs two on PostgreSQL, and SQLite vs PostgreSQL with one instance.
 *
 * Each scenario runs real gateway processes (src/main.ts through tsx, as the
 * tests do) sharing one database and one spool folder, and a recording pool
 * SCP (in this process) behind `--destinations` destination ids:
 *   1. `--studies` synthetic studies (`--instances` each, 64x64) are C-STOREd,
 *      alternately to each instance, and become stable (no rule flags them);
 *   2. cases: a manual second-read request per study (POST /api/cases, 8 in
 *      flight, spread over the instances and destinations): cases/s;
 *   3. forwarding: from the first request until every case is awaiting-read
 *      (every instance delivered): instances/s. Each SOP instance must reach the
 *      pool exactly once, or the run is reported as failed.
 *
 * Usage: npx tsx scripts/bench-scale.ts [--studies 40] [--instances 10] [--destinations 4]
 *          [--pg postgres://gw:gw@127.0.0.1:5432/postgres] [--only sqlite-1,pg-1,pg-2]
 * The PostgreSQL role must be allowed to CREATE DATABASE (a fresh one per scenario, dropped after).
 */
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { generateStudy, type GeneratedStudy } from './lib/study-generator.js';
import { storeFiles } from '../test/helpers/dicom-peers.js';
import { startGatewayProcess, writeGatewayConfig, type GatewayProcess } from '../test/helpers/gateway-process.js';
import { PoolScp } from '../test/helpers/pool-scp.js';

const { values: args } = parseArgs({
  options: {
    studies: { type: 'string', default: '40' },
    instances: { type: 'string', default: '10' },
    destinations: { type: 'string', default: '4' },
    pg: { type: 'string', default: process.env['GATEWAY_TEST_DATABASE_URL'] ?? 'postgres://gw:gw@127.0.0.1:5432/postgres' },
    only: { type: 'string', default: 'sqlite-1,pg-1,pg-2' },
  },
});
const STUDIES = Number(args.studies);
const INSTANCES = Number(args.instances);
const DESTINATIONS = Number(args.destinations);
const TOKEN = 'bench-admin-token-0123456789abcdef';

async function admin(sqlText: string): Promise<void> {
  const c = new pg.Client({ connectionString: args.pg });
  await c.connect();
  try {
    await c.query(sqlText);
  } finally {
    await c.end();
  }
}

function dbUrl(name: string): string {
  const u = new URL(args.pg!);
  u.pathname = `/${name}`;
  return u.toString();
}

async function api(base: string, method: string, p: string, body?: unknown): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(`${base}${p}`, {
    method,
    headers: { authorization: `Bearer ${TOKEN}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

async function until(what: string, check: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Runs `n` async jobs with at most `width` in flight. */
async function pooled<T>(n: number, width: number, job: (i: number) => Promise<T>): Promise<T[]> {
  const out: T[] = new Array<T>(n);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(width, n) }, async () => {
      for (;;) {
        const i = next++;
        if (i >= n) return;
        out[i] = await job(i);
      }
    }),
  );
  return out;
}

interface Result {
  scenario: string;
  casesPerSecond: number;
  caseSeconds: number;
  forwardSeconds: number;
  instancesPerSecond: number;
  duplicates: number;
  missing: number;
}

async function scenario(name: string, kind: 'sqlite' | 'postgres', instances: number, studies: GeneratedStudy[], work: string): Promise<Result> {
  const dir = mkdtempSync(path.join(work, `${name}-`));
  const dbName = `gw_bench_${process.pid}_${name.replace(/\W/g, '_')}`;
  let url = `sqlite:${path.join(dir, 'data', 'gateway.db')}`;
  if (kind === 'postgres') {
    await admin(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`);
    await admin(`CREATE DATABASE ${dbName}`);
    url = dbUrl(dbName);
  }
  const pool = new PoolScp(path.join(dir, 'pool'), 'POOL');
  await pool.start();
  const procs: GatewayProcess[] = [];
  try {
    for (let i = 0; i < instances; i++) {
      const own = path.join(dir, `gw${i}`);
      mkdirSync(own, { recursive: true });
      const file = writeGatewayConfig(own, {
        instanceId: `bench-${i}`,
        dicom: { host: '127.0.0.1', port: 0, aeTitle: 'SECONDREAD', allowedCallers: [], stableAfterSeconds: 0.5 },
        storage: { dir: path.join(dir, 'data'), minFreeMb: 0 },
        database: { url },
        destinations: Array.from({ length: DESTINATIONS }, (_, d) => ({
          id: `pool${d + 1}`,
          type: 'dimse',
          host: '127.0.0.1',
          port: pool.port,
          aeTitle: 'POOL',
          batchSize: 10,
        })),
        forwarding: { pollIntervalSeconds: 0.2 },
        // No rule flags anything: every case comes from the timed manual requests.
        rules: [],
        auth: { tokens: [{ token: TOKEN, role: 'admin', name: 'bench' }] },
        log: { level: 'info', format: 'json' },
      });
      // One after another: the first migrates the database.
      procs.push(await startGatewayProcess(file));
    }
    const bases = procs.map((p) => `http://127.0.0.1:${p.ports.http}`);
    await pooled(studies.length, 4, async (i) => {
      const p = procs[i % procs.length]!;
      const r = await storeFiles(
        { host: '127.0.0.1', port: p.ports.dicom, callingAe: 'PACS1', calledAe: 'SECONDREAD' },
        studies[i]!.instances.map((x) => x.path),
      );
      if (!r.statuses.every((s) => s === 0)) throw new Error('C-STORE failed');
    });
    await until(
      'stable studies',
      async () => ((await api(bases[0]!, 'GET', '/api/studies?state=stable&limit=1000')).body['items'] as unknown[]).length === studies.length,
      60_000,
    );

    if (process.env['BENCH_PSS'] && kind === 'postgres') await admin('select pg_stat_statements_reset()');
    const t0 = performance.now();
    const caseIds = await pooled(studies.length, 8, async (i) => {
      const r = await api(bases[i % bases.length]!, 'POST', '/api/cases', {
        studyInstanceUid: studies[i]!.studyInstanceUid,
        reason: 'bench',
        destinationId: `pool${(i % DESTINATIONS) + 1}`,
      });
      if (r.status !== 201) throw new Error(`POST /api/cases: ${r.status} ${JSON.stringify(r.body)}`);
      return r.body['id'] as string;
    });
    const t1 = performance.now();
    await until(
      'every case awaiting-read',
      async () => {
        const r = await api(bases[0]!, 'GET', '/api/cases?state=awaiting-read&limit=1000');
        return (r.body['items'] as unknown[]).length === caseIds.length;
      },
      300_000,
    );
    const t2 = performance.now();
    if (process.env['BENCH_PSS'] && kind === 'postgres') {
      const c = new pg.Client({ connectionString: args.pg });
      await c.connect();
      const r = await c.query(
        "select calls, round(total_exec_time::numeric,1) || '|' || round(total_plan_time::numeric,1) as ms, left(regexp_replace(query,'\\s+',' ','g'),200) as q from pg_stat_statements where query not like '%pg_stat_statements%' order by calls desc",
      );
      await c.end();
      (await import('node:fs')).writeFileSync(process.env['BENCH_PSS'], r.rows.map((x) => `${x.calls}|${x.ms}|${x.q}`).join('\n'));
    }
    const total = studies.length * INSTANCES;
    const seen = new Map<string, number>();
    for (const s of pool.stores) seen.set(s.sopInstanceUid, (seen.get(s.sopInstanceUid) ?? 0) + 1);
    return {
      scenario: name,
      caseSeconds: (t1 - t0) / 1000,
      casesPerSecond: caseIds.length / ((t1 - t0) / 1000),
      forwardSeconds: (t2 - t0) / 1000,
      instancesPerSecond: total / ((t2 - t0) / 1000),
      duplicates: [...seen.values()].reduce((a, n) => a + (n - 1), 0),
      missing: total - seen.size,
    };
  } finally {
    for (const p of procs) {
      p.child.kill('SIGTERM');
      await p.exited;
    }
    await pool.close();
    if (kind === 'postgres') await admin(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`).catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const work = mkdtempSync(path.join(tmpdir(), 'gw-bench-scale-'));
  try {
    const studies = Array.from({ length: STUDIES }, (_, i) =>
      generateStudy(path.join(work, 'studies', `s${i}`), { instances: INSTANCES, series: 2, rows: 64, columns: 64 }),
    );
    console.log(
      `bench-scale: ${STUDIES} studies x ${INSTANCES} instances (64x64), ${DESTINATIONS} destinations; ${cpus().length} CPUs, load ${loadavg()
        .map((l) => l.toFixed(1))
        .join(' ')}`,
    );
    const plan: [string, 'sqlite' | 'postgres', number][] = [
      ['sqlite-1', 'sqlite', 1],
      ['pg-1', 'postgres', 1],
      ['pg-2', 'postgres', 2],
    ];
    const wanted = new Set(args.only!.split(','));
    const results: Result[] = [];
    for (const [name, kind, n] of plan) {
      if (!wanted.has(name)) continue;
      const r = await scenario(name, kind, n, studies, work);
      results.push(r);
      console.log(
        `${r.scenario.padEnd(9)} cases ${r.casesPerSecond.toFixed(1).padStart(6)}/s (${r.caseSeconds.toFixed(2)} s) | forwarding ${r.instancesPerSecond.toFixed(1).padStart(6)} instances/s (${r.forwardSeconds.toFixed(2)} s to all awaiting-read) | duplicates ${r.duplicates}, missing ${r.missing}`,
      );
    }
    if (results.some((r) => r.duplicates > 0 || r.missing > 0)) process.exitCode = 1;
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

await main();
