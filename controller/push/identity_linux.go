package push

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// fileIdentity names a file's content version as far as its metadata can: path, device,
// inode, size, mtime and ctime (a rewrite changes ctime even when mtime is set back).
func fileIdentity(name string, fi os.FileInfo) string {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return ""
	}
	abs, err := filepath.Abs(name)
	if err != nil {
		return ""
	}
	return fmt.Sprintf("%d %d %d %d.%09d %d.%09d %q", st.Dev, st.Ino, st.Size,
		st.Mtim.Sec, st.Mtim.Nsec, st.Ctim.Sec, st.Ctim.Nsec, abs)
}
