/**
 * Redis connections for the job queue. `--queue redis://HOST:PORT[/DB]`
 * (also `rediss://` for TLS, `user:password@` for ACLs). ioredis reconnects on
 * its own; BullMQ wants `maxRetriesPerRequest: null` on the connections its
 * workers block on. The API server's command connection fails fast while
 * Redis is away (no offline queue), so requests get a 503 at once instead of
 * hanging.
 */
import { Redis, type RedisOptions } from 'ioredis';
import { DimooError } from '../../errors.js';

export interface RedisTarget {
  /** The URL without its password, for logs. */
  display: string;
  options: RedisOptions;
}

export function parseRedisUrl(raw: string): RedisTarget {
  let u: URL;
  try {
    u = new URL(raw);
  } catch {
    throw new DimooError(
      `--queue: not a URL: ${JSON.stringify(raw)} (expected redis://HOST:PORT[/DB])`,
      'E_PARAM',
    );
  }
  if (u.protocol !== 'redis:' && u.protocol !== 'rediss:')
    throw new DimooError(
      `--queue: expected a redis:// or rediss:// URL, got ${u.protocol}`,
      'E_PARAM',
    );
  const port = u.port ? Number(u.port) : 6379;
  const path = u.pathname.replace(/^\//, '');
  if (path !== '' && !/^\d{1,2}$/.test(path))
    throw new DimooError(
      `--queue: the path must be a database number (/0../15), got /${path}`,
      'E_PARAM',
    );
  const options: RedisOptions = {
    host: u.hostname.replace(/^\[|\]$/g, '') || '127.0.0.1',
    port,
    db: path === '' ? 0 : Number(path),
    ...(u.username ? { username: decodeURIComponent(u.username) } : {}),
    ...(u.password ? { password: decodeURIComponent(u.password) } : {}),
    ...(u.protocol === 'rediss:' ? { tls: {} } : {}),
    // Reconnect quickly at first, then every 2 s at most: a restarted Redis is back within seconds.
    retryStrategy: (times: number) => Math.min(100 * times, 2000),
  };
  const display = `${u.protocol}//${u.username ? `${u.username}@` : ''}${u.host}${u.pathname === '/' ? '' : u.pathname}`;
  return { display, options };
}

/** A connection BullMQ may block on (workers, queue events): commands wait for a reconnect. */
export function blockingConnection(t: RedisTarget, name: string): Redis {
  return quiet(new Redis({ ...t.options, maxRetriesPerRequest: null, connectionName: name }));
}

/** ioredis reconnects by itself; without a listener each failed attempt would print a warning. */
function quiet(r: Redis): Redis {
  r.on('error', () => undefined);
  return r;
}

/** A command connection that fails at once while Redis is unreachable. */
export function failFastConnection(t: RedisTarget, name: string): Redis {
  return quiet(
    new Redis({
      ...t.options,
      maxRetriesPerRequest: 1,
      enableOfflineQueue: false,
      connectionName: name,
    }),
  );
}

/** Resolves once the connection is ready (or rejects after `timeoutMs`). */
export async function ready(r: Redis, timeoutMs = 10000): Promise<void> {
  if (r.status === 'ready') return;
  await new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => {
      cleanup();
      reject(
        new DimooError(`Redis at ${r.options.host}:${r.options.port} is not reachable`, 'E_REDIS'),
      );
    }, timeoutMs);
    const onReady = (): void => {
      cleanup();
      resolve();
    };
    const cleanup = (): void => {
      clearTimeout(t);
      r.off('ready', onReady);
    };
    r.on('ready', onReady);
  });
}
