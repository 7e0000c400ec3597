package node

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"

	agentv1 "github.com/kthw/kthw/proto/kthw/agent/v1"
)

// ErrModule marks a module that ran and reported an error.
var ErrModule = errors.New("module failed")

// RunModule runs one module and returns its result. onEvent, when set, sees
// every log and progress event as it arrives. A module that ran and failed
// returns its result together with an error wrapping ErrModule.
func RunModule(ctx context.Context, c agentv1.AgentServiceClient, req *agentv1.RunModuleRequest, onEvent func(*agentv1.RunModuleEvent)) (*agentv1.ModuleResult, error) {
	stream, err := c.RunModule(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("run module %s: %w", req.GetName(), err)
	}
	var res *agentv1.ModuleResult
	for {
		ev, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("run module %s: %w", req.GetName(), err)
		}
		if r := ev.GetResult(); r != nil {
			res = r
			continue
		}
		if onEvent != nil {
			onEvent(ev)
		}
	}
	if res == nil {
		return nil, fmt.Errorf("run module %s: stream ended without a result", req.GetName())
	}
	if res.GetError() != "" {
		return res, fmt.Errorf("%w: %s: %s", ErrModule, req.GetName(), res.GetError())
	}
	return res, nil
}

// UploadBlob stores size bytes from r (whose sha256 is sum) in the agent's
// blob store unless it already has them. progress, when set, is called after
// each chunk. It reports whether data was sent.
func UploadBlob(ctx context.Context, c agentv1.AgentServiceClient, r io.Reader, size int64, sum string, progress func(done, total int64)) (bool, error) {
	st, err := c.StatBlob(ctx, &agentv1.StatBlobRequest{Sha256: sum})
	if err != nil {
		return false, fmt.Errorf("stat blob %s: %w", sum, err)
	}
	if st.GetExists() && st.GetSize() == size {
		return false, nil
	}
	stream, err := c.PutBlob(ctx)
	if err != nil {
		return false, fmt.Errorf("put blob %s: %w", sum, err)
	}
	if err := stream.Send(&agentv1.PutBlobRequest{Msg: &agentv1.PutBlobRequest_Header{Header: &agentv1.BlobHeader{Sha256: sum, Size: size}}}); err != nil {
		return false, fmt.Errorf("put blob %s: %w", sum, blobSendErr(stream, err))
	}
	buf := make([]byte, agentv1.BlobChunkSize)
	var done int64
	for {
		n, rerr := io.ReadFull(r, buf)
		if n > 0 {
			if err := stream.Send(&agentv1.PutBlobRequest{Msg: &agentv1.PutBlobRequest_Data{Data: buf[:n]}}); err != nil {
				return false, fmt.Errorf("put blob %s: %w", sum, blobSendErr(stream, err))
			}
			done += int64(n)
			if progress != nil {
				progress(done, size)
			}
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			stream.CloseSend()
			return false, fmt.Errorf("read blob source: %w", rerr)
		}
	}
	resp, err := stream.CloseAndRecv()
	if err != nil {
		return false, fmt.Errorf("put blob %s: %w", sum, err)
	}
	return resp.GetStored(), nil
}

// blobSendErr returns the server's status when a Send failed because the
// server ended the stream (Send itself only reports io.EOF then).
func blobSendErr(stream agentv1.AgentService_PutBlobClient, err error) error {
	if errors.Is(err, io.EOF) {
		if _, rerr := stream.CloseAndRecv(); rerr != nil {
			return rerr
		}
	}
	return err
}

// HashFile returns the hex sha256 and size of a local file.
func HashFile(path string) (string, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, fmt.Errorf("hash %s: %w", path, err)
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", 0, fmt.Errorf("hash %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// PutFile makes path on the node hold the content of the local file src,
// uploading it as a blob only when the node lacks it, and returns the file
// module's result. spec carries mode, owner and the other file fields; its
// source is set here.
func PutFile(ctx context.Context, c agentv1.AgentServiceClient, src string, spec *agentv1.FileModule, onEvent func(*agentv1.RunModuleEvent)) (*agentv1.ModuleResult, error) {
	sum, size, err := HashFile(src)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(src)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", src, err)
	}
	defer f.Close()
	var progress func(done, total int64)
	if onEvent != nil {
		progress = func(done, total int64) {
			onEvent(&agentv1.RunModuleEvent{Event: &agentv1.RunModuleEvent_Progress{Progress: &agentv1.Progress{Done: done, Total: total, Unit: "bytes"}}})
		}
	}
	if _, err := UploadBlob(ctx, c, f, size, sum, progress); err != nil {
		return nil, err
	}
	spec.Source = &agentv1.FileModule_BlobSha256{BlobSha256: sum}
	return RunModule(ctx, c, &agentv1.RunModuleRequest{Name: "file " + spec.GetPath(), Module: &agentv1.RunModuleRequest_File{File: spec}}, onEvent)
}
