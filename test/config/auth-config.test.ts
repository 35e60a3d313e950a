import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { expect } from 'chai';
import { ConfigError, applyEnvOverrides, buildConfig, parseConfig } from '../../src/config/load.js';
import { defaultConfig } from '../../src/config/schema.js';

const sha = (t: string) => createHash('sha256').update(t).digest('hex');

function problemsOf(raw: unknown): { path: string; message: string }[] {
  try {
    parseConfig(raw);
  } catch (err) {
    expect(err).to.be.instanceOf(ConfigError);
    return (err as ConfigError).problems;
  }
  expect.fail('expected a ConfigError');
}

describe('config: hashed tokens, failed-login limit, log.phi', () => {
  it('has safe defaults', () => {
    const c = defaultConfig();
    expect(c.auth.maxFailedPerMinute).to.equal(20);
    expect(c.log.phi).to.equal(false);
  });

  it('accepts tokenSha256 instead of token (hex, any case, stored lower-case)', () => {
    const c = buildConfig({ auth: { tokens: [{ tokenSha256: ` ${sha('x'.repeat(20)).toUpperCase()} `, role: 'qa' }] } });
    expect(c.auth.tokens[0]).to.include({ tokenSha256: sha('x'.repeat(20)), role: 'qa' });
    expect(c.auth.tokens[0]?.token).to.equal(undefined);
  });

  it('wants exactly one of token and tokenSha256, a 64-hex hash, and no token twice in either form', () => {
    const t = 'a-long-enough-token-0123';
    const problems = problemsOf({
      auth: {
        tokens: [
          { token: t, tokenSha256: sha(t), role: 'admin' },
          { role: 'admin' },
          { tokenSha256: 'abc123', role: 'admin' },
          { token: t, role: 'qa' },
          { tokenSha256: sha(t), role: 'system' },
        ],
      },
    });
    expect(problems).to.deep.include({ path: 'auth.tokens[0]', message: 'give exactly one of token and tokenSha256' });
    expect(problems).to.deep.include({ path: 'auth.tokens[1]', message: 'give exactly one of token and tokenSha256' });
    expect(problems.find((p) => p.path === 'auth.tokens[2].tokenSha256')?.message).to.match(/64 hex characters/);
    // The same token once in clear and once hashed is a duplicate.
    expect(problems).to.deep.include({ path: 'auth.tokens[3].token', message: 'duplicate token' });
    expect(problems).to.deep.include({ path: 'auth.tokens[4].tokenSha256', message: 'duplicate token' });
    expect(problems.length).to.equal(5);
  });

  it('takes auth.maxFailedPerMinute and log.phi from the environment', () => {
    const { value, problems } = applyEnvOverrides({}, { GATEWAY_AUTH_MAX_FAILED_PER_MINUTE: '5', GATEWAY_LOG_PHI: 'true' });
    expect(problems).to.deep.equal([]);
    const c = buildConfig(value);
    expect(c.auth.maxFailedPerMinute).to.equal(5);
    expect(c.log.phi).to.equal(true);
    expect(problemsOf({ auth: { maxFailedPerMinute: 0 } }).map((p) => p.path)).to.deep.equal(['auth.maxFailedPerMinute']);
  });

  it('npm run hash-token prints the hash of an argument or of stdin, and --new a token with its hash', function () {
    this.timeout(30_000);
    const run = (args: string[], input?: string) =>
      spawnSync(process.execPath, ['--import', 'tsx', 'scripts/hash-token.ts', ...args], { input, encoding: 'utf8' });
    const t = 'my-token-0123456789abcdef';
    expect(run([t]).stdout.trim()).to.equal(sha(t));
    expect(run([], `${t}\n`).stdout.trim()).to.equal(sha(t));
    const fresh = run(['--new']);
    const token = /token:\s+(\S+)/.exec(fresh.stdout)?.[1];
    const hash = /tokenSha256:\s+([0-9a-f]{64})/.exec(fresh.stdout)?.[1];
    expect(token).to.have.length.greaterThan(30);
    expect(hash).to.equal(sha(token!));
    // What it prints is what the config accepts.
    expect(buildConfig({ auth: { tokens: [{ tokenSha256: hash, role: 'admin' }] } }).auth.tokens).to.have.length(1);
    const short = run(['short']);
    expect(short.status).to.equal(2);
    expect(short.stdout).to.equal('');
  });
});
