/** The HTTP server: app factory, launcher and the `dimoo serve` command. */
export { createServer, type ServerOptions, type ServerState } from './app.js';
export { startServer, type RunningServer, type StartOptions } from './start.js';
export { registerServeCommand, type ServeContext } from './serve-command.js';
export { DEFAULT_LIMITS, type ServerLimits } from './limits.js';
