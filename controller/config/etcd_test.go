package config

import (
	"strings"
	"testing"
)

func TestEtcdSnapshots(t *testing.T) {
	c, err := Parse([]byte(`apiVersion: kthw.dev/v1alpha1
kind: Cluster
name: lab
profile: debian
nodes:
  - role: control-plane
    count: 1
etcd:
  snapshots: {}
`), "cluster.yaml")
	if err != nil {
		t.Fatal(err)
	}
	c.SetDefaults()
	if err := c.Validate(nil); err != nil {
		t.Fatal(err)
	}
	if s := c.Etcd.Snapshots; s == nil || s.Schedule != "hourly" || s.Keep != 24 || s.Dir != "/var/lib/kthw/etcd-snapshots" {
		t.Fatalf("defaults %+v", s)
	}
	if d := Default("debian"); d.Etcd.Snapshots != nil {
		t.Error("the default lab schedules snapshots")
	}

	c, err = Parse([]byte(`apiVersion: kthw.dev/v1alpha1
kind: Cluster
name: lab
profile: debian
nodes:
  - role: control-plane
    count: 1
etcd:
  snapshots:
    schedule: "*-*-* 00/6:00:00"
    keep: 0
    dir: relative/dir
`), "cluster.yaml")
	if err != nil {
		t.Fatal(err)
	}
	c.SetDefaults()
	if c.Etcd.Snapshots.Schedule != "*-*-* 00/6:00:00" || c.Etcd.Snapshots.Keep != 24 {
		t.Errorf("kept %+v", c.Etcd.Snapshots)
	}
	c.Etcd.Snapshots.Keep = -1
	errs := FieldErrors(c.Validate(nil))
	if len(errs) != 2 || errs[0].Path != "etcd.snapshots.keep" || errs[1].Path != "etcd.snapshots.dir" || errs[1].Line != 12 {
		t.Fatalf("errors %v", errs)
	}
	for _, bad := range []string{"hourly\nExecStart=/bin/sh", "daily; rm -rf /", ""} {
		c.Etcd.Snapshots = &EtcdSnapshots{Schedule: bad, Keep: 1, Dir: "/x"}
		if errs := FieldErrors(c.Validate(nil)); len(errs) != 1 || errs[0].Path != "etcd.snapshots.schedule" || !strings.Contains(errs[0].Msg, "calendar") {
			t.Errorf("schedule %q: %v", bad, errs)
		}
	}
}
