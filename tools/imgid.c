/* nc-imgid: prints the base-disk identity (vm/imgid.h) of each FILE, one
 * JSON object a line, as a source node sends it in a migration's prepare
 * request ("base_disk"). Two nodes whose files print the same line hold
 * the same base disk as far as migration checks it. The end-to-end tests
 * use it to make prepare requests of their own.
 *
 *   nc-imgid FILE...    exit 0; 1 if any FILE cannot be read (said on
 *                       stderr); 2 on usage */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/err.h"
#include "vm/imgid.h"

int main(int argc, char **argv) {
  if (argc < 2 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
    fprintf(stderr, "usage: nc-imgid FILE...\n"
                    "prints {\"path\", \"size\", \"xxh128\"} for each FILE: its size and the "
                    "XXH3-128 of\nits first and last MiB and 48 evenly spaced 64 KiB blocks "
                    "(all of a file\nof 5 MiB or less), as live migration compares base "
                    "disks\n");
    return 2;
  }
  int status = 0;
  for (int i = 1; i < argc; i++) {
    struct nc_imgid id;
    int rc = nc_imgid_compute(argv[i], &id);
    if (rc) {
      fprintf(stderr, "nc-imgid: %s: %s\n", argv[i], nc_strerror(rc));
      status = 1;
      continue;
    }
    json_t *j = nc_imgid_to_json(&id);
    json_object_set_new(j, "path", json_string(argv[i]));
    char *text = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(j);
    if (!text) {
      fprintf(stderr, "nc-imgid: out of memory\n");
      return 1;
    }
    puts(text);
    free(text);
  }
  return status;
}
