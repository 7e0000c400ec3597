package module

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	agentv1 "github.com/kthw/kthw/proto/kthw/agent/v1"
)

var _ Module = (*Sysctl)(nil)

// DefaultSysctlFile is where Sysctl persists its keys unless told otherwise.
const DefaultSysctlFile = "/etc/sysctl.d/99-kthw.conf"

// ErrSysctlReadOnly marks a kernel parameter that cannot be changed on this
// node: its /proc/sys file is read-only, as it is for kernel-global keys in
// a container (lab nodes keep only net.* writable).
var ErrSysctlReadOnly = errors.New("sysctl is read-only on this node")

// Sysctl persists kernel parameters in a sysctl.d file and sets them on the
// running kernel through /proc/sys. A key whose running value already
// equals the wanted one is left alone, so a read-only /proc/sys is an error
// only for a key that would have to change. Values are compared after
// whitespace normalization ("4096\t87380" equals "4096 87380").
type Sysctl struct {
	file   string
	keys   []string          // in the order they are applied
	values map[string]string // normalized wanted value by key

	// writeProc writes a value to a /proc/sys file, and procWritable tells
	// whether one can be written; tests replace them to simulate read-only
	// kernel parameters (root can write any file).
	writeProc    func(path string, value []byte) error
	procWritable func(path string) error
}

// NewSysctl validates m and returns the module that applies it.
func NewSysctl(m *agentv1.SysctlModule) (*Sysctl, error) {
	s := &Sysctl{file: m.GetFile(), values: map[string]string{}, writeProc: writeProcFile, procWritable: procFileWritable}
	if s.file == "" {
		s.file = DefaultSysctlFile
	}
	if !filepath.IsAbs(s.file) || filepath.Clean(s.file) != s.file {
		return nil, fmt.Errorf("%w: file %q is not an absolute, clean path", ErrInvalid, s.file)
	}
	if len(m.GetValues()) == 0 {
		return nil, fmt.Errorf("%w: no values", ErrInvalid)
	}
	for k, v := range m.GetValues() {
		if err := validSysctlKey(k); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
		}
		if strings.ContainsAny(v, "\n\r") {
			return nil, fmt.Errorf("%w: value of %s has a line break", ErrInvalid, k)
		}
		nv := normalizeSysctl(v)
		if nv == "" {
			return nil, fmt.Errorf("%w: value of %s is empty", ErrInvalid, k)
		}
		s.values[k] = nv
		s.keys = append(s.keys, k)
	}
	slices.Sort(s.keys)
	return s, nil
}

func validSysctlKey(k string) error {
	if k == "" {
		return errors.New("empty sysctl key")
	}
	for _, c := range k {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			strings.ContainsRune("._-/:@+", c)
		if !ok {
			return fmt.Errorf("sysctl key %q has character %q (globs are not supported)", k, c)
		}
	}
	p := sysctlProcPath(k)
	if strings.Contains(k, "..") || strings.Contains(k, "//") || strings.HasSuffix(p, "/") ||
		strings.HasPrefix(k, ".") || strings.HasPrefix(k, "/") || filepath.Clean(p) != p {
		return fmt.Errorf("sysctl key %q is malformed", k)
	}
	return nil
}

// sysctlProcPath returns the /proc/sys file of key. As sysctl.d(5) says:
// when the first separator is a dot, dots and slashes swap roles (so
// net.ipv4.conf.eth0/100.rp_filter names interface eth0.100); when it is a
// slash, the key is a path as it stands.
func sysctlProcPath(key string) string {
	if i := strings.IndexAny(key, "./"); i >= 0 && key[i] == '.' {
		key = strings.Map(func(r rune) rune {
			switch r {
			case '.':
				return '/'
			case '/':
				return '.'
			}
			return r
		}, key)
	}
	return "/proc/sys/" + key
}

// normalizeSysctl collapses runs of whitespace, as the kernel separates
// multi-value parameters with tabs.
func normalizeSysctl(v string) string { return strings.Join(strings.Fields(v), " ") }

func (s *Sysctl) render() []byte {
	var b strings.Builder
	b.WriteString(managedHeader)
	for _, k := range s.keys {
		fmt.Fprintf(&b, "%s = %s\n", k, s.values[k])
	}
	return []byte(b.String())
}

// sysctlState is one key's running value.
type sysctlState struct {
	key, path string
	current   string
	missing   bool // no such /proc/sys file (yet)
}

func (s *Sysctl) read(env *Env) ([]sysctlState, error) {
	out := make([]sysctlState, 0, len(s.keys))
	for _, k := range s.keys {
		st := sysctlState{key: k, path: sysctlProcPath(k)}
		b, err := os.ReadFile(env.Path(st.path))
		switch {
		case errors.Is(err, fs.ErrNotExist):
			st.missing = true
		case err != nil:
			return nil, fmt.Errorf("read sysctl %s: %w", k, err)
		default:
			st.current = normalizeSysctl(string(b))
		}
		out = append(out, st)
	}
	return out, nil
}

// Check reports the file diff and every key whose running value differs.
func (s *Sysctl) Check(ctx context.Context, env *Env) (Result, error) {
	fileRes, err := syncFile(ctx, env, managedFile{path: s.file, content: s.render()}, false)
	if err != nil {
		return Result{}, err
	}
	states, err := s.read(env)
	if err != nil {
		return Result{}, err
	}
	var d diffBuilder
	changed := fileRes.Changed
	for _, st := range states {
		want := s.values[st.key]
		switch {
		case st.missing:
			changed = true
			d.line(fmt.Sprintf("sysctl %s: (not in %s yet; a kernel module may provide it) -> %s", st.key, st.path, want))
		case st.current != want:
			changed = true
			note := ""
			if isReadOnly(s.procWritable(env.Path(st.path))) {
				note = fmt.Sprintf(" (%s is read-only on this node: apply will fail)", st.path)
			}
			d.line(fmt.Sprintf("sysctl %s: %s -> %s%s", st.key, st.current, want, note))
		}
	}
	d.add(fileRes.Diff)
	if !changed {
		return Result{}, nil
	}
	return Result{Changed: true, Diff: d.String()}, nil
}

// Apply writes the file, then sets each key that differs and reads it back.
// It tries every key and reports every failure.
func (s *Sysctl) Apply(ctx context.Context, env *Env) (Result, error) {
	fileRes, err := syncFile(ctx, env, managedFile{path: s.file, content: s.render()}, true)
	if err != nil {
		return Result{}, err
	}
	var d diffBuilder
	res := Result{Changed: fileRes.Changed}
	states, err := s.read(env)
	if err != nil {
		return Result{}, err
	}
	var errs []error
	for _, st := range states {
		if err := ctx.Err(); err != nil {
			return Result{}, err
		}
		want := s.values[st.key]
		if !st.missing && st.current == want {
			env.info(fmt.Sprintf("sysctl %s is already %s", st.key, want))
			continue
		}
		if st.missing {
			errs = append(errs, fmt.Errorf("set sysctl %s: %s does not exist (unknown key, or its kernel module is not loaded)", st.key, st.path))
			continue
		}
		if err := s.set(env, st, want); err != nil {
			errs = append(errs, err)
			continue
		}
		res.Changed = true
		d.line(fmt.Sprintf("sysctl %s: %s -> %s", st.key, st.current, want))
		env.info(fmt.Sprintf("set sysctl %s = %s (was %s)", st.key, want, st.current))
	}
	d.add(fileRes.Diff)
	if res.Changed {
		res.Diff = d.String()
	}
	return res, errors.Join(errs...)
}

// set writes want to the key's /proc/sys file and checks the kernel took it.
func (s *Sysctl) set(env *Env, st sysctlState, want string) error {
	full := env.Path(st.path)
	if err := s.writeProc(full, []byte(want+"\n")); err != nil {
		if isReadOnly(err) {
			return fmt.Errorf("set sysctl %s to %s: %w: %s (running value %s): %v",
				st.key, want, ErrSysctlReadOnly, st.path, st.current, errors.Unwrap(err))
		}
		return fmt.Errorf("set sysctl %s to %s: %w", st.key, want, err)
	}
	b, err := os.ReadFile(full)
	if err != nil {
		return fmt.Errorf("read back sysctl %s: %w", st.key, err)
	}
	if got := normalizeSysctl(string(b)); got != want {
		return fmt.Errorf("set sysctl %s to %s: the kernel kept %s", st.key, want, got)
	}
	return nil
}

func isReadOnly(err error) bool {
	return errors.Is(err, syscall.EROFS) || errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EPERM)
}

// procFileWritable asks the kernel whether path can be written: EROFS on a
// read-only /proc/sys mount.
func procFileWritable(path string) error { return unix.Access(path, unix.W_OK) }

// writeProcFile writes a /proc/sys file in place, as sysctl(8) does.
func writeProcFile(path string, value []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return err
	}
	if _, err := f.Write(value); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
