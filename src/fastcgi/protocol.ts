/**
 * FastCGI 1.0 constants, as published on 29 April 1996 (section 8 of the
 * specification). Pure data: no I/O.
 */

export const FCGI_VERSION_1 = 1;
export const FCGI_HEADER_LEN = 8;
/** The spec's name for the listening socket a web server hands its application. */
export const FCGI_LISTENSOCK_FILENO = 0;
export const FCGI_NULL_REQUEST_ID = 0;

export const RecordType = {
  BEGIN_REQUEST: 1,
  ABORT_REQUEST: 2,
  END_REQUEST: 3,
  PARAMS: 4,
  STDIN: 5,
  STDOUT: 6,
  STDERR: 7,
  DATA: 8,
  GET_VALUES: 9,
  GET_VALUES_RESULT: 10,
  UNKNOWN_TYPE: 11,
} as const;
export type RecordType = (typeof RecordType)[keyof typeof RecordType];
/** Highest type defined by the spec; anything above is FCGI_UNKNOWN_TYPE material. */
export const FCGI_MAXTYPE = RecordType.UNKNOWN_TYPE;

export const RECORD_TYPE_NAMES: Readonly<Record<number, string>> = Object.freeze(
  Object.fromEntries(Object.entries(RecordType).map(([name, value]) => [value, name])),
);

export const Role = {
  RESPONDER: 1,
  AUTHORIZER: 2,
  FILTER: 3,
} as const;
export type Role = (typeof Role)[keyof typeof Role];

/** Flag in FCGI_BeginRequestBody: keep the connection open after the request. */
export const FCGI_KEEP_CONN = 1;

export const ProtocolStatus = {
  REQUEST_COMPLETE: 0,
  CANT_MPX_CONN: 1,
  OVERLOADED: 2,
  UNKNOWN_ROLE: 3,
} as const;
export type ProtocolStatus = (typeof ProtocolStatus)[keyof typeof ProtocolStatus];

/** Variable names for FCGI_GET_VALUES / FCGI_GET_VALUES_RESULT. */
export const FCGI_MAX_CONNS = 'FCGI_MAX_CONNS';
export const FCGI_MAX_REQS = 'FCGI_MAX_REQS';
export const FCGI_MPXS_CONNS = 'FCGI_MPXS_CONNS';

/** Record types that belong to the management channel (request id 0). */
export function isManagementType(type: number): boolean {
  return type === RecordType.GET_VALUES || type === RecordType.GET_VALUES_RESULT || type === RecordType.UNKNOWN_TYPE;
}

/**
 * kcgi's FastCGI Extensions for Management Control (variable pools): the
 * manager passes each accepted connection with a cookie of this size, and the
 * worker writes the cookie back when it is done with the connection.
 */
export const KCGI_COOKIE_BYTES = 8;
