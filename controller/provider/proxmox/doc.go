// Package proxmox is the provider that makes a cluster's nodes as Proxmox VE
// VMs, through the API alone (github.com/luthermonson/go-proxmox): each node
// is a full (or linked) clone of the profile's VM template, configured
// before its first start (cores, memory, an absolute disk size, a static
// cloud-init address, user and SSH key, tags kthw;<cluster>;<role>), started,
// and reached at the address its guest agent reports on net0, with the SSH
// host key read through the agent and pinned.
//
// Ensure is idempotent and adopts: it finds a node's VM by name and tags, by
// the VMID recorded (IDStore) before its clone was requested, or by the
// marker its clone was given, so a run killed at any point is finished by the
// next one, never duplicated. VMIDs are allocated under a mutex and always
// passed to the clone; clones are limited per Proxmox node and storage and
// retried with backoff on lock timeouts and VMID conflicts. Tasks are waited
// for and their exit status checked here (go-proxmox's Wait does not), and
// VMs are re-read into fresh values while polling.
//
// BuildTemplate makes the profile's template from a recipe (images/proxmox).
// Tests run against the simulator in package pvesim; docs/proxmox.md has the
// decisions.
package proxmox
