/**
 * The web page: static files from src/web/static, found from the package
 * root (the folder holding dimoo's package.json) so the same code serves them
 * under tsx and from dist/. Only files present at start-up are served, by
 * exact name from a table; a request path is never joined onto a folder.
 */
import { readdirSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance } from 'fastify';
import { RequestError } from './errors.js';

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
};

/** The page talks only to this server; inline scripts and remote content are refused. */
const CSP =
  "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'";

export function packageRoot(from: string = import.meta.url): string {
  let dir = path.dirname(fileURLToPath(from));
  for (;;) {
    try {
      const pkg = JSON.parse(readFileSync(path.join(dir, 'package.json'), 'utf8')) as {
        name?: string;
      };
      if (pkg.name === 'dimoo') return dir;
    } catch {
      // No package.json here; keep climbing.
    }
    const up = path.dirname(dir);
    if (up === dir) throw new Error('cannot find the dimoo package root above ' + from);
    dir = up;
  }
}

export function webStaticDir(): string {
  return path.join(packageRoot(), 'src', 'web', 'static');
}

interface StaticFile {
  data: Buffer;
  type: string;
}

function loadStatic(dir: string): Map<string, StaticFile> {
  const files = new Map<string, StaticFile>();
  for (const name of readdirSync(dir)) {
    const type = TYPES[path.extname(name)];
    if (!type || !/^[\w.-]+$/.test(name)) continue;
    files.set(name, { data: readFileSync(path.join(dir, name)), type });
  }
  return files;
}

export function registerWebRoutes(app: FastifyInstance, dir = webStaticDir()): void {
  const files = loadStatic(dir);
  const send = (name: string, reply: import('fastify').FastifyReply) => {
    const f = files.get(name);
    if (!f) throw new RequestError('not found', 'E_NOT_FOUND', 404);
    return reply
      .type(f.type)
      .header('content-security-policy', CSP)
      .header('referrer-policy', 'no-referrer')
      .header('x-frame-options', 'DENY')
      .header('cache-control', 'no-cache')
      .send(f.data);
  };
  app.get('/', async (_req, reply) => send('index.html', reply));
  app.get('/index.html', async (_req, reply) => send('index.html', reply));
  app.get('/favicon.ico', async (_req, reply) => reply.code(204).send());
  app.get<{ Params: { name: string } }>('/static/:name', async (req, reply) =>
    send(req.params.name, reply),
  );
}
