package etcd

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// lockFile is the lock a snapshot run holds on its directory, so that a
// scheduled snapshot and one the controller asked for never write or prune
// at the same time.
const lockFile = ".lock"

// lockDir takes the directory's lock without waiting; a held lock is
// ErrBusy.
func lockDir(dir string) (unlock func(), err error) {
	f, err := os.OpenFile(filepath.Join(dir, lockFile), os.O_CREATE|os.O_RDWR|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock snapshot directory: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: another snapshot is being taken in %s", ErrBusy, dir)
		}
		return nil, fmt.Errorf("lock snapshot directory: %w", err)
	}
	return func() { f.Close() }, nil
}
