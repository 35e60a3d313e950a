/**
 * The SHA-256 of an API token, for `auth.tokens[].tokenSha256` (the config
 * then holds no usable secret).
 *
 *   npm run hash-token -- <token>          hash of the token given
 *   printf %s "$TOKEN" | npm run hash-token  hash of the token on stdin (kept out of shell history)
 *   npm run hash-token -- --new            a new random token and its hash
 */
import { randomBytes } from 'node:crypto';
import { tokenDigestHex } from '../src/config/schema.js';

const MIN_LENGTH = 16;

export function newToken(): string {
  return randomBytes(32).toString('base64url');
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  // A trailing newline from `echo` or a file is not part of the token.
  return Buffer.concat(chunks)
    .toString('utf8')
    .replace(/\r?\n$/, '');
}

async function main(argv: string[]): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    process.stdout.write('usage: hash-token <token> | hash-token --new | printf %s TOKEN | hash-token\n');
    return 0;
  }
  if (argv.includes('--new')) {
    const token = newToken();
    process.stdout.write(`token:       ${token}\ntokenSha256: ${tokenDigestHex({ token })}\n`);
    return 0;
  }
  let token = argv.find((a) => !a.startsWith('--'));
  if (token === undefined) {
    if (process.stdin.isTTY) {
      process.stderr.write('give the token as an argument or on stdin, or --new for a new one\n');
      return 2;
    }
    token = await readStdin();
  }
  if (token.length < MIN_LENGTH) {
    process.stderr.write(`a token must be at least ${MIN_LENGTH} characters (the gateway refuses shorter ones)\n`);
    return 2;
  }
  process.stdout.write(`${tokenDigestHex({ token })}\n`);
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`${(err as Error).message}\n`);
    process.exitCode = 1;
  },
);
