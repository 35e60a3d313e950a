import { once } from 'node:events';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import express, { type NextFunction, type Request, type Response, type Router } from 'express';
import type { GatewayConfig } from '../config/schema.js';
import { ErrorCode, GatewayError, httpStatusFor, toGatewayError } from '../errors.js';
import type { Logger } from '../logger.js';
import { serverTlsOptions, watchHandshakes } from '../tls.js';
import { createAuthenticator, type AuthOptions } from './auth.js';
import { consoleRouter } from './console-static.js';
import { mount } from './api-schema.js';
import { buildOpenApiDocument } from './openapi.js';
import { operationsRoutes } from './operations.schemas.js';
import type { GuardMetrics } from '../metrics.js';

type TimeoutKeys = 'idleTimeoutSeconds' | 'headersTimeoutSeconds' | 'requestTimeoutSeconds';

export interface HttpServerOptions {
  /** The timeouts default as in the config schema when a caller builds the options by hand. */
  config: Omit<GatewayConfig['http'], TimeoutKeys | 'plain'> & Partial<Pick<GatewayConfig['http'], TimeoutKeys | 'plain'>>;
  /** Counts requests and connections refused by a limit (body size, idle timeout). */
  guards?: GuardMetrics;
  tokens: GatewayConfig['auth']['tokens'];
  /** Failed-login limit and audit hook. */
  auth?: AuthOptions;
  logger: Logger;
  /** Answers /healthz; false until listeners and database are up. */
  health: () => { ok: boolean; details: Record<string, unknown> };
  /** Routers mounted under /api, behind authentication. */
  apiRouters: Router[];
  /** DICOMweb (QIDO-RS, WADO-RS, STOW-RS), mounted under /dicom-web behind the same authentication. */
  dicomwebRouter?: Router;
  /** Prometheus text for GET /metrics (bearer token like the API: Prometheus sends one with `authorization`). */
  metrics?: () => Promise<{ contentType: string; body: string }>;
  /** Serve the web console (default true). */
  console?: boolean;
}

export class HttpServer {
  private server: http.Server | undefined;
  /** HTTPS (http.tls), the same app. */
  private tlsServer: https.Server | undefined;
  private tlsHandshakes: { cutPending(): void } | undefined;
  private readonly log: Logger;
  private open = 0;
  readonly app: express.Express;

  constructor(private readonly o: HttpServerOptions) {
    this.log = o.logger.child({ component: 'http' });
    const app = express();
    app.disable('x-powered-by');
    app.set('trust proxy', false);
    app.use(express.json({ limit: o.config.maxBodyBytes }));
    // PUT /api/rules also takes the text of a rules file (README); nothing else reads a text body.
    app.use(express.text({ type: ['application/yaml', 'application/x-yaml', 'text/yaml'], limit: o.config.maxBodyBytes }));

    mount(
      app,
      operationsRoutes.getHealth,
      () => {
        const h = o.health();
        const body = { status: h.ok ? ('ok' as const) : ('starting' as const), ...h.details };
        return h.ok ? { status: 200, body } : { status: 503, body };
      },
      { base: '' },
    );

    const authenticate = createAuthenticator(o.tokens, o.auth);
    mount(
      app,
      operationsRoutes.getMetrics,
      async (_input, _req, res) => {
        if (!o.metrics) throw new GatewayError(ErrorCode.notFound, 'metrics are not enabled');
        const m = await o.metrics();
        res.type(m.contentType).send(m.body);
      },
      { base: '', before: [authenticate] },
    );

    // The API description holds no PHI; tools fetch it before they have a token. Built on first use.
    let openApi: ReturnType<typeof buildOpenApiDocument> | undefined;
    mount(
      app,
      operationsRoutes.getOpenApi,
      () => ({ status: 200, body: (openApi ??= buildOpenApiDocument()) as { openapi: string; paths: Record<string, unknown> } }),
      {
        base: '',
      },
    );

    const api = express.Router();
    api.use(authenticate);
    for (const r of o.apiRouters) api.use(r);
    api.use((req, _res, next) => next(new GatewayError(ErrorCode.notFound, `no route ${req.method} ${req.baseUrl}${req.path}`)));
    app.use('/api', api);
    // DICOMweb: bearer tokens as the API; the router scopes what each role sees.
    if (o.dicomwebRouter) app.use('/dicom-web', authenticate, o.dicomwebRouter);
    // The web console (static files at / and /console/); its data comes from /api with the user's token.
    if (o.console !== false) app.use(consoleRouter());

    app.use((req, _res, next) => next(new GatewayError(ErrorCode.notFound, `no route ${req.method} ${req.path}`)));
    // The one error handler: every failure becomes a JSON body with a code and a message.
    app.use((err: unknown, req: Request, res: Response, _next: NextFunction) => {
      const ge = bodyParserError(err) ?? toGatewayError(err);
      if ((err as { type?: string } | undefined)?.type === 'entity.too.large') o.guards?.rejected('http.maxBodyBytes');
      const status = httpStatusFor(ge);
      if (status >= 500) this.log.error('request failed', { method: req.method, path: req.path, code: ge.code, error: (err as Error).message });
      res.status(status).json({ error: { code: ge.code, message: ge.message, details: ge.details } });
    });
    this.app = app;
  }

  async start(): Promise<void> {
    const c = this.o.config;
    const requestMs = (c.requestTimeoutSeconds ?? 120) * 1000;
    // Node refuses a headers timeout above the request timeout.
    const headersMs = Math.min((c.headersTimeoutSeconds ?? 30) * 1000, requestMs);
    // Both are enforced by a sweep every connectionsCheckingInterval (30 s by default): keep it well under them.
    const serverOptions = { connectionsCheckingInterval: Math.max(250, Math.min(30_000, headersMs / 4)) };
    // The same limits and counters for HTTP and HTTPS.
    const setUp = (server: http.Server): void => {
      server.headersTimeout = headersMs;
      server.requestTimeout = requestMs;
      server.keepAliveTimeout = 5_000;
      // A socket with no traffic at all (a client that connects and says nothing, or stalls mid-body) is closed.
      server.timeout = (c.idleTimeoutSeconds ?? 60) * 1000;
      // A request that is fully in and being answered is not idle: a long dry-run writes nothing for a while.
      const answering = new WeakMap<Socket, http.IncomingMessage>();
      server.on('request', (req: http.IncomingMessage, res: http.ServerResponse) => {
        answering.set(req.socket, req);
        res.once('close', () => answering.delete(req.socket));
      });
      server.on('timeout', (socket: Socket) => {
        if (answering.get(socket)?.complete) return;
        this.o.guards?.rejected('http.idleTimeoutSeconds');
        socket.destroy();
      });
      server.on('connection', (socket: Socket) => {
        this.open++;
        socket.once('close', () => this.open--);
      });
    };
    if (c.plain !== false) {
      const server = http.createServer(serverOptions, this.app);
      setUp(server);
      server.listen(c.port, c.host);
      await once(server, 'listening');
      this.server = server;
      this.log.info('listening', { host: c.host, port: this.port });
    }
    if (c.tls) {
      const server = https.createServer({ ...serverOptions, ...serverTlsOptions(c.tls), handshakeTimeout: headersMs }, this.app);
      setUp(server);
      this.tlsHandshakes = watchHandshakes(server, (err, remote) => this.log.debug('TLS handshake failed', { remote, error: err.message }));
      server.listen(c.tls.port, c.host);
      try {
        await once(server, 'listening');
      } catch (err) {
        this.server?.close();
        this.server = undefined;
        throw err;
      }
      this.tlsServer = server;
      this.log.info('listening (HTTPS)', { host: c.host, port: this.tlsPort });
    }
  }

  get tlsPort(): number {
    return (this.tlsServer?.address() as AddressInfo | null)?.port ?? 0;
  }

  get port(): number {
    return (this.server?.address() as AddressInfo | null)?.port ?? 0;
  }

  /** Open client connections (for /metrics). */
  get connectionCount(): number {
    return this.open;
  }

  async stop(): Promise<void> {
    const servers = [this.server, this.tlsServer].filter((s): s is http.Server => s !== undefined);
    this.server = undefined;
    this.tlsServer = undefined;
    // A connection still in its TLS handshake has sent no request yet.
    this.tlsHandshakes?.cutPending();
    await Promise.all(
      servers.map(async (s) => {
        const closed = new Promise<void>((resolve) => s.close(() => resolve()));
        s.closeIdleConnections();
        // In-flight requests get a moment to finish; then whatever is left is cut.
        const timer = setTimeout(() => s.closeAllConnections(), 5000);
        await closed;
        clearTimeout(timer);
      }),
    );
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
