package node

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	agentv1 "github.com/kthw/kthw/proto/kthw/agent/v1"
)

// ErrDownloadCorrupted marks a download whose data did not match the
// agent's trailer (or the hash the caller expected).
var ErrDownloadCorrupted = errors.New("download corrupted")

// Downloaded describes a file fetched with ReadFile or DownloadFile.
type Downloaded struct {
	Size   int64
	SHA256 string
	// Mode is the file's permission bits on the node.
	Mode uint32
}

// ReadFile streams the node's file at path into w, hashing what arrives,
// and checks size and sha256 against the agent's header and trailer.
// progress, when set, is called after each chunk.
func ReadFile(ctx context.Context, c agentv1.AgentServiceClient, path string, w io.Writer, progress func(done, total int64)) (*Downloaded, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.ReadFile(ctx, &agentv1.ReadFileRequest{Path: path})
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	first, err := stream.Recv()
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	hdr := first.GetHeader()
	if hdr == nil {
		return nil, fmt.Errorf("read %s: the agent sent no header", path)
	}
	h := sha256.New()
	out := io.MultiWriter(w, h)
	var got int64
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%w: read %s: the stream ended without a trailer after %d of %d bytes", ErrDownloadCorrupted, path, got, hdr.GetSize())
		}
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", path, err)
		}
		if tr := msg.GetTrailer(); tr != nil {
			sum := hex.EncodeToString(h.Sum(nil))
			if got != hdr.GetSize() || got != tr.GetSize() || sum != tr.GetSha256() {
				return nil, fmt.Errorf("%w: read %s: got %d bytes with sha256 %s, the agent sent %d with sha256 %s",
					ErrDownloadCorrupted, path, got, sum, tr.GetSize(), tr.GetSha256())
			}
			return &Downloaded{Size: got, SHA256: sum, Mode: hdr.GetMode()}, nil
		}
		data := msg.GetData()
		got += int64(len(data))
		if got > hdr.GetSize() {
			return nil, fmt.Errorf("%w: read %s: more than the %d bytes announced", ErrDownloadCorrupted, path, hdr.GetSize())
		}
		if _, err := out.Write(data); err != nil {
			return nil, fmt.Errorf("read %s: write: %w", path, err)
		}
		if progress != nil {
			progress(got, hdr.GetSize())
		}
	}
}

// DownloadFile fetches the node's file at remote into the local file
// local (mode perm), crash-safely: into local.part-<random> (perm), checked
// against the agent's trailer and, when wantSHA256 is not empty, against
// it, synced and renamed into place, with the directory synced. On any
// error nothing is left at local or beside it.
func DownloadFile(ctx context.Context, c agentv1.AgentServiceClient, remote, local string, perm os.FileMode, wantSHA256 string, progress func(done, total int64)) (d *Downloaded, err error) {
	dir := filepath.Dir(local)
	var rnd [6]byte
	rand.Read(rnd[:])
	part := local + ".part-" + hex.EncodeToString(rnd[:])
	f, err := os.OpenFile(part, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return nil, fmt.Errorf("download %s: %w", remote, err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(part)
		}
	}()
	d, err = ReadFile(ctx, c, remote, f, progress)
	if err != nil {
		return nil, fmt.Errorf("download: %w", err)
	}
	if wantSHA256 != "" && d.SHA256 != wantSHA256 {
		return nil, fmt.Errorf("%w: download %s: sha256 %s, expected %s", ErrDownloadCorrupted, remote, d.SHA256, wantSHA256)
	}
	if err := f.Sync(); err != nil {
		return nil, fmt.Errorf("download %s: sync: %w", remote, err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("download %s: %w", remote, err)
	}
	if err := os.Rename(part, local); err != nil {
		return nil, fmt.Errorf("download %s: %w", remote, err)
	}
	if dd, derr := os.Open(dir); derr == nil {
		dd.Sync()
		dd.Close()
	}
	return d, nil
}
