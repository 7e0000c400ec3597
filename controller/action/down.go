package action

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sort"
	"strconv"
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
		names[r.Name] = r.Address.Addr().String()
	}
	existing, err := o.Provider.Existing(ctx)
	if err != nil {
		return err
	}
	specs, _ := o.Cluster.Nodes()
	for _, n := range existing {
		if _, ok := names[n]; !ok {
			names[n] = ""
			for _, s := range specs {
				if s.Name == n {
					names[n] = s.Address.Addr().String()
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

// destroyNode records the intent, destroys the node and forgets it.
func destroyNode(ctx context.Context, o ClusterOptions, name, host string) error {
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
	if host != "" {
		if err := o.Workspace.UnpinHost(net.JoinHostPort(host, strconv.Itoa(22))); err != nil {
			return err
		}
	}
	return st.DeleteNode(ctx, name)
}
