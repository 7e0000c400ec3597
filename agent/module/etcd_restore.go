package module

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/kthw/kthw/agent/etcd"
	agentv1 "github.com/kthw/kthw/proto/kthw/agent/v1"
)

var _ Module = (*EtcdRestore)(nil)

// EtcdRestore is the node half of a kubeadm stacked-etcd restore: it swaps
// in a data directory the controller restored from a snapshot (a blob) and
// points the etcd static pod at it (package etcd does the work).
type EtcdRestore struct {
	spec *agentv1.EtcdRestoreModule
}

// NewEtcdRestore validates m and returns the module that carries it out.
func NewEtcdRestore(m *agentv1.EtcdRestoreModule) (*EtcdRestore, error) {
	if !IsSHA256(m.GetDataBlobSha256()) {
		return nil, fmt.Errorf("%w: data_blob_sha256 %q is not a lowercase hex sha256", ErrInvalid, m.GetDataBlobSha256())
	}
	if !IsSHA256(m.GetEtcdManifestSha256()) {
		return nil, fmt.Errorf("%w: etcd_manifest_sha256 %q is not a lowercase hex sha256", ErrInvalid, m.GetEtcdManifestSha256())
	}
	if len(m.GetEtcdManifest()) == 0 {
		return nil, fmt.Errorf("%w: etcd_manifest is empty", ErrInvalid)
	}
	for _, p := range []struct{ field, v string }{{"data_dir", m.GetDataDir()}, {"manifest_dir", m.GetManifestDir()}, {"holding_dir", m.GetHoldingDir()}} {
		if p.v == "" && p.field != "data_dir" {
			continue
		}
		if !filepath.IsAbs(p.v) || filepath.Clean(p.v) != p.v || p.v == "/" {
			return nil, fmt.Errorf("%w: %s %q is not an absolute, clean path", ErrInvalid, p.field, p.v)
		}
	}
	if m.GetStopTimeoutSeconds() < 0 {
		return nil, fmt.Errorf("%w: stop_timeout_seconds is negative", ErrInvalid)
	}
	return &EtcdRestore{spec: m}, nil
}

func (r *EtcdRestore) options(env *Env, archive string) etcd.RestoreOptions {
	return etcd.RestoreOptions{
		Root:               env.Root,
		Archive:            archive,
		DataDir:            r.spec.GetDataDir(),
		ManifestDir:        r.spec.GetManifestDir(),
		HoldingDir:         r.spec.GetHoldingDir(),
		EtcdManifest:       r.spec.GetEtcdManifest(),
		EtcdManifestSHA256: r.spec.GetEtcdManifestSha256(),
		WatchAddr:          r.spec.GetEndpoint(),
		StopTimeout:        time.Duration(r.spec.GetStopTimeoutSeconds()) * time.Second,
		Log:                env.info,
	}
}

// Check reports the steps and the manifest's diff.
func (r *EtcdRestore) Check(_ context.Context, env *Env) (Result, error) {
	if _, err := env.blob(r.spec.GetDataBlobSha256()); err != nil {
		return Result{}, err
	}
	plan, err := etcd.PlanRestore(r.options(env, ""))
	if err != nil {
		return Result{}, err
	}
	if plan.Done {
		return Result{}, nil
	}
	return Result{Changed: true, Diff: plan.Diff}, nil
}

// Apply swaps the data directory in.
func (r *EtcdRestore) Apply(ctx context.Context, env *Env) (Result, error) {
	archive, err := env.blob(r.spec.GetDataBlobSha256())
	if err != nil {
		return Result{}, err
	}
	plan, err := etcd.ApplyRestore(ctx, r.options(env, archive))
	if err != nil {
		return Result{}, err
	}
	if plan.Done {
		env.info("etcd already runs from " + r.spec.GetDataDir())
		return Result{}, nil
	}
	return Result{Changed: true, Diff: plan.Diff}, nil
}
