/**
 * A controller's HTTP port (config.ini `http = host:port`): `/metrics` for Prometheus, `/` the
 * status page, `/status.json` what it shows, `/entries?cursor=KEY&limit=N` stored entries by page,
 * `/livez` and `/readyz` for health checks (200, or 503 with the reason: status/readiness.ts).
 *
 * It serves operators, not clients, and must never hurt the controller: GET and HEAD only, no
 * request bodies, small headers, few connections, short timeouts; a failure answers 500 and is
 * logged, never thrown. It binds only where configured.
 */

import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { clockMs } from '../runtime/clock.ts';
import type { Address } from '../config.ts';
import type { Mode } from '../consistency/types.ts';
import type { CommandHandler } from '../protocol/server.ts';
import { nodeNotReady } from '../status/readiness.ts';
import { clusterStatus } from '../status/show-json.ts';
import { entriesPage, ENTRIES_PER_PAGE_MAX } from './entries.ts';
import { ControllerMetrics } from './metrics.ts';
import { entriesPageHtml, ENTRIES_PAGE_POLICY, STATUS_PAGE_POLICY, statusPage } from './pages.ts';
import type { StatusSource } from './source.ts';

/** The narrow logger the HTTP server writes to. */
export interface StatusHttpLog {
  info(message: string, meta?: object): void;
  warn(message: string, meta?: object): void;
}

export interface StatusHttpOptions {
  node: string;
  mode: Mode;
  listen: Address;
  source: StatusSource;
  log: StatusHttpLog;
}

/** Bytes of a request's line and headers (Node's default is 16 KiB). */
const HEADER_BYTES_MAX = 8192;
const CONNECTIONS_MAX = 64;
const REQUEST_TIMEOUT_MS = 10_000;
/** The longest cursor taken: a key is at most 250 bytes, each at most 3 UTF-8 bytes once decoded. */
const CURSOR_CHARS_MAX = 750;

type Answer = { status: number; type: string; body: string; headers?: Record<string, string> };

export class StatusHttp {
  readonly metrics: ControllerMetrics;
  private readonly server: http.Server;

  constructor(private readonly options: StatusHttpOptions) {
    this.metrics = new ControllerMetrics(options.source, { node: options.node, mode: options.mode });
    const limits = { maxHeaderSize: HEADER_BYTES_MAX, requestTimeout: REQUEST_TIMEOUT_MS, headersTimeout: REQUEST_TIMEOUT_MS / 2 };
    this.server = http.createServer(limits, (request, response) => {
      void this.serve(request, response);
    });
    this.server.maxConnections = CONNECTIONS_MAX;
    this.server.keepAliveTimeout = 5000;
    // A malformed request (bad header, too long) is answered 400 and its connection closed.
    this.server.on('clientError', (_error, socket) => {
      if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
      else socket.destroy();
    });
  }

  /** `handler`, timing each request into the latency histogram (the one hook on the hot path). */
  timed(handler: CommandHandler): CommandHandler {
    const metrics = this.metrics;
    return (command, connection) => {
      const startedMs = performance.now();
      const reply = handler(command, connection);
      if (!(reply instanceof Promise)) {
        metrics.observeRequest(command, reply, (performance.now() - startedMs) / 1000);
        return reply;
      }
      return reply.then((settled) => {
        metrics.observeRequest(command, settled, (performance.now() - startedMs) / 1000);
        return settled;
      });
    };
  }

  /** Starts listening; resolves with the bound port. */
  listen(): Promise<number> {
    const { host, port } = this.options.listen;
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen({ host, port }, () => {
        this.server.off('error', reject);
        this.server.on('error', (error) => this.options.log.warn('http server error', { error: error.message }));
        const bound = (this.server.address() as AddressInfo).port;
        this.options.log.info('http status server listening', { host, port: bound });
        resolve(bound);
      });
    });
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      this.server.closeAllConnections();
      if (!this.server.listening) resolve();
      else this.server.close(() => resolve());
    });
  }

  private async serve(request: http.IncomingMessage, response: http.ServerResponse): Promise<void> {
    let answer: Answer;
    try {
      answer = await this.answer(request);
    } catch (error) {
      this.options.log.warn('http request failed', { url: (request.url ?? '').slice(0, 200), error: String(error) });
      answer = text(500, 'internal error\n');
    }
    if (response.headersSent || response.destroyed) return;
    response.writeHead(answer.status, {
      'Content-Type': answer.type,
      'Content-Length': Buffer.byteLength(answer.body),
      'Cache-Control': 'no-store',
      'X-Content-Type-Options': 'nosniff',
      'Referrer-Policy': 'no-referrer',
      ...answer.headers,
    });
    response.end(request.method === 'HEAD' ? undefined : answer.body);
  }

  private async answer(request: http.IncomingMessage): Promise<Answer> {
    if (request.method !== 'GET' && request.method !== 'HEAD') return { ...text(405, 'only GET and HEAD\n'), headers: { Allow: 'GET, HEAD' } };
    // No bodies: a GET with one is refused rather than read.
    if (request.headers['content-length'] !== undefined && request.headers['content-length'] !== '0') return text(413, 'no request body taken\n');
    if (request.headers['transfer-encoding'] !== undefined) return text(413, 'no request body taken\n');
    let url: URL;
    try {
      url = new URL(request.url ?? '/', 'http://status.invalid');
    } catch {
      return text(400, 'bad url\n');
    }
    const { node, source } = this.options;
    switch (url.pathname) {
      case '/':
        return { status: 200, type: 'text/html; charset=utf-8', body: statusPage(node), headers: { 'Content-Security-Policy': STATUS_PAGE_POLICY } };
      case '/status.json':
        return { status: 200, type: 'application/json', body: JSON.stringify(clusterStatus(source.summary(), source.peerView())) };
      case '/metrics':
        return { status: 200, type: this.metrics.registry.contentType, body: await this.metrics.render() };
      case '/entries':
        return this.entries(url);
      case '/livez':
        return text(200, 'ok\n');
      case '/readyz': {
        const why = nodeNotReady(source.summary());
        return why === null ? text(200, 'ok\n') : text(503, `not ready: ${why}\n`);
      }
      default:
        return text(404, 'not found\n');
    }
  }

  private async entries(url: URL): Promise<Answer> {
    const cursor = url.searchParams.get('cursor');
    if (cursor !== null && cursor.length > CURSOR_CHARS_MAX) return text(400, 'cursor too long\n');
    const limitText = url.searchParams.get('limit') ?? String(ENTRIES_PER_PAGE_MAX);
    const limit = /^\d{1,4}$/.test(limitText) ? Math.min(ENTRIES_PER_PAGE_MAX, Math.max(1, Number(limitText))) : ENTRIES_PER_PAGE_MAX;
    const nowMs = clockMs();
    // The cursor is the last key shown, as the page's link carries it (latin1, one char per byte).
    const after = cursor === null || cursor === '' ? null : cursor;
    const page = await entriesPage(this.options.source, { after, limit, nowMs });
    return {
      status: 200,
      type: 'text/html; charset=utf-8',
      body: entriesPageHtml(this.options.node, page, { nowMs, limit }),
      headers: { 'Content-Security-Policy': ENTRIES_PAGE_POLICY },
    };
  }
}

function text(status: number, body: string): Answer {
  return { status, type: 'text/plain; charset=utf-8', body };
}
