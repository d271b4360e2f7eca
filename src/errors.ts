/**
 * The one error type shown to users. Anything that is the user's fault (bad file,
 * bad parameter, bad config) is a DimooError whose message names the culprit;
 * the CLI and server print only the message, never a stack trace.
 */

/**
 * Every error code, so a typo cannot make a new one. A new kind of failure adds
 * its code here (clients match on them; docs/server.md lists the server's).
 */
export const ERROR_CODES = [
  'E_DIMOO',
  // files and formats
  'E_CHECKPOINT',
  'E_CONFIG',
  'E_SAFETENSORS',
  'E_SPECIAL_TOKENS',
  'E_TOKENIZER',
  'E_TOKENS',
  'E_DATA',
  'E_FILE',
  'E_IO',
  'E_IMAGE',
  'E_MASK',
  // parameters and state
  'E_PARAM',
  'E_LIMIT',
  'E_NO_VQ',
  'E_STATE',
  'E_CANCELLED',
  'E_TIMEOUT',
  'E_TRAIN',
  'E_LORA',
  'E_RESUME',
  // runtime
  'E_WEBGPU',
  'E_WORKER',
  'E_RUNTIME',
  'E_NETWORK',
  'E_INTERNAL',
  'E_NONFINITE',
  // the HTTP server
  'E_REQUEST',
  'E_JSON',
  'E_MULTIPART',
  'E_MEDIA_TYPE',
  'E_TOO_LARGE',
  'E_NOT_FOUND',
  'E_QUEUE_FULL',
  'E_SHUTDOWN',
  'E_FORBIDDEN',
  'E_KEY_LIMIT',
  // the job queue (serve --queue, dimoo worker)
  'E_REDIS',
  'E_QUEUE_UNAVAILABLE',
  'E_NO_WORKERS',
  'E_JOB_PAYLOAD',
  // OpenAI-compatible codes the server answers with
  'model_not_found',
  'invalid_api_key',
] as const;

export type ErrorCode = (typeof ERROR_CODES)[number];

export function isErrorCode(s: unknown): s is ErrorCode {
  return typeof s === 'string' && (ERROR_CODES as readonly string[]).includes(s);
}

export class DimooError extends Error {
  constructor(
    message: string,
    /** Stable machine-readable category, e.g. 'E_SAFETENSORS', 'E_PARAM'. */
    readonly code: ErrorCode = 'E_DIMOO',
  ) {
    super(message);
    this.name = 'DimooError';
  }
}

export function isDimooError(e: unknown): e is DimooError {
  return e instanceof DimooError;
}
