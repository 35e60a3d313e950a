import { execFileSync, spawn } from 'node:child_process';
import { readdirSync, rmSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository root (benchmarks live in scripts/). */
export const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

/**
 * Compiles `entries` (and the src/ modules they import) with tsc into
 * `node_modules/.cache/<name>` — inside the repository so the compiled code
 * resolves node_modules as dist/ does — with the emit options of
 * tsconfig.json / `npm run build`, so a benchmark measures the production
 * build, not tsx. Returns the output folder.
 */
export function compileForBench(name: string, entries: string[]): string {
  const outDir = path.join(repo, 'node_modules', '.cache', name);
  rmSync(outDir, { recursive: true, force: true });
  const types = readdirSync(path.join(repo, 'src', 'types'))
    .filter((f) => f.endsWith('.d.ts'))
    .map((f) => path.join(repo, 'src', 'types', f));
  execFileSync(
    process.execPath,
    [
      path.join(repo, 'node_modules', 'typescript', 'bin', 'tsc'),
      ...entries,
      ...types,
      ...['--rootDir', repo, '--outDir', outDir, '--target', 'ES2022', '--module', 'NodeNext', '--moduleResolution', 'NodeNext'],
      ...['--strict', '--esModuleInterop', '--skipLibCheck', '--resolveJsonModule', '--types', 'node'],
    ],
    { stdio: 'inherit' },
  );
  return outDir;
}

/** A port free on 127.0.0.1 right now (for peers, like DCMTK's storescp, that cannot be told to pick one). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      const port = typeof a === 'object' && a ? a.port : 0;
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

/** Resolves once something accepts connections on the port (polling every 50 ms, `tries` times). */
export async function waitForPort(port: number, tries = 200): Promise<void> {
  for (let i = 0; i < tries; i++) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => {
        s.destroy();
        resolve(true);
      });
      s.on('error', () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`nothing listening on 127.0.0.1:${port}`);
}

/** Runs a command (DCMTK tools with TCP_NODELAY=1), timing it. */
export function timed(cmd: string, args: string[]): Promise<{ code: number | null; ms: number; stderr: string }> {
  return new Promise((resolve) => {
    const started = process.hrtime.bigint();
    const child = spawn(cmd, args, { env: { ...process.env, TCP_NODELAY: '1' }, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('close', (code) => resolve({ code, ms: Number(process.hrtime.bigint() - started) / 1e6, stderr }));
  });
}
