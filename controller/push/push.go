// Package push uploads the kthw-agent binary to a node over SSH, content-addressed by its
// sha256, so that a node already holding the binary costs nothing beyond starting it.
//
// Remote layout (all root-owned, 0700):
//
//	<Dir>/<sha256>/kthw-agent
//
// A binary reaches its path only through Upload, which streams it into
// <Dir>/<sha256>/.kthw-agent.part.<random>, verifies its sha256 on the node and renames it into
// place; a corrupted or truncated upload is removed and nothing is installed. So a file at the
// content-addressed path was verified when it was installed, and ExecCommand starts it without
// hashing it again: the agent reports the sha256 of its running binary in the Handshake, and a
// caller that sees another hash uploads again (see controller/node).
// Remote commands run as root (through "sudo -n" for other users) and report their result on a
// line that starts with a per-push random marker, so whatever a chatty login shell prints to
// stdout cannot be mistaken for the answer.
package push

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/renameio/v2"
	"golang.org/x/crypto/ssh"

	"github.com/kthw/kthw/controller/sshx"
)

// DefaultDir is the remote root directory for agent binaries.
const DefaultDir = "/var/lib/kthw/agent"

// BinaryName is the file name of the agent on the node.
const BinaryName = "kthw-agent"

// ErrCorrupted is wrapped by errors for uploads that arrived with the wrong sha256.
var ErrCorrupted = errors.New("upload corrupted")

// CorruptedError reports an upload whose remote sha256 did not match; nothing was installed.
type CorruptedError struct {
	Host      string
	Got, Want string // sha256 hex
	Bytes     int64  // bytes that arrived, -1 if unknown
}

func (e *CorruptedError) Error() string {
	return fmt.Sprintf("upload of %s to %s corrupted: sha256 %s, expected %s; nothing installed", BinaryName, e.Host, e.Got, e.Want)
}

// Is makes errors.Is(err, ErrCorrupted) work.
func (e *CorruptedError) Is(target error) bool { return target == ErrCorrupted }

// Pusher uploads the agent binary. The zero value is ready to use.
type Pusher struct {
	// Dir is the remote root directory (DefaultDir if empty). It must be absolute.
	Dir string
	// WrapUpload, if set, wraps the stream sent to the node (a test seam to corrupt or
	// truncate uploads).
	WrapUpload func(io.Reader) io.Reader
}

// Result describes a push.
type Result struct {
	RemotePath string // <Dir>/<sha256>/kthw-agent
	SHA256     string // hex
	Uploaded   bool   // false when the node already had the binary
	Bytes      int64  // bytes sent (0 when not uploaded)
}

// Locate returns where localBinary lives on a node under dir (DefaultDir if empty): its
// sha256 and remote path. Nothing is sent. The hash is remembered per path, size and mtime in
// memory and, when stampFile is set, in that file (with the binary's inode and ctime), so a
// controller run does not read the whole binary again to learn a hash it knew.
func Locate(localBinary, dir, stampFile string) (Result, error) {
	if dir == "" {
		dir = DefaultDir
	}
	if !path.IsAbs(dir) || path.Clean(dir) == "/" {
		return Result{}, fmt.Errorf("remote dir %q: must be an absolute path below /", dir)
	}
	dir = path.Clean(dir)
	sum, err := hashFile(localBinary, stampFile)
	if err != nil {
		return Result{}, err
	}
	return Result{RemotePath: path.Join(dir, sum, BinaryName), SHA256: sum}, nil
}

// Upload sends localBinary to the node behind c whether or not it is there, verifies it and
// installs it at Result.RemotePath, replacing what was there, in one remote command. user is
// the SSH user (the command runs through sshx.SudoPrefix(user)). Errors wrap
// *sshx.RemoteError (with sshx.ErrSudoPassword when sudo wants a password) or
// *CorruptedError.
func (p Pusher) Upload(ctx context.Context, c *ssh.Client, user string, localBinary string) (Result, error) {
	res, err := Locate(localBinary, p.Dir, "")
	if err == nil {
		res, err = p.upload(ctx, c, user, localBinary, res)
	}
	if err != nil {
		return Result{}, fmt.Errorf("push agent: %w", err)
	}
	return res, nil
}

func (p Pusher) upload(ctx context.Context, c *ssh.Client, user, localBinary string, res Result) (Result, error) {
	marker, err := randomHex(12)
	if err != nil {
		return Result{}, err
	}
	marker = "KTHW-PUSH-" + marker
	dir, sum := path.Dir(path.Dir(res.RemotePath)), res.SHA256
	f, err := os.Open(localBinary)
	if err != nil {
		return Result{}, err
	}
	defer f.Close()
	var body io.Reader = f
	if p.WrapUpload != nil {
		body = p.WrapUpload(body)
	}
	sent := &countingReader{r: body}
	part, err := randomHex(8)
	if err != nil {
		return Result{}, err
	}
	out, err := sshx.RunOp(ctx, c, "upload agent", sshx.SudoPrefix(user)+sshx.Command("/bin/sh", "-c", uploadScript, "kthw-push", dir, sum, marker, part), sent)
	verdict, fields := result(out, marker)
	var re *sshx.RemoteError
	if errors.As(err, &re) && re.ExitCode == exitMismatch && verdict == "mismatch" {
		ce := &CorruptedError{Host: c.RemoteAddr().String(), Want: sum, Bytes: -1}
		if len(fields) > 0 {
			ce.Got = fields[0]
		}
		if len(fields) > 1 {
			fmt.Sscan(fields[1], &ce.Bytes)
		}
		return Result{}, ce
	}
	if err != nil {
		return Result{}, err
	}
	if verdict != "installed" {
		return Result{}, fmt.Errorf("upload agent to %s: no result in output %q", c.RemoteAddr(), tail(out))
	}
	res.Uploaded, res.Bytes = true, sent.n
	return res, nil
}

// ExitNotInstalled is the exit status of ExecCommand when no agent is installed at its path.
const ExitNotInstalled = 87

// ExecCommand is the remote command that runs the agent installed at remotePath with args (as
// root, through sudo for users other than root) in place of the shell, or exits with
// ExitNotInstalled when there is no regular file at that path. It does not hash the binary:
// the path names the hash the binary had when Upload verified and installed it, and the agent
// reports the hash of what it runs in its Handshake.
func ExecCommand(user, remotePath string, args ...string) string {
	argv := append([]string{"/bin/sh", "-c", execScript, "kthw-agent", remotePath}, args...)
	return sshx.SudoPrefix(user) + sshx.Command(argv...)
}

// execScript: $1 is the agent's path, the rest its arguments.
var execScript = `if [ -f "$1" ] && [ ! -L "$1" ]; then exec "$@"; fi
echo "kthw-agent: no agent installed at $1" >&2
exit ` + strconv.Itoa(ExitNotInstalled)

// exitMismatch is the upload script's exit status for a sha256 mismatch.
const exitMismatch = 86

// uploadScript streams stdin into a temporary file next to the target, checks its sha256,
// and renames it into place; on any failure the temporary file is removed. Arguments: dir
// sha marker random.
var uploadScript = `set -eu
umask 077
d=$1 h=$2 m=$3
t="$d/$h/.` + BinaryName + `.part.$4"
mkdir -p "$d/$h"
chown 0:0 "$d" "$d/$h"
chmod 0700 "$d" "$d/$h"
find "$d/$h" -maxdepth 1 -name '.` + BinaryName + `.part.*' -mmin +60 -exec rm -f {} + 2>/dev/null || :
trap 'rm -f "$t"' EXIT
trap 'exit 1' HUP INT TERM PIPE
cat > "$t"
s=$(sha256sum < "$t")
s=${s%% *}
if [ "$s" != "$h" ]; then
	n=$(wc -c < "$t")
	echo; echo "$m mismatch $s $n"
	exit ` + strconv.Itoa(exitMismatch) + `
fi
chmod 0700 "$t"
sync "$t" 2>/dev/null || sync
mv -f "$t" "$d/$h/` + BinaryName + `"
trap - EXIT
echo; echo "$m installed"`

// result finds the last line that starts with marker and returns its first word after the
// marker and the rest.
func result(out []byte, marker string) (string, []string) {
	lines := bytes.Split(out, []byte("\n"))
	for i := len(lines) - 1; i >= 0; i-- {
		l := strings.TrimRight(string(lines[i]), "\r")
		if rest, ok := strings.CutPrefix(l, marker+" "); ok {
			f := strings.Fields(rest)
			if len(f) == 0 {
				return "", nil
			}
			return f[0], f[1:]
		}
	}
	return "", nil
}

func tail(b []byte) string {
	if len(b) > 200 {
		b = b[len(b)-200:]
	}
	return string(b)
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

func randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

// hashCache remembers binaries' sha256 by path, size and mtime: the controller pushes the
// same binary to many nodes.
var hashCache sync.Map // hashKey -> string

type hashKey struct {
	path  string
	size  int64
	mtime time.Time
}

func hashFile(name, stampFile string) (string, error) {
	f, err := os.Open(name)
	if err != nil {
		return "", fmt.Errorf("hash local agent binary: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("hash local agent binary: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("hash local agent binary: %s is not a regular file", name)
	}
	key := hashKey{name, fi.Size(), fi.ModTime()}
	if v, ok := hashCache.Load(key); ok {
		return v.(string), nil
	}
	id := fileIdentity(name, fi)
	if stampFile != "" && id != "" {
		if b, err := os.ReadFile(stampFile); err == nil {
			if sum, rest, ok := strings.Cut(strings.TrimSpace(string(b)), " "); ok && rest == id && isSHA256Hex(sum) {
				hashCache.Store(key, sum)
				return sum, nil
			}
		}
	}
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", fmt.Errorf("hash local agent binary: %w", err)
	}
	if n != fi.Size() {
		return "", fmt.Errorf("hash local agent binary: %s changed while reading it", name)
	}
	sum := hex.EncodeToString(h.Sum(nil))
	hashCache.Store(key, sum)
	if stampFile != "" && id != "" {
		// Best effort: without it the next run hashes again.
		_ = renameio.WriteFile(stampFile, []byte(sum+" "+id+"\n"), 0o600)
	}
	return sum, nil
}

// isSHA256Hex reports whether s is a sha256 in lower-case hex, the form Result.SHA256 and the
// remote path use.
func isSHA256Hex(s string) bool {
	if len(s) != sha256.Size*2 {
		return false
	}
	for _, c := range s {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
