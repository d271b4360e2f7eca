/**
 * Every error leaves the server as OpenAI-style JSON:
 * `{"error": {"message", "type", "code", "param"}}`. Users see messages of
 * errors they caused (DimooError, request checks, the framework's own 4xx);
 * anything else becomes a bare 500 with the details only in the log.
 */
import { DimooError, type ErrorCode } from '../errors.js';

export interface ErrorBody {
  message: string;
  /** OpenAI's error type (invalid_request_error, authentication_error, rate_limit_error, server_error). */
  type: string;
  /** OpenAI-style code (invalid_value, model_not_found, rate_limit_exceeded, ...), what OpenAI clients read. */
  code: string;
  param?: string | null;
  /** Our own finer code (E_PARAM, E_LIMIT, E_QUEUE_FULL, ...), documented in docs/server.md. */
  dimoo_code: ErrorCode;
}

/** A request the server refuses, with its HTTP status. */
export class RequestError extends DimooError {
  constructor(
    message: string,
    code: ErrorCode,
    readonly status = 400,
    readonly param?: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message, code);
  }
}

/** Library error codes that are not plain bad requests. */
const STATUS_BY_CODE: Record<string, number> = {
  E_WORKER: 503,
  E_STATE: 503,
  E_INTERNAL: 500,
};

function typeFor(status: number): string {
  if (status === 401) return 'authentication_error';
  if (status === 429) return 'rate_limit_error';
  if (status >= 500) return 'server_error';
  return 'invalid_request_error';
}

/** The OpenAI-style code for one of ours (OpenAI clients switch on these). */
export function openAiCode(status: number, code: string): string {
  if (/^[a-z_]+$/.test(code)) return code; // already OpenAI-style (model_not_found, invalid_api_key)
  if (code === 'E_CANCELLED') return 'cancelled';
  if (status === 401) return 'invalid_api_key';
  if (status === 404) return 'not_found';
  if (status === 408) return 'timeout';
  if (status === 413) return 'request_too_large';
  if (status === 415) return 'unsupported_media_type';
  if (status === 429) return 'rate_limit_exceeded';
  if (status >= 500) return 'server_error';
  return 'invalid_value';
}

/** The error object of a response: OpenAI's fields, our own code beside them. */
export function errorBody(
  status: number,
  message: string,
  code: ErrorCode,
  param: string | null = null,
): ErrorBody {
  return {
    message,
    type: typeFor(status),
    code: openAiCode(status, code),
    param,
    dimoo_code: code,
  };
}

/** Codes for the framework's own 4xx errors, which carry FST_* codes. */
function frameworkCode(status: number, fst: string | undefined): ErrorCode {
  if (status === 413) return 'E_TOO_LARGE';
  if (status === 415) return 'E_MEDIA_TYPE';
  if (fst === 'FST_ERR_CTP_INVALID_JSON_BODY' || fst === 'FST_ERR_CTP_EMPTY_JSON_BODY')
    return 'E_JSON';
  if (fst?.startsWith('FST_INVALID_MULTIPART') || fst === 'FST_PROTO_VIOLATION')
    return 'E_MULTIPART';
  if (status === 404) return 'E_NOT_FOUND';
  return 'E_REQUEST';
}

export interface HttpFailure {
  status: number;
  body: { error: ErrorBody };
  headers: Record<string, string>;
  /** True when the cause is ours, not the client's: log it with the stack. */
  internal: boolean;
}

export function toHttpFailure(e: unknown): HttpFailure {
  if (e instanceof RequestError) {
    return {
      status: e.status,
      body: { error: errorBody(e.status, e.message, e.code, e.param ?? null) },
      headers: e.headers,
      internal: false,
    };
  }
  if (e instanceof DimooError) {
    const status = STATUS_BY_CODE[e.code] ?? 400;
    return {
      status,
      body: { error: errorBody(status, e.message, e.code) },
      headers: {},
      internal: status >= 500,
    };
  }
  const err = e as { statusCode?: unknown; code?: unknown; message?: unknown; name?: unknown };
  if (err && err.name === 'AbortError') {
    return {
      status: 499,
      body: { error: errorBody(499, 'the request was cancelled', 'E_CANCELLED') },
      headers: {},
      internal: false,
    };
  }
  const sc = typeof err?.statusCode === 'number' ? err.statusCode : 500;
  if (sc >= 400 && sc < 500) {
    // The framework's and its plugins' client errors have safe, useful messages.
    return {
      status: sc,
      body: {
        error: errorBody(
          sc,
          String(err.message ?? 'bad request'),
          frameworkCode(sc, typeof err.code === 'string' ? err.code : undefined),
        ),
      },
      headers: {},
      internal: false,
    };
  }
  return {
    status: 500,
    body: { error: errorBody(500, 'internal server error', 'E_INTERNAL') },
    headers: {},
    internal: true,
  };
}

/** HTTP parser failures, said in words (Node's codes mean nothing to a client). */
const CLIENT_ERRORS: Record<string, [number, string]> = {
  HPE_HEADER_OVERFLOW: [431, 'request line or headers too large'],
  ERR_HTTP_REQUEST_TIMEOUT: [408, 'request not completed in time'],
  ERR_HTTP_HEADERS_TIMEOUT: [408, 'request headers not completed in time'],
  HPE_INVALID_CHUNK_SIZE: [400, 'malformed chunked body (bad chunk size)'],
  HPE_INVALID_TRANSFER_ENCODING: [400, 'malformed Transfer-Encoding'],
  HPE_INVALID_CONTENT_LENGTH: [400, 'bad Content-Length header'],
  HPE_UNEXPECTED_CONTENT_LENGTH: [
    400,
    'conflicting Content-Length (repeated, or beside Transfer-Encoding)',
  ],
  HPE_INVALID_EOF_STATE: [400, 'connection closed before the body was complete'],
};

/**
 * The raw HTTP response for an error the HTTP parser raised before any route
 * or hook ran (fastify's clientErrorHandler), in the same JSON shape as every
 * other error.
 */
export function clientErrorResponse(err: { code?: unknown }): string {
  const code = typeof err.code === 'string' ? err.code : '';
  const [status, message] = CLIENT_ERRORS[code] ?? [400, 'malformed HTTP request'];
  const f = toHttpFailure({ statusCode: status, message, code });
  const body = JSON.stringify(f.body);
  const reason = STATUS_TEXT[status] ?? 'Bad Request';
  return (
    `HTTP/1.1 ${status} ${reason}\r\nContent-Type: application/json; charset=utf-8\r\n` +
    `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`
  );
}

const STATUS_TEXT: Record<number, string> = {
  400: 'Bad Request',
  408: 'Request Timeout',
  431: 'Request Header Fields Too Large',
};

/** fastify's router errors (bad percent-encoding, 414) without echoing a huge URL back. */
export function frameworkError(err: { statusCode?: number; code?: string; message: string }): {
  statusCode: number;
  code: string | undefined;
  message: string;
} {
  const msg = err.message.length > 200 ? `${err.message.slice(0, 200)}...` : err.message;
  return { statusCode: err.statusCode ?? 400, code: err.code, message: msg };
}
