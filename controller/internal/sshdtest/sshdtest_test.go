package sshdtest_test

import (
	"bytes"
	"strings"
	"testing"

	"github.com/kthw/kthw/controller/internal/sshdtest"
)

func TestMain(m *testing.M) { sshdtest.Main(m) }

func TestUsers(t *testing.T) {
	s := sshdtest.Start(t)
	cases := []struct {
		user, cmd, want string
		fail            bool
	}{
		{user: "root", cmd: "id -un", want: "root\n"},
		{user: sshdtest.UserSudo, cmd: "sudo -n id -un", want: "root\n"},
		{user: sshdtest.UserNoisy, cmd: "sudo -n id -un", want: sshdtest.NoisyJunk + "root\n"},
		{user: sshdtest.UserPassword, cmd: "id -un", want: sshdtest.UserPassword + "\n"},
		{user: sshdtest.UserPassword, cmd: "sudo -n id -un", fail: true},
	}
	for _, c := range cases {
		t.Run(c.user+"/"+c.cmd, func(t *testing.T) {
			client := s.Dial(t, c.user)
			sess, err := client.NewSession()
			if err != nil {
				t.Fatal(err)
			}
			defer sess.Close()
			var stdout, stderr bytes.Buffer
			sess.Stdout, sess.Stderr = &stdout, &stderr
			err = sess.Run(c.cmd)
			if c.fail {
				if err == nil || !strings.Contains(stderr.String(), "password is required") {
					t.Fatalf("err = %v, stderr %q; want sudo password failure", err, stderr.String())
				}
				return
			}
			if err != nil {
				t.Fatalf("%v: %s", err, stderr.String())
			}
			if stdout.String() != c.want {
				t.Errorf("stdout = %q, want %q", stdout.String(), c.want)
			}
		})
	}
}

func TestRotateHostKeys(t *testing.T) {
	s := sshdtest.Start(t, sshdtest.WithHostKeyTypes(sshdtest.KeyEd25519, sshdtest.KeyECDSA))
	old := s.HostKey
	s.RotateHostKeys(t)
	if string(old.Marshal()) == string(s.HostKey.Marshal()) {
		t.Fatal("host key did not change")
	}
	s.Dial(t, "root") // the pinned callback knows only the new keys
}
