// Command ctrrun imports an OCI image tarball into containerd with its Go
// client and runs a container from it, copying the container's stdout to
// its own. The containerd lab test pushes it to a node, so the heavy
// client stays out of the agent.
//
//	ctrrun -image /tmp/hello.tar -ref kthw.test/hello:v1 [-snapshotter native] [-socket ...]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/oci"
)

func main() {
	socket := flag.String("socket", "/run/containerd/containerd.sock", "containerd socket")
	tarball := flag.String("image", "", "OCI image layout tarball to import")
	ref := flag.String("ref", "", "image name in the tarball")
	ns := flag.String("namespace", "kthw-test", "containerd namespace")
	id := flag.String("id", "kthw-hello", "container id")
	snapshotter := flag.String("snapshotter", "overlayfs", "snapshotter to unpack the image with")
	flag.Parse()
	code, err := run(*socket, *tarball, *ref, *ns, *id, *snapshotter)
	if err != nil {
		fmt.Fprintln(os.Stderr, "ctrrun:", err)
		os.Exit(2)
	}
	os.Exit(code)
}

func run(socket, tarball, ref, ns, id, snapshotter string) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	client, err := containerd.New(socket, containerd.WithDefaultNamespace(ns))
	if err != nil {
		return 0, fmt.Errorf("connect: %w", err)
	}
	defer client.Close()
	v, err := client.Version(ctx)
	if err != nil {
		return 0, fmt.Errorf("version: %w", err)
	}
	fmt.Fprintf(os.Stderr, "containerd %s (%s)\n", v.Version, v.Revision)

	f, err := os.Open(tarball)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	imgs, err := client.Import(ctx, f)
	if err != nil {
		return 0, fmt.Errorf("import %s: %w", tarball, err)
	}
	found := false
	for _, img := range imgs {
		fmt.Fprintf(os.Stderr, "imported %s %s\n", img.Name, img.Target.Digest)
		found = found || img.Name == ref
	}
	if !found {
		return 0, fmt.Errorf("import %s: no image %s in it", tarball, ref)
	}
	image, err := client.GetImage(ctx, ref)
	if err != nil {
		return 0, err
	}
	if err := image.Unpack(ctx, snapshotter); err != nil {
		return 0, fmt.Errorf("unpack %s: %w", ref, err)
	}

	container, err := client.NewContainer(ctx, id,
		containerd.WithSnapshotter(snapshotter),
		containerd.WithNewSnapshot(id+"-snapshot", image),
		containerd.WithNewSpec(oci.WithImageConfig(image)))
	if err != nil {
		return 0, fmt.Errorf("create container: %w", err)
	}
	defer container.Delete(context.Background(), containerd.WithSnapshotCleanup)

	task, err := container.NewTask(ctx, cio.NewCreator(cio.WithStreams(nil, os.Stdout, os.Stderr)))
	if err != nil {
		return 0, fmt.Errorf("create task: %w", err)
	}
	defer task.Delete(context.Background())
	exitC, err := task.Wait(ctx)
	if err != nil {
		return 0, fmt.Errorf("wait: %w", err)
	}
	if err := task.Start(ctx); err != nil {
		return 0, fmt.Errorf("start task: %w", err)
	}
	st := <-exitC
	code, _, err := st.Result()
	if err != nil {
		return 0, fmt.Errorf("task result: %w", err)
	}
	fmt.Fprintf(os.Stderr, "container %s exited %d\n", id, code)
	return int(code), nil
}
