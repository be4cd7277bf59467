/**
 * CGI scripts' metrics, for serve's CGI routes and cgid --fastcgi: spawns,
 * their latency and failures by errno, scripts alive, exits by status or
 * signal, measured around the ScriptSpawner (whichever it is: the cgid
 * daemon, posix_spawn in the process, child_process). The command wraps its
 * spawner in a MeteredSpawner only when metrics are on, so the spawner
 * itself knows nothing of them; and the script limiter's state (running,
 * queued, refused), read at each scrape.
 *
 * Names, types and labels are documented in gatehouse-serve(8) and
 * gatehouse-cgid(8), METRICS.
 */
import { METRICS_REQUEST_BUCKETS, METRICS_SPAWN_BUCKETS } from '../limits.js';
import { ErrorCode } from '../errors.js';
import type { ScriptExit, ScriptSpawner, SpawnedScript, SpawnRequest } from '../spawn/spawner.js';
import type { ScriptLimiter } from '../cgi/limiter.js';
import type { Counter, Gauge, Histogram } from 'prom-client';
import type { MetricsRegistry } from './registry.js';

export interface ScriptMetrics {
  spawns: Counter<string>;
  failures: Counter<'errno'>;
  spawnSeconds: Histogram<string>;
  alive: Gauge<string>;
  exits: Counter<'reason' | 'code'>;
  runSeconds: Histogram<string>;
}

export function registerScriptMetrics(metrics: MetricsRegistry): ScriptMetrics {
  return {
    spawns: metrics.counter({ name: 'gatehouse_cgi_spawns_total', help: 'Scripts the spawner was asked to start.' }),
    failures: metrics.counter({
      name: 'gatehouse_cgi_spawn_failures_total',
      help: "Scripts that could not be started, by the failed call's errno; daemon_unavailable: no call was made, the cgid daemon was down or restarting (503).",
      labelNames: ['errno'],
    }),
    spawnSeconds: metrics.histogram({
      name: 'gatehouse_cgi_spawn_duration_seconds',
      help: 'Time to start a script, from the order to its pid (through the cgid daemon: the round trip to it included).',
      buckets: METRICS_SPAWN_BUCKETS,
    }),
    alive: metrics.gauge({ name: 'gatehouse_cgi_scripts_alive', help: 'Scripts started and not yet reaped.' }),
    exits: metrics.counter({
      name: 'gatehouse_cgi_script_exits_total',
      help: 'Scripts reaped, by how they ended: reason exit (code: the exit status), signal (code: its name), lost (the cgid daemon died).',
      labelNames: ['reason', 'code'],
    }),
    runSeconds: metrics.histogram({
      name: 'gatehouse_cgi_script_duration_seconds',
      help: 'Time from a script started to it reaped.',
      buckets: METRICS_REQUEST_BUCKETS,
    }),
  };
}

/** The labels of a script's exit. */
export function exitLabels(exit: ScriptExit): { reason: string; code: string } {
  if (exit.lost) return { reason: 'lost', code: '' };
  if (exit.signal) return { reason: 'signal', code: exit.signal };
  return { reason: 'exit', code: String(exit.code ?? '') };
}

/**
 * The errno label of a failed spawn: the failed system call's errno name
 * (ENOENT, EACCES, ...), or, when no call failed, a lowercase word that no
 * errno can be: daemon_unavailable (the order never reached a spawner because
 * the cgid daemon was down or restarting) or unknown. One label, so an alert
 * on the daemon is `{errno="daemon_unavailable"}` and one on scripts that
 * cannot run matches `{errno=~"E.*"}`.
 */
export function spawnErrno(error: unknown): string {
  const { errno, code } = error as { errno?: unknown; code?: unknown };
  if (typeof errno === 'string' && errno !== '') return errno;
  if (code === ErrorCode.CGID_UNAVAILABLE) return SPAWN_DAEMON_UNAVAILABLE;
  return 'unknown';
}

/** The errno label of a spawn refused because the cgid daemon was down or restarting (gatehouse-serve(8), METRICS). */
export const SPAWN_DAEMON_UNAVAILABLE = 'daemon_unavailable';

/** A ScriptSpawner that counts and times what `inner` does. */
export class MeteredSpawner implements ScriptSpawner {
  readonly #inner: ScriptSpawner;
  readonly #metrics: ScriptMetrics;

  constructor(inner: ScriptSpawner, metrics: ScriptMetrics) {
    this.#inner = inner;
    this.#metrics = metrics;
  }

  async spawn(request: SpawnRequest): Promise<SpawnedScript> {
    const metrics = this.#metrics;
    metrics.spawns.inc();
    const started = performance.now();
    let script: SpawnedScript;
    try {
      script = await this.#inner.spawn(request);
    } catch (error) {
      metrics.failures.inc({ errno: spawnErrno(error) });
      throw error;
    }
    const running = performance.now();
    metrics.spawnSeconds.observe((running - started) / 1000);
    metrics.alive.inc();
    void script.exited.then((exit) => {
      metrics.alive.dec();
      metrics.exits.inc(exitLabels(exit));
      metrics.runSeconds.observe((performance.now() - running) / 1000);
    });
    return script;
  }
}

/**
 * The script limiter (max-scripts and its queue), read at each scrape. Given
 * as a function when a reload (serve's SIGHUP) can replace it: the gauges then
 * follow the new limiter (its max-scripts too), and the rejections counter
 * keeps what replaced limiters counted, so it never goes back.
 */
export function registerLimiterMetrics(metrics: MetricsRegistry, limiter: ScriptLimiter | (() => ScriptLimiter | null)): void {
  const current = typeof limiter === 'function' ? limiter : () => limiter;
  const refused = new CarriedTotal();
  metrics.gauge({
    name: 'gatehouse_cgi_scripts_running',
    help: 'Requests holding one of the max-scripts slots (starting or running a script).',
    collect() {
      this.set(current()?.running ?? 0);
    },
  });
  metrics.gauge({
    name: 'gatehouse_cgi_scripts_queued',
    help: 'Requests waiting for a slot.',
    collect() {
      this.set(current()?.queued ?? 0);
    },
  });
  metrics.gauge({
    name: 'gatehouse_cgi_scripts_max',
    help: 'max-scripts: scripts run at once at most.',
    collect() {
      this.set(current()?.maxRunning ?? 0);
    },
  });
  metrics.gauge({
    name: 'gatehouse_cgi_queue_max',
    help: 'max-queued-scripts: requests that may wait for a slot.',
    collect() {
      this.set(current()?.maxQueued ?? 0);
    },
  });
  metrics.counter({
    name: 'gatehouse_cgi_queue_rejections_total',
    help: 'Requests answered 503 at once because every slot was taken and the queue was full.',
    collect() {
      const now = current();
      this.reset();
      this.inc(refused.total(now ? [[now, now.refused]] : []));
    },
  });
}

/**
 * A total read from objects that a reload replaces (a script limiter, a
 * FastCGI route's clients): each new one counts from 0, so what the replaced
 * ones had counted at the last reading is carried on, and the total never
 * goes back (Prometheus would read a drop as a counter reset). What a
 * replaced object counted after its last reading (requests it still finished)
 * is not seen.
 */
export class CarriedTotal {
  #last = new Map<object, number>();
  #carried = 0;

  /** The carried total plus every current object's count. */
  total(current: Iterable<readonly [object, number]>): number {
    const next = new Map<object, number>(current);
    for (const [owner, value] of this.#last) if (!next.has(owner)) this.#carried += value;
    this.#last = next;
    let total = this.#carried;
    for (const value of next.values()) total += value;
    return total;
  }
}
