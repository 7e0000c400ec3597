package module

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	agentv1 "github.com/kthw/kthw/proto/kthw/agent/v1"
)

func newFile(t *testing.T, m *agentv1.FileModule) *File {
	t.Helper()
	f, err := NewFile(m)
	if err != nil {
		t.Fatalf("NewFile: %v", err)
	}
	return f
}

func inline(path, content string, mode uint32) *agentv1.FileModule {
	return &agentv1.FileModule{Path: path, Source: &agentv1.FileModule_Content{Content: []byte(content)}, Mode: mode}
}

func sha(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// mustApply applies m and checks whether it changed anything.
func mustApply(t *testing.T, env *recorder, m Module, wantChanged bool) Result {
	t.Helper()
	res, err := m.Apply(context.Background(), &env.Env)
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	if res.Changed != wantChanged {
		t.Fatalf("Apply: changed = %v, want %v (diff %q)", res.Changed, wantChanged, res.Diff)
	}
	return res
}

func mustCheck(t *testing.T, env *recorder, m Module) Result {
	t.Helper()
	res, err := m.Check(context.Background(), &env.Env)
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	return res
}

func statOf(t *testing.T, path string) (mode uint32, uid, gid int) {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	return st.Mode & 0o7777, int(st.Uid), int(st.Gid)
}

// noTempFiles fails when Apply left anything but want in dir.
func noTempFiles(t *testing.T, dir string, want ...string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if strings.Join(names, ",") != strings.Join(want, ",") {
		t.Errorf("%s holds %q, want %q", dir, names, want)
	}
}

func TestNewFileInvalid(t *testing.T) {
	tests := map[string]*agentv1.FileModule{
		"empty path":    {},
		"relative path": {Path: "etc/x"},
		"unclean path":  {Path: "/etc/../x"},
		"trailing /":    {Path: "/etc/x/"},
		"root":          {Path: "/"},
		"big mode":      {Path: "/x", Mode: 0o10644},
		"bad state":     {Path: "/x", State: 7},
		"bad blob":      {Path: "/x", Source: &agentv1.FileModule_BlobSha256{BlobSha256: "../../etc/shadow"}},
		"upper blob":    {Path: "/x", Source: &agentv1.FileModule_BlobSha256{BlobSha256: strings.Repeat("A", 64)}},
		"owner colon":   {Path: "/x", Owner: "a:b"},
	}
	for name, m := range tests {
		t.Run(name, func(t *testing.T) {
			if _, err := NewFile(m); !errors.Is(err, ErrInvalid) {
				t.Fatalf("NewFile: err = %v, want ErrInvalid", err)
			}
		})
	}
}

func TestFileCreateUpdateIdempotent(t *testing.T) {
	env := newRecorder(t, "")
	f := newFile(t, &agentv1.FileModule{
		Path:        "/etc/kthw/app.conf",
		Source:      &agentv1.FileModule_Content{Content: []byte("a = 1\nb = 2\n")},
		Mode:        0o600,
		MakeParents: true,
	})

	res := mustCheck(t, env, f)
	wantDiff := "create directory /etc\n" +
		"create /etc/kthw/app.conf\n" +
		"mode: 0600\n" +
		"--- /dev/null\tcurrent\n" +
		"+++ /etc/kthw/app.conf\tdesired\n" +
		"@@ -0,0 +1,2 @@\n" +
		"+a = 1\n" +
		"+b = 2\n"
	if !res.Changed || res.Diff != wantDiff {
		t.Errorf("Check on a missing file = %v\n%s\nwant\n%s", res.Changed, res.Diff, wantDiff)
	}
	if _, err := os.Stat(env.Path("/etc")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Check created something: %v", err)
	}

	mustApply(t, env, f, true)
	got, err := os.ReadFile(env.Path("/etc/kthw/app.conf"))
	if err != nil || string(got) != "a = 1\nb = 2\n" {
		t.Fatalf("content = %q, %v", got, err)
	}
	if mode, _, _ := statOf(t, env.Path("/etc/kthw/app.conf")); mode != 0o600 {
		t.Errorf("mode = %04o, want 0600", mode)
	}
	if mode, _, _ := statOf(t, env.Path("/etc/kthw")); mode != 0o755 {
		t.Errorf("parent mode = %04o, want 0755", mode)
	}
	noTempFiles(t, env.Path("/etc/kthw"), "app.conf")

	if res := mustCheck(t, env, f); res.Changed || res.Diff != "" {
		t.Errorf("Check after Apply = %+v, want unchanged", res)
	}
	mustApply(t, env, f, false)

	// New content, mode 0 keeps the file's mode.
	f2 := newFile(t, inline("/etc/kthw/app.conf", "a = 1\nb = 3\n", 0))
	res = mustApply(t, env, f2, true)
	wantDiff = "--- /etc/kthw/app.conf\tcurrent\n" +
		"+++ /etc/kthw/app.conf\tdesired\n" +
		"@@ -1,2 +1,2 @@\n" +
		" a = 1\n" +
		"-b = 2\n" +
		"+b = 3\n"
	if res.Diff != wantDiff {
		t.Errorf("update diff:\n%s\nwant\n%s", res.Diff, wantDiff)
	}
	if mode, _, _ := statOf(t, env.Path("/etc/kthw/app.conf")); mode != 0o600 {
		t.Errorf("mode after update = %04o, want 0600 kept", mode)
	}
	noTempFiles(t, env.Path("/etc/kthw"), "app.conf")
}

func TestFileModeOnly(t *testing.T) {
	env := newRecorder(t, "")
	env.write(t, "/etc/x", "same\n", 0o600)
	f := newFile(t, inline("/etc/x", "same\n", 0o644))
	res := mustApply(t, env, f, true)
	if res.Diff != "mode: 0600 -> 0644\n" {
		t.Errorf("diff = %q", res.Diff)
	}
	if mode, _, _ := statOf(t, env.Path("/etc/x")); mode != 0o644 {
		t.Errorf("mode = %04o, want 0644", mode)
	}
	mustApply(t, env, f, false)
}

func TestFileOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("chown needs root")
	}
	env := newRecorder(t, "")
	env.write(t, "/etc/passwd", "root:x:0:0:root:/root:/bin/sh\netcd:x:1234:1235::/var/lib/etcd:/sbin/nologin\n", 0o644)
	env.write(t, "/etc/group", "root:x:0:\netcd:x:1235:\n", 0o644)
	env.write(t, "/etc/etcd.conf", "x\n", 0o640)

	f := newFile(t, &agentv1.FileModule{Path: "/etc/etcd.conf", Owner: "etcd", Group: "1235"})
	res := mustCheck(t, env, f)
	if want := "owner: 0 -> etcd (1234)\ngroup: 0 -> 1235\n"; res.Diff != want {
		t.Errorf("diff = %q, want %q", res.Diff, want)
	}
	mustApply(t, env, f, true)
	if mode, uid, gid := statOf(t, env.Path("/etc/etcd.conf")); mode != 0o640 || uid != 1234 || gid != 1235 {
		t.Errorf("got mode %04o owner %d:%d, want 0640 1234:1235", mode, uid, gid)
	}
	mustApply(t, env, f, false)

	// Rewriting the content keeps the owner the request leaves alone.
	mustApply(t, env, newFile(t, inline("/etc/etcd.conf", "y\n", 0)), true)
	if mode, uid, gid := statOf(t, env.Path("/etc/etcd.conf")); mode != 0o640 || uid != 1234 || gid != 1235 {
		t.Errorf("after rewrite: mode %04o owner %d:%d, want 0640 1234:1235", mode, uid, gid)
	}

	_, err := newFile(t, &agentv1.FileModule{Path: "/etc/etcd.conf", Owner: "nobody"}).Check(context.Background(), &env.Env)
	if err == nil || !strings.Contains(err.Error(), `"nobody" not found`) {
		t.Errorf("unknown owner: err = %v", err)
	}
}

func TestFileBinaryAndBigContent(t *testing.T) {
	env := newRecorder(t, "")
	old := []byte("old\n")
	env.write(t, "/bin/tool", string(old), 0o755)
	bin := []byte{0x7f, 'E', 'L', 'F', 0, 1, 2}
	res := mustApply(t, env, newFile(t, &agentv1.FileModule{
		Path: "/bin/tool", Source: &agentv1.FileModule_Content{Content: bin},
	}), true)
	if want := "content: sha256 " + sha(old) + " -> " + sha(bin) + " (7 bytes)\n"; res.Diff != want {
		t.Errorf("binary diff = %q, want %q", res.Diff, want)
	}
	if mode, _, _ := statOf(t, env.Path("/bin/tool")); mode != 0o755 {
		t.Errorf("mode = %04o, want 0755 kept", mode)
	}

	big := []byte(strings.Repeat("line\n", MaxTextDiff/5+1))
	res = mustCheck(t, env, newFile(t, &agentv1.FileModule{
		Path: "/bin/tool", Source: &agentv1.FileModule_Content{Content: big},
	}))
	if !strings.HasPrefix(res.Diff, "content: sha256 "+sha(bin)+" -> ") {
		t.Errorf("big diff = %q", res.Diff)
	}
}

func TestFileFromBlob(t *testing.T) {
	blobs := t.TempDir()
	content := []byte(strings.Repeat("0123456789abcdef", 200_000)) // 3.2 MB, 4 chunks
	sum := sha(content)
	if err := os.WriteFile(filepath.Join(blobs, sum), content, 0o600); err != nil {
		t.Fatal(err)
	}
	env := newRecorder(t, blobs)
	f := newFile(t, &agentv1.FileModule{
		Path: "/usr/local/bin/big", Source: &agentv1.FileModule_BlobSha256{BlobSha256: sum}, Mode: 0o755, MakeParents: true,
	})
	res := mustApply(t, env, f, true)
	if !strings.Contains(res.Diff, "content: sha256 (none) -> "+sum+" (3200000 bytes)") {
		t.Errorf("diff = %q", res.Diff)
	}
	got, err := os.ReadFile(env.Path("/usr/local/bin/big"))
	if err != nil || sha(got) != sum {
		t.Fatalf("content differs: %v", err)
	}
	if n := len(env.progress); n < 4 || env.progress[n-1].Done != 3200000 || env.progress[n-1].Total != 3200000 {
		t.Errorf("progress = %v", env.progress)
	}
	mustApply(t, env, f, false)

	missing := newFile(t, &agentv1.FileModule{
		Path: "/x", Source: &agentv1.FileModule_BlobSha256{BlobSha256: sha([]byte("nope"))},
	})
	if _, err := missing.Check(context.Background(), &env.Env); !errors.Is(err, ErrBlobMissing) {
		t.Errorf("missing blob: err = %v, want ErrBlobMissing", err)
	}
}

func TestFileNoContent(t *testing.T) {
	env := newRecorder(t, "")
	f := newFile(t, &agentv1.FileModule{Path: "/etc/empty", Mode: 0o640, MakeParents: true})
	if res := mustApply(t, env, f, true); res.Diff != "create directory /etc\ncreate /etc/empty\nmode: 0640\n" {
		t.Errorf("diff = %q", res.Diff)
	}
	env.write(t, "/etc/empty", "kept\n", 0o640)
	mustApply(t, env, f, false)
}

func TestFileReplacesSymlink(t *testing.T) {
	env := newRecorder(t, "")
	env.write(t, "/run/real", "real\n", 0o644)
	if err := os.Symlink(env.Path("/run/real"), env.Path("/etc-link")); err != nil {
		t.Fatal(err)
	}
	res := mustApply(t, env, newFile(t, inline("/etc-link", "file\n", 0)), true)
	if !strings.HasPrefix(res.Diff, "replace symlink /etc-link with a regular file\nmode: 0644\n") {
		t.Errorf("diff = %q", res.Diff)
	}
	if fi, err := os.Lstat(env.Path("/etc-link")); err != nil || !fi.Mode().IsRegular() {
		t.Errorf("not a regular file: %v", err)
	}
	if b, _ := os.ReadFile(env.Path("/run/real")); string(b) != "real\n" {
		t.Errorf("symlink target changed to %q", b)
	}
}

func TestFileAbsent(t *testing.T) {
	env := newRecorder(t, "")
	env.write(t, "/etc/old", "x", 0o644)
	f := newFile(t, &agentv1.FileModule{Path: "/etc/old", State: agentv1.FileModule_STATE_ABSENT})
	if res := mustCheck(t, env, f); !res.Changed || res.Diff != "remove /etc/old\n" {
		t.Errorf("Check = %+v", res)
	}
	mustApply(t, env, f, true)
	if _, err := os.Lstat(env.Path("/etc/old")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("file still there: %v", err)
	}
	mustApply(t, env, f, false)

	dir := newFile(t, &agentv1.FileModule{Path: "/etc", State: agentv1.FileModule_STATE_ABSENT})
	if _, err := dir.Apply(context.Background(), &env.Env); err == nil || !strings.Contains(err.Error(), "is a directory") {
		t.Errorf("removing a directory: err = %v", err)
	}
}

func TestFileMissingParent(t *testing.T) {
	env := newRecorder(t, "")
	f := newFile(t, inline("/no/such/dir/file", "x", 0))
	_, err := f.Apply(context.Background(), &env.Env)
	if err == nil || !strings.Contains(err.Error(), "directory /no does not exist (set make_parents)") {
		t.Fatalf("Apply: err = %v", err)
	}
	if errors.Is(err, ErrInvalid) {
		t.Errorf("a missing directory is a failure of the module, not a bad request")
	}
}
