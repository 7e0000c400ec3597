package module

import (
	"strings"
	"testing"
)

func TestFindID(t *testing.T) {
	const passwd = `# comment
root:x:0:0:root:/root:/bin/bash

broken
kube:x:notanumber:0::/:/bin/false
etcd:x:998:997:etcd user:/var/lib/etcd:/usr/sbin/nologin
`
	tests := []struct {
		name    string
		want    int
		wantErr string
	}{
		{"root", 0, ""},
		{"etcd", 998, ""},
		{"kube", -1, "parse id"},
		{"nobody", -1, `"nobody" not found`},
		{"broken", -1, "not found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := findID(strings.NewReader(passwd), tt.name)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("findID: err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("findID = %d, %v, want %d", got, err, tt.want)
			}
		})
	}
}

func TestLookupIDNumeric(t *testing.T) {
	// Numeric ids need no database.
	if id, err := lookupID("/nonexistent", "1234"); err != nil || id != 1234 {
		t.Fatalf("lookupID = %d, %v", id, err)
	}
}
