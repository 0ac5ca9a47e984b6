/* The image registry: named boot images a VM can be created from.
 *
 * An image is a kernel (+ optional initrd and command line) and/or a base
 * disk. Each VM gets its own qcow2 overlay over the base disk, so the base
 * is shared and never written. Images are records under /nc/images/<name>;
 * the files stay where the operator put them. */
#ifndef NC_VM_IMAGE_H
#define NC_VM_IMAGE_H

#include <jansson.h>

#include "store/store.h"
#include "util/errinfo.h"

#define NC_PATH_MAX 1024

struct nc_image {
  char name[64];
  char kernel[NC_PATH_MAX];
  char initrd[NC_PATH_MAX];
  char disk[NC_PATH_MAX];
  char cmdline[1025];
};

/* Validates a registration request (name, kernel, initrd, disk, cmdline;
 * paths absolute, existing regular files) and stores it. 409 if the name
 * is taken. */
int nc_image_register(struct nc_store *store, json_t *req, struct nc_image *out,
                      struct nc_errinfo *err);
int nc_image_get(struct nc_store *store, const char *name, struct nc_image *out);
json_t *nc_image_to_json(const struct nc_image *img);
/* {"images": [...]}. New reference, or NULL on store error. */
json_t *nc_image_list_json(struct nc_store *store);

#endif
