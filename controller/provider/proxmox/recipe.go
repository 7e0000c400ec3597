package proxmox

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"regexp"
	"slices"
	"strings"

	"github.com/goccy/go-yaml"

	"github.com/kthw/kthw/images"
)

// Recipe is how to build a profile's VM template (images/proxmox/<profile>.yaml).
type Recipe struct {
	// Profile is the distro profile the template is for; equal to the
	// file name without .yaml.
	Profile string `yaml:"profile"`
	// Image is the cloud image the template's disk is imported from.
	Image RecipeImage `yaml:"image"`
	// OSType is Proxmox's ostype (l26 for Linux 2.6+ kernels).
	OSType string `yaml:"ostype"`
	// Cores and MemoryMiB size the template (clones get the node's).
	Cores     int `yaml:"cores"`
	MemoryMiB int `yaml:"memoryMiB"`
	// Bake is what template build installs into an image that lacks the
	// guest agent, and how it cleans the image for cloning; required
	// unless Image.GuestAgent.
	Bake *RecipeBake `yaml:"bake,omitempty"`
}

// RecipeBake is what template build does inside a builder VM booted once
// from the image, over SSH with kthw's agent: install Packages with the
// distro's package manager, enable Enable (systemd units), then run Clean
// in order. Template build itself then removes the build user's SSH key
// and kthw's agent (/var/lib/kthw), shuts the VM down and deletes the
// one-boot cloud-init settings.
type RecipeBake struct {
	// Packages to install, e.g. qemu-guest-agent.
	Packages []string `yaml:"packages"`
	// Enable are systemd units to enable (not start: the builder is shut
	// down next), for distros whose guest agent unit is not started by
	// udev when the agent's virtio port appears.
	Enable []string `yaml:"enable,omitempty"`
	// Clean are the commands that make the image ready for cloning:
	// cloud-init's state, SSH host keys, machine-id, package caches.
	Clean []RecipeCommand `yaml:"clean"`
}

// RecipeCommand is one command, run as root without a shell unless argv
// asks for one.
type RecipeCommand struct {
	Argv []string `yaml:"argv"`
	// Removes skips the command when this path does not exist (e.g. the
	// program itself).
	Removes string `yaml:"removes,omitempty"`
}

// RecipeImage is a cloud image.
type RecipeImage struct {
	// File is the image's file name on the import storage
	// (<storage>:import/<file>).
	File string `yaml:"file"`
	// URL is where the image comes from.
	URL string `yaml:"url"`
	// Checksums is the URL of the release's checksum list.
	Checksums string `yaml:"checksums,omitempty"`
	// GuestAgent says the published image carries qemu-guest-agent. An
	// image without it is baked (Recipe.Bake) before it becomes the
	// template.
	GuestAgent bool `yaml:"guestAgent"`
	// Download says template build may fetch the image onto the import
	// storage itself (download-url) when it is not there.
	Download bool `yaml:"download"`
}

var (
	recipeFilePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+-]*\.(qcow2|raw|vmdk|img)$`)
	osTypes           = []string{"l26", "l24", "other", "solaris", "win11", "win10", "win8", "win7", "wvista", "w2k8", "w2k3", "wxp", "w2k"}
)

// DefaultRecipes are the embedded recipes, <profile>.yaml.
func DefaultRecipes() fs.FS {
	sub, err := fs.Sub(images.Proxmox, "proxmox")
	if err != nil {
		panic(err) // a constant, valid path
	}
	return sub
}

// LoadRecipe reads and checks the recipe of profile from fsys (nil: the
// embedded recipes).
func LoadRecipe(fsys fs.FS, profile string) (*Recipe, error) {
	if fsys == nil {
		fsys = DefaultRecipes()
	}
	name := profile + ".yaml"
	data, err := fs.ReadFile(fsys, name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("no Proxmox template recipe for profile %q (images/proxmox/%s)", profile, name)
	}
	if err != nil {
		return nil, err
	}
	var r Recipe
	if err := yaml.NewDecoder(bytes.NewReader(data), yaml.DisallowUnknownField()).Decode(&r); err != nil {
		return nil, fmt.Errorf("template recipe %s: %w", path.Join("images/proxmox", name), err)
	}
	if err := r.check(profile); err != nil {
		return nil, fmt.Errorf("template recipe %s: %w", path.Join("images/proxmox", name), err)
	}
	return &r, nil
}

func (r *Recipe) check(profile string) error {
	var errs []error
	if r.Profile != profile {
		errs = append(errs, fmt.Errorf("profile: %q, but the file is %s.yaml", r.Profile, profile))
	}
	if !recipeFilePattern.MatchString(r.Image.File) {
		errs = append(errs, fmt.Errorf("image.file: %q is not a disk image file name (.qcow2, .raw, .vmdk, .img)", r.Image.File))
	}
	if !strings.HasPrefix(r.Image.URL, "https://") && !strings.HasPrefix(r.Image.URL, "http://") {
		errs = append(errs, fmt.Errorf("image.url: %q is not an http(s) URL", r.Image.URL))
	}
	if !r.Image.GuestAgent {
		switch {
		case r.Bake == nil:
			errs = append(errs, errors.New("bake: required when image.guestAgent is false: what to install and clean"))
		case len(r.Bake.Packages) == 0:
			errs = append(errs, errors.New("bake.packages: required: the guest agent's package"))
		}
	}
	if r.Bake != nil {
		for i, c := range r.Bake.Clean {
			if len(c.Argv) == 0 || c.Argv[0] == "" {
				errs = append(errs, fmt.Errorf("bake.clean[%d].argv: required", i))
			}
			if c.Removes != "" && !path.IsAbs(c.Removes) {
				errs = append(errs, fmt.Errorf("bake.clean[%d].removes: %q is not an absolute path", i, c.Removes))
			}
		}
		for i, u := range r.Bake.Enable {
			if !strings.Contains(u, ".") {
				errs = append(errs, fmt.Errorf("bake.enable[%d]: %q is not a unit name (name.service)", i, u))
			}
		}
	}
	if !slices.Contains(osTypes, r.OSType) {
		errs = append(errs, fmt.Errorf("ostype: %q is not a Proxmox ostype", r.OSType))
	}
	if r.Cores < 1 {
		errs = append(errs, fmt.Errorf("cores: must be positive, got %d", r.Cores))
	}
	if r.MemoryMiB < 16 {
		errs = append(errs, fmt.Errorf("memoryMiB: must be at least 16, got %d", r.MemoryMiB))
	}
	return errors.Join(errs...)
}
