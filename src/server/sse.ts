/**
 * Server-Sent Events over a hijacked fastify reply. Headers the framework
 * already set (CORS) are carried over; a comment every 15 s keeps proxies
 * from closing an idle stream.
 */
import type { FastifyReply } from 'fastify';

export class SseStream {
  private closed = false;
  private readonly heartbeat: NodeJS.Timeout;
  private readonly closeHandlers: (() => void)[] = [];

  constructor(private readonly reply: FastifyReply) {
    const headers: Record<string, string | number | string[]> = {};
    for (const [k, v] of Object.entries(reply.getHeaders()))
      if (v !== undefined) headers[k] = v as string | number | string[];
    reply.hijack();
    reply.raw.writeHead(200, {
      ...headers,
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache, no-transform',
      connection: 'keep-alive',
      'x-accel-buffering': 'no',
      'x-content-type-options': 'nosniff',
    });
    reply.raw.flushHeaders();
    this.heartbeat = setInterval(() => this.write(': keep-alive\n\n'), 15000);
    reply.raw.on('close', () => {
      this.closed = true;
      clearInterval(this.heartbeat);
      for (const f of this.closeHandlers) f();
    });
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Runs `fn` when the client goes away (or the stream ends). */
  onClose(fn: () => void): void {
    if (this.closed) fn();
    else this.closeHandlers.push(fn);
  }

  send(data: unknown, event?: string): void {
    const payload = typeof data === 'string' ? data : JSON.stringify(data);
    this.write(`${event ? `event: ${event}\n` : ''}data: ${payload}\n\n`);
  }

  end(): void {
    if (this.closed) return;
    clearInterval(this.heartbeat);
    this.reply.raw.end();
  }

  private write(s: string): void {
    if (!this.closed) this.reply.raw.write(s);
  }
}
