package cli

import (
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"
)

func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"kthw-controller": func() {
			err := New("test", os.Stdin, os.Stdout, os.Stderr).Run(context.Background(), os.Args[1:])
			if err != nil {
				os.Stderr.WriteString("kthw-controller: " + err.Error() + "\n")
				os.Exit(1)
			}
		},
	})
}

func TestScripts(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir: "testdata/script",
		Condition: func(cond string) (bool, error) {
			if cond == "root" {
				return os.Geteuid() == 0, nil
			}
			return false, fmt.Errorf("unknown condition %q", cond)
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			// mksnap FILE writes a file that passes etcd's sha256 trailer
			// check: 512 bytes and their sha256.
			"mksnap": func(ts *testscript.TestScript, neg bool, args []string) {
				body := make([]byte, 512)
				sum := sha256.Sum256(body)
				ts.Check(os.WriteFile(ts.MkAbs(args[0]), append(body, sum[:]...), 0o600))
			},
		},
	})
}
