/** The HTTP server: app factory and launcher (`dimoo serve` is cli/commands/serve.ts). */
export { createServer, type ServerOptions } from './app.js';
export type { ServerState } from './context.js';
export { startServer, type RunningServer, type StartOptions } from './start.js';
export { DEFAULT_LIMITS, type ServerLimits } from './limits.js';
