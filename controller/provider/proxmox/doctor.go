package proxmox

import (
	"context"
	"fmt"

	"github.com/kthw/kthw/controller/provider"
)

// Doctor checks, without changing anything, that the API answers to the
// credentials, that the node exists and that the template is there and fit.
func (p *Provider) Doctor(ctx context.Context) []provider.Finding {
	api := provider.Finding{Check: "proxmox api"}
	c, err := p.Client(ctx)
	if err != nil {
		api.Detail, api.Fix = err.Error(), "check provider.proxmox endpoint, credentials and TLS settings"
		return []provider.Finding{api}
	}
	api.OK, api.Detail = true, "answers at "+p.cfg.Endpoint
	out := []provider.Finding{api}

	node := provider.Finding{Check: "proxmox node"}
	if err := p.checkNode(ctx, c); err != nil {
		node.Detail, node.Fix = err.Error(), "set provider.proxmox.node to one of the cluster's nodes"
	} else {
		node.OK, node.Detail = true, p.cfg.Node+" is online"
	}
	out = append(out, node)

	tmpl := provider.Finding{Check: "proxmox template"}
	t, err := findTemplate(ctx, c, p.template, p.cfg.Node)
	if err != nil {
		tmpl.Detail = err.Error()
		tmpl.Fix = fmt.Sprintf("kthw-controller template build --profile %s -f <cluster file>", p.profile)
	} else {
		tmpl.OK, tmpl.Detail = true, fmt.Sprintf("%s is VMID %d on %s", t.name, t.ref.id, t.ref.node)
	}
	return append(out, tmpl)
}
