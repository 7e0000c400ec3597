package module

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"unicode/utf8"

	"github.com/pmezard/go-difflib/difflib"

	agentv1 "github.com/kthw/kthw/proto/kthw/agent/v1"
)

var _ Module = (*File)(nil)

// MaxTextDiff is the largest content that gets a line diff; bigger or binary
// content is described by its sha256 and size.
const MaxTextDiff = 1 << 20

const (
	defaultFileMode = 0o644
	parentDirMode   = 0o755
)

// File makes a regular file present, with given content, mode and owner, or
// absent. Content comes inline or from a stored blob; without either the
// content of an existing file is left alone and a new file is empty.
//
// Apply replaces content atomically: a temporary file in the same directory,
// written, synced, given its mode and owner, renamed over the path, and the
// directory synced. A symlink at the path is replaced, not followed.
type File struct {
	path        string
	absent      bool
	inline      []byte // content, when hasInline
	hasInline   bool
	blob        string // sha256 of the content blob, when set
	mode        uint32 // permission bits, 0 = keep (0644 when new)
	owner       string
	group       string
	makeParents bool
}

// NewFile validates m and returns the module that manages its file.
func NewFile(m *agentv1.FileModule) (*File, error) {
	p := m.GetPath()
	if !filepath.IsAbs(p) || filepath.Clean(p) != p || p == "/" {
		return nil, fmt.Errorf("%w: path %q is not an absolute, clean file path", ErrInvalid, p)
	}
	switch m.GetState() {
	case agentv1.FileModule_STATE_PRESENT, agentv1.FileModule_STATE_ABSENT:
	default:
		return nil, fmt.Errorf("%w: unknown state %v", ErrInvalid, m.GetState())
	}
	if m.GetMode()&^0o7777 != 0 {
		return nil, fmt.Errorf("%w: mode %#o has bits beyond 07777", ErrInvalid, m.GetMode())
	}
	f := &File{
		path:        p,
		absent:      m.GetState() == agentv1.FileModule_STATE_ABSENT,
		mode:        m.GetMode(),
		owner:       m.GetOwner(),
		group:       m.GetGroup(),
		makeParents: m.GetMakeParents(),
	}
	switch src := m.GetSource().(type) {
	case *agentv1.FileModule_Content:
		f.inline, f.hasInline = src.Content, true
	case *agentv1.FileModule_BlobSha256:
		if !IsSHA256(src.BlobSha256) {
			return nil, fmt.Errorf("%w: blob_sha256 %q is not a lowercase hex sha256", ErrInvalid, src.BlobSha256)
		}
		f.blob = src.BlobSha256
	}
	for _, id := range []struct{ field, v string }{{"owner", f.owner}, {"group", f.group}} {
		if strings.ContainsAny(id.v, ":\n") {
			return nil, fmt.Errorf("%w: %s %q is not a name or id", ErrInvalid, id.field, id.v)
		}
	}
	return f, nil
}

// IsSHA256 reports whether s is a sha256 digest in lowercase hex, the form
// blob names take.
func IsSHA256(s string) bool {
	if len(s) != sha256.Size*2 {
		return false
	}
	for _, c := range []byte(s) {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// Check reports the difference between the file on disk and the request.
func (f *File) Check(ctx context.Context, env *Env) (Result, error) {
	p, err := f.plan(ctx, env)
	if err != nil {
		return Result{}, err
	}
	return Result{Changed: p.changed(), Diff: p.diff()}, nil
}

// Apply makes the file on disk match the request.
func (f *File) Apply(ctx context.Context, env *Env) (Result, error) {
	p, err := f.plan(ctx, env)
	if err != nil {
		return Result{}, err
	}
	res := Result{Changed: p.changed(), Diff: p.diff()}
	if !res.Changed {
		env.info(f.path + " is up to date")
		return res, nil
	}
	if err := ctx.Err(); err != nil {
		return Result{}, err
	}
	switch {
	case f.absent:
		err = f.remove(env)
	case p.replace:
		err = f.write(ctx, env, p)
	default:
		err = f.setAttrs(env, p)
	}
	if err != nil {
		return Result{}, err
	}
	return res, nil
}

// filePlan is what the file is and what it should be.
type filePlan struct {
	path   string
	absent bool // the request is state absent

	exists  bool   // something is at path
	kind    string // what is at path when it is not a regular file
	curMode uint32
	curUID  int
	curGID  int
	curSHA  string
	curSize int64
	curText []byte // current content, when small enough for a line diff

	mkdirs  string // topmost missing parent to create, if any
	replace bool   // content must be written

	mode       uint32
	uid, gid   int // -1: leave alone
	owner      string
	group      string
	wantSHA    string
	wantSize   int64
	wantText   []byte // desired content, when small enough for a line diff
	wantInline []byte
	wantBlob   string // path of the blob holding the content
}

func (p *filePlan) modeChanged() bool  { return p.exists && p.kind == "" && p.mode != p.curMode }
func (p *filePlan) ownerChanged() bool { return p.uid >= 0 && (!p.exists || p.uid != p.curUID) }
func (p *filePlan) groupChanged() bool { return p.gid >= 0 && (!p.exists || p.gid != p.curGID) }

func (p *filePlan) changed() bool {
	if p.absent {
		return p.exists
	}
	return p.replace || p.modeChanged() || p.ownerChanged() || p.groupChanged()
}

// diff describes the change for a human.
func (p *filePlan) diff() string {
	if !p.changed() {
		return ""
	}
	var b strings.Builder
	if p.absent {
		fmt.Fprintf(&b, "remove %s\n", p.path)
		return b.String()
	}
	if p.mkdirs != "" {
		fmt.Fprintf(&b, "create directory %s\n", p.mkdirs)
	}
	switch {
	case !p.exists:
		fmt.Fprintf(&b, "create %s\n", p.path)
	case p.kind != "":
		fmt.Fprintf(&b, "replace %s %s with a regular file\n", p.kind, p.path)
	}
	if !p.exists || p.kind != "" {
		fmt.Fprintf(&b, "mode: %04o\n", p.mode)
	} else if p.modeChanged() {
		fmt.Fprintf(&b, "mode: %04o -> %04o\n", p.curMode, p.mode)
	}
	if p.ownerChanged() {
		writeIDChange(&b, "owner", p.exists && p.kind == "", p.curUID, p.owner, p.uid)
	}
	if p.groupChanged() {
		writeIDChange(&b, "group", p.exists && p.kind == "", p.curGID, p.group, p.gid)
	}
	if p.replace {
		b.WriteString(p.contentDiff())
	}
	return b.String()
}

func writeIDChange(b *strings.Builder, what string, hadOne bool, cur int, name string, want int) {
	w := fmt.Sprint(want)
	if name != w {
		w = fmt.Sprintf("%s (%d)", name, want)
	}
	if hadOne {
		fmt.Fprintf(b, "%s: %d -> %s\n", what, cur, w)
	} else {
		fmt.Fprintf(b, "%s: %s\n", what, w)
	}
}

// contentDiff is a unified diff for text, else a line with both hashes.
func (p *filePlan) contentDiff() string {
	current := p.exists && p.kind == ""
	if p.wantText != nil && (p.curText != nil || !current) {
		from := p.path
		if !current {
			from = "/dev/null"
		}
		d, err := difflib.GetUnifiedDiffString(difflib.UnifiedDiff{
			A:        splitLines(p.curText),
			B:        splitLines(p.wantText),
			FromFile: from,
			FromDate: "current",
			ToFile:   p.path,
			ToDate:   "desired",
			Context:  3,
		})
		if err == nil && d != "" {
			return d
		}
		if !current && p.wantSize == 0 {
			return "" // a new empty file: "create" said it all
		}
	}
	cur := "(none)"
	if current {
		cur = p.curSHA
	}
	return fmt.Sprintf("content: sha256 %s -> %s (%d bytes)\n", cur, p.wantSHA, p.wantSize)
}

// plan inspects the file and works out what Apply has to do.
func (f *File) plan(ctx context.Context, env *Env) (*filePlan, error) {
	p := &filePlan{path: f.path, absent: f.absent, uid: -1, gid: -1}
	full := env.Path(f.path)
	fi, err := os.Lstat(full)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("inspect %s: %w", f.path, err)
	case fi.IsDir():
		return nil, fmt.Errorf("inspect %s: is a directory", f.path)
	default:
		p.exists = true
		if !fi.Mode().IsRegular() {
			p.kind = fileKind(fi.Mode())
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			p.curMode = st.Mode & 0o7777
			p.curUID, p.curGID = int(st.Uid), int(st.Gid)
		}
	}
	if f.absent {
		return p, nil
	}
	if err := f.planParents(env, p); err != nil {
		return nil, err
	}
	if err := f.planOwner(env, p); err != nil {
		return nil, err
	}
	p.mode = f.mode
	if p.mode == 0 {
		p.mode = defaultFileMode
		if p.exists && p.kind == "" {
			p.mode = p.curMode
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if p.exists && p.kind == "" && (f.hasInline || f.blob != "") {
		if err := readCurrent(full, p); err != nil {
			return nil, fmt.Errorf("read %s: %w", f.path, err)
		}
	}
	if err := f.planContent(env, p); err != nil {
		return nil, err
	}
	return p, nil
}

func (f *File) planParents(env *Env, p *filePlan) error {
	dir := filepath.Dir(f.path)
	for missing := ""; ; dir = filepath.Dir(dir) {
		fi, err := os.Stat(env.Path(dir))
		switch {
		case errors.Is(err, fs.ErrNotExist) && dir != "/":
			missing = dir
			continue
		case err != nil:
			return fmt.Errorf("inspect directory %s: %w", dir, err)
		case !fi.IsDir():
			return fmt.Errorf("inspect directory %s: not a directory", dir)
		}
		if missing != "" && !f.makeParents {
			return fmt.Errorf("create %s: directory %s does not exist (set make_parents)", f.path, missing)
		}
		p.mkdirs = missing
		return nil
	}
}

func (f *File) planOwner(env *Env, p *filePlan) error {
	var err error
	if f.owner != "" {
		if p.uid, err = lookupID(env.Path("/etc/passwd"), f.owner); err != nil {
			return fmt.Errorf("look up owner: %w", err)
		}
		p.owner = f.owner
	}
	if f.group != "" {
		if p.gid, err = lookupID(env.Path("/etc/group"), f.group); err != nil {
			return fmt.Errorf("look up group: %w", err)
		}
		p.group = f.group
	}
	return nil
}

func (f *File) planContent(env *Env, p *filePlan) error {
	current := p.exists && p.kind == ""
	switch {
	case f.hasInline:
		sum := sha256.Sum256(f.inline)
		p.wantSHA, p.wantSize, p.wantInline = hex.EncodeToString(sum[:]), int64(len(f.inline)), f.inline
		if len(f.inline) <= MaxTextDiff && isText(f.inline) {
			p.wantText = f.inline
		}
	case f.blob != "":
		path, err := env.blob(f.blob)
		if err != nil {
			return err
		}
		fi, err := os.Stat(path)
		if err != nil {
			return fmt.Errorf("inspect blob %s: %w", f.blob, err)
		}
		p.wantSHA, p.wantSize, p.wantBlob = f.blob, fi.Size(), path
		if fi.Size() <= MaxTextDiff {
			b, err := os.ReadFile(path)
			if err != nil {
				return fmt.Errorf("read blob %s: %w", f.blob, err)
			}
			if isText(b) {
				p.wantText = b
			}
		}
	default:
		// No content requested: keep what is there, or create an empty file.
		p.replace = !current
		sum := sha256.Sum256(nil)
		p.wantSHA, p.wantText = hex.EncodeToString(sum[:]), []byte{}
		return nil
	}
	p.replace = !current || p.curSHA != p.wantSHA
	return nil
}

// readCurrent hashes the current content, keeping it when small enough for a
// line diff.
func readCurrent(path string, p *filePlan) error {
	fd, err := os.Open(path)
	if err != nil {
		return err
	}
	defer fd.Close()
	h := sha256.New()
	var keep bytes.Buffer
	w := io.Writer(h)
	if fi, err := fd.Stat(); err == nil && fi.Size() <= MaxTextDiff {
		w = io.MultiWriter(h, &keep)
	}
	n, err := io.Copy(w, fd)
	if err != nil {
		return err
	}
	p.curSHA, p.curSize = hex.EncodeToString(h.Sum(nil)), n
	if n <= MaxTextDiff && isText(keep.Bytes()) {
		p.curText = keep.Bytes()
	}
	return nil
}

// write replaces the file with new content, atomically.
func (f *File) write(ctx context.Context, env *Env, p *filePlan) (err error) {
	full := env.Path(f.path)
	dir := filepath.Dir(full)
	if p.mkdirs != "" {
		if err := os.MkdirAll(dir, parentDirMode); err != nil {
			return fmt.Errorf("create directory %s: %w", p.mkdirs, err)
		}
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(full)+".kthw-*")
	if err != nil {
		return fmt.Errorf("create temporary file for %s: %w", f.path, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := f.writeContent(ctx, env, tmp, p); err != nil {
		return fmt.Errorf("write %s: %w", f.path, err)
	}
	uid, gid := p.uid, p.gid
	if p.exists && p.kind == "" {
		// A new inode: carry over the owner the request leaves alone.
		uid, gid = pick(uid, p.curUID), pick(gid, p.curGID)
	}
	// Chown before chmod: chown clears the setuid and setgid bits.
	if uid >= 0 || gid >= 0 {
		if err := tmp.Chown(uid, gid); err != nil {
			return fmt.Errorf("chown %s: %w", f.path, err)
		}
	}
	if err := tmp.Chmod(goMode(p.mode)); err != nil {
		return fmt.Errorf("chmod %s: %w", f.path, err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", f.path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("close %s: %w", f.path, err)
	}
	if err := os.Rename(tmp.Name(), full); err != nil {
		return fmt.Errorf("rename into %s: %w", f.path, err)
	}
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("sync directory of %s: %w", f.path, err)
	}
	env.info(fmt.Sprintf("wrote %s (%d bytes, mode %04o)", f.path, p.wantSize, p.mode))
	return nil
}

func (f *File) writeContent(ctx context.Context, env *Env, w io.Writer, p *filePlan) error {
	switch {
	case p.wantBlob != "":
		src, err := os.Open(p.wantBlob)
		if err != nil {
			return fmt.Errorf("open blob %s: %w", f.blob, err)
		}
		defer src.Close()
		return copyProgress(ctx, env, w, src, p.wantSize)
	case p.wantInline != nil:
		_, err := w.Write(p.wantInline)
		return err
	}
	return nil
}

// copyProgress copies size bytes, reporting progress every chunk.
func copyProgress(ctx context.Context, env *Env, w io.Writer, r io.Reader, size int64) error {
	buf := make([]byte, agentv1.BlobChunkSize)
	var done int64
	env.progress(0, size, "bytes")
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		n, err := r.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return werr
			}
			done += int64(n)
			env.progress(done, size, "bytes")
		}
		if errors.Is(err, io.EOF) {
			if done != size {
				return fmt.Errorf("copy blob: got %d bytes, expected %d", done, size)
			}
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// setAttrs fixes mode and owner of a file whose content is right.
func (f *File) setAttrs(env *Env, p *filePlan) error {
	full := env.Path(f.path)
	if p.ownerChanged() || p.groupChanged() {
		if err := os.Lchown(full, p.uid, p.gid); err != nil {
			return fmt.Errorf("chown %s: %w", f.path, err)
		}
	}
	// Always chmod after a chown, which clears setuid and setgid bits.
	if p.modeChanged() || p.ownerChanged() || p.groupChanged() {
		if err := os.Chmod(full, goMode(p.mode)); err != nil {
			return fmt.Errorf("chmod %s: %w", f.path, err)
		}
	}
	env.info(fmt.Sprintf("set mode %04o and owner of %s", p.mode, f.path))
	return nil
}

func (f *File) remove(env *Env) error {
	full := env.Path(f.path)
	if err := os.Remove(full); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", f.path, err)
	}
	if err := syncDir(filepath.Dir(full)); err != nil {
		return fmt.Errorf("sync directory of %s: %w", f.path, err)
	}
	env.info("removed " + f.path)
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// goMode turns unix permission bits (with setuid, setgid, sticky) into an
// fs.FileMode for os.Chmod.
func goMode(m uint32) fs.FileMode {
	mode := fs.FileMode(m & 0o777)
	if m&syscall.S_ISUID != 0 {
		mode |= fs.ModeSetuid
	}
	if m&syscall.S_ISGID != 0 {
		mode |= fs.ModeSetgid
	}
	if m&syscall.S_ISVTX != 0 {
		mode |= fs.ModeSticky
	}
	return mode
}

func fileKind(m fs.FileMode) string {
	switch {
	case m&fs.ModeSymlink != 0:
		return "symlink"
	case m&fs.ModeNamedPipe != 0:
		return "fifo"
	case m&fs.ModeSocket != 0:
		return "socket"
	case m&fs.ModeDevice != 0:
		return "device"
	default:
		return "special file"
	}
}

// splitLines splits text into lines that each end in a newline, as difflib
// wants them. A missing final newline does not show in the diff; the content
// line with both hashes reports such a change.
func splitLines(b []byte) []string {
	lines := strings.SplitAfter(string(b), "\n")
	if last := len(lines) - 1; lines[last] == "" {
		lines = lines[:last]
	} else {
		lines[last] += "\n"
	}
	return lines
}

func isText(b []byte) bool { return utf8.Valid(b) && bytes.IndexByte(b, 0) < 0 }

func pick(want, cur int) int {
	if want >= 0 {
		return want
	}
	return cur
}
