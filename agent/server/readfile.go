package server

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"google.golang.org/grpc"

	agentv1 "github.com/kthw/kthw/proto/kthw/agent/v1"
)

// ReadFile streams a regular file back: header, data chunks, trailer with
// the sha256 of the data sent. A file whose size changes while it is read
// fails with DATA_LOSS.
func (s *Server) ReadFile(req *agentv1.ReadFileRequest, stream grpc.ServerStreamingServer[agentv1.ReadFileResponse]) error {
	return toStatus(s.readFile(req, stream))
}

func (s *Server) readFile(req *agentv1.ReadFileRequest, stream grpc.ServerStreamingServer[agentv1.ReadFileResponse]) error {
	p := req.GetPath()
	if !filepath.IsAbs(p) || filepath.Clean(p) != p {
		return fmt.Errorf("%w: path %q is not absolute and clean", errInvalid, p)
	}
	f, err := os.Open(filepath.Join(s.root, p))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%w: read %s: no such file", errNotFound, p)
		}
		return fmt.Errorf("read %s: %w", p, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("read %s: %w", p, err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%w: %s is not a regular file", errInvalid, p)
	}
	size := fi.Size()
	if err := stream.Send(&agentv1.ReadFileResponse{Msg: &agentv1.ReadFileResponse_Header{
		Header: &agentv1.ReadFileHeader{Size: size, Mode: uint32(fi.Mode().Perm())},
	}}); err != nil {
		return err
	}
	h := sha256.New()
	buf := make([]byte, agentv1.BlobChunkSize)
	var sent int64
	for {
		if err := stream.Context().Err(); err != nil {
			return err
		}
		n, rerr := io.ReadFull(f, buf)
		if n > 0 {
			sent += int64(n)
			if sent > size {
				return fmt.Errorf("%w: %s grew while it was read (%d bytes at the start)", errDataLoss, p, size)
			}
			h.Write(buf[:n])
			if err := stream.Send(&agentv1.ReadFileResponse{Msg: &agentv1.ReadFileResponse_Data{Data: buf[:n]}}); err != nil {
				return err
			}
		}
		if errors.Is(rerr, io.EOF) || errors.Is(rerr, io.ErrUnexpectedEOF) {
			break
		}
		if rerr != nil {
			return fmt.Errorf("read %s: %w", p, rerr)
		}
	}
	if sent != size {
		return fmt.Errorf("%w: %s shrank while it was read: %d bytes, %d at the start", errDataLoss, p, sent, size)
	}
	s.log.Info("sent file", "path", p, "size", size)
	return stream.Send(&agentv1.ReadFileResponse{Msg: &agentv1.ReadFileResponse_Trailer{
		Trailer: &agentv1.ReadFileTrailer{Sha256: hex.EncodeToString(h.Sum(nil)), Size: sent},
	}})
}
