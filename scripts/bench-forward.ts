/**
 * Forwarding benchmark: how fast the gateway's outbox worker sends a stored
 * study on, against DCMTK sending the same files.
 *
 *   (a) the gateway (tsc output of src/main.ts, run as `npm start` runs it, in
 *       its own process with a temp config, SQLite file and spool) forwards a
 *       synthetic 200-instance 512x512 16-bit CT study over C-STORE to DCMTK
 *       storescp (free port, temp folder): time from POST /api/cases to the
 *       case reaching `awaiting-read` (the worker's 'delivered' log line, read
 *       from its stdout, then confirmed over the API; --poll-ms N polls instead);
 *   (b) DCMTK storescu sends the same files to the same kind of storescp (one
 *       association, TCP_NODELAY=1): its wall time;
 *   (c) the gateway over STOW-RS to a real Orthanc (DICOMweb plugin), when
 *       installed, and storescu to Orthanc's DICOM port for reference;
 *   (d) peak RSS forwarding a 50- and a 400-instance study.
 *
 * Each gateway run: one process receives the study (storescu -> our SCP) and
 * stops; a fresh process on the same data forwards it, so its RSS and CPU
 * profile are those of forwarding (plus start-up), not of ingest. The peak RSS
 * printed is VmHWM of that process, reset (clear_refs 5) just before the
 * request, i.e. the peak while forwarding; the process's RSS at that moment
 * is printed too.
 *
 * With --associations K (K > 1) the destination's maxAssociations is K and every storescp runs with --fork (a process
 * per association); (b) then also runs K storescu processes at once, each sending every K-th file, and the gateway's
 * ratio is printed against both.
 *
 * Usage: npx tsx scripts/bench-forward.ts [--instances 200] [--runs 3] [--batch-size N] [--associations K] [--poll-ms N (0: log line)]
 *          [--skip-orthanc] [--skip-memory] [--cpu-prof dir] [--keep-compiled]
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import YAML from 'yaml';
import { compileForBench, freePort, timed, waitForPort } from './lib/bench-util.js';
import { generateStudy, type GeneratedStudy } from './lib/study-generator.js';
import { orthancUnavailable, startOrthanc, type OrthancPeer } from '../test/helpers/orthanc.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, '..');
// Inside the repository so the compiled modules resolve node_modules as dist/ does; dist/ itself is left alone.
const compiledDir = path.join(repo, 'node_modules', '.cache', 'bench-forward');
const compiledMain = path.join(compiledDir, 'src', 'main.js');
const TOKEN = 'bench-admin-token-0123456789abcdef';

function storescu(port: number, dir: string, calledAe: string): Promise<{ code: number | null; ms: number; stderr: string }> {
  return timed('storescu', ['-aet', 'BENCH', '-aec', calledAe, '+sd', '+r', '127.0.0.1', String(port), dir]);
}

/** `k` storescu processes started together, each sending every k-th file on its own association: the wall time of all. */
async function storescuParallel(port: number, files: string[], calledAe: string, k: number): Promise<{ ms: number }> {
  const t0 = process.hrtime.bigint();
  const runs = await Promise.all(
    Array.from({ length: k }, (_, j) =>
      timed('storescu', ['-aet', 'BENCH', '-aec', calledAe, '127.0.0.1', String(port), ...files.filter((_, i) => i % k === j)]),
    ),
  );
  const failed = runs.find((r) => r.code !== 0);
  if (failed) throw new Error(`storescu (one of ${k}) -> storescp failed: ${failed.stderr}`);
  return { ms: Number(process.hrtime.bigint() - t0) / 1e6 };
}

/** DCMTK storescp on a free port writing to a fresh folder; `count()` is how many files it wrote. */
async function startStorescp(work: string, fork = false): Promise<{ port: number; count: () => number; stop: () => Promise<void> }> {
  const out = mkdtempSync(path.join(work, 'storescp-'));
  const port = await freePort();
  const child = spawn('storescp', [...(fork ? ['--fork'] : []), '-od', out, String(port)], { env: { ...process.env, TCP_NODELAY: '1' }, stdio: 'ignore' });
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  await waitForPort(port);
  return {
    port,
    count: () => readdirSync(out).length,
    stop: async () => {
      child.kill('SIGTERM');
      await exited;
      rmSync(out, { recursive: true, force: true });
    },
  };
}

/** Linux /proc/<pid>/status fields in bytes (VmRSS, VmHWM). */
function procStatus(pid: number): { rss: number; hwm: number } {
  const s = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (k: string): number => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(s)?.[1] ?? NaN) * 1024;
  return { rss: kb('VmRSS'), hwm: kb('VmHWM') };
}

/** CPU time (user + system) the process used so far, in ms (/proc/<pid>/stat, clock ticks of 10 ms). */
function cpuMs(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(f[11]) + Number(f[12])) * 10;
}

/** Resets VmHWM to the current RSS (Linux >= 4.0); false when not allowed. */
function resetPeak(pid: number): boolean {
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, '5');
    return true;
  } catch {
    return false;
  }
}

interface GatewayChild {
  child: ChildProcess;
  http: string;
  dicomPort: number;
  exited: Promise<void>;
  /** Resolves with the first log entry (from now on) that `match` accepts. */
  nextLog(match: (e: Record<string, unknown>) => boolean, timeoutMs: number): Promise<Record<string, unknown>>;
  stop(): Promise<void>;
}

/** Starts the compiled gateway with the config file; resolves once it logged 'gateway started'. */
function startGateway(configFile: string, execArgv: string[] = []): Promise<GatewayChild> {
  const child = spawn(process.execPath, [...execArgv, compiledMain, '--config', configFile], { cwd: repo, stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: string[] = [];
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const waiters = new Set<(e: Record<string, unknown>) => void>();
  return new Promise((resolve, reject) => {
    const onLine = (line: string): void => {
      lines.push(line);
      if (lines.length > 200) lines.shift();
      let e: Record<string, unknown>;
      try {
        e = JSON.parse(line) as Record<string, unknown>;
      } catch {
        return;
      }
      for (const w of [...waiters]) w(e);
      if (e['level'] === 'error' || e['level'] === 'warn') console.error(`  gateway ${String(e['level'])}: ${String(e['message'])} ${JSON.stringify(e)}`);
      if (e['message'] === 'gateway started') {
        resolve({
          child,
          http: `http://127.0.0.1:${Number(e['httpPort'])}`,
          dicomPort: Number(e['dicomPort']),
          exited,
          nextLog: (match, timeoutMs) =>
            new Promise((res, rej) => {
              const timer = setTimeout(() => {
                waiters.delete(w);
                rej(new Error(`no matching log line within ${timeoutMs} ms`));
              }, timeoutMs);
              const w = (e: Record<string, unknown>): void => {
                if (!match(e)) return;
                clearTimeout(timer);
                waiters.delete(w);
                res(e);
              };
              waiters.add(w);
            }),
          stop: async () => {
            if (child.exitCode === null) child.kill('SIGTERM');
            const t = setTimeout(() => child.kill('SIGKILL'), 15_000);
            await exited;
            clearTimeout(t);
          },
        });
      }
    };
    createInterface({ input: child.stdout! }).on('line', onLine);
    createInterface({ input: child.stderr! }).on('line', onLine);
    void exited.then(() => reject(new Error(`gateway exited (${child.exitCode}) before starting:\n${lines.join('\n')}`)));
  });
}

async function api(base: string, method: string, p: string, body?: unknown): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(`${base}${p}`, {
    method,
    headers: { authorization: `Bearer ${TOKEN}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, body: (text ? JSON.parse(text) : {}) as Record<string, unknown> };
}

async function until<T>(what: string, timeoutMs: number, intervalMs: number, check: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

interface ForwardRun {
  ms: number;
  /** VmHWM of the forwarding process between the request and awaiting-read */
  peakRss: number;
  /** its RSS right before the request (after start-up) */
  rssBefore: number;
  /** VmHWM of the whole forwarding process (start-up included), read before the reset */
  startupPeak: number;
  /** CPU time of the forwarding process between the request and awaiting-read */
  cpuMs: number;
  /** From the request to the first instance stored at the receiver (case creation, rules, planning, association): the fixed cost of a case */
  firstMs?: number;
}

interface Options {
  pollMs: number;
  cpuProfDir?: string;
  label: string;
  /** True once the receiver holds a file (polled every millisecond after the request) */
  arrived?: () => boolean;
}

/**
 * One gateway forwarding run: receive the study in one process, stop it; a
 * fresh process on the same folder forwards it on request.
 */
async function gatewayForward(study: GeneratedStudy, studyDir: string, destination: Record<string, unknown>, work: string, o: Options): Promise<ForwardRun> {
  const dir = mkdtempSync(path.join(work, 'gateway-'));
  const configFile = path.join(dir, 'gateway.yaml');
  writeFileSync(
    configFile,
    YAML.stringify({
      instanceId: 'bench',
      dicom: { host: '127.0.0.1', port: 0, aeTitle: 'SECONDREAD', stableAfterSeconds: 0.3 },
      hl7: { host: '127.0.0.1', port: 0 },
      http: { host: '127.0.0.1', port: 0 },
      storage: { dir: path.join(dir, 'data'), minFreeMb: 0 },
      database: { url: `sqlite:${path.join(dir, 'data', 'gateway.db')}` },
      destinations: [destination],
      forwarding: { pollIntervalSeconds: 2 },
      rules: path.join(repo, 'config', 'rules.yaml'),
      auth: { tokens: [{ token: TOKEN, role: 'admin', name: 'bench' }] },
      log: { level: 'info', format: 'json' },
    }),
  );
  const studyState = async (base: string): Promise<string | undefined> => {
    const r = await api(base, 'GET', `/api/studies/${study.studyInstanceUid}`);
    return r.status === 200 && r.body['state'] === 'stable' ? 'stable' : undefined;
  };
  try {
    // 1. ingest, in its own process
    const ingest = await startGateway(configFile);
    try {
      const r = await storescu(ingest.dicomPort, studyDir, 'SECONDREAD');
      if (r.code !== 0) throw new Error(`storescu -> gateway failed: ${r.stderr}`);
      await until('the study to be stable', 30_000, 50, () => studyState(ingest.http));
    } finally {
      await ingest.stop();
    }
    // 2. forward, in a fresh one
    const execArgv = o.cpuProfDir ? ['--cpu-prof', `--cpu-prof-dir=${o.cpuProfDir}`, `--cpu-prof-name=${o.label}-${Date.now()}.cpuprofile`] : [];
    const gw = await startGateway(configFile, execArgv);
    try {
      await until('the study to be stable after restart', 30_000, 50, () => studyState(gw.http));
      // let start-up work (destination C-ECHO, first outbox pass) settle
      await new Promise((r) => setTimeout(r, 300));
      const pid = gw.child.pid!;
      const startupPeak = procStatus(pid).hwm;
      if (!resetPeak(pid)) throw new Error('cannot reset VmHWM (/proc/<pid>/clear_refs): run as the same user on Linux >= 4.0');
      const rssBefore = procStatus(pid).rss;
      const cpu0 = cpuMs(pid);
      // The end is the worker's own 'delivered' log line (written after the commit that moves the case to
      // awaiting-read), read from its stdout: polling the API every few ms costs the gateway CPU it would
      // otherwise spend forwarding. The state is then confirmed over the API. --poll-ms N polls instead.
      const outcome =
        o.pollMs > 0
          ? undefined
          : gw.nextLog(
              (e) => ['delivered', 'delivery dead-lettered', 'delivery held for review', 'delivery will be retried'].includes(String(e['message'])),
              600_000,
            );
      const t0 = process.hrtime.bigint();
      let firstMs: number | undefined;
      const arrived = o.arrived;
      const watch = arrived
        ? setInterval(() => {
            if (firstMs === undefined && arrived()) firstMs = Number(process.hrtime.bigint() - t0) / 1e6;
          }, 1)
        : undefined;
      const created = await api(gw.http, 'POST', '/api/cases', { studyInstanceUid: study.studyInstanceUid, reason: 'bench', destinationId: destination['id'] });
      if (created.status !== 201) throw new Error(`POST /api/cases: ${created.status} ${JSON.stringify(created.body)}`);
      const id = String(created.body['id']);
      const awaitingRead = async (): Promise<Record<string, unknown> | undefined> => {
        const c = (await api(gw.http, 'GET', `/api/cases/${id}`)).body;
        if (c['state'] === 'failed' || c['state'] === 'held') throw new Error(`case ${String(c['state'])}: ${JSON.stringify(c['deliveries'])}`);
        return c['state'] === 'awaiting-read' ? c : undefined;
      };
      if (outcome) {
        const e = await outcome;
        if (e['message'] !== 'delivered' || e['caseId'] !== id) throw new Error(`unexpected outcome: ${JSON.stringify(e)}`);
      } else {
        await until('awaiting-read', 600_000, o.pollMs, awaitingRead);
      }
      const ms = Number(process.hrtime.bigint() - t0) / 1e6;
      clearInterval(watch);
      if (!(await awaitingRead())) throw new Error(`case ${id} logged as delivered but is not awaiting-read`);
      const peakRss = procStatus(pid).hwm;
      return { ms, peakRss, rssBefore, startupPeak, cpuMs: cpuMs(pid) - cpu0, ...(firstMs === undefined ? {} : { firstMs }) };
    } finally {
      await gw.stop();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;
const mb = (b: number): string => (b / 1024 / 1024).toFixed(0);

function line(name: string, n: number, bytes: number, ms: number[]): void {
  const m = median(ms);
  console.log(
    `${name.padEnd(30)} runs ${ms.map((x) => x.toFixed(0).padStart(5)).join(' ')} ms | median ${m.toFixed(0).padStart(5)} ms  ${(n / (m / 1000)).toFixed(0).padStart(4)} instances/s  ${(bytes / 1e6 / (m / 1000)).toFixed(0).padStart(4)} MB/s`,
  );
}

/** Self time per function of a V8 .cpuprofile, the top `top` lines. */
function summariseProfile(file: string, top = 25): void {
  const p = JSON.parse(readFileSync(file, 'utf8')) as {
    nodes: { id: number; callFrame: { functionName: string; url: string; lineNumber: number } }[];
    samples: number[];
    timeDeltas: number[];
  };
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const self = new Map<string, number>();
  let total = 0;
  p.samples.forEach((id, i) => {
    const dt = p.timeDeltas[i] ?? 0;
    total += dt;
    const f = byId.get(id)?.callFrame;
    const key = f
      ? `${f.functionName || '(anonymous)'} ${f.url.replace(/^.*node_modules\//, '').replace(/^file:\/\/.*bench-forward\//, '')}:${f.lineNumber + 1}`
      : '?';
    self.set(key, (self.get(key) ?? 0) + dt);
  });
  console.log(`  ${path.basename(file)}: ${(total / 1000).toFixed(0)} ms sampled (start-up and shutdown included)`);
  for (const [k, us] of [...self.entries()].sort((a, b) => b[1] - a[1]).slice(0, top)) {
    console.log(`    ${(us / 1000).toFixed(0).padStart(6)} ms  ${((100 * us) / total).toFixed(1).padStart(5)}%  ${k}`);
  }
}

async function clearOrthanc(o: OrthancPeer): Promise<void> {
  const ids = (await (await fetch(`${o.baseUrl}/studies`)).json()) as string[];
  for (const id of ids) await fetch(`${o.baseUrl}/studies/${id}`, { method: 'DELETE' });
}

async function orthancInstanceCount(o: OrthancPeer, studyUid: string): Promise<number> {
  const res = await fetch(`${o.dicomwebUrl}/studies?StudyInstanceUID=${studyUid}&includefield=00201208`, { headers: { accept: 'application/dicom+json' } });
  if (res.status === 204) return 0;
  const body = (await res.json()) as Record<string, { Value?: unknown[] }>[];
  return Number(body[0]?.['00201208']?.Value?.[0] ?? 0);
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      instances: { type: 'string', default: '200' },
      runs: { type: 'string', default: '3' },
      'batch-size': { type: 'string' },
      associations: { type: 'string', default: '1' },
      'poll-ms': { type: 'string', default: '0' },
      'skip-orthanc': { type: 'boolean', default: false },
      'skip-memory': { type: 'boolean', default: false },
      'cpu-prof': { type: 'string' },
      'keep-compiled': { type: 'boolean', default: false },
    },
  });
  const n = Number(values.instances);
  const runs = Number(values.runs);
  const batchSize = values['batch-size'] ? Number(values['batch-size']) : undefined;
  const associations = Number(values.associations);
  if (!Number.isInteger(associations) || associations < 1 || associations > 16) throw new Error('--associations: a count from 1 to 16');
  const fork = associations > 1;
  const cpuProfDir = values['cpu-prof'] ? path.resolve(values['cpu-prof']) : undefined;
  if (cpuProfDir) mkdirSync(cpuProfDir, { recursive: true });
  const o: Options = { pollMs: Number(values['poll-ms']), cpuProfDir, label: 'cstore' };
  if (!values['keep-compiled'] || !existsSync(compiledMain)) compileForBench('bench-forward', [path.join(repo, 'src', 'main.ts')]);

  const work = mkdtempSync(path.join(tmpdir(), 'bench-forward-'));
  let orthanc: OrthancPeer | undefined;
  try {
    const studyDir = path.join(work, 'study');
    const study = generateStudy(studyDir, { instances: n, series: 2, modality: 'CT', rows: 512, columns: 512, bitsAllocated: 16 });
    const bytes = study.instances.reduce((s, i) => s + i.sizeBytes, 0);
    const dimse = (port: number): Record<string, unknown> => ({
      id: 'pool',
      type: 'dimse',
      host: '127.0.0.1',
      port,
      aeTitle: 'ANY-SCP',
      ...(batchSize ? { batchSize } : {}),
      ...(fork ? { maxAssociations: associations } : {}),
    });
    console.log(
      `load average before: ${loadavg()
        .map((x) => x.toFixed(1))
        .join(' ')} on ${cpus().length} CPUs (wall times below are from a shared machine)`,
    );
    console.log(
      `study: ${n} CT instances 512x512x16, ${(bytes / 1e6).toFixed(1)} MB; DIMSE batchSize ${batchSize ?? 'default (100)'}, maxAssociations ${associations}${fork ? ', storescp --fork' : ''}; storescu: one association${fork ? ` (and ${associations} storescu processes)` : ''}, TCP_NODELAY=1; ${runs} runs each, interleaved; a gateway run ends at ${o.pollMs > 0 ? `GET /api/cases/:id every ${o.pollMs} ms` : "its 'delivered' log line"}`,
    );

    // (a) + (b)
    const scuMs: number[] = [];
    const scuKMs: number[] = [];
    const gw: ForwardRun[] = [];
    for (let i = 0; i < runs; i++) {
      const a = await startStorescp(work, fork);
      try {
        const r = await storescu(a.port, studyDir, 'ANY-SCP');
        if (r.code !== 0) throw new Error(`storescu -> storescp failed: ${r.stderr}`);
        if (a.count() !== n) throw new Error(`storescp stored ${a.count()} of ${n} from storescu`);
        scuMs.push(r.ms);
      } finally {
        await a.stop();
      }
      if (fork) {
        const k = await startStorescp(work, fork);
        try {
          scuKMs.push(
            (
              await storescuParallel(
                k.port,
                study.instances.map((x) => x.path),
                'ANY-SCP',
                associations,
              )
            ).ms,
          );
          if (k.count() !== n) throw new Error(`storescp stored ${k.count()} of ${n} from ${associations} storescu`);
        } finally {
          await k.stop();
        }
      }
      const b = await startStorescp(work, fork);
      try {
        gw.push(await gatewayForward(study, studyDir, dimse(b.port), work, { ...o, label: `cstore-${i}`, arrived: () => b.count() > 0 }));
        if (b.count() !== n) throw new Error(`storescp stored ${b.count()} of ${n} from the gateway`);
      } finally {
        await b.stop();
      }
    }
    line('storescu -> storescp', n, bytes, scuMs);
    if (fork) line(`${associations} x storescu -> storescp`, n, bytes, scuKMs);
    line(
      fork ? `gateway, ${associations} assoc. -> storescp` : 'gateway C-STORE -> storescp',
      n,
      bytes,
      gw.map((g) => g.ms),
    );
    const ratio = median(scuMs) / median(gw.map((g) => g.ms));
    console.log(`ratio gateway/storescu (throughput): ${ratio.toFixed(2)}   (target >= 0.8)`);
    if (fork) console.log(`ratio gateway/${associations} x storescu (throughput): ${(median(scuKMs) / median(gw.map((g) => g.ms))).toFixed(2)}`);
    console.log(
      `gateway CPU while forwarding: ${gw.map((g) => g.cpuMs.toFixed(0)).join(', ')} ms (${gw.map((g) => ((100 * g.cpuMs) / g.ms).toFixed(0)).join(', ')}% of the wall time; ${gw.map((g) => (g.cpuMs / n).toFixed(2)).join(', ')} ms per instance, case creation and planning included)`,
    );
    console.log(
      `gateway, request to the first instance at storescp (case, rules, planning, association): ${gw.map((g) => (g.firstMs === undefined ? '?' : g.firstMs.toFixed(0))).join(', ')} ms`,
    );
    console.log(
      `gateway peak RSS while forwarding: ${gw.map((g) => mb(g.peakRss)).join(', ')} MB (RSS before the request ${gw.map((g) => mb(g.rssBefore)).join(', ')} MB; start-up peak ${gw.map((g) => mb(g.startupPeak)).join(', ')} MB)`,
    );

    // (c)
    const why = values['skip-orthanc'] ? 'skipped (--skip-orthanc)' : orthancUnavailable();
    if (why) {
      console.log(`STOW-RS to Orthanc: ${why}`);
    } else {
      orthanc = await startOrthanc();
      const stow: ForwardRun[] = [];
      const ref: number[] = [];
      for (let i = 0; i < runs; i++) {
        await clearOrthanc(orthanc);
        stow.push(
          await gatewayForward(study, studyDir, { id: 'orthanc', type: 'dicomweb', url: orthanc.dicomwebUrl, timeoutSeconds: 120 }, work, {
            ...o,
            label: `stow-${i}`,
          }),
        );
        const got = await orthancInstanceCount(orthanc, study.studyInstanceUid);
        if (got !== n) throw new Error(`Orthanc holds ${got} of ${n} instances after the gateway's STOW-RS`);
        if (orthanc.dicom) {
          await clearOrthanc(orthanc);
          const r = await storescu(orthanc.dicom.port, studyDir, orthanc.dicom.aeTitle);
          if (r.code !== 0) throw new Error(`storescu -> Orthanc failed: ${r.stderr}`);
          ref.push(r.ms);
        }
      }
      line(
        'gateway STOW-RS -> Orthanc',
        n,
        bytes,
        stow.map((g) => g.ms),
      );
      if (ref.length > 0) line('  (ref) storescu -> Orthanc DICOM', n, bytes, ref);
      console.log(`  gateway peak RSS while STOWing (batchSize default 20): ${stow.map((g) => mb(g.peakRss)).join(', ')} MB`);
      console.log('  (Orthanc runs in its own network namespace behind two Unix-socket relays; both paths go through them)');
      await orthanc.stop();
      orthanc = undefined;
    }

    // (d)
    if (!values['skip-memory']) {
      for (const size of [50, 400]) {
        const dir = path.join(work, `study-${size}`);
        const s = generateStudy(dir, { instances: size, series: 2, modality: 'CT', rows: 512, columns: 512, bitsAllocated: 16 });
        const scp = await startStorescp(work, fork);
        try {
          const g = await gatewayForward(s, dir, dimse(scp.port), work, { ...o, label: `mem-${size}` });
          if (scp.count() !== size) throw new Error(`storescp stored ${scp.count()} of ${size}`);
          console.log(
            `memory: ${String(size).padStart(3)} instances (${((size * (bytes / n)) / 1e6).toFixed(0)} MB) over C-STORE: peak RSS ${mb(g.peakRss)} MB (before the request ${mb(g.rssBefore)} MB), ${g.ms.toFixed(0)} ms, ${(size / (g.ms / 1000)).toFixed(0)} instances/s`,
          );
        } finally {
          await scp.stop();
          rmSync(dir, { recursive: true, force: true });
        }
      }
    }

    if (cpuProfDir) {
      console.log(`CPU profiles of the forwarding processes in ${cpuProfDir}:`);
      for (const f of readdirSync(cpuProfDir).filter((x) => x.startsWith('cstore-0') && x.endsWith('.cpuprofile'))) summariseProfile(path.join(cpuProfDir, f));
    }
  } finally {
    await orthanc?.stop();
    rmSync(work, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
