package cli

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/kthw/kthw/internal/etcdtest"
)

func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"kthw-agent": func() {
			if err := New("test", os.Stdin, os.Stdout, os.Stderr).Run(context.Background(), os.Args[1:]); err != nil {
				os.Stderr.WriteString("kthw-agent: " + err.Error() + "\n")
				os.Exit(1)
			}
		},
	})
}

func TestScripts(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir: "testdata/script",
		// Scripts named etcd*.txtar get a real etcd with kubeadm's PKI:
		// $ETCD_URL, and the certificates under $PKI (kubeadm's
		// /etc/kubernetes/pki layout).
		Setup: func(env *testscript.Env) error {
			if !strings.HasPrefix(filepath.Base(env.WorkDir), "script-etcd") {
				return nil
			}
			p, err := etcdtest.NewPKI(filepath.Join(env.WorkDir, "root"), "cp-1")
			if err != nil {
				return err
			}
			m, err := etcdtest.StartMember(p, etcdtest.Options{Name: "cp-1", DataDir: filepath.Join(env.WorkDir, "etcd-data")})
			if err != nil {
				return err
			}
			env.Defer(m.Stop)
			env.Setenv("ETCD_URL", m.ClientURL)
			env.Setenv("PKI", p.Dir)
			return nil
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			// newest DIR VAR sets $VAR to the newest etcd-snapshot-*.db in DIR.
			"newest": func(ts *testscript.TestScript, neg bool, args []string) {
				if len(args) != 2 {
					ts.Fatalf("usage: newest DIR VAR")
				}
				m, _ := filepath.Glob(filepath.Join(ts.MkAbs(args[0]), "etcd-snapshot-*.db"))
				if len(m) == 0 {
					ts.Fatalf("no snapshot in %s", args[0])
				}
				ts.Setenv(args[1], m[len(m)-1])
			},
			// truncate FILE N cuts FILE to N bytes; flip FILE N flips byte N.
			"truncate": func(ts *testscript.TestScript, neg bool, args []string) {
				var n int64
				fmt.Sscan(args[1], &n)
				ts.Check(os.Truncate(ts.MkAbs(args[0]), n))
			},
			"flip": func(ts *testscript.TestScript, neg bool, args []string) {
				var n int
				fmt.Sscan(args[1], &n)
				b, err := os.ReadFile(ts.MkAbs(args[0]))
				ts.Check(err)
				b[n] ^= 0xff
				ts.Check(os.WriteFile(ts.MkAbs(args[0]), b, 0o600))
			},
		},
	})
}
