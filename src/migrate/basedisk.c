/* The base disk both nodes must share (vm/imgid.h): the source names its
 * identity in the prepare request, the destination refuses another before
 * it creates anything. Contracts in migrate_int.h. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "migrate/migrate_int.h"
#include "util/err.h"
#include "util/log.h"
#include "vm/image.h"
#include "vm/imgid.h"
#include "vm/manager.h"

/* The identity of the base disk of the image registered here as image
 * (*has_disk false: it has none; img gets the registration). Errors: the
 * image's lookup, with img->name still "" (-ENOENT: not registered), or
 * reading its disk, with img->name set (-ENOENT: the file is gone). */
static int local_base_disk(struct nc_migrate *m, const char *image, struct nc_image *img,
                           bool *has_disk, struct nc_imgid *id) {
  memset(img, 0, sizeof *img); /* img->name stays "" unless the lookup worked */
  int rc = nc_vmm_image_get(m->cfg.vmm, image, img);
  if (rc)
    return rc;
  *has_disk = img->disk[0] != '\0';
  if (!*has_disk)
    return 0;
  bool cached = false;
  int64_t t0 = now_ms();
  rc = nc_imgid_cache_get(m->imgids, img->disk, id, &cached);
  if (rc == 0 && !cached) {
    char hex[NC_IMGID_HEX_LEN + 1];
    nc_info("migrate", "image \"%s\": base disk %s: %llu bytes, sampled xxh128 %s (read in "
            "%lld ms)",
            image, img->disk, (unsigned long long)id->size_bytes, nc_imgid_hex(id, hex),
            (long long)(now_ms() - t0));
  }
  return rc;
}

int nc__mig_src_base_disk(struct nc_migrate *m, const char *vm, const char *image,
                          json_t **field, struct nc_errinfo *err) {
  struct nc_image img;
  struct nc_imgid id;
  bool has_disk = false;
  int rc = local_base_disk(m, image ? image : "", &img, &has_disk, &id);
  if (rc == -ENOENT && img.name[0] == '\0')
    return nc_errinfo_set(err, 422, "unprocessable", "image",
                          "vm \"%s\": image \"%s\" is not registered on this node any more, so "
                          "its base disk cannot be named to the destination; the vm keeps "
                          "running here",
                          vm, image ? image : "");
  if (rc && img.name[0] == '\0')
    return nc_errinfo_set(err, 500, "internal", NULL, "cannot read the image registry: %s",
                          nc_strerror(rc));
  if (rc) {
    char ex[NC_EXCERPT_LEN * 3];
    return nc_errinfo_set(err, 500, "disk_error", "base_disk",
                          "vm \"%s\": cannot read the base disk %s of image \"%s\" (%s), which "
                          "the destination must check against its own; the vm keeps running "
                          "here",
                          vm, nc_excerpt(img.disk, ex, sizeof ex), image, nc_strerror(rc));
  }
  *field = has_disk ? nc_imgid_to_json(&id) : json_null();
  return 0;
}

int nc__mig_dst_check_base_disk(struct nc_migrate *m, json_t *body, struct nc_errinfo *err) {
  json_t *bd = json_object_get(body, "base_disk");
  /* Like a missing hde_version: a source from before the check, which
   * might bring a VM over a base disk this node does not have. */
  if (!bd)
    return nc_errinfo_set(err, 409, "incompatible_version", "base_disk",
                          "the source sent no base_disk (the identity of its image's base "
                          "disk, which this node checks against its own): it runs an older "
                          "NovaCron release; run the same release on both nodes");
  struct nc_imgid theirs = {0}, ours = {0};
  bool they_have = !json_is_null(bd);
  if (they_have && nc_imgid_from_json(bd, &theirs) != 0)
    return nc_errinfo_set(err, 400, "invalid_field", "base_disk",
                          "base_disk must be null or {\"size\": BYTES, \"xxh128\": \"32 hex "
                          "digits\"}");
  const char *image = json_string_value(json_object_get(json_object_get(body, "vm"), "image"));
  if (!image)
    return 0; /* not a valid spec: nc_vmm_ext_incoming refuses it */
  struct nc_image img;
  bool we_have = false;
  int rc = local_base_disk(m, image, &img, &we_have, &ours);
  if (rc == -ENOENT && img.name[0] == '\0')
    return 0; /* not registered here: nc_vmm_ext_incoming says so (422) */
  char ex[NC_EXCERPT_LEN * 3], src[64];
  const char *sv = json_string_value(json_object_get(body, "source"));
  snprintf(src, sizeof src, "%s", sv ? sv : "");
  const char *node = m->cfg.node_name ? m->cfg.node_name : "";
  if (rc && img.name[0] == '\0')
    return nc_errinfo_set(err, 500, "internal", NULL, "cannot read the image registry: %s",
                          nc_strerror(rc));
  if (rc)
    return nc_errinfo_set(err, 422, "unprocessable", "base_disk",
                          "image \"%s\": its base disk %s cannot be read on node \"%s\" (%s): "
                          "fix the file there, then migrate again",
                          image, nc_excerpt(img.disk, ex, sizeof ex), node, nc_strerror(rc));
  if (!we_have && !they_have)
    return 0;
  if (we_have && they_have && nc_imgid_equal(&ours, &theirs))
    return 0;
  char h1[NC_IMGID_HEX_LEN + 1] = "-", h2[NC_IMGID_HEX_LEN + 1] = "-";
  nc_warn("migrate", "refusing incoming vm of image \"%s\" from \"%s\": base disk here %s "
          "(%llu bytes, xxh128 %s), at the source %s (%llu bytes, xxh128 %s)",
          image, src, we_have ? img.disk : "none", (unsigned long long)ours.size_bytes,
          we_have ? nc_imgid_hex(&ours, h1) : "-", they_have ? "one" : "none",
          (unsigned long long)(they_have ? theirs.size_bytes : 0),
          they_have ? nc_imgid_hex(&theirs, h2) : "-");
  /* The fix first: a long name or path must not cut it off the message. */
  char path[NC_EXCERPT_LEN + 1];
  nc_excerpt(img.disk, path, sizeof path);
  if (!we_have)
    return nc_errinfo_set(err, 409, "image_mismatch", "base_disk",
                          "image \"%s\" has no base disk on node \"%s\" but has one on the "
                          "source \"%s\": register the same base disk file under image \"%s\" "
                          "on node \"%s\" (the source's: %llu bytes)",
                          image, node, src, image, node, (unsigned long long)theirs.size_bytes);
  if (!they_have)
    return nc_errinfo_set(err, 409, "image_mismatch", "base_disk",
                          "image \"%s\" has a base disk on node \"%s\" but none on the source "
                          "\"%s\": register image \"%s\" on node \"%s\" as on the source, "
                          "without a disk (here: %s, %llu bytes)",
                          image, node, src, image, node, path,
                          (unsigned long long)ours.size_bytes);
  return nc_errinfo_set(err, 409, "image_mismatch", "base_disk",
                        "image \"%s\" has another base disk on node \"%s\" than on the source "
                        "\"%s\": register the same base disk file under image \"%s\" on node "
                        "\"%s\" (here: %s, %llu bytes; the source's: %llu bytes; %s)",
                        image, node, src, image, node, path, (unsigned long long)ours.size_bytes,
                        (unsigned long long)theirs.size_bytes,
                        ours.size_bytes == theirs.size_bytes ? "same size, other content"
                                                             : "other size");
}
