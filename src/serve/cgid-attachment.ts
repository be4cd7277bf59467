/**
 * A `serve --workers` worker's ScriptSpawner: a connection to the cgid daemon
 * the supervisor started (one daemon, one ScriptSock for every worker). The
 * daemon keeps a connection's scripts apart from the others' and kills them
 * when that connection closes, so a worker that dies takes only its own
 * scripts with it.
 *
 * The supervisor restarts a daemon that dies; this side notices the closed
 * connection at once, kills the process groups of its scripts (no one would
 * reap or time them out any more), answers spawns with a CGID_UNAVAILABLE
 * SpawnError (503; counted as errno="daemon_unavailable" in the metrics) and
 * connects again with back-off until the new daemon answers.
 */
import { CgidConnection } from '../cgid/client.js';
import { killGroup, spawnThroughDaemon } from '../cgid/remote-spawn.js';
import { NO_LIMITS, type ScriptLimits } from '../spawn/order.js';
import type { SpawnPolicy } from '../spawn/posix-spawner.js';
import type { ScriptSpawner, SpawnedScript, SpawnRequest } from '../spawn/spawner.js';
import type { LogLevel } from '../log/index.js';
import { CGID_RESTART_MAX_DELAY_MS, CGID_RESTART_MIN_DELAY_MS } from '../limits.js';

export interface CgidEndpoint {
  socketPath: string;
  token: Buffer;
}

export class CgidAttachment implements ScriptSpawner {
  readonly #endpoint: CgidEndpoint;
  readonly #limits: ScriptLimits;
  readonly #policy: SpawnPolicy | undefined;
  readonly #log: (line: string, level?: LogLevel) => void;
  #connection: CgidConnection | null = null;
  #retryDelay = CGID_RESTART_MIN_DELAY_MS;
  #retryTimer: NodeJS.Timeout | undefined;
  #stopping = false;

  constructor(endpoint: CgidEndpoint, policy: SpawnPolicy | undefined, log: (line: string, level?: LogLevel) => void) {
    this.#endpoint = endpoint;
    this.#policy = policy;
    this.#limits = policy?.limits ?? NO_LIMITS;
    this.#log = log;
  }

  /** The first connection; rejects when the daemon does not answer (the worker then fails to start). */
  async start(): Promise<void> {
    this.#adopt(await CgidConnection.connect(this.#endpoint.socketPath, this.#endpoint.token));
  }

  get daemonPid(): number | undefined {
    return this.#connection?.daemonPid;
  }

  #adopt(connection: CgidConnection): void {
    this.#connection = connection;
    this.#retryDelay = CGID_RESTART_MIN_DELAY_MS;
    connection.once('close', (reason: string, pids: number[]) => {
      if (this.#connection === connection) this.#connection = null;
      for (const pid of pids) killGroup(pid);
      if (this.#stopping) return;
      this.#log(
        `cgid: lost the daemon connection (${reason}); ${pids.length} running script(s) killed; connecting again when the supervisor's daemon is back`,
        'error',
      );
      this.#scheduleReconnect();
    });
  }

  #scheduleReconnect(): void {
    const delay = this.#retryDelay;
    this.#retryDelay = Math.min(this.#retryDelay * 2, CGID_RESTART_MAX_DELAY_MS);
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = undefined;
      if (this.#stopping) return;
      CgidConnection.connect(this.#endpoint.socketPath, this.#endpoint.token).then(
        (connection) => {
          if (this.#stopping) return connection.close('worker stopping');
          this.#adopt(connection);
          this.#log(`cgid: connected to the daemon again (pid ${connection.daemonPid})`, 'info');
        },
        () => this.#scheduleReconnect(),
      );
    }, delay);
  }

  spawn(request: SpawnRequest): Promise<SpawnedScript> {
    return spawnThroughDaemon(this.#connection, request, { limits: this.#limits, policy: this.#policy, log: this.#log });
  }

  /** Closes the connection: the daemon terminates this worker's scripts still running (the front stopped them first). */
  async stop(): Promise<void> {
    this.#stopping = true;
    clearTimeout(this.#retryTimer);
    this.#connection?.close('worker stopping');
    this.#connection = null;
  }
}
