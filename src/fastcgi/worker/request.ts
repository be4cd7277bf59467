/**
 * The request side of the worker library: a Readable of the request body
 * (FCGI_STDIN), with the head read from the FastCGI params through the shared
 * CGI variable model. Shaped like node:http's IncomingMessage so handlers
 * written for node:http read it the same way.
 */
import { Readable } from 'node:stream';
import { requestFromEnvironment } from '../../cgi/request-from-env.js';
import type { NameValuePair } from '../name-value.js';
import { Role } from '../protocol.js';
import { REQUEST_BODY_HIGH_WATER_MARK } from '../../limits.js';

/** Param values as text: UTF-8 where the bytes are valid UTF-8, else Latin-1 (every byte kept, one char each). */
export function paramsToObject(pairs: readonly NameValuePair[]): Record<string, string> {
  const params: Record<string, string> = Object.create(null);
  for (const [name, value] of pairs) params[decodeParamText(name)] = decodeParamText(value);
  return params;
}

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

function decodeParamText(bytes: Buffer): string {
  // ASCII is by far the common case and needs no validation.
  let ascii = true;
  for (let i = 0; i < bytes.length; i++) {
    if (bytes[i]! > 0x7f) {
      ascii = false;
      break;
    }
  }
  if (ascii) return bytes.toString('latin1');
  try {
    return utf8.decode(bytes);
  } catch {
    return bytes.toString('latin1');
  }
}

export interface RequestInit {
  requestId: number;
  role: Role;
  rawParams: NameValuePair[];
  /** Called when the consumer wants more body after push() said stop. */
  onRead: () => void;
}

export class FastCGIRequest extends Readable {
  readonly requestId: number;
  readonly role: Role;
  readonly method: string;
  readonly url: string;
  readonly headers: Record<string, string>;
  readonly httpVersion: string;
  /** The params as text (see paramsToObject for how bytes become text). */
  readonly params: Record<string, string>;
  /** The params exactly as received, as bytes, in order: lossless. */
  readonly rawParams: readonly NameValuePair[];
  /** Set when the web server sent FCGI_ABORT_REQUEST (or the connection died) before the request finished. */
  aborted = false;
  /** True once the whole body (FCGI_STDIN up to its empty record) has been received. */
  complete = false;
  /** The filter role's file (FCGI_DATA); null for responders and authorizers. */
  readonly data: Readable | null;
  readonly #onRead: () => void;

  constructor(init: RequestInit) {
    super({ highWaterMark: REQUEST_BODY_HIGH_WATER_MARK });
    this.requestId = init.requestId;
    this.role = init.role;
    this.rawParams = init.rawParams;
    this.params = paramsToObject(init.rawParams);
    const head = requestFromEnvironment(this.params);
    this.method = head.method;
    this.url = head.url;
    this.headers = head.headers;
    this.httpVersion = head.httpVersion;
    this.#onRead = init.onRead;
    this.data = init.role === Role.FILTER ? new Readable({ highWaterMark: REQUEST_BODY_HIGH_WATER_MARK, read: init.onRead }) : null;
  }

  /** The client's address as the web server reported it (REMOTE_ADDR). */
  get remoteAddress(): string | undefined {
    return this.params.REMOTE_ADDR;
  }

  override _read(): void {
    this.#onRead();
  }
}
