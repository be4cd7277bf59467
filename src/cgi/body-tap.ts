/** Keeping the start of a request body for the script log while the body streams on. */
import { finished, PassThrough, type Readable } from 'node:stream';

/** Passes the request body through while keeping its first bytes for the script log. */
export class BodyTap extends PassThrough {
  readonly #limit: number;
  #parts: Buffer[] = [];
  #kept = 0;
  constructor(limit: number) {
    super();
    this.#limit = limit;
  }
  get head(): Buffer {
    return Buffer.concat(this.#parts);
  }
  override _transform(chunk: Buffer, encoding: BufferEncoding, callback: (error?: Error | null, data?: unknown) => void): void {
    if (this.#kept < this.#limit) {
      const kept = chunk.subarray(0, this.#limit - this.#kept);
      this.#parts.push(Buffer.from(kept));
      this.#kept += kept.length;
    }
    super._transform(chunk, encoding, callback);
  }
}

/**
 * `source` piped through a new tap. pipe() passes on the end of the source
 * but not its abort: a body that stops short (the client went away, the web
 * server sent FCGI_ABORT_REQUEST) destroys the tap too, so whoever reads the
 * tap (a script's stdin) is released instead of waiting for an end that
 * never comes.
 */
export function tapBody(source: Readable, limit: number): BodyTap {
  const tap = new BodyTap(limit);
  // The tap errs only when its source stopped short: whoever reads the tap learns it from its end, and
  // an error nobody listens for (the reader gone already, or not started yet) must not take the server down.
  tap.on('error', () => {});
  source.pipe(tap);
  finished(source, { writable: false }, (error) => {
    if (error && !tap.destroyed) tap.destroy(error);
  });
  return tap;
}
