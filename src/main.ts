import { ConfigError, loadConfig } from './config/load.js';
import { createGateway } from './gateway.js';
import { createLogger } from './logger.js';
import { RuleSetInvalidError } from './rules/rules.service.js';

async function main(): Promise<number> {
  let loaded;
  try {
    loaded = loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`${err.message}\n`);
      return 2;
    }
    throw err;
  }
  const { config, source } = loaded;
  const logger = createLogger(config.log);
  const log = logger.child({ component: 'main' });
  log.info('configuration loaded', { source });

  const gateway = createGateway(config, { logger });
  let stopping: Promise<void> | undefined;
  const stop = (signal: string) => {
    if (stopping) return;
    log.info('stopping', { signal });
    stopping = gateway.stop().then(
      () => {
        log.info('stopped');
        process.exitCode = 0;
      },
      (err: unknown) => {
        log.error('stop failed', { error: (err as Error).message });
        process.exitCode = 1;
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  // State after an unexpected throw is unknown: say so and exit; a supervisor restarts us and recovery runs from the database.
  process.on('uncaughtException', (err) => {
    log.error('uncaught exception, exiting', { error: err.message, stack: err.stack });
    process.exit(70);
  });

  try {
    await gateway.start();
  } catch (err) {
    if (err instanceof RuleSetInvalidError) {
      process.stderr.write(`${err.message}\n`);
      return 2;
    }
    log.error('start failed', { error: (err as Error).message });
    return 1;
  }
  return 0;
}

main().then(
  (code) => {
    if (code !== 0) process.exit(code);
  },
  (err: unknown) => {
    process.stderr.write(`fatal: ${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  },
);
