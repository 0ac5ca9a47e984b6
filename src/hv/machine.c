/* Machine type listings. See machine.h. */
#include "hv/machine.h"

#include <stdio.h>
#include <string.h>

#include "util/err.h"

#define HEADER "Supported machines are:"

bool nc_hv_machine_name_valid(const char *s) {
  size_t n = s ? strlen(s) : 0;
  if (n == 0 || n > NC_HV_MACHINE_LEN_MAX)
    return false;
  return strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") == n;
}

/* Copies the token [s, s+n) into out (cap NC_HV_MACHINE_LEN_MAX + 1) if it
 * is a valid name; false otherwise. */
static bool take_name(const char *s, size_t n, char *out) {
  if (n == 0 || n > NC_HV_MACHINE_LEN_MAX)
    return false;
  memcpy(out, s, n);
  out[n] = '\0';
  return nc_hv_machine_name_valid(out);
}

/* One line after the header: "<name> <spaces> <description>". The
 * description may end in "(alias of X)", "(default)", "(deprecated)". */
static int parse_line(const char *line, size_t len, struct nc_hv_machines *out) {
  size_t n = strcspn(line, " \t");
  if (n > len)
    n = len;
  struct nc_hv_machine m;
  memset(&m, 0, sizeof m);
  if (!take_name(line, n, m.name))
    return 0; /* not a machine line (or a name we would never use) */
  char desc[512];
  size_t dl = len - n < sizeof desc - 1 ? len - n : sizeof desc - 1;
  memcpy(desc, line + n, dl);
  desc[dl] = '\0';
  const char *al = strstr(desc, "(alias of ");
  if (al) {
    al += strlen("(alias of ");
    size_t an = strcspn(al, ")");
    if (al[an] != ')' || !take_name(al, an, m.alias_of))
      return 0;
  }
  m.deprecated = strstr(desc, "(deprecated)") != NULL;
  if (out->n == NC_HV_MACHINES_MAX)
    return NC_E_TOOBIG;
  out->v[out->n++] = m;
  return 0;
}

int nc_hv_machines_parse(const char *text, struct nc_hv_machines *out) {
  out->n = 0;
  if (strnlen(text, NC_HV_MACHINE_HELP_MAX + 1) > NC_HV_MACHINE_HELP_MAX)
    return NC_E_TOOBIG;
  const char *p = strstr(text, HEADER);
  if (!p)
    return NC_E_PROTO;
  p += strlen(HEADER);
  while (*p) {
    while (*p == '\n' || *p == '\r')
      p++;
    size_t len = strcspn(p, "\r\n");
    if (len == 0)
      break;
    int rc = parse_line(p, len, out);
    if (rc < 0)
      return rc;
    p += len;
  }
  return out->n > 0 ? 0 : NC_E_PROTO;
}

const struct nc_hv_machine *nc_hv_machines_find(const struct nc_hv_machines *m,
                                                const char *name) {
  for (size_t i = 0; m && name && i < m->n; i++)
    if (strcmp(m->v[i].name, name) == 0)
      return &m->v[i];
  return NULL;
}

const char *nc_hv_machines_resolve(const struct nc_hv_machines *m, const char *name) {
  const struct nc_hv_machine *e = nc_hv_machines_find(m, name);
  if (!e)
    return NULL;
  if (!e->alias_of[0])
    return e->name;
  /* An alias must name a listed type, or the listing is not one we
   * understand. */
  const struct nc_hv_machine *t = nc_hv_machines_find(m, e->alias_of);
  return t && !t->alias_of[0] ? t->name : NULL;
}

bool nc_hv_machine_usable(const struct nc_hv_machines *m, const char *name) {
  const char *t = nc_hv_machines_resolve(m, name);
  return t && (strncmp(t, "pc-i440fx-", 10) == 0 || strncmp(t, "pc-q35-", 7) == 0);
}

static bool is_alias_target(const struct nc_hv_machines *m, const char *name) {
  for (size_t i = 0; i < m->n; i++)
    if (strcmp(m->v[i].alias_of, name) == 0)
      return true;
  return false;
}

struct fmt {
  char *out;
  size_t cap, used, left_out;
};

static void fmt_add(struct fmt *f, const char *name) {
  size_t need = (f->used ? 2 : 0) + strlen(name);
  /* keep room for the tail ", and NNN more" */
  if (f->left_out || f->used + need + 20 >= f->cap) {
    f->left_out++;
    return;
  }
  f->used += (size_t)snprintf(f->out + f->used, f->cap - f->used, "%s%s", f->used ? ", " : "",
                              name);
}

void nc_hv_machines_format(const struct nc_hv_machines *m, char *out, size_t cap) {
  struct fmt f = {.out = out, .cap = cap};
  out[0] = '\0';
  /* QEMU sorts by name (so 9.2 before 10.0): put each alias and the type
   * it names first, as those are the newest, then the rest in QEMU's
   * order, deprecated types last. */
  for (int pass = 0; pass < 3; pass++) {
    for (size_t i = 0; i < m->n; i++) {
      const struct nc_hv_machine *e = &m->v[i];
      if (!nc_hv_machine_usable(m, e->name))
        continue;
      if (pass == 0 && e->alias_of[0]) {
        fmt_add(&f, e->name);
        fmt_add(&f, e->alias_of);
      } else if (pass > 0 && !e->alias_of[0] && !is_alias_target(m, e->name) &&
                 e->deprecated == (pass == 2)) {
        fmt_add(&f, e->name);
      }
    }
  }
  if (f.left_out && f.used + 20 < cap)
    snprintf(out + f.used, cap - f.used, ", and %zu more", f.left_out);
}
