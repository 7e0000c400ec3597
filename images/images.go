// Package images holds the recipes for node images as data, embedded so the controller binary
// carries them:
//
//   - lab/*.yaml: lab root filesystems, one file per distro release (read by controller/lab);
//   - proxmox/*.yaml: Proxmox VM templates, one file per distro profile (read by
//     controller/provider/proxmox for kthw-controller template build).
package images

import "embed"

// Lab holds the lab root filesystem recipes, as lab/<name>.yaml.
//
//go:embed lab/*.yaml
var Lab embed.FS

// Proxmox holds the Proxmox VM template recipes, as proxmox/<profile>.yaml.
//
//go:embed proxmox/*.yaml
var Proxmox embed.FS
