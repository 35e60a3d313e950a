/**
 * What the fuzz tests share: one in-process gateway on a temp config, the run
 * count (env FUZZ_RUNS), and the memory check (RSS before/after, after a GC
 * when node runs with --expose-gc).
 */
import path from 'node:path';
import v8 from 'node:v8';
import vm from 'node:vm';
import winston from 'winston';
import { buildConfig } from '../../src/config/load.js';
import { createGateway, type Gateway } from '../../src/gateway.js';
import { makeTempDir } from '../helpers/tmp.js';

export const FUZZ_TOKENS = {
  admin: 'fuzz-admin-token-0123456789',
  system: 'fuzz-system-token-0123456789',
};

/** Cases per property: env FUZZ_RUNS, else the file's default (thousands per file in total). */
export function fuzzRuns(defaultRuns: number): number {
  const n = Number(process.env['FUZZ_RUNS']);
  return Number.isFinite(n) && n > 0 ? Math.floor(n) : defaultRuns;
}

/** A fixed seed unless FUZZ_SEED is set, so a failure replays; the seed is printed with any counterexample. */
export function fuzzSeed(): number | undefined {
  const s = Number(process.env['FUZZ_SEED']);
  return Number.isFinite(s) && process.env['FUZZ_SEED'] ? s : undefined;
}

export interface FuzzGateway {
  gw: Gateway;
  dir: string;
  stop(): Promise<void>;
}

export async function startFuzzGateway(overrides: { dicom?: object; hl7?: object; http?: object } = {}): Promise<FuzzGateway> {
  const tmp = makeTempDir('gw-fuzz-');
  const config = buildConfig({
    dicom: { port: 0, allowedCallers: [], stableAfterSeconds: 3600, ...overrides.dicom },
    hl7: { port: 0, aiSenders: ['AI_VENDOR'], ...overrides.hl7 },
    http: { port: 0, ...overrides.http },
    storage: { dir: path.join(tmp.dir, 'data'), minFreeMb: 0 },
    database: { url: `sqlite:${path.join(tmp.dir, 'gw.db')}` },
    auth: {
      tokens: [
        { token: FUZZ_TOKENS.admin, role: 'admin' },
        { token: FUZZ_TOKENS.system, role: 'system' },
      ],
    },
    destinations: [{ id: 'pool', type: 'dicomweb', url: 'http://127.0.0.1:9/dicom-web' }],
    forwarding: { pollIntervalSeconds: 3600 },
  });
  const gw = createGateway(config, { logger: winston.createLogger({ silent: true }) });
  await gw.start();
  return {
    gw,
    dir: tmp.dir,
    async stop() {
      await gw.stop();
      tmp.cleanup();
    },
  };
}

let gcFn: (() => void) | undefined | null = null;

/** global.gc when node runs with --expose-gc, else one obtained by turning the flag on now (undefined if that fails). */
function forceGc(): boolean {
  if (gcFn === null) {
    gcFn = (globalThis as { gc?: () => void }).gc;
    if (!gcFn) {
      try {
        v8.setFlagsFromString('--expose-gc');
        gcFn = vm.runInNewContext('gc') as () => void;
      } catch {
        gcFn = undefined;
      }
    }
  }
  if (!gcFn) return false;
  gcFn();
  gcFn();
  return true;
}

/** Resident set size in MB, after a full GC when one can be forced. */
export function settledRssMb(): number {
  forceGc();
  return process.memoryUsage().rss / 1e6;
}

/** Live JS heap in MB after a forced GC (undefined when GC cannot be forced): a leak shows here first. */
export function settledHeapMb(): number | undefined {
  if (!forceGc()) return undefined;
  return process.memoryUsage().heapUsed / 1e6;
}

/** The live heap may grow this much (caches, compiled code); a per-case leak over thousands of cases would not fit. */
export const HEAP_GROWTH_LIMIT_MB = 64;

/** RSS may grow this much over a fuzz run (caches, JIT, SQLite pages), not with the number of cases. */
export const RSS_GROWTH_LIMIT_MB = 200;
