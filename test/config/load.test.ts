import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { ConfigError, applyEnvOverrides, buildConfig, loadConfig } from '../../src/config/load.js';

function writeConfig(text: string): { dir: string; file: string } {
  const dir = mkdtempSync(path.join(tmpdir(), 'gw-config-'));
  const file = path.join(dir, 'gateway.yaml');
  writeFileSync(file, text);
  return { dir, file };
}

function problemsOf(fn: () => unknown): { path: string; message: string }[] {
  try {
    fn();
  } catch (err) {
    expect(err).to.be.instanceOf(ConfigError);
    return (err as ConfigError).problems;
  }
  expect.fail('expected a ConfigError');
}

describe('config loading', () => {
  it('loads the shipped config/gateway.yaml with its defaults', () => {
    const { config, source } = loadConfig({ argv: [], env: {}, cwd: process.cwd() });
    expect(source).to.equal(path.resolve('config/gateway.yaml'));
    expect(config.dicom).to.include({ port: 11112, aeTitle: 'SECONDREAD', stableAfterSeconds: 60, host: '127.0.0.1' });
    expect(config.hl7.ris).to.deep.equal({ host: '127.0.0.1', port: 2576 });
    expect(config.http.port).to.equal(8080);
    expect(config.database.url).to.equal(`sqlite:${path.resolve('data/gateway.db')}`);
    expect(config.storage.dir).to.equal(path.resolve('data'));
    expect(config.rules).to.equal(path.resolve('config/rules.yaml'));
    expect(Object.isFrozen(config) && Object.isFrozen(config.dicom)).to.equal(true);
  });

  it('selects the file from --config, then GATEWAY_CONFIG', () => {
    const a = writeConfig('http: { port: 9001 }\n');
    const b = writeConfig('http: { port: 9002 }\n');
    expect(loadConfig({ argv: ['--config', a.file], env: { GATEWAY_CONFIG: b.file } }).config.http.port).to.equal(9001);
    expect(loadConfig({ argv: [`--config=${a.file}`], env: {} }).config.http.port).to.equal(9001);
    expect(loadConfig({ argv: [], env: { GATEWAY_CONFIG: b.file } }).config.http.port).to.equal(9002);
  });

  it('applies GATEWAY_<SECTION>_<KEY> overrides with types and nesting', () => {
    const { file } = writeConfig('dicom: { aeTitle: GW }\n');
    const { config } = loadConfig({
      argv: ['--config', file],
      env: {
        GATEWAY_HTTP_PORT: '9090',
        GATEWAY_DICOM_STABLE_AFTER_SECONDS: '2.5',
        GATEWAY_DICOM_ALLOWEDCALLERS: '[PACS1, PACS2]',
        GATEWAY_HL7_RIS_PORT: '3000',
        GATEWAY_DICOM_AETITLE: '1234',
        GATEWAY_AUTH_TOKENS: '[{token: "0123456789abcdef-admin", role: admin}]',
      },
    });
    expect(config.http.port).to.equal(9090);
    expect(config.dicom.stableAfterSeconds).to.equal(2.5);
    expect(config.dicom.allowedCallers).to.deep.equal(['PACS1', 'PACS2']);
    expect(config.hl7.ris.port).to.equal(3000);
    expect(config.dicom.aeTitle).to.equal('1234');
    expect(config.auth.tokens[0]?.role).to.equal('admin');
  });

  it('reports an override that names no key', () => {
    const { value, problems } = applyEnvOverrides({}, { GATEWAY_HTTP_PORTT: '1' });
    expect(value).to.deep.equal({});
    expect(problems).to.deep.equal([{ path: 'GATEWAY_HTTP_PORTT', message: 'environment override names no known configuration key' }]);
  });

  it('lists every problem with its key path at once', () => {
    const { file } = writeConfig(
      [
        'dicom: { port: 70000, aeTitle: "THIS-AE-TITLE-IS-TOO-LONG", allowedCallers: ["OK", "BAD\\\\AE"], stableAfterSeconds: -1 }',
        'http: { port: "eighty" }',
        'database: { url: "mysql://x" }',
        'destinations:',
        '  - { id: a, type: dimse, host: h, port: 104, aeTitle: A }',
        '  - { id: a, type: dicomweb, url: "not a url" }',
        '  - { id: c, type: ftp }',
        'forwarding: { defaultDestination: nowhere }',
        'auth: { tokens: [ { token: short, role: admin }, { token: "0123456789abcdef-reader", role: reader } ] }',
        'unknownSection: 1',
      ].join('\n'),
    );
    const problems = problemsOf(() => loadConfig({ argv: ['--config', file], env: { GATEWAY_HTTP_NOPE: '1' } }));
    const paths = problems.map((p) => p.path);
    expect(paths).to.include.members([
      'GATEWAY_HTTP_NOPE',
      'dicom.port',
      'dicom.aeTitle',
      'dicom.allowedCallers[1]',
      'dicom.stableAfterSeconds',
      'http.port',
      'database.url',
      'destinations[1].url',
      'destinations[2].type',
      'auth.tokens[0].token',
      'auth.tokens[1].readerId',
      '',
    ]);
    expect(problems.find((p) => p.path === '')?.message).to.match(/unknownSection/);
  });

  it("takes a destination's HL7 channel for orders (cancel notices), with its key path when wrong", () => {
    const ok = buildConfig({ destinations: [{ id: 'p', type: 'dimse', host: 'h', port: 104, aeTitle: 'P', hl7: { host: 'pool.example.org', port: 2575 } }] });
    expect(ok.destinations[0]!.hl7).to.deep.equal({ host: 'pool.example.org', port: 2575 });
    expect(buildConfig({ destinations: [{ id: 'w', type: 'dicomweb', url: 'http://pool/dicom-web' }] }).destinations[0]!.hl7).to.equal(undefined);
    const problems = problemsOf(() =>
      buildConfig({ destinations: [{ id: 'w', type: 'dicomweb', url: 'http://pool/dicom-web', hl7: { host: 'h', port: 0, extra: 1 } }] }),
    );
    expect(problems.map((p) => p.path)).to.include.members(['destinations[0].hl7.port', 'destinations[0].hl7']);
  });

  it('reports cross-references once the shapes are right', () => {
    const problems = problemsOf(() =>
      buildConfig({
        destinations: [
          { id: 'a', type: 'dimse', host: 'h', port: 104, aeTitle: 'A' },
          { id: 'a', type: 'dicomweb', url: 'http://127.0.0.1:1/dicom-web' },
        ],
        forwarding: { defaultDestination: 'nowhere' },
        readers: [{ id: 'r', name: 'R', destination: 'zz' }],
      }),
    );
    expect(problems.map((p) => p.path)).to.have.members(['destinations[1].id', 'forwarding.defaultDestination', 'readers[0].destination']);
  });

  it('reports YAML syntax errors with a line number', () => {
    const { file } = writeConfig('dicom:\n  port: [1, 2\nhttp: {');
    const problems = problemsOf(() => loadConfig({ argv: ['--config', file], env: {} }));
    expect(problems[0]?.path).to.match(/^line \d+/);
  });

  it('reports a missing file', () => {
    const problems = problemsOf(() => loadConfig({ argv: ['--config', '/nonexistent/gw.yaml'], env: {} }));
    expect(problems[0]?.message).to.match(/cannot read/);
  });
});
