package etcd

import (
	"archive/tar"
	"compress/gzip"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// Extract unpacks a gzip'd tar of an etcd data directory into dir, which
// must not exist (its parent must). Only directories and regular files are
// accepted, with relative paths that stay inside dir; directories get mode
// 0700 and files 0600, as etcd makes them. It unpacks into a staging
// directory next to dir, syncs every file, and renames the staging
// directory to dir only when all went well; on error nothing is left. It
// returns the number of files and their bytes.
func Extract(r io.Reader, dir string) (files int, bytes int64, err error) {
	parent := filepath.Dir(dir)
	if fi, err := os.Stat(parent); err != nil {
		return 0, 0, fmt.Errorf("extract data directory: parent of %s: %w", dir, err)
	} else if !fi.IsDir() {
		return 0, 0, fmt.Errorf("extract data directory: %s is not a directory", parent)
	}
	if _, err := os.Lstat(dir); err == nil {
		return 0, 0, fmt.Errorf("extract data directory: %s exists already", dir)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return 0, 0, fmt.Errorf("extract data directory: %w", err)
	}
	var rnd [6]byte
	rand.Read(rnd[:])
	stage := dir + ".part-" + hex.EncodeToString(rnd[:])
	if err := os.Mkdir(stage, 0o700); err != nil {
		return 0, 0, fmt.Errorf("extract data directory: %w", err)
	}
	defer func() {
		if err != nil {
			os.RemoveAll(stage)
		}
	}()
	zr, err := gzip.NewReader(r)
	if err != nil {
		return 0, 0, fmt.Errorf("extract data directory: %w", err)
	}
	tr := tar.NewReader(zr)
	dirs := []string{stage}
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return 0, 0, fmt.Errorf("extract data directory: %w", err)
		}
		name := path.Clean(strings.TrimPrefix(h.Name, "./"))
		if name == "." {
			continue
		}
		if path.IsAbs(name) || name == ".." || strings.HasPrefix(name, "../") {
			return 0, 0, fmt.Errorf("extract data directory: entry %q leaves the directory", h.Name)
		}
		target := filepath.Join(stage, filepath.FromSlash(name))
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(target, 0o700); err != nil {
				return 0, 0, fmt.Errorf("extract data directory: %w", err)
			}
			dirs = append(dirs, target)
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(target), 0o700); err != nil {
				return 0, 0, fmt.Errorf("extract data directory: %w", err)
			}
			n, err := writeSynced(target, tr)
			if err != nil {
				return 0, 0, fmt.Errorf("extract data directory: %s: %w", name, err)
			}
			files++
			bytes += n
		default:
			return 0, 0, fmt.Errorf("extract data directory: entry %q is not a file or directory", h.Name)
		}
	}
	if files == 0 {
		return 0, 0, errors.New("extract data directory: the archive holds no files")
	}
	for _, d := range dirs {
		if err := syncDir(d); err != nil {
			return 0, 0, fmt.Errorf("extract data directory: sync: %w", err)
		}
	}
	if err := os.Rename(stage, dir); err != nil {
		return 0, 0, fmt.Errorf("extract data directory: %w", err)
	}
	if err := syncDir(parent); err != nil {
		return files, bytes, fmt.Errorf("extract data directory: sync %s: %w", parent, err)
	}
	return files, bytes, nil
}

func writeSynced(path string, r io.Reader) (int64, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return 0, err
	}
	n, err := io.Copy(f, r)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return n, err
}
