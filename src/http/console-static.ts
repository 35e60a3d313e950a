import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import express, { Router, type Response } from 'express';

/**
 * The console's folder. `npm run build` copies src/http/console to
 * dist/http/console, so it sits next to this module both under tsx (src/)
 * and from dist/; the package root's src/http/console is the fallback for a
 * dist/ built without the copy step.
 */
export function consoleFolder(): string {
  const here = path.dirname(fileURLToPath(import.meta.url));
  const beside = path.join(here, 'console');
  if (existsSync(path.join(beside, 'index.html'))) return beside;
  return path.resolve(here, '..', '..', 'src', 'http', 'console');
}

/** Where installed browser libraries live (resolved like an import, so no CDN and no copy). */
function vendorFiles(): { chartJs: string; yamlDir: string } {
  const require = createRequire(import.meta.url);
  // Neither package exports these subpaths; their entry points sit in the same folders.
  const chartDist = path.dirname(require.resolve('chart.js'));
  const yamlRoot = path.dirname(require.resolve('yaml/package.json'));
  return { chartJs: path.join(chartDist, 'chart.umd.js'), yamlDir: path.join(yamlRoot, 'browser') };
}

/** The console shares the API's origin; these headers keep it from running anything it did not ship. */
function securityHeaders(res: Response): void {
  res.set(
    'Content-Security-Policy',
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'none'",
  );
  res.set('X-Content-Type-Options', 'nosniff');
  res.set('Referrer-Policy', 'no-referrer');
  res.set('X-Frame-Options', 'DENY');
}

/**
 * The web console: static files, no authentication here (they hold no data);
 * every number and record comes from /api with the user's bearer token.
 */
export function consoleRouter(): Router {
  const folder = consoleFolder();
  const vendor = vendorFiles();
  const r = Router();
  const opts = { index: false, setHeaders: securityHeaders, maxAge: 0 };
  r.get('/', (_req, res) => {
    securityHeaders(res);
    res.set('Cache-Control', 'no-store');
    // `root`: only the file's own name is checked for dot-segments, not the install path.
    res.sendFile('index.html', { root: folder });
  });
  r.get('/console/vendor/chart.umd.js', (_req, res) => {
    securityHeaders(res);
    res.sendFile(path.basename(vendor.chartJs), { root: path.dirname(vendor.chartJs) });
  });
  r.use('/console/vendor/yaml', express.static(vendor.yamlDir, opts));
  r.use('/console', express.static(folder, opts));
  return r;
}
