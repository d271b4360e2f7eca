/**
 * The one error type shown to users. Anything that is the user's fault (bad file,
 * bad parameter, bad config) is a DimooError whose message names the culprit;
 * the CLI and server print only the message, never a stack trace.
 */
export class DimooError extends Error {
  constructor(
    message: string,
    /** Stable machine-readable category, e.g. 'E_SAFETENSORS', 'E_PARAM'. */
    readonly code: string = 'E_DIMOO',
  ) {
    super(message);
    this.name = 'DimooError';
  }
}

export function isDimooError(e: unknown): e is DimooError {
  return e instanceof DimooError;
}
