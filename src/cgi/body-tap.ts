/** Keeping the start of a request body for the script log while the body streams on. */
import { PassThrough } from 'node:stream';

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
