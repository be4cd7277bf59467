/**
 * The signals `gatehouse cgid` acts on (the daemon and the FastCGI face), in
 * one place: TERM, INT and QUIT stop (the daemon terminates its scripts; the face
 * finishes the requests in flight). HUP is ignored rather than fatal: a
 * terminal hang-up or a stray `kill -HUP` must not take CGI down (the face
 * has no configuration file to re-read).
 *
 * SIGUSR1 (reopening the logs) is wired by the logging code (onReopenSignal);
 * src/cli/main.ts keeps Node from opening its inspector on it before and after.
 */
export interface CgidSignalActions {
  stop(signal: NodeJS.Signals): void;
}

/** Installs the handlers; returns a function that removes them. */
export function handleCgidSignals(actions: CgidSignalActions): () => void {
  const stop = (signal: NodeJS.Signals) => actions.stop(signal);
  const ignore = () => {};
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  process.on('SIGQUIT', stop);
  process.on('SIGHUP', ignore);
  return () => {
    process.off('SIGTERM', stop);
    process.off('SIGINT', stop);
    process.off('SIGQUIT', stop);
    process.off('SIGHUP', ignore);
  };
}
