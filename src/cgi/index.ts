/**
 * The CGI core's public surface: the node:http/Express/Fastify handler, and
 * the pieces the cgid daemon and the FastCGI proxy reuse (the environment
 * builder, the response-head parser, script resolution, running a script).
 */
export { cgi, type CgiOptions, type CgiHandler, type NextFunction } from './handler.js';
export {
  buildEnvironment,
  environmentRecord,
  environmentValue,
  searchWords,
  parseHostHeader,
  GATEWAY_INTERFACE,
  type CgiEnvironment,
  type CgiRequestDescription,
  type EnvironmentPolicy,
} from './environment.js';
export {
  ResponseHeadParser,
  parseResponseHead,
  type CgiResponseHead,
  type CgiHeadError,
  type HeadStep,
  type HeadLimits,
} from './response-head.js';
export { resolveScript, resolveInRoutes, normaliseUrlPath, type ScriptRoute, type Resolution, type ResolvedScript } from './resolve.js';
export { runScript, parseScriptTimeout, ScriptRun, type RunScriptOptions, type HeadOutcome, type RunResult } from './run-script.js';
export { SpawnError, type ScriptSpawner, type SpawnRequest, type SpawnedScript, type ScriptExit } from '../spawn/spawner.js';
export { ChildProcessSpawner } from '../spawn/fork.js';
export { ScriptLimiter } from './limiter.js';
export { ScriptLog, type ScriptLogOptions, type ScriptLogEntry } from './script-log.js';
export { spoolBody, type SpooledBody, type SpoolOutcome } from './body-spool.js';
export { requestFromEnvironment, type RequestHead } from './request-from-env.js';
