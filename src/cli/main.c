/* novacron: the command-line client for novacrond. All logic is in the
 * nc_cli library; this file only hands it the process's surroundings. */
#include "cli/cli.h"

#include <stdlib.h>
#include <unistd.h>

int main(int argc, char **argv) {
  struct nc_cli_io io = {
      .out = stdout,
      .err = stderr,
      .in_fd = STDIN_FILENO,
      .out_fd = STDOUT_FILENO,
      .in_tty = isatty(STDIN_FILENO) == 1,
      .err_tty = isatty(STDERR_FILENO) == 1,
      .env_endpoint = getenv("NOVACRON_ENDPOINT"),
      .env_token = getenv("NOVACRON_TOKEN"),
      .env_data_dir = getenv("NOVACRON_DATA_DIR"),
  };
  return nc_cli_main(&io, argc, argv);
}
