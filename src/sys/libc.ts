/**
 * What every module of src/sys shares: the one handle on glibc (koffi, the
 * binding gatehouse uses for every system call Node lacks), the ABI sizes,
 * the error a failed call throws, and raw memory blocks for struct
 * arguments. Only src/sys imports koffi; the rest of gatehouse calls typed
 * functions and never sees a pointer.
 */
import koffi from 'koffi';
import os from 'node:os';
import { ErrorCode, GatehouseError } from '../errors.js';

export { koffi };

export const libc = koffi.load('libc.so.6');
export const POINTER_SIZE = koffi.sizeof('void *');
export const SIZE_T_SIZE = koffi.sizeof('size_t');

const strerror = libc.func('const char *strerror(int errnum)');

function errnoToName(errno: number): string {
  for (const [name, value] of Object.entries(os.constants.errno)) if (value === errno) return name;
  return `errno ${errno}`;
}

/** A failed system call: `syscall`, `errno` (number) and `errnoName` (`EPERM`). */
export class SysError extends GatehouseError {
  readonly syscall: string;
  readonly errno: number;
  readonly errnoName: string;
  constructor(syscall: string, object: string, errno: number) {
    const errnoName = errnoToName(errno);
    super(ErrorCode.SYSCALL_FAILED, `${syscall}${object ? ` ${object}` : ''}: ${errnoName} (${String(strerror(errno))})`);
    this.name = 'SysError';
    this.syscall = syscall;
    this.errno = errno;
    this.errnoName = errnoName;
  }
}

/** SysError for the call that just failed (errno as koffi saved it), for a caller that rejects rather than throws. */
export function sysError(syscall: string, object: string, errno: number = koffi.errno()): SysError {
  return new SysError(syscall, object, errno);
}

/** Throws SysError for the call that just failed (errno as koffi saved it). */
export function fail(syscall: string, object: string, errno: number = koffi.errno()): never {
  throw sysError(syscall, object, errno);
}

/** Raw zeroed memory with a stable address; free() it, or keep it for reuse. */
export class Block {
  readonly ptr: unknown;
  readonly view: DataView;
  readonly bytes: Uint8Array;
  constructor(readonly size: number) {
    this.ptr = koffi.alloc('uint8_t', size);
    const buffer = koffi.view(this.ptr, size);
    this.view = new DataView(buffer);
    this.bytes = new Uint8Array(buffer);
    this.bytes.fill(0);
  }
  get address(): bigint {
    return koffi.address(this.ptr);
  }
  writePointer(offset: number, address: bigint): void {
    if (POINTER_SIZE === 8) this.view.setBigUint64(offset, address, true);
    else this.view.setUint32(offset, Number(address), true);
  }
  writeSize(offset: number, value: number): void {
    if (SIZE_T_SIZE === 8) this.view.setBigUint64(offset, BigInt(value), true);
    else this.view.setUint32(offset, value, true);
  }
  readSize(offset: number): number {
    return SIZE_T_SIZE === 8 ? Number(this.view.getBigUint64(offset, true)) : this.view.getUint32(offset, true);
  }
  free(): void {
    koffi.free(this.ptr);
  }
}

/** A block for the length of one call. */
export function withBlock<T>(size: number, use: (block: Block) => T): T {
  const block = new Block(size);
  try {
    return use(block);
  } finally {
    block.free();
  }
}

const closeCall = libc.func('int close(int fd)');

/** close(2) of a descriptor made in src/sys (descriptors Node owns are closed through Node). EINTR still closed it on Linux. */
export function closeDescriptor(fd: number): void {
  if ((closeCall(fd) as number) !== 0) {
    const errno = koffi.errno();
    if (errno !== os.constants.errno.EINTR) fail('close', `fd ${fd}`, errno);
  }
}

/** close(2) where a failure could only hide the error being handled (cleanup paths, callbacks): never throws. */
export function closeQuietly(fd: number): void {
  closeCall(fd);
}
