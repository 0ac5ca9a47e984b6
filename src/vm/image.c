#include "vm/image.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "util/err.h"
#include "vm/spec.h"

#define IMAGES_PREFIX "/nc/images/"

static int check_path(const char *field, const char *path, bool required,
                      struct nc_errinfo *err) {
  if (!path) {
    if (required)
      return nc_errinfo_set(err, 400, "missing_field", field, "field \"%s\" is required", field);
    return 0;
  }
  if (path[0] != '/' || strlen(path) >= NC_PATH_MAX || strstr(path, "/../"))
    return nc_errinfo_set(err, 400, "invalid_field", field,
                          "%s must be an absolute path on this node without \"..\"", field);
  struct stat st;
  char ex[NC_EXCERPT_LEN * 3];
  if (stat(path, &st) != 0 || !S_ISREG(st.st_mode))
    return nc_errinfo_set(err, 422, "unprocessable", field,
                          "%s \"%s\" is not a readable file on this node", field,
                          nc_excerpt(path, ex, sizeof ex));
  return 0;
}

static int opt_string(json_t *req, const char *field, const char **out, struct nc_errinfo *err) {
  json_t *v = json_object_get(req, field);
  *out = NULL;
  if (!v || json_is_null(v))
    return 0;
  if (!json_is_string(v))
    return nc_errinfo_set(err, 400, "invalid_field", field, "field \"%s\" must be a string",
                          field);
  *out = json_string_value(v);
  return 0;
}

int nc_image_register(struct nc_store *store, json_t *req, struct nc_image *out,
                      struct nc_errinfo *err) {
  static const char *const allowed[] = {"name", "kernel", "initrd", "disk", "cmdline", "os", NULL};
  memset(out, 0, sizeof *out);
  if (!json_is_object(req))
    return nc_errinfo_set(err, 400, "bad_json", NULL, "the request body must be a JSON object");
  int rc = nc_json_check_fields(req, allowed, "register image", err);
  if (rc)
    return rc;
  const char *name, *kernel, *initrd, *disk, *cmdline;
  if ((rc = opt_string(req, "name", &name, err)) || (rc = opt_string(req, "kernel", &kernel, err)) ||
      (rc = opt_string(req, "initrd", &initrd, err)) || (rc = opt_string(req, "disk", &disk, err)) ||
      (rc = opt_string(req, "cmdline", &cmdline, err)))
    return rc;
  if (!name)
    return nc_errinfo_set(err, 400, "missing_field", "name", "field \"name\" is required");
  if ((rc = nc_name_check("image", "name", name, err)))
    return rc;
  if (!kernel && !disk)
    return nc_errinfo_set(err, 400, "missing_field", "kernel",
                          "an image needs a kernel or a disk (or both)");
  if ((rc = check_path("kernel", kernel, false, err)) ||
      (rc = check_path("initrd", initrd, false, err)) || (rc = check_path("disk", disk, false, err)))
    return rc;
  if (cmdline) {
    if (strlen(cmdline) > 1024)
      return nc_errinfo_set(err, 400, "invalid_field", "cmdline",
                            "cmdline is longer than 1024 characters");
    for (const char *p = cmdline; *p; p++)
      if ((unsigned char)*p < 0x20 || *p == 0x7f)
        return nc_errinfo_set(err, 400, "invalid_field", "cmdline",
                              "cmdline may not contain control characters");
  }
  snprintf(out->name, sizeof out->name, "%s", name);
  snprintf(out->kernel, sizeof out->kernel, "%s", kernel ? kernel : "");
  snprintf(out->initrd, sizeof out->initrd, "%s", initrd ? initrd : "");
  snprintf(out->disk, sizeof out->disk, "%s", disk ? disk : "");
  snprintf(out->cmdline, sizeof out->cmdline, "%s", cmdline ? cmdline : "");

  json_t *j = nc_image_to_json(out);
  char *text = json_dumps(j, JSON_COMPACT);
  json_decref(j);
  if (!text)
    return -ENOMEM;
  char key[128];
  snprintf(key, sizeof key, IMAGES_PREFIX "%s", out->name);
  rc = nc_store_cas(store, key, 0, text, strlen(text), NULL);
  free(text);
  if (rc == NC_E_TXNFAIL)
    return nc_errinfo_set(err, 409, "conflict", "name",
                          "image \"%s\" already exists (pick another name)", out->name);
  if (rc)
    return nc_errinfo_set(err, 500, "internal", NULL, "cannot store image: %s", nc_strerror(rc));
  return 0;
}

json_t *nc_image_to_json(const struct nc_image *img) {
  return json_pack("{s:s, s:s, s:s, s:s, s:s}", "name", img->name, "kernel", img->kernel,
                   "initrd", img->initrd, "disk", img->disk, "cmdline", img->cmdline);
}

static int from_json(const char *text, size_t len, struct nc_image *out) {
  json_t *j = json_loadb(text, len, 0, NULL);
  const char *name, *kernel, *initrd, *disk, *cmdline;
  if (!j || json_unpack(j, "{s:s, s:s, s:s, s:s, s:s}", "name", &name, "kernel", &kernel,
                        "initrd", &initrd, "disk", &disk, "cmdline", &cmdline) != 0) {
    json_decref(j);
    return NC_E_INVALID;
  }
  snprintf(out->name, sizeof out->name, "%s", name);
  snprintf(out->kernel, sizeof out->kernel, "%s", kernel);
  snprintf(out->initrd, sizeof out->initrd, "%s", initrd);
  snprintf(out->disk, sizeof out->disk, "%s", disk);
  snprintf(out->cmdline, sizeof out->cmdline, "%s", cmdline);
  json_decref(j);
  return 0;
}

int nc_image_get(struct nc_store *store, const char *name, struct nc_image *out) {
  if (!nc_name_valid(name))
    return -ENOENT;
  char key[128];
  snprintf(key, sizeof key, IMAGES_PREFIX "%s", name);
  struct nc_kv kv;
  int rc = nc_store_get(store, key, &kv);
  if (rc)
    return rc;
  rc = from_json(kv.value, kv.value_len, out);
  nc_kv_free(&kv);
  return rc;
}

json_t *nc_image_list_json(struct nc_store *store) {
  struct nc_kv_list l;
  if (nc_store_range(store, IMAGES_PREFIX, 0, &l) != 0)
    return NULL;
  json_t *arr = json_array();
  for (size_t i = 0; i < l.count; i++) {
    struct nc_image img;
    if (from_json(l.items[i].value, l.items[i].value_len, &img) == 0)
      json_array_append_new(arr, nc_image_to_json(&img));
  }
  nc_kv_list_free(&l);
  return json_pack("{s:o}", "images", arr);
}
