package state

import (
	"context"
	"testing"
)

func TestProviderID(t *testing.T) {
	ctx := context.Background()
	s := openT(t, t.TempDir())
	if id, err := s.ProviderID(ctx, "cp-1"); err != nil || id != "" {
		t.Fatalf("ProviderID of an unknown node = %q, %v; want empty, nil", id, err)
	}
	if err := s.SetProviderID(ctx, "cp-1", "101"); err != nil {
		t.Fatalf("SetProviderID of an unknown node: %v; want nil (left alone)", err)
	}
	if err := s.PutNode(ctx, Node{Name: "cp-1", Role: "control-plane", Provider: "proxmox", Phase: PhaseCreating}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetProviderID(ctx, "cp-1", "101"); err != nil {
		t.Fatal(err)
	}
	if id, err := s.ProviderID(ctx, "cp-1"); err != nil || id != "101" {
		t.Fatalf("ProviderID = %q, %v; want 101", id, err)
	}
	n, err := s.GetNode(ctx, "cp-1")
	if err != nil || n.Phase != PhaseCreating {
		t.Fatalf("record after SetProviderID: %+v, %v; want the phase kept", n, err)
	}
	if err := s.SetProviderID(ctx, "cp-1", ""); err != nil {
		t.Fatal(err)
	}
	if id, _ := s.ProviderID(ctx, "cp-1"); id != "" {
		t.Fatalf("ProviderID after clearing = %q", id)
	}
}
