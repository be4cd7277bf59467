/**
 * Where things are, seen from the compiled tests (dist/test/kit/): the
 * repository, the built CLI, and the fixture programs and scripts. Scripts,
 * C sources and data are read from the source tree (they are not compiled);
 * TypeScript fixture programs run from dist/.
 */
import { fileURLToPath } from 'node:url';

/** The repository root, with a trailing slash. */
export const REPO_ROOT = fileURLToPath(new URL('../../../', import.meta.url));
/** The built `gatehouse` command (dist/src/cli/main.js). */
export const GATEHOUSE_MAIN = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));
/** test/fixtures/cgi-bin in the source tree, with a trailing slash. */
export const CGI_FIXTURES = fileURLToPath(new URL('../../../test/fixtures/cgi-bin/', import.meta.url));
/** test/fixtures in the source tree (scripts, C sources), with a trailing slash. */
export const FIXTURES_SOURCE = fileURLToPath(new URL('../../../test/fixtures/', import.meta.url));
/** test/fixtures compiled (the TypeScript fixture programs), with a trailing slash. */
export const FIXTURES_BUILT = fileURLToPath(new URL('../fixtures/', import.meta.url));
/** examples/ in the source tree, with a trailing slash. */
export const EXAMPLES_DIR = fileURLToPath(new URL('../../../examples/', import.meta.url));
