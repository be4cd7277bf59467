/**
 * SIGUSR1 reopens the log files (nginx's and php-fpm's convention; logrotate
 * moves the file, then signals). Installing the listener also keeps Node from
 * opening its inspector on SIGUSR1, which it does for a process without one.
 * Reopens never overlap: a signal that arrives during one runs another after it.
 */

/** Installs the SIGUSR1 listener; returns a function that removes it. */
export function onReopenSignal(reopen: () => Promise<void>): () => void {
  let running = false;
  let again = false;
  const run = async () => {
    running = true;
    try {
      do {
        again = false;
        try {
          await reopen();
        } catch {
          // reopen() logs its own failures; the old files stay in use.
        }
      } while (again);
    } finally {
      running = false;
    }
  };
  const listener = () => {
    if (running) again = true;
    else void run();
  };
  process.on('SIGUSR1', listener);
  return () => process.off('SIGUSR1', listener);
}
