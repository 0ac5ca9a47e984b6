#include "vm/state.h"

#include <errno.h>
#include <string.h>

static const char *const state_names[NC_VM__COUNT] = {
    "defined", "starting", "running", "paused", "stopping", "stopped", "migrating", "failed"};
static const char *const action_names[NC_ACT__COUNT] = {
    "start",    "stop",    "pause", "resume",         "reboot",
    "delete",   "snapshot", "restore", "clone", "snapshot-delete", "migrate"};

const char *nc_vm_state_name(enum nc_vm_state s) {
  return (unsigned)s < NC_VM__COUNT ? state_names[s] : "unknown";
}

int nc_vm_state_parse(const char *name, enum nc_vm_state *out) {
  for (int i = 0; i < NC_VM__COUNT; i++) {
    if (strcmp(state_names[i], name) == 0) {
      *out = (enum nc_vm_state)i;
      return 0;
    }
  }
  return -EINVAL;
}

const char *nc_vm_action_name(enum nc_vm_action a) {
  return (unsigned)a < NC_ACT__COUNT ? action_names[a] : "unknown";
}

int nc_vm_action_parse(const char *name, enum nc_vm_action *out) {
  for (int i = 0; i < NC_ACT__COUNT; i++) {
    if (strcmp(action_names[i], name) == 0) {
      *out = (enum nc_vm_action)i;
      return 0;
    }
  }
  return -EINVAL;
}

#define B(s) (1u << (s))

/* allowed_next[from] is the set of states reachable in one step. */
static const unsigned allowed_next[NC_VM__COUNT] = {
    [NC_VM_DEFINED] = B(NC_VM_STARTING) | B(NC_VM_FAILED),
    [NC_VM_STARTING] = B(NC_VM_RUNNING) | B(NC_VM_PAUSED) | B(NC_VM_STOPPING) |
                       B(NC_VM_STOPPED) | B(NC_VM_FAILED),
    [NC_VM_RUNNING] = B(NC_VM_PAUSED) | B(NC_VM_STOPPING) | B(NC_VM_STOPPED) |
                      B(NC_VM_MIGRATING) | B(NC_VM_FAILED),
    [NC_VM_PAUSED] = B(NC_VM_RUNNING) | B(NC_VM_STOPPING) | B(NC_VM_STOPPED) |
                     B(NC_VM_MIGRATING) | B(NC_VM_FAILED),
    [NC_VM_STOPPING] = B(NC_VM_STOPPED) | B(NC_VM_FAILED),
    [NC_VM_STOPPED] = B(NC_VM_STARTING) | B(NC_VM_FAILED),
    [NC_VM_MIGRATING] = B(NC_VM_RUNNING) | B(NC_VM_PAUSED) | B(NC_VM_STOPPED) |
                        B(NC_VM_FAILED),
    [NC_VM_FAILED] = B(NC_VM_STARTING) | B(NC_VM_STOPPED),
};

/* allowed_in[action] is the set of states in which it may be requested. */
static const unsigned allowed_in[NC_ACT__COUNT] = {
    [NC_ACT_START] = B(NC_VM_DEFINED) | B(NC_VM_STOPPED) | B(NC_VM_FAILED),
    [NC_ACT_STOP] = B(NC_VM_STARTING) | B(NC_VM_RUNNING) | B(NC_VM_PAUSED) | B(NC_VM_FAILED),
    [NC_ACT_PAUSE] = B(NC_VM_RUNNING),
    [NC_ACT_RESUME] = B(NC_VM_PAUSED),
    [NC_ACT_REBOOT] = B(NC_VM_RUNNING),
    [NC_ACT_DELETE] = B(NC_VM_DEFINED) | B(NC_VM_STARTING) | B(NC_VM_RUNNING) |
                      B(NC_VM_PAUSED) | B(NC_VM_STOPPED) | B(NC_VM_FAILED),
    [NC_ACT_SNAPSHOT] = B(NC_VM_RUNNING) | B(NC_VM_PAUSED),
    [NC_ACT_RESTORE] = B(NC_VM_RUNNING) | B(NC_VM_PAUSED),
    [NC_ACT_CLONE] = B(NC_VM_RUNNING) | B(NC_VM_PAUSED) | B(NC_VM_STOPPED) | B(NC_VM_DEFINED),
    [NC_ACT_SNAPSHOT_DELETE] = B(NC_VM_RUNNING) | B(NC_VM_PAUSED),
    [NC_ACT_MIGRATE] = B(NC_VM_RUNNING) | B(NC_VM_PAUSED),
};

bool nc_vm_transition_valid(enum nc_vm_state from, enum nc_vm_state to) {
  if ((unsigned)from >= NC_VM__COUNT || (unsigned)to >= NC_VM__COUNT)
    return false;
  return (allowed_next[from] & B(to)) != 0;
}

bool nc_vm_action_allowed(enum nc_vm_action a, enum nc_vm_state s) {
  if ((unsigned)a >= NC_ACT__COUNT || (unsigned)s >= NC_VM__COUNT)
    return false;
  return (allowed_in[a] & B(s)) != 0;
}

const char *nc_vm_action_hint(enum nc_vm_action a, enum nc_vm_state s) {
  switch (s) {
  case NC_VM_DEFINED:
  case NC_VM_STOPPED:
    return "the vm is not running; start it first";
  case NC_VM_PAUSED:
    return a == NC_ACT_PAUSE ? "the vm is already paused" : "the vm is paused; resume it first";
  case NC_VM_RUNNING:
    return a == NC_ACT_START ? "the vm is already running" : "the vm is running";
  case NC_VM_STARTING:
  case NC_VM_STOPPING:
  case NC_VM_MIGRATING:
    return "the vm is changing state; wait for its operation to finish";
  case NC_VM_FAILED:
    return "the vm has failed; start or stop it to recover";
  default:
    return "not possible in the vm's current state";
  }
}

bool nc_vm_state_has_process(enum nc_vm_state s) {
  return s == NC_VM_STARTING || s == NC_VM_RUNNING || s == NC_VM_PAUSED ||
         s == NC_VM_STOPPING || s == NC_VM_MIGRATING;
}
