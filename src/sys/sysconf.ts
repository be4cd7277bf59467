/**
 * sysconf(3) values that turn /proc's units into seconds and bytes: clock
 * ticks (utime, stime in /proc/PID/stat) and the page size (its rss field).
 */
import { libc } from './libc.js';

const sysconf = libc.func('long sysconf(int name)');
// glibc's numbering (bits/confname.h), the same on every Linux architecture.
const _SC_CLK_TCK = 2;
const _SC_PAGESIZE = 30;

let ticks: number | null = null;
let pageBytes: number | null = null;

/** Clock ticks per second (USER_HZ, 100 on Linux). */
export function clockTicksPerSecond(): number {
  ticks ??= Number(sysconf(_SC_CLK_TCK)) || 100;
  return ticks;
}

/** Bytes per memory page. */
export function pageSize(): number {
  pageBytes ??= Number(sysconf(_SC_PAGESIZE)) || 4096;
  return pageBytes;
}
