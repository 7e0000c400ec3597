package cli

import (
	"context"
	"os"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"
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
	testscript.Run(t, testscript.Params{Dir: "testdata/script"})
}
