package module

import (
	"context"
	"slices"
	"strings"
	"testing"

	agentv1 "github.com/kthw/kthw/proto/kthw/agent/v1"
)

const procSwapsHeader = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n"

const fstabWithSwap = `# /etc/fstab: static file system information.
UUID=0a1b2c3d-aaaa-bbbb-cccc-000000000001 /               ext4    errors=remount-ro 0       1
# swap was on /dev/vda5 during installation
UUID=0a1b2c3d-aaaa-bbbb-cccc-000000000002 none            swap    sw              0       0
#/swapfile.old none swap sw 0 0
/swapfile	none	swap	sw	0	0
/dev/sr0        /media/cdrom0   udf,iso9660 user,noauto     0       0
`

func TestSwapOff(t *testing.T) {
	env := newRecorder(t, "")
	env.write(t, "/etc/fstab", fstabWithSwap, 0o644)
	env.write(t, "/proc/swaps", procSwapsHeader+"/swapfile                               file\t\t1048572\t\t0\t\t-2\n", 0o444)
	r := &prepRunner{handle: func(argv []string) ([]byte, error) {
		env.write(t, "/proc/swaps", procSwapsHeader, 0o444)
		return nil, nil
	}}
	env.Runner = r
	s, _ := NewSwap(&agentv1.SwapModule{})

	res := prepRun(t, "Check", s.Check, &env.Env)
	if !res.Changed || len(r.Calls()) != 0 {
		t.Fatalf("Check = %+v, ran %q", res, r.Calls())
	}
	res = prepRun(t, "Apply", s.Apply, &env.Env)
	t.Run("diff", func(t *testing.T) { prepGolden(t, res.Diff) })
	t.Run("fstab", func(t *testing.T) { prepGolden(t, env.readFile(t, "/etc/fstab")) })
	if got := r.Calls(); !slices.Equal(got, []string{"swapoff -a"}) {
		t.Errorf("commands = %q", got)
	}
	for _, run := range []func(context.Context, *Env) (Result, error){s.Check, s.Apply} {
		if res := prepRun(t, "second run", run, &env.Env); res.Changed || res.Diff != "" {
			t.Errorf("second run = %+v, want unchanged", res)
		}
	}
	if len(r.Calls()) != 1 {
		t.Errorf("swapoff ran again: %q", r.Calls())
	}
}

func TestSwapStillActive(t *testing.T) {
	env := newRecorder(t, "")
	env.write(t, "/proc/swaps", procSwapsHeader+"/dev/zram0 partition 1048572 0 100\n", 0o444)
	env.Runner = &prepRunner{}
	s, _ := NewSwap(&agentv1.SwapModule{})
	_, err := s.Apply(context.Background(), &env.Env)
	if err == nil || !strings.Contains(err.Error(), "still active after swapoff -a: /dev/zram0") {
		t.Errorf("Apply: err = %v", err)
	}
}

func TestSwapNothingToDo(t *testing.T) {
	env := newRecorder(t, "")
	env.write(t, "/etc/fstab", "/dev/vda1 / ext4 defaults 0 1\n", 0o644)
	env.write(t, "/proc/swaps", procSwapsHeader, 0o444)
	r := &prepRunner{}
	env.Runner = r
	s, _ := NewSwap(&agentv1.SwapModule{})
	if res := prepRun(t, "Apply", s.Apply, &env.Env); res.Changed || len(r.Calls()) > 0 {
		t.Errorf("Apply = %+v, commands %q", res, r.Calls())
	}
}
