import { spawn, spawnSync } from 'node:child_process';

export * from '../../scripts/lib/raw-scu.js';

let dcmtkPresent: boolean | undefined;
/** True when DCMTK's command-line tools are on the PATH. */
export function hasDcmtk(): boolean {
  if (dcmtkPresent === undefined) {
    const r = spawnSync('storescu', ['--version'], { stdio: 'ignore' });
    dcmtkPresent = r.status === 0;
  }
  return dcmtkPresent;
}

export interface ToolResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a DCMTK tool with TCP_NODELAY=1 (without it DCMTK waits on Nagle: about 20 instances/s). */
export function runDcmtk(tool: string, args: string[], timeoutMs = 60_000): Promise<ToolResult> {
  return new Promise((resolve) => {
    const child = spawn(tool, args, { env: { ...process.env, TCP_NODELAY: '1' } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', (err) => {
      clearTimeout(timer);
      resolve({ code: -1, stdout, stderr: stderr + err.message });
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}
