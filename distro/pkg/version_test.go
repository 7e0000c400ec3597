package pkg

import (
	"errors"
	"testing"
)

func TestMatchVersion(t *testing.T) {
	tests := []struct {
		version, want string
		match         bool
	}{
		{"1.31.2-1.1", "", true},
		{"1.31.2-1.1", "1.31.2-1.1", true},
		{"1.31.2-1.1", "1.31.2", true},
		{"1.31.2-1.1", "v1.31.2", true},
		{"1.31.2-1.1", "1.31", true},
		{"1.31.2-1.1", "1.31.2-1.2", false},
		{"1.31.20-1.1", "1.31.2", false},
		{"1.31.2-1.1", "1.31.3", false},
		{"1.6.20~ds1-1+deb12u3", "1.6.20", true},
		{"1.6.20~ds1-1+deb12u3", "v1.6.20", true},
		{"1.6.20+dfsg-1", "1.6.20", true},
		{"1:1.6.20~ds1-1", "1.6.20", true},
		{"1:1.6.20~ds1-1", "1.6.20~ds1-1", true}, // no epoch asked for: any
		{"1:1.6.20~ds1-1", "2:1.6.20~ds1-1", false},
		{"1:1.6.20~ds1-1", "1:1.6.20", true},
		{"1.31.2-150500.1.1", "1.31.2", true},
		{"1.31.2-150500.1.1", "v1.31.2-150500.1.1", true},
		{"1.21.22", "1.21.22", true}, // a native package has no revision
		{"1.21.22", "1.21.2", false}, // ... and no prefix match across digits
		{"1.21.22", "v1.21", true},   // but a minor version matches
		{"2.3.1-1.el9", "2.3.1-1", false},
	}
	for _, tt := range tests {
		if got := MatchVersion(tt.version, tt.want); got != tt.match {
			t.Errorf("MatchVersion(%q, %q) = %v, want %v", tt.version, tt.want, got, tt.match)
		}
	}
}

func TestCompareDeb(t *testing.T) {
	tests := []struct {
		a, b string
		want int
	}{
		{"1.0", "1.0", 0},
		{"1.0-1", "1.0-2", -1},
		{"1.0~rc1-1", "1.0-1", -1},
		{"1.0-1", "1.0+b1-1", -1},
		{"1:0.9", "2.0", 1},
		{"1.6.20~ds1-1+deb12u3", "1.6.20~ds1-1+deb12u2", 1},
		{"1.31.10-1.1", "1.31.9-1.1", 1},
		{"1.0a", "1.0", 1},
		{"1.0", "1.0.0", -1},
		{"001.2", "1.2", 0},
		{"1.2-1", "1.2", 1},
	}
	for _, tt := range tests {
		if got := compareDeb(tt.a, tt.b); got != tt.want {
			t.Errorf("compareDeb(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
		if got := compareDeb(tt.b, tt.a); got != -tt.want {
			t.Errorf("compareDeb(%q, %q) = %d, want %d", tt.b, tt.a, got, -tt.want)
		}
	}
}

func TestCompareRPM(t *testing.T) {
	tests := []struct {
		a, b string
		want int
	}{
		{"1.0-1", "1.0-1", 0},
		{"1.31.10-150500.1.1", "1.31.9-150500.1.1", 1},
		{"1.0~rc1-1", "1.0-1", -1},
		{"1.0^git1-1", "1.0-1", 1},
		{"1.0^git1-1", "1.0.1-1", -1},
		{"1:1.0-1", "2.0-1", 1},
		{"0:1.0-1", "1.0-1", 0},
		{"1.0a-1", "1.0-1", 1},
		{"1.0-1.el9", "1.0-1", 1},
		{"2.0.1-1", "2.0a-1", 1}, // a number beats letters
		{"1.010-1", "1.10-1", 0},
	}
	for _, tt := range tests {
		if got := compareRPM(tt.a, tt.b); got != tt.want {
			t.Errorf("compareRPM(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
		if got := compareRPM(tt.b, tt.a); got != -tt.want {
			t.Errorf("compareRPM(%q, %q) = %d, want %d", tt.b, tt.a, got, -tt.want)
		}
	}
}

func TestPickVersion(t *testing.T) {
	offered := []string{"1.30.1-1.1", "1.31.2-1.1", "1.31.10-1.1", "1.31.2-1.2"}
	for want, exp := range map[string]string{
		"":           "1.31.10-1.1",
		"1.31":       "1.31.10-1.1",
		"v1.31.2":    "1.31.2-1.2",
		"1.31.2-1.1": "1.31.2-1.1",
		"1.30.1":     "1.30.1-1.1",
	} {
		got, err := pickVersion("kubelet", want, offered, compareDeb)
		if err != nil || got != exp {
			t.Errorf("pickVersion(%q) = %q, %v; want %q", want, got, err, exp)
		}
	}
	_, err := pickVersion("kubelet", "1.29.0", offered, compareDeb)
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("err = %v, want ErrNotFound", err)
	}
	errContains(t, err, "package kubelet version 1.29.0: not found", "offer 1.31.10-1.1, 1.31.2-1.2, 1.31.2-1.1, 1.30.1-1.1")
	_, err = pickVersion("nosuch", "", nil, compareDeb)
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("err = %v, want ErrNotFound", err)
	}
	errContains(t, err, "package nosuch: not found in the configured repositories")
}
