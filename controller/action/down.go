package action

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"time"

	"github.com/kthw/kthw/controller/fanout"

	"github.com/kthw/kthw/controller/progress"
	"github.com/kthw/kthw/controller/state"
)

// Down destroys every node of the cluster the workspace or the provider
// knows, removes their pins and records, and tears down what the provider
// shared once nothing uses it. It carries on past a failing node and
// returns every error.
func Down(ctx context.Context, o ClusterOptions) error {
	o.setDefaults()
	names := map[string]string{}
	recs, err := o.Workspace.State.ListNodes(ctx)
	if err != nil {
		return err
	}
	for _, r := range recs {
		names[r.Name] = r.PinnedAddr()
	}
	existing, err := o.Provider.Existing(ctx)
	if err != nil {
		return err
	}
	specs, _ := o.Cluster.Nodes()
	for _, n := range existing {
		if _, ok := names[n]; !ok {
			names[n] = ""
			// A node the provider has and the workspace does not
			// know: the providers that pin (local, proxmox) pin its
			// address at port 22.
			for _, s := range specs {
				if s.Name == n && s.Address.IsValid() {
					names[n] = netip.AddrPortFrom(s.Address.Addr(), 22).String()
				}
			}
		}
	}
	order := make([]string, 0, len(names))
	for n := range names {
		order = append(order, n)
	}
	sort.Strings(order)

	var errs []error
	out := fanout.Each(ctx, len(order), o.Concurrency, func(ctx context.Context, i int) (struct{}, error) {
		n, t := order[i], time.Now()
		o.emit(n, "destroy", progress.Started, "", 0)
		if err := destroyNode(ctx, o, n, names[n]); err != nil {
			o.emit(n, "destroy", progress.Failed, err.Error(), time.Since(t))
			return struct{}{}, err
		}
		o.emit(n, "destroy", progress.Done, "", time.Since(t))
		return struct{}{}, nil
	})
	for _, r := range out {
		if r.Err != nil {
			errs = append(errs, r.Err)
		}
	}
	if len(errs) == 0 {
		o.emit("", "teardown", progress.Started, "", 0)
		if err := o.Provider.Teardown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("tear down %s provider: %w", o.Provider.Name(), err))
		} else {
			o.emit("", "teardown", progress.Done, "", 0)
		}
	}
	return errors.Join(errs...)
}

// destroyNode records the intent, destroys the node and forgets it and
// the host key kthw pinned for it at pinned ("" for none).
func destroyNode(ctx context.Context, o ClusterOptions, name, pinned string) error {
	st := o.Workspace.State
	err := st.UpdateNode(ctx, name, func(r *state.Node) error {
		r.Phase = state.PhaseDestroying
		return nil
	})
	if err != nil && !errors.Is(err, state.ErrNotFound) {
		return err
	}
	if err := o.Provider.Destroy(ctx, name); err != nil {
		return fmt.Errorf("destroy node %s: %w", name, err)
	}
	if pinned != "" {
		if err := o.Workspace.UnpinHost(pinned); err != nil {
			return err
		}
	}
	return st.DeleteNode(ctx, name)
}
