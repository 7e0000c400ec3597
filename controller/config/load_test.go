package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

func TestLoadGoodFiles(t *testing.T) {
	tests := []struct {
		file  string
		nodes []string // name@address
	}{
		{"good-lab.yaml", []string{"cp-1@10.200.0.11/24", "worker-1@10.200.0.12/24", "worker-2@10.200.0.13/24"}},
		{"good-proxmox.yaml", []string{
			"cp-1@192.168.50.10/24", "cp-2@192.168.50.11/24", "cp-3@192.168.50.12/24",
			// .11 and .12 are pinned by the control plane, so workers go on.
			"worker-1@192.168.50.13/24", "worker-2@192.168.50.14/24", "worker-3@192.168.50.15/24",
		}},
		{"good-static.yaml", []string{"alpha@10.200.0.21/24", "beta@10.200.0.11/24"}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			c, err := Load(filepath.Join("testdata", tt.file))
			if err != nil {
				t.Fatalf("Load() error: %v", err)
			}
			c.SetDefaults()
			if err := c.Validate(nil); err != nil {
				t.Fatalf("Validate() error:\n%v", err)
			}
			nodes, err := c.Nodes()
			if err != nil {
				t.Fatalf("Nodes() error: %v", err)
			}
			var got []string
			for _, n := range nodes {
				got = append(got, n.Name+"@"+n.Address.String())
			}
			if !reflect.DeepEqual(got, tt.nodes) {
				t.Errorf("Nodes() = %v; want %v", got, tt.nodes)
			}
		})
	}
}

func TestLoadGoodLabIsDefault(t *testing.T) {
	c, err := Load(filepath.Join("testdata", "good-lab.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	c.SetDefaults()
	c.file, c.lines = "", nil
	if want := Default("debian"); !reflect.DeepEqual(c, want) {
		t.Errorf("good-lab.yaml with defaults = %+v; want Default(debian) = %+v", c, want)
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		file      string
		line, col int
		path      string
		msg       string
	}{
		// The flow sequence opened on line 7 is found unclosed on line 8.
		{"bad-malformed.yaml", 8, 3, "", "',' or ']' must be specified"},
		{"bad-tab.yaml", 7, 1, "", "cannot start any token"},
		{"bad-quote.yaml", 4, 10, "", "could not find end character of double-quoted text"},
		{"bad-unknown-field.yaml", 8, 5, "nodes[0].memoryMB", `unknown field "memoryMB"`},
		{"bad-type.yaml", 7, 12, "nodes[0].count", "cannot use a string value as int"},
		{"bad-apiversion.yaml", 1, 0, "apiVersion", `unsupported "kthw.dev/v2"; want kthw.dev/v1alpha1`},
		{"bad-multidoc.yaml", 5, 1, "", "more than one YAML document"},
		{"bad-duplicate-key.yaml", 5, 1, "", `mapping key "name" already defined at [3:1]`},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			path := filepath.Join("testdata", tt.file)
			_, err := Load(path)
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("Load() error = %v; want a *ParseError", err)
			}
			if pe.File != path || pe.Line != tt.line || pe.Column != tt.col || pe.Path != tt.path || !strings.Contains(pe.Msg, tt.msg) {
				t.Errorf("Load() error = %+v; want %s:%d:%d path %q msg ...%s...", pe, path, tt.line, tt.col, tt.path, tt.msg)
			}
			// The message a user sees starts with file:line.
			if prefix := path + ":" + strconv.Itoa(tt.line) + ":"; !strings.HasPrefix(err.Error(), prefix) {
				t.Errorf("error %q does not start with %q", err, prefix)
			}
		})
	}
}

func TestParseMissingTypeMeta(t *testing.T) {
	tests := []struct {
		data string
		msg  string
	}{
		{"", "apiVersion: required"},
		{"name: lab\n", "apiVersion: required"},
		{"apiVersion: kthw.dev/v1alpha1\n", "kind: required"},
		{"apiVersion: kthw.dev/v1alpha1\nkind: Node\n", `kind: unsupported "Node"`},
		{"- a\n- b\n", "sequence was used where mapping is expected"},
	}
	for _, tt := range tests {
		_, err := Parse([]byte(tt.data), "c.yaml")
		var pe *ParseError
		if !errors.As(err, &pe) || !strings.Contains(err.Error(), tt.msg) {
			t.Errorf("Parse(%q) error = %v; want a *ParseError with %q", tt.data, err, tt.msg)
		}
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope.yaml"))
	if !errors.Is(err, os.ErrNotExist) || !strings.HasPrefix(err.Error(), "read cluster file: ") {
		t.Fatalf("Load() error = %v; want read cluster file: ... not exist", err)
	}
}

// TestValidateFileLines checks that validation errors name the field and its
// line in the file, and that they all come at once.
func TestValidateFileLines(t *testing.T) {
	path := filepath.Join("testdata", "bad-invalid.yaml")
	c, err := Load(path)
	if err != nil {
		t.Fatalf("Load() error: %v", err)
	}
	c.SetDefaults()
	err = c.Validate(nil)
	type fl struct {
		path string
		line int
	}
	want := []fl{
		{"name", 5},
		{"profile", 6},
		{"provider.local.bridge", 10},
		{"network.podCIDR", 13},
		{"nodes[0].role", 15},
		{"nodes[1].count", 19},
		{"nodes[2].names[1]", 20},
		{"nodes[2].addresses[0]", 22},
		{"nodes[2].addresses[1]", 22},
		{"nodes", 14},
		{"versions.kubernetes", 24},
	}
	var got []fl
	for _, fe := range FieldErrors(err) {
		got = append(got, fl{fe.Path, fe.Line})
		if fe.File != path {
			t.Errorf("%s: File = %q; want %q", fe.Path, fe.File, path)
		}
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Validate() errors =\n%v\nwant\n%v\nfull error:\n%v", got, want, err)
	}
	if first := strings.SplitN(err.Error(), "\n", 2)[0]; first != path+`:5: name: "Lab_1" is not a DNS label (lowercase letters, digits and '-', at most 63)` {
		t.Errorf("first line of error = %q", first)
	}
}

// TestValidateDefaultedFieldLine: a field the file leaves to its default is
// reported on the line of its closest enclosing field.
func TestValidateDefaultedFieldLine(t *testing.T) {
	data := "apiVersion: kthw.dev/v1alpha1\nkind: Cluster\nname: lab\nprofile: debian\n" +
		"network:\n  nodeCIDR: 10.96.0.0/24\nnodes:\n  - role: control-plane\n    count: 1\n"
	c, err := Parse([]byte(data), "c.yaml")
	if err != nil {
		t.Fatal(err)
	}
	c.SetDefaults()
	fes := FieldErrors(c.Validate(nil))
	// serviceCIDR is defaulted to 10.96.0.0/12, which holds nodeCIDR.
	if len(fes) != 1 || fes[0].Path != "network.serviceCIDR" || fes[0].Line != 5 {
		t.Fatalf("Validate() = %v; want network.serviceCIDR on line 5 (network:)", fes)
	}
}

func TestMarshalRoundTrip(t *testing.T) {
	for _, c := range []*Cluster{Default("debian"), staticCluster(), proxmoxCluster()} {
		c.Versions = map[string]string{"kubernetes": "v1.31.2"}
		data, err := c.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		back, err := Parse(data, "")
		if err != nil {
			t.Fatalf("Parse(Marshal()) error: %v\n%s", err, data)
		}
		back.lines = nil
		if !reflect.DeepEqual(back, c) {
			t.Errorf("round trip changed the cluster:\n%s\ngot  %+v\nwant %+v", data, back, c)
		}
	}
}

func TestLoadProxmoxSettings(t *testing.T) {
	c, err := Load(filepath.Join("testdata", "good-proxmox.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	c.SetDefaults()
	x := c.Provider.Proxmox
	if x.CloneMode != CloneLinked || x.CloneConcurrency != 3 || x.RequestTimeout.String() != "45s" || x.TaskTimeout.String() != "15m0s" ||
		x.BootTimeout.String() != "5m0s" || x.User != DefaultProxmoxUser || x.Bridge != DefaultProxmoxBridge || x.Pool != "k8s" {
		t.Fatalf("proxmox settings %+v", x)
	}
	bad := strings.Replace(readFile(t, filepath.Join("testdata", "good-proxmox.yaml")), "requestTimeout: 45s", "requestTimeout: soon", 1)
	if _, err := Parse([]byte(bad), "bad.yaml"); err == nil || !strings.Contains(err.Error(), "bad.yaml:") {
		t.Fatalf("a bad duration: %v", err)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
