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
