import { spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { createInterface } from 'node:readline';
import YAML from 'yaml';
import { testDatabaseUrl } from './tmp.js';

export interface GatewayProcess {
  child: ChildProcess;
  ports: { dicom: number; hl7: number; http: number };
  /** Every log line so far (JSON format), for assertions on what was logged. */
  lines: string[];
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

const root = path.resolve(import.meta.dirname, '../..');

/** Writes a config file for the test folder; ports 0 so parallel runs never collide. */
export function writeGatewayConfig(dir: string, overrides: Record<string, unknown> = {}): string {
  const config = {
    dicom: { host: '127.0.0.1', port: 0, aeTitle: 'SECONDREAD', allowedCallers: [], stableAfterSeconds: 60 },
    hl7: { host: '127.0.0.1', port: 0 },
    http: { host: '127.0.0.1', port: 0 },
    storage: { dir: path.join(dir, 'data'), minFreeMb: 0 },
    database: { url: testDatabaseUrl(path.join(dir, 'data', 'gateway.db')) },
    auth: { tokens: [{ token: 'test-admin-token-0123456789', role: 'admin' }] },
    log: { level: 'info', format: 'json' },
    ...overrides,
  };
  const file = path.join(dir, 'gateway.yaml');
  writeFileSync(file, YAML.stringify(config));
  return file;
}

/** Runs `src/main.ts` as `npm start` would (through tsx, no build), resolving once it logged its ports. */
export function startGatewayProcess(configFile: string, env: NodeJS.ProcessEnv = {}): Promise<GatewayProcess> {
  // BENCH_CPU_PROF=<dir>: each gateway process writes a V8 CPU profile there when it stops (benchmarks).
  const prof = process.env.BENCH_CPU_PROF ? ['--cpu-prof', '--cpu-prof-dir', process.env.BENCH_CPU_PROF] : [];
  const child = spawn(process.execPath, [...prof, '--import', 'tsx', path.join(root, 'src/main.ts'), '--config', configFile], {
    cwd: root,
    // GATEWAY_TEST_* configure the tests, not the gateway (whose loader takes every GATEWAY_* as a config key).
    env: Object.fromEntries(Object.entries({ ...process.env, ...env }).filter(([k]) => !k.startsWith('GATEWAY_TEST_'))),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines: string[] = [];
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on('exit', (code, signal) => resolve({ code, signal })),
  );
  return new Promise((resolve, reject) => {
    const onLine = (line: string): void => {
      lines.push(line);
      let entry: Record<string, unknown>;
      try {
        entry = JSON.parse(line) as Record<string, unknown>;
      } catch {
        return;
      }
      if (entry['message'] === 'gateway started') {
        resolve({
          child,
          lines,
          exited,
          ports: { dicom: Number(entry['dicomPort'] ?? 0), hl7: Number(entry['hl7Port'] ?? 0), http: Number(entry['httpPort'] ?? 0) },
        });
      }
    };
    createInterface({ input: child.stdout! }).on('line', onLine);
    createInterface({ input: child.stderr! }).on('line', onLine);
    void exited.then(({ code, signal }) => reject(new Error(`gateway exited (${code ?? signal}) before starting:\n${lines.join('\n')}`)));
  });
}
