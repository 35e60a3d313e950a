/**
 * `npm run soak`: the gateway (a child process) under a steady rate of mixed
 * traffic (studies over C-STORE, orders and final reports over MLLP, flagged
 * studies forwarded to a pool, second reports over HTTP, write-backs to a RIS)
 * for a fixed time. Once a minute it prints the gateway's RSS, heap used,
 * event-loop delay (from /metrics) and queue depths; at the end, whether
 * memory stayed flat: the RSS slope over the last 3 minutes (or the last third
 * of a shorter run), with the first window's and the post-warm-up slope beside it. Loopback only.
 *
 *   npm run soak                          # 10 minutes
 *   npm run soak -- --minutes 3 --interval 1.5
 *
 * --minutes M (10), --interval SECONDS between new studies (1), --print-every SECONDS (60),
 * --sample-every SECONDS (5), --max-slope MB_PER_MINUTE (1: "flat" at or below this), --keep.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { SimulatedRis } from './lib/sim-ris.js';
import { freePorts, GatewayChild, HOST, MixedLoad, RecordingPool, sleep, TOKENS, writeConfig } from './lib/mixed-load.js';
import { seededRandom } from './lib/seeded-random.js';

interface Sample {
  t: number;
  rssMb: number;
  heapUsedMb: number;
  lagP99Ms: number;
  lagMeanMs: number;
  deliveryQueue: number;
  writeBackQueue: number;
  casesWrittenBack: number;
}

/** Sum of a metric's samples whose labels match `labels` (all given labels equal). */
function metric(text: string, name: string, labels: Record<string, string[]> = {}): number {
  let sum = 0;
  let found = false;
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    const m = /^[^{ ]+(?:\{([^}]*)\})? (\S+)$/.exec(line);
    if (!m) continue;
    const l = Object.fromEntries([...(m[1] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((x) => [x[1], x[2]]));
    if (Object.entries(labels).every(([k, vs]) => vs.includes(l[k] ?? ''))) {
      sum += Number(m[2]);
      found = true;
    }
  }
  return found ? sum : Number.NaN;
}

function vmRssMb(pid: number | undefined): number {
  if (!pid) return Number.NaN;
  try {
    const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, 'latin1'));
    return m ? Number(m[1]) / 1024 : Number.NaN;
  } catch {
    return Number.NaN;
  }
}

/** Least-squares slope of RSS against time, in MB a minute. */
function slope(samples: Sample[]): number {
  if (samples.length < 2) return Number.NaN;
  const xs = samples.map((s) => s.t / 60);
  const ys = samples.map((s) => s.rssMb);
  const mx = xs.reduce((a, b) => a + b, 0) / xs.length;
  const my = ys.reduce((a, b) => a + b, 0) / ys.length;
  let num = 0;
  let den = 0;
  xs.forEach((x, i) => {
    num += (x - mx) * (ys[i]! - my);
    den += (x - mx) ** 2;
  });
  return den === 0 ? Number.NaN : num / den;
}

const f1 = (n: number) => (Number.isFinite(n) ? n.toFixed(1) : '-');

async function main(): Promise<number> {
  const { values } = parseArgs({
    args: process.argv.slice(2),
    options: {
      minutes: { type: 'string' },
      interval: { type: 'string' },
      'print-every': { type: 'string' },
      'sample-every': { type: 'string' },
      'max-slope': { type: 'string' },
      keep: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write('usage: npm run soak -- [--minutes M] [--interval S] [--print-every S] [--sample-every S] [--max-slope MB_PER_MIN] [--keep]\n');
    return 0;
  }
  const minutes = Number(values.minutes ?? 10);
  const intervalS = Number(values.interval ?? 1);
  const printEvery = Number(values['print-every'] ?? 60);
  const sampleEvery = Number(values['sample-every'] ?? 5);
  const maxSlope = Number(values['max-slope'] ?? 1);
  for (const [k, v] of Object.entries({ minutes, interval: intervalS, 'print-every': printEvery, 'sample-every': sampleEvery, 'max-slope': maxSlope })) {
    if (!Number.isFinite(v) || v <= 0) throw new Error(`--${k} must be a positive number`);
  }
  const out = (s: string) => void process.stdout.write(`${s}\n`);
  const dir = mkdtempSync(path.join(tmpdir(), 'srgw-soak-'));
  const ris = new SimulatedRis();
  const pool = new RecordingPool(path.join(dir, 'pool'));
  await ris.start();
  await pool.start();
  const [dicom, hl7, http] = await freePorts(3);
  const ports = { dicom: dicom!, hl7: hl7!, http: http! };
  // warn: at info the gateway logs a line per association and message, which is the log's cost, not the gateway's.
  const configFile = writeConfig({ dir, ports, risPort: ris.port, poolPort: pool.port, stableAfterSeconds: 2, logLevel: 'warn' });
  const gw = new GatewayChild(configFile, path.join(dir, 'gateway.log'), ports.http);
  const load = new MixedLoad({ dir, ports, random: seededRandom(Date.now() & 0x7fffffff), hl7Connections: 3 });
  const samples: Sample[] = [];
  let code = 0;
  try {
    gw.spawn();
    await gw.ready();
    out(
      `soak: ${minutes} min, a new study every ${intervalS} s (with its order and final report; ~half flagged, forwarded, read and written back); folder ${dir}`,
    );
    out('  min   RSS MB  (VmRSS)  heap MB  loop p99 ms  loop mean ms  delivery queue  write-back queue  instances  HL7 AA  written back');
    const started = Date.now();
    const end = started + minutes * 60_000;
    load.startRate(intervalS * 1000);
    load.startReaders(500);
    let nextPrint = started + printEvery * 1000;
    let lagP99Max = 0;
    while (Date.now() < end) {
      await sleep(Math.min(sampleEvery * 1000, Math.max(0, end - Date.now())));
      const res = await fetch(`http://${HOST}:${ports.http}/metrics`, {
        headers: { authorization: `Bearer ${TOKENS.admin}` },
        signal: AbortSignal.timeout(10_000),
      });
      const text = await res.text();
      const s: Sample = {
        t: (Date.now() - started) / 1000,
        rssMb: metric(text, 'process_resident_memory_bytes') / 2 ** 20,
        heapUsedMb: metric(text, 'nodejs_heap_size_used_bytes') / 2 ** 20,
        lagP99Ms: metric(text, 'nodejs_eventloop_lag_p99_seconds') * 1000,
        lagMeanMs: metric(text, 'nodejs_eventloop_lag_mean_seconds') * 1000,
        deliveryQueue: metric(text, 'gateway_delivery_queue', { state: ['pending', 'sending'] }) || 0,
        writeBackQueue: metric(text, 'gateway_outbound_messages', { kind: ['write-back'], state: ['pending'] }) || 0,
        casesWrittenBack: metric(text, 'gateway_cases', { state: ['written-back'] }) || 0,
      };
      samples.push(s);
      lagP99Max = Math.max(lagP99Max, s.lagP99Ms);
      if (Date.now() >= nextPrint - 500 || Date.now() >= end) {
        nextPrint += printEvery * 1000;
        const instances = load.instances.filter((i) => i.acked).length;
        const hl7Acked = load.scenarios.flatMap((x) => x.messages).filter((m) => m.acked).length;
        out(
          `  ${(s.t / 60).toFixed(1).padStart(4)}  ${f1(s.rssMb).padStart(6)}  (${f1(vmRssMb(gw.pid)).padStart(5)})  ${f1(s.heapUsedMb).padStart(7)}  ` +
            `${f1(lagP99Max).padStart(11)}  ${f1(s.lagMeanMs).padStart(12)}  ${String(s.deliveryQueue).padStart(14)}  ${String(s.writeBackQueue).padStart(16)}  ` +
            `${String(instances).padStart(9)}  ${String(hl7Acked).padStart(6)}  ${String(s.casesWrittenBack).padStart(12)}`,
        );
        lagP99Max = 0;
      }
    }
    await load.stop(30_000);
    await load.stopReaders();
    // RSS swings by 10-20 MB with each major GC, so slopes are least-squares fits over many samples. The
    // verdict is the last window's slope (3 minutes, or the last third of a shorter run: noisier); the first
    // window's and the slope of everything after a warm-up (caches, JIT, allocator settling) are printed beside it.
    const total = samples.at(-1)?.t ?? 0;
    const window = Math.min(180, total / 3);
    const warmUp = Math.min(120, total / 3);
    const first = samples.filter((s) => s.t <= window);
    const last = samples.filter((s) => s.t >= total - window);
    const steady = samples.filter((s) => s.t >= warmUp);
    const firstSlope = slope(first);
    const lastSlope = slope(last);
    const steadySlope = slope(steady);
    const flat = Number.isFinite(lastSlope) && lastSlope <= maxSlope;
    const rss = samples.map((s) => s.rssMb);
    out('');
    out(`soak result after ${(total / 60).toFixed(1)} min:`);
    out(`  RSS MB: first ${f1(rss[0] ?? NaN)}, min ${f1(Math.min(...rss))}, max ${f1(Math.max(...rss))}, last ${f1(rss.at(-1) ?? NaN)}`);
    out(
      `  RSS slope: last ${f1(window / 60)} min ${f1(lastSlope)} MB/min (flat when <= ${maxSlope}); first ${f1(window / 60)} min ${f1(firstSlope)} MB/min; ` +
        `after a ${f1(warmUp / 60)} min warm-up ${f1(steadySlope)} MB/min over ${steady.length} samples`,
    );
    out(
      `  heap used MB: first ${f1(samples[0]?.heapUsedMb ?? NaN)}, last ${f1(samples.at(-1)?.heapUsedMb ?? NaN)}; event-loop p99 max ${f1(Math.max(...samples.map((s) => s.lagP99Ms)))} ms`,
    );
    out(
      `  traffic: ${load.scenarios.length} studies, ${load.instances.filter((i) => i.acked).length} instances, ${load.scenarios.flatMap((x) => x.messages).filter((m) => m.acked).length} HL7 AA, pool ${pool.received} instances, RIS ${ris.writeBacks} write-backs, second reports ${load.reports.posted}`,
    );
    out(`  memory ${flat ? 'stayed flat' : 'DID NOT stay flat'}`);
    if (!flat) code = 1;
    const stopped = await gw.kill('SIGTERM');
    if (stopped.code !== 0) {
      out(`  ! gateway exited ${stopped.code ?? stopped.signal} on SIGTERM`);
      code = 1;
    }
    if (gw.unexpectedExits.length > 0) {
      out(`  ! gateway exited on its own: ${gw.unexpectedExits.join(', ')}`);
      code = 1;
    }
  } finally {
    await load.close();
    await gw.kill('SIGKILL');
    await pool.stop();
    await ris.stop();
    if (values.keep || code !== 0) out(`folder kept: ${dir}`);
    else rmSync(dir, { recursive: true, force: true });
  }
  return code;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`soak: ${(err as Error).stack ?? String(err)}\n`);
    process.exit(2);
  },
);
