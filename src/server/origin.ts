/**
 * Who may drive a server that has no API key: requests whose Host names this
 * machine and whose Origin (when a browser sends one) is the server's own
 * page or one listed with --cors. Without this, any web page could POST to a
 * local server (simple cross-origin requests need no preflight), and a DNS
 * name rebound to 127.0.0.1 would reach it as a same-origin page.
 */
import { RequestError } from './errors.js';

/** Host names that always mean this machine. */
function isLoopbackName(host: string): boolean {
  return (
    host === 'localhost' ||
    host.endsWith('.localhost') ||
    host === '::1' ||
    /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host)
  );
}

/** "name" of a Host header value ("name:port", "[v6]:port"), lower case. */
function hostName(host: string): string {
  const h = host.trim().toLowerCase();
  if (h.startsWith('[')) return h.slice(1, h.indexOf(']') > 0 ? h.indexOf(']') : undefined);
  const i = h.lastIndexOf(':');
  return i >= 0 && h.indexOf(':') === i ? h.slice(0, i) : h;
}

/**
 * Without an API key: the Host must name this machine (a loopback name or the
 * address the request arrived at), so a DNS name rebound to 127.0.0.1 is
 * refused; an Origin, when a browser sends one, must be the server's own (or
 * allowed with --cors).
 */
export function checkBrowserOrigin(
  headers: Record<string, string | string[] | undefined>,
  localAddress: string | undefined,
  allowed: true | ReadonlySet<string>,
): void {
  const host = typeof headers['host'] === 'string' ? headers['host'] : '';
  const name = hostName(host);
  const local = (localAddress ?? '').toLowerCase().replace(/^::ffff:/, '');
  if (!isLoopbackName(name) && name !== local) {
    throw new RequestError(
      `Host "${host}" is not this server's address; without an API key only loopback names or the address itself are served (DNS rebinding guard)`,
      'E_FORBIDDEN',
      403,
    );
  }
  const origin = headers['origin'];
  if (origin === undefined) return;
  // The server's own page (https when a TLS proxy sits in front).
  const own = typeof origin === 'string' ? origin.toLowerCase() : '';
  if (own === `http://${host.toLowerCase()}` || own === `https://${host.toLowerCase()}`) return;
  if (allowed === true || (typeof origin === 'string' && allowed.has(origin))) return;
  throw new RequestError(
    `requests from the web page at ${JSON.stringify(origin)} are refused: without an API key only this server's own page may call it (allow other pages with --cors)`,
    'E_FORBIDDEN',
    403,
  );
}
