import { once } from 'node:events';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import express, { type NextFunction, type Request, type Response, type Router } from 'express';
import type { GatewayConfig } from '../config/schema.js';
import { ErrorCode, GatewayError, httpStatusFor, toGatewayError } from '../errors.js';
import type { Logger } from '../logger.js';
import { createAuthenticator, requireRole } from './auth.js';

export interface HttpServerOptions {
  config: GatewayConfig['http'];
  tokens: GatewayConfig['auth']['tokens'];
  logger: Logger;
  /** Answers /healthz; false until listeners and database are up. */
  health: () => { ok: boolean; details: Record<string, unknown> };
  /** Routers mounted under /api, behind authentication. */
  apiRouters: Router[];
  /** Prometheus text for GET /metrics (bearer token like the API: Prometheus sends one with `authorization`). */
  metrics?: () => Promise<{ contentType: string; body: string }>;
}

export class HttpServer {
  private server: http.Server | undefined;
  private readonly log: Logger;
  readonly app: express.Express;

  constructor(private readonly o: HttpServerOptions) {
    this.log = o.logger.child({ component: 'http' });
    const app = express();
    app.disable('x-powered-by');
    app.set('trust proxy', false);
    app.use(express.json({ limit: o.config.maxBodyBytes }));

    app.get('/healthz', (_req, res) => {
      const h = o.health();
      res.status(h.ok ? 200 : 503).json({ status: h.ok ? 'ok' : 'starting', ...h.details });
    });

    const authenticate = createAuthenticator(o.tokens);
    app.get('/metrics', authenticate, requireRole('admin', 'qa', 'system'), async (_req, res) => {
      if (!o.metrics) throw new GatewayError(ErrorCode.notFound, 'metrics are not enabled');
      const m = await o.metrics();
      res.type(m.contentType).send(m.body);
    });

    const api = express.Router();
    api.use(authenticate);
    for (const r of o.apiRouters) api.use(r);
    api.use((req, _res, next) => next(new GatewayError(ErrorCode.notFound, `no route ${req.method} ${req.baseUrl}${req.path}`)));
    app.use('/api', api);

    app.use((req, _res, next) => next(new GatewayError(ErrorCode.notFound, `no route ${req.method} ${req.path}`)));
    // The one error handler: every failure becomes a JSON body with a code and a message.
    app.use((err: unknown, req: Request, res: Response, _next: NextFunction) => {
      const ge = bodyParserError(err) ?? toGatewayError(err);
      const status = httpStatusFor(ge);
      if (status >= 500) this.log.error('request failed', { method: req.method, path: req.path, code: ge.code, error: (err as Error).message });
      res.status(status).json({ error: { code: ge.code, message: ge.message, details: ge.details } });
    });
    this.app = app;
  }

  async start(): Promise<void> {
    const server = http.createServer(this.app);
    server.headersTimeout = 30_000;
    server.requestTimeout = 120_000;
    server.keepAliveTimeout = 5_000;
    server.listen(this.o.config.port, this.o.config.host);
    await once(server, 'listening');
    this.server = server;
    this.log.info('listening', { host: this.o.config.host, port: this.port });
  }

  get port(): number {
    return (this.server?.address() as AddressInfo | null)?.port ?? 0;
  }

  async stop(): Promise<void> {
    const s = this.server;
    if (!s) return;
    this.server = undefined;
    const closed = new Promise<void>((resolve) => s.close(() => resolve()));
    s.closeIdleConnections();
    // In-flight requests get a moment to finish; then whatever is left is cut.
    const timer = setTimeout(() => s.closeAllConnections(), 5000);
    await closed;
    clearTimeout(timer);
  }
}

function bodyParserError(err: unknown): GatewayError | undefined {
  const e = err as { type?: string; status?: number; message?: string };
  if (e?.type === 'entity.too.large') return new GatewayError(ErrorCode.invalidInput, 'request body too large');
  if (e?.type === 'entity.parse.failed') return new GatewayError(ErrorCode.invalidInput, 'request body is not valid JSON');
  if (typeof e?.status === 'number' && e.status >= 400 && e.status < 500 && e.type) {
    return new GatewayError(ErrorCode.invalidInput, e.message ?? 'bad request');
  }
  return undefined;
}
