package server

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"

	"google.golang.org/grpc"

	"github.com/kthw/kthw/agent/module"
	agentv1 "github.com/kthw/kthw/proto/kthw/agent/v1"
)

// blobStore is a content-addressed store: a blob lives in dir under the hex
// sha256 of its content, and only verified content gets that name. Uploads
// in progress are <sha256>.<random>.part files in the same directory.
type blobStore struct {
	dir string
	log *slog.Logger
}

// PutBlob stores an uploaded blob after verifying its size and sha256.
func (s *Server) PutBlob(stream grpc.ClientStreamingServer[agentv1.PutBlobRequest, agentv1.PutBlobResponse]) error {
	resp, err := s.blobs.put(stream)
	if err != nil {
		return toStatus(err)
	}
	return stream.SendAndClose(resp)
}

// StatBlob tells whether a blob is stored.
func (s *Server) StatBlob(_ context.Context, req *agentv1.StatBlobRequest) (*agentv1.StatBlobResponse, error) {
	if err := checkSHA256(req.GetSha256()); err != nil {
		return nil, toStatus(err)
	}
	fi, err := os.Stat(s.blobs.file(req.GetSha256()))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return &agentv1.StatBlobResponse{}, nil
	case err != nil:
		return nil, toStatus(fmt.Errorf("stat blob: %w", err))
	}
	return &agentv1.StatBlobResponse{Exists: true, Size: fi.Size()}, nil
}

func checkSHA256(sha string) error {
	if !module.IsSHA256(sha) {
		return fmt.Errorf("%w: sha256 %q is not 64 lowercase hex digits", errInvalid, sha)
	}
	return nil
}

func (b *blobStore) file(sha string) string { return filepath.Join(b.dir, sha) }

// path returns the path of a stored blob, for modules.
func (b *blobStore) path(sha string) (string, error) {
	if err := checkSHA256(sha); err != nil {
		return "", err
	}
	p := b.file(sha)
	if _, err := os.Stat(p); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("find blob %s: %w", sha, module.ErrBlobMissing)
		}
		return "", fmt.Errorf("find blob %s: %w", sha, err)
	}
	return p, nil
}

type blobReceiver interface {
	Recv() (*agentv1.PutBlobRequest, error)
}

// put receives a header and the data of one blob and stores it.
func (b *blobStore) put(stream blobReceiver) (*agentv1.PutBlobResponse, error) {
	first, err := stream.Recv()
	if err != nil {
		return nil, fmt.Errorf("receive blob header: %w", err)
	}
	hdr := first.GetHeader()
	if hdr == nil {
		return nil, fmt.Errorf("%w: the first PutBlob message must be the header", errInvalid)
	}
	if err := checkSHA256(hdr.GetSha256()); err != nil {
		return nil, err
	}
	if hdr.GetSize() < 0 {
		return nil, fmt.Errorf("%w: size %d is negative", errInvalid, hdr.GetSize())
	}
	sha, size := hdr.GetSha256(), hdr.GetSize()
	if fi, err := os.Stat(b.file(sha)); err == nil {
		if err := drain(stream); err != nil {
			return nil, err
		}
		return &agentv1.PutBlobResponse{Sha256: sha, Size: fi.Size()}, nil
	}
	if err := os.MkdirAll(b.dir, 0o700); err != nil {
		return nil, fmt.Errorf("create blob directory: %w", err)
	}
	tmp, err := os.CreateTemp(b.dir, sha+".*.part")
	if err != nil {
		return nil, fmt.Errorf("create blob file: %w", err)
	}
	committed := false
	defer func() {
		if !committed {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	h := sha256.New()
	got, err := receive(stream, io.MultiWriter(tmp, h), size)
	if err != nil {
		return nil, err
	}
	if err := verify(h, sha, got, size); err != nil {
		b.log.Warn("rejected blob", "sha256", sha, "err", err)
		return nil, err
	}
	if err := tmp.Chmod(0o600); err != nil {
		return nil, fmt.Errorf("chmod blob: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return nil, fmt.Errorf("sync blob: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return nil, fmt.Errorf("close blob: %w", err)
	}
	if err := os.Rename(tmp.Name(), b.file(sha)); err != nil {
		return nil, fmt.Errorf("rename blob: %w", err)
	}
	committed = true
	if err := syncDir(b.dir); err != nil {
		return nil, fmt.Errorf("sync blob directory: %w", err)
	}
	b.log.Info("stored blob", "sha256", sha, "size", size)
	return &agentv1.PutBlobResponse{Sha256: sha, Size: size, Stored: true}, nil
}

// receive writes the data messages to w until the client ends the stream,
// failing as soon as there is more data than the header announced.
func receive(stream blobReceiver, w io.Writer, size int64) (int64, error) {
	var got int64
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return got, nil
		}
		if err != nil {
			return got, fmt.Errorf("receive blob data: %w", err)
		}
		if msg.GetHeader() != nil {
			return got, fmt.Errorf("%w: a second PutBlob header", errInvalid)
		}
		data := msg.GetData()
		got += int64(len(data))
		if got > size {
			return got, fmt.Errorf("%w: size mismatch: expected %d bytes got more", errDataLoss, size)
		}
		if _, err := w.Write(data); err != nil {
			return got, fmt.Errorf("write blob: %w", err)
		}
	}
}

func verify(h hash.Hash, sha string, got, size int64) error {
	if got != size {
		return fmt.Errorf("%w: size mismatch: expected %d bytes got %d", errDataLoss, size, got)
	}
	if sum := hex.EncodeToString(h.Sum(nil)); sum != sha {
		return fmt.Errorf("%w: sha256 mismatch: expected %s got %s", errDataLoss, sha, sum)
	}
	return nil
}

// drain discards the rest of an upload of a blob that is already stored.
func drain(stream blobReceiver) error {
	for {
		if _, err := stream.Recv(); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("receive blob data: %w", err)
		}
	}
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
