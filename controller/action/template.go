package action

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/kthw/kthw/controller/progress"
	"github.com/kthw/kthw/controller/provider/proxmox"
)

// TemplateOptions are what template build needs.
type TemplateOptions struct {
	// Recipe is the profile's template recipe (proxmox.LoadRecipe); an
	// image that carries the guest agent already (a volume prepared by
	// hand) has Image.GuestAgent set and is not baked.
	Recipe *proxmox.Recipe
	// Provider is the proxmox provider of the cluster file, which says
	// where to build (endpoint, node, storage, bridge) and the template's
	// name.
	Provider *proxmox.Provider
	Build    proxmox.BuildOptions
	Events   progress.Sink
}

// TemplateBuild creates the profile's VM template on Proxmox, or finds it
// made already.
func TemplateBuild(ctx context.Context, o TemplateOptions) (proxmox.BuildResult, error) {
	if o.Events == nil {
		o.Events = progress.Discard{}
	}
	r := o.Recipe
	if r == nil {
		return proxmox.BuildResult{}, errors.New("build template: no recipe")
	}
	start := time.Now()
	emit := func(st progress.Status, msg string) {
		o.Events.Emit(progress.Event{Time: time.Now(), Node: o.Provider.Template(), Step: "template", Status: st, Message: msg, Duration: time.Since(start)})
	}
	if r.Image.GuestAgent {
		emit(progress.Started, "from "+r.Image.File)
	} else {
		emit(progress.Started, "from "+r.Image.File+", baking in "+strings.Join(r.Bake.Packages, ", "))
	}
	res, err := o.Provider.BuildTemplate(ctx, r, o.Build)
	if err != nil {
		emit(progress.Failed, err.Error())
		return res, fmt.Errorf("build template %s: %w", o.Provider.Template(), err)
	}
	if res.Created {
		emit(progress.Changed, fmt.Sprintf("VMID %d on %s", res.VMID, res.Node))
	} else {
		emit(progress.Done, fmt.Sprintf("exists: VMID %d on %s", res.VMID, res.Node))
	}
	return res, nil
}
