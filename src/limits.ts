/**
 * Every limit and default in gatehouse lives here, so that an operator (or a
 * reviewer) can see in one place what bounds memory, time and concurrency.
 * Modules import the constant they need; nothing else hard-codes these numbers.
 */

/** FastCGI 1.0: the content length field is 16 bits. */
export const FCGI_MAX_CONTENT_LENGTH = 65535;

/**
 * Largest PARAMS block (all name-value pairs of one request) the worker
 * library accepts. nginx's default fastcgi buffer is 4-8 KiB; Apache sends
 * about 2-4 KiB. 1 MiB leaves room for large cookies while bounding memory.
 * It also bounds the PARAMS one connection holds for all its requests whose
 * PARAMS have not ended (many ids opened and never finished).
 */
export const DEFAULT_MAX_PARAMS_BYTES = 1024 * 1024;

/** Requests one connection may have in flight at once (worker side cap). */
export const DEFAULT_MAX_REQUESTS_PER_CONNECTION = 64;

/** What the worker library answers to FCGI_MAX_CONNS in GET_VALUES. */
export const DEFAULT_WORKER_MAX_CONNS = 1024;

/** Highest request id the worker accepts (ids index a table; keep it bounded). */
export const DEFAULT_MAX_REQUEST_ID = 65535;

/**
 * How long a worker keeps reading (and discarding) a request body after the
 * response ended on a connection it will close, so the peer sees a clean FIN
 * instead of a reset that could destroy the response in flight.
 */
export const WORKER_DRAIN_TIMEOUT_MS = 5000;

/** Graceful stop: how long in-flight requests get before the process exits. */
export const WORKER_SHUTDOWN_TIMEOUT_MS = 30_000;

/** High-water mark of a worker response stream (bytes buffered before write() returns false). */
export const WORKER_RESPONSE_HIGH_WATER_MARK = 64 * 1024;

/** High-water mark of a request body stream before the socket is paused. */
export const REQUEST_BODY_HIGH_WATER_MARK = 64 * 1024;

/** Worker responses: body writes up to this size are copied into one record with its header; larger ones are framed without a copy. */
export const WORKER_SMALL_WRITE_BYTES = 16 * 1024;

/** FastCGI client defaults. */
export const CLIENT_CONNECT_TIMEOUT_MS = 10_000;
export const CLIENT_IDLE_TIMEOUT_MS = 60_000;
/** Capability probe (FCGI_GET_VALUES): assume no multiplexing without an answer by then. */
export const CLIENT_PROBE_TIMEOUT_MS = 1000;
export const CLIENT_MAX_CONNECTIONS = 64;
/** Requests waiting for a connection when the pool is at its cap; more are refused. */
export const CLIENT_MAX_QUEUED_REQUESTS = 1024;
/** How long an unused pooled connection stays open. */
export const CLIENT_KEEPALIVE_IDLE_MS = 30_000;
/** Largest single STDERR chunk the client keeps before handing it on. */
export const CLIENT_STDERR_LINE_MAX = 8192;
/**
 * After the client sends ABORT_REQUEST, how long the application has to end
 * the request with END_REQUEST before the client destroys the connection
 * (php-fpm, for one, ignores ABORT_REQUEST until the script finishes).
 */
export const CLIENT_ABORT_GRACE_MS = 2000;
/**
 * Requests the client puts on one connection when the application says
 * FCGI_MPXS_CONNS=1 but gives no FCGI_MAX_REQS (and the cap above any it gives).
 */
export const CLIENT_MAX_REQUESTS_PER_CONNECTION = 64;
/** High-water mark of a client response (STDOUT) stream before the socket is paused. */
export const CLIENT_RESPONSE_HIGH_WATER_MARK = 64 * 1024;
/**
 * FastCGI response buffering (nginx's fastcgi_buffers, then fastcgi_max_temp_file_size): bytes of one response kept in
 * memory while the client is slower than the application, then in an unlinked temporary file up to the second bound;
 * past both the application waits (backpressure). nginx keeps 8 x 4-8 KiB in memory and 1 GiB on disk.
 */
export const FASTCGI_BUFFER_MEMORY_BYTES = 256 * 1024;
export const FASTCGI_MAX_TEMP_FILE_BYTES = 1024 * 1024 * 1024;
/** Bytes read back from the temporary file per read. */
export const FASTCGI_BUFFER_READ_BYTES = 64 * 1024;
/** fetchAll(): largest STDOUT (and, separately, STDERR) it buffers before failing. */
export const CLIENT_FETCH_ALL_MAX_BYTES = 16 * 1024 * 1024;

/* ---- CGI (src/cgi) ---- */

/** Largest header block a CGI script may print before its blank line (Apache reads lines of at most 8 KiB). */
export const CGI_HEAD_MAX_BYTES = 64 * 1024;
/** Longest single header line from a script, terminator included (Apache's MAX_STRING_LEN). */
export const CGI_HEAD_MAX_LINE_BYTES = 8192;
/** Most header lines a script may print (a flood of lines would grow the response head unbounded). */
export const CGI_HEAD_MAX_LINES = 256;
/** mod_cgid's CGIDScriptTimeout default: a script that writes no output for this long is killed. */
export const CGI_SCRIPT_TIMEOUT_MS = 60_000;
/** After SIGTERM (client gone, server stopping), how long the script's group has before SIGKILL (APR's kill-after-timeout uses 3 s). */
export const CGI_KILL_GRACE_MS = 3000;
/** After a script closed its stdout, how long it may keep running before its group is terminated (Apache kills it at request end). */
export const CGI_EXIT_WAIT_MS = 3000;
/** Longest stderr line handed to the error log; longer lines are cut into pieces of this size. */
export const CGI_STDERR_LINE_MAX = 8192;
/** stderr bytes of one script run sent to the error log; a runaway script cannot fill the disk through it (the rest is drained). */
export const CGI_STDERR_LOG_MAX_BYTES = 4 * 1024 * 1024;
/** Scripts running at once; more wait in the queue. */
export const CGI_MAX_CONCURRENT_SCRIPTS = 128;
/** Requests waiting for a script slot; past this the answer is 503. */
export const CGI_MAX_QUEUED_SCRIPTS = 1024;
/** The error log warns that scripts queue when the oldest waiter has waited this long (or the queue is half full)... */
export const CGI_QUEUE_WARN_WAIT_MS = 1000;
/** ...at most once in this interval, with the queue's depth and its oldest wait. */
export const CGI_QUEUE_WARN_INTERVAL_MS = 10_000;
/** Apache's APACHE_ARG_MAX: a query without '=' splits into at most this many argv words, else none. */
export const CGI_MAX_ARGV_WORDS = 512;
/**
 * Whether a query without '=' becomes the script's command-line arguments
 * (RFC 3875 4.4, as Apache's mod_cgi does). Off: that is how CVE-2012-1823 and
 * CVE-2024-4577 reached php-cgi (`?-s` showed the source, `?-d+...` rewrote
 * php.ini); lighttpd and fcgiwrap pass no arguments either.
 */
export const CGI_QUERY_ARGUMENTS = false;
/** Apache's LimitInternalRecursion: local redirects (Location: /path) followed for one request. */
export const CGI_MAX_LOCAL_REDIRECTS = 10;
/** A chunked request body is kept in memory up to this size, then spooled to a temp file. */
export const CGI_BODY_MEMORY_SPOOL_BYTES = 1024 * 1024;
/** Largest request body a script is given (Apache's LimitRequestBody default since 2.4.54: 1 GiB); 413 above. */
export const CGI_MAX_REQUEST_BODY_BYTES = 1024 * 1024 * 1024;
/** High-water mark of the stream carrying a script's output to the consumer; above it the script's stdout is paused. */
export const CGI_OUTPUT_HIGH_WATER_MARK = 64 * 1024;
/** mod_cgi's ScriptLogLength default: the script log is not written once it is this large. */
export const CGI_SCRIPT_LOG_LENGTH = 10_385_760;
/** mod_cgi's ScriptLogBuffer default: request body bytes written to the script log per entry. */
export const CGI_SCRIPT_LOG_BUFFER = 1024;
/** Script output (after the header block) and stderr kept for one script log entry. */
export const CGI_SCRIPT_LOG_CAPTURE_BYTES = 64 * 1024;
/** Script log entries waiting to be written; more are dropped (and counted) so logging never holds memory unbounded. */
export const CGI_SCRIPT_LOG_QUEUE = 256;
/** How long the real path of a CGI route's root directory is reused before it is resolved again. */
export const CGI_ROOT_REALPATH_CACHE_MS = 1000;
/** Root directories whose real path is remembered; past this the memory is cleared (routes are few; this bounds it anyway). */
export const CGI_ROOT_REALPATH_CACHE_ENTRIES = 1000;

/* ---- kfcgi process manager (src/kfcgi) ---- */

/** kfcgi(8)'s defaults: socket, jail, pool size, idle release of extra workers in a variable pool. */
export const KFCGI_DEFAULT_SOCKET_PATH = '/var/www/run/httpd.sock';
export const KFCGI_DEFAULT_JAIL = '/var/www';
export const KFCGI_DEFAULT_WORKERS = 3;
export const KFCGI_DEFAULT_IDLE_SECONDS = 300;
/** Mode of the listening socket (and the status socket) from bind on. */
export const KFCGI_SOCKET_MODE = 0o660;
/** Where Linux tells the largest listen backlog; gatehouse's default backlog (kfcgi's 2 x pool makes nginx answer 502 under load). */
export const KFCGI_SOMAXCONN_PATH = '/proc/sys/net/core/somaxconn';
/** Backlog used when somaxconn cannot be read (Linux's default since 5.4). */
export const KFCGI_FALLBACK_BACKLOG = 4096;
/** Variable pools: connections the manager accepts per readiness callback before yielding to the rest of its event loop. */
export const KFCGI_ACCEPT_BATCH = 64;
/** Variable pools: cookies the manager reads from a worker's control socket per recvmsg (a busy worker may return several at once). */
export const KFCGI_COOKIES_PER_READ = 8;
/** Largest -n / -N accepted (each worker is a process; this is a typo guard, not a tuning knob). */
export const KFCGI_MAX_WORKERS = 4096;
/** Largest -C accepted: connections one variable-pool worker is given at once (a typo guard too). */
export const KFCGI_MAX_WORKER_CONNECTIONS = 4096;
/** Variable pools: cookies drawn from one getrandom(2) call (64 random bits each). */
export const KFCGI_COOKIES_PER_RANDOM_FILL = 512;
/** listen(2) backlog of the status socket (one reader at a time: `gatehouse kfcgi --status`). */
export const KFCGI_STATUS_BACKLOG = 16;
/** How long reading a running kfcgi's status socket may take. */
export const KFCGI_STATUS_READ_TIMEOUT_MS = 5000;
/** After SIGTERM to a worker (stop, release, restart), how long it has to exit before SIGKILL. */
export const KFCGI_KILL_GRACE_MS = 5000;
/** Respawn back-off: first delay after a worker exits early, doubling per quick exit up to the maximum. */
export const KFCGI_RESPAWN_MIN_DELAY_MS = 100;
export const KFCGI_RESPAWN_MAX_DELAY_MS = 10_000;
/** A worker that ran this long before exiting is considered healthy: the back-off starts over. */
export const KFCGI_RESPAWN_HEALTHY_MS = 10_000;
/** SIGHUP restart: how long to wait for a worker to be idle (between requests) before stopping it anyway. */
export const KFCGI_RESTART_IDLE_WAIT_MS = 10_000;
/** SIGHUP restart: pause between idleness checks of a busy worker. */
export const KFCGI_RESTART_POLL_MS = 10;
/** How often a variable or dynamic pool looks for workers idle longer than -w. */
export const KFCGI_IDLE_SWEEP_MS = 1000;
/** Fixed and dynamic pools: how often the manager reads the listen queue (growth, the most seen waiting, max-reached events). */
export const KFCGI_QUEUE_POLL_MS = 50;
/** Dynamic pools: workers started per second at most while connections wait, and at most this many at once. */
export const KFCGI_DYNAMIC_SPAWN_RATE = 32;
export const KFCGI_DYNAMIC_SPAWN_BURST = 8;
/** Stopping an idle worker: how long its process group has to reach the stopped state after SIGSTOP. */
export const KFCGI_FREEZE_WAIT_MS = 100;
/** Start: how long a socket that answers is asked again before it counts as a live server's (the workers of a killed manager are dying). */
export const KFCGI_STALE_SOCKET_WAIT_MS = 500;
/** Processes of one worker's tree (it and what it forked) that /proc is read for, a bound on the walk. */
export const KFCGI_PROCESS_TREE_MAX = 1024;
/** Longest line of a worker's stdout/stderr logged as one message; longer lines are cut. */
export const KFCGI_LOG_LINE_MAX = 4096;
/** Daemon start: how long the parent waits for the daemon to report that its workers started. */
export const KFCGI_DAEMON_READY_TIMEOUT_MS = 30_000;
/** Start-up check: if every first worker exits within this time, kfcgi gives up instead of respawning forever. */
export const KFCGI_STARTUP_CHECK_MS = 1000;

/** The HTTP front (`gatehouse serve`): defaults that defend against slow and oversized clients. */
export const HTTP_HEADERS_TIMEOUT_MS = 20_000;
export const HTTP_REQUEST_TIMEOUT_MS = 300_000;
export const HTTP_KEEPALIVE_TIMEOUT_MS = 5_000;
/**
 * Send timeout (Apache's Timeout as the stock httpd.conf sets it, nginx's send_timeout): a connection with output
 * waiting that the client takes nothing of for this long is closed, and the script or upstream request behind it stopped.
 */
export const HTTP_SEND_TIMEOUT_MS = 60_000;
/** Apache's LimitRequestFieldSize x a few fields; node's default is 16 KiB. */
export const HTTP_MAX_HEADER_BYTES = 16 * 1024;
/** Apache's LimitRequestLine default. */
export const HTTP_MAX_URL_BYTES = 8190;
export const HTTP_SHUTDOWN_GRACE_MS = 10_000;
/** Requests one keep-alive connection may serve before it is closed (0: no limit). */
export const HTTP_MAX_REQUESTS_PER_SOCKET = 0;
/**
 * Connections taken from a listening socket's queue in one turn of the event
 * loop beyond the one libuv accepts (src/http/accept-drain.ts): a burst is
 * accepted in its order at once, not one per turn.
 */
export const HTTP_ACCEPT_BATCH = 64;
/**
 * The same for each worker of `serve --workers N` (N > 1), which share the
 * listening sockets: with 64, the worker woken first took a whole burst
 * (wrk's 16 kept-alive connections went 100% to one worker in 5 of 12 runs,
 * at about 0.6x the throughput); with 4 every run split 35-65%.
 */
export const HTTP_ACCEPT_BATCH_SHARED = 4;
/**
 * Longest chunk-size line (with its extensions) or trailer line the front's chunk-size guard follows;
 * node:http itself answers 413 past 16 KiB of chunk extensions, so a longer line never gets that far.
 */
export const HTTP_CHUNK_LINE_MAX_BYTES = 32 * 1024;
/** Smallest max-header-bytes accepted (a request line and a Host header need that much). */
export const HTTP_MIN_HEADER_BYTES = 1024;
/** A stopping front waits for its scripts to be reaped for the shutdown grace plus this, looking every HTTP_STOP_POLL_MS. */
export const HTTP_STOP_REAP_SLACK_MS = 5000;
export const HTTP_STOP_POLL_MS = 50;
/** `gatehouse example`: how long it waits for its FastCGI application to listen, looking every EXAMPLE_APP_POLL_MS. */
export const EXAMPLE_APP_START_TIMEOUT_MS = 10_000;
export const EXAMPLE_APP_POLL_MS = 50;

/* ---- cgid daemon (src/cgid) ---- */

/** ScriptSock's default prefix (mod_cgid's), to which the server's pid is appended; relative to the runtime directory. */
export const CGID_SCRIPT_SOCK = 'cgisock';
/** Largest frame on the front-to-daemon socket: argv plus environment of one script, with room for large cookies. */
export const CGID_MAX_FRAME_BYTES = 4 * 1024 * 1024;
/** Bytes read from a daemon connection per recvmsg. */
export const CGID_READ_CHUNK_BYTES = 256 * 1024;
/** Descriptors one spawn order carries (the script's stdin, stdout, stderr). */
export const CGID_STDIO_DESCRIPTORS = 3;
/** Descriptors the daemon takes per read, so spawn orders the front sends together in one sendmsg: four orders' worth. */
export const CGID_BATCH_DESCRIPTORS = CGID_STDIO_DESCRIPTORS * 4;
/** Bytes of spawn orders the front sends together in one sendmsg, well under a unix socket's default send buffer (about 208 KiB). */
export const CGID_BATCH_BYTES = 64 * 1024;
/** Random bytes of the instance token shared by the front and the daemon it started. */
export const CGID_TOKEN_BYTES = 32;
/** How long the front waits for a daemon it started to answer its handshake. */
export const CGID_START_TIMEOUT_MS = 10_000;
/** Restart back-off after the daemon dies: first delay, doubling per quick death up to the maximum. */
export const CGID_RESTART_MIN_DELAY_MS = 100;
export const CGID_RESTART_MAX_DELAY_MS = 5_000;
/** A daemon that ran this long before dying was healthy: the back-off starts over. */
export const CGID_RESTART_HEALTHY_MS = 10_000;
/**
 * `gatehouse serve --workers N`: front processes (1 is the single process of old; `auto` is one per core,
 * at most this many). A worker that dies is started again after a back-off: the first delay, doubling per
 * quick death up to the maximum; one that ran for the healthy time starts the back-off over.
 */
export const SERVE_WORKERS_DEFAULT = 1;
export const SERVE_WORKERS_MAX = 256;
export const SERVE_WORKER_RESTART_MIN_DELAY_MS = 100;
export const SERVE_WORKER_RESTART_MAX_DELAY_MS = 5_000;
export const SERVE_WORKER_RESTART_HEALTHY_MS = 10_000;
/** How long a worker may take from its start to listening before the supervisor gives up on it. */
export const SERVE_WORKER_START_TIMEOUT_MS = 15_000;
/** listen(2) backlog of the sockets the supervisor makes for its workers (node:http's own default). */
export const SERVE_LISTEN_BACKLOG = 511;
/** When a front's connection closes (or the daemon stops), its scripts get SIGTERM, then SIGKILL after this. */
export const CGID_KILL_GRACE_MS = 3000;
/** suexec: the lowest uid and gid scripts may run as (Apache's suexec AP_UID_MIN / AP_GID_MIN are distribution choices; 1000 is Debian's first user). */
export const CGID_SUEXEC_MIN_UID = 1000;
export const CGID_SUEXEC_MIN_GID = 1000;
/** The helper that sets uid, gid and initgroups(3) between the daemon and a suexec script (util-linux). */
export const CGID_SETPRIV_PATH = '/usr/bin/setpriv';
/**
 * FastCGI face: script output held back while the request body is still arriving (nginx stops sending the
 * body once it has forwarded a response header); past this the output is sent and the rest of the body may never come.
 */
export const CGID_FASTCGI_HOLD_BYTES = 8 * 1024 * 1024;
/** The wrapper that sets a script's resource limits on itself and execs it (util-linux). */
export const CGID_PRLIMIT_PATH = '/usr/bin/prlimit';
/**
 * How long a kept-alive connection may sit idle while another request to the
 * same application has had no answer yet, before the client closes it so the
 * application's process can accept the waiting connection (php-fpm and libfcgi
 * processes stay with a kept-alive connection). Short, but long enough for the
 * caller's next request to pick the idle connection up first.
 */
export const CLIENT_IDLE_HANDOFF_MS = 50;
/**
 * A request with no answer for this long, while connections to the same
 * application keep finishing requests, is taken to be stuck unaccepted in the
 * application's listen queue: finished connections are then closed instead of
 * reused, so the application's processes move on to the waiting connections,
 * and the pool learns how many connections the application serves at once and
 * opens no more. A slow script mistaken for a stuck one costs only a reconnect.
 */
export const CLIENT_STARVATION_MS = 250;
/** The front gives up on a daemon that has not answered a spawn order for this long (stopped or wedged) and replaces it. */
export const CGID_SPAWN_ANSWER_TIMEOUT_MS = 15_000;
/** How often the front looks for spawn orders past that timeout (more often when the timeout is shorter). */
export const CGID_SPAWN_ANSWER_CHECK_MS = 1000;
/** A stopping daemon waits for its scripts to be reaped for the kill grace plus this, then exits anyway. */
export const CGID_STOP_REAP_SLACK_MS = 1000;
/** How often a stopping daemon looks whether its scripts are reaped. */
export const CGID_STOP_POLL_MS = 20;
/** Lines of a daemon's stderr kept to explain why it failed to start. */
export const CGID_START_ERROR_LINES = 20;
/** `gatehouse cgid --fastcgi` on SIGTERM: how long requests in flight get before their connections are closed. */
export const CGID_FASTCGI_STOP_GRACE_MS = 10_000;
/** At a stop, how long a process that dropped root waits for its socket keeper (src/cgid/socket-keeper.ts) to remove its sockets. */
export const SOCKET_KEEPER_WAIT_MS = 2000;
/** posix_spawn without pidfd_open (kernels before 5.3): how often an exited script is looked for with waitpid. */
export const SPAWN_REAP_POLL_MS = 20;

/** The longest a Node timer can wait: durations above it would fire at once (after 1 ms). */
export const MAX_DURATION_MS = 2 ** 31 - 1;
/** How often node:http checks its header and request timeouts: a quarter of the shortest, within these bounds. */
export const HTTP_TIMEOUT_CHECK_MIN_MS = 50;
export const HTTP_TIMEOUT_CHECK_MAX_MS = 1000;
/** listen(2) backlog of the daemon's socket (fronts connect once and keep the connection; the kernel caps it at somaxconn). */
export const CGID_LISTEN_BACKLOG = 4096;

/* ---- deployment: unix sockets, users, systemd ---- */

/**
 * Mode of a unix socket gatehouse binds for others to connect to (serve's
 * unix listeners, cgid --fastcgi, the worker library's listen()), from bind
 * on: owner and group may connect, others not (php-fpm's listen.mode).
 */
export const UNIX_SOCKET_MODE = 0o660;
/** listen(2) backlog of a unix listener made by gatehouse (spawn-fcgi's -b default; the kernel caps it at somaxconn). */
export const UNIX_SOCKET_BACKLOG = 1024;
/** Users `gatehouse example` runs as when started as root, in order of preference. */
export const EXAMPLE_UNPRIVILEGED_USERS = ['www-data', 'nobody'] as const;
/** sd_listen_fds(3): the first descriptor systemd passes. */
export const SYSTEMD_LISTEN_FDS_START = 3;

/**
 * Log lines held in memory by one log (error or access log) while the disk or
 * the reader of a pipe is slower than they come. Past it, lines are dropped,
 * counted, and one line says how many; logging never blocks the event loop
 * and never holds memory unbounded. 1 MiB is about 7,000 access log lines.
 */
export const LOG_BUFFER_MAX_BYTES = 1024 * 1024;

/**
 * A log written to a file gets at most one batch per this many milliseconds
 * (and at most one per turn of the event loop when quieter): each batch is a
 * write on libuv's thread pool, with a wake-up on both sides, which at
 * thousands of requests a second cost more than formatting the lines. The
 * delay a line can wait is this, not more; a stop or a reopen writes at once.
 */
export const LOG_FILE_BATCH_INTERVAL_MS = 10;

/** A graceful stop waits this long for a log written to a pipe or terminal to drain (a file is always written out). */
export const LOG_DRAIN_TIMEOUT_MS = 5000;

/** Where syslog(3) sends its messages; without it kfcgi logs to standard error instead (containers, minimal systems). */
export const SYSLOG_SOCKET_PATH = '/dev/log';

/**
 * The metrics listener (serve, cgid --fastcgi, kfcgi: `metrics` / -M): its own
 * small HTTP server for Prometheus and `gatehouse status`. Bounded like any
 * listener: a few connections (Prometheus keeps one), short timeouts.
 */
export const METRICS_MAX_CONNECTIONS = 16;
export const METRICS_LISTEN_BACKLOG = 64;
/** A scrape or status request must arrive whole within this time. */
export const METRICS_REQUEST_TIMEOUT_MS = 10_000;
/** An idle kept-alive metrics connection is closed after this long (Prometheus scrapes every 15 s by default, 1 m at most usually). */
export const METRICS_KEEPALIVE_TIMEOUT_MS = 65_000;
/** Mode of a metrics unix socket from bind on (as the other sockets: owner and group). */
export const METRICS_SOCKET_MODE = 0o660;
/**
 * Histogram buckets, in seconds. Requests: from a static file served from the
 * page cache (about 100 µs) to the default script timeout; spawns: from
 * posix_spawn (about 120 µs) to a daemon round trip on a loaded machine.
 */
export const METRICS_REQUEST_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];
export const METRICS_SPAWN_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1];
/**
 * How often prom-client's event-loop-delay monitor (nodejs_eventloop_lag_*)
 * samples: its default, 10 ms, wakes an idle process 100 times a second,
 * which cost serve about 8 ms of CPU a second here (0.8% of a core with no
 * traffic, several per cent of the CPU per request of a CGI route at 100
 * requests/s); 100 ms still sees any stall that matters to an operator.
 */
export const METRICS_EVENT_LOOP_RESOLUTION_MS = 100;

/** `gatehouse status ADDRESS`: how long it waits for an answer. */
export const STATUS_READ_TIMEOUT_MS = 5000;
/** Largest status answer read (a kfcgi pool of 4096 workers is about 600 KiB of JSON). */
export const STATUS_MAX_BYTES = 4 * 1024 * 1024;

/**
 * serve --workers with metrics: how long the supervisor waits, at each scrape
 * or status request, for a worker's numbers over the IPC channel. A worker
 * answers within a turn of its event loop; one that does not within this time
 * is left out of that scrape (gatehouse_serve_workers_scraped says so), well
 * before Prometheus's own scrape timeout (10 s by default, 1 s in the tests).
 */
export const SERVE_WORKER_METRICS_TIMEOUT_MS = 500;
