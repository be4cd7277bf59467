/**
 * The signals `gatehouse serve` acts on, in one place, with nginx's meanings:
 * TERM, INT and QUIT stop gracefully (a second one exits at once), HUP re-reads the
 * configuration. Handlers only hand the signal to the command, which performs
 * the action in its own order (a reload never runs twice at once).
 *
 * SIGUSR1 (reopening the logs) is wired by the logging code (onReopenSignal);
 * src/cli/main.ts keeps Node from opening its inspector on it before and after.
 */
export interface ServeSignalActions {
  stop(signal: NodeJS.Signals): void;
  reload(): void;
}

/** Installs the handlers; returns a function that removes them. */
export function handleServeSignals(actions: ServeSignalActions): () => void {
  const stop = (signal: NodeJS.Signals) => actions.stop(signal);
  const reload = () => actions.reload();
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  process.on('SIGQUIT', stop);
  process.on('SIGHUP', reload);
  return () => {
    process.off('SIGTERM', stop);
    process.off('SIGINT', stop);
    process.off('SIGQUIT', stop);
    process.off('SIGHUP', reload);
  };
}
