import { spawn } from 'node:child_process';
import { existsSync, rmSync } from 'node:fs';
import path from 'node:path';
import { expect } from 'chai';

const root = path.resolve(import.meta.dirname, '..');

describe('npm run demo (scripts/demo.ts)', function () {
  this.timeout(60_000);

  it('runs the whole flow on loopback, prints a final summary with write-backs, exits 0 and removes its temp folder', async () => {
    const child = spawn(process.execPath, ['--import', 'tsx', path.join(root, 'scripts/demo.ts'), '--duration', '25', '--studies', '6', '--interval', '2'], {
      cwd: root,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    // While the demo runs, look at it as a QA officer would: the console page and its dashboard numbers.
    let probe: Promise<{ page: number; html: string; dashboard: Record<string, unknown> }> | undefined;
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      stdout += d;
      const base = /Web console:\s+(http:\/\/\S+?)\/\s/.exec(stdout)?.[1];
      const qa = /QA token:\s+(\S+)/.exec(stdout)?.[1];
      if (!probe && base && qa) {
        probe = new Promise((resolve) => setTimeout(resolve, 18_000)).then(async () => {
          const page = await fetch(`${base}/`);
          const dashboard = await fetch(`${base}/api/dashboard`, { headers: { authorization: `Bearer ${qa}` } });
          return { page: page.status, html: await page.text(), dashboard: (await dashboard.json()) as Record<string, unknown> };
        });
        probe.catch(() => undefined);
      }
    });
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const killer = setTimeout(() => child.kill('SIGKILL'), 45_000);
    const { code, signal } = await new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
      child.on('exit', (c, s) => resolve({ code: c, signal: s })),
    );
    clearTimeout(killer);
    const tmp = /temp folder: (\S+)/.exec(stdout)?.[1];
    const context = `exit ${code} ${signal ?? ''}\n--- stdout ---\n${stdout}\n--- stderr ---\n${stderr}`;
    try {
      expect(signal, context).to.equal(null);
      expect(code, context).to.equal(0);
      expect(stdout, context).to.include('Web console:  http://127.0.0.1:').and.include('admin token:').and.include('QA token:').and.include('curl -s');
      expect(stdout, context).to.match(/\[t\+\s*\d+s\] PACS sent \d+ studies/);
      expect(stdout, context).to.include('=== demo summary after');
      // The final block only: the live lines above it carry the same labels with earlier counts.
      const summary = stdout.slice(stdout.indexOf('=== demo summary after'));
      expect(Number(/studies pushed by PACS\s+(\d+)/.exec(summary)?.[1]), context).to.equal(6);
      const hl7 = /HL7 sent to gateway\s+(\d+) \((\d+) AA\)/.exec(summary);
      expect(Number(hl7?.[2]), context).to.equal(Number(hl7?.[1]));
      expect(Number(/write-backs accepted\s+(\d+)/.exec(summary)?.[1]), context).to.be.at.least(1);
      // Every output reached its simulated consumer: the RIS worklist, the PACS (SR), the FHIR server, the audit repository.
      expect(Number(/RIS status updates\s+(\d+)/.exec(summary)?.[1]), context).to.be.at.least(1);
      expect(Number(/SR to PACS\s+(\d+)/.exec(summary)?.[1]), context).to.be.at.least(1);
      expect(Number(/FHIR DiagnosticReports\s+(\d+)/.exec(summary)?.[1]), context).to.be.at.least(1);
      expect(summary, context).to.not.match(/FHIR DiagnosticReports\s+\d+ \(\d+ refused\)/);
      const atna = /ATNA messages\s+(\d+) \(by EventID: ([^)]*)\)/.exec(summary);
      expect(Number(atna?.[1]), context).to.be.at.least(1);
      // Application start, instances transferred (received and sent), order records, user authentication (the readers' logins).
      for (const id of ['110100', '110104', '110109', '110114']) expect(atna?.[2], `${id}\n${context}`).to.match(new RegExp(`\\b${id} [1-9]`));
      const seen = await probe;
      expect(seen?.page, context).to.equal(200);
      expect(seen?.html, context).to.include('<script');
      // 18 s in, at one study every 2 s, the dashboard has counted studies received today.
      expect((seen?.dashboard['today'] as { studiesReceived: number } | undefined)?.studiesReceived, context).to.be.at.least(1);
      expect(tmp, context).to.be.a('string');
      expect(stdout, context).to.include(`temp folder removed: ${tmp}`);
      expect(existsSync(tmp!), `${tmp} still exists`).to.equal(false);
    } finally {
      if (tmp && tmp.includes('srgw-demo-')) rmSync(tmp, { recursive: true, force: true });
    }
  });
});
