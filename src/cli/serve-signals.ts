/**
 * The signals `gatehouse serve` acts on, in one place, with nginx's meanings:
 * TERM and INT stop gracefully (a second one exits at once), HUP re-reads the
 * configuration. Handlers only hand the signal to the command, which performs
 * the action in its own order (a reload never runs twice at once).
 *
 * SIGUSR1 (reopening the logs) is wired by the logging code; until a command
 * listens for it, src/cli/main.ts keeps Node from opening its inspector on it.
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
  process.on('SIGHUP', reload);
  return () => {
    process.off('SIGTERM', stop);
    process.off('SIGINT', stop);
    process.off('SIGHUP', reload);
  };
}
