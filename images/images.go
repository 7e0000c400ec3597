// Package images holds the recipes for node images as data. Lab root filesystem recipes live
// in lab/*.yaml (one file per distro release, read by controller/lab); the files are embedded
// so the controller binary carries them.
package images

import "embed"

// Lab holds the lab root filesystem recipes, as lab/<name>.yaml.
//
//go:embed lab/*.yaml
var Lab embed.FS
